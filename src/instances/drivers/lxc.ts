// The `lxc` instance driver (`type: container`): a system container run by the LXC tools from Debian's `lxc`
// package, with the instance's root volume as its rootfs. Each member has its own lxcpath; the driver writes
// the container's config there from the spec on every create and start, and LXC's own monitor process keeps
// the container alive without the daemon (`lxc-start -d`), so a later daemon re-adopts it by asking LXC.
// LXC names its cgroups after the container name alone, whatever the lxcpath, so names carry the member's
// name and a hash of (member, project, name): two members on one host never share a container name.
// Never `lxc-destroy`: it deletes the rootfs, which here is the root volume and belongs to storage.

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { DriverError } from '../driver.js';
import { KeyedMutex } from '../../util/mutex.js';
import type { DriverCapabilities, ExecInvocation, ExecOptions, FilesRoot, InstanceDriver, InstanceRuntimeState, InstanceSpec, StopOptions } from '../driver.js';
import { parseBytes } from '../../util/units.js';

const configFileName = 'config';
const seccompFileName = 'seccomp';
const lxcLogName = 'lxc.log';
const consoleLogName = 'console.log';
const logTailLines = 25;
/**
 * The device allow-list of LXC's common.conf: mknod of anything, but reading and writing only the harmless
 * devices that LXC's autodev creates (a privileged container could otherwise open the host's disks).
 * common.conf itself is not included because it pulls in common.conf.d, whose content depends on what else
 * is installed: Debian's lxcfs adds a post-stop hook that sleeps 0.5 s on every stop, lxcfs running or not.
 */
const deviceRules = [
  'a',
  'c *:* m',
  'b *:* m',
  // null, zero, full, random, urandom; tty, console, ptmx; ptys; fuse.
  ...['c 1:3', 'c 1:5', 'c 1:7', 'c 1:8', 'c 1:9', 'c 5:0', 'c 5:1', 'c 5:2', 'c 136:*', 'c 10:229'].map((d) => `${d} rwm`),
];
/** common.conf's seccomp policy: the syscalls a privileged container could use to change the host kernel. */
const seccompPolicy = `2
denylist
reject_force_umount
[all]
kexec_load errno 1
open_by_handle_at errno 1
init_module errno 1
finit_module errno 1
delete_module errno 1
`;
const cpuPeriodUs = 100_000;
/** PATH of commands run in a container, as LXD sets it (and of the LXC tools on the host). */
const containerPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Linux's user-visible clock tick (USER_HZ), the unit of /proc/<pid>/stat start times on every architecture. */
const clockTicksPerSecond = 100;
/**
 * Runs an LXC tool with the umask a kernel gives init (022), which the container's init and what `exec` runs
 * inherit: a container is a booted system, and the daemon's own umask (077, for its private files) would make
 * everything its workloads create readable by its owner only.
 */
const asBootedSystem = (command: string, args: string[]): [string, string[]] => ['/bin/sh', ['-c', 'umask 022 && exec "$0" "$@"', command, ...args]];
const stoppedState: InstanceRuntimeState = { status: 'Stopped', pid: 0, processes: 0, startedAt: null, memoryBytes: 0 };

/** Where the driver keeps its containers and whose they are. */
export interface LxcDriverOptions {
  /** This member's private lxcpath (e.g. `<data dir>/lxc`): one directory per container, holding its config. */
  lxcPath: string;
  /** This member's name, part of every LXC container name because LXC cgroup names are host-global. */
  memberName: string;
  /** Seconds `start` waits for the container to reach RUNNING (default 10). */
  startTimeoutSeconds?: number;
}

/** What `lxc-info` says about a container. */
interface LxcInfo {
  state: string;
  pid: number;
}

