// Evacuate on shutdown (`core.shutdown_action=evacuate`, Incus's key): a member whose daemon gets SIGTERM (the
// host shutting down) first evacuates itself through the drainer, waits, then exits; it comes back Evacuated
// and a restore brings everything home. An evacuation that cannot happen never holds the shutdown up: the
// daemon exits at once and its log says why.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import {
  assertAllIntact,
  assertOnePlace,
  beginState,
  launchWorkload,
  memberInfo,
  readAll,
  setMemberConfig,
  waitOperation,
  waitStatus,
} from './world.js';

let c: TestCluster;

describe('core.shutdown_action=evacuate', () => {
  before(async () => {
    c = await startCluster({ members: 3, offlineThreshold: 3 });
    await c.client('m01').request('PATCH', '/1.0', { config: { 'core.shutdown_action': 'evacuate' } });
  });
  after(async () => {
    await c?.stop();
  });

  it('refuses a value other than shutdown or evacuate (400), naming the key', async () => {
    const r = await c.raw('m01', 'PATCH', '/1.0', { json: { config: { 'core.shutdown_action': 'reboot' } } });
    assert.equal(r.status, 400);
    assert.match(r.body?.error ?? '', /core\.shutdown_action/);
  });

  it('SIGTERM evacuates the member before its daemon exits; it comes back Evacuated and a restore brings everything home', async () => {
    const names = ['s1', 's2', 's3'];
    for (const name of names) await launchWorkload(c, name, { target: 'm02', termSleep: 0.3, payloadBytes: 1024 * 1024 });
    await launchWorkload(c, 's4', { target: 'm02', config: { 'cluster.evacuate': 'stop' } });
    const data = await readAll(c, [...names, 's4'], 'm01');

    await c.kill('m02', 'SIGTERM');
    // The daemon is gone only now: everything that could move has moved, the pinned one is stopped.
    assert.equal((await memberInfo(c, 'm02', 'm01')).status !== 'Online', true);
    for (const name of names) {
      const v = await assertOnePlace(c, name, { running: true }, 'm01');
      assert.notEqual(v.location, 'm02');
      assert.equal(v.config['volatile.evacuate.origin'], 'm02');
    }
    const log = c.logTail('m02', 100_000);
    assert.match(log, /evacuating this member first/);
    assert.match(log, /evacuated; shutting down/);

    await c.restart('m02');
    await waitStatus(c, 'm02', 'Evacuated', 20_000, 'm01');
    const pinned = await assertOnePlace(c, 's4', { running: false, location: 'm02' }, 'm01');
    assert.equal(pinned.config['volatile.last_state.power'], 'RUNNING', 'an evacuated member starts nothing at boot');

    const restore = await waitOperation(c, await beginState(c, 'm02', { action: 'restore' }, 'm01'), 60_000);
    assert.equal(restore.status, 'Success', restore.err);
    for (const name of [...names, 's4']) await assertOnePlace(c, name, { running: true, location: 'm02' }, 'm01');
    await assertAllIntact(c, data, new Set([...names, 's4']), 'm01');
  });

  it('an evacuation that cannot happen does not hold the shutdown up: the daemon exits and says why', async () => {
    // Nowhere to go: every other member refuses new instances, so the plan refuses the pinned-to-migrate one.
    await launchWorkload(c, 'stuck', { target: 'm03', config: { 'cluster.evacuate': 'migrate' } });
    for (const m of ['m01', 'm02']) await setMemberConfig(c, m, { 'scheduler.instance': 'manual' });
    const t0 = Date.now();
    await c.kill('m03', 'SIGTERM');
    assert.ok(Date.now() - t0 < 30_000, 'the daemon exited long before core.shutdown_timeout (5 min)');
    assert.match(c.logTail('m03', 100_000), /could not evacuate before shutting down \(Cannot evacuate cluster member .*no member has room.*shutting down normally/);
    await c.restart('m03');
    await waitStatus(c, 'm03', 'Online', 20_000, 'm01');
    await assertOnePlace(c, 'stuck', { running: true, location: 'm03' }, 'm01');
    for (const m of ['m01', 'm02']) await setMemberConfig(c, m, { 'scheduler.instance': '' });
  });
});
