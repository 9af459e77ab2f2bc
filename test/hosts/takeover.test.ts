// The drainer's member dies or is cut off in the middle of an evacuation of another member, on separate hosts:
// - killed with SIGKILL and left dead: its lease runs out, another member takes the drainer over and finishes
//   the run under the same operation id;
// - its link taken down: it notices it can no longer renew its lease and stops acting, another member takes
//   over and finishes the run, and when the link comes back nothing is duplicated or lost.
// Each instance must end in exactly one place with one running process and its bytes intact, and no move
// journal may be left. The takeover timings are reported as test diagnostics.

import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../helpers/cluster.js';
import { startHosts, type HostsCluster } from '../helpers/hosts.js';
import {
  assertAllIntact,
  assertNoLeftovers,
  assertOnePlace,
  beginState,
  createVolume,
  evacuationRecord,
  journaledMoves,
  launchWorkload,
  memberInfo,
  readAll,
  setMemberConfig,
  setPower,
  volumeDisk,
  type InstanceData,
} from '../evacuation/world.js';
import { assertOneProcess, firstLogged, logLines, loud, seconds, waitOperationVia } from './support.js';

const movers = ['t1', 't2', 't3', 't4', 't5'];
/**
 * `cluster.offline_threshold` (s), also the drainer's lease: short for fast takeovers, but not so short that a
 * loaded machine (a member's event loop held up for seconds) costs the leader its lease before the cut.
 */
const threshold = 5;
const all = [...movers, 'tcold'];

/** Instances on `member` that take a moment each to move: a slow clean stop and a few MiB of data. */
async function populate(h: HostsCluster, member: string): Promise<Map<string, InstanceData>> {
  await createVolume(h, member, 'tvol', 1024 * 1024);
  for (const name of movers) {
    const devices = name === 't1' ? { data: volumeDisk('tvol') } : undefined;
    await launchWorkload(h, name, { target: member, termSleep: 0.5, payloadBytes: 32 * 1024 * 1024, devices });
  }
  await launchWorkload(h, 'tcold', { target: member, payloadBytes: 2 * 1024 * 1024 });
  await setPower(h, 'tcold', 'stop');
  return readAll(h, all);
}

/**
 * Wait until the evacuation of `source` has moved some of its instances and at least two are still to go.
 * Where they are is read, not the run's progress, which is written throttled and may lag a move or two.
 */
async function midway(h: HostsCluster, source: string, via: string): Promise<void> {
  await waitFor('the evacuation is under way: some instances moved, two or more to go', async () => {
    const at = await Promise.all(all.map(async (name) => (await h.instance(name, via)).location));
    const away = at.filter((m) => m !== source).length;
    return away >= 1 && at.length - away >= 2;
  }, 60_000);
}

/** The evacuated member's instances after the run: all gone from it, in one place each, running as before, bytes intact. */
async function assertEvacuated(h: HostsCluster, member: string, data: Map<string, InstanceData>, via: string, away: string[]): Promise<void> {
  assert.equal((await memberInfo(h, member, via)).status, 'Evacuated');
  for (const name of movers) {
    const v = await assertOnePlace(h, name, { running: true }, via);
    assert.ok(!away.includes(v.location), `${name} is on ${v.location}`);
    assert.equal(v.config['volatile.evacuate.origin'], member);
    assertOneProcess(h, name, v.location);
  }
  const cold = await assertOnePlace(h, 'tcold', { running: false }, via);
  assert.ok(!away.includes(cold.location), `tcold is on ${cold.location}`);
  assert.deepEqual(h.instanceProcesses('tcold'), []);
  await assertAllIntact(h, data, new Set(movers), via);
  await assertNoLeftovers(h);
}

describe('the drainer\'s member is killed mid-evacuation and stays dead', () => {
  let h: HostsCluster | undefined;
  let data: Map<string, InstanceData>;
  // Roles by who leads once the cluster is up (m1 as a rule; a loaded machine may have moved the lease since):
  // the leader dies, `source` is evacuated, `via` is asked.
  let lead = 'm1';
  let source = 'm2';
  let via = 'm3';
  before(async () => {
    h = await startHosts({ members: 4, offlineThreshold: threshold });
    const c = h;
    await loud(() => h, async () => {
      lead = (await c.leader()) ?? 'm1';
      [source = 'm2', via = 'm3'] = c.names.filter((m) => m !== lead);
      // The dying member takes no instance, so what moved is checked where it runs; the takeover is the point.
      await setMemberConfig(c, lead, { 'scheduler.instance': 'manual' });
      data = await populate(c, source);
    })();
  });
  after(async () => {
    await h?.stop();
  });

  it('another member takes the drainer over and finishes the run under the same operation id', { timeout: 300_000 }, async (t: TestContext) => {
    const c = h as HostsCluster;
    await loud(() => c, async () => {
      const id = await beginState(c, source, { action: 'evacuate', parallel: 1 }, via);
      await midway(c, source, via);
      const term = (await evacuationRecord(c, source))?.term ?? 0;
      assert.equal(await c.leader(), lead, `${lead} still runs the drainer when it is killed`);
      const killedAt = Date.now();
      await c.kill(lead, 'SIGKILL');

      const others = c.names.filter((m) => m !== lead);
      await waitFor('another member runs the drainer', () => firstLogged(c, others, 'this member now runs the drainer', killedAt) !== null, 30_000);
      const took = firstLogged(c, others, 'this member now runs the drainer', killedAt);
      const op = await waitOperationVia(c, id, via, 120_000);
      assert.equal(op.status, 'Success', op.err);
      const record = await evacuationRecord(c, source);
      assert.equal(record?.operation, id, 'the run kept its operation');
      assert.equal(record?.status, 'done');
      assert.notEqual(record?.term, term, 'a later term finished the run');
      assert.equal(await c.leader(), took?.member);
      const lines = logLines(c, took?.member ?? '').filter((l) => l.time >= killedAt);
      const resumed = lines.filter((l) => l.msg === 'drainer: running a request' && l.operation === id && l.resumed === true);
      const terms = lines.filter((l) => l.msg === 'this member now runs the drainer');
      assert.ok(resumed.length >= 1, 'the new leader took the run up by itself');
      // Once per term at most: a loaded machine may cost the new leader its lease, and its next term resumes again.
      assert.ok(resumed.length <= terms.length, `the run was resumed ${resumed.length} times in ${terms.length} terms`);
      const doneAt = Date.parse(record?.finishedAt ?? '');

      assert.equal(c.pid(lead), null, `${lead} stays dead`);
      const dead = await memberInfo(c, lead, via);
      assert.equal(dead.status, 'Offline');
      assert.match(dead.message, /^No heartbeat for /);
      await assertEvacuated(c, source, data, via, [lead, source]);

      const timing = `takeover: kill → ${took?.member ?? '?'} runs the drainer ${seconds((took?.time ?? 0) - killedAt)}, kill → run done ${seconds(doneAt - killedAt)}`;
      t.diagnostic(timing);
      process.stderr.write(`${timing}\n`);
    })();
  });
});