/** The result of running one LXC tool. */
interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs system containers through the LXC command-line tools; needs root and Debian's `lxc` package. */
export class LxcDriver implements InstanceDriver {
  readonly type = 'container';
  // The rootfs is a plain directory on the host, readable while the container runs: pre-copy works.
  readonly capabilities: DriverCapabilities = { precopy: true, liveMigrate: false };
  private readonly lxcPath: string;
  private readonly memberName: string;
  private readonly startTimeoutSeconds: number;
  /** Per-instance queue, so that concurrent start/stop/delete of one instance cannot race each other. */
  private readonly busy = new KeyedMutex();

  constructor(options: LxcDriverOptions) {
    if (options.memberName.trim() === '') throw new DriverError('The lxc driver needs a member name');
    this.lxcPath = path.resolve(options.lxcPath);
    this.memberName = options.memberName;
    this.startTimeoutSeconds = options.startTimeoutSeconds ?? 10;
  }

  /** The host-wide LXC container name of an instance on this member. */
  lxcName(spec: InstanceSpec): string {
    return lxcContainerName(this.memberName, spec.project, spec.name);
  }

  async create(spec: InstanceSpec): Promise<void> {
    await this.serialize(spec, async () => {
      await fsp.mkdir(spec.runtimeDir, { recursive: true });
      await this.writeConfig(spec);
    });
  }

  async start(spec: InstanceSpec): Promise<void> {
    await this.serialize(spec, async () => {
      const name = this.lxcName(spec);
      const info = await this.info(name);
      if (info && info.state !== 'STOPPED') {
        if (info.state === 'RUNNING' || info.state === 'FROZEN') return;
        throw new DriverError(`Instance "${spec.name}" is ${info.state.toLowerCase()}; try again when it has settled`);
      }
      const rootStat = await fsp.stat(spec.rootPath).catch(() => null);
      if (!rootStat?.isDirectory()) {
        throw new DriverError(`Root volume of instance "${spec.name}" is missing (expected a directory at ${spec.rootPath})`);
      }
      await fsp.mkdir(spec.runtimeDir, { recursive: true });
      await this.writeConfig(spec);
      await prepareMountPoints(spec);
      const logPath = path.join(spec.runtimeDir, lxcLogName);
      // One run's logs at a time, plus the previous run's: bounded, and the error tail is this start's own.
      await rotate(logPath);
      await rotate(path.join(spec.runtimeDir, consoleLogName));

      const started = await runTool(...asBootedSystem('lxc-start', ['-P', this.lxcPath, '-n', name, '-d', '-o', logPath, '-l', 'INFO']), 30_000);
      if (started.code !== 0) await this.failed(spec, name, 'lxc-start failed', toolMessage(started));
      const t = this.startTimeoutSeconds;
      const waited = await runTool('lxc-wait', ['-P', this.lxcPath, '-n', name, '-s', 'RUNNING', '-t', String(t)], (t + 10) * 1000);
      if (waited.code !== 0) await this.failed(spec, name, `not running after ${t} s`);
      // lxc-start -d returns once init has been exec'd; an init that dies at once shows here.
      const after = await this.info(name);
      if (after?.state !== 'RUNNING') await this.failed(spec, name, `its init exited (state ${after?.state ?? 'unknown'})`);
    });
  }

  async stop(spec: InstanceSpec, options: StopOptions): Promise<void> {
    await this.serialize(spec, async () => {
      const name = this.lxcName(spec);
      const info = await this.info(name);
      if (!info || info.state === 'STOPPED') return;
      const base = ['-P', this.lxcPath, '-n', name];
      const graceSeconds = Number.isFinite(options.timeoutSeconds) ? Math.max(0, Math.ceil(options.timeoutSeconds)) : 0;
      if (!options.force && graceSeconds > 0) {
        // lxc-stop sends the halt signal (SIGPWR unless the config says otherwise) and, when the timeout
        // passes, kills the container itself; the -k below covers lxc-stop failing or being cut off.
        await runTool('lxc-stop', [...base, '-t', String(graceSeconds)], (graceSeconds + 30) * 1000);
        if ((await this.info(name))?.state === 'STOPPED') return;
      }
      const killed = await runTool('lxc-stop', [...base, '-k'], 30_000);
      const now = await this.info(name);
      if (now && now.state !== 'STOPPED') {
        throw new DriverError(`Instance "${spec.name}" did not stop (state ${now.state}): ${toolMessage(killed)}`);
      }
    });
  }

