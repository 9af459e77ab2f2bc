// The `process` instance driver: an instance is `/bin/sh -c <process.command>` running in its root volume, in
// its own session, detached from the daemon so that it outlives it. A pid file records the main pid and its
// kernel start time, which lets a later daemon re-adopt the instance and tell it apart from a reused pid.
// An instance is the session of its main process: when the main process ends the instance has stopped, and
// whatever else is left in the session is killed (as the kernel does to a container when its init dies).
// A workload that calls setsid itself escapes that session; cgroups (later) close that gap.

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { DriverError } from '../driver.js';
import { KeyedMutex } from '../../util/mutex.js';
import type { DriverCapabilities, ExecInvocation, ExecOptions, FilesRoot, InstanceDriver, InstanceRuntimeState, InstanceSpec, StopOptions } from '../driver.js';

const basePath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const pageSize = 4096;
const pidFileName = 'pid.json';
const logFileName = 'output.log';
const logTailLines = 20;

/** Tuning for the process driver; the defaults suit a daemon, tests may shorten them. */
export interface ProcessDriverOptions {
  /** How long start watches a new process for an immediate failure such as a command not found (ms). */
  startCheckMs?: number;
  /** How often stop looks at /proc while waiting for processes to end (ms). */
  pollMs?: number;
  /** How long stop waits after SIGKILL before reporting processes it cannot kill (seconds). */
  killWaitSeconds?: number;
}

/** What the pid file holds: enough to recognise the main process even after the daemon restarted. */
interface PidFile {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: clock ticks after boot, unique per pid between reboots. */
  startTime: number;
}

/** The fields of /proc/<pid>/stat that the driver uses. */
interface ProcStat {
  pid: number;
  state: string;
  session: number;
  startTime: number;
  rssPages: number;
}

/** Runs instances as detached host processes; needs nothing installed and no privileges. */
export class ProcessDriver implements InstanceDriver {
  readonly type = 'process';
  /** Pre-copy: the root volume is a plain directory the daemon can read while the process runs. */
  readonly capabilities: DriverCapabilities = { precopy: true, liveMigrate: false };
  private readonly startCheckMs: number;
  private readonly pollMs: number;
  private readonly killWaitMs: number;
  /** Per-instance queue, so that concurrent start/stop/delete of one instance cannot spawn it twice. */
  private readonly busy = new KeyedMutex();
  /** A /proc scan in progress, shared by concurrent state calls (listing many instances scans once). */
  private scanInFlight: Promise<ProcStat[]> | null = null;

  constructor(options: ProcessDriverOptions = {}) {
    this.startCheckMs = options.startCheckMs ?? 200;
    this.pollMs = options.pollMs ?? 50;
    this.killWaitMs = (options.killWaitSeconds ?? 10) * 1000;
  }

  async create(spec: InstanceSpec): Promise<void> {
    await fsp.mkdir(spec.runtimeDir, { recursive: true });
  }

  async start(spec: InstanceSpec): Promise<void> {
    await this.serialize(spec, async () => {
      const previous = await readPidFile(spec);
      if (previous) {
        if ((await mainStatus(previous)) === 'alive') return;
        await this.finish(spec, previous);
      }
      await this.launch(spec);
    });
  }

  async stop(spec: InstanceSpec, options: StopOptions): Promise<void> {
    await this.serialize(spec, async () => {
      const pidFile = await readPidFile(spec);
      if (!pidFile) return;
      if (!options.force && (await mainStatus(pidFile)) === 'alive') {
        const graceMs = Number.isFinite(options.timeoutSeconds) ? Math.max(0, options.timeoutSeconds) * 1000 : 0;
        const deadline = Date.now() + graceMs;
        signal(pidFile.pid, 'SIGTERM');
        // Waiting on the whole session, not the main pid: children that outlive the shell still count.
        await this.waitForEnd(pidFile, deadline);
      }
      await this.finish(spec, pidFile);
    });
  }

  async state(spec: InstanceSpec): Promise<InstanceRuntimeState> {
    const stopped: InstanceRuntimeState = { status: 'Stopped', pid: 0, processes: 0, startedAt: null, memoryBytes: 0 };
    const pidFile = await readPidFile(spec);
    if (!pidFile) return stopped;
    const main = await readStat(pidFile.pid);
    if (!main || !isOurs(main, pidFile) || !isLive(main)) {
      // Tidying up races a concurrent start writing a new pid file, so it takes the instance's turn; while
      // another operation holds it, that operation will tidy up instead.
      if (!this.busy.has(instanceKey(spec))) await this.serialize(spec, () => this.reapWithoutWaiting(spec, pidFile));
      return stopped;
    }
    const members = sessionMembers(await this.sharedScan(), pidFile.pid);
    // The shared scan may predate a process started a moment ago; the main process was just read directly.
    if (!members.some((p) => p.pid === main.pid)) members.push(main);
    const startedAt = await fsp.stat(pidFilePath(spec)).then(
      (s) => s.mtime,
      () => null,
    );
    return {
      status: 'Running',
      pid: pidFile.pid,
      processes: members.length,
      startedAt,
      memoryBytes: members.reduce((sum, p) => sum + p.rssPages * pageSize, 0),
    };
  }

