// The sim driver: the shared driver suite on simulated instances, then what only a simulation does (fixed
// delays, nothing written, no commands), and a sim instance in a real cluster: created, started, moved through
// the whole journal and commit path with nothing to copy, still running after its member's daemon restarts.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DriverError } from '../../src/instances/driver.js';
import type { InstanceSpec } from '../../src/instances/driver.js';
import { SimDriver } from '../../src/instances/drivers/sim.js';
import { DirPool } from '../../src/storage/drivers/dir.js';
import { keys } from '../../src/store/schema.js';
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { assertError } from '../helpers/envelope.js';
import { driverSuite, type DriverFixture } from './driver-suite.js';

/** A sim-driver fixture whose root volumes live in a real dir pool in a temporary directory. */
async function simFixture(): Promise<DriverFixture & { driver: SimDriver }> {
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-sim-'));
  const pool = new DirPool('default', path.join(tmp, 'pool'));
  await pool.init();
  const driver = new SimDriver();
  return {
    driver,
    workload: false,
    async makeSpec(name, config = {}) {
      const ref = { type: 'container' as const, project: 'default', name };
      await pool.createVolume(ref);
      // A workload that ignores SIGTERM is, for a simulation, a clean stop longer than any timeout.
      const stubborn: Record<string, string> = config['user.test.ignore_term'] === 'true' ? { 'sim.stop_delay': '600000' } : {};
      return {
        name,
        project: 'default',
        type: 'sim',
        config: { ...stubborn, ...config },
        devices: {},
        rootPath: pool.volumePath(ref),
        runtimeDir: path.join(tmp, 'run', name),
        mounts: [],
      };
    },
    async cleanup() {
      await fsp.rm(tmp, { recursive: true, force: true });
    },
  };
}

driverSuite('sim', simFixture);

describe('sim driver', () => {
  let fx: Awaited<ReturnType<typeof simFixture>>;
  before(async () => {
    fx = await simFixture();
  });
  after(async () => {
    await fx?.cleanup();
  });
  const newInstance = async (name: string, config: Record<string, string> = {}): Promise<InstanceSpec> => {
    const spec = await fx.makeSpec(name, config);
    await fx.driver.create(spec);
    return spec;
  };

  it('start and a clean stop take sim.start_delay and sim.stop_delay', async () => {
    const spec = await newInstance('slow', { 'sim.start_delay': '300', 'sim.stop_delay': '400' });
    let t0 = Date.now();
    await fx.driver.start(spec);
    assert.ok(Date.now() - t0 >= 290, `start took ${Date.now() - t0} ms`);
    t0 = Date.now();
    await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
    assert.ok(Date.now() - t0 >= 390, `stop took ${Date.now() - t0} ms`);
    assert.equal((await fx.driver.state(spec)).status, 'Stopped');
  });

  it('writes nothing into its root volume, and reports a pid no real process can have', async () => {
    const spec = await newInstance('empty');
    await fx.driver.start(spec);
    const st = await fx.driver.state(spec);
    assert.ok(st.pid >= 2 ** 22, `pid ${st.pid} is above Linux's PID_MAX_LIMIT`);
    assert.equal(st.processes, 1);
    await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
    assert.deepEqual(await fsp.readdir(spec.rootPath), []);
  });

  it('refuses to run commands, and to delete a running instance', async () => {
    const spec = await newInstance('nocommands');
    await fx.driver.start(spec);
    await assert.rejects(fx.driver.execInvocation(spec, ['true'], {}), (err: unknown) => err instanceof DriverError && /runs no commands/.test(err.message));
    await assert.rejects(fx.driver.delete(spec), DriverError);
    await fx.driver.stop(spec, { timeoutSeconds: 0, force: true });
    await fx.driver.delete(spec);
  });

  it('refuses to start without its root volume', async () => {
    const spec = await newInstance('rootless');
    await fsp.rm(spec.rootPath, { recursive: true });
    await assert.rejects(fx.driver.start(spec), (err: unknown) => err instanceof DriverError && /Root volume/.test(err.message));
    assert.equal((await fx.driver.state(spec)).status, 'Stopped');
  });
});

describe('sim instances in a cluster', () => {
  let c: TestCluster;
  before(async () => {
    c = await startCluster({ members: 2 });
  });
  after(async () => {
    await c?.stop();
  });

  it('are created, started and moved through the API, and keep running across a daemon restart', { timeout: 60_000 }, async () => {
    assertError(
      await c.raw('m01', 'POST', '/1.0/instances?target=m01', { json: { name: 'bad', type: 'sim', source: { type: 'none' }, config: { 'sim.stop_delay': 'soon' } } }),
      400,
      'Invalid value "soon" for config key "sim.stop_delay": must be a non-negative integer',
    );
    const client = c.client('m01');
    await client.runAsync('POST', '/1.0/instances?target=m01', { name: 'sim1', type: 'sim', source: { type: 'none' }, config: { 'sim.start_delay': '50' } });
    await client.runAsync('PUT', '/1.0/instances/sim1/state', { action: 'start' });
    let view = await c.instance('sim1');
    assert.deepEqual([view.status, view.location, (view as { type?: string }).type], ['Running', 'm01', 'sim']);

    await client.runAsync('POST', '/1.0/instances/sim1?target=m02', { name: 'sim1', migration: true });
    view = await c.instance('sim1', 'm02');
    assert.deepEqual([view.status, view.location], ['Running', 'm02']);
    assert.deepEqual(await fsp.readdir(c.instanceDir('m02', 'sim1')), [], 'an empty root volume arrived');
    assert.equal(await fsp.stat(c.instanceDir('m01', 'sim1')).catch(() => null), null, 'the source copy is gone');
    const store = await c.store();
    assert.equal((await store.range(keys.moves())).kvs.length, 0, 'the move journal is cleared');

    await c.kill('m02', 'SIGKILL');
    await c.restart('m02');
    await waitFor('sim1 reads Running after its member restarted', async () => (await c.instance('sim1')).status === 'Running');
  });
});
