// Members on separate "hosts" of one machine, for the proof that nothing in Roost leans on a shared host:
// each roostd runs in its own network namespace, with its own address on a private bridge, and in its own
// mount namespace, where its data directory is bind-mounted over one common path and every other member's
// directory is hidden under a tmpfs; one more directory (`sharedPath`, the source of `shared` pools, as an NFS
// export mounted on every host) is bind-mounted into every member's namespace alike. The store is a real 3-node etcd in the root namespace, listening on the
// bridge's address only, which members reach over their veth link. The test process (root namespace, root)
// reaches a member's unix socket and data through `/proc/<daemon pid>/root/...`.
//
// Everything the harness creates carries a claimed number k (1..254): namespaces `roost-hosts-<k>-<member>`,
// links `rh<k>br` (bridge), `rh<k>h<i>` / `rh<k>n<i>` (veth ends), the subnet `<range>.<k>.0/24`. The claim is
// a file in /run/roost-hosts naming its owner (pid and start time); a run that died without cleaning up
// is swept by the next one, and a run that exits cleans up synchronously in `process.on('exit')`.
// A missing prerequisite (root, ip, unshare, etcd) throws: these tests fail, never skip.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Client } from 'undici';
import { RoostClient } from '../../src/client/client.js';
import { joinTokenOf } from '../../src/cluster/token.js';
import { LeaderElection } from '../../src/cluster/leader.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/store.js';
import { keys } from '../../src/store/schema.js';
import { launchInstance, rawRequest, waitFor, type ClusterView, type RawOptions } from './cluster.js';
import { requireEtcd, startEtcdCluster, type EtcdCluster } from './etcd.js';

/** Where claims of running harnesses live (one file per claimed number). */
const registryDir = '/run/roost-hosts';
/** Prefix of every network namespace the harness creates. */
const netnsPrefix = 'roost-hosts-';
/** /16 ranges tried in order; one that any address or route of the host touches is skipped. */
const candidateRanges = ['10.213', '10.219', '172.27'];
/** How long a member may take to answer after it was started (ms). */
const startTimeoutMs = 90_000;
/** The port every member's HTTPS listens on (each member has its own address). */
const memberPort = 8443;

const repoRoot = path.resolve(fileURLToPath(import.meta.url), '..', '..', '..');
/** `npm test` builds first and sets ROOST_DAEMON_BUILT=1: members and the CLI then run from dist/ (no compile at each start). */
const built = process.env.ROOST_DAEMON_BUILT === '1';
const entry = (concern: 'daemon' | 'cli'): string[] =>
  built ? [path.join(repoRoot, 'dist', concern, 'main.js')] : ['--import', 'tsx', path.join(repoRoot, 'src', concern, 'main.ts')];

/** How to start a cluster on several hosts. */
export interface HostsOptions {
  /** Members started (the first bootstraps, the others join with a token); default 3. */
  members?: number;
  /** `cluster.offline_threshold` in seconds, set right after bootstrap (default 3, so tests are fast). */
  offlineThreshold?: number;
}

/** The output of one CLI run. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A process of an instance as seen in a member's network namespace. */
export interface InstanceProcess {
  member: string;
  pid: number;
}

