// The real LXD for the comparison: Debian's `lxd` installed if missing (and nothing its install started
// left running), and a throw-away cluster of LXD daemons on loopback addresses, each started by hand with
// its own LXD_DIR (there is no systemd here), bootstrapped and joined with preseeds, and taken down again
// by PID with nothing left mounted, looped or running.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { chmod, mkdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { killStrayContainers, strayContainers } from '../../test/containers/support.js';
import { onPath, runTool, runToolOk } from './command.js';

/** Programs the `lxd` package ships that could be left running by its install. */
const lxdPrograms = ['lxd', 'lxcfs'];

/** Pids of running processes whose executable is one of `names`. */
function pidsRunning(names: string[]): Map<number, string> {
  const found = new Map<number, string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const exe = path.basename(readlinkSync(`/proc/${entry}/exe`));
      if (names.includes(exe)) found.set(Number(entry), exe);
    } catch {
      // gone, or a kernel thread
    }
  }
  return found;
}

/** True while a process with this pid exists (and is not a zombie). */
export function processRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
async function endProcess(pid: number, graceMs: number): Promise<void> {
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(pid, s);
    } catch {
      // already gone
    }
  };
  if (!processRunning(pid)) return;
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (processRunning(pid) && Date.now() < deadline) await delay(100);
  if (!processRunning(pid)) return;
  signal('SIGKILL');
  while (processRunning(pid)) await delay(50);
}

/**
 * Install Debian's `lxd` unless the `lxd` command exists. The package may try to start its services; this
 * host has no systemd (and usually a policy-rc.d that forbids it), but whatever it did start (an `lxd` or
 * `lxcfs` that was not running before) is stopped again by its pid.
 */
export async function ensureLxdInstalled(log: (line: string) => void): Promise<void> {
  if (await onPath('lxd')) return;
  log('lxd is missing: apt-get install -y lxd');
  const before = pidsRunning(lxdPrograms);
  await runToolOk('apt-get', ['install', '-y', 'lxd'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeoutMs: 15 * 60_000 });
  for (const [pid, program] of pidsRunning(lxdPrograms)) {
    if (before.has(pid)) continue;
    log(`the install started ${program} (pid ${pid}): stopping it`);
    if (program === 'lxd') await runTool('lxd', ['shutdown', '--timeout', '30'], { env: { ...process.env, LXD_DIR: '/var/lib/lxd' }, timeoutMs: 60_000 });
    await endProcess(pid, 10_000);
  }
  if (!(await onPath('lxd'))) throw new Error('apt-get install -y lxd succeeded but there is still no lxd command');
}

/** A TCP port that is free on every one of `addresses` right now. */
export async function freePortOn(addresses: string[]): Promise<number> {
  const listen = (host: string, port: number): Promise<number | null> =>
    new Promise((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(null));
      server.listen(port, host, () => {
        const address = server.address();
        const bound = typeof address === 'object' && address ? address.port : null;
        server.close(() => resolve(bound));
      });
    });
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await listen(addresses[0] ?? '127.0.0.1', 0);
    if (port === null) continue;
    const others = await Promise.all(addresses.slice(1).map((a) => listen(a, port)));
    if (others.every((p) => p === port)) return port;
  }
  throw new Error(`no TCP port free on all of ${addresses.join(', ')}`);
}

/** One LXD daemon of the cluster. */
export interface LxdMember {
  name: string;
  /** Its loopback address, where it listens for the cluster and the API. */
  address: string;
  /** Its LXD_DIR. */
  dir: string;
  /** The `lxd` daemon this process started. */
  child: ChildProcess;
}

/** Mount points at or below `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const decode = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => decode(line.split(' ')[4] ?? ''))
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/**
 * A cluster of real LXD daemons in `root` (one LXD_DIR per member under it). `up` brings it up; `down`
 * ends the daemons it started and removes `root`, whatever state `up` reached.
 */
export class LxdCluster {
  readonly members: LxdMember[] = [];
  private port = 0;

  constructor(readonly root: string) {}

  /** The environment that points the `lxc` client (and `lxd` subcommands) at `member`. */
  env(member: string): NodeJS.ProcessEnv {
    const m = this.member(member);
    return { ...process.env, LXD_DIR: m.dir, LXD_CONF: path.join(this.root, 'lxc-conf') };
  }

  /** A member by name. */
  member(name: string): LxdMember {
    const m = this.members.find((x) => x.name === name);
    if (!m) throw new Error(`no LXD member ${name}`);
    return m;
  }

