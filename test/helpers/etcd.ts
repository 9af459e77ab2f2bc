// A real etcd cluster for tests: N `etcd` processes (Debian's etcd-server) on loopback, on free random
// ports, with their data in a fresh temporary directory. Timings are shortened so elections, lease
// expiry and restarts take well under a second, and the backend is kept small. If etcd is not
// installed the helper throws: a store test that cannot run must fail, never skip.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { freePorts } from '../../src/daemon/local-etcd.js';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Where Debian's etcd-server package installs the server. */
export const ETCD_BINARY = '/usr/bin/etcd';

/** TLS material for a cluster that serves clients over HTTPS only (PEM file paths). */
export interface EtcdTlsFiles {
  /** CA that signed the server and client certificates. */
  cacert: string;
  /** Server certificate (also accepted as client certificate when `clientCertAuth` is on). */
  cert: string;
  key: string;
  /** Require clients to present a certificate signed by `cacert`. */
  clientCertAuth?: boolean;
}

/** How to start a test cluster. */
export interface EtcdClusterOptions {
  /** Number of members (default 3). */
  nodes?: number;
  /** Serve clients over HTTPS with these files (peers stay plain HTTP on loopback). */
  tls?: EtcdTlsFiles;
  /** How long to wait for the cluster to become healthy (default 20 s). */
  startTimeoutMs?: number;
  /**
   * The address clients reach etcd on (default 127.0.0.1): another local address, such as a bridge that
   * members in network namespaces reach, when clients live elsewhere. Peers stay on loopback.
   */
  clientHost?: string;
  /** Where the data directory is made (default the system's temporary directory); tmpfs spares fsync stalls. */
  dataParent?: string;
  /** etcd's election timeout in ms (default 500, heartbeats a tenth of it); longer rides out a busy machine. */
  electionTimeoutMs?: number;
}

/** A running test cluster. */
export interface EtcdCluster {
  /** The data directory of all members (removed by `stopAll`). */
  dir: string;
  /** Client endpoints, `host:port` (on `clientHost`), one per member in member order. */
  endpoints: string[];
  /** A store URL naming every member (`etcd://…`), with the TLS query when the cluster uses TLS. */
  url: string;
  /** The last lines of member `i`'s log (for failure messages). */
  logTail(i: number, lines?: number): string;
  /** The store URL of one member only. */
  urlOf(i: number): string;
  /** PID of member `i`'s etcd, or null while it is not running. */
  pid(i: number): number | null;
  /** SIGKILL member `i` (by PID) and wait until it has exited. */
  killNode(i: number): Promise<void>;
  /** Start member `i` again on its data directory and ports; waits until it listens (not until it is healthy). */
  restartNode(i: number): Promise<void>;
  /** Index of the member that is leader now, waiting (up to `timeoutMs`) for one to be elected. */
  leader(timeoutMs?: number): Promise<number>;
  /** Resolves once every running member reports itself healthy (has a leader, no alarm). */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Stop every member (by PID) and remove the data directory. */
  stopAll(): Promise<void>;
}

interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  process: ChildProcess | null;
  exited: Promise<void> | null;
}

/** Every member process still running and every data directory, so a crashing test run leaves nothing behind. */
const running = new Set<ChildProcess>();
const directories = new Set<string>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
  for (const dir of directories) rmSync(dir, { recursive: true, force: true });
});

/** Throws (never skips) if etcd is not installed, naming the package that provides it. */
export function requireEtcd(): void {
  if (!existsSync(ETCD_BINARY)) {
    throw new Error(`${ETCD_BINARY} is missing: etcd tests need Debian's etcd-server (apt-get install etcd-server)`);
  }
  const version = spawnSync(ETCD_BINARY, ['--version'], { encoding: 'utf8' });
  if (version.status !== 0) throw new Error(`${ETCD_BINARY} --version failed: ${version.stderr}`);
}

/** A port free on 127.0.0.1 right now (the OS picks it). */
/** True if something accepts TCP connections on `host`:`port`. */
async function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.setTimeout(500);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

