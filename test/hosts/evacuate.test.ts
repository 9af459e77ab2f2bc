// Evacuate and restore a member whose instances live on its own host: the drainer (whichever member leads)
// orders each move from the holder (m2) over the member link, the holder streams the volumes
// over HTTPS to targets on other hosts, and the bytes are read back through each member's own mount
// namespace. LXD's mixed cases: running (one with a custom volume), stopped, pinned to stop, never started.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { sha256Tree } from '../helpers/cluster.js';
import { startHosts, type HostsCluster } from '../helpers/hosts.js';
import {
  StatusRecorder,
  assertAllIntact,
  assertNoLeftovers,
  assertOnePlace,
  beginState,
  createVolume,
  launchWorkload,
  memberInfo,
  readAll,
  runProgress,
  setPower,
  volumeDisk,
  waitOperation,
  type InstanceData,
} from '../evacuation/world.js';
import { assertOneProcess, loud } from './support.js';

let h: HostsCluster;
let data: Map<string, InstanceData>;
let volumeSum = '';
const running = ['r1', 'r2', 'r3'];
const all = [...running, 'stopped', 'pinned', 'fresh'];

describe('evacuate and restore across hosts', () => {
  before(async () => {
    // Nothing here waits on the threshold; a long one keeps a loaded machine from showing a member Offline for a moment.
    h = await startHosts({ members: 3, offlineThreshold: 15 });
    await loud(() => h, setUp)();
  });
  after(async () => {
    await h?.stop();
  });

  async function setUp(): Promise<void> {
    await createVolume(h, 'm2', 'vol1', 512 * 1024);
    volumeSum = await sha256Tree(h.volumeDir('m2', 'vol1'));
    await launchWorkload(h, 'r1', { target: 'm2', termSleep: 0.3, payloadBytes: 2 * 1024 * 1024, devices: { data: volumeDisk('vol1') } });
    for (const name of ['r2', 'r3']) await launchWorkload(h, name, { target: 'm2', payloadBytes: 1024 * 1024 });
    await launchWorkload(h, 'stopped', { target: 'm2' });
    await setPower(h, 'stopped', 'stop');
    await launchWorkload(h, 'pinned', { target: 'm2', config: { 'cluster.evacuate': 'stop' } });
    await launchWorkload(h, 'fresh', { target: 'm2', start: false });
    await launchWorkload(h, 'bystander', { target: 'm3' });
    data = await readAll(h, all);
  }

  it('the drainer evacuates m2 (asked through m3): moves cross hosts with bytes, power states and origin', { timeout: 240_000 }, loud(() => h, async () => {
    // Whoever leads (a change of the lease length at start-up elects anew, so it may be any member).
    assert.ok(await h.leader(), 'a member runs the drainer');
    const states = await StatusRecorder.start(h, 'm2', 'm3');
    const id = await beginState(h, 'm2', { action: 'evacuate' }, 'm3');
    const op = await waitOperation(h, id, 60_000);
    assert.equal(op.status, 'Success', `${op.err}\n${h.logTail('m1')}\n${h.logTail('m2')}`);
    assert.deepEqual(await states.stop(), ['Online', 'Evacuating', 'Evacuated']);
    assert.equal((await memberInfo(h, 'm2', 'm1')).status, 'Evacuated');

    for (const name of running) {
      const v = await assertOnePlace(h, name, { running: true }, 'm3');
      assert.ok(['m1', 'm3'].includes(v.location), `${name} is on ${v.location}`);
      assert.equal(v.config['volatile.evacuate.origin'], 'm2');
      assert.equal(v.config['volatile.last_state.power'], 'RUNNING');
      assertOneProcess(h, name, v.location);
    }
    const stopped = await assertOnePlace(h, 'stopped', { running: false }, 'm3');
    assert.notEqual(stopped.location, 'm2');
    assert.equal(stopped.config['volatile.evacuate.origin'], 'm2');
    assert.equal(stopped.config['volatile.last_state.power'], 'STOPPED');
    const pinned = await assertOnePlace(h, 'pinned', { running: false, location: 'm2' }, 'm3');
    assert.equal(pinned.config['volatile.last_state.power'], 'RUNNING');
    assert.equal(pinned.config['volatile.evacuate.origin'], undefined);
    const fresh = await assertOnePlace(h, 'fresh', { running: false }, 'm3');
    assert.notEqual(fresh.location, 'm2');
    assert.equal(fresh.config['volatile.evacuate.origin'], 'm2');

    // The custom volume travelled with r1 to r1's host, byte for byte; m2 keeps no copy.
    const r1 = await h.instance('r1', 'm3');
    assert.ok(!existsSync(h.volumeDir('m2', 'vol1')));
    assert.equal(await sha256Tree(h.volumeDir(r1.location, 'vol1')), volumeSum);
    await assertAllIntact(h, data, new Set([...running, 'pinned']), 'm3');
    await assertNoLeftovers(h);
    await assertOnePlace(h, 'bystander', { running: true, location: 'm3' }, 'm1');

    const final = runProgress(op.metadata);
    assert.equal(final.status, 'done');
    assert.equal(final.total, all.length);
    assert.equal(final.done, all.length);
    assert.equal(final.bytesDone, final.bytesTotal);
    // A drainer ordered the moves; the holder m2 ran them (over the links: the checks above).
    assert.ok(h.names.some((m) => /drainer: running a request/.test(h.log(m))), 'a drainer ran the request');
  }));

  it('restore brings everything home to m2 over the links, starts the pinned one, clears the origin', { timeout: 240_000 }, loud(() => h, async () => {
    const states = await StatusRecorder.start(h, 'm2', 'm1');
    const id = await beginState(h, 'm2', { action: 'restore' }, 'm1');
    const op = await waitOperation(h, id, 60_000);
    assert.equal(op.status, 'Success', `${op.err}\n${h.logTail('m1')}\n${h.logTail('m2')}`);
    assert.deepEqual(await states.stop(), ['Evacuated', 'Restoring', 'Online']);
    const expected: Record<string, boolean> = { r1: true, r2: true, r3: true, stopped: false, pinned: true, fresh: false };
    for (const [name, isRunning] of Object.entries(expected)) {
      const v = await assertOnePlace(h, name, { running: isRunning, location: 'm2' }, 'm1');
      assert.equal(v.config['volatile.evacuate.origin'], undefined, `origin of ${name}`);
      if (isRunning) assertOneProcess(h, name, 'm2');
    }
    assert.equal(await sha256Tree(h.volumeDir('m2', 'vol1')), volumeSum);
    for (const m of ['m1', 'm3']) assert.ok(!existsSync(h.volumeDir(m, 'vol1')), `no copy of vol1 left on ${m}`);
    await assertAllIntact(h, data, new Set([...running, 'pinned']), 'm1');
    await assertNoLeftovers(h);
    const final = runProgress(op.metadata);
    assert.equal(final.total, all.length, 'the pinned instance to start, the others to bring home');
    assert.equal(final.done, final.total);
  }));
});
