// Fencing with a real partition: a plain member holding a running instance on a `shared` pool (one directory
// bind-mounted into every member's mount namespace) loses its link. Its daemon and the instance keep running;
// after `cluster.healing_threshold` the drainer relinks the instance to another member and starts it there,
// so for a while two copies run (no host can be switched off from here). When the link is back the cut-off
// member sees that the store places the instance elsewhere and stops its own copy: exactly one runs, with
// its data intact; a restore brings it home. The healing delay is reported as a test diagnostic.

import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { sha256Tree, waitFor } from '../helpers/cluster.js';
import { startHosts, type HostsCluster } from '../helpers/hosts.js';
import { keys, type InstanceRecord } from '../../src/store/schema.js';
import { memberInfo, runState, seedVolume } from '../evacuation/world.js';
import { assertOneProcess, loud, seconds } from './support.js';

let h: HostsCluster | undefined;
const threshold = 3;
const healing = 6;

/** Where the store places `name` (asked of etcd directly: a member may be cut off). */
async function storedLocation(c: HostsCluster, name: string): Promise<string> {
  const kv = await (await c.store()).get(keys.instance('default', name));
  return (JSON.parse(kv?.value ?? '{}') as InstanceRecord).location;
}

describe('a member cut off while it runs an instance on shared storage', () => {
  before(async () => {
    h = await startHosts({ members: 3, offlineThreshold: threshold });
    const c = h;
    await loud(() => h, async () => {
      for (const m of c.names) await c.client('m1').request('POST', `/1.0/storage-pools?target=${m}`, { name: 'nfs', driver: 'shared', config: { source: c.sharedPath } });
      await c.client('m1').request('POST', '/1.0/storage-pools', { name: 'nfs', driver: 'shared', config: {} });
      await c.client('m1').request('PATCH', '/1.0', { config: { 'cluster.healing_threshold': String(healing) } });
    })();
  });
  after(async () => {
    await h?.stop();
  });

  it('is healed elsewhere, and once its link is back exactly one copy runs, with its data intact', { timeout: 300_000 }, async (t: TestContext) => {
    const c = h as HostsCluster;
    await loud(() => c, async () => {
      const leader = await c.leader();
      const victim = c.names.find((m) => m !== leader && m !== 'm1') ?? 'm3';
      await c.launch('sh1', { target: victim, start: false, devices: { root: { type: 'disk', path: '/', pool: 'nfs' } } });
      const volume = path.join(c.sharedBacking, 'containers', 'default_sh1');
      await seedVolume(volume, 512 * 1024, 'sh1');
      await c.client(victim).runAsync('PUT', '/1.0/instances/sh1/state', { action: 'start' });
      const data = await sha256Tree(volume);
      assertOneProcess(c, 'sh1', victim);
      const own = c.instanceProcesses('sh1')[0]?.pid;

      const cutAt = Date.now();
      await c.partition(victim);
      let target = victim;
      await waitFor('sh1 is healed onto another member', async () => (target = await storedLocation(c, 'sh1')) !== victim, 60_000);
      const healedAt = Date.now();
      await waitFor(`sh1 runs on ${target}`, () => c.instanceProcesses('sh1').some((p) => p.member === target), 30_000);
      // The cut-off member knows nothing yet: its copy runs on.
      assert.ok(c.instanceProcesses('sh1').some((p) => p.member === victim && p.pid === own), JSON.stringify(c.instanceProcesses('sh1')));
      assert.equal((await c.instance('sh1', target)).config['volatile.evacuate.origin'], victim);

      const linkBackAt = Date.now();
      await c.heal(victim);
      await waitFor('the cut-off member stopped its copy', () => !c.instanceProcesses('sh1').some((p) => p.member === victim), 60_000);
      const fencedAt = Date.now();
      assertOneProcess(c, 'sh1', target);
      assert.equal(await sha256Tree(volume), data, 'the data of sh1 changed');
      await waitFor(`${victim} answers as healed`, async () => (await memberInfo(c, victim, 'm1')).status === 'Evacuated', 30_000);

      await runState(c, victim, { action: 'restore' }, 'm1', 60_000);
      assert.equal(await storedLocation(c, 'sh1'), victim);
      assertOneProcess(c, 'sh1', victim);
      assert.equal(await sha256Tree(volume), data, 'the data of sh1 changed');

      const timing = `shared partition: cut → healed ${seconds(healedAt - cutAt)} (offline ${threshold} s, healing ${healing} s); link back → own copy stopped ${seconds(fencedAt - linkBackAt)}`;
      t.diagnostic(timing);
      process.stderr.write(`${timing}\n`);
    })();
  });
});