/** A cluster whose members live on separate hosts (network and mount namespaces). */
export interface HostsCluster extends ClusterView {
  /** The harness directory (members' data under `private/`, hidden from every member). */
  root: string;
  /** The members' subnet, `a.b.c.0/24`; the bridge (and etcd) is `a.b.c.1`. */
  subnet: string;
  /** The store URL every member uses (`etcd://<bridge>:<port>,...`). */
  storeUrl: string;
  etcd: EtcdCluster;
  /** The common path every member sees its own data directory at. */
  dataPath: string;
  /**
   * The path where every member sees one and the same directory (bind-mounted into each member's mount
   * namespace, as an NFS export would be mounted on each host): the source of a `shared` pool.
   */
  sharedPath: string;
  /** That directory as this process (root namespace) reaches it. */
  sharedBacking: string;
  /** A member's HTTPS address, `ip:port`. */
  address(member: string): string;
  /** The network namespace of a member. */
  netns(member: string): string;
  /** A join token for `name`, asked of member `via` through the API (what `roost cluster add` prints). */
  token(via: string, name: string): Promise<string>;
  /** Start a new member on its own host with `roostd --join <token>` (no store URL: the token carries it). */
  join(name: string, token: string): Promise<void>;
  /** Run the `roost` CLI against a member (`ROOST_DIR` through /proc). */
  cli(member: string, args: string[]): Promise<CliResult>;
  /** Take a member's link down: its processes keep running but reach neither etcd nor other members. */
  partition(member: string): Promise<void>;
  /** Bring a member's link up again. */
  heal(member: string): Promise<void>;
  /** A member's whole daemon log (every run of it). */
  log(member: string): string;
  /** The member running the drainer now, from the `drainer/leader` key. */
  leader(): Promise<string | null>;
  /** Main processes (session leaders) of an instance in every member's network namespace. */
  instanceProcesses(name: string): InstanceProcess[];
  /** The last lines of every member's and every etcd node's log, for a failure message. */
  report(lines?: number): string;
  /** The backing directory of a member's data (in the root namespace; for a dead member's leftovers). */
  backingDir(member: string): string;
}

interface Owner {
  pid: number;
  startTime: number;
}

/** What a claim file records, so a later run can remove what a crashed one left. */
interface Claim {
  owner: Owner;
  subnet: string;
  root: string;
  etcdDir: string | null;
  etcd: Owner[];
}

interface Host {
  name: string;
  index: number;
  netns: string;
  hostLink: string;
  ip: string;
  child: ChildProcess | null;
  exited: Promise<void> | null;
}

/** Field 22 of /proc/<pid>/stat, or null if the process is gone. */
function startTimeOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return null;
  }
}

function alive(owner: Owner): boolean {
  return startTimeOf(owner.pid) === owner.startTime;
}

function self(): Owner {
  return { pid: process.pid, startTime: startTimeOf(process.pid) ?? 0 };
}