  async state(spec: InstanceSpec): Promise<InstanceRuntimeState> {
    const info = await this.info(this.lxcName(spec));
    if (!info || info.state === 'STOPPED' || info.pid <= 0) return { ...stoppedState };
    const status = info.state === 'FROZEN' || info.state === 'FREEZING' ? 'Frozen' : info.state === 'ABORTING' ? 'Error' : 'Running';
    const [processes, memoryBytes, startedAt] = await Promise.all([
      countProcesses(info.pid),
      memoryUsage(info.pid),
      processStartTime(info.pid),
    ]);
    return { status, pid: info.pid, processes: Math.max(1, processes), startedAt, memoryBytes };
  }

  /**
   * A command runs through `lxc-attach` with a clean environment, as LXD's exec: PATH, HOME, USER and
   * LANG as LXD sets them, then the instance's `environment.*` keys, then the request's. Given a
   * terminal, lxc-attach opens one inside the container for the command.
   */
  async execInvocation(spec: InstanceSpec, command: string[], options: ExecOptions): Promise<ExecInvocation> {
    if (command.length === 0) throw new DriverError('exec needs a command');
    if ((await this.state(spec)).status !== 'Running') throw new DriverError('Instance is not running');
    const env: Record<string, string> = { PATH: containerPath, HOME: '/root', USER: 'root', LANG: 'C.UTF-8' };
    for (const [key, value] of Object.entries(spec.config)) {
      if (key.startsWith('environment.') && key.length > 'environment.'.length) env[key.slice('environment.'.length)] = value;
    }
    Object.assign(env, options.environment ?? {});
    for (const [k, v] of Object.entries(env)) {
      if (k === '' || k.includes('=') || /\0/.test(k + v)) throw new DriverError(`Invalid environment variable "${k}"`);
    }
    // lxc-attach has no working-directory option: a shell changes into it, then becomes the command. Without
    // one it is LXD's default, /root, or / where the image has none.
    const argv = options.cwd
      ? ['/bin/sh', '-c', 'cd -- "$1" && shift && exec "$@"', 'sh', options.cwd, ...command]
      : ['/bin/sh', '-c', 'cd /root 2>/dev/null || cd /; exec "$@"', 'sh', ...command];
    // Through a shell that sets a booted system's umask first (`exec` keeps the pid, so signals still reach it).
    const [file, args] = asBootedSystem('lxc-attach', ['-P', this.lxcPath, '-n', this.lxcName(spec), '--clear-env', ...Object.entries(env).flatMap(([k, v]) => ['-v', `${k}=${v}`]), '--', ...argv]);
    return {
      file,
      args,
      env: { PATH: containerPath },
      cwd: '/',
      signalTarget: attachedProcess,
    };
  }

  /** A running container's files are seen through its init (its mounts included); a stopped one's are its rootfs. */
  async filesRoot(spec: InstanceSpec): Promise<FilesRoot> {
    const info = await this.info(this.lxcName(spec));
    if (info && info.state === 'RUNNING' && info.pid > 1) return { root: `/proc/${info.pid}/root`, mounts: [] };
    return { root: spec.rootPath, mounts: [] };
  }

  async delete(spec: InstanceSpec): Promise<void> {
    await this.serialize(spec, async () => {
      const name = this.lxcName(spec);
      const info = await this.info(name);
      if (info && info.state !== 'STOPPED') {
        throw new DriverError(`Instance "${spec.name}" is running; stop it before deleting it`);
      }
      // Only LXC's directory for the container (its config); the rootfs it points at is the root volume.
      await fsp.rm(path.join(this.lxcPath, name), { recursive: true, force: true });
      await fsp.rm(spec.runtimeDir, { recursive: true, force: true });
    });
  }

