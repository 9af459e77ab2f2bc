// The behaviour every instance driver must show (process, lxc and sim), run against a factory. It uses only
// the InstanceDriver interface, files the workload writes in its root volume, and files the suite puts there.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { InstanceDriver, InstanceSpec } from '../../src/instances/driver.js';
import { waitFor } from './wait.js';

/** What a driver's test file provides to run the shared suite. */
export interface DriverFixture {
  driver: InstanceDriver;
  /**
   * Whether instances run a workload that writes into their root volume; a simulated (sim) instance runs
   * none, and the suite then knows it runs from its state alone.
   */
  workload: boolean;
  /**
   * A spec for a new instance whose root volume exists, running a long-lived workload that appends to
   * `data.txt` in its root (with `workload`); `config` is merged in. With `user.test.ignore_term=true` the
   * workload ignores SIGTERM, or its clean stop outlasts any timeout (the fixture decides how).
   */
  makeSpec(name: string, config?: Record<string, string>): Promise<InstanceSpec>;
  /** Stops every instance the fixture made and removes its files. */
  cleanup(): Promise<void>;
}

/** Registers the shared instance-driver tests under `name`, each fixture built by `factory`. */
export function driverSuite(name: string, factory: () => Promise<DriverFixture>): void {
  describe(`instance driver: ${name}`, () => {
    let fx: DriverFixture;
    before(async () => {
      fx = await factory();
    });
    after(async () => {
      await fx?.cleanup();
    });

    const dataPath = (spec: InstanceSpec): string => path.join(spec.rootPath, 'data.txt');
    const dataSize = async (spec: InstanceSpec): Promise<number> =>
      fsp.stat(dataPath(spec)).then(
        (s) => s.size,
        () => 0,
      );
    /** Starts an instance and waits until its workload has written, so its signal handling is set up. */
    const startWorking = async (spec: InstanceSpec): Promise<void> => {
      const before = await dataSize(spec);
      await fx.driver.start(spec);
      if (fx.workload) await waitFor(`${spec.name} writes data.txt`, async () => (await dataSize(spec)) > before);
      else assert.equal((await fx.driver.state(spec)).status, 'Running');
    };
    const keptPath = (spec: InstanceSpec): string => path.join(spec.rootPath, 'kept.txt');
    const newInstance = async (instance: string, config?: Record<string, string>): Promise<InstanceSpec> => {
      const spec = await fx.makeSpec(instance, config);
      await fx.driver.create(spec);
      return spec;
    };

    it('a created instance is stopped until started', async () => {
      const spec = await newInstance('fresh');
      const st = await fx.driver.state(spec);
      assert.equal(st.status, 'Stopped');
      assert.equal(st.pid, 0);
      assert.equal(st.processes, 0);
    });

    it('start runs the instance and state reports it', async () => {
      const spec = await newInstance('runs');
      await startWorking(spec);
      const st = await fx.driver.state(spec);
      assert.equal(st.status, 'Running');
      assert.ok(st.pid > 0, `pid ${st.pid}`);
      assert.ok(st.processes >= 1, `processes ${st.processes}`);
      assert.ok(st.startedAt instanceof Date);
      assert.ok(Date.now() - st.startedAt.getTime() < 60_000, 'startedAt is recent');
      await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
    });

    it('a fresh driver object re-adopts a running instance', async () => {
      const spec = await newInstance('adopted');
      await startWorking(spec);
      const first = await fx.driver.state(spec);
      const other = await factory();
      try {
        const again = await other.driver.state(spec);
        assert.equal(again.status, 'Running');
        assert.equal(again.pid, first.pid);
        await other.driver.stop(spec, { timeoutSeconds: 10, force: false });
      } finally {
        await other.cleanup();
      }
      assert.equal((await fx.driver.state(spec)).status, 'Stopped');
    });

    it('stop ends the instance cleanly within its timeout', async () => {
      const spec = await newInstance('stops');
      await startWorking(spec);
      const { pid } = await fx.driver.state(spec);
      const t0 = Date.now();
      await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
      assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
      const st = await fx.driver.state(spec);
      assert.deepEqual(
        { status: st.status, pid: st.pid, processes: st.processes, startedAt: st.startedAt },
        { status: 'Stopped', pid: 0, processes: 0, startedAt: null },
      );
      assert.ok(await processGone(pid), `process ${pid} is gone`);
    });

    it('a workload that ignores SIGTERM is killed after the timeout', async () => {
      const spec = await newInstance('stubborn', { 'user.test.ignore_term': 'true' });
      await startWorking(spec);
      const { pid } = await fx.driver.state(spec);
      const t0 = Date.now();
      await fx.driver.stop(spec, { timeoutSeconds: 1, force: false });
      const took = Date.now() - t0;
      assert.ok(took >= 950, `waited only ${took} ms before killing`);
      assert.ok(took < 8_000, `took ${took} ms`);
      assert.equal((await fx.driver.state(spec)).status, 'Stopped');
      assert.ok(await processGone(pid), `process ${pid} is gone`);
    });

    it('force stop kills at once, even a workload that ignores SIGTERM', async () => {
      const spec = await newInstance('forced', { 'user.test.ignore_term': 'true' });
      await startWorking(spec);
      const { pid } = await fx.driver.state(spec);
      const t0 = Date.now();
      await fx.driver.stop(spec, { timeoutSeconds: 30, force: true });
      assert.ok(Date.now() - t0 < 3_000, `took ${Date.now() - t0} ms`);
      assert.equal((await fx.driver.state(spec)).status, 'Stopped');
      assert.ok(await processGone(pid), `process ${pid} is gone`);
    });

    it('starting a running instance changes nothing', async () => {
      const spec = await newInstance('twice');
      await startWorking(spec);
      const first = await fx.driver.state(spec);
      await fx.driver.start(spec);
      const second = await fx.driver.state(spec);
      assert.equal(second.status, 'Running');
      assert.equal(second.pid, first.pid);
      await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
    });

    it('stopping a stopped instance changes nothing', async () => {
      const spec = await newInstance('idle');
      await fx.driver.stop(spec, { timeoutSeconds: 1, force: false });
      await fx.driver.stop(spec, { timeoutSeconds: 0, force: true });
      assert.equal((await fx.driver.state(spec)).status, 'Stopped');
      await startWorking(spec);
      await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
      const t0 = Date.now();
      await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
      assert.ok(Date.now() - t0 < 1_000, 'the second stop returns at once');
      assert.equal((await fx.driver.state(spec)).status, 'Stopped');
    });

    it('delete after stop removes driver state but not the root volume', async () => {
      const spec = await newInstance('deleted');
      await fsp.writeFile(keptPath(spec), 'kept');
      await startWorking(spec);
      await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
      await fx.driver.delete(spec);
      assert.equal(await fsp.readFile(keptPath(spec), 'utf8'), 'kept', 'the root volume is storage’s to remove');
      if (fx.workload) assert.ok((await dataSize(spec)) > 0, 'what the workload wrote stays');
    });

    it('the root volume’s files persist across stop and start', async () => {
      const spec = await newInstance('persists');
      await fsp.writeFile(keptPath(spec), 'kept');
      await startWorking(spec);
      await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
      const before = fx.workload ? await fsp.readFile(dataPath(spec), 'utf8') : '';
      if (fx.workload) assert.ok(before.length > 0);
      await startWorking(spec);
      assert.equal(await fsp.readFile(keptPath(spec), 'utf8'), 'kept');
      if (fx.workload) {
        const afterRestart = await fsp.readFile(dataPath(spec), 'utf8');
        assert.ok(afterRestart.startsWith(before), 'earlier data kept');
        assert.ok(afterRestart.length > before.length, 'new data appended');
      }
      await fx.driver.stop(spec, { timeoutSeconds: 10, force: false });
    });
  });
}

/** True once `pid` has no live process: gone from /proc, or a zombie nobody has reaped yet. */
export async function processGone(pid: number): Promise<boolean> {
  try {
    const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 1).trim()[0];
    return state === 'Z' || state === 'X';
  } catch {
    return true;
  }
}