  /**
   * Start one daemon per name on the matching address, bootstrap the first with a `dir` pool `default` and
   * a default profile with a root disk and no network device (`lxd init --auto` would want a free bridge
   * subnet), and join the others with a token each.
   */
  async up(names: string[], addresses: string[]): Promise<void> {
    // Unprivileged containers run as a mapped root that must be able to traverse down to their rootfs
    // (mkdtemp makes the root 0700), as through /var/lib/lxd (0711) of a packaged install.
    await chmod(this.root, 0o711);
    this.port = await freePortOn(addresses);
    for (const [i, name] of names.entries()) {
      const m = await this.startDaemon(name, addresses[i] ?? '');
      if (i === 0) {
        await this.preseed(m, {
          config: { 'core.https_address': `${m.address}:${this.port}` },
          cluster: { server_name: name, enabled: true },
          storage_pools: [{ name: 'default', driver: 'dir', config: {} }],
          profiles: [{ name: 'default', devices: { root: { type: 'disk', path: '/', pool: 'default' } } }],
        });
        continue;
      }
      const first = this.members[0] as LxdMember;
      const added = await runToolOk('lxc', ['cluster', 'add', name], { env: this.env(first.name), timeoutMs: 60_000 });
      const token = added.trim().split('\n').pop()?.trim() ?? '';
      if (!/^[A-Za-z0-9+/=]{40,}$/.test(token)) throw new Error(`lxc cluster add ${name} printed no join token: ${added}`);
      await this.preseed(m, {
        cluster: {
          enabled: true,
          server_name: name,
          server_address: `${m.address}:${this.port}`,
          cluster_token: token,
          member_config: [{ entity: 'storage-pool', name: 'default', key: 'source', value: '' }],
        },
      });
    }
    const listed = await runToolOk('lxc', ['cluster', 'list', '--format', 'csv'], { env: this.env(names[0] ?? ''), timeoutMs: 60_000 });
    const online = listed.split('\n').filter((l) => l.includes(',ONLINE,')).length;
    if (online !== names.length) throw new Error(`the LXD cluster has ${online} of ${names.length} members online:\n${listed}`);
  }

  private async startDaemon(name: string, address: string): Promise<LxdMember> {
    const dir = path.join(this.root, name);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    const logFd = openSync(path.join(this.root, `${name}.log`), 'a', 0o600);
    let child: ChildProcess;
    try {
      // Its own process group: a Ctrl-C in the terminal reaches this benchmark, whose cleanup ends it.
      child = spawn('lxd', ['--group', 'root'], { env: { ...process.env, LXD_DIR: dir }, stdio: ['ignore', logFd, logFd], detached: true });
    } finally {
      closeSync(logFd);
    }
    const m: LxdMember = { name, address, dir, child };
    this.members.push(m);
    const ready = await runTool('lxd', ['waitready', '--timeout', '120'], { env: { ...process.env, LXD_DIR: dir }, timeoutMs: 150_000 });
    if (ready.code !== 0) throw new Error(`lxd ${name} did not get ready: ${ready.stderr.trim()}\n${this.logTail(name)}`);
    return m;
  }

  private async preseed(m: LxdMember, seed: unknown): Promise<void> {
    // JSON is YAML: no YAML writer needed for a preseed.
    const r = await runTool('lxd', ['init', '--preseed'], { env: { ...process.env, LXD_DIR: m.dir }, input: JSON.stringify(seed), timeoutMs: 180_000 });
    if (r.code !== 0) throw new Error(`lxd init --preseed on ${m.name} failed: ${(r.stderr || r.stdout).trim()}\n${this.logTail(m.name)}`);
  }

  /** The end of a member's daemon log, for error messages. */
  logTail(name: string, lines = 15): string {
    try {
      return readFileSync(path.join(this.root, `${name}.log`), 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /**
   * End every daemon this cluster started (`lxd shutdown` with its LXD_DIR, then by pid), kill any
   * container monitor still running under `root`, detach loop devices backed by files under it, unmount
   * what is mounted under it, and remove it. Returns what it had to force, for the report.
   */
  async down(): Promise<string[]> {
    const notes: string[] = [];
    await Promise.all(
      this.members.map(async (m) => {
        const pid = m.child.pid;
        if (pid === undefined || m.child.exitCode !== null || m.child.signalCode !== null) return;
        const r = await runTool('lxd', ['shutdown', '--timeout', '60'], { env: { ...process.env, LXD_DIR: m.dir }, timeoutMs: 90_000 });
        if (r.code !== 0) notes.push(`lxd shutdown of ${m.name} exited ${r.code}: ${r.stderr.trim()}`);
        const deadline = Date.now() + 15_000;
        while (processRunning(pid) && Date.now() < deadline) await delay(100);
        if (processRunning(pid)) {
          notes.push(`lxd ${m.name} (pid ${pid}) was still running after lxd shutdown: ended by signal`);
          await endProcess(pid, 10_000);
        }
      }),
    );
    const stray = strayContainers(this.root);
    if (stray.length > 0) {
      notes.push(`killed ${stray.length} container(s) still running under ${this.root}`);
      killStrayContainers(this.root);
    }
    const loops = await runTool('losetup', ['-n', '-l', '-O', 'NAME,BACK-FILE'], { timeoutMs: 10_000 });
    for (const line of loops.stdout.split('\n')) {
      const [device, backing] = line.trim().split(/\s+/, 2);
      if (device && backing && backing.startsWith(`${this.root}/`)) {
        notes.push(`detached loop device ${device} (${backing})`);
        await runTool('losetup', ['-d', device], { timeoutMs: 10_000 });
      }
    }
    for (const mount of mountsUnder(this.root)) {
      const r = await runTool('umount', ['-l', mount], { timeoutMs: 30_000 });
      if (r.code !== 0) notes.push(`umount ${mount} failed: ${r.stderr.trim()}`);
    }
    const left = mountsUnder(this.root);
    // Removing a tree with something still mounted in it would delete whatever that mount shows.
    if (left.length > 0) throw new Error(`still mounted under ${this.root}, not removed: ${left.join(', ')}`);
    if (existsSync(this.root)) await rm(this.root, { recursive: true, force: true });
    return notes;
  }
}
