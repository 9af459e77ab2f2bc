import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../../src/cli/run.js';
import { Capture, FakeLxd, errorReply, sync, waitFor } from './helpers/fake-lxd.js';

interface Run {
  code: number;
  out: string;
  err: string;
}

describe('roost commands against a fake member', () => {
  let fake: FakeLxd;

  const roost = async (argv: string[], options: { stdin?: string[]; signal?: AbortSignal; stdout?: Capture } = {}): Promise<Run> => {
    const stdout = options.stdout ?? new Capture();
    const stderr = new Capture();
    const code = await runCli(argv, {
      stdout,
      stderr,
      stdin: options.stdin ? Readable.from(options.stdin) : undefined,
      env: { ROOST_DIR: fake.dir },
      signal: options.signal,
    });
    return { code, out: stdout.text, err: stderr.text };
  };

  before(async () => {
    fake = await FakeLxd.start();
  });
  after(() => fake.close());
  beforeEach(() => {
    fake.requests.length = 0;
    fake.arrivals.length = 0;
  });

  const evacuationSteps = [
    {
      status: 'Running' as const,
      metadata: {
        evacuation_progress: 'Stopping "c3" in project "default"',
        roost_evacuation: {
          total: 3, done: 1, failed: 0, bytesTotal: 2048, bytesDone: 0, rate: 0,
          instances: {
            'default/c1': { action: 'migrate', target: 'm2', state: 'copying' },
            'default/c3': { action: 'stop', target: '', state: 'done' },
            'default/c4': { action: 'migrate', target: 'm3', state: 'pending' },
          },
        },
      },
    },
    {
      status: 'Success' as const,
      metadata: {
        evacuation_progress: 'Starting "c4" in project "default"',
        roost_evacuation: {
          total: 3, done: 3, failed: 0, bytesTotal: 2048, bytesDone: 2048, rate: 1024,
          instances: {
            'default/c1': { action: 'migrate', target: 'm2', state: 'done' },
            'default/c3': { action: 'stop', target: '', state: 'done' },
            'default/c4': { action: 'migrate', target: 'm3', state: 'done' },
          },
        },
      },
    },
  ];

  test('cluster list shows LXD\'s columns plus the instance count of each member', async () => {
    fake.on('GET', '/1.0/cluster/members?recursion=1', sync([
      { server_name: 'm1', url: 'https://127.0.0.1:8443', roles: ['database-leader', 'database'], architecture: 'x86_64', failure_domain: 'default', description: '', status: 'Online', message: 'Fully operational' },
      { server_name: 'm2', url: 'https://127.0.0.1:8444', roles: [], architecture: 'x86_64', failure_domain: 'default', description: '', status: 'Evacuated', message: 'Unavailable due to maintenance' },
    ]));
    fake.on('GET', '/1.0/instances?recursion=1', sync([{ name: 'c1', location: 'm1' }, { name: 'c2', location: 'm1' }]));
    const r = await roost(['cluster', 'list']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /\| NAME \|.*\| {3}STATE {3}\|.*\| INSTANCES \|/);
    assert.match(r.out, /\| m1 {3}\|.*\| ONLINE {4}\| Fully operational {14}\| 2 {9}\|/);
    assert.match(r.out, /\| m2 {3}\|.*\| EVACUATED \| Unavailable due to maintenance \| 0 {9}\|/);
    const csv = await roost(['cluster', 'list', '--format', 'csv']);
    assert.equal(csv.out.split('\n')[0], 'm1,https://127.0.0.1:8443,"database-leader\ndatabase",x86_64,default,,ONLINE,Fully operational,2'.split('\n')[0]);
  });

  test('cluster evacuate --force follows the operation and prints a line per finished instance, then a summary', async () => {
    fake.operation('POST', '/1.0/cluster/members/m1/state', evacuationSteps, { description: 'Evacuating cluster member' });
    const r = await roost(['cluster', 'evacuate', 'm1', '--force', '--parallel', '2', '--action', 'migrate']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fake.find('POST', '/1.0/cluster/members/m1/state')?.body, { action: 'evacuate', mode: 'migrate', parallel: 2 });
    assert.equal(r.out, 'c3: stopped\nc1: migrated to m2\nc4: migrated to m3\nEvacuated "m1": 2 moved, 1 stopped, 0 failed\n');
    assert.equal(r.err, '');
  });

  test('cluster restore --parallel auto asks for copy slots that follow the throughput', async () => {
    fake.operation('POST', '/1.0/cluster/members/m1/state', evacuationSteps, { description: 'Restoring cluster member' });
    const r = await roost(['cluster', 'restore', 'm1', '--force', '--parallel', 'auto']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fake.find('POST', '/1.0/cluster/members/m1/state')?.body, { action: 'restore', parallel: 'auto' });
  });

  test('cluster maintain sends the request, prints a line per member step, and refuses a server without the extension', async () => {
    const entry = (name: string, step: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ name, step, ...extra });
    const steps = [
      { status: 'Running' as const, metadata: { roost_maintenance: { members: [entry('m1', 'evacuating'), entry('m2', 'pending')] } } },
      { status: 'Running' as const, metadata: { roost_maintenance: { members: [entry('m1', 'rebooting'), entry('m2', 'pending')] } } },
      { status: 'Success' as const, metadata: { roost_maintenance: { members: [entry('m1', 'done', { evacuateSeconds: 2, restoreSeconds: 3.25 }), entry('m2', 'done')] } } },
    ];
    fake.on('GET', '/1.0', sync({ api_extensions: ['clustering', 'roost_cluster_maintenance'], config: {} }));
    fake.operation('POST', '/1.0/cluster/maintenance', steps, { description: 'Rolling maintenance of cluster members' });
    const r = await roost(['cluster', 'maintain', '--members', 'm1,m2', '--exec', 'ssh {member} reboot', '--wait-online', '10m', '--concurrency', '1', '--force']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fake.find('POST', '/1.0/cluster/maintenance')?.body, { members: ['m1', 'm2'], exec: 'ssh {member} reboot', wait_online: '10m', concurrency: 1 });
    assert.match(r.out, /^m1: evacuating\nm1: rebooting\nm1: done \(evacuated in 2\.0s, restored in 3\.3s\)\nm2: done\nMaintenance complete in [\d.]+s\n$/);

    const both = await roost(['cluster', 'maintain', '--all', '--members', 'm1', '--force']);
    assert.equal(both.code, 1);
    assert.equal(both.err, 'Error: Give either --members a,b,... or --all\n');

    fake.on('GET', '/1.0', sync({ api_extensions: ['clustering'], config: {} }));
    const old = await roost(['cluster', 'maintain', '--all', '--force']);
    assert.equal(old.code, 1);
    assert.equal(old.err, 'Error: The server does not support cluster maintain (missing API extension "roost_cluster_maintenance")\n');
  });

  test('evac is an alias and restore words its prompt and summary for restore', async () => {
    fake.operation('POST', '/1.0/cluster/members/m1/state', [{ status: 'Success', metadata: { roost_evacuation: { total: 1, done: 1, instances: { 'default/c1': { action: 'start', state: 'done' } } } } }]);
    const restore = await roost(['cluster', 'restore', 'm1'], { stdin: ['yes\n'] });
    assert.equal(restore.code, 0, restore.err);
    assert.equal(restore.out, 'Are you sure you want to restore cluster member "m1"? (yes/no) [default=no]: c1: started\nRestored "m1": 0 moved, 1 started, 0 failed\n');
    const evac = await roost(['cluster', 'evac', 'm1'], { stdin: ['maybe\n', 'y\n'] });
    assert.equal(evac.code, 0, evac.err);
    assert.match(evac.out, /^Are you sure you want to evacuate cluster member "m1"\? \(yes\/no\) \[default=no\]: Invalid input, try again\.\n\nAre you sure/);
  });

  test('answering no, or giving no answer at all, aborts without sending anything', async () => {
    for (const stdin of [['no\n'], [], ['\n']]) {
      const r = await roost(['cluster', 'evacuate', 'm1'], { stdin });
      assert.equal(r.code, 1);
      assert.equal(r.err, 'Error: User aborted\n');
      assert.match(r.out, /^Are you sure you want to evacuate cluster member "m1"\? \(yes\/no\) \[default=no\]: /);
      assert.deepEqual(fake.calls(), []);
    }
  });

  test('a failed evacuation prints each instance as it ends, the summary, then the error once, and exits 1', async () => {
    fake.operation('POST', '/1.0/cluster/members/m1/state', [{
      status: 'Failure',
      err: 'Failed to evacuate 1 instance:\nc5: target m3 went offline',
      metadata: {
        roost_evacuation: {
          total: 2, done: 1, failed: 1, instances: {
            'default/c1': { action: 'migrate', target: 'm2', state: 'done' },
            'default/c5': { action: 'migrate', target: 'm3', state: 'failed', error: 'target m3 went offline' },
          },
        },
      },
    }]);
    const r = await roost(['cluster', 'evacuate', 'm1', '--force']);
    assert.equal(r.code, 1);
    assert.equal(r.out, 'c1: migrated to m2\nc5: failed: target m3 went offline\nEvacuation of "m1" failed: 1 moved, 0 stopped, 1 failed\n');
    assert.equal(r.err, 'Error: Failed to evacuate 1 instance:\nc5: target m3 went offline\n');
  });

  test('a refused evacuation prints the server\'s error', async () => {
    fake.on('POST', '/1.0/cluster/members/m9/state', errorReply(404, 'Cluster member "m9" not found'));
    const r = await roost(['cluster', 'evacuate', 'm9', '--force']);
    assert.equal(r.code, 1);
    assert.equal(r.err, 'Error: Cluster member "m9" not found\n');
  });

  test('--dry-run asks nothing and prints the plan the server returns', async () => {
    fake.on('GET', '/1.0', sync({ api_extensions: ['clustering', 'roost_evacuation_plan'], config: {} }));
    fake.on('POST', '/1.0/cluster/members/m1/state', sync({
      instances: [{ name: 'c1', project: 'default', action: 'migrate', target: 'm2', reason: 'auto', bytes: 1048576 }],
      refusals: [],
    }));
    const r = await roost(['cluster', 'evacuate', 'm1', '--dry-run']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fake.find('POST', '/1.0/cluster/members/m1/state')?.body, { action: 'evacuate', dry_run: true });
    assert.match(r.out, /\| INSTANCE \| ACTION {2}\| TARGET \| {2}SIZE {3}\| REASON \|/);
    assert.match(r.out, /\| c1 {7}\| migrate \| m2 {5}\| 1\.00MiB \| auto {3}\|/);
  });

  test('--dry-run is refused by a server that does not advertise plans (it would really evacuate)', async () => {
    fake.on('GET', '/1.0', sync({ api_extensions: ['clustering', 'clustering_evacuation'] }));
    const r = await roost(['cluster', 'evacuate', 'm1', '--dry-run']);
    assert.equal(r.code, 1);
    assert.equal(r.err, 'Error: The server does not support --dry-run (missing API extension "roost_evacuation_plan")\n');
    assert.deepEqual(fake.calls(), ['GET /1.0']);
  });

  test('--parallel must be a positive number or auto', async () => {
    const r = await roost(['cluster', 'evacuate', 'm1', '--force', '--parallel', 'lots']);
    assert.equal(r.code, 1);
    assert.equal(r.err, 'Error: Invalid value for --parallel: "lots" (expected "auto" or a whole number of at least 1)\n');
    assert.deepEqual(fake.calls(), []);
  });

  test('cluster show adds the evacuation progress to the member', async () => {
    fake.on('GET', '/1.0/cluster/members/m2', sync({ server_name: 'm2', status: 'Evacuated' }));
    fake.on('GET', '/1.0/cluster/members/m2/state', sync({ sysinfo: {}, roost_evacuation: { total: 2, done: 2 } }));
    const r = await roost(['cluster', 'show', 'm2']);
    assert.equal(r.out, 'server_name: m2\nstatus: Evacuated\nroost_evacuation:\n  total: 2\n  done: 2\n');
  });

  test('cluster set/get/unset patch and read the member config', async () => {
    fake.operation('PATCH', '/1.0/cluster/members/m2', [{ status: 'Success' }]);
    assert.equal((await roost(['cluster', 'set', 'm2', 'scheduler.instance', 'manual'])).code, 0);
    assert.deepEqual(fake.find('PATCH', '/1.0/cluster/members/m2')?.body, { config: { 'scheduler.instance': 'manual' } });
    fake.requests.length = 0;
    fake.on('PATCH', '/1.0/cluster/members/m2', sync({}));
    assert.equal((await roost(['cluster', 'unset', 'm2', 'scheduler.instance'])).code, 0);
    assert.deepEqual(fake.find('PATCH', '/1.0/cluster/members/m2')?.body, { config: { 'scheduler.instance': '' } });
    fake.on('GET', '/1.0/cluster/members/m2', sync({ server_name: 'm2', config: { 'capacity.cpu': '4' } }));
    assert.equal((await roost(['cluster', 'get', 'm2', 'capacity.cpu'])).out, '4\n');
  });

  test('config set/get reach the instance with three arguments and the server with two', async () => {
    fake.operation('PATCH', '/1.0/instances/t1', [{ status: 'Success' }]);
    fake.on('PATCH', '/1.0', sync({}));
    assert.equal((await roost(['config', 'set', 't1', 'cluster.evacuate', 'stop'])).code, 0);
    assert.equal((await roost(['config', 'set', 'cluster.offline_threshold', '5'])).code, 0);
    assert.deepEqual(fake.find('PATCH', '/1.0/instances/t1')?.body, { config: { 'cluster.evacuate': 'stop' } });
    assert.deepEqual(fake.find('PATCH', '/1.0')?.body, { config: { 'cluster.offline_threshold': '5' } });
    fake.on('GET', '/1.0', sync({ config: { 'cluster.offline_threshold': '5' } }));
    assert.equal((await roost(['config', 'get', 'cluster.offline_threshold'])).out, '5\n');
  });

  test('launch creates with the flags as body and target, then starts', async () => {
    fake.operation('POST', '/1.0/instances?target=m2', [{ status: 'Success' }]);
    fake.operation('PUT', '/1.0/instances/c1/state', [{ status: 'Success' }]);
    const r = await roost(['launch', 'c1', '--type', 'process', '--target', 'm2', '-c', 'limits.cpu=1', '-c', 'process.command=sleep 600']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'Creating c1\nStarting c1\n');
    assert.deepEqual(fake.calls().filter((c) => !c.startsWith('GET /1.0/operations/')), ['POST /1.0/instances?target=m2', 'PUT /1.0/instances/c1/state']);
    assert.deepEqual(fake.find('POST', '/1.0/instances?target=m2')?.body, {
      name: 'c1', type: 'process', source: { type: 'none' }, config: { 'limits.cpu': '1', 'process.command': 'sleep 600' },
      devices: {}, profiles: ['default'],
    });
    assert.deepEqual(fake.find('PUT', '/1.0/instances/c1/state')?.body, { action: 'start', timeout: 0, force: false, stateful: false });
  });

  test('start on an evacuated member prints the server\'s refusal', async () => {
    fake.on('PUT', '/1.0/instances/t1/state', errorReply(403, 'Cluster member is evacuated'));
    const r = await roost(['start', 't1']);
    assert.equal(r.code, 1);
    assert.equal(r.err, 'Error: Cluster member is evacuated\n');
  });

  test('move --target posts a migration and waits for it', async () => {
    fake.operation('POST', '/1.0/instances/w1?target=m1', [{ status: 'Success' }]);
    const r = await roost(['move', 'w1', '--target', 'm1']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fake.find('POST', '/1.0/instances/w1?target=m1')?.body, { name: 'w1', migration: true });
  });

  test('delete refuses a running instance unless --force, which stops it first', async () => {
    fake.on('GET', '/1.0/instances/d1', sync({ name: 'd1', status: 'Running' }));
    const refused = await roost(['delete', 'd1']);
    assert.equal(refused.err, 'Error: The instance is currently running, stop it first or use --force\n');
    fake.operation('PUT', '/1.0/instances/d1/state', [{ status: 'Success' }]);
    fake.operation('DELETE', '/1.0/instances/d1', [{ status: 'Success' }]);
    const r = await roost(['delete', 'd1', '--force']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fake.find('PUT', '/1.0/instances/d1/state')?.body, { action: 'stop', timeout: -1, force: true, stateful: false });
    assert.ok(fake.find('DELETE', '/1.0/instances/d1'));
  });

  test('info --show-log prints the log under Log:', async () => {
    fake.on('GET', '/1.0/instances/p1', sync({ name: 'p1', type: 'process', status: 'Running', location: 'm1', created_at: '2026-11-25T14:49:58Z' }));
    fake.on('GET', '/1.0/instances/p1/state', sync({ status: 'Running', processes: 1 }));
    fake.on('GET', '/1.0/instances/p1/logs/output.log', { raw: 'hello\nworld\n' });
    fake.on('GET', '/1.0/instances/p1/snapshots?recursion=1', sync([]));
    const r = await roost(['info', 'p1', '--show-log']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^Name: p1\nStatus: RUNNING\nType: process\nLocation: m1\n/);
    assert.doesNotMatch(r.out, /Snapshots:/, 'no snapshots, no table');
    assert.match(r.out, /\n\nLog:\n\nhello\nworld\n$/);
  });

  test('storage volume attach adds a disk device to the instance', async () => {
    fake.on('GET', '/1.0/instances/c1', sync({ name: 'c1', devices: {} }, '"e1"'));
    fake.operation('PATCH', '/1.0/instances/c1', [{ status: 'Success' }]);
    const r = await roost(['storage', 'volume', 'attach', 'default', 'data', 'c1', 'data', '/srv/data']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fake.find('PATCH', '/1.0/instances/c1')?.body, {
      devices: { data: { type: 'disk', pool: 'default', source: 'data', path: '/srv/data' } },
    });
  });

  test('operation list and cancel', async () => {
    fake.on('GET', '/1.0/operations?recursion=1', sync({ running: [{ id: 'op1', class: 'task', description: 'Evacuating cluster member', status: 'Running', may_cancel: true, created_at: '2026-11-25T14:52:13Z', location: 'm2' }] }));
    const list = await roost(['operation', 'list']);
    assert.match(list.out, /\| op1 \| TASK \| Evacuating cluster member \| RUNNING \| YES {8}\| 2026\/11\/25 14:52 UTC \| m2 {7}\|/);
    fake.on('DELETE', '/1.0/operations/op1', sync(null));
    assert.equal((await roost(['operation', 'cancel', 'op1'])).code, 0);
    assert.ok(fake.find('DELETE', '/1.0/operations/op1'));
  });

  test('monitor prints each event until stopped', async () => {
    const controller = new AbortController();
    const stdout = new Capture();
    const run = roost(['monitor', '--type', 'lifecycle'], { signal: controller.signal, stdout });
    await waitFor(() => fake.subscriberCount > 0, 'the monitor to subscribe');
    assert.deepEqual(fake.arrivals, ['ws /1.0/events?type=lifecycle']);
    fake.emit({ type: 'lifecycle', timestamp: '2026-11-25T14:52:13Z', location: 'm2', project: 'default', metadata: { action: 'instance-started', source: '/1.0/instances/t1' } });
    await waitFor(() => stdout.text.includes('type: lifecycle'), 'the event to be printed');
    controller.abort();
    const r = await run;
    assert.equal(r.code, 0, r.err);
    assert.equal(stdout.text, 'location: m2\nmetadata:\n  action: instance-started\n  source: /1.0/instances/t1\nproject: default\ntimestamp: "2026-11-25T14:52:13Z"\ntype: lifecycle\n\n\n');
  });

  test('usage mistakes print Error: and exit 1', async () => {
    const unknown = await roost(['cluster', 'evacuate', 'm1', '--bogus']);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.err, 'Error: unknown option \'--bogus\'\n');
    const missing = await roost(['move', 'w1']);
    assert.equal(missing.err, 'Error: Nothing to do: give --target <member> (or a new name)\n');
  });
});

test('roost --version prints the version from package.json and exits 0', async () => {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runCli(['--version'], { stdout, stderr, env: {} });
  assert.equal(code, 0, stderr.text);
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(stdout.text, `${pkg.version}\n`);
});

test('without ROOST_DIR or a CLI config, commands explain how to pick a member', async () => {
  const home = mkdtempSync(join(tmpdir(), 'roost-home-'));
  try {
    const stdout = new Capture();
    const stderr = new Capture();
    const code = await runCli(['list'], { stdout, stderr, env: { HOME: home } });
    assert.equal(code, 1);
    assert.equal(stderr.text, 'Error: no Roost member configured; run "roost up" or set ROOST_DIR\n');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