  /** A command runs beside the instance's workload: same working directory (its root volume) and environment. */
  async execInvocation(spec: InstanceSpec, command: string[], options: ExecOptions): Promise<ExecInvocation> {
    const [file, ...args] = command;
    if (!file) throw new DriverError('exec needs a command');
    if ((await this.state(spec)).status !== 'Running') throw new DriverError('Instance is not running');
    const cwd = options.cwd ? path.join(spec.rootPath, path.resolve('/', options.cwd)) : spec.rootPath;
    if (!(await fsp.stat(cwd).catch(() => null))?.isDirectory()) {
      throw new DriverError(`Working directory "${options.cwd ?? '/'}" does not exist in instance "${spec.name}"`);
    }
    return { file, args, cwd, env: { ...instanceEnvironment(spec), ...(options.environment ?? {}) } };
  }

  /** The root volume is the instance's `/`; attached volumes appear where their links are. */
  async filesRoot(spec: InstanceSpec): Promise<FilesRoot> {
    return { root: spec.rootPath, mounts: spec.mounts.map((m) => ({ path: m.path, source: m.source })) };
  }

  async delete(spec: InstanceSpec): Promise<void> {
    await this.serialize(spec, async () => {
      const pidFile = await readPidFile(spec);
      if (pidFile) {
        if ((await mainStatus(pidFile)) === 'alive') {
          throw new DriverError(`Instance "${spec.name}" is running; stop it before deleting it`);
        }
        await this.finish(spec, pidFile);
      }
      await fsp.rm(spec.runtimeDir, { recursive: true, force: true });
    });
  }

  private async launch(spec: InstanceSpec): Promise<void> {
    const command = (spec.config['process.command'] ?? '').trim();
    if (command === '') throw new DriverError('Instance has no process.command');
    const rootStat = await fsp.stat(spec.rootPath).catch(() => null);
    if (!rootStat?.isDirectory()) {
      throw new DriverError(`Root volume of instance "${spec.name}" is missing (expected a directory at ${spec.rootPath})`);
    }
    await fsp.mkdir(spec.runtimeDir, { recursive: true });
    await linkMounts(spec);
    const env = instanceEnvironment(spec);

    const logPath = path.join(spec.runtimeDir, logFileName);
    const log = await fsp.open(logPath, 'a');
    const logStart = (await log.stat()).size;
    let child: ChildProcess;
    let exited: Promise<string>;
    try {
      child = spawn('/bin/sh', ['-c', command], {
        cwd: spec.rootPath,
        env,
        // Its own session and process group: no terminal signals from the daemon, and one group to signal.
        detached: true,
        stdio: ['ignore', log.fd, log.fd],
      });
      // Listening before anything is awaited: a command that dies at once is reaped, and its `exit` emitted,
      // during the first await, and an event nobody listened to is gone (start would wait for it forever).
      const spawned = child;
      exited = new Promise<string>((resolve) => {
        spawned.once('exit', (code, sig) => resolve(sig ? `killed by ${sig}` : `exit status ${code ?? 'unknown'}`));
        spawned.once('error', (err) => resolve(errorMessage(err)));
      });
    } catch (err) {
      throw new DriverError(`Cannot start instance "${spec.name}": ${errorMessage(err)}`, { cause: err });
    } finally {
      await log.close();
    }
    const pid = child.pid;
    if (pid === undefined) {
      throw new DriverError(`Cannot start instance "${spec.name}": ${await exited}`);
    }
    // The child stays referenced until the start check is over: awaiting the exit of an unreferenced child
    // leaves nothing holding the event loop, and a process with nothing else to do (a test) ends mid-start.
    try {
      const stat = await readStat(pid);
      const pidFile: PidFile = { pid, startTime: stat?.startTime ?? 0 };
      const failed = async (how: string): Promise<never> => {
        // Whatever the shell left behind (a background job) goes with it.
        await this.finish(spec, pidFile).catch(() => undefined);
        const tail = await logTail(logPath, logStart);
        throw new DriverError(
          `Instance "${spec.name}" stopped right after starting (${how})` + (tail ? `; last output:\n${tail}` : '; no output'),
        );
      };
      if (!stat || !isLive(stat)) return await failed(await exited);
      await writePidFile(spec, pidFile);
      const outcome = await Promise.race([exited, delay(this.startCheckMs, null)]);
      child.removeAllListeners('exit');
      child.removeAllListeners('error');
      if (outcome !== null) return await failed(outcome);
    } finally {
      // From now on the daemon's event loop must not wait for the instance: it outlives the daemon.
      child.unref();
    }
  }

