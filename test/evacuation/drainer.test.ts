// The cluster-wide drainer on one host: whichever member holds the leader lease runs every evacuation and
// restore. Its member killed mid-run and left dead: another member takes the lease and finishes the run
// under the same operation id. The member being evacuated killed mid-copy and left dead: the leader settles
// its journaled move through the target (the decision is in the store), so nothing stays blocked. Any
// member answers the progress of any member, offline ones included.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import {
  assertAllIntact,
  assertOnePlace,
  beginState,
  journaledMoves,
  launchWorkload,
  memberInfo,
  memberProgress,
  readAll,
  setMemberConfig,
  waitOperation,
  waitStatus,
} from './world.js';
import { keys, type InstanceRecord } from '../../src/store/schema.js';
import type { LeaderRecord } from '../../src/cluster/leader.js';

let c: TestCluster;

/** The member holding the drainer lease, and its term. */
async function leader(): Promise<{ member: string; term: number } | null> {
  const kv = await (await c.store()).get(keys.drainerLeader());
  return kv ? { member: (JSON.parse(kv.value) as LeaderRecord).member, term: kv.createRevision } : null;
}

describe('the drainer survives the loss of any member', () => {
  before(async () => {
    c = await startCluster({ members: 4, offlineThreshold: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  it('the leader killed mid-evacuation and left dead: another member takes over and the run finishes under the same operation', async () => {
    const first = await leader();
    assert.ok(first, 'a member leads');
    // The leader holds nothing and takes nothing, so its death touches no instance: only the drainer moves.
    await setMemberConfig(c, first.member, { 'scheduler.instance': 'manual' });
    const source = c.names.find((n) => n !== first.member) ?? '';
    const via = c.names.find((n) => n !== first.member && n !== source) ?? '';
    const names = ['t1', 't2', 't3', 't4', 't5'];
    // One copy at a time, of enough bytes each, and three still to go when the leader dies (clean stops run ahead
    // of the copies, so they do not pace the run). Where the instances are is read, not the run's progress,
    // which is written throttled and may lag a move or two: the run must still be going at the kill.
    for (const name of names) await launchWorkload(c, name, { target: source, termSleep: 1, payloadBytes: 32 * 1024 * 1024 });
    const data = await readAll(c, names, via);

    const id = await beginState(c, source, { action: 'evacuate', parallel: 1 }, via);
    await waitFor('one instance moved, three not yet', async () => {
      const at = await Promise.all(names.map(async (name) => (await c.instance(name, via)).location));
      const away = at.filter((m) => m !== source).length;
      return away >= 1 && at.length - away >= 3;
    }, 30_000);
    const killedAt = Date.now();
    await c.kill(first.member, 'SIGKILL');

    const op = await waitOperation(c, id, 60_000);
    assert.equal(op.status, 'Success', op.err);
    const next = await leader();
    assert.ok(next && next.member !== first.member && next.term !== first.term, `a new term on another member: ${JSON.stringify(next)}`);
    const tookOver = c.names.flatMap((n) => (n === first.member ? [] : c.logTail(n, 100_000).split('\n'))).some((l) => l.includes('drainer: running a request') && l.includes(id) && l.includes('"resumed":true'));
    assert.ok(tookOver, 'the new leader resumed the run');
    assert.equal((await memberInfo(c, source, via)).status, 'Evacuated');
    for (const name of names) {
      const v = await assertOnePlace(c, name, { running: true }, via);
      assert.ok(v.location !== source && v.location !== first.member, `${name} is on ${v.location}`);
      assert.equal(v.config['volatile.evacuate.origin'], source);
    }
    await assertAllIntact(c, data, new Set(names), via);
    assert.deepEqual(await journaledMoves(c), []);
    // The leader's progress is readable from any member, and says the run is done.
    const progress = await memberProgress(c, source, via);
    assert.equal(progress?.status, 'done');
    assert.equal(progress?.done, names.length);
    console.log(`  takeover: the run finished ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the leader was killed (offline threshold 3 s)`);

    // Home again through the new leader, with the dead member still dead.
    const back = await waitOperation(c, await beginState(c, source, { action: 'restore' }, via), 60_000);
    assert.equal(back.status, 'Success', back.err);
    for (const name of names) await assertOnePlace(c, name, { running: true, location: source }, via);
    await c.restart(first.member);
    await setMemberConfig(c, first.member, { 'scheduler.instance': '' });
  });

  it('the evacuated member killed mid-copy and left dead: the leader settles its journaled move, and any member still answers its progress', async () => {
    const lead = (await leader())?.member ?? '';
    const source = c.names.find((n) => n !== lead) ?? '';
    const via = c.names.find((n) => n !== lead && n !== source) ?? '';
    const names = ['d1', 'd2', 'd3'];
    for (const name of names) await launchWorkload(c, name, { target: source, termSleep: 0.3, payloadBytes: 48 * 1024 * 1024 });

    const id = await beginState(c, source, { action: 'evacuate', parallel: 1 }, via);
    const journal = await waitFor('a move is copying', async () => (await journaledMoves(c)).some((j) => j.source === source && j.phase === 'stopped'), 30_000).then(async () => (await journaledMoves(c)).find((j) => j.source === source));
    assert.ok(journal);
    await c.kill(source, 'SIGKILL');
    await waitStatus(c, source, 'Offline', 20_000, via);

    // The drainer, seeing the source offline, rolls the uncommitted move back through its target.
    await waitFor('the dead member\'s move is settled', async () => (await journaledMoves(c)).length === 0, 30_000);
    const staging = await readdir(c.stagingDir(journal.target)).catch(() => []);
    assert.deepEqual(staging, [], 'the target dropped its partial copy');
    // Its member is offline, so the API cannot show the instance; the store says where it is.
    const kv = await (await c.store()).get(keys.instance('default', journal.instance));
    assert.equal(kv && (JSON.parse(kv.value) as InstanceRecord).location, source, 'an uncommitted move leaves the instance where it was');
    assert.ok(!existsSync(c.instanceDir(journal.target, journal.instance)), 'no copy on the target');

    // The run cannot finish without its member; it ends failed, and the member's progress is still answered.
    const op = await waitOperation(c, id, 90_000);
    assert.equal(op.status, 'Failure');
    const progress = await memberProgress(c, source, via);
    assert.ok(progress && progress.failed >= 1, `progress of the offline member: ${JSON.stringify(progress)}`);

    await c.restart(source);
    await waitStatus(c, source, 'Evacuated', 20_000, via);
    const back = await waitOperation(c, await beginState(c, source, { action: 'restore' }, via), 60_000);
    assert.equal(back.status, 'Success', back.err);
    for (const name of names) await assertOnePlace(c, name, { location: source }, via);
    assert.deepEqual(await journaledMoves(c), []);
  });
});
