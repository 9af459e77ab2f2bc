// The lxc driver: the shared driver suite on busybox system containers, then what only a container does
// (its config, cgroup limits, bind-mounted custom volumes, host-global names, outliving its daemon).
// Needs root, Debian's lxc and busybox-static: run by hand without them the tests skip, under CI they fail.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tar from 'tar';
import { DriverError } from '../../src/instances/driver.js';
import type { InstanceSpec } from '../../src/instances/driver.js';
import { LxcDriver, findCgroupDir } from '../../src/instances/drivers/lxc.js';
import { DirPool } from '../../src/storage/drivers/dir.js';
import { hasCommand, isRoot, requireCommand } from '../helpers/prereq.js';
import { driverSuite, processGone } from './driver-suite.js';
import type { DriverFixture } from './driver-suite.js';
import { firstLine, waitFor } from './wait.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const buildScript = path.join(repoRoot, 'scripts/build-busybox-image.sh');
const startAndHang = fileURLToPath(new URL('./fixtures/lxc-start-and-hang.ts', import.meta.url));
const attachPath = 'PATH=/usr/sbin:/usr/bin:/sbin:/bin';

const lxcReady = hasCommand('lxc-start') && hasCommand('busybox') && isRoot();

/** Skips the test (by hand) or fails it (under CI) unless LXC containers can run here. */
function requireLxc(t: TestContext): boolean {
  if (!requireCommand(t, 'lxc-start', 'apt-get install -y lxc')) return false;
  if (!requireCommand(t, 'busybox', 'apt-get install -y busybox-static')) return false;
  if (isRoot()) return true;
  const reason = 'LXC system containers need root';
  if (process.env.CI === 'true') throw new Error(`missing prerequisite under CI: ${reason}`);
  t.skip(reason);
  return false;
}

// Container names are host-global (LXC cgroups), so every member name of this run carries its pid: two test
// runs on one host, from two work trees, never touch each other's containers.
const runId = `t${process.pid}`;
let workRootPromise: Promise<string> | null = null;
let imagePromise: Promise<string> | null = null;
/** Every container a test may have started, as [lxcPath, name], for the last-resort cleanup. */
const containers = new Map<string, [string, string]>();

function workRoot(): Promise<string> {
  workRootPromise ??= fsp.mkdtemp(path.join(os.tmpdir(), 'roost-lxc-'));
  return workRootPromise;
}

/** The busybox image, built once per test file with the shipped script. */
function busyboxImage(): Promise<string> {
  imagePromise ??= workRoot().then(async (root) => {
    const file = path.join(root, 'busybox.tar.gz');
    await run(buildScript, [file], 60_000);
    return file;
  });
  return imagePromise;
}

function killContainersSync(): void {
  for (const [lxcPath, name] of containers.values()) {
    spawnSync('lxc-stop', ['-P', lxcPath, '-n', name, '-k'], { stdio: 'ignore', timeout: 10_000 });
  }
}
// Containers outlive their starter by design, so a test run that dies early must still not leave them.
process.on('exit', killContainersSync);

after(async () => {
  killContainersSync();
  containers.clear();
  if (workRootPromise) await fsp.rm(await workRootPromise, { recursive: true, force: true });
});

/** An lxc-driver fixture: one member (its own lxcpath) and a dir pool in a temporary directory. */
interface LxcFixture extends DriverFixture {
  driver: LxcDriver;
  pool: DirPool;
  lxcPath: string;
  memberName: string;
}

