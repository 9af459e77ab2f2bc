// Evacuations that overlap or are interrupted, on a real four-member cluster: two members evacuated at
// once (no deadlock, no instance in two places, no member past its capacity), `parallel: 1` against the
// default (same end state), a cancel while moves run (every instance whole on one side; evacuate again
// finishes the rest), and restore `mode: skip`.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { parseBytes } from '../../src/util/units.js';
import { keys } from '../../src/store/schema.js';
import {
  assertAllIntact,
  assertNoLeftovers,
  assertOnePlace,
  beginState,
  evacuationRecord,
  instancesByName,
  launchWorkload,
  memberInfo,
  operationUpdates,
  readAll,
  recordEvents,
  runProgress,
  runState,
  setMemberConfig,
  waitOperation,
} from './world.js';

let c: TestCluster;
const aNames = ['a1', 'a2', 'a3'];
const bNames = ['b1', 'b2', 'b3'];

/** Memory each member offers, and how much its instances reserve. */
async function memoryUse(): Promise<Map<string, { used: number; capacity: number }>> {
  const out = new Map<string, { used: number; capacity: number }>();
  for (const m of c.names) out.set(m, { used: 0, capacity: parseBytes((await memberInfo(c, m)).config['capacity.memory'] ?? '') ?? 0 });
  for (const inst of (await instancesByName(c)).values()) {
    const entry = out.get(inst.location);
    if (entry) entry.used += parseBytes(inst.config['limits.memory'] ?? '') ?? 0;
  }
  return out;
}

/** Every instance record as stored. */
async function instanceRecords(): Promise<string[]> {
  const { kvs } = await (await c.store()).range(keys.instances());
  return kvs.map((kv) => `${kv.key}=${kv.value}`);
}

async function locations(names: string[]): Promise<Record<string, string>> {
  const all = await instancesByName(c);
  return Object.fromEntries(names.map((n) => [n, all.get(n)?.location ?? '?']));
}

