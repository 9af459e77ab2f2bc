// The process driver: the shared driver suite, then what only a host-process instance does (environment,
// working directory, mounts as symlinks, surviving its daemon, telling a reused pid apart).

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DriverError } from '../../src/instances/driver.js';
import type { InstanceSpec } from '../../src/instances/driver.js';
import { ProcessDriver } from '../../src/instances/drivers/process.js';
import { DirPool } from '../../src/storage/drivers/dir.js';
import { hasCommand } from '../helpers/prereq.js';
import { driverSuite, processGone } from './driver-suite.js';
import type { DriverFixture } from './driver-suite.js';
import { firstLine, waitFor } from './wait.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const startAndHang = fileURLToPath(new URL('./fixtures/start-and-hang.ts', import.meta.url));

/** A process-driver fixture whose root volumes live in a real dir pool in a temporary directory. */
interface ProcessFixture extends DriverFixture {
  driver: ProcessDriver;
  pool: DirPool;
}

async function processFixture(): Promise<ProcessFixture> {
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-process-'));
  const pool = new DirPool('default', path.join(tmp, 'pool'));
  await pool.init();
  const driver = new ProcessDriver({ startCheckMs: 100 });
  const specs: InstanceSpec[] = [];
  // Instances outlive their starter by design, so a test run that dies early must still not leave them.
  const killOnExit = (): void => {
    for (const spec of specs) killFromPidFileSync(spec);
  };
  process.on('exit', killOnExit);
  return {
    driver,
    workload: true,
    pool,
    async makeSpec(name, config = {}) {
      const ref = { type: 'container' as const, project: 'default', name };
      await pool.createVolume(ref);
      const trap = config['user.test.ignore_term'] === 'true' ? 'trap "" TERM' : 'trap "exit 0" TERM';
      const spec: InstanceSpec = {
        name,
        project: 'default',
        type: 'process',
        config: { 'process.command': `${trap}; while true; do date >> data.txt; sleep 0.2; done`, ...config },
        devices: {},
        rootPath: pool.volumePath(ref),
        runtimeDir: path.join(tmp, 'run', name),
        mounts: [],
      };
      specs.push(spec);
      return spec;
    },
    async cleanup() {
      for (const spec of specs) {
        await driver.stop(spec, { timeoutSeconds: 0, force: true }).catch(() => killFromPidFileSync(spec));
      }
      process.off('exit', killOnExit);
      await fsp.rm(tmp, { recursive: true, force: true });
    },
  };
}

/** Last resort for cleanup: SIGKILL the instance's process group if its pid file still names a live one. */
function killFromPidFileSync(spec: InstanceSpec): void {
  try {
    const { pid } = JSON.parse(readFileSync(path.join(spec.runtimeDir, 'pid.json'), 'utf8')) as { pid: number };
    if (Number.isInteger(pid) && pid > 1) process.kill(-pid, 'SIGKILL');
  } catch {
    // No pid file, or the group is already gone.
  }
}

async function readText(file: string): Promise<string | null> {
  return fsp.readFile(file, 'utf8').catch(() => null);
}

/** Waits until the workload has written `file` (written whole: the commands below write then rename). */
async function waitForFile(file: string): Promise<string> {
  let text: string | null = null;
  await waitFor(`${path.basename(file)} is written`, async () => (text = await readText(file)) !== null);
  return text ?? '';
}


driverSuite('process', processFixture);