  /** The LXC config this driver writes for `spec`; public so that tests and diagnostics can show it. */
  async renderConfig(spec: InstanceSpec): Promise<string> {
    return renderLxcConfig(spec, {
      cgroupV2: await isPureCgroupV2(),
      apparmor: await appArmorEnabled(),
      seccompPath: path.join(this.lxcPath, this.lxcName(spec), seccompFileName),
    });
  }

  private async writeConfig(spec: InstanceSpec): Promise<void> {
    const text = await this.renderConfig(spec);
    const dir = path.join(this.lxcPath, this.lxcName(spec));
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(path.join(dir, seccompFileName), seccompPolicy);
    const target = path.join(dir, configFileName);
    const temp = `${target}.tmp`;
    await fsp.writeFile(temp, text);
    // LXC tools read the config at any time (lxc-info from another daemon); never let them see half of it.
    await fsp.rename(temp, target);
  }

  /** lxc-info's view, or null if LXC does not know the container (no config directory). */
  private async info(name: string): Promise<LxcInfo | null> {
    if (!(await exists(path.join(this.lxcPath, name, configFileName)))) return null;
    const r = await runTool('lxc-info', ['-P', this.lxcPath, '-n', name, '-s', '-p', '-H'], 10_000);
    if (r.code !== 0) {
      if (/doesn't exist/.test(r.stderr + r.stdout)) return null;
      throw new DriverError(`Cannot read the state of container ${name}: ${toolMessage(r)}`);
    }
    const field = (label: string): string => new RegExp(`^${label}:\\s*(\\S+)`, 'm').exec(r.stdout)?.[1] ?? '';
    const state = field('State');
    if (state === '') throw new DriverError(`Cannot read the state of container ${name}: lxc-info printed "${r.stdout.trim()}"`);
    const pid = Number(field('PID'));
    return { state, pid: Number.isInteger(pid) && pid > 1 ? pid : 0 };
  }

  /** Makes sure nothing is left of a failed start, then reports it with the end of LXC's log. */
  private async failed(spec: InstanceSpec, name: string, how: string, toolOutput = ''): Promise<never> {
    await runTool('lxc-stop', ['-P', this.lxcPath, '-n', name, '-k'], 30_000).catch(() => undefined);
    await removeMonitorCgroups(name);
    const lxcLog = lxcLogSummary(await logTail(path.join(spec.runtimeDir, lxcLogName)));
    const consoleLog = await logTail(path.join(spec.runtimeDir, consoleLogName));
    throw new DriverError(
      `Cannot start instance "${spec.name}" (${how})` +
        (lxcLog ? `; LXC log:\n${lxcLog}` : toolOutput ? `: ${toolOutput}` : '') +
        (consoleLog ? `\nConsole:\n${consoleLog}` : ''),
    );
  }

  private async serialize(spec: InstanceSpec, fn: () => Promise<void>): Promise<void> {
    await this.busy.run(this.lxcName(spec), fn);
  }

}

/**
 * The LXC container name of instance `project/name` on member `member`: readable, limited to characters
 * that are safe in file names and cgroup names, and made unique by a hash of the exact triple (sanitising
 * alone could map `a-b/c` and `a/b-c` to one name).
 */
export function lxcContainerName(member: string, project: string, name: string): string {
  const clean = (s: string): string => s.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^[.-]+/, '');
  const hash = createHash('sha256').update(`${member}\0${project}\0${name}`).digest('hex').slice(0, 8);
  const readable = `roost-${clean(member)}-${clean(project)}-${clean(name)}`.slice(0, 80).replace(/[.-]+$/, '');
  return `${readable}-${hash}`;
}

/** What the host offers, which decides some config lines. */
interface HostFacts {
  /** /sys/fs/cgroup is cgroup2 only; LXC ignores `lxc.cgroup2.*` keys on legacy and hybrid hosts. */
  cgroupV2: boolean;
  apparmor: boolean;
  /** Where the container's seccomp policy file is. */
  seccompPath: string;
}