describe('overlapping, throttled and cancelled evacuations', () => {
  before(async () => {
    c = await startCluster({ members: 4 });
    // m03 and m04 each take three of the six instances of m01 and m02, no more: two plans that did not
    // count each other's moves would overflow one of them.
    await setMemberConfig(c, 'm01', { 'capacity.memory': '100GiB' });
    await setMemberConfig(c, 'm02', { 'capacity.memory': '100GiB' });
    await setMemberConfig(c, 'm03', { 'capacity.memory': '1200MiB' });
    await setMemberConfig(c, 'm04', { 'capacity.memory': '1200MiB' });
    // Distinct sizes give the planner a strict order, so equal runs plan equally. Whichever member plans
    // first sends its third instance to the other source, which is Evacuating by the time that move
    // begins (clean shutdowns take half a second): the move must be placed again, not fail.
    for (const [i, name] of aNames.entries()) await launchWorkload(c, name, { target: 'm01', termSleep: 0.5, config: { 'limits.memory': `${400 - 10 * i}MiB` } });
    for (const [i, name] of bNames.entries()) await launchWorkload(c, name, { target: 'm02', termSleep: 0.5, config: { 'limits.memory': `${400 - 10 * i}MiB` } });
  });
  after(async () => {
    await c?.stop();
  });

  it('evacuating two members at once completes: each instance in one place, no member past its capacity', async () => {
    const data = await readAll(c, [...aNames, ...bNames]);
    const [first, second] = await Promise.all([
      beginState(c, 'm01', { action: 'evacuate' }, 'm03'),
      beginState(c, 'm02', { action: 'evacuate' }, 'm04'),
    ]);
    const ops = await Promise.all([waitOperation(c, first ?? ''), waitOperation(c, second ?? '')]);
    for (const op of ops) assert.equal(op.status, 'Success', `${op.location}: ${op.err}\n${c.logTail(op.location)}`);
    for (const m of ['m01', 'm02']) assert.equal((await memberInfo(c, m)).status, 'Evacuated');

    for (const name of aNames) {
      const v = await assertOnePlace(c, name, { running: true });
      assert.ok(['m03', 'm04'].includes(v.location), `${name} is on ${v.location}`);
      assert.equal(v.config['volatile.evacuate.origin'], 'm01');
    }
    for (const name of bNames) {
      const v = await assertOnePlace(c, name, { running: true });
      assert.ok(['m03', 'm04'].includes(v.location), `${name} is on ${v.location}`);
      assert.equal(v.config['volatile.evacuate.origin'], 'm02');
    }
    for (const [m, { used, capacity }] of await memoryUse()) {
      assert.ok(used <= capacity, `${m} holds ${used} bytes of limits.memory over its capacity ${capacity}`);
    }
    await assertAllIntact(c, data, new Set([...aNames, ...bNames]));
    await assertNoLeftovers(c);

    // Restoring both at once brings everything home.
    const [r1, r2] = await Promise.all([beginState(c, 'm01', { action: 'restore' }), beginState(c, 'm02', { action: 'restore' }, 'm01')]);
    for (const op of await Promise.all([waitOperation(c, r1 ?? ''), waitOperation(c, r2 ?? '')])) assert.equal(op.status, 'Success', op.err);
    for (const name of aNames) await assertOnePlace(c, name, { running: true, location: 'm01' });
    for (const name of bNames) await assertOnePlace(c, name, { running: true, location: 'm02' });
    await assertAllIntact(c, data, new Set([...aNames, ...bNames]));
    await assertNoLeftovers(c);
  });

  it('parallel: 1 copies one instance at a time and ends in the same state as the default (auto)', async () => {
    const names = ['p1', 'p2', 'p3', 'p4'];
    for (const [i, name] of names.entries()) {
      await launchWorkload(c, name, { target: 'm01', payloadBytes: 2 * 1024 * 1024, config: { 'limits.memory': `${(i + 1) * 10}MiB` } });
    }
    const ends: Record<string, string>[] = [];
    for (const parallel of [1, undefined]) {
      const events = await recordEvents(c, 'm02', ['operation']);
      try {
        const id = await beginState(c, 'm01', parallel === undefined ? { action: 'evacuate' } : { action: 'evacuate', parallel });
        const op = await waitOperation(c, id);
        assert.equal(op.status, 'Success', op.err);
        assert.equal((await evacuationRecord(c, 'm01'))?.parallel, parallel ?? 'auto');
        if (parallel === 1) {
          for (const meta of operationUpdates(events, id)) {
            const copying = Object.values(runProgress(meta).instances).filter((i) => i.state === 'copying');
            assert.ok(copying.length <= 1, `${copying.length} copies at once with parallel: 1`);
          }
        }
        const where = await locations([...names, ...aNames]);
        for (const name of names) await assertOnePlace(c, name, { running: true });
        ends.push(where);
        await runState(c, 'm01', { action: 'restore' });
      } finally {
        events.close();
      }
    }
    assert.deepEqual(ends[1], ends[0]);
  });

  it('cancel while moves run: each instance is whole on one side, the member stays Evacuated, evacuate again finishes', async () => {
    // One copy at a time, of enough bytes each, keeps the run going long enough to cancel it midway (clean
    // shutdowns run ahead of the copies, so they do not pace the run).
    const names = ['k1', 'k2', 'k3', 'k4', 'k5', 'k6'];
    for (const name of names) await launchWorkload(c, name, { target: 'm01', termSleep: 1, payloadBytes: 32 * 1024 * 1024 });
    await launchWorkload(c, 'kstop', { target: 'm01', termSleep: 1, config: { 'cluster.evacuate': 'stop' } });
    const all = [...names, 'kstop', ...aNames, 'p1', 'p2', 'p3', 'p4'];
    const data = await readAll(c, all);

    const id = await beginState(c, 'm01', { action: 'evacuate', parallel: 1 });
    // Where the instances are (not the run's progress, which is written throttled and may lag a move or two).
    const moving = [...names, ...aNames, 'p1', 'p2', 'p3', 'p4'];
    await waitFor('some moves are done and some are not', async () => {
      const at = await Promise.all(moving.map(async (name) => (await c.instance(name)).location));
      const away = at.filter((m) => m !== 'm01').length;
      return away >= 2 && at.length - away >= 3;
    }, 30_000);
    const cancel = await c.raw('m03', 'DELETE', `/1.0/operations/${id}`);
    assert.equal(cancel.status, 200, cancel.text);
    const op = await waitOperation(c, id);
    assert.equal(op.status, 'Cancelled', op.err);
    assert.equal(op.err, '');
    assert.equal((await memberInfo(c, 'm01')).status, 'Evacuated');
    assert.equal((await evacuationRecord(c, 'm01'))?.status, 'cancelled');

    const moved: string[] = [];
    const stayed: string[] = [];
    for (const name of [...names, ...aNames, 'p1', 'p2', 'p3', 'p4']) {
      const v = await assertOnePlace(c, name);
      if (v.location === 'm01') {
        // Not moved: whole at its source, stopped by the evacuation but still recorded RUNNING.
        stayed.push(name);
        assert.equal(v.config['volatile.evacuate.origin'], undefined);
        assert.equal(v.config['volatile.last_state.power'], 'RUNNING');
      } else {
        moved.push(name);
        assert.equal(v.config['volatile.evacuate.origin'], 'm01');
        assert.equal(v.status, 'Running', `${name} moved but does not run`);
      }
    }
    assert.ok(moved.length >= 2, `moved: ${moved.join(', ')}`);
    assert.ok(stayed.length >= 1, 'the cancel came too late to leave anything behind');
    await assertOnePlace(c, 'kstop', { running: false, location: 'm01' });
    await assertAllIntact(c, data, new Set(all));
    await assertNoLeftovers(c);

    // Evacuate again resumes: only what is left moves, and it runs again on its target.
    const again = await runState(c, 'm01', { action: 'evacuate' }, 'm02');
    const resumed = runProgress(again.metadata).instances;
    assert.deepEqual(
      Object.entries(resumed).filter(([, i]) => i.action === 'migrate').map(([k]) => k.replace('default/', '')).sort(),
      [...stayed].sort(),
      'only what was left behind moves',
    );
    assert.equal(resumed['default/kstop']?.action, 'none');
    for (const name of [...names, ...aNames, 'p1', 'p2', 'p3', 'p4']) {
      const v = await assertOnePlace(c, name, { running: true });
      assert.notEqual(v.location, 'm01');
      assert.equal(v.config['volatile.evacuate.origin'], 'm01');
    }
    await assertAllIntact(c, data, new Set(all));
    await assertNoLeftovers(c);
  });

  it('restore mode skip sets the member Online at once, moves and starts nothing, keeps the origin keys', async () => {
    const before = await instancesByName(c);
    const records = await instanceRecords();
    const op = await runState(c, 'm01', { action: 'restore', mode: 'skip' }, 'm04');
    assert.equal(runProgress(op.metadata).total, 0);
    const info = await memberInfo(c, 'm01');
    assert.equal(info.status, 'Online');
    const after = await instancesByName(c);
    for (const [name, v] of before) {
      assert.equal(after.get(name)?.location, v.location, `${name} moved`);
      assert.equal(after.get(name)?.status, v.status, `${name} changed power state`);
      assert.equal(after.get(name)?.config['volatile.evacuate.origin'], v.config['volatile.evacuate.origin']);
    }
    assert.deepEqual(await instanceRecords(), records, 'instance records changed');
    await assertOnePlace(c, 'kstop', { running: false, location: 'm01' });
  });
});
