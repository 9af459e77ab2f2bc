// What the container suites share: their prerequisites (LXC, busybox-static, root), the busybox image
// built once per file, the `roost` CLI run in-process against a member, LXC's own view of a member
// (`lxc-ls`), cgroup limits of a running container, and a teardown that proves no container is left.

import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { lstat, mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runCli } from '../../src/cli/run.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { hasCommand, isRoot, requireCommand } from '../helpers/prereq.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** True if this host can run the container suites at all (used by `before` to skip the setup). */
export function containersPossible(): boolean {
  return hasCommand('lxc-start') && hasCommand('busybox') && isRoot();
}

/**
 * Returns true if the test can go on: LXC, busybox-static and root. Otherwise skips it naming what is
 * missing (by hand) or fails (under CI=true).
 */
export function requireContainers(t: TestContext): boolean {
  if (!requireCommand(t, 'lxc-start', 'apt-get install -y lxc')) return false;
  if (!requireCommand(t, 'busybox', 'apt-get install -y busybox-static')) return false;
  if (!isRoot()) {
    const reason = 'LXC system containers need root (run the tests as root)';
    if (process.env.CI === 'true') throw new Error(`missing prerequisite under CI: ${reason}`);
    t.skip(reason);
    return false;
  }
  return true;
}

/** The busybox image, built into its own temporary directory. */
export interface BuiltImage {
  dir: string;
  tarball: string;
}

/** Build the busybox image with `scripts/build-busybox-image.sh` (a few seconds, no network). */
export async function buildImage(): Promise<BuiltImage> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'roost-image-'));
  const tarball = path.join(dir, 'busybox.tar.gz');
  const r = await run('sh', [path.join(repoRoot, 'scripts', 'build-busybox-image.sh'), tarball], 120_000);
  assert.equal(r.code, 0, `build-busybox-image.sh failed: ${r.stderr}`);
  return { dir, tarball };
}

/**
 * A cluster of `members` members and the busybox image, built while the members start. If either fails,
 * whatever the other made is removed before the error is thrown.
 */
export async function startWithImage(members: number): Promise<{ c: TestCluster; image: BuiltImage }> {
  const [built, started] = await Promise.allSettled([buildImage(), startCluster({ members })]);
  if (built.status === 'fulfilled' && started.status === 'fulfilled') return { c: track(started.value), image: built.value };
  await teardown(started.status === 'fulfilled' ? started.value : undefined, [built.status === 'fulfilled' ? built.value.dir : undefined]);
  throw built.status === 'rejected' ? built.reason : (started as PromiseRejectedResult).reason;
}

/** What a command printed and how it ended. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a program without stdin and with a deadline; the outcome even if it fails. */
export function run(file: string, args: string[], timeoutMs = 30_000, env: NodeJS.ProcessEnv = process.env): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', env, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(new Error(`${file} ${args.join(' ')} did not finish: ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
    child.stdin?.end();
  });
}

/** Collects what is written to it. */
class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    cb();
  }
}

