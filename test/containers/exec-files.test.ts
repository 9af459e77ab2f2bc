// `lxc exec` and `lxc file push|pull` with the real client (Debian lxd-client) against a busybox system
// container on m02, asked through m02 and through m01 (forwarded, exec websockets relayed): the command runs
// inside the container (lxc-attach), with a terminal inside it for `-t`, and files land in its rootfs with
// their mode and owner, never outside it.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { waitFor, type TestCluster } from '../helpers/cluster.js';
import { hasCommand, requireCommand } from '../helpers/prereq.js';
import { lxc, lxcChild, lxcOk, lxcTerminal } from '../helpers/lxc-client.js';
import { containersPossible, importImage, launchContainer, requireContainers, startWithImage, teardown, type BuiltImage } from './support.js';

let c: TestCluster | undefined;
let image: BuiltImage | undefined;
let tmp: string | undefined;

function cluster(): TestCluster {
  assert.ok(c, 'the cluster runs');
  return c;
}

/** Both prerequisites of this file: containers, and the lxc client. */
function prerequisites(t: TestContext): boolean {
  return requireContainers(t) && requireCommand(t, 'lxc', 'apt-get install -y lxd-client');
}

describe('lxc exec and lxc file with a system container', () => {
  before(async () => {
    if (!containersPossible() || !hasCommand('lxc')) return; // each test skips (or fails under CI)
    tmp = await mkdtemp(path.join(os.tmpdir(), 'roost-ct-files-'));
    ({ c, image } = await startWithImage(2));
    await importImage(c, 'm01', image.tarball, 'busybox');
    await launchContainer(c, 'c1', { target: 'm02' });
    await lxcOk(c, 'm01', ['list']); // the client's first run prints a welcome text; not in the tests' output
  });
  after(async () => {
    await teardown(c, [image?.dir, tmp]);
  });

  for (const via of ['m02', 'm01']) {
    it(`lxc exec through ${via} runs inside the container: stdout, stderr and exit code apart`, async (t: TestContext) => {
      if (!prerequisites(t)) return;
      const r = await lxc(cluster(), via, ['exec', 'c1', '--', 'sh', '-c', 'echo out $(hostname) $(pwd); echo err >&2; exit 3']);
      assert.equal(r.code, 3, r.stderr);
      assert.equal(r.stdout, 'out c1 /root\n');
      assert.equal(r.stderr, 'err\n');
    });

    it(`lxc exec through ${via} passes piped stdin to the command`, async (t: TestContext) => {
      if (!prerequisites(t)) return;
      const r = await lxc(cluster(), via, ['exec', 'c1', '--', 'cat'], { input: 'hello\n' });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'hello\n');
    });
  }

  it('lxc exec of a missing command says "Command not found" and exits 127', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    const r = await lxc(cluster(), 'm01', ['exec', 'c1', '--', 'no-such-command']);
    assert.equal(r.code, 127);
    assert.match(r.stderr, /^Error: Command not found$/m);
  });

  it('a signal to lxc exec reaches the command inside the container', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    const child = lxcChild(cluster(), 'm01', ['exec', 'c1', '--', 'sh', '-c', 'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.1; done']);
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

  it('lxc exec -t gives the command a terminal inside the container (through m01)', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    const term = lxcTerminal(cluster(), 'm01', ['exec', '-t', 'c1', '--', 'sh'], { cols: 90, rows: 25 });
    await term.waitFor(/~ # (.\[6n)?$/); // busybox's prompt, then (ESC [6n) its query of the cursor position
    term.type('tty; hostname; stty size; echo hi-$((6*7))\r');
    await term.waitFor(/hi-42\r\r?\n/);
    // The terminal is one of the container's own ptys, sized as ours.
    assert.match(term.output, /\r\n\/dev\/pts\/\d+\r\r?\nc1\r\r?\n25 90\r\r?\nhi-42\r\r?\n/);
    term.type('exit 5\r');
    assert.equal(await term.exit(), 5);
  });

  it('lxc file push and pull round-trip a binary file with mode and owner (through m01)', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    assert.ok(tmp);
    const bytes = randomBytes(200_000);
    const source = path.join(tmp, 'blob.bin');
    await writeFile(source, bytes);
    await chmod(source, 0o604);
    await chown(source, 1000, 2000);
    await lxcOk(cluster(), 'm01', ['file', 'push', source, 'c1/root/blob.bin']);
    // The container sees it as pushed.
    const seen = await lxcOk(cluster(), 'm01', ['exec', 'c1', '--', 'sh', '-c', 'stat -c "%a %u %g %s" /root/blob.bin; md5sum < /root/blob.bin']);
    const md5 = createHash('md5').update(bytes).digest('hex');
    assert.equal(seen, `604 1000 2000 ${bytes.length}\n${md5}  -\n`);
    const back = path.join(tmp, 'blob.back');
    await lxcOk(cluster(), 'm01', ['file', 'pull', 'c1/root/blob.bin', back]);
    assert.deepEqual(await readFile(back), bytes);
    assert.equal((await stat(back)).mode & 0o777, 0o604);
  });

  it('lxc file push -r -p and pull -r carry a directory tree into and out of the container', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    assert.ok(tmp);
    const tree = path.join(tmp, 'tree');
    await mkdir(path.join(tree, 'sub'), { recursive: true });
    await writeFile(path.join(tree, 'a.txt'), 'alpha\n');
    await writeFile(path.join(tree, 'sub', 'b.txt'), 'beta\n');
    await lxcOk(cluster(), 'm01', ['file', 'push', '-r', '-p', tree, 'c1/opt/data']);
    assert.equal(await lxcOk(cluster(), 'm01', ['exec', 'c1', '--', 'cat', '/opt/data/tree/a.txt', '/opt/data/tree/sub/b.txt']), 'alpha\nbeta\n');
    const pulled = path.join(tmp, 'pulled');
    await lxcOk(cluster(), 'm02', ['file', 'pull', '-r', 'c1/opt/data/tree', pulled]);
    assert.equal(await readFile(path.join(pulled, 'tree', 'sub', 'b.txt'), 'utf8'), 'beta\n');
  });

  it('lxc file pull of a missing file fails with "Not Found"', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    assert.ok(tmp);
    const r = await lxc(cluster(), 'm01', ['file', 'pull', 'c1/etc/no-such-file', path.join(tmp, 'nothing')]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), 'Error: Not Found');
  });

  it('a container\'s absolute symlinks resolve inside it, and ".." is refused', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    assert.ok(tmp);
    await lxcOk(cluster(), 'm01', ['exec', 'c1', '--', 'ln', '-s', '/etc', '/root/etc-link']);
    const marker = `roost-escape-${randomBytes(6).toString('hex')}`;
    await writeFile(path.join(tmp, marker), 'pushed\n');
    await lxcOk(cluster(), 'm01', ['file', 'push', path.join(tmp, marker), `c1/root/etc-link/${marker}`]);
    assert.equal(await lxcOk(cluster(), 'm01', ['exec', 'c1', '--', 'cat', `/etc/${marker}`]), 'pushed\n');
    await assert.rejects(lstat(path.join('/etc', marker)), { code: 'ENOENT' }, 'nothing was written on the host');
    const passwd = path.join(tmp, 'passwd');
    await lxcOk(cluster(), 'm01', ['file', 'pull', 'c1/root/etc-link/passwd', passwd]);
    assert.equal(await readFile(passwd, 'utf8'), await lxcOk(cluster(), 'm01', ['exec', 'c1', '--', 'cat', '/etc/passwd']));
    const refused = await lxc(cluster(), 'm01', ['file', 'pull', 'c1/../../etc/shadow', path.join(tmp, 'shadow')]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /"\.\." is not allowed/);
  });
});
