// What an evacuated member may not do and where evacuation may put instances, on a real three-member
// cluster: no create, start or move onto an Evacuated member (403) and no automatic placement there,
// while its own restore still works; `scheduler.instance=manual` members never receive evacuated
// instances; a `placement.group` spreads; a chained evacuation keeps the first origin.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import {
  assertAllIntact,
  assertError,
  assertNoLeftovers,
  assertOnePlace,
  fingerprint,
  launchWorkload,
  memberInfo,
  postState,
  readAll,
  runState,
  setMemberConfig,
  setPower,
} from './world.js';

let c: TestCluster;

describe('an Evacuated member takes nothing new, and evacuation places by the rules', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
    // m02 holds one instance and m03 two, so m02 is the least loaded target, and an empty m01 would
    // be the first choice of placement if it could be chosen at all.
    await launchWorkload(c, 'visitor', { target: 'm02' });
    await launchWorkload(c, 'f1', { target: 'm03' });
    await launchWorkload(c, 'f2', { target: 'm03' });
  });
  after(async () => {
    await c?.stop();
  });

  it('while m01 is Evacuated: create, start and move onto it are 403, placement avoids it; its restore works', async () => {
    await launchWorkload(c, 'home1', { target: 'm01' });
    await launchWorkload(c, 'pin', { target: 'm01', config: { 'cluster.evacuate': 'stop' } });
    const data = await readAll(c, ['home1', 'pin']);
    await runState(c, 'm01', { action: 'evacuate' });
    assert.equal((await memberInfo(c, 'm01')).status, 'Evacuated');
    await assertOnePlace(c, 'pin', { running: false, location: 'm01' });

    const before = await fingerprint(c);
    for (const via of ['m01', 'm02']) {
      const res = await c.raw(via, 'POST', '/1.0/instances?target=m01', { json: { name: 'intruder', source: { type: 'none' }, config: { 'process.command': 'sleep 1000' } } });
      assertError(res, 403, 'Cluster member is evacuated');
    }
    assertError(await c.raw('m03', 'PUT', '/1.0/instances/pin/state', { json: { action: 'start' } }), 403, 'Cluster member is evacuated');
    assertError(await c.raw('m01', 'PUT', '/1.0/instances/pin/state', { json: { action: 'restart' } }), 403, 'Cluster member is evacuated');
    assertError(await c.raw('m03', 'POST', '/1.0/instances/visitor?target=m01', { json: { migration: true } }), 403, 'Cluster member is evacuated');
    assert.equal(await fingerprint(c), before, 'refused requests changed the cluster');
    assert.ok(!existsSync(c.instanceDir('m01', 'intruder')));
    await assertOnePlace(c, 'pin', { running: false, location: 'm01' });
    await assertOnePlace(c, 'visitor', { running: true, location: 'm02' });

    // Placement without a target never picks it, though it holds the fewest instances.
    for (const [i, via] of ['m01', 'm02', 'm03'].entries()) {
      await c.client(via).runAsync('POST', '/1.0/instances', { name: `placed${i}`, source: { type: 'none' }, config: { 'process.command': 'sleep 1000' } });
      const v = await assertOnePlace(c, `placed${i}`);
      assert.notEqual(v.location, 'm01', `placed${i} was placed on the evacuated member`);
    }
    // Instances on it may still be edited.
    await c.client('m02').request('PATCH', '/1.0/instances/pin', { config: { 'user.note': 'edited while evacuated' } });
    assert.equal((await c.instance('pin')).config['user.note'], 'edited while evacuated');

    // Its own restore is exempt: it starts pin and brings home1 back.
    await runState(c, 'm01', { action: 'restore' }, 'm02');
    await assertOnePlace(c, 'home1', { running: true, location: 'm01' });
    await assertOnePlace(c, 'pin', { running: true, location: 'm01' });
    await assertAllIntact(c, data, new Set(['home1', 'pin']));
    await assertNoLeftovers(c);
    for (const i of [0, 1, 2]) await c.client('m01').runAsync('DELETE', `/1.0/instances/placed${i}`);
    for (const name of ['home1', 'pin']) {
      await setPower(c, name, 'stop');
      await c.client('m01').runAsync('DELETE', `/1.0/instances/${name}`);
    }
  });

  it('a scheduler.instance=manual member is never an evacuation target, though it is the least loaded', async () => {
    for (const name of ['a1', 'a2', 'a3']) await launchWorkload(c, name, { target: 'm01' });
    await setMemberConfig(c, 'm02', { 'scheduler.instance': 'manual' });
    try {
      const plan = (await postState(c, 'm01', { action: 'evacuate', dry_run: true })).body?.metadata as { instances: { target: string }[] };
      assert.deepEqual(plan.instances.map((p) => p.target), ['m03', 'm03', 'm03']);
      await runState(c, 'm01', { action: 'evacuate' });
      for (const name of ['a1', 'a2', 'a3']) await assertOnePlace(c, name, { running: true, location: 'm03' });
    } finally {
      await setMemberConfig(c, 'm02', { 'scheduler.instance': '' });
    }
    await runState(c, 'm01', { action: 'restore' });
    for (const name of ['a1', 'a2', 'a3']) {
      await assertOnePlace(c, name, { running: true, location: 'm01' });
      await setPower(c, name, 'stop');
      await c.client('m01').runAsync('DELETE', `/1.0/instances/${name}`);
    }
  });

  it('instances of one placement.group go to distinct members', async () => {
    await launchWorkload(c, 'g1', { target: 'm01' });
    await launchWorkload(c, 'g2', { target: 'm01' });
    // Without a group both would go to the least loaded member, m02.
    const ungrouped = (await postState(c, 'm01', { action: 'evacuate', dry_run: true })).body?.metadata as { instances: { name: string; target: string }[] };
    assert.deepEqual(ungrouped.instances.map((p) => p.target), ['m02', 'm02']);
    for (const name of ['g1', 'g2']) await c.client('m01').request('PATCH', `/1.0/instances/${name}`, { config: { 'placement.group': 'web' } });
    await runState(c, 'm01', { action: 'evacuate' });
    const g1 = await assertOnePlace(c, 'g1', { running: true });
    const g2 = await assertOnePlace(c, 'g2', { running: true });
    assert.deepEqual([g1.location, g2.location].sort(), ['m02', 'm03']);
    await runState(c, 'm01', { action: 'restore' });
    for (const name of ['g1', 'g2']) {
      await assertOnePlace(c, name, { running: true, location: 'm01' });
      await setPower(c, name, 'stop');
      await c.client('m01').runAsync('DELETE', `/1.0/instances/${name}`);
    }
  });

  it('chained evacuation keeps the first origin, and restoring that member brings the instance home from wherever it is', async () => {
    await launchWorkload(c, 'ch', { target: 'm01' });
    const data = await readAll(c, ['ch', 'visitor']);
    await runState(c, 'm01', { action: 'evacuate' });
    let ch = await assertOnePlace(c, 'ch', { running: true, location: 'm02' });
    assert.equal(ch.config['volatile.evacuate.origin'], 'm01');

    // Now m02 goes too: m01 is not Online, so m03 is the only target.
    await runState(c, 'm02', { action: 'evacuate' }, 'm03');
    ch = await assertOnePlace(c, 'ch', { running: true, location: 'm03' });
    assert.equal(ch.config['volatile.evacuate.origin'], 'm01', 'the first origin is kept');
    const visitor = await assertOnePlace(c, 'visitor', { running: true, location: 'm03' });
    assert.equal(visitor.config['volatile.evacuate.origin'], 'm02');

    // Restoring m01 pulls ch home from m03 (m02 is still Evacuated).
    await runState(c, 'm01', { action: 'restore' }, 'm03');
    ch = await assertOnePlace(c, 'ch', { running: true, location: 'm01' });
    assert.equal(ch.config['volatile.evacuate.origin'], undefined);
    assert.equal((await memberInfo(c, 'm02')).status, 'Evacuated');
    await assertOnePlace(c, 'visitor', { running: true, location: 'm03' });

    await runState(c, 'm02', { action: 'restore' }, 'm01');
    const back = await assertOnePlace(c, 'visitor', { running: true, location: 'm02' });
    assert.equal(back.config['volatile.evacuate.origin'], undefined);
    await assertAllIntact(c, data, new Set(['ch', 'visitor']));
    await assertNoLeftovers(c);
  });
});
