// The real `lxc` client (Debian lxd-client) against a Roost member's unix socket: it must find a
// clustered server, list members and instances, start and stop a process instance while following the
// operations on the events websocket, and report errors as `Error: ...` with exit status 1.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { hasCommand, requireCommand } from '../helpers/prereq.js';
import { processAlive, startCluster, type TestCluster } from '../helpers/cluster.js';

let c: TestCluster | undefined;

interface LxcResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `lxc` against a member (LXD_DIR = its directory), never with stdin, with a timeout. */
function lxc(member: string, ...args: string[]): Promise<LxcResult> {
  const cluster = c;
  assert.ok(cluster, 'the cluster runs');
  return new Promise((resolve, reject) => {
    const child = execFile(
      'lxc',
      args,
      {
        timeout: 30_000,
        env: { ...process.env, LXD_DIR: cluster.memberDir(member), LXD_CONF: path.join(cluster.dir, 'lxc-conf') },
      },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(new Error(`lxc ${args.join(' ')} did not finish: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
      },
    );
    child.stdin?.end();
  });
}

/** Rows of an `lxc ... --format csv` listing. */
function csv(out: string): string[][] {
  return out
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(','));
}

function ok(r: LxcResult, what: string): string {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

describe('the real lxc client', () => {
  before(async () => {
    if (!hasCommand('lxc')) return; // each test skips (or fails under CI) through requireCommand
    c = await startCluster({ members: 2 });
    await c.launch('web', { target: 'm02' });
    await c.launch('idle', { target: 'm01', start: false });
  });
  after(async () => {
    await c?.stop();
  });

  it('lxc info shows a trusted clustered server', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', 'apt-get install -y lxd-client')) return;
    const out = ok(await lxc('m01', 'info'), 'lxc info');
    assert.match(out, /^auth: trusted$/m);
    assert.match(out, /^\s+server_clustered: true$/m);
    assert.match(out, /^\s+server_name: m01$/m);
    assert.match(out, /^- clustering_evacuation$/m);
  });

  it('lxc cluster list shows every member Online', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', 'apt-get install -y lxd-client')) return;
    const table = ok(await lxc('m02', 'cluster', 'list'), 'lxc cluster list');
    assert.match(table, /\| m01 .*\| ONLINE \| Fully operational \|/);
    assert.match(table, /\| m02 .*\| ONLINE \| Fully operational \|/);
    const rows = csv(ok(await lxc('m01', 'cluster', 'list', '--format', 'csv'), 'lxc cluster list --format csv'));
    assert.deepEqual(rows.map((r) => r[0]), ['m01', 'm02']);
  });

  it('lxc list shows the instances with their state and location', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', 'apt-get install -y lxd-client')) return;
    const table = ok(await lxc('m01', 'list'), 'lxc list');
    assert.match(table, /\| web +\| RUNNING /);
    assert.match(table, /\| idle +\| STOPPED /);
    const rows = csv(ok(await lxc('m01', 'list', '--format', 'csv', '-c', 'nsL'), 'lxc list --format csv'));
    assert.deepEqual(rows.sort(), [['idle', 'STOPPED', 'm01'], ['web', 'RUNNING', 'm02']]);
  });

  it('lxc stop and lxc start change a process instance on another member', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', 'apt-get install -y lxd-client')) return;
    assert.ok(c);
    const pid = (await c.instance('web')).state?.pid ?? 0;
    assert.ok(processAlive(pid));
    ok(await lxc('m01', 'stop', 'web'), 'lxc stop web');
    const stopped = await c.instance('web');
    assert.equal(stopped.status, 'Stopped', 'lxc returned only once the instance had stopped');
    assert.ok(!processAlive(pid));
    ok(await lxc('m01', 'start', 'web'), 'lxc start web');
    const started = await c.instance('web');
    assert.equal(started.status, 'Running');
    assert.ok(processAlive(started.state?.pid ?? 0));
    assert.equal(started.location, 'm02');
    assert.deepEqual(csv(ok(await lxc('m02', 'list', 'web', '--format', 'csv', '-c', 'ns'), 'lxc list web')), [['web', 'RUNNING']]);
  });

  it('errors print "Error: ..." and exit 1', async (t: TestContext) => {
    if (!requireCommand(t, 'lxc', 'apt-get install -y lxd-client')) return;
    const missing = await lxc('m01', 'start', 'nosuch');
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr.trim(), 'Error: Instance not found');
    const running = await lxc('m02', 'delete', 'web');
    assert.equal(running.code, 1);
    assert.match(running.stderr, /^Error: .*running/m);
    assert.equal((await c?.instance('web'))?.status, 'Running', 'the refused delete changed nothing');
  });
});