  /** Kills whatever is left of the instance's session, waits until it is gone, and forgets the pid. */
  private async finish(spec: InstanceSpec, pidFile: PidFile): Promise<void> {
    let left = await remaining(pidFile);
    if (left.length > 0) {
      killAll(pidFile.pid, left);
      left = await this.waitForEnd(pidFile, Date.now() + this.killWaitMs);
      if (left.length > 0) {
        throw new DriverError(
          `Instance "${spec.name}" did not stop: processes ${left.join(', ')} survive SIGKILL (stuck in the kernel?)`,
        );
      }
    }
    await fsp.rm(pidFilePath(spec), { force: true });
  }

  /** For state(): a main process that ended takes its session with it, but state must not block on that. */
  private async reapWithoutWaiting(spec: InstanceSpec, seen: PidFile): Promise<void> {
    const pidFile = await readPidFile(spec);
    if (!pidFile || pidFile.pid !== seen.pid || pidFile.startTime !== seen.startTime) return;
    if ((await mainStatus(pidFile)) === 'alive') return;
    const left = await remaining(pidFile);
    if (left.length > 0) {
      killAll(pidFile.pid, left);
      // The pid file stays until a later call sees the session empty, so the stragglers are not forgotten.
      return;
    }
    await fsp.rm(pidFilePath(spec), { force: true });
  }

  /** Polls until no process of the instance is left or the deadline passes; returns the survivors. */
  private async waitForEnd(pidFile: PidFile, deadline: number): Promise<number[]> {
    for (;;) {
      const left = await remaining(pidFile);
      if (left.length === 0 || Date.now() >= deadline) return left;
      await delay(Math.min(this.pollMs, Math.max(1, deadline - Date.now())));
    }
  }

  private sharedScan(): Promise<ProcStat[]> {
    if (!this.scanInFlight) {
      this.scanInFlight = scanProcesses().finally(() => {
        this.scanInFlight = null;
      });
    }
    return this.scanInFlight;
  }

  private async serialize(spec: InstanceSpec, fn: () => Promise<void>): Promise<void> {
    await this.busy.run(instanceKey(spec), fn);
  }

}

function instanceKey(spec: InstanceSpec): string {
  return path.resolve(spec.runtimeDir);
}

function pidFilePath(spec: InstanceSpec): string {
  return path.join(spec.runtimeDir, pidFileName);
}

