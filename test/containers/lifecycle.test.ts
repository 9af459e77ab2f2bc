// A system container's whole life on a real two-member cluster, through the API and the `roost` CLI (asked
// through m01, run by m02): launch from the busybox image, info, exec in LXD's record-output shape, a clean
// stop within its timeout and a forced one, start, restart, `limits.memory`/`limits.cpu` in its cgroups, a
// custom volume as a disk device, delete (LXC's config and the root volume gone), and exec in a process
// instance (run in its root volume).

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { processAlive, waitFor, type TestCluster } from '../helpers/cluster.js';
import { assertError, syncMetadata } from '../helpers/envelope.js';
import {
  cgroupFile,
  containersPossible,
  execIn,
  execOk,
  importImage,
  lxcLs,
  lxcNameOf,
  lxcPath,
  requireContainers,
  roost,
  roostOk,
  teardown,
  timed,
  startWithImage,
  type BuiltImage,
} from './support.js';

let c: TestCluster | undefined;
let image: BuiltImage | undefined;
/** The LXC name of the container `ct` on m02. */
let lxcName = '';

/** An instance as `GET /1.0/instances/<n>?recursion=1` shows it. */
interface Instance {
  name: string;
  status: string;
  type: string;
  location: string;
  config: Record<string, string>;
  expanded_devices: Record<string, Record<string, string>>;
  state: { status: string; pid: number; processes: number };
}

async function show(name: string): Promise<Instance> {
  assert.ok(c);
  return syncMetadata(await c.raw('m01', 'GET', `/1.0/instances/${name}?recursion=1`)) as Instance;
}

const m01 = (): string => c?.memberDir('m01') ?? '';

