import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClientError, type Operation, RoostClient, type RoostEvent, operationId } from '../../src/client/client.js';
import { cliConfigPath, readCliConfig, resolveSocketPath, writeCliConfig } from '../../src/client/config.js';
import { FakeLxd, errorReply, sync, waitFor } from './helpers/fake-lxd.js';

describe('RoostClient against a fake member', () => {
  let fake: FakeLxd;
  let client: RoostClient;

  before(async () => {
    fake = await FakeLxd.start();
    client = new RoostClient(fake.socketPath);
  });
  after(async () => {
    await client.close();
    await fake.close();
  });

  test('a sync request returns the metadata and the ETag, and sends If-Match and the JSON body', async () => {
    fake.on('GET', '/1.0/instances/t1', sync({ name: 't1', status: 'Running' }, '"abc"'));
    const res = await client.request('GET', '/1.0/instances/t1');
    assert.equal(res.type, 'sync');
    assert.deepEqual(res.metadata, { name: 't1', status: 'Running' });
    assert.equal(res.etag, '"abc"');

    fake.on('PATCH', '/1.0', sync(null));
    await client.request('PATCH', '/1.0', { config: { 'cluster.offline_threshold': '5' } }, { etag: '"abc"' });
    const sent = fake.find('PATCH', '/1.0');
    assert.deepEqual(sent?.body, { config: { 'cluster.offline_threshold': '5' } });
    assert.equal(sent?.headers['if-match'], '"abc"');
    assert.equal(sent?.headers['content-type'], 'application/json');
  });

  test('parse narrows the metadata to the caller\'s type', async () => {
    fake.on('GET', '/1.0/cluster', sync({ enabled: true, server_name: 'm1' }));
    const res = await client.request('GET', '/1.0/cluster', undefined, {
      parse: (m) => (typeof m === 'object' && m !== null && 'server_name' in m ? String(m.server_name) : ''),
    });
    assert.equal(res.metadata, 'm1');
  });

  test('an error envelope becomes ApiClientError with the server\'s message and error_code', async () => {
    fake.on('PUT', '/1.0/instances/t1/state', errorReply(403, 'Cluster member is evacuated'));
    await assert.rejects(client.request('PUT', '/1.0/instances/t1/state', { action: 'start' }), (err: unknown) => {
      assert.ok(err instanceof ApiClientError);
      assert.equal(err.message, 'Cluster member is evacuated');
      assert.equal(err.status, 403);
      return true;
    });
  });

  test('a non-JSON error still names the request and the HTTP status', async () => {
    fake.on('GET', '/1.0/broken', { status: 500, raw: 'oops' });
    await assert.rejects(client.request('GET', '/1.0/broken'), { name: 'ApiClientError', status: 500, message: /GET \/1\.0\/broken failed with HTTP 500: oops/ });
  });

  test('runAsync opens the events socket before the request and follows the operation to Success', async () => {
    fake.arrivals.length = 0;
    fake.operation('POST', '/1.0/instances', [
      { status: 'Running', metadata: { create_instance_progress: 'Unpacking' } },
      { status: 'Success', metadata: { create_instance_progress: 'done' } },
    ], { early: [{ status: 'Running', metadata: { create_instance_progress: 'Starting' } }] });
    const seen: string[] = [];
    const result = await client.runAsync('POST', '/1.0/instances', { name: 'c1' }, (op: Operation) =>
      seen.push(`${op.status}:${String(op.metadata?.create_instance_progress ?? '')}`),
    );
    assert.equal(result.operation?.status, 'Success');
    assert.equal(result.response.type, 'async');
    assert.deepEqual(fake.arrivals.slice(0, 2), ['ws /1.0/events?type=operation', 'POST /1.0/instances']);
    assert.ok(fake.arrivals.some((a) => a.startsWith('GET /1.0/operations/')), 'one catch-up GET of the operation');
    assert.equal(seen.at(-1), 'Success:done');
    assert.ok(seen.includes('Running:Starting'), `events sent before the catch-up are not lost: ${seen.join(', ')}`);
    await waitFor(() => fake.subscriberCount === 0, 'the events socket to be closed');
  });

  test('runAsync turns a failed operation into ApiClientError carrying the operation', async () => {
    fake.operation('POST', '/1.0/cluster/members/m2/state', [
      { status: 'Failure', err: 'Cluster member is already evacuated', metadata: { roost_evacuation: { total: 0 } } },
    ]);
    await assert.rejects(client.runAsync('POST', '/1.0/cluster/members/m2/state', { action: 'evacuate' }), (err: unknown) => {
      assert.ok(err instanceof ApiClientError);
      assert.equal(err.message, 'Cluster member is already evacuated');
      assert.equal(err.status, 400);
      assert.equal(err.operation?.status, 'Failure');
      return true;
    });
  });

  test('a cancelled operation is reported as such', async () => {
    fake.operation('DELETE', '/1.0/instances/c9', [{ status: 'Cancelled' }]);
    await assert.rejects(client.runAsync('DELETE', '/1.0/instances/c9'), { message: 'Operation cancelled', status: 401 });
  });

  test('an operation already finished when the client catches up resolves from the GET alone', async () => {
    fake.operation('PUT', '/1.0/instances/c2/state', [], { early: [{ status: 'Success' }] });
    const result = await client.runAsync('PUT', '/1.0/instances/c2/state', { action: 'stop' });
    assert.equal(result.operation?.status, 'Success');
  });

  test('events of other operations do not end the wait', async () => {
    const foreign = { type: 'operation', metadata: { id: 'someone-else', status: 'Failure', status_code: 400, err: 'not ours' } };
    fake.operation('POST', '/1.0/instances/c3', [{ status: 'Success' }], { onCreated: () => fake.emit(foreign) });
    const result = await client.runAsync('POST', '/1.0/instances/c3', { name: 'c3', migration: true });
    assert.equal(result.operation?.status, 'Success');
  });

  test('runAsync returns a synchronous answer as is', async () => {
    fake.on('PATCH', '/1.0/cluster/members/m1', sync({}));
    const result = await client.runAsync('PATCH', '/1.0/cluster/members/m1', { config: { 'scheduler.instance': 'manual' } });
    assert.equal(result.operation, null);
    assert.equal(result.response.type, 'sync');
  });

  test('waitOperation follows an operation created earlier', async () => {
    fake.operation('POST', '/1.0/instances/c4', [{ status: 'Success', metadata: { note: 'ok' } }]);
    const res = await client.request('POST', '/1.0/instances/c4', { name: 'c4' });
    assert.equal(res.type, 'async');
    const op = await client.waitOperation(res.type === 'async' ? res.operation : '');
    assert.deepEqual(op.metadata, { note: 'ok' });
  });

  test('events() subscribes with ?type= and delivers each event', async () => {
    fake.arrivals.length = 0;
    const got: RoostEvent[] = [];
    const sub = await client.events(['lifecycle', 'operation'], (e) => got.push(e));
    assert.deepEqual(fake.arrivals, ['ws /1.0/events?type=lifecycle,operation']);
    fake.emit({ type: 'lifecycle', timestamp: 't', location: 'm2', project: 'default', metadata: { action: 'instance-started' } });
    await waitFor(() => got.length === 1, 'the lifecycle event');
    assert.equal(got[0]?.type, 'lifecycle');
    assert.equal(got[0]?.location, 'm2');
    sub.close();
    await sub.done;
  });

  test('operationId accepts operation URLs with a query', () => {
    assert.equal(operationId('/1.0/operations/01f73c5e-d9ab?project=default'), '01f73c5e-d9ab');
    assert.equal(operationId('01f73c5e'), '01f73c5e');
  });
});