async function fetchText(url: string, tls: EtcdTlsFiles | undefined): Promise<string> {
  if (!tls) {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    return res.text();
  }
  // fetch cannot take a client certificate; ask over https with the cluster's own files.
  const https = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = https.get(
      url,
      {
        ca: readFileSync(tls.cacert),
        cert: readFileSync(tls.cert),
        key: readFileSync(tls.key),
        timeout: 1000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve(body));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

/**
 * Starts an etcd cluster of `options.nodes` members (default 3) and waits until it is healthy. A start
 * that fails (another process took a port between our probe and etcd's bind) is retried on new ports.
 */
export async function startEtcdCluster(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  requireEtcd();
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

async function startOnce(options: EtcdClusterOptions): Promise<EtcdCluster> {
  const count = options.nodes ?? 3;
  const tls = options.tls;
  const host = options.clientHost ?? '127.0.0.1';
  const election = options.electionTimeoutMs ?? 500;
  const scheme = tls ? 'https' : 'http';
  const dir = await mkdtemp(path.join(options.dataParent ?? os.tmpdir(), 'roost-etcd-'));
  directories.add(dir);
  const members: Member[] = [];
  const ports = await freePorts(count * 2);
  for (let i = 0; i < count; i++) {
    members.push({ name: `n${i}`, clientPort: ports[2 * i] ?? 0, peerPort: ports[2 * i + 1] ?? 0, process: null, exited: null });
  }
  const initialCluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(',');
  const token = `roost-test-${path.basename(dir)}`;
  const endpoints = members.map((m) => `${host}:${m.clientPort}`);
  const tlsQuery = tls
    ? `?${new URLSearchParams({ cacert: tls.cacert, cert: tls.cert, key: tls.key }).toString()}`
    : '';

  function argsOf(m: Member): string[] {
    const args = [
      '--name', m.name,
      '--data-dir', path.join(dir, m.name),
      '--listen-client-urls', `${scheme}://${host}:${m.clientPort}`,
      '--advertise-client-urls', `${scheme}://${host}:${m.clientPort}`,
      '--listen-peer-urls', `http://127.0.0.1:${m.peerPort}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${m.peerPort}`,
      '--initial-cluster', initialCluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', token,
      // Fast elections (the shortest lease etcd grants is 1.5 election timeouts), a small backend, frequent snapshots.
      '--heartbeat-interval', String(Math.round(election / 10)),
      '--election-timeout', String(election),
      '--quota-backend-bytes', String(256 * 1024 * 1024),
      '--snapshot-count', '5000',
      // Roost's batched writes (a move, an event sweep) can exceed the default 128 operations.
      '--max-txn-ops', '4096',
      '--max-request-bytes', String(8 * 1024 * 1024),
      '--logger', 'zap',
      '--log-level', 'warn',
    ];
    if (tls) {
      args.push('--cert-file', tls.cert, '--key-file', tls.key, '--trusted-ca-file', tls.cacert);
      if (tls.clientCertAuth) args.push('--client-cert-auth');
    }
    return args;
  }

  function launch(m: Member): void {
    const log = openSync(path.join(dir, `${m.name}.log`), 'a');
    const child = spawn(ETCD_BINARY, argsOf(m), { stdio: ['ignore', log, log] });
    closeSync(log);
    running.add(child);
    m.process = child;
    m.exited = new Promise((resolve) => {
      child.once('exit', () => {
        running.delete(child);
        if (m.process === child) m.process = null;
        resolve();
      });
    });
  }

  function logTail(m: Member, lines = 15): string {
    try {
      return readFileSync(path.join(dir, `${m.name}.log`), 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  async function healthy(m: Member): Promise<boolean> {
    try {
      const body = await fetchText(`${scheme}://${host}:${m.clientPort}/health`, tls);
      return (JSON.parse(body) as { health?: string }).health === 'true';
    } catch {
      return false;
    }
  }

  async function waitHealthy(timeoutMs = options.startTimeoutMs ?? 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const live = members.filter((m) => m.process !== null);
      const states = await Promise.all(live.map(async (m) => ({ m, ok: await healthy(m) })));
      // Healthy only with some member running: members that all exited at once are a failed start, not health.
      if (states.length > 0 && states.every((s) => s.ok)) return;
      const crashed = members.filter((m) => m.process === null && m.exited !== null && !stopped.has(m));
      if (Date.now() > deadline || crashed.length > 0) {
        const failing = [...crashed, ...states.filter((s) => !s.ok).map((s) => s.m)];
        const logs = failing.map((m) => `${m.name}${crashed.includes(m) ? ' (exited)' : ''}:\n${logTail(m)}`);
        throw new Error(`etcd cluster in ${dir} not healthy within ${timeoutMs} ms\n${logs.join('\n')}`);
      }
      await sleep(50);
    }
  }

  /** Members killed on purpose, so waitHealthy does not take them for a failed start. */
  const stopped = new Set<Member>();

  async function kill(m: Member): Promise<void> {
    const child = m.process;
    if (!child || child.pid === undefined) return;
    stopped.add(m);
    process.kill(child.pid, 'SIGKILL');
    await m.exited;
  }

  const cluster: EtcdCluster = {
    dir,
    endpoints,
    url: `etcd://${endpoints.join(',')}${tlsQuery}`,
    logTail: (i, lines) => {
      const m = members[i];
      return m ? logTail(m, lines) : '(no such member)';
    },
    urlOf: (i) => `etcd://${endpoints[i] ?? ''}${tlsQuery}`,
    pid: (i) => members[i]?.process?.pid ?? null,
    async killNode(i) {
      const m = members[i];
      if (!m) throw new Error(`no etcd member ${i}`);
      await kill(m);
    },
    async restartNode(i) {
      const m = members[i];
      if (!m) throw new Error(`no etcd member ${i}`);
      if (m.process) throw new Error(`etcd member ${i} is still running`);
      stopped.delete(m);
      launch(m);
      // etcd answers requests only once it has rejoined a quorum, which a member restarted alone cannot;
      // so wait until it listens, and let callers wait for health when they need it.
      const deadline = Date.now() + 20_000;
      while (!(await listening(host, m.clientPort))) {
        if (!m.process || Date.now() > deadline) throw new Error(`etcd member ${i} did not come back:\n${logTail(m)}`);
        await sleep(25);
      }
    },
    async leader(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (const [i, m] of members.entries()) {
          if (!m.process) continue;
          try {
            const metrics = await fetchText(`${scheme}://${host}:${m.clientPort}/metrics`, tls);
            if (/^etcd_server_is_leader 1$/m.test(metrics)) return i;
          } catch {
            // Not answering yet: ask the others, then again.
          }
        }
        if (Date.now() > deadline) throw new Error(`no etcd leader elected within ${timeoutMs} ms`);
        await sleep(50);
      }
    },
    waitHealthy,
    async stopAll() {
      await Promise.all(members.map((m) => kill(m)));
      await rm(dir, { recursive: true, force: true });
      directories.delete(dir);
    },
  };

  try {
    for (const m of members) {
      await mkdir(path.join(dir, m.name), { recursive: true, mode: 0o700 });
      launch(m);
    }
    await waitHealthy();
  } catch (err) {
    await cluster.stopAll();
    throw err;
  }
  return cluster;
}
