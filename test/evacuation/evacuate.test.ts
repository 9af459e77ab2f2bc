// Evacuate and restore a member of a real three-member cluster holding LXD's four mixed cases (a running
// and a stopped instance that move, one pinned to stop, one never started), one of them with a custom
// volume: where each goes, its power state and volatile keys, every byte of its volumes, the member's
// states, the operation and its progress metadata, and the events another member relays.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import {
  StatusRecorder,
  assertAllIntact,
  assertNoLeftovers,
  assertOnePlace,
  beginState,
  createVolume,
  getOperation,
  launchWorkload,
  lifecycle,
  memberInfo,
  operationUpdates,
  readAll,
  recordEvents,
  runProgress,
  setPower,
  waitOperation,
  type EventLog,
  type InstanceData,
  type OperationView,
  volumeDisk,
} from './world.js';

let c: TestCluster;
const cases = ['c1', 'c2', 'c3', 'c4'];
/** Where each moved instance went. */
const targets = new Map<string, string>();
let data: Map<string, InstanceData>;
let volumeSum = '';
let bystanderPid = 0;

/** LXD's progress texts (and the empty start value): anything else would confuse the lxc client. */
const lxdText = /^$|^(Stopping|Starting) "[a-z0-9-]+" in project "default"$|^Migrating "[a-z0-9-]+" in project "default" (to|from) "m0\d"$/;

/** Every `*_progress` key of the metadata must be `evacuation_progress`, a string of LXD's texts. */
function assertProgressKeys(updates: Record<string, unknown>[]): string[] {
  const texts: string[] = [];
  for (const meta of updates) {
    const progressKeys = Object.keys(meta).filter((k) => k.endsWith('_progress'));
    assert.deepEqual(progressKeys, ['evacuation_progress'], `metadata keys ${Object.keys(meta).join(', ')}`);
    const text = meta.evacuation_progress;
    assert.equal(typeof text, 'string');
    assert.match(text as string, lxdText);
    texts.push(text as string);
  }
  return texts;
}

function assertOperationShape(op: OperationView, description: string): void {
  assert.equal(op.class, 'task');
  assert.equal(op.description, description);
  assert.equal(op.location, 'm01');
  assert.equal(op.may_cancel, true);
  assert.deepEqual(op.resources, { cluster: ['/1.0/cluster/members/m01'] });
}

