// A local cluster on this host: N roostd processes sharing one store, each with its own data directory, on
// free loopback ports. The store is the embedded SQLite file, or (`roost up --store etcd`) a local 3-node
// etcd that the cluster starts and stops with its members. `roost up`/`roost down` and the tests drive it.

import { execFile, spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, fchmodSync, readFileSync } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RoostClient } from '../client/client.js';
import { joinTokenOf } from '../cluster/token.js';
import { ProcessDriver } from '../instances/drivers/process.js';
import { LocalEtcd } from './local-etcd.js';
import { traversableDirMode, ensureDir, memberDirMode, privateFileMode } from './permissions.js';

/** One member of a local cluster. */
export interface LocalMember {
  name: string;
  dir: string;
}

/** Which store a local cluster runs on. */
export type LocalStoreKind = 'sqlite' | 'etcd';

/** What `cluster.json` in the cluster directory records. */
export interface LocalClusterState {
  /** The store URL every member uses. */
  store: string;
  members: LocalMember[];
  /** The `--group` the members run with, once given (later starts keep it). */
  group?: string;
}

/** Options for a local cluster. */
export interface LocalClusterOptions {
  /** Extra environment for the daemons. */
  env?: Record<string, string>;
  /** Group whose members may use the members' unix sockets (roostd's `--group`); recorded for later starts. */
  group?: string;
  /** How long to wait for a member to answer after starting it (ms; default 90 s). */
  readyTimeoutMs?: number;
  /** The store of a new cluster (default `sqlite`); an existing cluster keeps the one it was created with. */
  store?: LocalStoreKind;
}

/** Name of the i-th member (1-based): zero-padded so names sort in creation order. */
export function memberName(i: number): string {
  return `m${String(i).padStart(2, '0')}`;
}

/** A local cluster rooted at a directory. */
export class LocalCluster {
  readonly dir: string;

  constructor(
    dir: string,
    private readonly options: LocalClusterOptions = {},
  ) {
    this.dir = resolve(dir);
  }

  /** The URL of the embedded store a SQLite cluster's members share. */
  get sqliteUrl(): string {
    return `sqlite:${join(this.dir, 'cluster.db')}`;
  }

  /** The local etcd of an etcd cluster (`<dir>/etcd`). */
  get etcd(): LocalEtcd {
    return new LocalEtcd(this.dir);
  }

  /** The recorded members (empty if the cluster was never brought up) and the store they use. */
  async state(): Promise<LocalClusterState> {
    try {
      return JSON.parse(await readFile(join(this.dir, 'cluster.json'), 'utf8')) as LocalClusterState;
    } catch {
      return { store: '', members: [] };
    }
  }

  /** Which store a recorded store URL names. */
  static storeKind(url: string): LocalStoreKind {
    return url.startsWith('etcd:') ? 'etcd' : 'sqlite';
  }

  /**
   * The store URL of the cluster, making its store ready: a new cluster gets the store asked for (a local
   * etcd is created and started); an existing one keeps its own (its local etcd is started if it is down).
   */
  private async readyStore(state: LocalClusterState): Promise<string> {
    const asked = this.options.store;
    if (state.members.length > 0 && state.store !== '') {
      const kind = LocalCluster.storeKind(state.store);
      if (asked && asked !== kind) throw new Error(`the cluster in ${this.dir} runs on ${kind}; --store ${asked} cannot change that (remove it with "roost down --purge" first)`);
      if (kind === 'etcd') await this.etcd.start();
      return state.store;
    }
    return (asked ?? 'sqlite') === 'etcd' ? this.etcd.start() : this.sqliteUrl;
  }

  private async saveState(state: LocalClusterState): Promise<void> {
    await writeFile(join(this.dir, 'cluster.json'), `${JSON.stringify(state, null, 2)}\n`, { mode: privateFileMode });
  }

  /** An API client for one member (close it after use). */
  client(name: string): RoostClient {
    return new RoostClient(join(this.dir, name, 'unix.socket'));
  }

