// Healing (LXD's `cluster.healing_threshold`), on the several-hosts harness (each member in its own network and
// mount namespaces, the store on etcd): the drainer evacuates a member whose heartbeat stopped longer ago than
// the threshold. Its instances live on its local pool, which no other member can reach: they are
// reported (event, member message, operation) and never touched; the member is Evacuated, so nothing new lands
// on it, and a restore brings it back. `evacuate --force` of an offline member does the same by hand; without
// force the refusal says how.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { keys, type InstanceRecord } from '../../src/store/schema.js';
import { processAlive, waitFor } from '../helpers/cluster.js';
import { startHosts, type HostsCluster } from '../helpers/hosts.js';
import { assertError, launchWorkload, lifecycle, memberInfo, readAll, assertAllIntact, recordEvents, runState, waitStatus } from '../evacuation/world.js';
import { loud, seconds } from './support.js';

let h: HostsCluster | undefined;
let c: HostsCluster;
const offlineThreshold = 2;
const healingThreshold = 4;

async function setServer(config: Record<string, string>): Promise<void> {
  await c.client('m1').request('PATCH', '/1.0', { config });
}

describe('healing an offline member', () => {
  before(async () => {
    h = await startHosts({ members: 3, offlineThreshold });
    c = h;
  });
  after(async () => {
    await h?.stop();
  });

  it('refuses a bad healing threshold, naming the key', async () => {
    const r = await c.raw('m1', 'PATCH', '/1.0', { json: { config: { 'cluster.healing_threshold': 'soon' } } });
    assert.equal(r.status, 400);
    assert.match(r.body?.error ?? '', /cluster\.healing_threshold/);
  });

  it('heals a member offline longer than cluster.healing_threshold: Evacuated, its local instances reported and untouched; restore brings it back', { timeout: 240_000 }, async (t) => {
    await loud(() => h, async () => {
      await launchWorkload(c, 'h1', { target: 'm3' });
      await launchWorkload(c, 'h2', { target: 'm3' });
      await launchWorkload(c, 'other', { target: 'm2' });
      const data = await readAll(c, ['h1', 'h2', 'other'], 'm1');
      const pids = new Map<string, number>();
      for (const n of ['h1', 'h2']) pids.set(n, (await c.instance(n, 'm1')).state?.pid ?? 0);
      await setServer({ 'cluster.healing_threshold': String(healingThreshold) });
      const events = await recordEvents(c, 'm1', ['lifecycle']);
      t.after(() => events.close());

      const killedAt = Date.now();
      await c.kill('m3', 'SIGKILL');
      // The threshold counts from the member's last heartbeat, which may precede the kill by up to a beat.
      const beat = await (await c.store()).get('lastseen/m3');
      const lastBeat = Date.parse((JSON.parse(beat?.value ?? '{}') as { at?: string }).at ?? '');
      assert.ok(Number.isFinite(lastBeat) && lastBeat <= killedAt + 1000, 'the killed member\'s last heartbeat is on record');
      await waitFor('the member is healed', async () => lifecycle(events, 'cluster-member-healed', '/1.0/cluster/members/m3').length > 0, 30_000);
      const healedAt = Date.now();
      const delay = healedAt - killedAt;
      const timing = `healing: healed ${seconds(delay)} after the kill, ${seconds(healedAt - lastBeat)} after its last heartbeat (offline threshold ${offlineThreshold} s, healing threshold ${healingThreshold} s)`;
      t.diagnostic(timing);
      process.stderr.write(`${timing}\n`);
      assert.ok(healedAt - lastBeat >= healingThreshold * 1000, `not healed before the threshold (${healedAt - lastBeat} ms after the last heartbeat)`);
      const event = lifecycle(events, 'cluster-member-healed')[0];
      assert.deepEqual((event?.metadata as { context: { unreachable: string[] } }).context.unreachable, ['h1', 'h2']);
      assert.equal(lifecycle(events, 'cluster-member-healed').length, 1, 'healed once');

      const offline = await memberInfo(c, 'm3', 'm1');
      assert.equal(offline.status, 'Offline');
      assert.match(offline.message, /^No heartbeat for .*; healed \(evacuated while offline\)$/);
      // Its member is gone, so the API cannot show them (it forwards to it): the store says where they are.
      const store = await c.store();
      for (const n of ['h1', 'h2']) {
        const kv = await store.get(keys.instance('default', n));
        assert.equal((JSON.parse(kv?.value ?? '{}') as InstanceRecord).location, 'm3', `${n} stays on its member's local pool`);
        assert.ok(processAlive(pids.get(n) ?? 0), `${n} was not touched`);
      }
      assert.equal((await c.instance('other', 'm1')).location, 'm2');

      // Back: Evacuated, saying why, until restored; then Online with everything running and intact.
      await c.restart('m3');
      await waitStatus(c, 'm3', 'Evacuated', 20_000, 'm1');
      assert.match((await memberInfo(c, 'm3', 'm1')).message, /^Healed while offline \(2 instances on local storage left in place\); restore it/);
      const refused = await c.raw('m1', 'POST', '/1.0/instances?target=m3', { json: { name: 'new1', type: 'process', source: { type: 'none' }, config: { 'process.command': 'sleep 100' } } });
      assert.equal(refused.status, 403, 'nothing new lands on a healed member');
      await runState(c, 'm3', { action: 'restore' }, 'm1');
      const back = await memberInfo(c, 'm3', 'm1');
      assert.equal(back.status, 'Online');
      assert.equal(back.message, 'Fully operational');
      for (const n of ['h1', 'h2']) assert.equal((await c.instance(n, 'm1')).status, 'Running');
      await assertAllIntact(c, data, new Set(['h1', 'h2', 'other']), 'm1');
      await setServer({ 'cluster.healing_threshold': '0' });
    })();
  });

  it('evacuate --force heals an offline member by hand; without force the refusal says how', { timeout: 240_000 }, async () => {
    await loud(() => h, async () => {
      await launchWorkload(c, 'k1', { target: 'm2' });
      await c.kill('m2', 'SIGKILL');
      await waitStatus(c, 'm2', 'Offline', 20_000, 'm1');
      assertError(await c.raw('m1', 'POST', '/1.0/cluster/members/m2/state', { json: { action: 'evacuate' } }), 400, /Cannot evacuate offline cluster member \(evacuate it with force to heal it/);
      assertError(await c.raw('m1', 'POST', '/1.0/cluster/members/m2/state', { json: { action: 'restore', force: true } }), 400, /Cannot restore offline cluster member$/);

      const { code, stdout, stderr } = await c.cli('m1', ['cluster', 'evacuate', 'm2', '--force']);
      assert.equal(code, 0, stderr);
      assert.equal(stdout, 'Healed "m2" while offline: it is Evacuated, nothing new lands on it; on its local storage, left in place until it is restored: k1, other\n');
      assertError(await c.raw('m1', 'POST', '/1.0/cluster/members/m2/state', { json: { action: 'evacuate', force: true } }), 400, /Cannot heal cluster member "m2": it is Evacuated/);

      await c.restart('m2');
      await waitStatus(c, 'm2', 'Evacuated', 20_000, 'm1');
      await runState(c, 'm2', { action: 'restore' }, 'm1');
      assert.equal((await c.instance('k1', 'm1')).status, 'Running');
    })();
  });
});
