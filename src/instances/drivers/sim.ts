// The `sim` instance driver: an instance that runs nothing, for scale simulation and benchmarks only (never
// the default type). Its state is a small file in its runtime directory, so a restarted daemon finds it as it
// was, like a real instance; starting and stopping take fixed delays (`sim.start_delay`, `sim.stop_delay`, in
// ms); it writes nothing into its root volume, so a move copies an empty tree but still goes through the whole
// journal, copy and commit path. A stop delay longer than the stop's timeout plays a workload that ignores the
// clean shutdown: it is "killed" when the timeout runs out.

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { configValue } from '../../config/keys.js';
import { KeyedMutex } from '../../util/mutex.js';
import { DriverError } from '../driver.js';
import type { DriverCapabilities, ExecInvocation, FilesRoot, InstanceDriver, InstanceRuntimeState, InstanceSpec, StopOptions } from '../driver.js';

const stateFileName = 'sim.json';
/**
 * Linux's PID_MAX_LIMIT (2^22): no process can have a pid at or above it, so a simulated instance reports a
 * pid that nothing (a kill, a /proc lookup) can ever mistake for a real process.
 */
const firstSimulatedPid = 2 ** 22;
const stopped: InstanceRuntimeState = { status: 'Stopped', pid: 0, processes: 0, startedAt: null, memoryBytes: 0 };

/** What the state file holds while the instance "runs"; no file means stopped. */
interface SimState {
  pid: number;
  startedAt: string;
}

/** Runs simulated instances: no process, no bytes, fixed start and stop delays. */
export class SimDriver implements InstanceDriver {
  readonly type = 'sim';
  /** A simulated root volume can be read while "running", as a process instance's can. */
  readonly capabilities: DriverCapabilities = { precopy: true, liveMigrate: false };
  /** Per-instance queue, so a stop never overtakes a start still in its delay. */
  private readonly busy = new KeyedMutex();

  async create(spec: InstanceSpec): Promise<void> {
    await fsp.mkdir(spec.runtimeDir, { recursive: true });
  }

  async start(spec: InstanceSpec): Promise<void> {
    await this.busy.run(instanceKey(spec), async () => {
      if (await readState(spec)) return;
      const root = await fsp.stat(spec.rootPath).catch(() => null);
      if (!root?.isDirectory()) {
        throw new DriverError(`Root volume of instance "${spec.name}" is missing (expected a directory at ${spec.rootPath})`);
      }
      await delay(delayMs(spec, 'sim.start_delay'));
      await writeState(spec, { pid: simulatedPid(spec), startedAt: new Date().toISOString() });
    });
  }

  async stop(spec: InstanceSpec, options: StopOptions): Promise<void> {
    await this.busy.run(instanceKey(spec), async () => {
      if (!(await readState(spec))) return;
      if (!options.force) {
        const graceMs = Number.isFinite(options.timeoutSeconds) ? Math.max(0, options.timeoutSeconds) * 1000 : 0;
        // A clean stop takes its delay; one that would outlast the timeout is cut short there, as a kill is.
        await delay(Math.min(delayMs(spec, 'sim.stop_delay'), graceMs));
      }
      await fsp.rm(statePath(spec), { force: true });
    });
  }

  async state(spec: InstanceSpec): Promise<InstanceRuntimeState> {
    const state = await readState(spec);
    if (!state) return stopped;
    return { status: 'Running', pid: state.pid, processes: 1, startedAt: new Date(state.startedAt), memoryBytes: 0 };
  }

  async delete(spec: InstanceSpec): Promise<void> {
    await this.busy.run(instanceKey(spec), async () => {
      if (await readState(spec)) throw new DriverError(`Instance "${spec.name}" is running; stop it before deleting it`);
      await fsp.rm(spec.runtimeDir, { recursive: true, force: true });
    });
  }

  /** Nothing runs inside a simulated instance, so there is nothing to run a command beside. */
  async execInvocation(spec: InstanceSpec): Promise<ExecInvocation> {
    throw new DriverError(`Instance "${spec.name}" is simulated (type sim): it runs no commands`);
  }

  /** Its (empty) root volume is its `/`, so file push and pull work as on a process instance. */
  async filesRoot(spec: InstanceSpec): Promise<FilesRoot> {
    return { root: spec.rootPath, mounts: spec.mounts.map((m) => ({ path: m.path, source: m.source })) };
  }
}

function instanceKey(spec: InstanceSpec): string {
  return path.resolve(spec.runtimeDir);
}

function statePath(spec: InstanceSpec): string {
  return path.join(spec.runtimeDir, stateFileName);
}

function delayMs(spec: InstanceSpec, key: 'sim.start_delay' | 'sim.stop_delay'): number {
  const ms = Number(configValue('instance', spec.config, key));
  return Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/** A stable pid per instance, above every real one (see `firstSimulatedPid`). */
function simulatedPid(spec: InstanceSpec): number {
  let hash = 0;
  for (const c of `${spec.project}/${spec.name}`) hash = (hash * 31 + (c.codePointAt(0) ?? 0)) % 1_000_000;
  return firstSimulatedPid + hash;
}

async function readState(spec: InstanceSpec): Promise<SimState | null> {
  let text: string;
  try {
    text = await fsp.readFile(statePath(spec), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as Partial<SimState>;
    if (typeof parsed.pid === 'number' && typeof parsed.startedAt === 'string') return { pid: parsed.pid, startedAt: parsed.startedAt };
  } catch {
    // A torn file cannot happen (written by rename); anything else unreadable reads as stopped.
  }
  return null;
}

async function writeState(spec: InstanceSpec, state: SimState): Promise<void> {
  await fsp.mkdir(spec.runtimeDir, { recursive: true });
  const target = statePath(spec);
  const temp = `${target}.tmp`;
  await fsp.writeFile(temp, `${JSON.stringify(state)}\n`);
  // A daemon crashing mid-write must not leave half a state file.
  await fsp.rename(temp, target);
}
