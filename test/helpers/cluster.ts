// A real local cluster for end-to-end tests: N roostd processes (current sources, through tsx) on one
// SQLite store in a fresh temporary directory, with the helpers the suites share: an API client per
// member, raw requests for asserting LXD envelopes, launching instances, waiting with deadlines,
// checksums of volume trees, killing and restarting daemons, small tmpfs pools (as root), and a teardown
// that leaves nothing running and nothing mounted.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Client, type Dispatcher } from 'undici';
import { LocalCluster, memberName } from '../../src/daemon/local-cluster.js';
import { RoostClient } from '../../src/client/client.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/store.js';
import { keys } from '../../src/store/schema.js';

/** LXD's response envelope, as every endpoint answers. */
export interface Envelope {
  type: string;
  status: string;
  status_code: number;
  operation: string;
  error_code: number;
  error: string;
  metadata: unknown;
}

/** One raw answer: HTTP status, headers, text and the envelope if the body was one. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  text: string;
  body: Envelope | null;
}

/** Options of a raw request: a JSON body, or `text` sent as is (for malformed bodies). */
export interface RawOptions {
  json?: unknown;
  text?: string;
  headers?: Record<string, string>;
}

/** How to launch an instance. */
export interface LaunchOptions {
  target: string;
  /** `process.command`; default: a loop that idles until SIGTERM and writes nothing. */
  command?: string;
  config?: Record<string, string>;
  devices?: Record<string, Record<string, string>>;
  /** Start it after creating it (default true). */
  start?: boolean;
}

/** An instance as `GET /1.0/instances/<name>?recursion=1` shows it (the fields tests read). */
export interface InstanceView {
  name: string;
  status: string;
  location: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  state?: { status: string; pid: number };
}

/**
 * What the shared world helpers (`test/evacuation/world.ts`) need of a running cluster, whichever harness
 * runs it: the local one below (one host, SQLite) or `hosts.ts` (members in their own namespaces, etcd).
 */
export interface ClusterView {
  /** Member names. */
  names: string[];
  /** A member's data directory as this process reaches it. */
  memberDir(member: string): string;
  /** The API client of a member (replaced after a restart). */
  client(member: string): RoostClient;
  /** One request on a member's socket, answered as is (errors are not thrown). */
  raw(member: string, method: string, path: string, options?: RawOptions): Promise<RawResponse>;
  /** Create (and start) an instance through the API, waiting on the operations. */
  launch(name: string, options: LaunchOptions): Promise<void>;
  /** An instance with its state, asked through `via` (default the first member). */
  instance(name: string, via?: string): Promise<InstanceView>;
  /** The cluster store, opened in this process (closed by `stop`). */
  store(): Promise<Store>;
  /** `<member dir>/storage-pools/default/containers/default_<name>`: an instance's root volume. */
  instanceDir(member: string, name: string): string;
  /** `<member dir>/storage-pools/default/custom/default_<name>`: a custom volume. */
  volumeDir(member: string, name: string): string;
  /** `<member dir>/storage-pools/default/.staging`: incoming copies of moves. */
  stagingDir(member: string): string;
  /** Pid of a member's daemon, or null. */
  pid(member: string): number | null;
  /** Signal a member's daemon and wait until it is gone. */
  kill(member: string, signal: NodeJS.Signals): Promise<void>;
  /** Start a member again (its data and membership are kept) and wait until it answers. */
  restart(member: string): Promise<void>;
  /** The last lines of a member's daemon log (for failure messages). */
  logTail(member: string, lines?: number): string;
  /** Stop every daemon and instance and remove what the cluster left; safe to call twice. */
  stop(): Promise<void>;
}