describe('the drainer\'s member is cut off mid-evacuation, then comes back', () => {
  let h: HostsCluster | undefined;
  let data: Map<string, InstanceData>;
  // The evacuated member is one that does not lead once the cluster is up (m2 as a rule): the case is a leader
  // that is also a target. Which member is asked is chosen at the cut, among those neither cut nor evacuated.
  let source = 'm2';
  before(async () => {
    h = await startHosts({ members: 4, offlineThreshold: threshold });
    const c = h;
    await loud(() => h, async () => {
      const lead = (await c.leader()) ?? 'm1';
      source = c.names.find((m) => m !== lead && m !== 'm1') ?? 'm2';
      data = await populate(c, source);
    })();
  });
  after(async () => {
    await h?.stop();
  });

  it('it stops acting once its lease is gone, another member finishes the run, and after the link returns nothing is duplicated or lost', { timeout: 300_000 }, async (t: TestContext) => {
    const c = h as HostsCluster;
    await loud(() => c, async () => {
      const asked = c.names.find((m) => m !== source && m !== 'm1') ?? 'm3';
      const id = await beginState(c, source, { action: 'evacuate', parallel: 1 }, asked);
      // The worst moment: the leader is also the target of the copy under way, so the holder's stream to it stalls.
      // (Placement picks m1 first among the empty members, so one of the first moves goes there.) The leader is
      // read again at every look: a loaded machine may have moved the lease since the cluster started.
      let cut = '';
      await waitFor('a copy into the drainer\'s member is under way', async () => {
        const leader = await c.leader();
        if (leader === null || leader === source) return false; // the evacuated member leading is not this case
        cut = leader;
        return (await journaledMoves(c)).some((j) => j.target === leader && j.phase === 'stopped');
      }, 60_000);
      const rest = c.names.filter((m) => m !== cut);
      const via = rest.find((m) => m !== source) ?? source;
      const cutAt = Date.now();
      await c.partition(cut);

      await waitFor(`${cut} says it no longer runs the drainer`, () => firstLogged(c, [cut], 'this member no longer runs the drainer', cutAt) !== null, 30_000);
      const stopped = firstLogged(c, [cut], 'this member no longer runs the drainer', cutAt);
      await waitFor('another member runs the drainer', () => firstLogged(c, rest, 'this member now runs the drainer', cutAt) !== null, 30_000);
      const took = firstLogged(c, rest, 'this member now runs the drainer', cutAt);
      assert.ok((stopped?.time ?? Infinity) <= (took?.time ?? 0), 'the cut-off leader stopped before the next one started');
      const op = await waitOperationVia(c, id, via, 120_000);
      assert.equal(op.status, 'Success', op.err);
      const record = await evacuationRecord(c, source);
      assert.equal(record?.operation, id);
      assert.equal(record?.status, 'done');
      const doneAt = Date.parse(record?.finishedAt ?? '');
      assert.equal((await memberInfo(c, cut, via)).status, 'Offline');

      const healedAt = Date.now();
      await c.heal(cut);
      await waitFor(`${cut} is Online again`, async () => (await memberInfo(c, cut, via)).status === 'Online', 60_000);
      const backAt = Date.now();
      // Back in touch with the store, it removes the copy the holder gave up sending it while it was cut off.
      await waitFor(`${cut} swept what was given up while it was cut off`, () => firstLogged(c, [cut], 'swept what other members gave up sending here while this member was cut off', healedAt) !== null, 30_000);
      // It keeps running, as a member like the others: it answers, and it campaigns but does not take the lease back.
      assert.notEqual(c.pid(cut), null);
      assert.equal((await memberInfo(c, cut, cut)).status, 'Online');
      assert.equal(await c.leader(), took?.member);
      await assertEvacuated(c, source, data, via, [source]);

      const timing = `partition: cut → ${cut} stops acting ${seconds((stopped?.time ?? 0) - cutAt)}, cut → ${took?.member ?? '?'} runs the drainer ${seconds((took?.time ?? 0) - cutAt)}, cut → run done ${seconds(doneAt - cutAt)}; link back → ${cut} Online ${seconds(backAt - healedAt)}`;
      t.diagnostic(timing);
      process.stderr.write(`${timing}\n`);
    })();
  });
});
