// Offline detection: a member whose daemon dies stops heartbeating and is shown Offline (with LXD's
// "No heartbeat for" message) within cluster.offline_threshold; placement and the API keep working on
// the healthy member meanwhile, and the member is Online again once it restarts.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { keys } from '../../src/store/schema.js';
import { processAlive, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { assertError, syncMetadata } from '../helpers/envelope.js';

let c: TestCluster;

interface MemberView {
  server_name: string;
  status: string;
  message: string;
}

async function member(name: string, via = 'm01'): Promise<MemberView> {
  return (await c.client(via).get(`/1.0/cluster/members/${name}`)) as MemberView;
}

describe('offline detection with cluster.offline_threshold=2', () => {
  before(async () => {
    c = await startCluster({ members: 2, offlineThreshold: 2 });
  });
  after(async () => {
    await c?.stop();
  });

  it('the threshold is the server config every member sees', async () => {
    const info = syncMetadata(await c.raw('m02', 'GET', '/1.0')) as { config: Record<string, string> };
    assert.equal(info.config['cluster.offline_threshold'], '2');
  });

  it('changing the threshold never shows a live member Offline', { timeout: 30_000 }, async () => {
    const glitches: string[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const list = (await c.client('m01').get('/1.0/cluster/members?recursion=1')) as MemberView[];
        for (const m of list) if (m.status !== 'Online') glitches.push(`${m.server_name}: ${m.status} (${m.message})`);
      }
    })();
    try {
      const store = await c.store();
      const leases = async (): Promise<(string | null)[]> =>
        Promise.all(c.names.map(async (m) => (await store.get(keys.heartbeat(m)))?.lease ?? null));
      for (const threshold of ['3', '2', '4', '2']) {
        const before = await leases();
        await c.client('m02').request('PATCH', '/1.0', { config: { 'cluster.offline_threshold': threshold } });
        // A member that takes up a new threshold moves its heartbeat to a lease with the new TTL.
        await waitFor(`every member heartbeats with threshold ${threshold}`, async () => {
          const now = await leases();
          return now.every((l, i) => l !== null && l !== before[i]);
        });
      }
    } finally {
      polling = false;
      await poller;
    }
    assert.deepEqual(glitches, []);
  });

  it('a lowered threshold takes effect at once, not at the next beat: a member killed just after turns Offline within it', { timeout: 60_000 }, async () => {
    const store = await c.store();
    const lease = async (m: string): Promise<string | null> => (await store.get(keys.heartbeat(m)))?.lease ?? null;
    await c.client('m01').request('PATCH', '/1.0', { config: { 'cluster.offline_threshold': '60' } });
    const long = await lease('m02');
    await waitFor('m02 heartbeats with threshold 60', async () => (await lease('m02')) !== long);
    const old = await lease('m02');
    await c.client('m01').request('PATCH', '/1.0', { config: { 'cluster.offline_threshold': '2' } });
    // Beats are 4 s apart at a 60 s threshold: the new lease within 2 s shows the change was watched.
    await waitFor('m02 moved its heartbeat to a 2 s lease at once', async () => (await lease('m02')) !== old, 2_000);
    await c.kill('m02', 'SIGKILL');
    const killedAt = Date.now();
    await waitFor('m02 shows Offline', async () => (await member('m02')).status === 'Offline', 10_000);
    assert.ok(Date.now() - killedAt < 8_000, `Offline after ${Date.now() - killedAt} ms, threshold is 2 s (was 60 s)`);
    await c.restart('m02');
    await waitFor('m02 is Online again', async () => (await member('m02', 'm01')).status === 'Online', 10_000);
  });

  it('a SIGKILLed member turns Offline within the threshold, the healthy one keeps working, and a restart brings it back', { timeout: 60_000 }, async () => {
    await c.launch('survivor', { target: 'm02' });
    const survivorPid = (await c.instance('survivor')).state?.pid ?? 0;

    await c.kill('m02', 'SIGKILL');
    const killedAt = Date.now();
    await waitFor('m02 shows Offline', async () => (await member('m02')).status === 'Offline', 8_000);
    const offlineAfter = Date.now() - killedAt;
    const view = await member('m02');
    assert.match(view.message, /^No heartbeat for \d+(\.\d+)?s$/);
    assert.ok(offlineAfter < 6_000, `Offline after ${offlineAfter} ms, threshold is 2 s`);
    assert.equal((await member('m01')).status, 'Online');
    assert.ok(processAlive(survivorPid), 'the instance of the dead daemon keeps running');

    // The healthy member still creates and starts instances; placement avoids the Offline member.
    await c.launch('fresh', { target: 'm01' });
    assert.equal((await c.instance('fresh')).status, 'Running');
    await c.client('m01').runAsync('POST', '/1.0/instances', { name: 'placed', source: { type: 'none' }, config: { 'process.command': 'sleep 1000' } });
    assert.equal((await c.instance('placed')).location, 'm01');
    assertError(await c.raw('m01', 'POST', '/1.0/instances?target=m02', { json: { name: 'nope', source: { type: 'none' } } }), 503, 'Cluster member "m02" is offline');
    const listed = (await c.client('m01').get('/1.0/instances?recursion=1')) as { name: string; status: string; location: string }[];
    const survivor = listed.find((i) => i.name === 'survivor');
    assert.equal(survivor?.location, 'm02');
    assert.equal(survivor?.status, 'Error', 'the state of an instance on an Offline member is unknown');

    await c.restart('m02');
    await waitFor('m02 is Online again', async () => (await member('m02', 'm01')).status === 'Online', 10_000);
    assert.equal((await member('m02', 'm02')).message, 'Fully operational');
    const back = await c.instance('survivor', 'm01');
    assert.equal(back.status, 'Running');
    assert.equal(back.state?.pid, survivorPid, 're-adopted, not restarted');
  });
});