/** The LXC config for an instance, built from its spec alone, so it can be rewritten on every start. */
function renderLxcConfig(spec: InstanceSpec, host: HostFacts): string {
  const lines: string[] = [`# Written by roost for instance ${spec.project}/${spec.name}; rewritten on every start.`];
  const set = (key: string, value: string): void => {
    // A newline in a value would smuggle in further config keys.
    if (/[\0\n\r]/.test(value)) throw new DriverError(`Invalid character in LXC config value for ${key} of instance "${spec.name}"`);
    lines.push(`${key} = ${value}`);
  };
  set('lxc.uts.name', spec.name);
  set('lxc.rootfs.path', `dir:${path.resolve(spec.rootPath)}`);
  set('lxc.init.cmd', '/sbin/init');
  // No network until NIC devices exist: the container gets its own network namespace with loopback only.
  set('lxc.net.0.type', 'empty');
  if (!host.apparmor) set('lxc.apparmor.profile', 'unconfined');
  // An empty /dev from LXC (the image ships none); no ttys: nothing logs in, `lxc-attach` uses ptys.
  set('lxc.autodev', '1');
  set('lxc.tty.max', '0');
  set('lxc.pty.max', '64');
  set('lxc.mount.auto', 'proc:mixed sys:mixed cgroup:mixed');
  set('lxc.cap.drop', 'mac_admin mac_override sys_time sys_module sys_rawio');
  set('lxc.seccomp.profile', host.seccompPath);
  // Only the keys of the host's cgroup layout: LXC warns about, and ignores, the others.
  const devices = host.cgroupV2 ? 'lxc.cgroup2.devices' : 'lxc.cgroup.devices';
  for (const [i, rule] of deviceRules.entries()) set(i === 0 ? `${devices}.deny` : `${devices}.allow`, rule);
  // With lxc-start -d nobody reads the console; keeping it in a file shows why a container failed to boot.
  set('lxc.console.logfile', path.join(path.resolve(spec.runtimeDir), consoleLogName));
  for (const mount of spec.mounts) set('lxc.mount.entry', mountEntry(spec, mount));
  for (const [key, value] of cgroupLimits(spec, host.cgroupV2)) set(key, value);
  return lines.join('\n') + '\n';
}

/** The components of a mount's path inside the rootfs; refuses a path that names a way out of it. */
function mountTarget(spec: InstanceSpec, mount: InstanceSpec['mounts'][number]): string[] {
  const parts = mount.path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..')) {
    throw new DriverError(`Disk device "${mount.device}" of instance "${spec.name}" has an invalid path "${mount.path}"`);
  }
  return parts;
}

/**
 * One `lxc.mount.entry` (fstab syntax) binding a custom volume to its device path inside the rootfs. No
 * `create=dir`: LXC 5 creates missing directories following symlinks in the rootfs, so a link planted by the
 * workload would make it create directories anywhere on the host; the driver creates them (prepareMountPoints).
 * LXC itself refuses to mount through a symlink.
 */
function mountEntry(spec: InstanceSpec, mount: InstanceSpec['mounts'][number]): string {
  const parts = mountTarget(spec, mount);
  if (!path.isAbsolute(mount.source)) {
    throw new DriverError(`Disk device "${mount.device}" of instance "${spec.name}" has a relative source "${mount.source}"`);
  }
  const options = ['bind'];
  if (spec.devices[mount.device]?.readonly === 'true') options.push('ro');
  return `${fstabEscape(mount.source)} ${fstabEscape(parts.join('/'))} none ${options.join(',')} 0 0`;
}

/**
 * Creates each mount point in the rootfs one component at a time, refusing symlinks and files on the way:
 * the rootfs belongs to the workload, and the container is stopped, so nothing can swap a component after
 * it was checked.
 */
