import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LoadLedger,
  groupMembers,
  instanceDemand,
  pickTarget,
  placeNewInstance,
  placementRequest,
  type PlacementRequest,
} from '../../src/placement/index.js';
import { GiB, MiB, instance, member, snapshot, volume, volumeDisk } from '../helpers/snapshot.js';

/** A request for an instance of project `default` on x86_64. */
const request = (over: Partial<PlacementRequest> = {}): PlacementRequest => ({
  cpu: 0,
  memoryBytes: 0,
  bytes: GiB,
  architecture: 'x86_64',
  project: 'default',
  ...over,
});

const picked = (ledger: LoadLedger, req: PlacementRequest, exclude: string[] = []): string => {
  const r = pickTarget(ledger, req, { exclude });
  assert.ok(r.ok, r.ok ? '' : r.reason);
  return r.member;
};

test('demand counts limits, the root volume and attached custom volumes of the same member', () => {
  const inst = instance('a', 'm1', {
    config: { 'limits.cpu': '2', 'limits.memory': '1GiB' },
    devices: { data: volumeDisk('data'), logs: volumeDisk('logs') },
    rootBytes: 100 * MiB,
  });
  const snap = snapshot(
    [member('m1')],
    [inst],
    [volume('data', 'm1', 200 * MiB), volume('logs', 'm2', 999 * MiB), volume('data', 'm1', 5 * MiB, { project: 'other' })],
  );
  // The volume on m2 is not carried (no bytes), but its pool is one the instance uses.
  assert.deepEqual(instanceDemand(inst, snap), { cpu: 2, memoryBytes: GiB, bytes: 300 * MiB, pools: { local: 300 * MiB } });
});

test('an instance without limits demands no cpu and no memory', () => {
  const inst = instance('a', 'm1', { rootBytes: 5 });
  assert.deepEqual(instanceDemand(inst, snapshot([member('m1')], [inst])), { cpu: 0, memoryBytes: 0, bytes: 5, pools: { local: 5 } });
});

test('demand puts the root volume in its root disk\'s pool and each custom volume in its own', () => {
  const inst = instance('a', 'm1', {
    devices: { root: { type: 'disk', path: '/', pool: 'fast' }, data: volumeDisk('data', '/mnt/data', 'bulk') },
    rootBytes: 10 * MiB,
  });
  const snap = snapshot([member('m1')], [inst], [volume('data', 'm1', 30 * MiB, { pool: 'bulk' })]);
  assert.deepEqual(instanceDemand(inst, snap).pools, { fast: 10 * MiB, bulk: 30 * MiB });
});

test('an instance goes only to a member that has every pool it uses, and a refusal names the missing pool', () => {
  const inst = instance('a', 'm1', { devices: { root: { type: 'disk', path: '/', pool: 'pool1' } }, rootBytes: MiB });
  const snap = snapshot(
    [
      member('m1', { pools: { default: 100 * GiB, pool1: 100 * GiB } }),
      member('m2', { pools: { default: 100 * GiB } }),
      member('m3', { pools: { default: 100 * GiB, pool1: 100 * GiB } }),
    ],
    [inst],
  );
  assert.equal(picked(new LoadLedger(snap), placementRequest(inst, snap), ['m1']), 'm3');
  const refused = pickTarget(new LoadLedger(snap), placementRequest(inst, snap), { exclude: ['m1', 'm3'] });
  assert.equal(refused.ok, false);
  assert.match(refused.ok ? '' : refused.reason, /m2: no storage pool "pool1"/);
});

test('a pool without room for the volumes it would receive rules the member out, naming the pool', () => {
  const inst = instance('a', 'm1', { devices: { root: { type: 'disk', path: '/', pool: 'pool1' } }, rootBytes: 2 * GiB });
  const snap = snapshot([member('m1'), member('m2', { pools: { default: 100 * GiB, pool1: GiB } })], [inst]);
  const refused = pickTarget(new LoadLedger(snap), placementRequest(inst, snap), { exclude: ['m1'] });
  assert.match(refused.ok ? '' : refused.reason, /m2: not enough space in storage pool "pool1"/);
});