/** `roost <argv...>` in this process against the member in `memberDir` (ROOST_DIR), as a user runs it. */
export async function roost(memberDir: string, ...argv: string[]): Promise<CommandResult> {
  const stdout = new Sink();
  const stderr = new Sink();
  const code = await runCli(argv, { stdout, stderr, env: { ROOST_DIR: memberDir } });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** `roost ...` that must succeed; returns its stdout. */
export async function roostOk(memberDir: string, ...argv: string[]): Promise<string> {
  const r = await roost(memberDir, ...argv);
  assert.equal(r.code, 0, `roost ${argv.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Milliseconds `fn` took, with its result. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await fn();
  return { ms: Math.round(performance.now() - start), value };
}

/** A member's lxcpath. */
export function lxcPath(c: TestCluster, member: string): string {
  return path.join(c.memberDir(member), 'lxc');
}

/** The LXC containers `lxc-ls` knows in a member's lxcpath (only the running ones with `running`). */
export async function lxcLs(c: TestCluster, member: string, running = false): Promise<string[]> {
  const r = await run('lxc-ls', ['-P', lxcPath(c, member), '-1', ...(running ? ['--running'] : [])], 15_000);
  assert.equal(r.code, 0, `lxc-ls failed: ${r.stderr}`);
  return r.stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '').sort();
}

/** The LXC container of instance `name` among `names` (`roost-<member>-default-<name>-<hash>`). */
export function lxcNameOf(names: string[], member: string, instance: string): string | undefined {
  return names.find((n) => new RegExp(`^roost-${member}-default-${instance}-[0-9a-f]{8}$`).test(n));
}

/** The import of the image as the API does it: the tarball as the body, then an alias. Returns the fingerprint. */
export async function importImage(c: TestCluster, member: string, tarball: string, alias: string): Promise<string> {
  const client = c.client(member);
  const result = await client.upload('/1.0/images', tarball, { 'x-lxd-filename': path.basename(tarball) });
  const meta = (result.operation?.metadata ?? {}) as { fingerprint?: string };
  assert.match(meta.fingerprint ?? '', /^[0-9a-f]{64}$/);
  await client.request('POST', '/1.0/images/aliases', { name: alias, target: meta.fingerprint, description: '' });
  return meta.fingerprint ?? '';
}

/** Create a container from an image alias through the API (on `target`), and start it unless told not to. */
export async function launchContainer(
  c: TestCluster,
  name: string,
  options: { target: string; alias?: string; config?: Record<string, string>; devices?: Record<string, Record<string, string>>; start?: boolean },
): Promise<void> {
  const client = c.client(options.target);
  await client.runAsync('POST', `/1.0/instances?target=${options.target}`, {
    name,
    source: { type: 'image', alias: options.alias ?? 'busybox' },
    config: options.config ?? {},
    devices: options.devices ?? {},
  });
  if (options.start !== false) await client.runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
}

/** `exec` through the API in LXD's record-output shape: exit code and both outputs. */
export async function execIn(c: TestCluster, via: string, name: string, command: string[], cwd?: string): Promise<CommandResult> {
  const client = c.client(via);
  const result = await client.runAsync('POST', `/1.0/instances/${name}/exec`, {
    command,
    cwd,
    'record-output': true,
    'wait-for-websocket': false,
    interactive: false,
  });
  const meta = (result.operation?.metadata ?? {}) as { return?: unknown; output?: Record<string, string> };
  assert.equal(typeof meta.return, 'number', `exec metadata ${JSON.stringify(meta)}`);
  const read = async (fd: '1' | '2'): Promise<string> => {
    const url = meta.output?.[fd];
    assert.ok(url, `exec metadata names the output of fd ${fd}: ${JSON.stringify(meta)}`);
    return (await client.requestRaw('GET', url)).text;
  };
  return { code: meta.return as number, stdout: await read('1'), stderr: await read('2') };
}

/** `exec` that must exit 0; returns stdout. */
export async function execOk(c: TestCluster, via: string, name: string, command: string[]): Promise<string> {
  const r = await execIn(c, via, name, command);
  assert.equal(r.code, 0, `${command.join(' ')} in ${name} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/**
 * Where a running Linux system keeps runtime state rather than data: the mount points of the kernel's
 * filesystems (`dev`, `proc`, `sys`: inside the container they are mounts, and what the host sees under
 * them is not the container's), and `run`, `var/run`, `tmp` and `var/log`, which a boot or a shutdown may
 * write (utmp, pid files, logs). Their contents are left out of a stable tree; the directories themselves
 * (with their modes, /tmp's 1777 included) stay in.
 */
export const volatileDirs = ['dev', 'proc', 'sys', 'run', 'var/run', 'tmp', 'var/log'];

/** True for a path (relative to a rootfs) inside one of `volatileDirs`. */
export function isVolatile(rel: string): boolean {
  return volatileDirs.some((d) => rel.startsWith(`${d}/`));
}

/**
 * Every entry of a tree (relative path → kind, permission bits, owner, and content digest or link target),
 * in sorted order, for comparisons that name what differs. `exclude` leaves out entries by relative path.
 */
export async function treeManifest(dir: string, exclude: (rel: string) => boolean = () => false): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(path.join(dir, rel))).sort();
    for (const name of names) {
      const p = rel === '' ? name : `${rel}/${name}`;
      if (exclude(p)) continue;
      const abs = path.join(dir, p);
      const st = await lstat(abs);
      const meta = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      if (st.isDirectory()) {
        out[p] = `dir ${meta}`;
        await walk(p);
      } else if (st.isSymbolicLink()) {
        out[p] = `link -> ${await readlink(abs)}`;
      } else if (st.isFile()) {
        out[p] = `file ${meta} ${createHash('sha256').update(await readFile(abs)).digest('hex')}`;
      } else {
        out[p] = `other ${meta}`;
      }
    }
  };
  await walk('');
  return out;
}