/** The fixture of member `member`; fixtures of one member share its lxcpath, as one daemon's drivers would. */
async function lxcFixture(member = `${runId}-suite`): Promise<LxcFixture> {
  const root = await workRoot();
  const dir = await fsp.mkdtemp(path.join(root, 'fx-'));
  const pool = new DirPool('default', path.join(dir, 'pool'));
  await pool.init();
  const lxcPath = path.join(root, `lxc-${member}`);
  const driver = new LxcDriver({ lxcPath, memberName: member });
  const specs: InstanceSpec[] = [];
  return {
    driver,
    workload: true,
    pool,
    lxcPath,
    memberName: member,
    async makeSpec(name, config = {}) {
      const ref = { type: 'container' as const, project: 'default', name };
      await pool.createVolume(ref);
      const rootPath = pool.volumePath(ref);
      await unpackRootfs(await busyboxImage(), rootPath);
      await installWorkload(rootPath, config['user.test.ignore_term'] === 'true');
      const spec: InstanceSpec = {
        name,
        project: 'default',
        type: 'container',
        config: { ...config },
        devices: {},
        rootPath,
        runtimeDir: path.join(dir, 'run', name),
        mounts: [],
      };
      specs.push(spec);
      containers.set(`${lxcPath}\0${driver.lxcName(spec)}`, [lxcPath, driver.lxcName(spec)]);
      return spec;
    },
    async cleanup() {
      for (const spec of specs) {
        const name = driver.lxcName(spec);
        await driver.stop(spec, { timeoutSeconds: 0, force: true }).catch(() => killContainerSync(lxcPath, name));
        await driver.delete(spec).catch(() => undefined);
        await fsp.rm(path.join(lxcPath, name), { recursive: true, force: true });
        containers.delete(`${lxcPath}\0${name}`);
      }
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

function killContainerSync(lxcPath: string, name: string): void {
  spawnSync('lxc-stop', ['-P', lxcPath, '-n', name, '-k'], { stdio: 'ignore', timeout: 10_000 });
}

/** Unpacks the image's `rootfs/` into a root volume: the root volume is the container's rootfs. */
async function unpackRootfs(image: string, rootPath: string): Promise<void> {
  await tar.x({ file: image, cwd: rootPath, strip: 1, filter: (p) => p.startsWith('rootfs/') });
  // node-tar creates directories through the process umask, which drops /tmp's world-writable bits.
  await fsp.chmod(path.join(rootPath, 'tmp'), 0o1777);
}

/**
 * The suite's workload, appending to /data.txt (the root volume's data.txt): run by busybox init, which halts
 * cleanly on LXC's halt signal; or, to ignore that signal, as PID 1 itself: the kernel delivers to a
 * namespace's init only the signals it has handlers for, and a shell loop has none.
 */
async function installWorkload(rootPath: string, ignoreHalt: boolean): Promise<void> {
  const loop = 'while true; do date >> /data.txt; sleep 0.2; done';
  if (ignoreHalt) {
    await fsp.rm(path.join(rootPath, 'sbin/init'));
    await fsp.writeFile(path.join(rootPath, 'sbin/init'), `#!/bin/sh\n${loop}\n`, { mode: 0o755 });
    return;
  }
  await fsp.writeFile(path.join(rootPath, 'etc/init.d/workload'), `#!/bin/sh\n${loop}\n`, { mode: 0o755 });
  await fsp.appendFile(path.join(rootPath, 'etc/inittab'), '::respawn:/etc/init.d/workload\n');
}

/** Runs a command without a shell; rejects with its stderr if it fails. */
function run(command: string, args: string[], timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Runs a command inside a running container. */
function attach(fx: LxcFixture, spec: InstanceSpec, ...command: string[]): Promise<string> {
  return run('lxc-attach', ['-P', fx.lxcPath, '-n', fx.driver.lxcName(spec), '--clear-env', '-v', attachPath, '--', ...command]);
}

async function dataSize(spec: InstanceSpec): Promise<number> {
  return fsp.stat(path.join(spec.rootPath, 'data.txt')).then(
    (s) => s.size,
    () => 0,
  );
}

async function startWorking(fx: LxcFixture, spec: InstanceSpec): Promise<void> {
  const before = await dataSize(spec);
  await fx.driver.start(spec);
  await waitFor(`${spec.name} writes data.txt`, async () => (await dataSize(spec)) > before);
}

/** A cgroup file of the container's init, whichever cgroup version carries the controller on this host. */
async function cgroupFile(pid: number, controller: string, v1File: string, v2File: string): Promise<string> {
  const found = await findCgroupDir(pid, controller);
  assert.ok(found, `process ${pid} has a ${controller} cgroup`);
  return (await fsp.readFile(path.join(found.dir, found.version === 1 ? v1File : v2File), 'utf8')).trim();
}

/** Where the host's cgroup hierarchies are mounted. */
async function cgroupMountPoints(): Promise<string[]> {
  return (await fsp.readFile('/proc/self/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup' || f[2] === 'cgroup2')
    .map((f) => f[1] ?? '')
    .filter((p) => p !== '');
}


if (lxcReady) {
  driverSuite('lxc', () => lxcFixture());
} else {
  it('instance driver: lxc', (t) => {
    requireLxc(t);
  });
}

describe('lxc driver', () => {
  let fx: LxcFixture | undefined;
  const fixture = (): LxcFixture => {
    assert.ok(fx, 'fixture');
    return fx;
  };
  before(async () => {
    if (lxcReady) fx = await lxcFixture(`${runId}-own`);
  });
  after(async () => {
    await fx?.cleanup();
  });
  const stopNow = { timeoutSeconds: 0, force: true };

  it('writes the container’s LXC config from the spec', async (t) => {
    if (!requireLxc(t)) return;
    const f = fixture();
    const spec = await f.makeSpec('configured', { 'limits.cpu': '2', 'limits.memory': '256MiB' });
    const volume = { type: 'custom' as const, project: 'default', name: 'config-vol' };
    await f.pool.createVolume(volume);
    spec.mounts = [{ device: 'data', source: f.pool.volumePath(volume), path: '/srv/my data' }];
    await f.driver.create(spec);
    const config = await fsp.readFile(path.join(f.lxcPath, f.driver.lxcName(spec), 'config'), 'utf8');
    t.diagnostic(`generated config:\n${config}`);
    const lines = config.split('\n');
    assert.ok(lines.includes('lxc.uts.name = configured'));
    assert.ok(lines.includes(`lxc.rootfs.path = dir:${spec.rootPath}`));
    assert.ok(lines.includes('lxc.net.0.type = empty'));
    assert.ok(lines.includes('lxc.init.cmd = /sbin/init'));
    assert.ok(lines.includes(`lxc.mount.entry = ${f.pool.volumePath(volume)} srv/my\\040data none bind 0 0`));
    assert.ok(lines.some((l) => /^lxc\.cgroup2?\.memory\.(max|limit_in_bytes) = 268435456$/.test(l)));
    const apparmor = await fsp.readFile('/sys/module/apparmor/parameters/enabled', 'utf8').catch(() => 'N');
    assert.equal(lines.includes('lxc.apparmor.profile = unconfined'), apparmor.trim() !== 'Y');
    assert.equal((await f.driver.state(spec)).status, 'Stopped');
  });

  it('applies limits.cpu and limits.memory to the container’s cgroup', async (t) => {
    if (!requireLxc(t)) return;
    const f = fixture();
    const spec = await f.makeSpec('limited', { 'limits.cpu': '1', 'limits.memory': '64MiB' });
    await f.driver.create(spec);
    await startWorking(f, spec);
    const st = await f.driver.state(spec);
    assert.equal(await cgroupFile(st.pid, 'memory', 'memory.limit_in_bytes', 'memory.max'), String(64 * 2 ** 20));
    const cpu = await findCgroupDir(st.pid, 'cpu');
    assert.ok(cpu);
    if (cpu.version === 1) {
      assert.equal((await fsp.readFile(path.join(cpu.dir, 'cpu.cfs_quota_us'), 'utf8')).trim(), '100000');
      assert.equal((await fsp.readFile(path.join(cpu.dir, 'cpu.cfs_period_us'), 'utf8')).trim(), '100000');
    } else {
      assert.equal((await fsp.readFile(path.join(cpu.dir, 'cpu.max'), 'utf8')).trim(), '100000 100000');
    }
    // The cgroup is the container's own, not the daemon's, and holds init and the workload.
    assert.notEqual(cpu.dir, (await findCgroupDir(process.pid, 'cpu'))?.dir);
    assert.ok(st.processes >= 2, `processes ${st.processes}`);
    assert.ok(st.memoryBytes > 0 && st.memoryBytes <= 64 * 2 ** 20, `memory ${st.memoryBytes}`);
    await f.driver.stop(spec, stopNow);
  });

  it('binds attached custom volumes at their paths inside the container', async (t) => {
    if (!requireLxc(t)) return;
    const f = fixture();
    const shared = { type: 'custom' as const, project: 'default', name: 'shared' };
    const readonly = { type: 'custom' as const, project: 'default', name: 'frozen' };
    for (const ref of [shared, readonly]) {
      await f.pool.createVolume(ref);
      await fsp.writeFile(path.join(f.pool.volumePath(ref), 'hello.txt'), ref.name);
    }
    const spec = await f.makeSpec('mounted');
    spec.devices = { data: { type: 'disk', pool: 'default', source: 'shared', path: '/mnt/data' }, ro: { readonly: 'true' } };
    spec.mounts = [
      { device: 'data', source: f.pool.volumePath(shared), path: '/mnt/data' },
      { device: 'ro', source: f.pool.volumePath(readonly), path: 'opt/read only' },
    ];
    await f.driver.create(spec);
    await startWorking(f, spec);
    assert.equal((await attach(f, spec, 'hostname')).trim(), 'mounted', 'the instance name is the hostname');
    assert.equal(await attach(f, spec, 'cat', '/mnt/data/hello.txt'), 'shared');
    await attach(f, spec, 'sh', '-c', 'echo inside > /mnt/data/from-container.txt');
    assert.equal(await fsp.readFile(path.join(f.pool.volumePath(shared), 'from-container.txt'), 'utf8'), 'inside\n');
    assert.equal(await attach(f, spec, 'cat', '/opt/read only/hello.txt'), 'frozen');
    await assert.rejects(attach(f, spec, 'sh', '-c', 'echo no > "/opt/read only/written.txt"'), /Read-only file system/);
    // A bind mount, not a link: the root volume only holds the empty mount point.
    assert.ok((await fsp.lstat(path.join(spec.rootPath, 'mnt/data'))).isDirectory());
    assert.deepEqual(await fsp.readdir(path.join(spec.rootPath, 'opt/read only')), []);
    await f.driver.stop(spec, stopNow);
  });

  it('keeps the host’s disks out of reach of the (privileged) container', async (t) => {
    if (!requireLxc(t)) return;
    const disk = /^\s*(\d+)\s+(\d+)\s+\d+\s+\S+$/m.exec(await fsp.readFile('/proc/partitions', 'utf8'));
    if (!disk) {
      t.skip('no block device on this host');
      return;
    }
    const f = fixture();
    const spec = await f.makeSpec('nodisks');
    await f.driver.create(spec);
    await startWorking(f, spec);
    // mknod is allowed (as in LXC's common.conf); opening the node is what the device cgroup refuses.
    await attach(f, spec, 'mknod', '/tmp/disk', 'b', disk[1] ?? '', disk[2] ?? '');
    await assert.rejects(attach(f, spec, 'dd', 'if=/tmp/disk', 'of=/dev/null', 'bs=512', 'count=1'), /Operation not permitted/);
    await f.driver.stop(spec, stopNow);
  });

  it('refuses a mount path that leaves the rootfs, by name or through a symlink the workload planted', async (t) => {
    if (!requireLxc(t)) return;
    const f = fixture();
    const outside = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-outside-'));
    const volume = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-volume-'));
    try {
      const spec = await f.makeSpec('escaping');
      spec.mounts = [{ device: 'data', source: volume, path: '/../escape' }];
      await assert.rejects(f.driver.create(spec), (err: unknown) => err instanceof DriverError && /invalid path/.test(err.message));
      await fsp.symlink(outside, path.join(spec.rootPath, 'escape'));
      spec.mounts = [{ device: 'data', source: volume, path: '/escape/data' }];
      await f.driver.create(spec);
      await assert.rejects(f.driver.start(spec), (err: unknown) => err instanceof DriverError && /escape is a symlink/.test(err.message));
      assert.deepEqual(await fsp.readdir(outside), [], 'nothing created outside the rootfs');
      assert.equal((await f.driver.state(spec)).status, 'Stopped');
    } finally {
      await fsp.rm(outside, { recursive: true, force: true });
      await fsp.rm(volume, { recursive: true, force: true });
    }
  });

  it('gives two members’ instances of one name distinct containers', async (t) => {
    if (!requireLxc(t)) return;
    const a = await lxcFixture(`${runId}-a`);
    const b = await lxcFixture(`${runId}-b`);
    try {
      const specA = await a.makeSpec('same');
      const specB = await b.makeSpec('same');
      assert.notEqual(a.driver.lxcName(specA), b.driver.lxcName(specB));
      for (const [fx, spec] of [[a, specA], [b, specB]] as const) {
        await fx.driver.create(spec);
        await startWorking(fx, spec);
      }
      const stA = await a.driver.state(specA);
      const stB = await b.driver.state(specB);
      assert.equal(stA.status, 'Running');
      assert.equal(stB.status, 'Running');
      assert.notEqual(stA.pid, stB.pid);
      assert.notEqual((await findCgroupDir(stA.pid, 'memory'))?.dir, (await findCgroupDir(stB.pid, 'memory'))?.dir);
      await a.driver.stop(specA, { timeoutSeconds: 10, force: false });
      assert.equal((await a.driver.state(specA)).status, 'Stopped');
      const afterStop = await b.driver.state(specB);
      assert.equal(afterStop.status, 'Running', 'the other member’s container is untouched');
      assert.equal(afterStop.pid, stB.pid);
      await b.driver.stop(specB, stopNow);
    } finally {
      await a.cleanup();
      await b.cleanup();
    }
  });

  it('a container keeps running when the daemon that started it is SIGKILLed, and a fresh driver re-adopts it', async (t) => {
    if (!requireLxc(t)) return;
    const f = fixture();
    const spec = await f.makeSpec('survivor');
    const starter = spawn(process.execPath, ['--import', 'tsx', startAndHang, JSON.stringify(spec), f.lxcPath, f.memberName], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const { pid } = JSON.parse(await firstLine(starter, 30_000)) as { pid: number };
      assert.ok(pid > 0);
      const exited = once(starter, 'exit');
      starter.kill('SIGKILL');
      await exited;

      const adopter = new LxcDriver({ lxcPath: f.lxcPath, memberName: f.memberName });
      const st = await adopter.state(spec);
      assert.equal(st.status, 'Running');
      assert.equal(st.pid, pid);
      const size = await dataSize(spec);
      await waitFor('the orphaned container keeps writing', async () => (await dataSize(spec)) > size);
      await adopter.stop(spec, { timeoutSeconds: 10, force: false });
      assert.equal((await adopter.state(spec)).status, 'Stopped');
      assert.ok(await processGone(pid));
    } finally {
      if (starter.exitCode === null && starter.signalCode === null) starter.kill('SIGKILL');
    }
  });

  it('a start that fails reports the end of LXC’s log and leaves nothing running', async (t) => {
    if (!requireLxc(t)) return;
    const f = fixture();
    const spec = await f.makeSpec('noinit');
    await fsp.rm(path.join(spec.rootPath, 'sbin/init'));
    await f.driver.create(spec);
    await assert.rejects(f.driver.start(spec), (err: unknown) => {
      assert.ok(err instanceof DriverError, String(err));
      assert.match(err.message, /Cannot start instance "noinit"/);
      assert.match(err.message, /LXC log:/);
      assert.match(err.message, /sbin\/init/);
      return true;
    });
    assert.equal((await f.driver.state(spec)).status, 'Stopped');
    // LXC 5 cannot remove its monitor's cgroup when a daemonised start fails; the driver does.
    const name = `lxc.monitor.${f.driver.lxcName(spec)}`;
    for (const mount of await cgroupMountPoints()) {
      assert.deepEqual((await fsp.readdir(mount)).filter((e) => e.startsWith(name)), [], `${mount} holds no ${name}`);
    }
  });

  it('a missing root volume is reported before LXC runs', async (t) => {
    if (!requireLxc(t)) return;
    const f = fixture();
    const spec = await f.makeSpec('novolume');
    await fsp.rm(spec.rootPath, { recursive: true });
    await assert.rejects(f.driver.start(spec), /Root volume of instance "novolume" is missing/);
  });

  it('refuses to delete a running container; delete removes its LXC directory and keeps the rootfs', async (t) => {
    if (!requireLxc(t)) return;
    const f = fixture();
    const spec = await f.makeSpec('busy');
    await f.driver.create(spec);
    await startWorking(f, spec);
    await assert.rejects(f.driver.delete(spec), DriverError);
    assert.equal((await f.driver.state(spec)).status, 'Running');
    await f.driver.stop(spec, stopNow);
    await f.driver.delete(spec);
    await assert.rejects(fsp.access(path.join(f.lxcPath, f.driver.lxcName(spec))));
    await fsp.access(path.join(spec.rootPath, 'sbin/init'));
    assert.equal((await f.driver.state(spec)).status, 'Stopped');
  });

  it('reports start, graceful stop and forced stop times (no assertion on them)', async (t) => {
    if (!requireLxc(t)) return;
    const f = fixture();
    const spec = await f.makeSpec('timed');
    await f.driver.create(spec);
    const times: Record<string, number[]> = { start: [], 'graceful stop': [], 'forced stop': [] };
    const timed = async (what: string, fn: () => Promise<void>): Promise<void> => {
      const t0 = performance.now();
      await fn();
      times[what]?.push(performance.now() - t0);
    };
    for (let i = 0; i < 3; i++) {
      await timed('start', () => f.driver.start(spec));
      await waitFor('the workload writes', async () => (await dataSize(spec)) > 0);
      await timed('graceful stop', () => f.driver.stop(spec, { timeoutSeconds: 10, force: false }));
      await f.driver.start(spec);
      await timed('forced stop', () => f.driver.stop(spec, stopNow));
    }
    for (const [what, ms] of Object.entries(times)) {
      t.diagnostic(`${what}: ${ms.map((m) => `${(m / 1000).toFixed(3)} s`).join(', ')}`);
    }
  });
});
