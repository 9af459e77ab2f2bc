// Evacuate and restore requests that must be refused synchronously, with LXD's error envelope, before
// anything changes: each case compares a fingerprint of the whole cluster (records, volume directories,
// running processes) before and after, and checks the member is still where it was. Also the dry run,
// which answers the plan and changes nothing.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import {
  assertError,
  assertOnePlace,
  beginState,
  fingerprint,
  launchWorkload,
  memberInfo,
  postState,
  setMemberConfig,
  setPower,
  waitOperation,
  waitStatus,
} from './world.js';

let c: TestCluster;

/** Send a state request that must be refused, and prove nothing changed. */
async function refused(member: string, body: Record<string, unknown>, status: number, message: string | RegExp, via = member): Promise<void> {
  const before = await fingerprint(c);
  const statesBefore = await memberStates(via);
  assertError(await postState(c, member, body, via), status, message);
  assert.equal(await fingerprint(c), before, `${JSON.stringify(body)} on ${member} was refused but changed the cluster`);
  assert.deepEqual(await memberStates(via), statesBefore);
}

/** `name=status` of every member. */
async function memberStates(via: string): Promise<string[]> {
  const list = (await c.client(via).get('/1.0/cluster/members?recursion=1')) as { server_name: string; status: string }[];
  return list.map((m) => `${m.server_name}=${m.status}`);
}

async function patchInstance(name: string, change: Record<string, unknown>): Promise<void> {
  await c.client('m02').request('PATCH', `/1.0/instances/${name}`, change);
}