async function readPidFile(spec: InstanceSpec): Promise<PidFile | null> {
  let text: string;
  try {
    text = await fsp.readFile(pidFilePath(spec), 'utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return null;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  const pid = isRecord(parsed) ? parsed.pid : undefined;
  const startTime = isRecord(parsed) ? parsed.startTime : undefined;
  // pid 0, 1 or negative would turn kill(-pid) into "every process we may signal": never trust such a file.
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 1 || typeof startTime !== 'number') {
    await fsp.rm(pidFilePath(spec), { force: true });
    return null;
  }
  return { pid, startTime };
}

async function writePidFile(spec: InstanceSpec, pidFile: PidFile): Promise<void> {
  const target = pidFilePath(spec);
  const temp = `${target}.tmp`;
  await fsp.writeFile(temp, JSON.stringify(pidFile) + '\n');
  // A daemon crashing mid-write must not leave a half pid file that hides a running instance.
  await fsp.rename(temp, target);
}

/** The environment is built from scratch so nothing of the daemon's own environment leaks into instances. */
function instanceEnvironment(spec: InstanceSpec): Record<string, string> {
  const env: Record<string, string> = { PATH: basePath, HOME: spec.rootPath };
  for (const [key, value] of Object.entries(spec.config)) {
    if (!key.startsWith('environment.')) continue;
    const name = key.slice('environment.'.length);
    if (name === '' || name.includes('=') || name.includes('\0') || value.includes('\0')) {
      throw new DriverError(`Invalid environment variable in config key "${key}"`);
    }
    env[name] = value;
  }
  return env;
}

/**
 * Makes each attached custom volume appear at its device path inside the root volume. The path is walked
 * one component at a time, refusing symlinks, because the root volume's contents belong to the workload and
 * a planted link must not make the daemon create or replace files outside it.
 */
async function linkMounts(spec: InstanceSpec): Promise<void> {
  for (const mount of spec.mounts) {
    const parts = mount.path.split('/').filter((p) => p !== '' && p !== '.');
    const last = parts.pop();
    if (last === undefined || last === '..' || parts.includes('..')) {
      throw new DriverError(`Disk device "${mount.device}" of instance "${spec.name}" has an invalid path "${mount.path}"`);
    }
    let dir = spec.rootPath;
    for (const part of parts) {
      dir = path.join(dir, part);
      const st = await lstatOrNull(dir);
      if (!st) await fsp.mkdir(dir);
      else if (!st.isDirectory()) {
        throw new DriverError(
          `Cannot mount disk device "${mount.device}" at ${mount.path} in instance "${spec.name}": ` +
            `${path.relative(spec.rootPath, dir)} is not a directory`,
        );
      }
    }
    const link = path.join(dir, last);
    const existing = await lstatOrNull(link);
    if (existing && !existing.isSymbolicLink()) {
      throw new DriverError(
        `Cannot mount disk device "${mount.device}" at ${mount.path} in instance "${spec.name}": ` +
          'a file or directory is in the way',
      );
    }
    if (existing) {
      if ((await fsp.readlink(link)) === mount.source) continue;
      await fsp.unlink(link);
    }
    await fsp.symlink(mount.source, link);
  }
}

/** The last lines the instance wrote since `offset` (this start), for an error message. */
async function logTail(logPath: string, offset: number): Promise<string> {
  const text = await fsp.readFile(logPath).then(
    (b) => b.subarray(Math.max(offset, b.length - 8192)).toString('utf8'),
    () => '',
  );
  return text.trimEnd().split('\n').slice(-logTailLines).join('\n');
}

function parseStat(pid: number, text: string): ProcStat | null {
  // The command name (field 2) is in parentheses and may itself contain spaces and parentheses.
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const fields = text.slice(close + 1).trim().split(/\s+/);
  // fields[0] is field 3 of proc(5).
  const field = (n: number): number => Number(fields[n - 3]);
  const state = fields[0];
  if (state === undefined || fields.length < 22) return null;
  return { pid, state, session: field(6), startTime: field(22), rssPages: field(24) };
}

async function readStat(pid: number): Promise<ProcStat | null> {
  try {
    return parseStat(pid, await fsp.readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch (err) {
    const code = errorCode(err);
    if (code === 'ENOENT' || code === 'ESRCH') return null;
    throw err;
  }
}

async function scanProcesses(): Promise<ProcStat[]> {
  const pids = (await fsp.readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number);
  const stats = await Promise.all(pids.map(readStat));
  return stats.filter((s): s is ProcStat => s !== null);
}

/** Zombies (and exiting tasks) are dead: after a daemon restart init reaps them, or may never do so. */
function isLive(p: ProcStat): boolean {
  return p.state !== 'Z' && p.state !== 'X' && p.state !== 'x';
}

function isOurs(p: ProcStat, pidFile: PidFile): boolean {
  return p.startTime === pidFile.startTime;
}

async function mainStatus(pidFile: PidFile): Promise<'alive' | 'gone'> {
  const main = await readStat(pidFile.pid);
  return main && isOurs(main, pidFile) && isLive(main) ? 'alive' : 'gone';
}

function sessionMembers(procs: ProcStat[], session: number): ProcStat[] {
  return procs.filter((p) => p.session === session && isLive(p));
}

/**
 * Live processes of the instance's session. Linux keeps a pid number allocated while any process still uses
 * it as a session id, so if the main pid now belongs to a different process, our session is entirely gone
 * and processes with that session id belong to someone else.
 */
async function remaining(pidFile: PidFile): Promise<number[]> {
  const procs = await scanProcesses();
  const main = procs.find((p) => p.pid === pidFile.pid);
  if (main && !isOurs(main, pidFile)) return [];
  return sessionMembers(procs, pidFile.pid).map((p) => p.pid);
}

/** SIGKILL to the process group and to every session member, including any that left the group. */
function killAll(session: number, members: number[]): void {
  signal(session, 'SIGKILL');
  for (const pid of members) sendSignal(pid, 'SIGKILL');
}

/** Signals a process group; only called while the group's session is known to hold the number. */
function signal(pgid: number, sig: NodeJS.Signals): void {
  sendSignal(-pgid, sig);
}

function sendSignal(target: number, sig: NodeJS.Signals): void {
  // 0 and -1 (and ourselves) would hit the daemon or every process it may signal.
  if (Math.abs(target) <= 1 || Math.abs(target) === process.pid) return;
  try {
    process.kill(target, sig);
  } catch (err) {
    if (errorCode(err) !== 'ESRCH') throw err;
  }
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await fsp.lstat(p);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return null;
    throw err;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

function errorCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