test('a member that is not running gives an error that says what to do', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'roost-cli-'));
  const client = new RoostClient(join(dir, 'unix.socket'));
  try {
    await assert.rejects(client.request('GET', '/1.0'), /Cannot reach the Roost member at .*unix\.socket \(ENOENT\); is roostd running\?/);
  } finally {
    await client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('member resolution', () => {
  let home: string;
  before(() => {
    home = mkdtempSync(join(tmpdir(), 'roost-home-'));
  });
  after(() => rmSync(home, { recursive: true, force: true }));

  test('ROOST_DIR wins over the CLI config', () => {
    const env = { ROOST_DIR: '/srv/m2', XDG_CONFIG_HOME: join(home, 'xdg') };
    writeCliConfig({ member: '/srv/m1' }, env);
    assert.equal(resolveSocketPath(env), '/srv/m2/unix.socket');
  });

  test('without ROOST_DIR the member written by roost up is used', () => {
    const env = { XDG_CONFIG_HOME: join(home, 'xdg') };
    writeCliConfig({ member: '/srv/m1' }, env);
    assert.equal(cliConfigPath(env), join(home, 'xdg', 'roost', 'config.json'));
    assert.deepEqual(readCliConfig(env), { member: '/srv/m1', remotes: {} });
    assert.equal(resolveSocketPath(env), '/srv/m1/unix.socket');
  });

  test('the config lives under ~/.config when XDG_CONFIG_HOME is unset', () => {
    assert.equal(cliConfigPath({ HOME: '/home/ann' }), '/home/ann/.config/roost/config.json');
  });

  test('no member at all is a clear error', () => {
    const env = { HOME: join(home, 'nobody') };
    assert.throws(() => resolveSocketPath(env), { message: 'no Roost member configured; run "roost up" or set ROOST_DIR' });
  });

  test('a corrupt config file is named in the error', () => {
    const env = { XDG_CONFIG_HOME: join(home, 'bad') };
    mkdirSync(join(home, 'bad', 'roost'), { recursive: true });
    writeFileSync(cliConfigPath(env), '{not json');
    assert.throws(() => readCliConfig(env), /config\.json is not valid JSON/);
  });
});