async function prepareMountPoints(spec: InstanceSpec): Promise<void> {
  for (const mount of spec.mounts) {
    const source = await fsp.stat(mount.source).catch(() => null);
    if (!source?.isDirectory()) {
      throw new DriverError(`Disk device "${mount.device}" of instance "${spec.name}": volume directory ${mount.source} is missing`);
    }
    let dir = spec.rootPath;
    for (const part of mountTarget(spec, mount)) {
      dir = path.join(dir, part);
      const st = await fsp.lstat(dir).catch(() => null);
      if (!st) await fsp.mkdir(dir, { mode: 0o755 });
      else if (!st.isDirectory()) {
        throw new DriverError(
          `Cannot mount disk device "${mount.device}" at ${mount.path} in instance "${spec.name}": ` +
            `${path.relative(spec.rootPath, dir)} is ${st.isSymbolicLink() ? 'a symlink' : 'not a directory'}`,
        );
      }
    }
  }
}

/** fstab's octal escapes, which LXC's mount-entry parser (getmntent) decodes. */
function fstabEscape(s: string): string {
  return s.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/** `limits.cpu` (a CPU count, as CFS quota) and `limits.memory`, as the cgroup keys of the host's layout. */
function cgroupLimits(spec: InstanceSpec, v2: boolean): [string, string][] {
  const out: [string, string][] = [];
  const cpu = (spec.config['limits.cpu'] ?? '').trim();
  if (cpu !== '') {
    if (!/^\d+$/.test(cpu) || Number(cpu) <= 0) {
      throw new DriverError(`Invalid limits.cpu "${cpu}" for instance "${spec.name}": must be a positive integer`);
    }
    const quota = Number(cpu) * cpuPeriodUs;
    if (v2) out.push(['lxc.cgroup2.cpu.max', `${quota} ${cpuPeriodUs}`]);
    else out.push(['lxc.cgroup.cpu.cfs_period_us', String(cpuPeriodUs)], ['lxc.cgroup.cpu.cfs_quota_us', String(quota)]);
  }
  const memory = (spec.config['limits.memory'] ?? '').trim();
  if (memory !== '') {
    const bytes = parseBytes(memory);
    if (bytes === null || bytes <= 0) {
      throw new DriverError(`Invalid limits.memory "${memory}" for instance "${spec.name}": must be a size such as 512MiB`);
    }
    // cgroups count in pages; a limit that is not a page multiple is rounded by the kernel anyway.
    out.push(v2 ? ['lxc.cgroup2.memory.max', String(bytes)] : ['lxc.cgroup.memory.limit_in_bytes', String(bytes)]);
  }
  return out;
}

/** A mounted cgroup hierarchy, from /proc/self/mountinfo. */
interface CgroupMount {
  version: 1 | 2;
  mountPoint: string;
  /** The hierarchy path mounted there (`/` unless the mount is of a sub-tree). */
  root: string;
  /** v1 controllers (and `name=` hierarchies) of the mount; empty for v2. */
  controllers: string[];
}

async function cgroupMounts(): Promise<CgroupMount[]> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const mounts: CgroupMount[] = [];
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const fields = left.split(' ');
    const [fstype, , superOptions = ''] = right.split(' ');
    const root = unescapeMountinfo(fields[3] ?? '/');
    const mountPoint = unescapeMountinfo(fields[4] ?? '');
    if (fstype === 'cgroup2') mounts.push({ version: 2, mountPoint, root, controllers: [] });
    if (fstype === 'cgroup') {
      const controllers = superOptions.split(',').filter((o) => o.startsWith('name=') || (o !== 'rw' && o !== 'ro' && !o.includes('=')));
      mounts.push({ version: 1, mountPoint, root, controllers });
    }
  }
  return mounts;
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** True if /sys/fs/cgroup is a pure cgroup2 mount, the only layout on which LXC applies `lxc.cgroup2.*`. */
async function isPureCgroupV2(): Promise<boolean> {
  const mounts = await cgroupMounts();
  return mounts.some((m) => m.version === 2 && m.mountPoint === '/sys/fs/cgroup');
}