describe('container lifecycle', () => {
  before(async () => {
    if (!containersPossible()) return; // each test skips (or fails under CI) through requireContainers
    ({ c, image } = await startWithImage(2));
    await importImage(c, 'm01', image.tarball, 'busybox');
    await c.client('m01').runAsync('POST', '/1.0/storage-pools/default/volumes/custom?target=m02', { name: 'data' });
    await writeFile(path.join(c.volumeDir('m02', 'data'), 'hello.txt'), 'written on the host\n');
  });
  after(async () => {
    await teardown(c, [image?.dir]);
  });

  it('roost launch starts a Running container with a root disk, limits and LXC running it', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    const { ms, value: out } = await timed(() =>
      roostOk(m01(), 'launch', 'busybox', 'ct', '--target', 'm02', '-c', 'limits.memory=64MiB', '-c', 'limits.cpu=1'),
    );
    t.diagnostic(`launch (copy image to m02, unpack, start): ${ms} ms`);
    assert.equal(out, 'Creating ct\nStarting ct\n');
    const ct = await show('ct');
    assert.equal(ct.status, 'Running');
    assert.equal(ct.type, 'container');
    assert.equal(ct.location, 'm02');
    assert.deepEqual(ct.expanded_devices.root, { type: 'disk', path: '/', pool: 'default' });
    assert.equal(ct.config['limits.memory'], '64MiB');
    assert.equal(ct.config['volatile.last_state.power'], 'RUNNING');
    assert.ok(processAlive(ct.state.pid), 'its init runs on this host');
    lxcName = lxcNameOf(await lxcLs(c, 'm02', true), 'm02', 'ct') ?? '';
    assert.ok(lxcName, 'lxc-ls on m02 shows it running');
    assert.deepEqual(await lxcLs(c, 'm01'), [], 'nothing in m01\'s lxcpath');
    const list = await roostOk(m01(), 'list', '--format', 'csv');
    assert.match(list, /^ct,RUNNING,,,CONTAINER,0,m02$/m);
  });

  it('roost info shows it running with processes', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    const info = await roostOk(m01(), 'info', 'ct');
    assert.match(info, /^Status: RUNNING$/m);
    assert.match(info, /^Type: container$/m);
    assert.match(info, /^Location: m02$/m);
    assert.match(info, /^PID: [1-9]\d*$/m);
    const processes = Number(/^ {2}Processes: (\d+)$/m.exec(info)?.[1]);
    assert.ok(processes > 0, info);
    const state = syncMetadata(await c.raw('m01', 'GET', '/1.0/instances/ct/state')) as { status: string; processes: number; pid: number };
    assert.equal(state.status, 'Running');
    assert.ok(state.processes > 0);
    assert.ok(state.pid > 1);
  });

  it('roost exec passes on stdout, stderr and the exit code; inside, the hostname is the instance name', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    const { ms, value: r } = await timed(() => roost(m01(), 'exec', 'ct', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3'));
    t.diagnostic(`exec round trip: ${ms} ms`);
    assert.deepEqual(r, { code: 3, stdout: 'out\n', stderr: 'err\n' });
    assert.equal((await roostOk(m01(), 'exec', 'ct', '--', 'hostname')).trim(), 'ct');
    // The API's record-output shape; the command runs in the container's rootfs, which is the root volume.
    const api = await execIn(c, 'm01', 'ct', ['sh', '-c', 'echo inside > /root/from-exec; cat /proc/1/comm; id -u']);
    assert.deepEqual(api, { code: 0, stdout: 'init\n0\n', stderr: '' });
    assert.equal(await readFile(path.join(c.instanceDir('m02', 'ct'), 'root', 'from-exec'), 'utf8'), 'inside\n');
    const cwd = await execIn(c, 'm02', 'ct', ['pwd'], '/etc');
    assert.equal(cwd.stdout, '/etc\n');
    // A booted system's umask inside (init's and exec's), not the one that keeps the daemon's own files private.
    const umask = await execIn(c, 'm01', 'ct', ['sh', '-c', 'umask; grep Umask /proc/1/status']);
    assert.deepEqual(umask, { code: 0, stdout: '0022\nUmask:\t0022\n', stderr: '' });
    // Websocket exec is covered by exec-files.test.ts; running as another user is still refused.
    assertError(
      await c.raw('m01', 'POST', '/1.0/instances/ct/exec', { json: { command: ['true'], 'wait-for-websocket': true, user: 1000 } }),
      400,
      /another user/,
    );
  });

  it('limits.memory=64MiB and limits.cpu=1 are in the container\'s cgroups', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    const pid = (await show('ct')).state.pid;
    const memory = await cgroupFile(pid, 'memory', 'memory.limit_in_bytes', 'memory.max');
    assert.equal((await readFile(memory.file, 'utf8')).trim(), String(64 * 1024 * 1024), memory.file);
    assert.match(memory.file, new RegExp(lxcName.replace(/[.]/g, '\\.')), 'the container\'s own cgroup');
    const cpu = await cgroupFile(pid, 'cpu', 'cpu.cfs_quota_us', 'cpu.max');
    const quota = (await readFile(cpu.file, 'utf8')).trim();
    if (cpu.version === 1) {
      assert.equal(quota, '100000', cpu.file);
      assert.equal((await readFile(path.join(path.dirname(cpu.file), 'cpu.cfs_period_us'), 'utf8')).trim(), '100000');
    } else {
      assert.equal(quota, '100000 100000', cpu.file);
    }
    t.diagnostic(`cgroup v${memory.version} memory, v${cpu.version} cpu: ${memory.file}, ${cpu.file}`);
  });

  it('roost stop is a clean shutdown within its timeout; start and restart bring it back', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    // A service that records the SIGTERM that init's clean shutdown sends to every process.
    const service = 'trap "echo term > /root/got-term; exit 0" TERM; while true; do sleep 1; done';
    await execOk(c, 'm01', 'ct', ['sh', '-c', `rm -f /root/got-term; setsid sh -c '${service}' </dev/null >/dev/null 2>&1 &`]);
    const gotTerm = path.join(c.instanceDir('m02', 'ct'), 'root', 'got-term');
    const before = await show('ct');
    const stop = await timed(() => roostOk(m01(), 'stop', 'ct', '--timeout', '20'));
    t.diagnostic(`clean stop: ${stop.ms} ms`);
    assert.ok(stop.ms < 20_000, `stopped within its timeout (${stop.ms} ms)`);
    assert.equal(await readFile(gotTerm, 'utf8'), 'term\n', 'the service was told to stop: a clean shutdown, not a kill');
    const stopped = await show('ct');
    assert.equal(stopped.status, 'Stopped');
    assert.equal(stopped.state.pid, 0);
    assert.equal(stopped.config['volatile.last_state.power'], 'STOPPED');
    assert.ok(!processAlive(before.state.pid), 'its init is gone');
    assert.deepEqual(await lxcLs(c, 'm02', true), []);
    assert.deepEqual(await lxcLs(c, 'm02'), [lxcName], 'LXC still knows it, stopped');

    const exec = await c.raw('m01', 'POST', '/1.0/instances/ct/exec', { json: { command: ['true'], 'record-output': true } });
    assertError(exec, 400, 'Instance is not running');

    const start = await timed(() => roostOk(m01(), 'start', 'ct'));
    t.diagnostic(`start: ${start.ms} ms`);
    const started = await show('ct');
    assert.equal(started.status, 'Running');
    assert.ok(processAlive(started.state.pid));
    assert.equal(await readFile(path.join(c.instanceDir('m02', 'ct'), 'root', 'from-exec'), 'utf8'), 'inside\n', 'files survive');

    const restart = await timed(() => roostOk(m01(), 'restart', 'ct'));
    t.diagnostic(`restart: ${restart.ms} ms`);
    const restarted = await show('ct');
    assert.equal(restarted.status, 'Running');
    assert.notEqual(restarted.state.pid, started.state.pid, 'a new init');
    assert.ok(!processAlive(started.state.pid));

    await execOk(c, 'm01', 'ct', ['sh', '-c', `rm -f /root/got-term; setsid sh -c '${service}' </dev/null >/dev/null 2>&1 &`]);
    const forced = await timed(() => roostOk(m01(), 'stop', 'ct', '--force'));
    t.diagnostic(`forced stop: ${forced.ms} ms`);
    assert.equal((await show('ct')).status, 'Stopped');
    assert.ok(!existsSync(gotTerm), 'a forced stop kills without asking');
    await roostOk(m01(), 'start', 'ct');
  });

  it('a custom volume attached as a disk device appears inside the container', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    await c.client('m01').request('PATCH', '/1.0/instances/ct', {
      devices: { data: { type: 'disk', pool: 'default', source: 'data', path: '/mnt/data' } },
    });
    // Disks are mounted when the container starts (there is no hot-plug).
    await roostOk(m01(), 'restart', 'ct');
    assert.equal(await execOk(c, 'm01', 'ct', ['cat', '/mnt/data/hello.txt']), 'written on the host\n');
    await execOk(c, 'm01', 'ct', ['sh', '-c', 'echo from the container > /mnt/data/back.txt']);
    assert.equal(await readFile(path.join(c.volumeDir('m02', 'data'), 'back.txt'), 'utf8'), 'from the container\n');
    assert.ok(!existsSync(path.join(c.instanceDir('m02', 'ct'), 'mnt', 'data', 'back.txt')), 'written to the volume, not the rootfs');
  });

  it('roost delete refuses a running container; --force deletes it with its LXC config and root volume', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    const running = await roost(m01(), 'delete', 'ct');
    assert.equal(running.code, 1);
    assert.equal(running.stderr, 'Error: The instance is currently running, stop it first or use --force\n');
    const config = path.join(lxcPath(c, 'm02'), lxcName);
    assert.ok(existsSync(path.join(config, 'config')));
    const { ms } = await timed(() => roostOk(m01(), 'delete', 'ct', '--force'));
    t.diagnostic(`delete --force (kill, delete): ${ms} ms`);
    assertError(await c.raw('m01', 'GET', '/1.0/instances/ct'), 404, 'Instance not found');
    assert.ok(!existsSync(config), 'the LXC config directory is gone');
    assert.deepEqual(await lxcLs(c, 'm02'), [], 'lxc-ls no longer lists it');
    assert.ok(!existsSync(c.instanceDir('m02', 'ct')), 'the root volume is gone');
    assert.ok(!existsSync(path.join(c.memberDir('m02'), 'instances', 'default_ct')), 'its runtime directory is gone');
    assert.equal(await readFile(path.join(c.volumeDir('m02', 'data'), 'back.txt'), 'utf8'), 'from the container\n', 'the custom volume stays');
  });

  it('exec in a process instance runs in its root volume', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    await c.launch('proc', { target: 'm01' });
    await writeFile(path.join(c.instanceDir('m01', 'proc'), 'marker'), 'in the root volume\n');
    const r = await roost(c.memberDir('m02'), 'exec', 'proc', '--', 'sh', '-c', 'pwd; cat marker; echo oops >&2; exit 7');
    assert.deepEqual(r, { code: 7, stdout: `${c.instanceDir('m01', 'proc')}\nin the root volume\n`, stderr: 'oops\n' });
    await waitFor('the instance still runs', async () => (await show('proc')).status === 'Running', 5_000);
  });
});
