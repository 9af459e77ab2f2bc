// `lxc exec` and `lxc file push|pull|delete` with the real client (Debian lxd-client) against a process
// instance of a two-member cluster, asked both through the member that holds it (m02) and through the
// other one (m01), which forwards the request and relays the exec websockets.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, lstat, mkdir, mkdtemp, readFile, readdir, readlink, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { hasCommand, isRoot, requireCommand } from '../helpers/prereq.js';
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { lxc, lxcChild, lxcOk, lxcTerminal } from '../helpers/lxc-client.js';

let c: TestCluster | undefined;
let tmp = '';

const installHint = 'apt-get install -y lxd-client';

function cluster(): TestCluster {
  assert.ok(c, 'the cluster runs');
  return c;
}

describe('lxc exec and lxc file with a process instance', () => {
  before(async () => {
    if (!hasCommand('lxc')) return; // each test skips (or fails under CI) through requireCommand
    c = await startCluster({ members: 2 });
    tmp = await mkdtemp(path.join(os.tmpdir(), 'roost-files-'));
    await c.launch('p1', { target: 'm02' });
    await lxcOk(c, 'm01', ['list']); // the client's first run prints a welcome text; not in the tests' output
  });
  after(async () => {
    await c?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  for (const via of ['m02', 'm01']) {
    it(`lxc exec through ${via} separates stdout and stderr and exits with the command's code`, async (t: TestContext) => {
      if (!requireCommand(t, 'lxc', installHint)) return;
      const r = await lxc(cluster(), via, ['exec', 'p1', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
      assert.equal(r.code, 3, r.stderr);
      assert.equal(r.stdout, 'out\n');
      assert.equal(r.stderr, 'err\n');
    });

    it(`lxc exec through ${via} passes piped stdin to the command, which sees its end`, async (t: TestContext) => {
      if (!requireCommand(t, 'lxc', installHint)) return;
      const r = await lxc(cluster(), via, ['exec', 'p1', '--', 'cat'], { input: 'hello\n' });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'hello\n');
      const big = randomBytes(3 << 20).toString('base64'); // a few MiB both ways, through the relay too
      const counted = await lxc(cluster(), via, ['exec', 'p1', '--', 'wc', '-c'], { input: big });
      assert.equal(counted.stdout.trim(), String(big.length));
    });
  }

  it('lxc exec runs in the root volume with the instance environment', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const out = await lxcOk(cluster(), 'm01', ['exec', 'p1', '--env', 'GREETING=hi', '--', 'sh', '-c', 'pwd -P; echo $GREETING']);
    assert.equal(out, `${await realRoot('p1')}\nhi\n`);
  });

  it('lxc exec of a missing command says "Command not found" and exits 127', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const r = await lxc(cluster(), 'm01', ['exec', 'p1', '--', 'no-such-command']);
    assert.equal(r.code, 127);
    assert.equal(r.stderr.trim(), 'Error: Command not found');
  });

  it('a signal to lxc exec reaches the command through the control channel', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const child = lxcChild(cluster(), 'm01', ['exec', 'p1', '--', 'sh', '-c', 'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.1; done']);
    child.stdin?.end();
    let out = '';
    child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    try {
      await waitFor('the command is ready', () => out.includes('ready\n'));
      child.kill('SIGTERM');
      assert.equal(await exited, 42);
      assert.equal(out, 'ready\ngot-term\n');
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('lxc exec -t gives the command a terminal that follows the window size (through m01)', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const term = lxcTerminal(cluster(), 'm01', ['exec', '-t', 'p1', '--', 'sh'], { cols: 100, rows: 30 });
    await term.waitFor(/[$#] $/);
    term.type('tty; stty size; echo hi-$((6*7))\r');
    await term.waitFor(/hi-42/);
    assert.match(term.output, /\/dev\/pts\/\d+\r\n30 100\r\n/);
    term.resize(120, 40);
    // The new size travels on the control channel, the typing on the data channel: ask until it shows.
    await waitFor('the command sees the new size', async () => {
      term.type('stty size\r');
      await delay(100);
      return /40 120\r\n/.test(term.output);
    });
    term.type('exit 5\r');
    assert.equal(await term.exit(), 5);
  });

  it('lxc file push and pull round-trip a binary file with its mode and owner (through m01)', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const bytes = randomBytes(300_000);
    const source = path.join(tmp, 'blob.bin');
    await writeFile(source, bytes);
    await chmod(source, 0o640);
    const owner = isRoot() ? { uid: 1234, gid: 5678 } : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    await chown(source, owner.uid, owner.gid);

    await lxcOk(cluster(), 'm01', ['file', 'push', '-p', source, 'p1/data/in/blob.bin']);
    const inside = path.join(cluster().instanceDir('m02', 'p1'), 'data/in/blob.bin');
    assert.deepEqual(await readFile(inside), bytes);
    const st = await stat(inside);
    assert.deepEqual({ mode: st.mode & 0o777, uid: st.uid, gid: st.gid }, { mode: 0o640, ...owner });

    const back = path.join(tmp, 'blob.back');
    await lxcOk(cluster(), 'm01', ['file', 'pull', 'p1/data/in/blob.bin', back]);
    assert.deepEqual(await readFile(back), bytes);
    assert.equal((await stat(back)).mode & 0o777, 0o640);
    // The path without its leading slash, as the client sends it for pulls, and through the holder.
    await lxcOk(cluster(), 'm02', ['file', 'pull', 'p1/data/in/blob.bin', path.join(tmp, 'blob.back2')]);
    assert.deepEqual(await readFile(path.join(tmp, 'blob.back2')), bytes);
  });

  it('lxc file push -r and pull -r carry a directory tree', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const tree = path.join(tmp, 'tree');
    await mkdir(path.join(tree, 'sub', 'deeper'), { recursive: true });
    await writeFile(path.join(tree, 'a.txt'), 'alpha\n');
    await writeFile(path.join(tree, 'sub', 'b.bin'), randomBytes(70_000));
    await writeFile(path.join(tree, 'sub', 'deeper', 'c.sh'), '#!/bin/sh\necho c\n');
    await chmod(path.join(tree, 'sub', 'deeper', 'c.sh'), 0o755);
    await chmod(path.join(tree, 'sub'), 0o750);
    await symlink('a.txt', path.join(tree, 'link'));

    await lxcOk(cluster(), 'm01', ['file', 'push', '-r', '-p', tree, 'p1/srv']);
    const inside = path.join(cluster().instanceDir('m02', 'p1'), 'srv', 'tree');
    assert.deepEqual(await manifest(inside), await manifest(tree), 'the pushed tree is the source tree, modes and owners included');
    assert.equal(await lxcOk(cluster(), 'm01', ['exec', 'p1', '--', 'sh', 'srv/tree/sub/deeper/c.sh']), 'c\n');

    const pulled = path.join(tmp, 'pulled');
    await lxcOk(cluster(), 'm01', ['file', 'pull', '-r', 'p1/srv/tree', pulled]);
    const got = await manifest(path.join(pulled, 'tree'), false);
    const want = await manifest(tree, false);
    // LXD answers a symlink with the absolute path it points to inside the instance.
    want.link = 'link -> /srv/tree/a.txt';
    assert.deepEqual(got, want);
  });

  it('lxc file pull of a missing file fails with LXD\'s "Not Found"', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const r = await lxc(cluster(), 'm01', ['file', 'pull', 'p1/no/such/file', path.join(tmp, 'nothing')]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), 'Error: Not Found');
    await assert.rejects(stat(path.join(tmp, 'nothing')), { code: 'ENOENT' });
  });

  it('paths never leave the instance: ".." is refused and symlinks resolve inside its root', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const root = cluster().instanceDir('m02', 'p1');
    const refused = await lxc(cluster(), 'm01', ['file', 'pull', 'p1/../../../../etc/hostname', path.join(tmp, 'host-hostname')]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^Error: Invalid path .*"\.\." is not allowed$/m);

    // Links the workload planted, pointing out of its root as seen from the host.
    await mkdir(path.join(root, 'etc'), { recursive: true });
    await writeFile(path.join(root, 'etc', 'hostname'), 'inside\n');
    await symlink('../../../../../../../../../etc', path.join(root, 'up'));
    await symlink('/etc', path.join(root, 'abs'));
    for (const link of ['up', 'abs']) {
      const out = path.join(tmp, `hostname-${link}`);
      await lxcOk(cluster(), 'm01', ['file', 'pull', `p1/${link}/hostname`, out]);
      assert.equal(await readFile(out, 'utf8'), 'inside\n', `p1/${link}/hostname is the instance's file`);
    }
    const marker = `roost-escape-${randomBytes(6).toString('hex')}`;
    await writeFile(path.join(tmp, marker), 'pushed\n');
    await lxcOk(cluster(), 'm01', ['file', 'push', path.join(tmp, marker), `p1/abs/${marker}`]);
    assert.equal(await readFile(path.join(root, 'etc', marker), 'utf8'), 'pushed\n');
    await assert.rejects(lstat(path.join('/etc', marker)), { code: 'ENOENT' }, 'nothing was written on the host');
  });

  it('files under an attached custom volume are the volume\'s', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const c = cluster();
    await c.client('m02').request('POST', '/1.0/storage-pools/default/volumes/custom?target=m02', { name: 'vol1' });
    await c.launch('withvol', { target: 'm02', devices: { data: { type: 'disk', pool: 'default', source: 'vol1', path: '/mnt/data' } } });
    const source = path.join(tmp, 'in-volume.txt');
    await writeFile(source, 'kept in the volume\n');
    await lxcOk(c, 'm01', ['file', 'push', source, 'withvol/mnt/data/in-volume.txt']);
    assert.equal(await readFile(path.join(c.volumeDir('m02', 'vol1'), 'in-volume.txt'), 'utf8'), 'kept in the volume\n');
    const listing = await lxc(c, 'm01', ['file', 'pull', 'withvol/mnt/data', path.join(tmp, 'not-recursive')]);
    assert.match(listing.stderr, /Can't pull a directory without --recursive/, 'the mount point is a directory');
    await lxcOk(c, 'm01', ['file', 'pull', 'withvol/mnt/data/in-volume.txt', path.join(tmp, 'from-volume.txt')]);
    assert.equal(await readFile(path.join(tmp, 'from-volume.txt'), 'utf8'), 'kept in the volume\n');
  });

  it('lxc file delete removes a file', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', installHint)) return;
    const file = path.join(cluster().instanceDir('m02', 'p1'), 'doomed.txt');
    await writeFile(file, 'x');
    await lxcOk(cluster(), 'm01', ['file', 'delete', 'p1/doomed.txt']);
    await assert.rejects(lstat(file), { code: 'ENOENT' });
  });
});

/** The instance's root volume with symlinks resolved (what `pwd -P` prints inside it). */
async function realRoot(name: string): Promise<string> {
  return realpath(cluster().instanceDir('m02', name));
}

/** Every entry below `dir` (relative path → kind, permission bits, owner if asked, content or link target). */
async function manifest(dir: string, withOwner = true): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(path.join(dir, rel))).sort()) {
      const p = rel === '' ? name : `${rel}/${name}`;
      const abs = path.join(dir, p);
      const st = await lstat(abs);
      const meta = `${(st.mode & 0o777).toString(8)}${withOwner ? ` ${st.uid}:${st.gid}` : ''}`;
      if (st.isSymbolicLink()) out[p] = `${p} -> ${await readlink(abs)}`;
      else if (st.isDirectory()) {
        out[p] = `dir ${meta}`;
        await walk(p);
      } else out[p] = `file ${meta} ${(await readFile(abs)).toString('base64')}`;
    }
  };
  await walk('');
  return out;
}