describe('refused evacuate and restore requests change nothing', () => {
  before(async () => {
    c = await startCluster({ members: 3, offlineThreshold: 2 });
    await launchWorkload(c, 'r1', { target: 'm01' });
    await launchWorkload(c, 'r2', { target: 'm01', start: false });
    await launchWorkload(c, 'elsewhere', { target: 'm02' });
  });
  after(async () => {
    await c?.stop();
  });

  it('an unknown action is 400 Unknown action, on the member or forwarded', async () => {
    await refused('m01', { action: 'x' }, 400, 'Unknown action "x"');
    await refused('m01', { action: 'evacuat' }, 400, 'Unknown action "evacuat"', 'm02');
    await refused('m01', { action: '' }, 400, 'Unknown action ""', 'm03');
  });

  it('a parallel that is neither auto nor a whole number from 1 to 64 is 400, naming the field', async () => {
    const message = 'Invalid request (field "parallel"): expected "auto" or a whole number from 1 to 64';
    await refused('m01', { action: 'evacuate', parallel: 'lots' }, 400, message);
    await refused('m01', { action: 'evacuate', parallel: 0 }, 400, message, 'm02');
    await refused('m01', { action: 'restore', parallel: 65 }, 400, message);
  });

  it('an unknown member is 404', async () => {
    await refused('m09', { action: 'evacuate' }, 404, 'Cluster member "m09" not found', 'm01');
    await refused('m09', { action: 'restore' }, 404, 'Cluster member "m09" not found', 'm02');
  });

  it('an invalid mode is 400 Invalid mode, for evacuate and restore', async () => {
    await refused('m01', { action: 'evacuate', mode: 'x' }, 400, 'Invalid mode "x"');
    await refused('m01', { action: 'evacuate', mode: 'skip' }, 400, 'Invalid mode "skip"', 'm03');
    await refused('m01', { action: 'restore', mode: 'migrate' }, 400, 'Invalid mode "migrate"', 'm02');
  });

  it('an instance pinned to migrate that has a host-path disk is 400, naming it and why', async () => {
    await launchWorkload(c, 'pinned', {
      target: 'm01',
      config: { 'cluster.evacuate': 'migrate' },
      devices: { host: { type: 'disk', source: '/tmp', path: '/mnt/host' } },
    });
    try {
      const reason = /^Cannot evacuate cluster member "m01" \(nothing was changed\):\nInstance "pinned" in project "default": cluster\.evacuate=migrate but it cannot move: disk device "host" uses host path \/tmp$/;
      await refused('m01', { action: 'evacuate' }, 400, reason, 'm02');
      // The request's mode pins every instance: r1 can move, pinned cannot.
      await refused('m01', { action: 'evacuate', mode: 'migrate' }, 400, /Instance "pinned" in project "default": mode=migrate but it cannot move: disk device "host" uses host path \/tmp/);
      await assertOnePlace(c, 'pinned', { running: true, location: 'm01' });
      await assertOnePlace(c, 'r1', { running: true, location: 'm01' });
    } finally {
      await setPower(c, 'pinned', 'stop');
      await c.client('m01').runAsync('DELETE', '/1.0/instances/pinned');
    }
  });

  it('an instance no other member has room for is 400', async () => {
    await setMemberConfig(c, 'm02', { 'capacity.memory': '64MiB' });
    await setMemberConfig(c, 'm03', { 'capacity.memory': '64MiB' });
    await patchInstance('r1', { config: { 'limits.memory': '128MiB' } });
    try {
      await refused('m01', { action: 'evacuate' }, 400, /^Cannot evacuate cluster member "m01" \(nothing was changed\):\nInstance "r1" in project "default": no member has room: needs 128\.00MiB memory/);
      await assertOnePlace(c, 'r1', { running: true, location: 'm01' });
    } finally {
      await patchInstance('r1', { config: { 'limits.memory': '' } });
      await setMemberConfig(c, 'm02', { 'capacity.memory': '' });
      await setMemberConfig(c, 'm03', { 'capacity.memory': '' });
    }
  });

  it('restore of an Online member is 400 Cluster member is already restored', async () => {
    await refused('m01', { action: 'restore' }, 400, 'Cluster member is already restored');
    await refused('m02', { action: 'restore' }, 400, 'Cluster member is already restored', 'm03');
  });

  it('dry_run answers the plan (sync) and changes nothing', async () => {
    const before = await fingerprint(c);
    const res = await postState(c, 'm01', { action: 'evacuate', dry_run: true }, 'm03');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body?.type, 'sync');
    const plan = res.body?.metadata as {
      member: string;
      mode: string;
      instances: { name: string; project: string; action: string; target: string | null; reason: string; bytes: number }[];
      refusals: unknown[];
    };
    assert.equal(plan.member, 'm01');
    assert.equal(plan.mode, 'auto');
    assert.deepEqual(plan.refusals, []);
    assert.deepEqual(plan.instances.map((p) => p.name).sort(), ['r1', 'r2']);
    for (const p of plan.instances) {
      assert.deepEqual(Object.keys(p).sort(), ['action', 'bytes', 'name', 'project', 'reason', 'target']);
      assert.equal(p.project, 'default');
      assert.equal(p.action, 'migrate');
      assert.ok(p.target === 'm02' || p.target === 'm03', `target ${String(p.target)}`);
      assert.ok(p.bytes >= 64 * 1024, `bytes ${p.bytes}`);
      assert.ok(p.reason.length > 0);
    }
    assert.match(plan.instances.find((p) => p.name === 'r2')?.reason ?? '', /stays stopped/);
    const restorePlan = await postState(c, 'm01', { action: 'restore', dry_run: true });
    assert.equal(restorePlan.status, 200, restorePlan.text);
    assert.equal(await fingerprint(c), before, 'dry runs changed nothing');

    // A plan with a refusal is still answered (200): it lists what a real run would meet.
    await patchInstance('r2', { config: { 'cluster.evacuate': 'migrate' }, devices: { gpu: { type: 'gpu' } } });
    try {
      const pinned = await fingerprint(c);
      const refusing = await postState(c, 'm01', { action: 'evacuate', dry_run: true });
      assert.equal(refusing.status, 200, refusing.text);
      const auto = refusing.body?.metadata as typeof plan;
      assert.deepEqual(auto.refusals, [{ name: 'r2', project: 'default', reason: 'cluster.evacuate=migrate but it cannot move: gpu device "gpu" is a device of this host' }]);
      assert.deepEqual(auto.instances.map((p) => p.name), ['r1']);
      const stopPlan = (await postState(c, 'm01', { action: 'evacuate', dry_run: true, mode: 'stop' }, 'm02')).body?.metadata as typeof plan;
      assert.equal(stopPlan.mode, 'stop');
      assert.deepEqual(stopPlan.refusals, []);
      assert.deepEqual(stopPlan.instances.map((p) => [p.name, p.action, p.target]).sort(), [['r1', 'stop', null], ['r2', 'none', null]]);
      assert.equal(await fingerprint(c), pinned, 'dry runs changed nothing');
    } finally {
      await patchInstance('r2', { config: { 'cluster.evacuate': '' }, devices: { gpu: {} } });
    }
    assert.equal((await memberInfo(c, 'm01')).status, 'Online');
  });

  it('a second evacuate while one runs is 409, and so is a restore; the first completes', async () => {
    // Slow clean shutdowns keep the first run busy for a few seconds.
    await launchWorkload(c, 'slow1', { target: 'm01', termSleep: 2 });
    await launchWorkload(c, 'slow2', { target: 'm01', termSleep: 2, config: { 'cluster.evacuate': 'stop' } });
    // Two requests at once, through two members: exactly one starts.
    const busy = 'An evacuation or restore of "m01" is already running';
    const both = await Promise.all([postState(c, 'm01', { action: 'evacuate' }, 'm02'), postState(c, 'm01', { action: 'evacuate' }, 'm03')]);
    const started = both.filter((r) => r.status === 202);
    assert.equal(started.length, 1, both.map((r) => r.text).join('\n'));
    const second = both.find((r) => r.status !== 202);
    assert.ok(second);
    assertError(second, 409, busy);
    const id = started[0]?.body?.operation.split('/').pop() ?? '';
    assertError(await postState(c, 'm01', { action: 'evacuate' }), 409, busy);
    assertError(await postState(c, 'm01', { action: 'evacuate', mode: 'stop' }, 'm03'), 409, busy);
    assertError(await postState(c, 'm01', { action: 'restore' }, 'm02'), 409, busy);
    const ops = (await c.client('m02').get('/1.0/operations?recursion=1')) as Record<string, { description: string; location: string }[]>;
    const evacuating = Object.values(ops).flat().filter((o) => o.description === 'Evacuating cluster member');
    assert.equal(evacuating.length, 1, 'only the first request made an operation');
    const op = await waitOperation(c, id);
    assert.equal(op.status, 'Success', op.err);
    assert.equal((await memberInfo(c, 'm01')).status, 'Evacuated');
    for (const name of ['r1', 'r2', 'slow1']) {
      const v = await assertOnePlace(c, name);
      assert.notEqual(v.location, 'm01');
    }
    await assertOnePlace(c, 'slow2', { running: false, location: 'm01' });
  });

  it('evacuate of an Evacuated member with nothing left is 400 Cluster member is already evacuated', async () => {
    await refused('m01', { action: 'evacuate' }, 400, 'Cluster member is already evacuated');
    await refused('m01', { action: 'evacuate', mode: 'force-stop' }, 400, 'Cluster member is already evacuated', 'm02');
    const restore = await beginState(c, 'm01', { action: 'restore' }, 'm03');
    assert.equal((await waitOperation(c, restore)).status, 'Success');
    await waitStatus(c, 'm01', 'Online');
  });

  it('an Offline member is 400 Cannot evacuate/restore offline cluster member', async () => {
    await c.kill('m03', 'SIGKILL');
    await waitFor('m03 is Offline', async () => (await memberInfo(c, 'm03', 'm01')).status === 'Offline', 10_000);
    // LXD's words, then how to heal it (evacuate with force).
    await refused('m03', { action: 'evacuate' }, 400, 'Cannot evacuate offline cluster member (evacuate it with force to heal it: its instances on local storage stay where they are until it is restored)', 'm01');
    await refused('m03', { action: 'restore' }, 400, 'Cannot restore offline cluster member', 'm02');
    await refused('m03', { action: 'evacuate', dry_run: true }, 400, 'Cannot evacuate offline cluster member (evacuate it with force to heal it: its instances on local storage stay where they are until it is restored)', 'm02');
  });
});