test('placements planned earlier count against the pool they fill', () => {
  const a = instance('a', 'm1', { devices: { root: { type: 'disk', path: '/', pool: 'pool1' } }, rootBytes: 600 * MiB });
  const b = instance('b', 'm1', { devices: { root: { type: 'disk', path: '/', pool: 'pool1' } }, rootBytes: 600 * MiB });
  const snap = snapshot([member('m1'), member('m2', { pools: { pool1: GiB } }), member('m3', { cpuCapacity: 4, pools: { pool1: GiB } })], [a, b]);
  const ledger = new LoadLedger(snap);
  const first = picked(ledger, placementRequest(a, snap), ['m1']);
  ledger.place(first, { ...placementRequest(a, snap) });
  const second = picked(ledger, placementRequest(b, snap), ['m1']);
  assert.notEqual(second, first, 'the pool of the first target is too full for the second instance');
});

test('placement request carries architecture, project and placement group', () => {
  const inst = instance('a', 'm1', { project: 'p', architecture: 'aarch64', config: { 'placement.group': 'db' } });
  const r = placementRequest(inst, snapshot([member('m1')], [inst]));
  assert.equal(r.architecture, 'aarch64');
  assert.equal(r.project, 'p');
  assert.equal(r.group, 'db');
});

test('members that are not Online are never chosen', () => {
  for (const status of ['Evacuating', 'Evacuated', 'Restoring', 'Offline'] as const) {
    const ledger = new LoadLedger(snapshot([member('m1', { status }), member('m2', { cpuCapacity: 1 })]));
    assert.equal(picked(ledger, request()), 'm2', status);
  }
});

test('the excluded source is never chosen even when it is the emptiest', () => {
  const snap = snapshot([member('m1'), member('m2')], [instance('x', 'm2', { config: { 'limits.cpu': '4' } })]);
  assert.equal(picked(new LoadLedger(snap), request(), ['m1']), 'm2');
});

test('scheduler.instance=manual members are never chosen automatically', () => {
  const snap = snapshot([member('m1', { config: { 'scheduler.instance': 'manual' } }), member('m2', { cpuCapacity: 1 })]);
  assert.equal(picked(new LoadLedger(snap), request()), 'm2');
  const only = new LoadLedger(snapshot([member('m1', { config: { 'scheduler.instance': 'manual' } })]));
  const r = pickTarget(only, request(), { exclude: [] });
  assert.equal(r.ok, false);
  assert.match(r.ok ? '' : r.reason, /m1: scheduler\.instance=manual/);
});

test('only members of the same architecture are chosen', () => {
  const snap = snapshot([member('m1', { architecture: 'aarch64' }), member('m2', { cpuCapacity: 1 })]);
  assert.equal(picked(new LoadLedger(snap), request()), 'm2');
  assert.equal(picked(new LoadLedger(snap), request({ architecture: 'aarch64' })), 'm1');
});

test('a member without room for the cpu limit is skipped and the refusal names CPU', () => {
  const snap = snapshot([member('m1', { cpuCapacity: 4 }), member('m2', { cpuCapacity: 8 })], [
    instance('x', 'm1', { config: { 'limits.cpu': '3' } }),
    instance('y', 'm2', { config: { 'limits.cpu': '6' } }),
  ]);
  assert.equal(picked(new LoadLedger(snap), request({ cpu: 2 })), 'm2');
  const r = pickTarget(new LoadLedger(snap), request({ cpu: 3 }));
  assert.deepEqual(r, {
    ok: false,
    reason: 'no member has room: needs 3 CPU, 1.00GiB disk (m1, m2: not enough CPU)',
  });
});

test('a member without room for the memory limit is skipped and the refusal names memory', () => {
  const snap = snapshot([member('m1', { memoryCapacity: 2 * GiB })]);
  assert.equal(picked(new LoadLedger(snap), request({ memoryBytes: 2 * GiB })), 'm1');
  const r = pickTarget(new LoadLedger(snap), request({ memoryBytes: 3 * GiB }));
  assert.match(r.ok ? '' : r.reason, /needs 3\.00GiB memory, 1\.00GiB disk \(m1: not enough memory\)/);
});

