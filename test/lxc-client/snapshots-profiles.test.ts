// `lxc snapshot|info|restore|rename|delete` and `lxc profile ...` with the real client (Debian lxd-client)
// against process instances, asked through the member that does not hold them (forwarding included); then
// instances with two snapshots moved, evacuated and restored on a three-member cluster, every snapshot's
// bytes checked, and a profile's `cluster.evacuate=stop` pinning the instances that use it.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { hasCommand, requireCommand } from '../helpers/prereq.js';
import { sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { lxc, lxcOk } from '../helpers/lxc-client.js';
import { launchWorkload, runState, seedVolume, setPower } from '../evacuation/world.js';
import { runCli } from '../../src/cli/run.js';
import { Capture } from '../cli/helpers/fake-lxd.js';

const installHint = 'apt-get install -y lxd-client';

/** `<member dir>/storage-pools/default/containers-snapshots/default_<name>/<snapshot>`, as LXD's dir driver lays it out. */
function snapshotDir(c: TestCluster, member: string, name: string, snapshot: string): string {
  return path.join(c.memberDir(member), 'storage-pools', 'default', 'containers-snapshots', `default_${name}`, snapshot);
}

/** The metadata of a GET that must succeed. */
async function meta<T>(c: TestCluster, member: string, url: string): Promise<T> {
  const res = await c.raw(member, 'GET', url);
  assert.equal(res.status, 200, `GET ${url}: ${res.text}`);
  return res.body?.metadata as T;
}

/** Roost's own CLI against a member of the cluster: exit code and what it printed. */
async function roost(c: TestCluster, member: string, argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runCli(argv, { stdout, stderr, env: { ROOST_DIR: c.memberDir(member) } });
  return { code, out: stdout.text, err: stderr.text };
}

/** A failed `lxc` run: exit 1 and LXD's `Error: <text>`. */
async function lxcFails(c: TestCluster, member: string, args: string[], message: string | RegExp): Promise<void> {
  const r = await lxc(c, member, args);
  assert.equal(r.code, 1, `lxc ${args.join(' ')} should fail: ${r.stdout}`);
  if (typeof message === 'string') assert.equal(r.stderr.trim(), `Error: ${message}`);
  else assert.match(r.stderr, message);
}

interface SnapshotView {
  name: string;
  created_at: string;
  expires_at: string;
  stateful: boolean;
  config: Record<string, string>;
  profiles: string[];
  expanded_devices: Record<string, Record<string, string>>;
}

describe('lxc snapshots and profiles with process instances', () => {
  let c: TestCluster | undefined;
  const cluster = (): TestCluster => {
    assert.ok(c, 'the cluster runs');
    return c;
  };

  before(async () => {
    if (!hasCommand('lxc')) return; // each test skips (or fails under CI) through requireCommand
    c = await startCluster({ members: 2 });
    await c.launch('p1', { target: 'm02' });
    await lxcOk(c, 'm01', ['list']); // the client's first run prints a welcome text
  });
  after(async () => {
    await c?.stop();
  });

  it('lxc snapshot of a running instance copies its root volume; info, list and the API show it', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    await writeFile(path.join(c.instanceDir('m02', 'p1'), 'note.txt'), 'before\n');
    await lxcOk(c, 'm01', ['snapshot', 'p1', 'first']);
    await lxcOk(c, 'm01', ['snapshot', 'p1']); // unnamed: LXD's snap0
    assert.equal((await c.instance('p1')).status, 'Running', 'a snapshot leaves the instance running');
    assert.equal(await readFile(path.join(snapshotDir(c, 'm02', 'p1', 'first'), 'note.txt'), 'utf8'), 'before\n');
    assert.ok(existsSync(snapshotDir(c, 'm02', 'p1', 'snap0')));

    const info = await lxcOk(c, 'm01', ['info', 'p1']);
    assert.match(info, /Snapshots:/);
    assert.match(info, /\| first +\| \d{4}\/\d\d\/\d\d \d\d:\d\d UTC +\| +\| NO +\|/);
    assert.match(info, /\| snap0 +\|/);
    assert.match(await lxcOk(c, 'm01', ['list', 'p1']), /\| p1 +\| RUNNING +\|.*\| 2 +\| m02 +\|/);

    const list = (await meta<SnapshotView[]>(c, 'm01', '/1.0/instances/p1/snapshots?recursion=1'));
    assert.deepEqual(list.map((s) => s.name), ['first', 'snap0']);
    assert.equal(list[0]?.stateful, false);
    assert.equal(list[0]?.expires_at, '0001-01-01T00:00:00Z');
    assert.equal(list[0]?.config['process.command'] !== undefined, true, 'the snapshot keeps the config it was taken with');
    assert.deepEqual(list[0]?.expanded_devices.root, { type: 'disk', path: '/', pool: 'default' });
    const urls = (await meta<string[]>(c, 'm02', '/1.0/instances/p1/snapshots'));
    assert.deepEqual(urls, ['/1.0/instances/p1/snapshots/first', '/1.0/instances/p1/snapshots/snap0']);
  });

  it('bad snapshot requests are refused with LXD\'s status and change nothing', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    const before = await c.world();
    await lxcFails(c, 'm01', ['snapshot', 'p1', 'a/b'], 'Invalid snapshot name: Cannot contain "/"');
    const raw = await c.raw('m01', 'POST', '/1.0/instances/p1/snapshots', { json: { name: 'x/y' } });
    assert.equal(raw.status, 400);
    await lxcFails(c, 'm01', ['snapshot', 'p1', 'first'], 'Snapshot "p1/first" already exists');
    await lxcFails(c, 'm01', ['restore', 'p1', 'nope'], 'Snapshot p1/nope does not exist');
    await lxcFails(c, 'm01', ['delete', 'p1/nope'], 'Failed checking instance snapshot exists "local:p1/nope": InstanceSnapshot not found');
    assert.equal((await c.raw('m01', 'GET', '/1.0/instances/p1/snapshots/nope')).status, 404);
    assert.equal(await c.world(), before);
  });

  it('lxc restore brings back the bytes and keeps the instance running; rename and delete work', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    const root = c.instanceDir('m02', 'p1');
    await writeFile(path.join(root, 'note.txt'), 'after\n');
    await writeFile(path.join(root, 'extra.txt'), 'new\n');
    await lxcOk(c, 'm01', ['restore', 'p1', 'first']);
    assert.equal(await readFile(path.join(root, 'note.txt'), 'utf8'), 'before\n');
    assert.equal(existsSync(path.join(root, 'extra.txt')), false);
    assert.equal((await c.instance('p1')).status, 'Running');

    await lxcOk(c, 'm01', ['rename', 'p1/snap0', 'p1/second']);
    assert.ok(existsSync(snapshotDir(c, 'm02', 'p1', 'second')));
    assert.equal(existsSync(snapshotDir(c, 'm02', 'p1', 'snap0')), false);
    await lxcOk(c, 'm01', ['delete', 'p1/second']);
    assert.equal(existsSync(snapshotDir(c, 'm02', 'p1', 'second')), false);
    const names = (await meta<SnapshotView[]>(c, 'm01', '/1.0/instances/p1/snapshots?recursion=1')).map((s) => s.name);
    assert.deepEqual(names, ['first']);
  });

  it('deleting an instance deletes its snapshots', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    await c.launch('gone', { target: 'm02', start: false });
    await lxcOk(c, 'm01', ['snapshot', 'gone', 's1']);
    await lxcOk(c, 'm01', ['snapshot', 'gone', 's2']);
    assert.ok(existsSync(snapshotDir(c, 'm02', 'gone', 's2')));
    await lxcOk(c, 'm01', ['delete', 'gone']);
    assert.equal(existsSync(path.dirname(snapshotDir(c, 'm02', 'gone', 's1'))), false);
    assert.equal(existsSync(c.instanceDir('m02', 'gone')), false);
  });

  it('lxc profile create, set, show, list, edit, unset; -p on init expands into what the instance runs', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    assert.equal((await lxcOk(c, 'm01', ['profile', 'create', 'web'])).trim(), 'Profile web created');
    await lxcOk(c, 'm02', ['profile', 'set', 'web', 'environment.GREETING', 'from-profile']);
    await lxcOk(c, 'm01', ['profile', 'set', 'web', 'process.command', 'echo "$GREETING" > greeting.txt; exec sleep 600']);
    const shown = await lxcOk(c, 'm01', ['profile', 'show', 'web']);
    assert.match(shown, /environment\.GREETING: from-profile/);
    assert.match(shown, /used_by: \[\]/);

    // `-p` on init: the client sends the profiles in the create body (a container, never started here).
    await lxcOk(c, 'm01', ['init', 'c1', '--empty', '--target', 'm02', '-p', 'default', '-p', 'web']);
    assert.match(await lxcOk(c, 'm01', ['config', 'show', 'c1', '--expanded']), /environment\.GREETING: from-profile/);
    await lxcOk(c, 'm01', ['delete', 'c1']);

    // A process instance that names no command of its own: the profile's runs, with the profile's environment.
    await c.client('m01').runAsync('POST', '/1.0/instances?target=m02', { name: 'p2', type: 'process', profiles: ['default', 'web'] });
    await lxcOk(c, 'm01', ['start', 'p2']);
    const greeting = path.join(c.instanceDir('m02', 'p2'), 'greeting.txt');
    await waitFor('the profile command wrote its greeting', () => existsSync(greeting));
    assert.equal(await readFile(greeting, 'utf8'), 'from-profile\n');
    const expanded = await lxcOk(c, 'm01', ['config', 'show', 'p2', '--expanded']);
    assert.match(expanded, /environment\.GREETING: from-profile/);
    assert.match(expanded, /profiles:\n- default\n- web/);
    assert.doesNotMatch(await lxcOk(c, 'm01', ['config', 'show', 'p2']), /GREETING/);

    // The instance's own key wins over the profile's.
    await lxcOk(c, 'm01', ['config', 'set', 'p2', 'environment.GREETING', 'own']);
    const view = await meta<{ expanded_config: Record<string, string> }>(c, 'm01', '/1.0/instances/p2');
    assert.equal(view.expanded_config['environment.GREETING'], 'own');

    const list = await lxcOk(c, 'm01', ['profile', 'list']);
    assert.match(list, /\| default +\| .* \| 2 +\|/);
    assert.match(list, /\| web +\| +\| 1 +\|/);
    const used = (await meta<{ used_by: string[] }>(c, 'm01', '/1.0/profiles/web'));
    assert.deepEqual(used.used_by, ['/1.0/instances/p2']);

    await lxcOk(c, 'm01', ['profile', 'edit', 'web'], 'config:\n  user.team: blue\ndescription: Web things\ndevices: {}\n');
    const edited = await lxcOk(c, 'm01', ['profile', 'show', 'web']);
    assert.match(edited, /user\.team: blue/);
    assert.match(edited, /description: Web things/);
    assert.doesNotMatch(edited, /GREETING/, 'edit replaces the whole profile');
    await lxcOk(c, 'm01', ['profile', 'unset', 'web', 'user.team']);
    assert.doesNotMatch(await lxcOk(c, 'm01', ['profile', 'show', 'web']), /user\.team/);
  });

  it('lxc profile add and remove change an instance\'s profiles; a used profile cannot be deleted', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    await lxcOk(c, 'm01', ['profile', 'create', 'extra']);
    await lxcOk(c, 'm01', ['profile', 'set', 'extra', 'user.flavour', 'mint']);
    assert.equal((await lxcOk(c, 'm01', ['profile', 'add', 'p1', 'extra'])).trim(), 'Profile extra added to p1');
    const view = await meta<{ profiles: string[]; expanded_config: Record<string, string> }>(c, 'm02', '/1.0/instances/p1');
    assert.deepEqual(view.profiles, ['default', 'extra']);
    assert.equal(view.expanded_config['user.flavour'], 'mint');

    const before = await c.world();
    await lxcFails(c, 'm01', ['profile', 'delete', 'extra'], 'Profile is currently in use');
    assert.equal((await c.raw('m01', 'DELETE', '/1.0/profiles/extra')).status, 400);
    assert.equal(await c.world(), before);

    await lxcOk(c, 'm01', ['profile', 'remove', 'p1', 'extra']);
    await lxcOk(c, 'm01', ['profile', 'delete', 'extra']);
    assert.equal((await c.raw('m01', 'GET', '/1.0/profiles/extra')).status, 404);
  });

  it('bad profile requests: unknown profile 404, default kept, bad names and keys refused', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    const before = await c.world();
    await lxcFails(c, 'm01', ['init', 'p3', '--empty', '-p', 'default', '-p', 'nope'], 'Requested profile "nope" doesn\'t exist');
    await lxcFails(c, 'm01', ['profile', 'show', 'nope'], 'Fetch profile: Profile not found');
    await lxcFails(c, 'm01', ['profile', 'add', 'p1', 'nope'], 'Profile not found');
    await lxcFails(c, 'm01', ['profile', 'delete', 'default'], 'The \'default\' profile cannot be deleted');
    await lxcFails(c, 'm01', ['profile', 'rename', 'default', 'other'], 'The \'default\' profile cannot be renamed');
    await lxcFails(c, 'm01', ['profile', 'create', 'web'], 'Error inserting web into database: The profile already exists');
    await lxcFails(c, 'm01', ['profile', 'set', 'web', 'no.such.key', '1'], /Unknown configuration key: no\.such\.key/);
    await lxcFails(c, 'm01', ['profile', 'set', 'web', 'cluster.evacuate', 'teleport'], /cluster\.evacuate/);
    assert.equal((await c.raw('m01', 'POST', '/1.0/profiles', { json: { name: 'a/b' } })).status, 400);
    // Removing the root disk from default would leave its instances without one.
    assert.equal((await c.raw('m01', 'PUT', '/1.0/profiles/default', { json: { config: {}, description: '', devices: {} } })).status, 400);
    assert.equal(await c.world(), before);
  });

  it('roost snapshot, info, restore, delete and roost profile commands do the same', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    const ok = async (argv: string[]): Promise<string> => {
      const r = await roost(c, 'm01', argv);
      assert.equal(r.code, 0, `roost ${argv.join(' ')}: ${r.err}`);
      return r.out;
    };
    const root = c.instanceDir('m02', 'p1');
    await writeFile(path.join(root, 'cli.txt'), 'one\n');
    await ok(['snapshot', 'p1', 'cli']);
    await writeFile(path.join(root, 'cli.txt'), 'two\n');
    assert.match(await ok(['info', 'p1']), /Snapshots:\n[^]*\| cli +\| \d{4}\/\d\d\/\d\d \d\d:\d\d UTC \| +\| NO +\|/);
    await ok(['restore', 'p1', 'cli']);
    assert.equal(await readFile(path.join(root, 'cli.txt'), 'utf8'), 'one\n');
    await ok(['delete', 'p1/cli']);
    assert.equal(existsSync(snapshotDir(c, 'm02', 'p1', 'cli')), false);
    const bad = await roost(c, 'm01', ['snapshot', 'p1', 'a/b']);
    assert.equal(bad.code, 1);
    assert.equal(bad.err, 'Error: Invalid snapshot name: Cannot contain "/"\n');

    assert.equal(await ok(['profile', 'create', 'cli']), 'Profile cli created\n');
    await ok(['profile', 'set', 'cli', 'user.origin', 'roost-cli']);
    assert.equal(await ok(['profile', 'add', 'p1', 'cli']), 'Profile cli added to p1\n');
    assert.match(await ok(['profile', 'show', 'cli']), /config:\n {2}user\.origin: roost-cli\n[^]*used_by:\n- \/1\.0\/instances\/p1\n/);
    assert.match(await ok(['profile', 'list']), /\| cli +\| +\| 1 +\|/);
    assert.equal((await meta<{ expanded_config: Record<string, string> }>(c, 'm01', '/1.0/instances/p1')).expanded_config['user.origin'], 'roost-cli');
    await ok(['profile', 'remove', 'p1', 'cli']);
    await ok(['profile', 'unset', 'cli', 'user.origin']);
    await ok(['launch', 'p4', '--type', 'process', '--target', 'm02', '-p', 'default', '-p', 'cli', '-c', 'process.command=sleep 600']);
    assert.deepEqual((await meta<{ profiles: string[] }>(c, 'm01', '/1.0/instances/p4')).profiles, ['default', 'cli']);
    const inUse = await roost(c, 'm01', ['profile', 'delete', 'cli']);
    assert.equal(inUse.err, 'Error: Profile is currently in use\n');
    await ok(['delete', '--force', 'p4']);
    assert.equal(await ok(['profile', 'delete', 'cli']), 'Profile cli deleted\n');
  });

  it('lxc profile rename renames it in the instances that use it', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    assert.equal((await lxcOk(c, 'm01', ['profile', 'rename', 'web', 'www'])).trim(), 'Profile web renamed to www');
    const view = (await meta<{ profiles: string[] }>(c, 'm01', '/1.0/instances/p2'));
    assert.deepEqual(view.profiles, ['default', 'www']);
  });
});

