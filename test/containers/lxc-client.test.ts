// The real `lxc` client (Debian lxd-client) driving a system container of a real two-member cluster: it
// lists it as a CONTAINER with its location, and `lxc stop` / `lxc start` (asked through the member that
// does not run it) succeed and change LXC's own state of the container. Never with stdin, always with a
// timeout. Snapshots of the running container restore its files.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { processAlive, type TestCluster } from '../helpers/cluster.js';
import { hasCommand, requireCommand } from '../helpers/prereq.js';
import {
  containersPossible,
  importImage,
  launchContainer,
  lxcLs,
  lxcNameOf,
  requireContainers,
  run,
  teardown,
  timed,
  startWithImage,
  type BuiltImage,
  type CommandResult,
} from './support.js';

let c: TestCluster | undefined;
let image: BuiltImage | undefined;

/** `lxc <args>` against a member (LXD_DIR = its directory), no stdin, 30 s deadline. */
function lxc(member: string, ...args: string[]): Promise<CommandResult> {
  assert.ok(c);
  return run('lxc', args, 30_000, { ...process.env, LXD_DIR: c.memberDir(member), LXD_CONF: path.join(c.dir, 'lxc-conf') });
}

function ok(r: CommandResult, what: string): string {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Rows of an `lxc ... --format csv` listing. */
function csv(out: string): string[][] {
  return out.trim().split('\n').filter((l) => l !== '').map((l) => l.split(','));
}

/** Both prerequisites of this file: containers, and the lxc client. */
function prerequisites(t: TestContext): boolean {
  return requireContainers(t) && requireCommand(t, 'lxc', 'apt-get install -y lxd-client');
}

describe('the real lxc client with a system container', () => {
  before(async () => {
    if (!containersPossible() || !hasCommand('lxc')) return; // each test skips (or fails under CI)
    ({ c, image } = await startWithImage(2));
    await importImage(c, 'm01', image.tarball, 'busybox');
    await launchContainer(c, 'web', { target: 'm02' });
    await c.launch('proc', { target: 'm01' });
  });
  after(async () => {
    await teardown(c, [image?.dir]);
  });

  it('lxc list shows the container as CONTAINER with its location', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    const table = ok(await lxc('m01', 'list'), 'lxc list');
    assert.match(table, /\| web +\| RUNNING +\| +\| +\| CONTAINER +\| 0 +\| m02 +\|/);
    assert.match(table, /\| proc +\| RUNNING +\| +\| +\| PROCESS +\| 0 +\| m01 +\|/);
    const rows = csv(ok(await lxc('m02', 'list', '--format', 'csv', '-c', 'nstL'), 'lxc list --format csv'));
    assert.deepEqual(rows.sort(), [['proc', 'RUNNING', 'PROCESS', 'm01'], ['web', 'RUNNING', 'CONTAINER', 'm02']]);
  });

  it('lxc stop and lxc start succeed and change the container\'s state in LXC', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    assert.ok(c);
    const name = lxcNameOf(await lxcLs(c, 'm02', true), 'm02', 'web');
    assert.ok(name, 'LXC runs it');
    const pid = (await c.instance('web')).state?.pid ?? 0;
    assert.ok(processAlive(pid));

    const stop = await timed(() => lxc('m01', 'stop', 'web'));
    ok(stop.value, 'lxc stop web');
    t.diagnostic(`lxc stop (clean): ${stop.ms} ms`);
    assert.equal((await c.instance('web')).status, 'Stopped', 'lxc returned once it had stopped');
    assert.ok(!processAlive(pid));
    assert.deepEqual(await lxcLs(c, 'm02', true), [], 'LXC has it stopped');
    assert.deepEqual(csv(ok(await lxc('m02', 'list', 'web', '--format', 'csv', '-c', 'ns'), 'lxc list web')), [['web', 'STOPPED']]);

    const start = await timed(() => lxc('m01', 'start', 'web'));
    ok(start.value, 'lxc start web');
    t.diagnostic(`lxc start: ${start.ms} ms`);
    const started = await c.instance('web');
    assert.equal(started.status, 'Running');
    assert.equal(started.location, 'm02');
    assert.ok(processAlive(started.state?.pid ?? 0));
    assert.deepEqual(await lxcLs(c, 'm02', true), [name], 'LXC runs it again');
    assert.deepEqual(csv(ok(await lxc('m01', 'list', 'web', '--format', 'csv', '-c', 'nstL'), 'lxc list web')), [['web', 'RUNNING', 'CONTAINER', 'm02']]);
  });

  it('lxc info shows the container\'s type, location and processes', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    const info = ok(await lxc('m01', 'info', 'web'), 'lxc info web');
    assert.match(info, /^Name: web$/m);
    assert.match(info, /^Status: RUNNING$/m);
    assert.match(info, /^Type: container$/m);
    assert.match(info, /^Location: m02$/m);
    const processes = Number(/^\s+Processes: (\d+)$/m.exec(info)?.[1]);
    assert.ok(processes > 0, info);
  });

  it('lxc snapshot of the running container, then lxc restore, gives its files back and keeps it running', async (t: TestContext) => {
    if (!prerequisites(t)) return;
    assert.ok(c);
    ok(await lxc('m01', 'exec', 'web', '--', 'sh', '-c', 'echo before > /snapshot-probe'), 'write the probe');
    ok(await lxc('m01', 'snapshot', 'web', 's1'), 'lxc snapshot web s1');
    assert.equal((await c.instance('web')).status, 'Running', 'a container is snapshotted live');
    assert.match(ok(await lxc('m01', 'list', 'web'), 'lxc list web'), /\| web +\| RUNNING +\|.*\| 1 +\| m02 +\|/);
    ok(await lxc('m01', 'exec', 'web', '--', 'sh', '-c', 'echo after > /snapshot-probe'), 'change the probe');
    ok(await lxc('m01', 'restore', 'web', 's1'), 'lxc restore web s1');
    assert.equal((await c.instance('web')).status, 'Running', 'restore starts it again');
    assert.equal(ok(await lxc('m01', 'exec', 'web', '--', 'cat', '/snapshot-probe'), 'read the probe'), 'before\n');
    ok(await lxc('m01', 'delete', 'web/s1'), 'lxc delete web/s1');
    assert.match(ok(await lxc('m01', 'list', 'web'), 'lxc list web'), /\| web +\| RUNNING +\|.*\| 0 +\| m02 +\|/);
  });
});