test('a member without free disk for the bytes is skipped and the refusal names disk', () => {
  const snap = snapshot([member('m1', { diskFree: 10 * GiB })]);
  const r = pickTarget(new LoadLedger(snap), request({ bytes: 11 * GiB }));
  assert.match(r.ok ? '' : r.reason, /m1: not enough disk/);
});

test('a refusal names every limiting resource and why each member was out, on one line', () => {
  const snap = snapshot(
    [member('m1'), member('m2', { memoryCapacity: GiB / 2 }), member('m3', { status: 'Evacuated' })],
    [],
  );
  const r = pickTarget(new LoadLedger(snap), request({ cpu: 2, memoryBytes: GiB, bytes: 300 * MiB }), { exclude: ['m1'] });
  assert.deepEqual(r, {
    ok: false,
    reason: 'no member has room: needs 2 CPU, 1.00GiB memory, 300.00MiB disk (m2: not enough memory; m3: evacuated)',
  });
});

test('a refusal over many members summarises them per reason', () => {
  const members = Array.from({ length: 60 }, (_, i) => member(`m${String(i).padStart(2, '0')}`, { status: i < 50 ? 'Evacuated' : 'Online', cpuCapacity: 1 }));
  const r = pickTarget(new LoadLedger(snapshot(members)), request({ cpu: 2 }));
  assert.equal(
    r.ok ? '' : r.reason,
    'no member has room: needs 2 CPU, 1.00GiB disk (m00, m01 and 48 more: evacuated; m50, m51 and 8 more: not enough CPU)',
  );
});

test('a cluster with no other member says so', () => {
  const r = pickTarget(new LoadLedger(snapshot([member('m1')])), request(), { exclude: ['m1'] });
  assert.match(r.ok ? '' : r.reason, /\(no other member\)$/);
});

test('the least loaded member wins, load being the larger of cpu and memory share', () => {
  const snap = snapshot([member('m1'), member('m2'), member('m3')], [
    instance('a', 'm1', { config: { 'limits.cpu': '2' } }), // 25% cpu
    instance('b', 'm2', { config: { 'limits.memory': '8GiB' } }), // 50% memory
    instance('c', 'm3', { config: { 'limits.cpu': '1', 'limits.memory': '1GiB' } }), // 12.5%
  ]);
  assert.equal(picked(new LoadLedger(snap), request()), 'm3');
});

test('load is measured before adding the instance', () => {
  // m1 is at 50% and would be at 75%; m2 is empty and would be full: m2 is still the less loaded one.
  const snap = snapshot([member('m1', { cpuCapacity: 8 }), member('m2', { cpuCapacity: 2 })], [
    instance('a', 'm1', { config: { 'limits.cpu': '4' } }),
  ]);
  assert.equal(picked(new LoadLedger(snap), request({ cpu: 2 })), 'm2');
});

test('on equal load the member with fewer instances wins, then the first name', () => {
  const snap = snapshot([member('m3'), member('m1'), member('m2')], [instance('a', 'm1'), instance('b', 'm1'), instance('c', 'm2')]);
  assert.equal(picked(new LoadLedger(snap), request()), 'm3');
  const tie = snapshot([member('m3'), member('m2'), member('m1')], []);
  assert.equal(picked(new LoadLedger(tie), request()), 'm1');
});

test('instances of one placement group spread over members that hold none of it', () => {
  const group = { 'placement.group': 'db' };
  const snap = snapshot([member('m1'), member('m2')], [
    instance('db1', 'm1', { config: group }),
    instance('busy', 'm2', { config: { 'limits.cpu': '6' } }),
  ]);
  // m1 is less loaded but already holds the group.
  assert.equal(picked(new LoadLedger(snap), request({ group: 'db' })), 'm2');
  // Another project's group of the same name does not count.
  assert.equal(picked(new LoadLedger(snap), request({ group: 'db', project: 'other' })), 'm1');
});