/** What `startCluster` returns. */
export interface TestCluster extends ClusterView {
  /** The cluster directory (removed by `stop`). */
  dir: string;
  local: LocalCluster;
  /**
   * Give a member a pool of its own on a fresh tmpfs (`size` as mount takes it, e.g. `2m`; `inodes`:
   * nr_inodes): its daemon is stopped, the tmpfs mounted on its pool directory, the daemon started again.
   * Needs root; `stop` unmounts it. Do it before the member holds anything.
   */
  mountPool(member: string, options: { size: string; inodes?: number }): Promise<void>;
  /**
   * Everything a refused request must leave alone, as one comparable string: instance, volume, profile,
   * member and move records, the server config, and the volume, snapshot and staging directories of every
   * member.
   */
  world(): Promise<string>;
}

/** Default workload: idles in its root volume, writes nothing, ends cleanly on SIGTERM. */
export const idleCommand = 'trap "exit 0" TERM; while true; do sleep 0.2; done';

/** Polls `check` until it returns true; fails naming `what` if `timeoutMs` passes first. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      if (await check()) return;
      lastError = null;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}${why}`);
    }
    await delay(25);
  }
}

/**
 * A deterministic checksum of a directory tree: every entry's relative path, kind, permission bits and
 * content (file bytes, symlink target), in sorted order. `exclude` leaves out entries by relative path.
 */
export async function sha256Tree(dir: string, exclude: (relPath: string) => boolean = () => false): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (rel: string): Promise<void> => {
    const entries = (await readdir(path.join(dir, rel), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = rel === '' ? e.name : `${rel}/${e.name}`;
      if (exclude(p)) continue;
      const abs = path.join(dir, p);
      const mode = ((await lstat(abs)).mode & 0o7777).toString(8);
      if (e.isDirectory()) {
        hash.update(`d ${p} ${mode}\0`);
        await walk(p);
      } else if (e.isSymbolicLink()) {
        hash.update(`l ${p}\0${await readlink(abs)}\0`);
      } else if (e.isFile()) {
        const content = await readFile(abs);
        hash.update(`f ${p} ${mode}\0${content.length}\0`);
        hash.update(content);
      } else {
        hash.update(`o ${p}\0`);
      }
    }
  };
  await walk('');
  return hash.digest('hex');
}

/** One request through an undici client (on a member's socket), answered as is: status, headers, text, envelope. */
export async function rawRequest(client: Client, method: string, urlPath: string, o: RawOptions = {}): Promise<RawResponse> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  let body: string | undefined;
  if (o.text !== undefined) body = o.text;
  else if (o.json !== undefined) body = JSON.stringify(o.json);
  if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
  const res = await client.request({ method: method as Dispatcher.HttpMethod, path: urlPath, headers, body });
  const text = await res.body.text();
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(', ') : v;
  let parsed: Envelope | null = null;
  try {
    const j = JSON.parse(text) as unknown;
    if (j && typeof j === 'object' && 'type' in j) parsed = j as Envelope;
  } catch {
    parsed = null;
  }
  return { status: res.statusCode, headers: flat, text, body: parsed };
}

/** Create an instance through `client` on member `target` (and start it unless told not to), waiting on the operations. */
export async function launchInstance(client: RoostClient, name: string, o: LaunchOptions): Promise<void> {
  await client.runAsync('POST', `/1.0/instances?target=${encodeURIComponent(o.target)}`, {
    name,
    type: 'process',
    source: { type: 'none' },
    config: { 'process.command': o.command ?? idleCommand, ...(o.config ?? {}) },
    devices: o.devices ?? {},
  });
  if (o.start !== false) await client.runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
}

/** How to start a test cluster. */
export interface StartClusterOptions {
  /** Number of members (default 3). */
  members?: number;
  /** `cluster.offline_threshold` in seconds, set before `startCluster` returns. */
  offlineThreshold?: number;
  /** The members' `--group` (who may use their sockets). */
  group?: string;
  /**
   * Mode of the cluster directory before the cluster starts; mkdtemp makes it 0700, which would hide
   * everything in it from other users whatever Roost does (a real `roost up --dir` is often 0755).
   */
  dirMode?: number;
  /** Extra environment of every member's daemon (settings such as `ROOST_MOVE_SWEEP_INTERVAL_MS`). */
  env?: Record<string, string>;
  /** How long a member's daemon may take to answer after it starts (default LocalCluster's, 90 s). */
  readyTimeoutMs?: number;
}

