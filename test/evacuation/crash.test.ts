// A member daemon killed with SIGKILL in the middle of its own evacuation or restore, at several
// moments (just after the operation starts, while copies run, after some instances are done), then
// started again. While m01 runs the drainer (it started first), its death ends the drainer's term too: the
// next leader takes the run over by itself under the same operation id. Once the lease has passed to another
// member (after an earlier kill, or on a loaded machine), that leader's run goes on through the kill. Either
// way it ends as if nothing had happened — member Evacuated (or Online), every instance in exactly one place
// with its bytes and its power state, no move journal and no staging directory left.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import type { LeaderRecord } from '../../src/cluster/leader.js';
import { keys } from '../../src/store/schema.js';
import {
  assertAllIntact,
  assertNoLeftovers,
  assertOnePlace,
  beginState,
  evacuationRecord,
  getOperation,
  journaledMoves,
  launchWorkload,
  memberInfo,
  readAll,
  runProgress,
  setPower,
  waitOperation,
  type InstanceData,
} from './world.js';

let c: TestCluster;
const movers = ['k1', 'k2', 'k3', 'k4'];
const all = [...movers, 'kcold', 'kstop'];
let data: Map<string, InstanceData>;

/** The member holding the drainer lease now, if any. */
async function drainerLeader(): Promise<string | null> {
  const kv = await (await c.store()).get(keys.drainerLeader());
  return kv ? (JSON.parse(kv.value) as LeaderRecord).member : null;
}

/**
 * Kill m01 when `moment` says so, start it again, and wait for the run `id` to finish by itself: taken up by
 * the next leader if m01 was leading.
 */
async function crashAndResume(id: string, what: string, moment: () => Promise<boolean>): Promise<void> {
  // Any member may lead next; each logs the runs it takes up (a run no leader had begun yet is not "resumed").
  const resumes = (): number =>
    c.names.flatMap((n) => c.logTail(n, 1_000_000).split('\n')).filter((l) => l.includes('drainer: running a request') && l.includes(id)).length;
  const resumedBefore = resumes();
  await waitFor(what, moment, 20_000);
  const ledByM01 = (await drainerLeader()) === 'm01';
  await c.kill('m01', 'SIGKILL');
  await c.restart('m01');
  const op = await waitOperation(c, id, 40_000);
  assert.equal(op.status, 'Success', `${op.err}\n${c.logTail('m01')}`);
  assert.equal(op.location, 'm01');
  const record = await evacuationRecord(c, 'm01');
  assert.equal(record?.operation, id, 'the resumed run keeps its operation');
  assert.equal(record?.status, 'done');
  if (ledByM01) assert.ok(resumes() > resumedBefore, 'the next leader took the run up by itself');
}

/** The state after an evacuation of m01, however it was interrupted. */
async function assertEvacuated(): Promise<void> {
  assert.equal((await memberInfo(c, 'm01', 'm02')).status, 'Evacuated');
  for (const name of movers) {
    const v = await assertOnePlace(c, name, { running: true }, 'm02');
    assert.notEqual(v.location, 'm01');
    assert.equal(v.config['volatile.evacuate.origin'], 'm01');
    assert.equal(v.config['volatile.last_state.power'], 'RUNNING');
  }
  const cold = await assertOnePlace(c, 'kcold', { running: false }, 'm02');
  assert.notEqual(cold.location, 'm01');
  assert.equal(cold.config['volatile.evacuate.origin'], 'm01');
  const stop = await assertOnePlace(c, 'kstop', { running: false, location: 'm01' }, 'm02');
  assert.equal(stop.config['volatile.last_state.power'], 'RUNNING');
  await assertAllIntact(c, data, new Set([...movers, 'kstop']), 'm02');
  await assertNoLeftovers(c);
}

/** The state after a restore of m01, however it was interrupted. */
async function assertRestored(): Promise<void> {
  assert.equal((await memberInfo(c, 'm01', 'm02')).status, 'Online');
  for (const name of [...movers, 'kstop']) {
    const v = await assertOnePlace(c, name, { running: true, location: 'm01' }, 'm02');
    assert.equal(v.config['volatile.evacuate.origin'], undefined);
  }
  await assertOnePlace(c, 'kcold', { running: false, location: 'm01' }, 'm02');
  await assertAllIntact(c, data, new Set([...movers, 'kstop']), 'm02');
  await assertNoLeftovers(c);
}

/** The progress of run `id` as the store shows it (m01 may be down). */
async function progressOf(id: string): Promise<ReturnType<typeof runProgress> | null> {
  const op = await getOperation(c, id, 'm02');
  return op?.metadata?.roost_evacuation ? runProgress(op.metadata) : null;
}

describe('a member killed during its evacuation or restore resumes by itself', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
    // Big enough payloads that a copy takes a moment, and clean shutdowns that take half a second.
    for (const name of movers) await launchWorkload(c, name, { target: 'm01', termSleep: 0.5, payloadBytes: 24 * 1024 * 1024 });
    await launchWorkload(c, 'kcold', { target: 'm01', payloadBytes: 4 * 1024 * 1024 });
    await setPower(c, 'kcold', 'stop');
    await launchWorkload(c, 'kstop', { target: 'm01', termSleep: 0.5, config: { 'cluster.evacuate': 'stop' } });
    data = await readAll(c, all);
  });
  after(async () => {
    await c?.stop();
  });

  it('evacuate: killed right after the operation started', async () => {
    const id = await beginState(c, 'm01', { action: 'evacuate' });
    await crashAndResume(id, 'the operation exists', async () => (await getOperation(c, id, 'm02')) !== null);
    await assertEvacuated();
  });

  it('restore: killed right after the operation started', async () => {
    const id = await beginState(c, 'm01', { action: 'restore' }, 'm02');
    await crashAndResume(id, 'the operation exists', async () => (await getOperation(c, id, 'm02')) !== null);
    await assertRestored();
  });

  it('evacuate: killed while copies run', async () => {
    const recoveries = (): number => c.logTail('m01', 1_000_000).split('\n').filter((l) => /rolling back a move interrupted|finishing a move committed/.test(l)).length;
    const recoveredBefore = recoveries();
    const id = await beginState(c, 'm01', { action: 'evacuate' });
    await crashAndResume(id, 'a copy is under way', async () => (await journaledMoves(c)).some((j) => j.source === 'm01' && j.phase === 'stopped'));
    assert.ok(recoveries() > recoveredBefore, 'the restarted daemon found the interrupted move in its journal');
    await assertEvacuated();
  });

  it('restore: killed while instances are copied home', async () => {
    const id = await beginState(c, 'm01', { action: 'restore' }, 'm03');
    await crashAndResume(id, 'a copy home is under way', async () => (await journaledMoves(c)).some((j) => j.target === 'm01' && j.phase === 'stopped'));
    await assertRestored();
  });

  it('evacuate: killed after some instances are done', async () => {
    const id = await beginState(c, 'm01', { action: 'evacuate', parallel: 1 });
    await crashAndResume(id, 'some instances are done, not all', async () => {
      const p = await progressOf(id);
      return p !== null && p.done >= 2 && p.done < p.total;
    });
    await assertEvacuated();
  });

  it('restore: killed after some instances are home', async () => {
    const id = await beginState(c, 'm01', { action: 'restore', parallel: 1 }, 'm02');
    await crashAndResume(id, 'some instances are home, not all', async () => {
      const p = await progressOf(id);
      return p !== null && p.done >= 2 && p.done < p.total;
    });
    await assertRestored();
  });
});