test('placement group spreading is only a preference', () => {
  const group = { 'placement.group': 'db' };
  const snap = snapshot([member('m1'), member('m2', { cpuCapacity: 1 })], [
    instance('db1', 'm1', { config: group }),
    instance('db2', 'm2', { config: group }),
  ]);
  assert.equal(picked(new LoadLedger(snap), request({ group: 'db' })), 'm1');
  // The member without the group has no room: it is not chosen over one that fits.
  const full = snapshot([member('m1'), member('m2', { cpuCapacity: 1 })], [instance('db1', 'm1', { config: group })]);
  assert.equal(picked(new LoadLedger(full), request({ group: 'db', cpu: 2 })), 'm1');
});

test('planned placements count for the next pick', () => {
  const ledger = new LoadLedger(snapshot([member('m1', { memoryCapacity: 10 * GiB }), member('m2', { memoryCapacity: 10 * GiB })]));
  const big = request({ memoryBytes: 8 * GiB });
  const first = picked(ledger, big);
  ledger.place(first, big);
  const second = picked(ledger, big);
  assert.notEqual(second, first);
  ledger.place(second, big);
  assert.equal(pickTarget(ledger, big).ok, false);
  assert.equal(ledger.load('m1')?.instances, 1);
});

test('planned bytes reduce the disk still free', () => {
  const ledger = new LoadLedger(snapshot([member('m1', { diskFree: 10 * GiB })]));
  ledger.place('m1', request({ bytes: 6 * GiB }));
  assert.equal(ledger.load('m1')?.diskFree, 4 * GiB);
  assert.equal(pickTarget(ledger, request({ bytes: 5 * GiB })).ok, false);
});

test('planned placements count for placement group spreading', () => {
  const ledger = new LoadLedger(snapshot([member('m1'), member('m2'), member('m3')]));
  const db = request({ group: 'db' });
  const targets: string[] = [];
  for (let i = 0; i < 3; i++) {
    const m = picked(ledger, db);
    ledger.place(m, db);
    targets.push(m);
  }
  assert.deepEqual(targets.sort(), ['m1', 'm2', 'm3']);
  assert.equal(ledger.groupCount('default', 'db', 'm2'), 1);
});

test('a new instance without --target goes where an evacuation move would', () => {
  const snap = snapshot(
    [member('m1'), member('m2'), member('m3', { status: 'Evacuated' })],
    [instance('a', 'm1', { config: { 'limits.cpu': '2' } })],
  );
  assert.deepEqual(placeNewInstance(snap, request({ cpu: 1 })), { ok: true, member: 'm2' });
  assert.equal(placeNewInstance(snap, request({ cpu: 9 })).ok, false);
});

test('a thousand picks over a hundred members fill members evenly and never over capacity', () => {
  const members = Array.from({ length: 100 }, (_, i) => member(`m${String(i).padStart(3, '0')}`, { cpuCapacity: 20 }));
  const ledger = new LoadLedger(snapshot(members));
  const req = request({ cpu: 2 });
  for (let i = 0; i < 1000; i++) ledger.place(picked(ledger, req), req);
  for (const load of ledger.members) assert.equal(load.cpuUsed, 20);
  assert.equal(pickTarget(ledger, req).ok, false);
});

test('a new instance with --target=@<group> is placed only among the members of that cluster group', () => {
  const snap = snapshot([member('m1'), member('m2', { clusterGroups: ['default', 'g'] }), member('m3', { clusterGroups: ['g'] })]);
  const request = { cpu: 0, memoryBytes: 0, bytes: 0, architecture: 'x86_64', project: 'default' };
  assert.deepEqual(placeNewInstance(snap, request), { ok: true, member: 'm1' }, 'without a group, m1 (first by name) wins');
  assert.deepEqual(placeNewInstance(snap, request, groupMembers(snap, 'g')), { ok: true, member: 'm2' });
  const none = placeNewInstance(snap, request, groupMembers(snap, 'empty'));
  assert.equal(none.ok, false);
  assert.match(none.ok ? '' : none.reason, /no other member/);
});