/** Clusters still running in this process, torn down hard if the process exits without `stop`. */
const live = new Set<string>();
process.on('exit', () => {
  for (const dir of live) killEverythingSync(dir);
});

/**
 * Start a cluster of `members` members in a fresh temporary directory. With `offlineThreshold`, the
 * server key `cluster.offline_threshold` is set (through `PATCH /1.0`) before it returns.
 */
export async function startCluster(options: StartClusterOptions = {}): Promise<TestCluster> {
  const count = options.members ?? 3;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'roost-e2e-'));
  live.add(dir);
  if (options.dirMode !== undefined) await chmod(dir, options.dirMode);
  const local = new LocalCluster(dir, { env: { ROOST_LOG_LEVEL: process.env.ROOST_LOG_LEVEL ?? 'info', ...(options.env ?? {}) }, group: options.group, readyTimeoutMs: options.readyTimeoutMs });
  const names = Array.from({ length: count }, (_, i) => memberName(i + 1));
  const clients = new Map<string, RoostClient>();
  const raws = new Map<string, Client>();
  let store: Store | null = null;
  let stopped = false;

  const memberDir = (m: string): string => path.join(dir, m);
  const client = (m: string): RoostClient => {
    let c = clients.get(m);
    if (!c) {
      c = new RoostClient(path.join(memberDir(m), 'unix.socket'));
      clients.set(m, c);
    }
    return c;
  };
  const rawClient = (m: string): Client => {
    let c = raws.get(m);
    if (!c) {
      c = new Client('http://unix.socket', { socketPath: path.join(memberDir(m), 'unix.socket'), pipelining: 0 });
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

  const raw = (m: string, method: string, urlPath: string, o: RawOptions = {}): Promise<RawResponse> => rawRequest(rawClient(m), method, urlPath, o);

  const cluster: TestCluster = {
    dir,
    local,
    names,
    memberDir,
    client,
    raw,
    launch: (name, o) => launchInstance(client(o.target), name, o),
    async instance(name, via) {
      return (await client(via ?? names[0] ?? 'm01').get(`/1.0/instances/${name}?recursion=1`)) as InstanceView;
    },
    async store() {
      store ??= await openStore(`sqlite:${path.join(dir, 'cluster.db')}`);
      return store;
    },
    instanceDir: (m, name) => path.join(memberDir(m), 'storage-pools', 'default', 'containers', `default_${name}`),
    volumeDir: (m, name) => path.join(memberDir(m), 'storage-pools', 'default', 'custom', `default_${name}`),
    stagingDir: (m) => path.join(memberDir(m), 'storage-pools', 'default', '.staging'),
    async world() {
      const st = await cluster.store();
      const { kvs } = await st.rangeMany([keys.instances(), keys.volumes(), keys.profiles(), keys.members(), keys.serverConfig(), keys.moves()]);
      const dirs: string[] = [];
      for (const m of names) {
        for (const sub of ['containers', 'custom', '.staging']) {
          const d = path.join(memberDir(m), 'storage-pools', 'default', sub);
          for (const e of await readdir(d).catch(() => [] as string[])) dirs.push(`${m}/${sub}/${e}`);
        }
        const snapshots = path.join(memberDir(m), 'storage-pools', 'default', 'containers-snapshots');
        for (const e of await readdir(snapshots).catch(() => [] as string[])) {
          for (const s of await readdir(path.join(snapshots, e)).catch(() => [] as string[])) dirs.push(`${m}/containers-snapshots/${e}/${s}`);
        }
      }
      return JSON.stringify({ records: kvs.map((kv) => `${kv.key}=${kv.value}`), dirs: dirs.sort() });
    },
    pid: (m) => local.pidOf(m),
    async kill(m, signal) {
      // The signal goes out first (tests time kills to the millisecond), then the clients are dropped.
      await local.killMember(m, signal);
      await dropClients(m);
    },
    async restart(m) {
      await dropClients(m);
      await local.startMember({ name: m, dir: memberDir(m) }, {});
    },
    async mountPool(m, o) {
      await cluster.kill(m, 'SIGTERM');
      const pool = path.join(memberDir(m), 'storage-pools', 'default');
      await mkdir(pool, { recursive: true });
      const flags = [`size=${o.size}`, ...(o.inodes !== undefined ? [`nr_inodes=${o.inodes}`] : []), 'mode=0711'];
      const r = spawnSync('mount', ['-t', 'tmpfs', '-o', flags.join(','), `roost-test-${m}`, pool], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`could not mount a tmpfs on ${pool}: ${r.stderr}`);
      await cluster.restart(m);
      await waitFor(`${m} is Online again on its tmpfs pool`, async () => ((await client(m).get(`/1.0/cluster/members/${m}`)) as { status: string }).status === 'Online', 30_000);
    },
    logTail(m, lines = 30) {
      try {
        return readFileSync(path.join(memberDir(m), 'roostd.log'), 'utf8').split('\n').slice(-lines).join('\n');
      } catch {
        return '(no log)';
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const m of [...new Set([...clients.keys(), ...raws.keys()])]) await dropClients(m);
      await store?.close().catch(() => undefined);
      try {
        await local.down(false);
        unmountUnder(dir);
        await local.down(true);
      } finally {
        killEverythingSync(dir);
        live.delete(dir);
      }
    },
  };

  try {
    await local.up(count);
    if (options.offlineThreshold !== undefined) {
      await client(names[0] ?? 'm01').request('PATCH', '/1.0', { config: { 'cluster.offline_threshold': String(options.offlineThreshold) } });
    }
    await waitFor('every member is Online', async () => {
      const list = (await client(names[0] ?? 'm01').get('/1.0/cluster/members?recursion=1')) as { status: string }[];
      return list.length === count && list.every((x) => x.status === 'Online');
    });
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** Lazily unmount whatever is mounted below `dir` (tmpfs pools), deepest first, so the directory can go. */
function unmountUnder(dir: string): void {
  const points = safeRead('/proc/self/mounts')
    .split('\n')
    .map((line) => line.split(' ')[1] ?? '')
    .filter((p) => p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of points) spawnSync('umount', ['-l', p]);
}

/** Last resort when the test process ends without `stop`: SIGKILL daemons and instances, unmount, remove the directory. */
function killEverythingSync(dir: string): void {
  if (!existsSync(dir)) return;
  for (const m of safeReaddir(dir)) {
    const memberDir = path.join(dir, m);
    const pid = Number(safeRead(path.join(memberDir, 'roostd.pid')).trim());
    if (pid > 1 && safeRead(`/proc/${pid}/cmdline`).includes('daemon/main')) trySignal(pid);
    for (const inst of safeReaddir(path.join(memberDir, 'instances'))) {
      try {
        const { pid: ipid } = JSON.parse(safeRead(path.join(memberDir, 'instances', inst, 'pid.json'))) as { pid: number };
        if (Number.isInteger(ipid) && ipid > 1) trySignal(-ipid);
      } catch {
        // No pid file: not running.
      }
    }
  }
  unmountUnder(dir);
  rmSync(dir, { recursive: true, force: true });
}

function trySignal(target: number): void {
  try {
    process.kill(target, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** True if a process exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  if (pid <= 1) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = safeRead(`/proc/${pid}/stat`);
  return stat !== '' && !/\) Z /.test(stat);
}
