// Cluster groups as the real `lxc` client uses them: create, assign, list, show and delete groups;
// `lxc init --target=@<group>` (and the same request for a running process instance) places inside the
// group and records it; evacuating the member that holds
// such an instance moves it to another member of the group (the dry-run says so), or, when the group has
// no other member, anywhere (and the dry-run says that); bad input is refused and changes nothing.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { hasCommand, requireCommand } from '../helpers/prereq.js';
import { idleCommand, startCluster, type TestCluster } from '../helpers/cluster.js';
import { lxc, lxcOk } from '../helpers/lxc-client.js';
import { postState } from '../evacuation/world.js';
import { Writable } from 'node:stream';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runCli } from '../../src/cli/run.js';

let c: TestCluster;
let home = '';
const install = 'apt-get install -y lxd-client';

/** The prerequisite: the real client. */
function prerequisites(t: TestContext): boolean {
  return requireCommand(t, 'lxc', install);
}

/** A stream that keeps what is written to it. */
class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    cb();
  }
}

/** Run `roost <args>` in this process against `member`, no stdin, not a terminal. */
async function roost(member: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runCli(args, { stdout, stderr, env: { ROOST_DIR: c.memberDir(member), HOME: home } });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/**
 * Create and start a process instance with `?target=<target>`, the request `lxc launch --target` makes
 * (lxc itself only creates containers, and an empty container has nothing to run).
 */
async function launchProcess(name: string, target: string): Promise<void> {
  const client = c.client('m01');
  await client.runAsync('POST', `/1.0/instances?target=${encodeURIComponent(target)}`, {
    name,
    type: 'process',
    source: { type: 'none' },
    config: { 'process.command': idleCommand },
  });
  await client.runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
}

/** Rows of an `lxc ... --format csv` listing. */
function csv(out: string): string[][] {
  return out.trim().split('\n').filter((l) => l !== '').map((l) => l.split(','));
}

/** The groups `lxc cluster group list` shows, as `name:count` in name order. */
async function groupCounts(): Promise<string[]> {
  const rows = csv(await lxcOk(c, 'm01', ['cluster', 'group', 'list', '--format', 'csv']));
  return rows.map((r) => `${r[0] ?? ''}:${r[2] ?? ''}`);
}

/** The groups the API shows a member in. */
async function memberGroups(member: string): Promise<string[]> {
  return ((await c.client('m01').get(`/1.0/cluster/members/${member}`)) as { groups: string[] }).groups;
}

/** The dry-run plan entry of `name` for an evacuation of `member`. */
async function plannedMove(member: string, name: string): Promise<{ target: string; reason: string }> {
  const res = await postState(c, member, { action: 'evacuate', dry_run: true });
  assert.equal(res.status, 200, res.text);
  const plan = res.body?.metadata as { instances: { name: string; target: string; reason: string }[] };
  const entry = plan.instances.find((i) => i.name === name);
  assert.ok(entry, `${name} is in the plan: ${res.text}`);
  return entry;
}


describe('cluster groups with the real lxc client', () => {
  before(async () => {
    if (!hasCommand('lxc')) return; // each test skips (or fails under CI) through prerequisites
    c = await startCluster({ members: 3 });
    home = await mkdtemp(path.join(os.tmpdir(), 'roost-groups-'));
  });
  after(async () => {
    await c?.stop();
    if (home !== '') await rm(home, { recursive: true, force: true });
  });

  it('lxc cluster group create, assign, list and show: a member is in default and the groups it was assigned', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    assert.deepEqual(await groupCounts(), ['default:3'], 'only default, holding every member');
    assert.match(await lxcOk(c, 'm01', ['cluster', 'group', 'create', 'g1']), /Cluster group g1 created/);
    assert.match(await lxcOk(c, 'm01', ['cluster', 'group', 'assign', 'm02', 'g1,default']), /Cluster member m02 added to cluster groups g1,default/);
    await lxcOk(c, 'm02', ['cluster', 'group', 'assign', 'm03', 'g1,default']);
    assert.deepEqual(await groupCounts(), ['default:3', 'g1:2']);
    const shown = await lxcOk(c, 'm03', ['cluster', 'group', 'show', 'g1']);
    assert.match(shown, /^name: g1$/m);
    assert.match(shown, /^members:\n- m02\n- m03$/m);
    assert.deepEqual(await memberGroups('m02'), ['default', 'g1']);
    assert.deepEqual(await memberGroups('m01'), ['default']);
    assert.match(await lxcOk(c, 'm01', ['cluster', 'show', 'm03']), /^groups:\n- default\n- g1$/m);
  });

  it('lxc init --target=@g1 lands in g1 and records the group; evacuation keeps it in g1 and the dry-run says so', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    await lxcOk(c, 'm01', ['init', '--empty', 'boxed', '--target=@g1']);
    const boxed = await c.instance('boxed');
    assert.ok(['m02', 'm03'].includes(boxed.location), `lxc init placed it on ${boxed.location}, a member of g1`);
    assert.equal(boxed.config['volatile.cluster.group'], 'g1');
    await lxcOk(c, 'm01', ['delete', 'boxed']);

    await launchProcess('inside', '@g1');
    const placed = await c.instance('inside');
    assert.ok(['m02', 'm03'].includes(placed.location), `placed on ${placed.location}, a member of g1`);
    assert.equal(placed.config['volatile.cluster.group'], 'g1');
    assert.equal(placed.status, 'Running');
    const other = placed.location === 'm02' ? 'm03' : 'm02';

    // Without the group rule, m01 (empty, first by name) would be chosen.
    const move = await plannedMove(placed.location, 'inside');
    assert.equal(move.target, other);
    assert.match(move.reason, /stays in cluster group "g1"/);

    await lxcOk(c, 'm01', ['cluster', 'evacuate', placed.location, '--force']);
    const moved = await c.instance('inside');
    assert.equal(moved.location, other, 'evacuation moved it to the other member of g1');
    assert.equal(moved.status, 'Running');
    await lxcOk(c, 'm01', ['cluster', 'restore', placed.location, '--force']);
    assert.equal((await c.instance('inside')).location, placed.location, 'restore brought it home');
  });

  it('a group with no other member falls back to any member, and the dry-run says so', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    await lxcOk(c, 'm01', ['cluster', 'group', 'create', 'solo']);
    await lxcOk(c, 'm01', ['cluster', 'group', 'assign', 'm01', 'solo,default']);
    await lxcOk(c, 'm02', ['init', '--empty', 'alone', '--target=@solo']);
    const placed = await c.instance('alone');
    assert.equal(placed.location, 'm01', 'the only member of solo');
    const move = await plannedMove('m01', 'alone');
    assert.ok(['m02', 'm03'].includes(move.target), `falls back to ${move.target}`);
    assert.match(move.reason, /cluster group "solo" has no other member; placed outside the group/);
  });

  it('lxc move --target=@g1 moves inside the group', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    await lxcOk(c, 'm01', ['move', 'alone', '--target=@g1']);
    const moved = await c.instance('alone');
    assert.ok(['m02', 'm03'].includes(moved.location), `moved to ${moved.location}, a member of g1`);
    assert.equal(moved.config['volatile.cluster.group'], 'g1');
  });

  it('bad input is refused with the right status and changes nothing', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    const before = await groupCounts();
    const groupsOfM02 = await memberGroups('m02');

    const badName = await lxc(c, 'm01', ['cluster', 'group', 'create', 'bad_name!']);
    assert.equal(badName.code, 1);
    assert.match(badName.stderr, /^Error: Invalid cluster group name "bad_name!"/m);
    assert.equal((await c.raw('m01', 'POST', '/1.0/cluster/groups', { json: { name: 'a/b' } })).status, 400);
    assert.equal((await c.raw('m01', 'POST', '/1.0/cluster/groups', { json: { name: 'g1' } })).status, 409);

    const deleteDefault = await c.raw('m01', 'DELETE', '/1.0/cluster/groups/default');
    assert.equal(deleteDefault.status, 403);
    assert.equal(deleteDefault.body?.error_code, 403);
    const withMembers = await lxc(c, 'm01', ['cluster', 'group', 'delete', 'g1']);
    assert.equal(withMembers.code, 1);
    assert.match(withMembers.stderr, /Only empty cluster groups can be removed/);
    assert.equal((await c.raw('m01', 'DELETE', '/1.0/cluster/groups/g1')).status, 400);

    const unknownMember = await lxc(c, 'm01', ['cluster', 'group', 'assign', 'm09', 'g1']);
    assert.equal(unknownMember.code, 1);
    assert.match(unknownMember.stderr, /Cluster member "m09" not found/);
    const unknownGroup = await c.raw('m01', 'PATCH', '/1.0/cluster/members/m02', { json: { groups: ['g1', 'nosuch'] } });
    assert.equal(unknownGroup.status, 404);
    assert.match(unknownGroup.body?.error ?? '', /Cluster group "nosuch" not found/);
    assert.equal((await c.raw('m01', 'PATCH', '/1.0/cluster/members/m02', { json: { groups: [] } })).status, 400);
    const emptyAssign = await lxc(c, 'm01', ['cluster', 'group', 'assign', 'm02', '']);
    assert.equal(emptyAssign.code, 1, 'a member cannot be left in no group');

    const noGroup = await lxc(c, 'm01', ['init', '--empty', 'nowhere', '--target=@nosuch']);
    assert.equal(noGroup.code, 1);
    assert.match(noGroup.stderr, /Cluster group "nosuch" not found/);
    assert.equal((await c.raw('m01', 'GET', '/1.0/instances/nowhere')).status, 404, 'no instance was created');

    assert.deepEqual(await groupCounts(), before, 'no group changed');
    assert.deepEqual(await memberGroups('m02'), groupsOfM02, 'the member kept its groups');
  });

  it('lxc cluster group delete removes an empty group; a member can leave default but not its last group', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    await lxcOk(c, 'm01', ['cluster', 'group', 'create', 'spare']);
    assert.match(await lxcOk(c, 'm01', ['cluster', 'group', 'delete', 'spare']), /Cluster group spare deleted/);
    assert.ok(!(await groupCounts()).some((g) => g.startsWith('spare:')));
    await lxcOk(c, 'm01', ['cluster', 'group', 'assign', 'm03', 'g1']);
    assert.deepEqual(await memberGroups('m03'), ['g1']);
    assert.ok((await groupCounts()).includes('default:2'));
    const orphan = await c.raw('m01', 'PUT', '/1.0/cluster/groups/g1', { json: { description: '', members: ['m02'] } });
    assert.equal(orphan.status, 400, orphan.text);
    assert.match(orphan.body?.error ?? '', /"m03".*at least one cluster group/);
    assert.deepEqual(await memberGroups('m03'), ['g1'], 'the refused edit changed nothing');
  });

  it('roost cluster group create, assign, list, show and delete do the same through the roost CLI', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    const create = await roost('m02', ['cluster', 'group', 'create', 'rack', '--description', 'second rack']);
    assert.equal(create.code, 0, create.stderr);
    assert.match(create.stdout, /Cluster group rack created/);
    const assign = await roost('m02', ['cluster', 'group', 'assign', 'm01', 'rack,default,solo']);
    assert.equal(assign.code, 0, assign.stderr);
    assert.deepEqual(await memberGroups('m01'), ['default', 'rack', 'solo']);
    const list = await roost('m01', ['cluster', 'group', 'list', '--format', 'csv']);
    assert.equal(list.code, 0, list.stderr);
    assert.ok(csv(list.stdout).some((r) => r.join(',') === 'rack,second rack,1'), list.stdout);
    const show = await roost('m03', ['cluster', 'group', 'show', 'rack']);
    assert.match(show.stdout, /^members:\n- m01$/m);
    const refused = await roost('m01', ['cluster', 'group', 'delete', 'rack']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /Only empty cluster groups can be removed/);
    await roost('m01', ['cluster', 'group', 'assign', 'm01', 'default,solo']);
    const deleted = await roost('m01', ['cluster', 'group', 'delete', 'rack']);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.ok(!(await groupCounts()).some((g) => g.startsWith('rack:')));
  });
});