/** Paths whose entries differ between two manifests. */
export function manifestDiff(a: Record<string, string>, b: Record<string, string>): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => a[k] !== b[k]).sort();
}

/** The cgroup file of `pid` for `controller`: `v1File` on the v1 hierarchy carrying it, else `v2File` on cgroup2. */
export async function cgroupFile(pid: number, controller: string, v1File: string, v2File: string): Promise<{ file: string; version: 1 | 2 }> {
  const membership = (await readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n').filter((l) => l !== '');
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((line) => {
    const [left = '', right = ''] = line.split(' - ');
    const f = left.split(' ');
    const [fstype = '', , options = ''] = right.split(' ');
    return { root: f[3] ?? '/', point: f[4] ?? '', fstype, options: options.split(',') };
  });
  const under = (root: string, point: string, cgroup: string): string | null => {
    const rel = path.posix.relative(root, cgroup);
    return rel.startsWith('..') ? null : path.join(point, rel);
  };
  const candidates: { file: string; version: 1 | 2 }[] = [];
  for (const line of membership) {
    const [id, controllers = '', ...rest] = line.split(':');
    const cgroup = rest.join(':');
    if (id === '0') {
      for (const m of mounts.filter((x) => x.fstype === 'cgroup2')) {
        const dir = under(m.root, m.point, cgroup);
        if (dir) candidates.push({ file: path.join(dir, v2File), version: 2 });
      }
    } else if (controllers.split(',').includes(controller)) {
      for (const m of mounts.filter((x) => x.fstype === 'cgroup' && x.options.includes(controller))) {
        const dir = under(m.root, m.point, cgroup);
        if (dir) candidates.push({ file: path.join(dir, v1File), version: 1 });
      }
    }
  }
  for (const c of candidates) {
    if (await readFile(c.file, 'utf8').then(() => true, () => false)) return c;
  }
  throw new Error(`no ${controller} cgroup file for pid ${pid} (looked at ${candidates.map((c) => c.file).join(', ') || 'nothing'})`);
}

/**
 * LXC monitors still running for containers under `dir` (any lxcpath in it), as `lxcpath/name`. The
 * monitor is the process LXC keeps per running container; its command line names both.
 */
export function strayContainers(dir: string): { lxcPath: string; name: string }[] {
  const found: { lxcPath: string; name: string }[] = [];
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return found;
  }
  for (const pid of pids) {
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    } catch {
      continue;
    }
    const m = /^\[lxc monitor\] (\S+) (\S+)/.exec(cmdline);
    if (m?.[1] && m[2] && m[1].startsWith(`${dir}/`)) found.push({ lxcPath: m[1], name: m[2] });
  }
  return found;
}

/** Kill (lxc-stop -k) every container still running under `dir`; works even after `dir` was removed. */
export function killStrayContainers(dir: string): void {
  for (const s of strayContainers(dir)) {
    spawnSync('lxc-stop', ['-P', s.lxcPath, '-n', s.name, '-k'], { stdio: 'ignore', timeout: 20_000 });
  }
}

/** Clusters of this process, whose containers are killed if it exits without its teardown. */
const liveDirs = new Set<string>();
process.on('exit', () => {
  for (const dir of liveDirs) killStrayContainers(dir);
});

/** Note a cluster whose containers must not outlive this process. */
export function track(c: TestCluster): TestCluster {
  liveDirs.add(c.dir);
  return c;
}

/**
 * The teardown of every container suite: stop the members with the harness (daemons, then `lxc-stop` of
 * every container), prove with `lxc-ls` that no container of any member still runs, remove everything,
 * and prove no LXC monitor refers to the cluster any more. Temporary directories go in any case.
 */
export async function teardown(c: TestCluster | undefined, temps: (string | undefined)[]): Promise<void> {
  try {
    if (c) {
      let running: string[] = [];
      try {
        await c.local.down(false);
        for (const m of c.names) running.push(...(await lxcLs(c, m, true)).map((n) => `${m}: ${n}`));
      } finally {
        await c.stop();
        const stray = strayContainers(c.dir);
        killStrayContainers(c.dir);
        liveDirs.delete(c.dir);
        running = [...running, ...stray.map((s) => `after stop: ${s.lxcPath} ${s.name}`)];
      }
      assert.deepEqual(running, [], 'containers left running after the cluster was stopped');
    }
  } finally {
    for (const t of temps) if (t) await rm(t, { recursive: true, force: true });
  }
}