  /** Pid of a member's daemon if it runs. */
  pidOf(name: string): number | null {
    try {
      const pid = Number(readFileSync(join(this.dir, name, 'roostd.pid'), 'utf8').trim());
      if (!pid) return null;
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      return cmdline.includes('daemon/main') ? pid : null;
    } catch {
      return null;
    }
  }

  /**
   * Make the cluster have at least `count` members, all running: start members that are down, add
   * missing ones (the first bootstraps, the others join with a token). Returns what it did per member.
   */
  async up(count: number): Promise<{ name: string; action: 'started' | 'joined' | 'running' | 'removed' }[]> {
    await ensureDir(this.dir, traversableDirMode);
    const state = await this.state();
    state.store = await this.readyStore(state);
    if (this.options.group !== undefined) state.group = this.options.group;
    // Members read the store URL and the group from here when they start.
    await this.saveState(state);
    const out: { name: string; action: 'started' | 'joined' | 'running' | 'removed' }[] = [];
    for (const m of [...state.members]) {
      if (this.pidOf(m.name)) out.push({ name: m.name, action: 'running' });
      else {
        try {
          await this.startMember(m, {});
          out.push({ name: m.name, action: 'started' });
        } catch (err) {
          // Removed from the cluster (`roost cluster remove`) since it last ran: forget it here too.
          if (!(err instanceof Error && err.message.includes('is not a member of this cluster'))) throw err;
          state.members = state.members.filter((x) => x.name !== m.name);
          out.push({ name: m.name, action: 'removed' });
        }
      }
    }
    for (let i = state.members.length + 1; i <= count; i++) {
      const m: LocalMember = { name: memberName(i), dir: join(this.dir, memberName(i)) };
      if (i === 1) await this.startMember(m, { bootstrap: true });
      else await this.startMember(m, { join: await this.joinToken(state.members[0]?.name ?? memberName(1), m.name) });
      state.members.push(m);
      await this.saveState(state);
      out.push({ name: m.name, action: 'joined' });
    }
    await this.saveState(state);
    return out;
  }

  /** Ask a running member for a join token for `name`. */
  private async joinToken(via: string, name: string): Promise<string> {
    const client = this.client(via);
    try {
      const res = await client.request('POST', '/1.0/cluster/members', { server_name: name });
      return joinTokenOf(res.metadata);
    } finally {
      await client.close();
    }
  }

