// A local 3-node etcd for trying the multi-host store on one machine (`roost up --store etcd`): three
// processes of Debian's etcd server on loopback ports, with data, logs and pid files under <cluster dir>/etcd/.
// They run detached, so they outlive the CLI that started them; `roost down` stops them (by pid) and
// `roost down --purge` removes their data with the rest of the cluster directory.

import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** The etcd server binary (Debian's etcd-server installs it on PATH). */
const etcdCommand = 'etcd';
/** Nodes of the local etcd: three, so one may die without losing the store, as in a real deployment. */
const nodeCount = 3;

/** One node as `etcd.json` records it. */
interface EtcdNode {
  name: string;
  clientPort: number;
  peerPort: number;
}

/** What `etcd.json` records: the cluster token and each node's ports, chosen once when the etcd is created. */
interface LocalEtcdState {
  token: string;
  nodes: EtcdNode[];
}

/**
 * `count` distinct ports free on 127.0.0.1 right now. Every probe stays bound until all are picked: probed one
 * after another, the kernel may hand the same port out twice (and etcd refuses a cluster with a duplicate URL).
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      server.unref();
      ports.push(
        await new Promise<number>((resolve, reject) => {
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => {
            const address = server.address();
            if (address && typeof address === 'object') resolve(address.port);
            else reject(new Error('no free port'));
          });
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** The local etcd of one cluster directory. */
export class LocalEtcd {
  /** `<cluster dir>/etcd`. */
  readonly dir: string;

  constructor(clusterDir: string) {
    this.dir = join(clusterDir, 'etcd');
  }

  private async state(): Promise<LocalEtcdState | null> {
    try {
      return JSON.parse(await readFile(join(this.dir, 'etcd.json'), 'utf8')) as LocalEtcdState;
    } catch {
      return null;
    }
  }

  /** The store URL naming every node (`etcd://127.0.0.1:<port>,...`), or null before the first start. */
  async url(): Promise<string | null> {
    const state = await this.state();
    return state ? `etcd://${state.nodes.map((n) => `127.0.0.1:${n.clientPort}`).join(',')}` : null;
  }

  /** Pid of a node's etcd if it runs (its pid file names a live process started on its data directory). */
  pidOf(node: string): number | null {
    try {
      const pid = Number(readFileSync(join(this.dir, `${node}.pid`), 'utf8').trim());
      if (!pid || !alive(pid)) return null;
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(join(this.dir, node)) ? pid : null;
    } catch {
      return null;
    }
  }

  /** Pids of the nodes that run. */
  pids(): number[] {
    return Array.from({ length: nodeCount }, (_, i) => this.pidOf(`n${i}`)).filter((p): p is number => p !== null);
  }

  /**
   * Create the etcd (first time: ports, token, data directories) or start the nodes that are down, then wait
   * until every node reports itself healthy. Returns the store URL.
   */
  async start(timeoutMs = 30_000): Promise<string> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    let state = await this.state();
    const fresh = state === null;
    if (!state) {
      const nodes: EtcdNode[] = [];
      const ports = await freePorts(nodeCount * 2);
      for (let i = 0; i < nodeCount; i++) nodes.push({ name: `n${i}`, clientPort: ports[2 * i] ?? 0, peerPort: ports[2 * i + 1] ?? 0 });
      state = { token: `roost-${randomBytes(8).toString('hex')}`, nodes };
      await writeFile(join(this.dir, 'etcd.json'), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    }
    const initialCluster = state.nodes.map((n) => `${n.name}=http://127.0.0.1:${n.peerPort}`).join(',');
    for (const node of state.nodes) {
      if (this.pidOf(node.name) !== null) continue;
      await this.launch(node, initialCluster, state.token, fresh);
    }
    await this.waitHealthy(state, timeoutMs);
    return (await this.url()) as string;
  }

  private async launch(node: EtcdNode, initialCluster: string, token: string, fresh: boolean): Promise<void> {
    const dataDir = join(this.dir, node.name);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const args = [
      '--name', node.name,
      '--data-dir', dataDir,
      '--listen-client-urls', `http://127.0.0.1:${node.clientPort}`,
      '--advertise-client-urls', `http://127.0.0.1:${node.clientPort}`,
      '--listen-peer-urls', `http://127.0.0.1:${node.peerPort}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${node.peerPort}`,
      '--initial-cluster', initialCluster,
      '--initial-cluster-token', token,
      // Ignored once the data directory holds a member: a restarted node rejoins the same cluster.
      '--initial-cluster-state', fresh ? 'new' : 'existing',
      // etcd keeps all history until compacted; Roost leaves compaction to etcd (see src/store/etcd.ts).
      '--auto-compaction-mode', 'periodic',
      '--auto-compaction-retention', '1h',
      '--logger', 'zap',
      '--log-level', 'warn',
    ];
    const log = openSync(join(this.dir, `${node.name}.log`), 'a');
    const child = spawn(etcdCommand, args, { detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    const started = await new Promise<boolean>((resolve) => {
      child.once('spawn', () => resolve(true));
      child.once('error', () => resolve(false));
    });
    if (!started || child.pid === undefined) {
      throw new Error(`could not run "${etcdCommand}": install Debian's etcd-server (apt-get install etcd-server) to use --store etcd`);
    }
    child.unref();
    await writeFile(join(this.dir, `${node.name}.pid`), `${child.pid}\n`);
  }

  private async waitHealthy(state: LocalEtcdState, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const down = state.nodes.filter((n) => this.pidOf(n.name) === null);
      if (down.length > 0) throw new Error(`etcd node ${down.map((n) => n.name).join(', ')} exited while starting:\n${this.logTail(down[0] as EtcdNode)}`);
      const health = await Promise.all(state.nodes.map((n) => this.healthy(n)));
      if (health.every(Boolean)) return;
      if (Date.now() > deadline) {
        const sick = state.nodes.filter((_, i) => !health[i]);
        throw new Error(`the local etcd in ${this.dir} is not healthy after ${timeoutMs} ms:\n${sick.map((n) => this.logTail(n)).join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private async healthy(node: EtcdNode): Promise<boolean> {
    try {
      const res = await fetch(`http://127.0.0.1:${node.clientPort}/health`, { signal: AbortSignal.timeout(1000) });
      return ((await res.json()) as { health?: string }).health === 'true';
    } catch {
      return false;
    }
  }

  private logTail(node: EtcdNode): string {
    try {
      return `${node.name}: ${readFileSync(join(this.dir, `${node.name}.log`), 'utf8').split('\n').slice(-10).join('\n')}`;
    } catch {
      return `${node.name}: (no log)`;
    }
  }

  /** Stop every node (SIGTERM, then SIGKILL after `timeoutMs`) and wait until they are gone. Data stays. */
  async stop(timeoutMs = 10_000): Promise<void> {
    const pids = this.pids();
    for (const pid of pids) process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + timeoutMs;
    while (pids.some(alive)) {
      if (Date.now() > deadline) {
        for (const pid of pids.filter(alive)) process.kill(pid, 'SIGKILL');
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    for (let i = 0; i < nodeCount; i++) await rm(join(this.dir, `n${i}.pid`), { force: true });
  }
}
