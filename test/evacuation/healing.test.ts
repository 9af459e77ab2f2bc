// Healing (LXD's `cluster.healing_threshold`): the drainer evacuates a member whose heartbeat stopped longer
// ago than the threshold. Its instances live on its local pool, which no other member can reach: they are
// reported (event, member message, operation) and never touched; the member is Evacuated, so nothing new lands
// on it, and a restore brings it back. `evacuate --force` of an offline member does the same by hand; without
// force the refusal says how.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../../src/cli/run.js';
import { keys, type InstanceRecord } from '../../src/store/schema.js';
import { processAlive, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { Capture } from '../cli/helpers/fake-lxd.js';
import { assertError, launchWorkload, lifecycle, memberInfo, readAll, assertAllIntact, recordEvents, runState, waitStatus } from './world.js';

let c: TestCluster;

async function setServer(config: Record<string, string>): Promise<void> {
  await c.client('m01').request('PATCH', '/1.0', { config });
}

describe('healing an offline member', () => {
  before(async () => {
    c = await startCluster({ members: 3, offlineThreshold: 2 });
  });
  after(async () => {
    await c?.stop();
  });

  it('refuses a bad healing threshold, naming the key', async () => {
    const r = await c.raw('m01', 'PATCH', '/1.0', { json: { config: { 'cluster.healing_threshold': 'soon' } } });
    assert.equal(r.status, 400);
    assert.match(r.body?.error ?? '', /cluster\.healing_threshold/);
  });

  it('heals a member offline longer than cluster.healing_threshold: Evacuated, its local instances reported and untouched; restore brings it back', async (t) => {
    await launchWorkload(c, 'h1', { target: 'm03' });
    await launchWorkload(c, 'h2', { target: 'm03' });
    await launchWorkload(c, 'other', { target: 'm02' });
    const data = await readAll(c, ['h1', 'h2', 'other'], 'm01');
    const pids = new Map<string, number>();
    for (const n of ['h1', 'h2']) pids.set(n, (await c.instance(n, 'm01')).state?.pid ?? 0);
    await setServer({ 'cluster.healing_threshold': '4' });
    const events = await recordEvents(c, 'm01', ['lifecycle']);
    t.after(() => events.close());

    const killedAt = Date.now();
    await c.kill('m03', 'SIGKILL');
    await waitFor('the member is healed', async () => lifecycle(events, 'cluster-member-healed', '/1.0/cluster/members/m03').length > 0, 30_000);
    const delay = (Date.now() - killedAt) / 1000;
    t.diagnostic(`healed ${delay.toFixed(1)} s after the kill (offline threshold 2 s, healing threshold 4 s)`);
    assert.ok(delay >= 4, `not healed before the threshold (${delay} s)`);
    const event = lifecycle(events, 'cluster-member-healed')[0];
    assert.deepEqual((event?.metadata as { context: { unreachable: string[] } }).context.unreachable, ['h1', 'h2']);
    assert.equal(lifecycle(events, 'cluster-member-healed').length, 1, 'healed once');

    const offline = await memberInfo(c, 'm03', 'm01');
    assert.equal(offline.status, 'Offline');
    assert.match(offline.message, /^No heartbeat for .*; healed \(evacuated while offline\)$/);
    // Its member is gone, so the API cannot show them (it forwards to it): the store says where they are.
    const store = await c.store();
    for (const n of ['h1', 'h2']) {
      const kv = await store.get(keys.instance('default', n));
      assert.equal((JSON.parse(kv?.value ?? '{}') as InstanceRecord).location, 'm03', `${n} stays on its member's local pool`);
      assert.ok(processAlive(pids.get(n) ?? 0), `${n} was not touched`);
    }
    assert.equal((await c.instance('other', 'm01')).location, 'm02');

    // Back: Evacuated, saying why, until restored; then Online with everything running and intact.
    await c.restart('m03');
    await waitStatus(c, 'm03', 'Evacuated', 20_000, 'm01');
    assert.match((await memberInfo(c, 'm03', 'm01')).message, /^Healed while offline \(2 instances on local storage left in place\); restore it/);
    const refused = await c.raw('m01', 'POST', '/1.0/instances?target=m03', { json: { name: 'new1', type: 'process', source: { type: 'none' }, config: { 'process.command': 'sleep 100' } } });
    assert.equal(refused.status, 403, 'nothing new lands on a healed member');
    await runState(c, 'm03', { action: 'restore' }, 'm01');
    const back = await memberInfo(c, 'm03', 'm01');
    assert.equal(back.status, 'Online');
    assert.equal(back.message, 'Fully operational');
    for (const n of ['h1', 'h2']) assert.equal((await c.instance(n, 'm01')).status, 'Running');
    await assertAllIntact(c, data, new Set(['h1', 'h2', 'other']), 'm01');
    await setServer({ 'cluster.healing_threshold': '0' });
  });

  it('evacuate --force heals an offline member by hand; without force the refusal says how', async () => {
    await launchWorkload(c, 'k1', { target: 'm02' });
    await c.kill('m02', 'SIGKILL');
    await waitStatus(c, 'm02', 'Offline', 20_000, 'm01');
    assertError(await c.raw('m01', 'POST', '/1.0/cluster/members/m02/state', { json: { action: 'evacuate' } }), 400, /Cannot evacuate offline cluster member \(evacuate it with force to heal it/);
    assertError(await c.raw('m01', 'POST', '/1.0/cluster/members/m02/state', { json: { action: 'restore', force: true } }), 400, /Cannot restore offline cluster member$/);

    const stdout = new Capture();
    const stderr = new Capture();
    const code = await runCli(['cluster', 'evacuate', 'm02', '--force'], { stdout, stderr, env: { ROOST_DIR: c.memberDir('m01') } });
    assert.equal(code, 0, stderr.text);
    assert.equal(stdout.text, 'Healed "m02" while offline: it is Evacuated, nothing new lands on it; on its local storage, left in place until it is restored: k1, other\n');
    assertError(await c.raw('m01', 'POST', '/1.0/cluster/members/m02/state', { json: { action: 'evacuate', force: true } }), 400, /Cannot heal cluster member "m02": it is Evacuated/);

    await c.restart('m02');
    await waitStatus(c, 'm02', 'Evacuated', 20_000, 'm01');
    await runState(c, 'm02', { action: 'restore' }, 'm01');
    assert.equal((await c.instance('k1', 'm01')).status, 'Running');
  });
});