describe('evacuate and restore LXD\'s four mixed cases', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
    await createVolume(c, 'm01', 'vol1');
    volumeSum = await sha256Tree(c.volumeDir('m01', 'vol1'));
    // (1) running, auto, with a custom volume; its clean stop takes a moment, so the states are visible.
    await launchWorkload(c, 'c1', { target: 'm01', termSleep: 0.5, devices: { data: volumeDisk('vol1') } });
    // (2) stopped, auto.
    await launchWorkload(c, 'c2', { target: 'm01' });
    await setPower(c, 'c2', 'stop');
    // (3) running, pinned to stop.
    await launchWorkload(c, 'c3', { target: 'm01', termSleep: 0.5, config: { 'cluster.evacuate': 'stop' } });
    // (4) created, never started.
    await launchWorkload(c, 'c4', { target: 'm01', start: false });
    // An instance elsewhere that nothing may touch.
    await launchWorkload(c, 'bystander', { target: 'm02' });
    bystanderPid = (await c.instance('bystander')).state?.pid ?? 0;
    data = await readAll(c, cases);
  });
  after(async () => {
    await c?.stop();
  });

  it('evacuate (asked through another member) moves c1, c2, c4 with their power state and stops c3 in place', async () => {
    const events: EventLog = await recordEvents(c, 'm03');
    const states = await StatusRecorder.start(c, 'm01', 'm03');
    try {
      const id = await beginState(c, 'm01', { action: 'evacuate' }, 'm02');
      const running = await getOperation(c, id, 'm03');
      assert.ok(running);
      assertOperationShape(running, 'Evacuating cluster member');
      const op = await waitOperation(c, id);
      assert.equal(op.status, 'Success', op.err);
      assertOperationShape(op, 'Evacuating cluster member');

      assert.deepEqual(await states.stop(), ['Online', 'Evacuating', 'Evacuated']);
      const info = await memberInfo(c, 'm01', 'm02');
      assert.equal(info.status, 'Evacuated');
      assert.equal(info.message, 'Unavailable due to maintenance');

      // (1) moved, running, origin and last state.
      const c1 = await assertOnePlace(c, 'c1', { running: true });
      assert.notEqual(c1.location, 'm01');
      assert.equal(c1.config['volatile.evacuate.origin'], 'm01');
      assert.equal(c1.config['volatile.last_state.power'], 'RUNNING');
      // (2) moved, stopped, origin set.
      const c2 = await assertOnePlace(c, 'c2', { running: false });
      assert.notEqual(c2.location, 'm01');
      assert.equal(c2.config['volatile.evacuate.origin'], 'm01');
      assert.equal(c2.config['volatile.last_state.power'], 'STOPPED');
      // (3) stays, stopped, still recorded RUNNING so restore starts it.
      const c3 = await assertOnePlace(c, 'c3', { running: false, location: 'm01' });
      assert.equal(c3.config['volatile.evacuate.origin'], undefined);
      assert.equal(c3.config['volatile.last_state.power'], 'RUNNING');
      // (4) moved, stopped, origin only.
      const c4 = await assertOnePlace(c, 'c4', { running: false });
      assert.notEqual(c4.location, 'm01');
      assert.equal(c4.config['volatile.evacuate.origin'], 'm01');
      assert.equal(c4.config['volatile.last_state.power'], undefined);
      for (const v of [c1, c2, c4]) targets.set(v.name, v.location);

      // The custom volume went with c1, byte for byte, and its record follows.
      assert.ok(!existsSync(c.volumeDir('m01', 'vol1')));
      assert.equal(await sha256Tree(c.volumeDir(c1.location, 'vol1')), volumeSum);
      const vol = (await c.client('m03').get('/1.0/storage-pools/default/volumes/custom/vol1')) as { location: string };
      assert.equal(vol.location, c1.location);

      await assertAllIntact(c, data, new Set(['c1', 'c3']));
      await assertNoLeftovers(c);
      await assertOnePlace(c, 'bystander', { running: true, location: 'm02' });
      assert.equal((await c.instance('bystander')).state?.pid, bystanderPid);

      // Progress: LXD's text under evacuation_progress, the structured object under roost_evacuation.
      const final = runProgress(op.metadata);
      assert.equal(final.action, 'evacuate');
      assert.equal(final.member, 'm01');
      assert.equal(final.status, 'done');
      assert.equal(final.total, 4);
      assert.equal(final.done, 4);
      assert.equal(final.failed, 0);
      assert.ok(final.bytesTotal > 64 * 1024 * 3, `bytesTotal ${final.bytesTotal}`);
      assert.equal(final.bytesDone, final.bytesTotal);
      assert.equal(typeof final.rate, 'number');
      assert.deepEqual(Object.keys(final.instances).sort(), ['default/c1', 'default/c2', 'default/c3', 'default/c4']);
      for (const name of ['c1', 'c2', 'c4']) {
        const step = final.instances[`default/${name}`];
        assert.deepEqual(step && { action: step.action, target: step.target, state: step.state }, { action: 'migrate', target: targets.get(name), state: 'done' });
        assert.equal(step?.bytesDone, step?.bytes, `${name} copied all its bytes`);
      }
      assert.deepEqual(final.instances['default/c3'], { action: 'stop', target: null, state: 'done', bytes: 0, bytesDone: 0 });
      const updates = operationUpdates(events, id);
      assert.ok(updates.length >= 2, `operation events seen: ${updates.length}`);
      const texts = assertProgressKeys([...updates, op.metadata ?? {}]);
      assert.ok(texts.some((t) => t !== ''), 'some progress text was shown');
      for (const u of updates) runProgress(u);

      // Events, relayed by m03.
      await waitFor('m03 relays cluster-member-evacuated', () => lifecycle(events, 'cluster-member-evacuated', '/1.0/cluster/members/m01').length === 1, 5000);
      assert.equal(lifecycle(events, 'cluster-member-evacuated')[0]?.location, 'm01');
      for (const name of ['c1', 'c2', 'c4']) {
        const migrated = lifecycle(events, 'instance-migrated', `/1.0/instances/${name}`);
        assert.equal(migrated.length, 1, `instance-migrated of ${name}`);
        assert.equal(migrated[0]?.location, 'm01');
      }
      assert.equal(lifecycle(events, 'instance-migrated', '/1.0/instances/c3').length, 0);
    } finally {
      await states.stop();
      events.close();
    }
  });

  it('the evacuated member shows its state and the last run in GET /1.0/cluster/members/<m>[/state]', async () => {
    for (const via of ['m01', 'm02', 'm03']) {
      const info = await memberInfo(c, 'm01', via);
      assert.equal(info.status, 'Evacuated');
      assert.equal(info.message, 'Unavailable due to maintenance');
    }
    const list = (await c.client('m02').get('/1.0/cluster/members?recursion=1')) as { server_name: string; status: string }[];
    assert.deepEqual(list.map((m) => `${m.server_name}=${m.status}`), ['m01=Evacuated', 'm02=Online', 'm03=Online']);
    const state = (await c.client('m02').get('/1.0/cluster/members/m01/state')) as {
      sysinfo: { logical_cpus: number; total_ram: number };
      storage_pools: { default: { space: { used: number; total: number } } };
      roost_evacuation: unknown;
    };
    assert.ok(state.sysinfo.logical_cpus > 0);
    assert.ok(state.sysinfo.total_ram > 0);
    assert.ok(state.storage_pools.default.space.total > 0);
    const progress = runProgress({ roost_evacuation: state.roost_evacuation });
    assert.equal(progress.action, 'evacuate');
    assert.equal(progress.status, 'done');
    assert.equal(progress.done, 4);
    // A member that never evacuated has no run to show.
    const other = (await c.client('m01').get('/1.0/cluster/members/m03/state')) as { roost_evacuation: unknown; storage_pools: unknown };
    assert.equal(other.roost_evacuation, null);
    assert.ok(other.storage_pools);
  });

  it('restore brings every instance home with its power state, drops the origin key and restarts c3', async () => {
    const events = await recordEvents(c, 'm02');
    const states = await StatusRecorder.start(c, 'm01', 'm02');
    try {
      const id = await beginState(c, 'm01', { action: 'restore' }, 'm03');
      const op = await waitOperation(c, id);
      assert.equal(op.status, 'Success', op.err);
      assertOperationShape(op, 'Restoring cluster member');
      assert.deepEqual(await states.stop(), ['Evacuated', 'Restoring', 'Online']);
      const info = await memberInfo(c, 'm01', 'm03');
      assert.equal(info.status, 'Online');
      assert.equal(info.message, 'Fully operational');

      const expected: Record<string, { running: boolean; power: string | undefined }> = {
        c1: { running: true, power: 'RUNNING' },
        c2: { running: false, power: 'STOPPED' },
        c3: { running: true, power: 'RUNNING' },
        c4: { running: false, power: undefined },
      };
      for (const [name, want] of Object.entries(expected)) {
        const v = await assertOnePlace(c, name, { running: want.running, location: 'm01' });
        assert.equal(v.config['volatile.evacuate.origin'], undefined, `origin of ${name}`);
        assert.equal(v.config['volatile.last_state.power'], want.power, `last state of ${name}`);
      }
      assert.equal(await sha256Tree(c.volumeDir('m01', 'vol1')), volumeSum);
      for (const m of ['m02', 'm03']) assert.ok(!existsSync(c.volumeDir(m, 'vol1')));
      const vol = (await c.client('m02').get('/1.0/storage-pools/default/volumes/custom/vol1')) as { location: string };
      assert.equal(vol.location, 'm01');
      await assertAllIntact(c, data, new Set(['c1', 'c3']));
      await assertNoLeftovers(c);
      assert.equal((await c.instance('bystander')).state?.pid, bystanderPid);

      const final = runProgress(op.metadata);
      assert.equal(final.action, 'restore');
      assert.equal(final.status, 'done');
      assert.equal(final.total, 4, 'c3 to start, c1, c2 and c4 to bring home');
      assert.equal(final.done, 4);
      assert.deepEqual(final.instances['default/c3'], { action: 'start', target: 'm01', state: 'done', bytes: 0, bytesDone: 0 });
      const texts = assertProgressKeys([...operationUpdates(events, id), op.metadata ?? {}]);
      assert.ok(texts.some((t) => t !== ''));

      // The holders emit instance-migrated, m01 the rest: wait for all of them.
      await waitFor('m02 relays cluster-member-restored and the moves home', () =>
        lifecycle(events, 'cluster-member-restored', '/1.0/cluster/members/m01').length === 1 &&
        ['c1', 'c2', 'c4'].every((name) => lifecycle(events, 'instance-migrated', `/1.0/instances/${name}`).length > 0), 5000);
      assert.equal(lifecycle(events, 'cluster-member-restored')[0]?.location, 'm01');
      for (const name of ['c1', 'c2', 'c4']) {
        const migrated = lifecycle(events, 'instance-migrated', `/1.0/instances/${name}`);
        assert.equal(migrated.length, 1, `instance-migrated of ${name}`);
        assert.equal(migrated[0]?.location, targets.get(name), 'the holder ran the move home');
      }
      assert.equal(lifecycle(events, 'instance-started', '/1.0/instances/c3').length, 1);
    } finally {
      await states.stop();
      events.close();
    }
  });
});