describe('process driver', () => {
  let fx: ProcessFixture;
  before(async () => {
    fx = await processFixture();
  });
  after(async () => {
    await fx?.cleanup();
  });
  const stopNow = { timeoutSeconds: 0, force: true };

  it('passes environment.* config to the process, and nothing of the daemon’s environment', async () => {
    process.env.ROOST_LEAK_CHECK = 'leaked';
    try {
      const spec = await fx.makeSpec('env', {
        'process.command': 'env > env.tmp && mv env.tmp env.txt; exec sleep 60',
        'environment.GREETING': 'hello world',
        'environment.EMPTY': '',
      });
      await fx.driver.create(spec);
      await fx.driver.start(spec);
      const lines = (await waitForFile(path.join(spec.rootPath, 'env.txt'))).split('\n');
      assert.ok(lines.includes('GREETING=hello world'), lines.join('\n'));
      assert.ok(lines.includes('EMPTY='));
      assert.ok(lines.includes(`HOME=${spec.rootPath}`));
      assert.ok(lines.includes('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'));
      assert.ok(!lines.some((l) => l.startsWith('ROOST_LEAK_CHECK=')), 'daemon environment leaked');
      await fx.driver.stop(spec, stopNow);
    } finally {
      delete process.env.ROOST_LEAK_CHECK;
    }
  });

  it('runs the command in the root volume', async () => {
    const spec = await fx.makeSpec('cwd', { 'process.command': 'pwd -P > cwd.tmp && mv cwd.tmp cwd.txt; exec sleep 60' });
    await fx.driver.create(spec);
    await fx.driver.start(spec);
    const cwd = (await waitForFile(path.join(spec.rootPath, 'cwd.txt'))).trim();
    assert.equal(cwd, await fsp.realpath(spec.rootPath));
    await fx.driver.stop(spec, stopNow);
  });

  it('shows an attached custom volume at its path in the root volume', async () => {
    const first = { type: 'custom' as const, project: 'default', name: 'shared' };
    const second = { type: 'custom' as const, project: 'default', name: 'other' };
    for (const [ref, text] of [[first, 'first'], [second, 'second']] as const) {
      await fx.pool.createVolume(ref);
      await fsp.writeFile(path.join(fx.pool.volumePath(ref), 'hello.txt'), text);
    }
    const spec = await fx.makeSpec('mounted', {
      'process.command': 'cat mnt/data/hello.txt > seen.tmp && mv seen.tmp seen.txt; exec sleep 60',
    });
    spec.mounts = [{ device: 'data', source: fx.pool.volumePath(first), path: '/mnt/data' }];
    await fx.driver.create(spec);
    await fx.driver.start(spec);
    assert.equal(await waitForFile(path.join(spec.rootPath, 'seen.txt')), 'first');
    assert.equal(await fsp.readlink(path.join(spec.rootPath, 'mnt/data')), fx.pool.volumePath(first));
    await fx.driver.stop(spec, stopNow);

    // The device now points elsewhere: the old link is stale and is replaced.
    await fsp.rm(path.join(spec.rootPath, 'seen.txt'));
    spec.mounts = [{ device: 'data', source: fx.pool.volumePath(second), path: 'mnt/data' }];
    await fx.driver.start(spec);
    assert.equal(await waitForFile(path.join(spec.rootPath, 'seen.txt')), 'second');
    await fx.driver.stop(spec, stopNow);
  });

  it('refuses a mount where the workload has a real file or a symlink in the way', async () => {
    const outside = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-outside-'));
    try {
      const spec = await fx.makeSpec('blocked');
      await fx.driver.create(spec);
      await fsp.mkdir(path.join(spec.rootPath, 'mnt/data'), { recursive: true });
      await fsp.symlink(outside, path.join(spec.rootPath, 'escape'));
      spec.mounts = [{ device: 'data', source: outside, path: '/mnt/data' }];
      await assert.rejects(fx.driver.start(spec), (err: unknown) => err instanceof DriverError && /in the way/.test(err.message));
      spec.mounts = [{ device: 'data', source: outside, path: '/escape/data' }];
      await assert.rejects(fx.driver.start(spec), DriverError);
      spec.mounts = [{ device: 'data', source: outside, path: '/../data' }];
      await assert.rejects(fx.driver.start(spec), DriverError);
      assert.deepEqual(await fsp.readdir(outside), [], 'nothing created outside the root volume');
      assert.equal((await fx.driver.state(spec)).status, 'Stopped');
    } finally {
      await fsp.rm(outside, { recursive: true, force: true });
    }
  });

  it('refuses to start without process.command', async () => {
    const spec = await fx.makeSpec('nocommand', { 'process.command': '  ' });
    await fx.driver.create(spec);
    await assert.rejects(fx.driver.start(spec), { name: 'DriverError', message: 'Instance has no process.command' });
  });

  it('reports a command that dies at once with its output, and leaves nothing running', async () => {
    const spec = await fx.makeSpec('crashes', {
      'process.command': 'sleep 60 & echo $! > bg.pid; echo "frobnicate: not found" >&2; exit 3',
    });
    await fx.driver.create(spec);
    await assert.rejects(
      fx.driver.start(spec),
      (err: unknown) => err instanceof DriverError && /frobnicate: not found/.test(err.message) && /exit status 3/.test(err.message),
    );
    assert.equal((await fx.driver.state(spec)).status, 'Stopped');
    const straggler = Number(await readText(path.join(spec.rootPath, 'bg.pid')));
    assert.ok(straggler > 0);
    assert.ok(await processGone(straggler), `background process ${straggler} was killed`);
  });

  it('when the main process dies, the rest of its session is killed and the instance reads as stopped', async () => {
    const spec = await fx.makeSpec('orphans', {
      'process.command': 'sleep 60 & echo $! > bg.tmp && mv bg.tmp bg.pid; while true; do sleep 0.2; done',
    });
    await fx.driver.create(spec);
    await fx.driver.start(spec);
    const straggler = Number(await waitForFile(path.join(spec.rootPath, 'bg.pid')));
    const { pid } = await fx.driver.state(spec);
    process.kill(pid, 'SIGKILL');
    await waitFor('the instance reads as stopped', async () => (await fx.driver.state(spec)).status === 'Stopped');
    await waitFor('the background process is gone', () => processGone(straggler));
    // state() does not wait for the kill; the next look finds the session empty and forgets the pid.
    assert.equal((await fx.driver.state(spec)).status, 'Stopped');
    assert.equal(await readText(path.join(spec.runtimeDir, 'pid.json')), null, 'the pid file is removed');
  });

  it('stop waits for and kills session members that left the process group', async (t: TestContext) => {
    if (!hasCommand('perl')) {
      t.skip('perl is not installed (needed to move a process to its own group)');
      return;
    }
    const spec = await fx.makeSpec('grouped', {
      'process.command':
        `perl -e 'setpgrp(0, 0); open(my $f, ">", "bg.tmp"); print $f "$$\\n"; close $f; rename("bg.tmp", "bg.pid"); sleep 60' & ` +
        'trap "exit 0" TERM; while true; do sleep 0.2; done',
    });
    await fx.driver.create(spec);
    await fx.driver.start(spec);
    const escaped = Number(await waitForFile(path.join(spec.rootPath, 'bg.pid')));
    const t0 = Date.now();
    await fx.driver.stop(spec, { timeoutSeconds: 1, force: false });
    assert.ok(Date.now() - t0 >= 950, 'stop waited for the process outside the group');
    assert.ok(await processGone(escaped), `process ${escaped} in another group was killed`);
  });

  it('an instance keeps running when the daemon that started it is SIGKILLed', async () => {
    const spec = await fx.makeSpec('survivor');
    const starter = spawn(process.execPath, ['--import', 'tsx', startAndHang, JSON.stringify(spec)], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const { pid } = JSON.parse(await firstLine(starter, 15_000)) as { pid: number };
      assert.ok(pid > 0);
      const exited = once(starter, 'exit');
      starter.kill('SIGKILL');
      await exited;

      const adopter = new ProcessDriver();
      const st = await adopter.state(spec);
      assert.equal(st.status, 'Running');
      assert.equal(st.pid, pid);
      const size = (await fsp.stat(path.join(spec.rootPath, 'data.txt'))).size;
      await waitFor('the orphaned instance keeps writing', async () => (await fsp.stat(path.join(spec.rootPath, 'data.txt'))).size > size);
      await adopter.stop(spec, { timeoutSeconds: 10, force: false });
      assert.equal((await adopter.state(spec)).status, 'Stopped');
      assert.ok(await processGone(pid));
    } finally {
      if (starter.exitCode === null && starter.signalCode === null) starter.kill('SIGKILL');
    }
  });

  it('a pid file naming a reused pid reads as stopped, and stop leaves that process alone', async () => {
    const spec = await fx.makeSpec('reused');
    await fx.driver.create(spec);
    const innocent = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      assert.ok(innocent.pid);
      const pidFile = path.join(spec.runtimeDir, 'pid.json');
      const forge = (): Promise<void> => fsp.writeFile(pidFile, JSON.stringify({ pid: innocent.pid, startTime: 1 }));
      await forge();
      assert.equal((await fx.driver.state(spec)).status, 'Stopped');
      assert.equal(await readText(pidFile), null, 'the stale pid file is removed');
      await forge();
      await fx.driver.stop(spec, stopNow);
      await forge();
      await fx.driver.start(spec);
      const st = await fx.driver.state(spec);
      assert.equal(st.status, 'Running');
      assert.notEqual(st.pid, innocent.pid);
      await fx.driver.stop(spec, stopNow);
      assert.equal(await processGone(innocent.pid), false, 'the unrelated process is still alive');
    } finally {
      innocent.kill('SIGKILL');
    }
  });

  it('refuses to delete a running instance', async () => {
    const spec = await fx.makeSpec('busy');
    await fx.driver.create(spec);
    await fx.driver.start(spec);
    await assert.rejects(fx.driver.delete(spec), DriverError);
    assert.equal((await fx.driver.state(spec)).status, 'Running');
    await fx.driver.stop(spec, stopNow);
    await fx.driver.delete(spec);
  });
});