/** Run `ip` with arguments; throws with its stderr on failure. */
function ip(args: string[]): string {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`ip ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Like `ip`, ignoring failure (cleanup of things that may be gone already). */
function ipQuiet(args: string[]): void {
  spawnSync('ip', args, { stdio: 'ignore' });
}

/** Throws (never skips) unless this process can build hosts: root, `ip`, `unshare`, etcd. */
export function requireHostsPrerequisites(): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new Error('the multi-host tests need root (network namespaces, bridges, mounts): run them as root');
  }
  for (const [command, pkg] of [['ip', 'iproute2'], ['unshare', 'util-linux'], ['mount', 'mount']] as const) {
    if (spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status !== 0) {
      throw new Error(`${command} is missing: the multi-host tests need it (apt-get install ${pkg})`);
    }
  }
  requireEtcd();
}

/** Names of the network namespaces on this host. */
export function netnsNames(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n !== '') : [];
}

/** Names of the network links of the root namespace. */
export function linkNames(): string[] {
  const r = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  if (r.status !== 0) return [];
  return r.stdout.split('\n').map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '').filter((n) => n !== '');
}

/** SIGKILL every process in a network namespace until none is left (they may fork meanwhile). */
function killNetns(netns: string): void {
  for (let round = 0; round < 20; round++) {
    const r = spawnSync('ip', ['netns', 'pids', netns], { encoding: 'utf8' });
    const pids = r.status === 0 ? r.stdout.split('\n').map(Number).filter((p) => p > 1) : [];
    if (pids.length === 0) return;
    for (const pid of pids) signal(pid, 'SIGKILL');
    spawnSync('sleep', ['0.05']);
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

/** Remove everything of claim number `k`: processes, namespaces, links, directories, the claim. */
function removeRun(k: number, claim: Claim | null): void {
  for (const e of claim?.etcd ?? []) {
    if (alive(e) && readFileSync(`/proc/${e.pid}/cmdline`, 'utf8').includes('etcd')) signal(e.pid, 'SIGKILL');
  }
  for (const ns of netnsNames().filter((n) => n.startsWith(`${netnsPrefix}${k}-`))) {
    killNetns(ns);
    ipQuiet(['netns', 'del', ns]);
  }
  const ours = new RegExp(`^rh${k}(br|h\\d+|n\\d+)$`);
  for (const link of linkNames().filter((l) => ours.test(l))) ipQuiet(['link', 'del', link]);
  for (const dir of [claim?.root, claim?.etcdDir]) {
    if (dir && path.basename(dir).startsWith('roost-')) rmSync(dir, { recursive: true, force: true });
  }
  rmSync(path.join(registryDir, `${k}.json`), { force: true });
}

/** Remove what earlier runs that died left behind: claims whose owner is gone, and unclaimed namespaces and links. */
function sweepLeftovers(): Set<number> {
  mkdirSync(registryDir, { recursive: true, mode: 0o700 });
  const live = new Set<number>();
  for (const file of readdirSync(registryDir)) {
    const m = /^(\d+)\.json$/.exec(file);
    if (!m) continue;
    const k = Number(m[1]);
    let claim: Claim | null = null;
    try {
      claim = JSON.parse(readFileSync(path.join(registryDir, file), 'utf8')) as Claim;
    } catch {
      claim = null;
    }
    if (claim && alive(claim.owner)) live.add(k);
    else removeRun(k, claim);
  }
  const unclaimed = new Set<number>();
  for (const ns of netnsNames()) {
    const m = new RegExp(`^${netnsPrefix}(\\d+)-`).exec(ns);
    if (m && !live.has(Number(m[1]))) unclaimed.add(Number(m[1]));
  }
  for (const link of linkNames()) {
    const m = /^rh(\d+)(br|h\d+|n\d+)$/.exec(link);
    if (m && !live.has(Number(m[1]))) unclaimed.add(Number(m[1]));
  }
  // A run that claimed its number after the registry was read has its claim file by now (it claims before it
  // creates anything), so what it creates is left alone.
  for (const k of unclaimed) if (!existsSync(path.join(registryDir, `${k}.json`))) removeRun(k, null);
  return live;
}

/** True if an IPv4 address (or network) string lies in the /16 `range` (`a.b`). */
function inRange(address: string, range: string): boolean {
  return address.startsWith(`${range}.`);
}

/** A /16 that nothing on the host uses, except our own bridges. */
function freeRange(): string {
  const addrs = spawnSync('ip', ['-o', '-4', 'addr', 'show'], { encoding: 'utf8' }).stdout ?? '';
  const routes = spawnSync('ip', ['-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' }).stdout ?? '';
  const foreign = [...addrs.split('\n'), ...routes.split('\n')].filter((l) => l.trim() !== '' && !/\brh\d+br\b/.test(l));
  for (const range of candidateRanges) {
    const used = foreign.some((l) => l.split(/\s+/).some((word) => inRange(word, range)));
    if (!used) return range;
  }
  throw new Error(`every private range the harness may use (${candidateRanges.map((r) => `${r}.0.0/16`).join(', ')}) is in use on this host`);
}

/** Claim a free number k (an exclusive file), recording the owner at once. */
function claimNumber(root: string, range: string): { k: number; claim: Claim } {
  const live = sweepLeftovers();
  for (let k = 1; k <= 254; k++) {
    if (live.has(k)) continue;
    const claim: Claim = { owner: self(), subnet: `${range}.${k}.0/24`, root, etcdDir: null, etcd: [] };
    try {
      writeFileSync(path.join(registryDir, `${k}.json`), JSON.stringify(claim), { flag: 'wx', mode: 0o600 });
      return { k, claim };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  throw new Error(`no free harness number in ${registryDir}`);
}

function saveClaim(k: number, claim: Claim): void {
  const file = path.join(registryDir, `${k}.json`);
  writeFileSync(`${file}.tmp`, JSON.stringify(claim), { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/** Runs torn down hard if the test process exits without `stop`. */
const liveRuns = new Map<number, Claim>();
process.on('exit', () => {
  for (const [k, claim] of liveRuns) removeRun(k, claim);
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    for (const [k, claim] of liveRuns) removeRun(k, claim);
    liveRuns.clear();
    process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
  });
}

/** True if `/proc/<pid>/cwd` is an instance's root volume (`.../containers/default_<name>`). */
function cwdIsInstance(pid: number, name: string): boolean {
  try {
    // In a member's `default` pool, or in any pool on a source of its own (the shared directory).
    return readlinkSync(`/proc/${pid}/cwd`).endsWith(`/containers/default_${name}`);
  } catch {
    return false;
  }
}

/** True if the process leads its own session (an instance's main process does). */
function leadsSession(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[3]) === pid && fields[0] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Start a cluster of `options.members` members, each on its own host; the first bootstraps on a fresh 3-node
 * etcd, the others join with tokens it hands out. Resolves when every member is Online.
 */
export async function startHosts(options: HostsOptions = {}): Promise<HostsCluster> {
  requireHostsPrerequisites();
  const count = options.members ?? 3;
  const root = await mkdtemp(path.join(os.tmpdir(), 'roost-hosts-'));
  const range = freeRange();
  const { k, claim } = claimNumber(root, range);
  liveRuns.set(k, claim);
  const prefix = `${range}.${k}`;
  const subnet = `${prefix}.0/24`;
  const bridge = `rh${k}br`;
  const bridgeIp = `${prefix}.1`;
  const privateDir = path.join(root, 'private');
  const logsDir = path.join(privateDir, 'logs');
  const dataPath = path.join(root, 'data');
  const sharedPath = path.join(root, 'shared');
  const sharedBacking = path.join(privateDir, 'shared');
  const hosts = new Map<string, Host>();
  const names: string[] = [];
  const clients = new Map<string, RoostClient>();
  const raws = new Map<string, Client>();
  let store: Store | null = null;
  let etcd: EtcdCluster | null = null;
  let stopped = false;

  const hostOf = (m: string): Host => {
    const h = hosts.get(m);
    if (!h) throw new Error(`no member "${m}" in this cluster`);
    return h;
  };
  const pid = (m: string): number | null => {
    const child = hosts.get(m)?.child;
    return child?.pid !== undefined && child.exitCode === null && child.signalCode === null ? child.pid : null;
  };
  const backingDir = (m: string): string => path.join(privateDir, m);
  /** Through the daemon's own mount namespace while it runs; its backing directory once it is dead. */
  const memberDir = (m: string): string => {
    const p = pid(m);
    return p !== null ? `/proc/${p}/root${dataPath}` : backingDir(m);
  };
  const socketOf = (m: string): string => {
    const p = pid(m);
    if (p === null) throw new Error(`the daemon of ${m} is not running`);
    return `/proc/${p}/root${dataPath}/unix.socket`;
  };
  const client = (m: string): RoostClient => {
    let c = clients.get(m);
    if (!c) {
      c = new RoostClient(socketOf(m));
      clients.set(m, c);
    }
    return c;
  };
  const rawClient = (m: string): Client => {
    let c = raws.get(m);
    if (!c) {
      c = new Client('http://unix.socket', { socketPath: socketOf(m), pipelining: 0 });
      raws.set(m, c);
    }
    return c;
  };
  const dropClients = async (m: string): Promise<void> => {
    const c = clients.get(m);
    const r = raws.get(m);
    clients.delete(m);
    raws.delete(m);
    await c?.close().catch(() => undefined);
    await r?.destroy().catch(() => undefined);
  };
  const log = (m: string): string => {
    try {
      return readFileSync(path.join(logsDir, `${m}.log`), 'utf8');
    } catch {
      return '(no log)';
    }
  };
  const logTail = (m: string, lines = 30): string => log(m).split('\n').slice(-lines).join('\n');

  /** A new host: its namespace, its veth on the bridge, its address. */
  const addHost = (name: string): Host => {
    const index = hosts.size + 1;
    if (index > 200) throw new Error('too many members for one harness subnet');
    const h: Host = { name, index, netns: `${netnsPrefix}${k}-${name}`, hostLink: `rh${k}h${index}`, ip: `${prefix}.${10 + index}`, child: null, exited: null };
    const inner = `rh${k}n${index}`;
    ip(['netns', 'add', h.netns]);
    ip(['link', 'add', h.hostLink, 'type', 'veth', 'peer', 'name', inner]);
    ip(['link', 'set', h.hostLink, 'master', bridge, 'up']);
    ip(['link', 'set', inner, 'netns', h.netns]);
    ip(['-n', h.netns, 'link', 'set', inner, 'name', 'eth0']);
    ip(['-n', h.netns, 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0']);
    ip(['-n', h.netns, 'link', 'set', 'eth0', 'up']);
    ip(['-n', h.netns, 'link', 'set', 'lo', 'up']);
    mkdirSync(backingDir(name), { recursive: true, mode: 0o700 });
    hosts.set(name, h);
    names.push(name);
    return h;
  };

  /** True if the member's socket answers GET /1.0. */
  const answers = async (m: string): Promise<boolean> => {
    const c = new RoostClient(socketOf(m));
    try {
      await c.get('/1.0');
      return true;
    } catch {
      return false;
    } finally {
      await c.close();
    }
  };

  /**
   * Start a member's daemon on its host: in its network namespace, in a new mount namespace where its backing
   * directory is bind-mounted over the common data path and the directory of every member's data is hidden.
   */
  const launch = async (h: Host, how: { bootstrap?: boolean; join?: string }): Promise<void> => {
    if (pid(h.name) !== null) throw new Error(`${h.name} is running already`);
    const fd = openSync(path.join(logsDir, `${h.name}.log`), 'a');
    const mounts = 'mount --bind "$1" "$2"; mount --bind "$4" "$5"; mount -t tmpfs -o size=1m,mode=0700 roost-hidden "$3"; shift 5; exec "$@"';
    const daemon = [
      process.execPath, ...entry('daemon'), '--name', h.name, '--dir', dataPath, '--address', `${h.ip}:${memberPort}`,
      ...(how.join ? ['--join', how.join] : ['--store', `${etcd?.url ?? ''}`]),
      ...(how.bootstrap ? ['--bootstrap'] : []),
    ];
    const child = spawn('ip', ['netns', 'exec', h.netns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-ec', mounts, 'roost-member', backingDir(h.name), dataPath, privateDir, sharedBacking, sharedPath, ...daemon], {
      cwd: repoRoot,
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ROOST_LOG_LEVEL: process.env.ROOST_LOG_LEVEL ?? 'info' },
    });
    closeSync(fd);
    h.child = child;
    h.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.unref();
    // Generous: a loaded CI machine may take long to start node and compile the sources.
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      if (pid(h.name) === null) throw new Error(`member ${h.name} exited while starting:\n${logTail(h.name, 20)}`);
      if (await answers(h.name)) return;
      if (Date.now() > deadline) throw new Error(`member ${h.name} did not answer within ${startTimeoutMs / 1000} s:\n${logTail(h.name, 20)}`);
      await delay(100);
    }
  };

  const kill = async (m: string, sig: NodeJS.Signals): Promise<void> => {
    const h = hostOf(m);
    const p = pid(m);
    if (p !== null) {
      process.kill(p, sig);
      const gone = await Promise.race([h.exited?.then(() => true), delay(15_000, false)]);
      if (!gone) {
        signal(p, 'SIGKILL');
        await h.exited;
      }
    }
    await dropClients(m);
  };

  const token = async (via: string, name: string): Promise<string> => {
    const res = await client(via).request('POST', '/1.0/cluster/members', { server_name: name });
    return joinTokenOf(res.metadata);
  };

  const cluster: HostsCluster = {
    root,
    subnet,
    get storeUrl() {
      return etcd?.url ?? '';
    },
    get etcd() {
      if (!etcd) throw new Error('etcd is not running');
      return etcd;
    },
    dataPath,
    sharedPath,
    sharedBacking,
    names,
    memberDir,
    backingDir,
    client,
    raw: (m: string, method: string, urlPath: string, o: RawOptions = {}) => rawRequest(rawClient(m), method, urlPath, o),
    launch: (name, o) => launchInstance(client(o.target), name, o),
    async instance(name, via) {
      return (await client(via ?? names.find((n) => pid(n) !== null) ?? names[0] ?? '').get(`/1.0/instances/${name}?recursion=1`)) as Awaited<ReturnType<ClusterView['instance']>>;
    },
    async store() {
      store ??= await openStore(cluster.storeUrl);
      return store;
    },
    instanceDir: (m, name) => path.join(memberDir(m), 'storage-pools', 'default', 'containers', `default_${name}`),
    volumeDir: (m, name) => path.join(memberDir(m), 'storage-pools', 'default', 'custom', `default_${name}`),
    stagingDir: (m) => path.join(memberDir(m), 'storage-pools', 'default', '.staging'),
    pid,
    kill,
    async restart(m) {
      // A daemon killed from outside (an operator's command) may still be dying, or be gone before its exit
      // event reached this process: give it a few seconds before calling it still running.
      const h = hostOf(m);
      if (pid(m) !== null) await Promise.race([h.exited, delay(10_000)]);
      await dropClients(m);
      await launch(hostOf(m), {});
    },
    logTail,
    log,
    address: (m) => `${hostOf(m).ip}:${memberPort}`,
    netns: (m) => hostOf(m).netns,
    token,
    async join(name, joinToken) {
      await launch(addHost(name), { join: joinToken });
    },
    async cli(m, args) {
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [...entry('cli'), ...args], {
          cwd: repoRoot,
          env: { ...process.env, ROOST_DIR: memberDir(m), HOME: root, XDG_CONFIG_HOME: path.join(root, 'config') },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.once('error', reject);
        child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
      });
    },
    async partition(m) {
      ip(['link', 'set', hostOf(m).hostLink, 'down']);
    },
    async heal(m) {
      ip(['link', 'set', hostOf(m).hostLink, 'up']);
    },
    async leader() {
      return (await LeaderElection.read(await cluster.store(), keys.drainerLeader()))?.member ?? null;
    },
    report(lines = 25) {
      // Long lines (errors with stacks) are cut, so that every member's tail fits in one failure message.
      const tail = (m: string): string => logTail(m, lines).split('\n').map((l) => (l.length > 400 ? `${l.slice(0, 400)}…` : l)).join('\n');
      const members = names.map((m) => `--- ${m} (${pid(m) === null ? 'not running' : `pid ${pid(m) ?? ''}`}) ---\n${tail(m)}`);
      const nodes = etcd ? [0, 1, 2].map((i) => `--- etcd n${i} ---\n${etcd?.logTail(i, 10) ?? ''}`) : [];
      return [...members, ...nodes].join('\n');
    },
    instanceProcesses(name) {
      const out: InstanceProcess[] = [];
      for (const h of hosts.values()) {
        const r = spawnSync('ip', ['netns', 'pids', h.netns], { encoding: 'utf8' });
        for (const p of (r.stdout ?? '').split('\n').map(Number).filter((x) => x > 1)) {
          if (leadsSession(p) && cwdIsInstance(p, name)) out.push({ member: h.name, pid: p });
        }
      }
      return out;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const m of [...new Set([...clients.keys(), ...raws.keys()])]) await dropClients(m);
      await store?.close().catch(() => undefined);
      for (const h of hosts.values()) {
        const p = pid(h.name);
        if (p !== null) signal(p, 'SIGKILL');
        killNetns(h.netns);
      }
      await Promise.all([...hosts.values()].map((h) => h.exited));
      await etcd?.stopAll().catch(() => undefined);
      // ROOST_HOSTS_KEEP_LOGS=<dir> keeps the members' logs of every run there (for a look after the fact).
      const keep = process.env.ROOST_HOSTS_KEEP_LOGS;
      if (keep) cpSync(logsDir, path.join(keep, path.basename(root)), { recursive: true });
      removeRun(k, claim);
      liveRuns.delete(k);
    },
  };

  try {
    mkdirSync(logsDir, { recursive: true, mode: 0o700 });
    mkdirSync(dataPath, { recursive: true, mode: 0o700 });
    mkdirSync(sharedPath, { recursive: true, mode: 0o700 });
    mkdirSync(sharedBacking, { recursive: true, mode: 0o700 });
    ip(['link', 'add', bridge, 'type', 'bridge']);
    // A fixed (locally administered) address: a bridge left to choose takes the lowest of its ports' addresses,
    // so a member joining with a lower one changed it, and the members already there kept sending to the old
    // one (their ARP entry for the bridge, that is for etcd) until it went stale: each lost the store for 5-10 s.
    ip(['link', 'set', bridge, 'address', `02:52:4f:53:54:${(k % 256).toString(16).padStart(2, '0')}`]);
    ip(['addr', 'add', `${bridgeIp}/24`, 'dev', bridge]);
    ip(['link', 'set', bridge, 'up']);
    // Data on tmpfs when there is one (no fsync stalls from other work on the disk), and elections that ride out
    // a busy machine; leases still live well under the 3 s offline threshold the suites use.
    etcd = await startEtcdCluster({ clientHost: bridgeIp, dataParent: existsSync('/dev/shm') ? '/dev/shm' : undefined, electionTimeoutMs: 1000 });
    claim.etcdDir = etcd.dir;
    claim.etcd = [0, 1, 2].map((i) => etcd?.pid(i)).filter((p): p is number => typeof p === 'number').map((p) => ({ pid: p, startTime: startTimeOf(p) ?? 0 }));
    saveClaim(k, claim);

    const first = addHost('m1');
    await launch(first, { bootstrap: true });
    const threshold = options.offlineThreshold ?? 3;
    await client('m1').request('PATCH', '/1.0', { config: { 'cluster.offline_threshold': String(threshold) } });
    // The drainer's leader takes a new term for a new lease length (within 2 s). Wait for m1's term under the new
    // length before anyone joins, so that m1 leads, as the suites expect, rather than whoever joined at that moment.
    if (threshold !== 20) {
      await waitFor('m1 runs the drainer with the new lease length', async () => {
        const leader = await LeaderElection.read(await cluster.store(), keys.drainerLeader());
        // The record names its lease length: a term m1 began just before the change still has the old one.
        return leader?.member === 'm1' && leader.leaseSeconds === threshold;
      }, 20_000);
    }
    for (let i = 2; i <= count; i++) await cluster.join(`m${i}`, await token('m1', `m${i}`));
    let seen = '';
    await waitFor('every member is Online', async () => {
      const list = (await client('m1').get('/1.0/cluster/members?recursion=1')) as { server_name: string; status: string; message: string }[];
      seen = list.map((x) => `${x.server_name}=${x.status} (${x.message})`).join(', ');
      return list.length === count && list.every((x) => x.status === 'Online');
    }, 20_000).catch((err: unknown) => {
      throw new Error(`${err instanceof Error ? err.message : String(err)}; members: ${seen}`);
    });
  } catch (err) {
    const logs = cluster.report(15);
    await cluster.stop();
    throw new Error(`could not start the cluster: ${err instanceof Error ? err.message : String(err)}\n${logs}`);
  }
  return cluster;
}
