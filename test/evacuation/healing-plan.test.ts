// Healing's plan over a snapshot: which instances of a gone member are relinked where, which are unreachable, which stay.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planHealing } from '../../src/evacuation/healing.js';
import { GiB, instance, member, snapshot, volume, volumeDisk } from '../helpers/snapshot.js';

const onShared = { root: { type: 'disk', path: '/', pool: 'nfs' } };

test('healing relinks what is all on shared pools, reports what is on local ones, and leaves pinned ones in place', () => {
  const world = snapshot(
    [
      member('m1', { status: 'Offline', pools: { local: 0, nfs: 0 } }),
      member('m2', { pools: { local: 10 * GiB, nfs: 0 } }),
      member('m3', { status: 'Evacuated', pools: { local: 10 * GiB, nfs: 0 } }),
    ],
    [
      instance('web', 'm1', { devices: onShared, rootBytes: 0 }),
      instance('idle', 'm1', { devices: onShared, rootBytes: 0, running: false }),
      instance('pinned', 'm1', { devices: onShared, rootBytes: 0, config: { 'cluster.evacuate': 'stop' } }),
      instance('db', 'm1'),
      instance('mixed', 'm1', { devices: { ...onShared, data: volumeDisk('d') }, rootBytes: 0 }),
      instance('elsewhere', 'm2', { devices: onShared, rootBytes: 0 }),
    ],
    [volume('d', 'm1', GiB)],
  );
  world.remotePools = ['nfs'];
  const plan = planHealing(world, 'm1');
  assert.deepEqual(plan.relinks, [
    { project: 'default', name: 'idle', target: 'm2', running: false },
    { project: 'default', name: 'web', target: 'm2', running: true },
  ]);
  assert.deepEqual(plan.unreachable, ['db', 'mixed']);
  assert.deepEqual(plan.stays.map((s) => s.name), ['pinned']);
});

test('healing relinks nothing when no member that takes instances has the shared pool', () => {
  const world = snapshot([member('m1', { status: 'Offline', pools: { nfs: 0 } }), member('m2', { pools: { local: 10 * GiB } })], [instance('web', 'm1', { devices: onShared, rootBytes: 0 })]);
  world.remotePools = ['nfs'];
  const plan = planHealing(world, 'm1');
  assert.deepEqual(plan.relinks, []);
  assert.deepEqual(plan.unreachable, []);
  assert.match(plan.stays[0]?.reason ?? '', /no storage pool "nfs"/);
});
