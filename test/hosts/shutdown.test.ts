// Evacuate on shutdown (`core.shutdown_action=evacuate`, Incus's key), on the several-hosts harness (each
// member in its own network and mount namespaces, the store on etcd): a member whose daemon gets SIGTERM (the
// host shutting down) first evacuates itself through the drainer, waits, then exits; it comes back Evacuated
// and a restore brings everything home. An evacuation that cannot happen never holds the shutdown up: the
// daemon exits at once and its log says why.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startHosts, type HostsCluster } from '../helpers/hosts.js';
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
} from '../evacuation/world.js';
import { loud } from './support.js';

let h: HostsCluster | undefined;
let c: HostsCluster;

describe('core.shutdown_action=evacuate', () => {
  before(async () => {
    h = await startHosts({ members: 3, offlineThreshold: 3 });
    c = h;
    await c.client('m1').request('PATCH', '/1.0', { config: { 'core.shutdown_action': 'evacuate' } });
  });
  after(async () => {
    await h?.stop();
  });

  it('refuses a value other than shutdown or evacuate (400), naming the key', async () => {
    const r = await c.raw('m1', 'PATCH', '/1.0', { json: { config: { 'core.shutdown_action': 'reboot' } } });
    assert.equal(r.status, 400);
    assert.match(r.body?.error ?? '', /core\.shutdown_action/);
  });

  it('SIGTERM evacuates the member before its daemon exits; it comes back Evacuated and a restore brings everything home', { timeout: 240_000 }, async () => {
    await loud(() => h, async () => {
      const names = ['s1', 's2', 's3'];
      for (const name of names) await launchWorkload(c, name, { target: 'm2', termSleep: 0.3, payloadBytes: 1024 * 1024 });
      await launchWorkload(c, 's4', { target: 'm2', config: { 'cluster.evacuate': 'stop' } });
      const data = await readAll(c, [...names, 's4'], 'm1');

      await c.kill('m2', 'SIGTERM');
      // The daemon is gone only now: everything that could move has moved, the pinned one is stopped.
      assert.equal((await memberInfo(c, 'm2', 'm1')).status !== 'Online', true);
      for (const name of names) {
        const v = await assertOnePlace(c, name, { running: true }, 'm1');
        assert.notEqual(v.location, 'm2');
        assert.equal(v.config['volatile.evacuate.origin'], 'm2');
      }
      const log = c.logTail('m2', 100_000);
      assert.match(log, /evacuating this member first/);
      assert.match(log, /evacuated; shutting down/);

      await c.restart('m2');
      await waitStatus(c, 'm2', 'Evacuated', 20_000, 'm1');
      const pinned = await assertOnePlace(c, 's4', { running: false, location: 'm2' }, 'm1');
      assert.equal(pinned.config['volatile.last_state.power'], 'RUNNING', 'an evacuated member starts nothing at boot');

      const restore = await waitOperation(c, await beginState(c, 'm2', { action: 'restore' }, 'm1'), 60_000);
      assert.equal(restore.status, 'Success', restore.err);
      for (const name of [...names, 's4']) await assertOnePlace(c, name, { running: true, location: 'm2' }, 'm1');
      await assertAllIntact(c, data, new Set([...names, 's4']), 'm1');
    })();
  });

  it('an evacuation that cannot happen does not hold the shutdown up: the daemon exits and says why', { timeout: 240_000 }, async () => {
    await loud(() => h, async () => {
      // Nowhere to go: every other member refuses new instances, so the plan refuses the pinned-to-migrate one.
      await launchWorkload(c, 'stuck', { target: 'm3', config: { 'cluster.evacuate': 'migrate' } });
      for (const m of ['m1', 'm2']) await setMemberConfig(c, m, { 'scheduler.instance': 'manual' });
      const t0 = Date.now();
      await c.kill('m3', 'SIGTERM');
      assert.ok(Date.now() - t0 < 30_000, 'the daemon exited long before core.shutdown_timeout (5 min)');
      assert.match(c.logTail('m3', 100_000), /could not evacuate before shutting down \(Cannot evacuate cluster member .*no member has room.*shutting down normally/);
      await c.restart('m3');
      await waitStatus(c, 'm3', 'Online', 20_000, 'm1');
      await assertOnePlace(c, 'stuck', { running: true, location: 'm3' }, 'm1');
      for (const m of ['m1', 'm2']) await setMemberConfig(c, m, { 'scheduler.instance': '' });
    })();
  });
});