/**
 * The directory of process `pid`'s cgroup for `controller`, from `/proc/<pid>/cgroup`: on the v1 hierarchy
 * carrying that controller if there is one, else on the v2 hierarchy. Null if the process is gone.
 */
export async function findCgroupDir(pid: number, controller: string): Promise<{ dir: string; version: 1 | 2 } | null> {
  let text: string;
  try {
    text = await fsp.readFile(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return null;
  }
  const mounts = await cgroupMounts();
  const entries = text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const first = l.indexOf(':');
      const second = l.indexOf(':', first + 1);
      return { id: l.slice(0, first), controllers: l.slice(first + 1, second).split(','), cgroup: l.slice(second + 1) };
    });
  const inMount = (m: CgroupMount, cgroup: string): string | null => {
    const rel = path.posix.relative(m.root, cgroup);
    return rel.startsWith('..') ? null : path.join(m.mountPoint, rel);
  };
  const v1 = entries.find((e) => e.id !== '0' && e.controllers.includes(controller));
  if (v1) {
    for (const m of mounts) {
      if (m.version !== 1 || !m.controllers.includes(controller)) continue;
      const dir = inMount(m, v1.cgroup);
      if (dir) return { dir, version: 1 };
    }
  }
  const v2 = entries.find((e) => e.id === '0');
  if (v2) {
    for (const m of mounts) {
      if (m.version !== 2) continue;
      const dir = inMount(m, v2.cgroup);
      if (dir && (await exists(dir))) return { dir, version: 2 };
    }
  }
  return null;
}

/**
 * Removes the empty `lxc.monitor.<name>` cgroups that LXC 5 leaves behind when a daemonised start fails (it
 * tries while its monitor is still inside them). LXC puts them under PID 1's cgroup unless told otherwise;
 * rmdir only ever removes an empty cgroup, so a live one is safe.
 */
async function removeMonitorCgroups(name: string): Promise<void> {
  const [mounts, initCgroups] = await Promise.all([
    cgroupMounts(),
    fsp.readFile('/proc/1/cgroup', 'utf8').catch(() => ''),
  ]);
  const monitor = `lxc.monitor.${name}`;
  for (const m of mounts) {
    const line = initCgroups
      .split('\n')
      .map((l) => l.split(':'))
      .find(([id, controllers]) => (m.version === 2 ? id === '0' : (controllers ?? '').split(',').some((c) => m.controllers.includes(c))));
    const rel = path.posix.relative(m.root, line?.slice(2).join(':') || '/');
    if (rel.startsWith('..')) continue;
    const base = path.join(m.mountPoint, rel);
    const entries = await fsp.readdir(base).catch(() => [] as string[]);
    for (const entry of entries) {
      if (entry !== monitor && !(entry.startsWith(`${monitor}-`) && /^\d+$/.test(entry.slice(monitor.length + 1)))) continue;
      await fsp.rmdir(path.join(base, entry)).catch(() => undefined);
    }
  }
}

/** Processes in the container: every pid in its cgroup and the cgroups below (LXC and the guest nest them). */
async function countProcesses(pid: number): Promise<number> {
  const found = await findCgroupDir(pid, 'pids');
  if (!found) return 0;
  const pids = new Set<string>();
  const walk = async (dir: string, depth: number): Promise<void> => {
    const procs = await fsp.readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
    for (const p of procs.split('\n')) if (p !== '') pids.add(p);
    if (depth >= 8) return;
    const children = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
    await Promise.all(children.filter((c) => c.isDirectory()).map((c) => walk(path.join(dir, c.name), depth + 1)));
  };
  await walk(found.dir, 0);
  return pids.size;
}

/** The container's memory use as its memory cgroup counts it (page cache included, as LXD reports it). */
async function memoryUsage(pid: number): Promise<number> {
  const found = await findCgroupDir(pid, 'memory');
  if (!found) return 0;
  const file = found.version === 1 ? 'memory.usage_in_bytes' : 'memory.current';
  const value = Number((await fsp.readFile(path.join(found.dir, file), 'utf8').catch(() => '')).trim());
  return Number.isFinite(value) ? value : 0;
}

