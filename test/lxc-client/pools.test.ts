// Storage pools with the real `lxc` client, along the storage steps of LXD's own clustering evacuation test:
// a pool defined on every member (`lxc storage create pool1 dir --target <m>`) then created cluster-wide, a
// custom volume and instances on it (`lxc init -s pool1`), an evacuation and a restore of the member holding
// them with their bytes checked where they land, a dry-run that refuses an instance whose pool the other
// members lack, and bad input refused with nothing changed. One cluster for the whole file.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { hasCommand, requireCommand } from '../helpers/prereq.js';
import { makeLoopBtrfs, requireBtrfs, type LoopBtrfs } from '../helpers/btrfs.js';
import { sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { lxc, lxcOk } from '../helpers/lxc-client.js';
import { postState, seedVolume } from '../evacuation/world.js';

let c: TestCluster;
let btrfs: LoopBtrfs | undefined;
const members = ['m01', 'm02', 'm03'];

function prerequisites(t: TestContext): boolean {
  return requireCommand(t, 'lxc', 'apt-get install -y lxd-client');
}

/** Where member `member` keeps the root volume of `name` in pool `pool`. */
function rootDir(member: string, pool: string, name: string): string {
  return path.join(c.memberDir(member), 'storage-pools', pool, 'containers', `default_${name}`);
}

/** Rows of an `lxc ... --format csv` listing. */
function csv(out: string): string[][] {
  return out.trim().split('\n').filter((l) => l !== '').map((l) => l.split(','));
}

/** Where `name` lives now, as `lxc list` shows it. */
async function locationOf(name: string): Promise<string> {
  const rows = csv(await lxcOk(c, 'm02', ['list', name, '--format', 'csv', '-c', 'nL']));
  return rows.find((r) => r[0] === name)?.[1] ?? '';
}

/** The names of the pools, with their state, as `lxc storage list` shows them. */
async function poolStates(): Promise<Record<string, string>> {
  const rows = csv(await lxcOk(c, 'm01', ['storage', 'list', '--format', 'csv']));
  return Object.fromEntries(rows.map((r) => [r[0] ?? '', r.at(-1) ?? '']));
}

describe('storage pools with the real lxc client', () => {
  before(async () => {
    if (!hasCommand('lxc')) return; // each test skips (or fails under CI) through prerequisites
    c = await startCluster({ members: 3 });
  });
  after(async () => {
    await c?.stop();
    await btrfs?.remove();
  });

  it('lxc storage create --target on every member, then without target: the pool is Created on all', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    for (const m of members) await lxcOk(c, 'm01', ['storage', 'create', 'pool1', 'dir', '--target', m]);
    assert.equal((await poolStates()).pool1, 'PENDING');
    await lxcOk(c, 'm01', ['storage', 'create', 'pool1', 'dir']);
    assert.deepEqual(await poolStates(), { default: 'CREATED', pool1: 'CREATED' });
    const shown = await lxcOk(c, 'm02', ['storage', 'show', 'pool1']);
    assert.match(shown, /^status: Created$/m);
    assert.match(shown, /^driver: dir$/m);
    for (const m of members) {
      assert.match(shown, new RegExp(`^- ${m}$`, 'm'));
      assert.ok(existsSync(path.join(c.memberDir(m), 'storage-pools', 'pool1', 'containers')), `pool1 exists on ${m}`);
    }
    assert.match(await lxcOk(c, 'm03', ['storage', 'show', 'pool1', '--target', 'm03']), /^status: Created$/m);
  });

  it('bad pool requests are refused with LXD\'s words and change nothing', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    const refused = async (args: string[], pattern: RegExp): Promise<void> => {
      const r = await lxc(c, 'm01', args);
      assert.equal(r.code, 1, `lxc ${args.join(' ')} should fail: ${r.stdout}`);
      assert.match(r.stderr, pattern);
    };
    await refused(['storage', 'create', 'pool1', 'dir'], /Error: The storage pool is already created/);
    await refused(['storage', 'create', 'pool1', 'dir', '--target', 'm01'], /Error: Pool is not in pending state/);
    await refused(['storage', 'create', 'bad..name', 'dir', '--target', 'm01'], /Invalid storage pool name/);
    await refused(['storage', 'create', 'p2', 'zfs', '--target', 'm01'], /Storage pool driver "zfs" is not supported/);
    await refused(['storage', 'create', 'p2', 'dir', '--target', 'm09'], /Cluster member "m09" not found/);
    await refused(['storage', 'create', 'p2', 'dir', 'user.x=1', '--target', 'm01'], /Config key "user.x" may not be used as member-specific key/);
    await refused(['storage', 'create', 'p2', 'dir'], /Pool not pending on any node \(use --target <node> first\)/);
    await lxcOk(c, 'm01', ['storage', 'create', 'p3', 'dir', '--target', 'm01']);
    await refused(['storage', 'create', 'p3', 'dir'], /Pool not defined on nodes: m02, m03/);
    assert.deepEqual(await poolStates(), { default: 'CREATED', p3: 'PENDING', pool1: 'CREATED' });
    await lxcOk(c, 'm01', ['storage', 'delete', 'p3']);
    await refused(['storage', 'show', 'nosuch'], /Storage pool not found/);
    await refused(['storage', 'delete', 'default'], /The storage pool is currently in use/);
    assert.deepEqual(await poolStates(), { default: 'CREATED', pool1: 'CREATED' });
  });

  it('a custom volume and instances on pool1 move out with lxc cluster evacuate and back with restore, bytes intact', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    await lxcOk(c, 'm01', ['storage', 'volume', 'create', 'pool1', 'vol1', '--target', 'm01']);
    assert.ok(existsSync(path.join(c.memberDir('m01'), 'storage-pools', 'pool1', 'custom', 'default_vol1')), 'vol1 is in pool1 on m01');
    const cmd = 'while true; do sleep 1; done';
    await lxcOk(c, 'm01', ['init', '--empty', 'c1', '--target', 'm01', '-s', 'pool1', '-c', `process.command=${cmd}`]);
    await lxcOk(c, 'm01', ['init', '--empty', 'c2', '--target', 'm01', '--storage', 'pool1', '-c', `process.command=${cmd}`]);
    // A running process instance on pool1 (the real client creates containers, which need an image to run).
    await c.launch('c4', { target: 'm01', command: cmd, devices: { root: { type: 'disk', path: '/', pool: 'pool1' } } });
    // A profile naming pool1 for the root disk works too.
    await lxcOk(c, 'm01', ['profile', 'create', 'onpool1']);
    await lxcOk(c, 'm01', ['profile', 'device', 'add', 'onpool1', 'root', 'disk', 'path=/', 'pool=pool1']);
    await lxcOk(c, 'm01', ['init', '--empty', 'c3', '--target', 'm01', '-p', 'onpool1', '-c', `process.command=${cmd}`]);
    const before = new Map<string, string>();
    for (const name of ['c1', 'c2', 'c3', 'c4']) {
      const dir = rootDir('m01', 'pool1', name);
      assert.ok(existsSync(dir), `${name}'s root volume is in pool1`);
      assert.ok(!existsSync(rootDir('m01', 'default', name)), `${name} has nothing in the default pool`);
      await seedVolume(dir, 256 * 1024, name);
      await mkdir(path.join(dir, 'data'), { recursive: true });
      await writeFile(path.join(dir, 'data', 'bytes'), `${name} was here\n`);
      before.set(name, await sha256Tree(dir));
    }
    const used = await lxcOk(c, 'm01', ['storage', 'show', 'pool1']);
    for (const name of ['c1', 'c2', 'c3']) assert.match(used, new RegExp(`/1.0/instances/${name}$`, 'm'));
    const inUse = await lxc(c, 'm01', ['storage', 'delete', 'pool1']);
    assert.match(inUse.stderr, /The storage pool is currently in use/);

    await lxcOk(c, 'm01', ['cluster', 'evacuate', 'm01', '--force']);
    for (const name of ['c1', 'c2', 'c3', 'c4']) {
      const at = await locationOf(name);
      assert.ok(at === 'm02' || at === 'm03', `${name} moved off m01 (it is on "${at}")`);
      assert.equal(await sha256Tree(rootDir(at, 'pool1', name)), before.get(name), `${name}'s bytes in pool1 on ${at}`);
      assert.ok(!existsSync(rootDir(at, 'default', name)), `${name} landed in pool1, not default`);
      assert.ok(!existsSync(rootDir('m01', 'pool1', name)), `${name}'s source copy is gone`);
    }
    assert.match(csv(await lxcOk(c, 'm01', ['list', 'c4', '--format', 'csv', '-c', 'ns']))[0]?.[1] ?? '', /RUNNING/);

    await lxcOk(c, 'm01', ['cluster', 'restore', 'm01', '--force']);
    for (const name of ['c1', 'c2', 'c3', 'c4']) {
      await waitFor(`${name} is home on m01`, async () => (await locationOf(name)) === 'm01');
      assert.equal(await sha256Tree(rootDir('m01', 'pool1', name)), before.get(name), `${name}'s bytes back in pool1 on m01`);
    }
  });

  it('a btrfs pool (each member\'s source on btrfs): instances move out and home by btrfs send/receive, bytes intact', async (t: TestContext) => {
    if (!prerequisites(t) || !requireBtrfs(t)) return;
    btrfs = await makeLoopBtrfs('400M');
    const sourceOf = (m: string): string => path.join(btrfs?.mount ?? '', m);
    for (const m of members) {
      await mkdir(sourceOf(m));
      await lxcOk(c, 'm01', ['storage', 'create', 'bpool', 'btrfs', `source=${sourceOf(m)}`, '--target', m]);
    }
    await lxcOk(c, 'm01', ['storage', 'create', 'bpool', 'btrfs']);
    assert.equal((await poolStates()).bpool, 'CREATED');
    assert.match(await lxcOk(c, 'm02', ['storage', 'show', 'bpool']), /^driver: btrfs$/m);
    // A pool whose source is not on btrfs is refused, naming why.
    for (const m of members) await lxcOk(c, 'm01', ['storage', 'create', 'bad', 'btrfs', `source=${c.dir}`, '--target', m]);
    const notBtrfs = await lxc(c, 'm01', ['storage', 'create', 'bad', 'btrfs']);
    assert.notEqual(notBtrfs.code, 0);
    assert.match(notBtrfs.stderr, /not on a btrfs file system|btrfs/);
    await lxcOk(c, 'm01', ['storage', 'delete', 'bad']);
    assert.equal((await poolStates()).bad, undefined);

    const cmd = 'while true; do sleep 1; done';
    const bRoot = (m: string, name: string): string => path.join(sourceOf(m), 'containers', `default_${name}`);
    await c.launch('b1', { target: 'm01', command: cmd, devices: { root: { type: 'disk', path: '/', pool: 'bpool' } } });
    await lxcOk(c, 'm01', ['init', '--empty', 'b2', '--target', 'm01', '-s', 'bpool', '-c', `process.command=${cmd}`]);
    const before = new Map<string, string>();
    for (const name of ['b1', 'b2']) {
      const dir = bRoot('m01', name);
      assert.equal(spawnSync('btrfs', ['subvolume', 'show', dir]).status, 0, `${name}'s root volume is a btrfs subvolume`);
      await seedVolume(dir, 2 * 1024 * 1024, name);
      await writeFile(path.join(dir, 'bytes'), `${name} was here\n`);
      before.set(name, await sha256Tree(dir));
    }
    const logFrom = readFileSync(path.join(c.memberDir('m01'), 'roostd.log')).length;
    await lxcOk(c, 'm01', ['cluster', 'evacuate', 'm01', '--force']);
    for (const name of ['b1', 'b2']) {
      const at = await locationOf(name);
      assert.ok(at === 'm02' || at === 'm03', `${name} moved off m01 (it is on "${at}")`);
      assert.equal(await sha256Tree(bRoot(at, name)), before.get(name), `${name}'s bytes in bpool on ${at}`);
      assert.equal(spawnSync('btrfs', ['subvolume', 'show', bRoot(at, name)]).status, 0, `${name} landed as a subvolume`);
      assert.ok(!existsSync(bRoot('m01', name)), `${name}'s source copy is gone`);
    }
    const streamed = readFileSync(path.join(c.memberDir('m01'), 'roostd.log')).subarray(logFrom).toString('utf8')
      .split('\n').filter((l) => l.includes('"streamed pass"') && l.includes('"stream":"btrfs"'));
    assert.ok(streamed.length >= 2, `both moves went as btrfs streams (${streamed.length} streamed passes logged)`);

    await lxcOk(c, 'm01', ['cluster', 'restore', 'm01', '--force']);
    for (const name of ['b1', 'b2']) {
      await waitFor(`${name} is home on m01`, async () => (await locationOf(name)) === 'm01');
      assert.equal(await sha256Tree(bRoot('m01', name)), before.get(name), `${name}'s bytes back in bpool on m01`);
    }
    assert.match(csv(await lxcOk(c, 'm01', ['list', 'b1', '--format', 'csv', '-c', 'ns']))[0]?.[1] ?? '', /RUNNING/);
    for (const name of ['b1', 'b2']) await lxcOk(c, 'm01', ['delete', name, '--force']);
  });

  it('the evacuation dry-run refuses an instance whose pool exists on no other member, naming the pool', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    // pool2's source on m02 and m03 is a file, so it is created on m01 only: the pool is Errored, naming them.
    const blocker = path.join(c.dir, 'not-a-directory');
    await writeFile(blocker, 'x');
    await lxcOk(c, 'm01', ['storage', 'create', 'pool2', 'dir', '--target', 'm01']);
    for (const m of ['m02', 'm03']) await lxcOk(c, 'm01', ['storage', 'create', 'pool2', 'dir', `source=${blocker}`, '--target', m]);
    const failed = await lxc(c, 'm01', ['storage', 'create', 'pool2', 'dir']);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /Failed to create storage pool "pool2" on member "m02": .*; member "m03"/);
    assert.equal((await poolStates()).pool2, 'ERRORED');
    assert.match(await lxcOk(c, 'm01', ['storage', 'show', 'pool2', '--target', 'm01']), /^status: Created$/m);

    await lxcOk(c, 'm01', ['init', '--empty', 'stuck', '--target', 'm01', '-s', 'pool2', '-c', 'process.command=sleep 1000']);
    const res = await postState(c, 'm01', { action: 'evacuate', dry_run: true });
    assert.equal(res.status, 200, res.text);
    const plan = res.body?.metadata as { refusals: { name: string; reason: string }[] };
    const refusal = plan.refusals.find((r) => r.name === 'stuck');
    assert.ok(refusal, `stuck is refused: ${res.text}`);
    assert.match(refusal.reason, /no storage pool "pool2"/);
    const elsewhere = await lxc(c, 'm01', ['init', '--empty', 'stuck2', '--target', 'm02', '-s', 'pool2']);
    assert.equal(elsewhere.code, 1, 'm02 has no pool2');
  });
});