  /** Start one member's daemon in the background and wait until it answers. */
  async startMember(m: LocalMember, how: { bootstrap?: boolean; join?: string }): Promise<void> {
    // The daemon sets the member directory's group and tightens everything in it; these come first.
    await ensureDir(this.dir, traversableDirMode);
    await ensureDir(m.dir, memberDirMode);
    const state = await this.state();
    const storeUrl = state.store !== '' ? state.store : this.sqliteUrl;
    const group = this.options.group ?? state.group;
    const logPath = join(m.dir, 'roostd.log');
    const fd = openSync(logPath, 'a', privateFileMode);
    fchmodSync(fd, privateFileMode);
    const self = fileURLToPath(import.meta.url);
    // Run from the sources (through tsx), a cluster starts the sources' daemon, unless ROOST_DAEMON_BUILT=1 asks
    // for the built one (`npm test` builds first, and a daemon from dist/ starts without compiling anything).
    const built = self.endsWith('.ts') && process.env.ROOST_DAEMON_BUILT === '1' ? join(self, '..', '..', '..', 'dist', 'daemon', 'main.js') : null;
    const fromSource = self.endsWith('.ts') && built === null;
    const main = built ?? join(self, '..', fromSource ? 'main.ts' : 'main.js');
    // Extra options for node itself (ROOST_DAEMON_NODE_ARGS='--cpu-prof --cpu-prof-dir=<dir>' profiles each daemon).
    const nodeArgs = (process.env.ROOST_DAEMON_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
    const args = [
      ...nodeArgs,
      ...(fromSource ? ['--import', 'tsx'] : []),
      main, '--name', m.name, '--dir', m.dir, '--address', '127.0.0.1:0', '--store', storeUrl,
      ...(how.bootstrap ? ['--bootstrap'] : []),
      ...(how.join ? ['--join', how.join] : []),
      ...(group !== undefined ? ['--group', group] : []),
    ];
    await rm(join(m.dir, 'roostd.pid'), { force: true });
    const child = spawn(process.execPath, args, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...(this.options.env ?? {}) },
    });
    closeSync(fd);
    let exited: number | null = null;
    child.once('exit', (code) => {
      exited = code ?? -1;
    });
    child.unref();
    // Generous by default: it only matters when a start is slow (a loaded machine took over 30 s to start node),
    // and a member that exits is reported at once anyway.
    const deadline = Date.now() + (this.options.readyTimeoutMs ?? 90_000);
    for (;;) {
      if (exited !== null) throw new Error(`member ${m.name} exited (code ${exited}) while starting:\n${await tail(logPath)}`);
      if (await this.answers(m.name)) return;
      if (Date.now() > deadline) {
        // Given up on: it must not finish starting later, unseen, in a directory its caller may remove.
        if (child.pid !== undefined && exited === null) {
          try {
            process.kill(child.pid, 'SIGKILL');
          } catch {
            // It ended meanwhile.
          }
        }
        throw new Error(`member ${m.name} did not answer within the deadline:\n${await tail(logPath)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** True if the member's socket answers GET /1.0. */
  async answers(name: string): Promise<boolean> {
    if (!existsSync(join(this.dir, name, 'unix.socket')) || !this.pidOf(name)) return false;
    const client = this.client(name);
    try {
      await client.get('/1.0');
      return true;
    } catch {
      return false;
    } finally {
      await client.close();
    }
  }

  /** Send a signal to a member's daemon and wait until it is gone. */
  async killMember(name: string, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<void> {
    const pid = this.pidOf(name);
    if (!pid) return;
    process.kill(pid, signal);
    const deadline = Date.now() + timeoutMs;
    while (this.pidOf(name) === pid && isAlive(pid)) {
      if (Date.now() > deadline) {
        process.kill(pid, 'SIGKILL');
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Stop every member: its instances first (cleanly, then forced), then the daemon; then the local etcd, if
   * the cluster has one. Data stays unless `purge`, which removes the cluster directory.
   */
  async down(purge: boolean): Promise<string[]> {
    const state = await this.state();
    const stopped: string[] = [];
    for (const m of state.members) {
      // SIGINT stops a daemon without its host-shutdown action: every member goes down here, none can take over.
      await this.killMember(m.name, 'SIGINT');
      await this.stopInstances(m);
      stopped.push(m.name);
    }
    await this.etcd.stop();
    if (purge) await rm(this.dir, { recursive: true, force: true });
    return stopped;
  }

  /** Stop the instances a member holds (processes and LXC containers), whether or not its daemon runs. */
  private async stopInstances(m: LocalMember): Promise<void> {
    const lxcPath = join(m.dir, 'lxc');
    const containers = await readdir(lxcPath).catch(() => [] as string[]);
    await Promise.all(
      containers.map(
        (name) =>
          new Promise<void>((done) => {
            execFile('lxc-stop', ['-P', lxcPath, '-n', name, '-t', '10'], { timeout: 20_000 }, () => done());
          }),
      ),
    );
    const driver = new ProcessDriver();
    let entries: string[] = [];
    try {
      entries = await readdir(join(m.dir, 'instances'));
    } catch {
      return;
    }
    await Promise.all(
      entries.map(async (entry) => {
        const i = entry.indexOf('_');
        const spec = {
          name: entry.slice(i + 1), project: entry.slice(0, i), type: 'process', config: {}, devices: {}, mounts: [],
          rootPath: join(m.dir, 'storage-pools', 'default', 'containers', entry),
          runtimeDir: join(m.dir, 'instances', entry),
        };
        await driver.stop(spec, { timeoutSeconds: 10, force: false }).catch(() => undefined);
      }),
    );
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) Z /.test(stat);
  } catch {
    return false;
  }
}

async function tail(path: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}