/** When process `pid` started, from its start time in clock ticks after boot and the boot time. */
async function processStartTime(pid: number): Promise<Date | null> {
  try {
    const [stat, procStat] = await Promise.all([fsp.readFile(`/proc/${pid}/stat`, 'utf8'), fsp.readFile('/proc/stat', 'utf8')]);
    // Field 22; the command name (field 2) is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/);
    const ticks = Number(fields[22 - 3]);
    const btime = Number(/^btime\s+(\d+)/m.exec(procStat)?.[1]);
    if (!Number.isFinite(ticks) || !Number.isFinite(btime)) return null;
    return new Date(btime * 1000 + (ticks * 1000) / clockTicksPerSecond);
  } catch {
    return null;
  }
}

/**
 * The command `lxc-attach` (pid `attachPid`) runs: its first descendant inside another pid namespace (the
 * container's), since lxc-attach forks into the container and does not pass signals on. `attachPid` itself
 * while that process does not exist yet or is gone.
 */
async function attachedProcess(attachPid: number): Promise<number> {
  const own = await fsp.readlink(`/proc/${attachPid}/ns/pid`).catch(() => null);
  if (own === null) return attachPid;
  const parents = new Map<number, number[]>();
  for (const entry of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await fsp.readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/)[1]);
    if (!Number.isInteger(ppid)) continue;
    parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)]);
  }
  // Breadth first: the topmost process in the container's namespace is the command, its children come later.
  const queue = [...(parents.get(attachPid) ?? [])];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    const ns = await fsp.readlink(`/proc/${pid}/ns/pid`).catch(() => null);
    if (ns !== null && ns !== own) return pid;
    queue.push(...(parents.get(pid) ?? []));
  }
  return attachPid;
}

async function appArmorEnabled(): Promise<boolean> {
  const text = await fsp.readFile('/sys/module/apparmor/parameters/enabled', 'utf8').catch(() => 'N');
  return text.trim() === 'Y';
}

/** Runs an LXC tool without a shell; a tool that cannot be run at all is reported as the user's problem. */
function runTool(command: string, args: string[], timeoutMs: number): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code === 'string') {
        const hint = err.code === 'ENOENT' ? ' (install it with: apt-get install -y lxc)' : '';
        reject(new DriverError(`Cannot run ${command}: ${err.message}${hint}`, { cause: err }));
        return;
      }
      if (err?.killed) {
        resolve({ code: -1, stdout, stderr: `${command} timed out after ${timeoutMs / 1000} s. ${stderr}` });
        return;
      }
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** What a failed tool said, on one line: LXC tools print the cause first and generic advice after it. */
function toolMessage(r: ToolResult): string {
  const text = (r.stderr.trim() || r.stdout.trim() || `exit status ${r.code}`).split('\n').map((l) => l.trim());
  return text.filter((l) => l !== '').join('; ').slice(0, 500);
}

async function rotate(file: string): Promise<void> {
  await fsp.rename(file, `${file}.old`).catch(() => undefined);
}

/**
 * The part of a start's LXC log worth showing: its errors without LXC's per-line prefix (tool, container,
 * timestamp), or the tail if there are none. Warnings are left out: LXC logs many harmless ones.
 */
function lxcLogSummary(tail: string): string {
  const lines = tail.split('\n').filter((l) => l !== '');
  const errors = lines.filter((l) => /\s(ERROR|CRIT|ALERT|FATAL)\s/.test(l));
  return (errors.length > 0 ? errors.slice(-12) : lines).map((l) => l.replace(/^\S+ \S+ \d+\.\d+\s+/, '')).join('\n');
}

async function logTail(file: string): Promise<string> {
  const text = await fsp.readFile(file).then(
    (b) => b.subarray(Math.max(0, b.length - 8192)).toString('utf8'),
    () => '',
  );
  return text.trimEnd().split('\n').slice(-logTailLines).join('\n');
}

async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(
    () => true,
    () => false,
  );
}