describe('snapshots move with their instance; a profile pins instances during evacuation', () => {
  let c: TestCluster;
  const snaps = ['one', 'two'];
  /** sha256 of every snapshot tree of an instance, as taken. */
  const taken = new Map<string, string>();

  before(async () => {
    c = await startCluster({ members: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  /** Every snapshot of `name` is on `member` (and nowhere else) with the bytes it was taken with. */
  async function assertSnapshotsOn(name: string, member: string): Promise<void> {
    for (const s of snaps) {
      for (const other of c.names) {
        assert.equal(existsSync(snapshotDir(c, other, name, s)), other === member, `snapshot ${name}/${s} on ${other}`);
      }
      assert.equal(await sha256Tree(snapshotDir(c, member, name, s)), taken.get(`${name}/${s}`), `bytes of ${name}/${s} on ${member}`);
    }
    const listed = (await meta<SnapshotView[]>(c, 'm03', `/1.0/instances/${name}/snapshots?recursion=1`));
    assert.deepEqual(listed.map((s) => s.name), snaps);
  }

  it('a move, an evacuation and a restore carry both snapshots byte for byte; a snapshot restores on the new member', async () => {
    await launchWorkload(c, 'snappy', { target: 'm01', start: false, payloadBytes: 256 * 1024 });
    const root = c.instanceDir('m01', 'snappy');
    for (const s of snaps) {
      await writeFile(path.join(root, 'which.txt'), `${s}\n`);
      await seedVolume(path.join(root, s), 32 * 1024, s);
      await c.client('m02').runAsync('POST', '/1.0/instances/snappy/snapshots', { name: s });
      taken.set(`snappy/${s}`, await sha256Tree(snapshotDir(c, 'm01', 'snappy', s)));
    }
    await setPower(c, 'snappy', 'start');

    // A user move (live, so the pre-copy path carries them too).
    await c.client('m01').runAsync('POST', '/1.0/instances/snappy?target=m02', { migration: true, live: true });
    assert.equal((await c.instance('snappy')).location, 'm02');
    await assertSnapshotsOn('snappy', 'm02');

    // Evacuation of m02 and its restore.
    await runState(c, 'm02', { action: 'evacuate' });
    const away = (await c.instance('snappy')).location;
    assert.notEqual(away, 'm02');
    await assertSnapshotsOn('snappy', away);
    await runState(c, 'm02', { action: 'restore' }, 'm03', 60_000);
    assert.equal((await c.instance('snappy')).location, 'm02');
    await assertSnapshotsOn('snappy', 'm02');

    // Restoring a snapshot on the member it moved to gives its bytes back.
    await c.client('m03').runAsync('PUT', '/1.0/instances/snappy', { restore: 'snappy/one' });
    const now = c.instanceDir('m02', 'snappy');
    assert.equal(await readFile(path.join(now, 'which.txt'), 'utf8'), 'one\n');
    assert.equal(existsSync(path.join(now, 'two')), false);
    assert.equal((await c.instance('snappy')).status, 'Running');
  });

  it('evacuate stops instances whose profile says cluster.evacuate=stop; the others move', async () => {
    assert.equal((await c.raw('m01', 'POST', '/1.0/profiles', { json: { name: 'pinned', config: { 'cluster.evacuate': 'stop' } } })).status, 201);
    await launchWorkload(c, 'pin1', { target: 'm03' });
    await launchWorkload(c, 'free1', { target: 'm03' });
    await c.client('m01').runAsync('PUT', '/1.0/instances/pin1', { ...(await editable(c, 'pin1')), profiles: ['default', 'pinned'] });
    await runState(c, 'm03', { action: 'evacuate' }, 'm01');
    const pin = await c.instance('pin1', 'm01');
    assert.equal(pin.location, 'm03');
    assert.equal(pin.status, 'Stopped');
    const free = await c.instance('free1', 'm01');
    assert.notEqual(free.location, 'm03');
    assert.equal(free.status, 'Running');
    await runState(c, 'm03', { action: 'restore' }, 'm01', 60_000);
    assert.equal((await c.instance('pin1', 'm01')).status, 'Running');
    assert.equal((await c.instance('free1', 'm01')).location, 'm03');
  });
});

/** An instance's editable fields as a PUT sends them back. */
async function editable(c: TestCluster, name: string): Promise<Record<string, unknown>> {
  const m = (await meta<Record<string, unknown>>(c, 'm01', `/1.0/instances/${name}`));
  return { config: m.config, devices: m.devices, profiles: m.profiles, description: m.description };
}
