// Scale benchmark (issue 8, "Scale"): a 100-member cluster holding 10,000 simulated (`sim`) instances on one
// machine, ten members per process (bench/scale/host.ts: each member a real startDaemon, so the real planner,
// drainer, store and API code paths run), on the SQLite store and on a local 3-node etcd. It evacuates the member
// holding 1,000 of them and restores it, and prints one table against the goals: planning time (the pure planner
// on the cluster's snapshot, and the drainer's own plan step), evacuation and restore time, store transactions
// per moved instance (a watch on every key counts each revision, i.e. each transaction that wrote), peak RSS of
// each process, and `GET /1.0/instances?recursion=1` with 10,000 instances.
//
// Instances are created directly (creation is not what is measured): each one's empty root volume in its
// member's pool, its runtime directory and its record, as `InstanceService.create` leaves them, records written
// a hundred per transaction; ROOST_BENCH_CREATE=api creates them through the API instead (`POST
// /1.0/instances?target=<member>`, many at once), which takes minutes at this size. The source member's
// instances are then started through the API.
//
// Run: npm run bench -- scale
//   ROOST_BENCH_BACKENDS=sqlite,etcd   which stores (default both)
//   ROOST_BENCH_MEMBERS=100 ROOST_BENCH_PER_PROCESS=10 ROOST_BENCH_INSTANCES=10000 ROOST_BENCH_ON_SOURCE=1000
//   ROOST_BENCH_PARALLEL=<n>           the evacuation's `parallel` (default: cluster.evacuation_parallelism, 4)
//   ROOST_BENCH_STORE_PER_MEMBER=1     every member its own store object (as one member per process has)
//   ROOST_BENCH_CREATE=api             create the instances through the API rather than directly
//   ROOST_BENCH_HOST_NODE_ARGS='--cpu-prof --cpu-prof-dir=<dir>'  profile the member processes

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Table from 'cli-table3';
import { pino } from 'pino';
import { ApiClientError, RoostClient } from '../src/client/client.js';
import { ClusterService, hostArchitecture } from '../src/cluster/members.js';
import { PeerClient } from '../src/cluster/peers.js';
import { InternalClient } from '../src/cluster/internal.js';
import { readSnapshotWith } from '../src/cluster/snapshot.js';
import { planEvacuation } from '../src/evacuation/planner.js';
import { openStore } from '../src/store/index.js';
import { keys, type ClusterCertificateRecord, type InstanceRecord } from '../src/store/schema.js';
import type { Compare, Op, Store, WatchEvent } from '../src/store/store.js';
import { maxOpsPerTxn } from '../src/store/batch.js';
import { DirPool } from '../src/storage/drivers/dir.js';
import { startEtcdCluster, type EtcdCluster } from '../test/helpers/etcd.js';
import { median } from './lib.js';

const env = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
const shape = {
  members: env('ROOST_BENCH_MEMBERS', 100),
  perProcess: env('ROOST_BENCH_PER_PROCESS', 10),
  instances: env('ROOST_BENCH_INSTANCES', 10_000),
  onSource: env('ROOST_BENCH_ON_SOURCE', 1_000),
};
const backends = (process.env.ROOST_BENCH_BACKENDS ?? 'sqlite,etcd').split(',').filter((b) => b !== '');
const parallel = process.env.ROOST_BENCH_PARALLEL ? Number(process.env.ROOST_BENCH_PARALLEL) : undefined;
const storePerMember = process.env.ROOST_BENCH_STORE_PER_MEMBER === '1';
const createConcurrency = env('ROOST_BENCH_CREATE_CONCURRENCY', 64);
const createVia = process.env.ROOST_BENCH_CREATE === 'api' ? 'api' : 'direct';
/** Extra Node options for the member processes (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`, which NODE_OPTIONS refuses). */
const hostNodeArgs = (process.env.ROOST_BENCH_HOST_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
const goals = { planMs: 50, evacuateSqliteS: 10, evacuateEtcdS: 20, rssMb: 300, listMs: 100 };
const repo = fileURLToPath(new URL('..', import.meta.url));
const hostScript = join(repo, 'bench', 'scale', 'host.ts');

/** Every figure one backend's run produces. */
interface Figures {
  backend: string;
  setup: { startS: number; createS: number; startInstancesS: number };
  idle: { cpuPercent: number; hostRssMb: number[] };
  plannerMs: { median: number; p95: number };
  dryRunMs: number;
  drainerPlan: { snapshotMs: number; planMs: number; totalMs: number } | null;
  evacuateS: number;
  restoreS: number;
  moved: number;
  evacuateWrites: WriteCount;
  restoreWrites: WriteCount;
  listMs: number[];
  peakRssMb: { hosts: number[]; etcd: number[] };
}

/** Store revisions (write transactions) seen during a phase, by what they wrote. */
interface WriteCount {
  total: number;
  heartbeats: number;
  byKind: Map<string, number>;
}

const mb = (bytes: number): number => Math.round(bytes / 2 ** 20);

/** A process's resident set now and at its peak (VmHWM), in bytes. */
function rss(pid: number): { now: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { now: field('VmRSS'), peak: field('VmHWM') };
}

/** CPU seconds a process has used (user + system). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Run `fn` over `items`, `concurrency` at a time. */
async function pool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) await fn(item);
    }),
  );
}

/** One host process of members; resolves once they all answer. */
async function startHost(dir: string, storeUrl: string, names: string[], how: { bootstrap: boolean; joinVia?: string }, logFile: string): Promise<ChildProcess> {
  const args = [...hostNodeArgs, '--import', 'tsx', hostScript, '--store', storeUrl, '--dir', dir, '--members', names.join(',')];
  if (how.bootstrap) args.push('--bootstrap');
  if (how.joinVia) args.push('--join-via', how.joinVia);
  if (storePerMember) args.push('--store-per-member');
  const child = spawn(process.execPath, args, { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ROOST_LOG_LEVEL: process.env.ROOST_LOG_LEVEL ?? 'info' } });
  child.stderr?.pipe(createWriteStream(logFile));
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`host ${names[0]}… exited (${code}) while starting; see ${logFile}`)));
    lines.once('line', (line) => {
      const msg = JSON.parse(line) as { ready?: string[]; error?: string };
      if (msg.error) reject(new Error(`host ${names[0]}…: ${msg.error}`));
      else resolve();
    });
  });
  return child;
}

/** Counts store revisions from `from` on, by the key families each one wrote. */
function countWrites(store: Store, from: number): { stop(): WriteCount; revision(): number } {
  const count: WriteCount = { total: 0, heartbeats: 0, byKind: new Map() };
  let last = from;
  const watch = store.watch('', from, (events: WatchEvent[]) => {
    count.total++;
    last = Math.max(last, events[0]?.kv.modRevision ?? last);
    const families = [...new Set(events.map((e) => e.kv.key.split('/')[0] ?? ''))].sort();
    if (families.every((f) => f === 'heartbeats' || f === 'lastseen')) count.heartbeats++;
    const kind = `${families.join('+')}${events.length > 1 ? ` (${events.length} keys)` : ''}`;
    count.byKind.set(kind, (count.byKind.get(kind) ?? 0) + 1);
  });
  return {
    stop: () => {
      watch.close();
      return count;
    },
    revision: () => last,
  };
}

/** Wait until the watch has seen every revision up to the store's head now (it may lag by a poll). */
async function caughtUp(store: Store, counter: { revision(): number }): Promise<void> {
  const { revision } = await store.rangeMany([]);
  const deadline = Date.now() + 10_000;
  while (counter.revision() < revision && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

/** The `drainer: planned` line the leading member logged for `member`'s run, from the hosts' logs. */
async function drainerPlan(logs: string[], member: string): Promise<Figures['drainerPlan']> {
  for (const file of logs) {
    for (const line of (await readFile(file, 'utf8')).split('\n')) {
      if (!line.includes('"drainer: planned"')) continue;
      const entry = JSON.parse(line) as { member: string; snapshotMs: number; planMs: number; totalMs: number };
      if (entry.member === member) return { snapshotMs: entry.snapshotMs, planMs: entry.planMs, totalMs: entry.totalMs };
    }
  }
  return null;
}

/** Create every instance through the API on its member (`POST /1.0/instances?target=`), many at once. */
async function createThroughApi(backend: string, placed: { name: string; member: string }[], client: (m: string) => RoostClient): Promise<void> {
  const t = performance.now();
  let created = 0;
  await pool(placed, createConcurrency, async ({ name, member }) => {
    const c = client(member);
    const res = await c.request('POST', `/1.0/instances?target=${member}`, { name, type: 'sim', source: { type: 'none' } });
    if (res.type !== 'async') throw new Error(`creating ${name}: no operation`);
    const op = (await c.get(`${res.operation}/wait?timeout=120`)) as { status: string; err: string };
    if (op.status !== 'Success') throw new Error(`creating ${name}: ${op.err}`);
    if (++created % 1000 === 0) console.log(`[${backend}] created ${created} instances (${((performance.now() - t) / 1000).toFixed(0)} s)`);
  });
}

/**
 * Create every instance as `InstanceService.create` leaves it, without the API: its (empty) root volume in its
 * member's pool, its runtime directory, and its record, written a hundred per store transaction. Creation is
 * not what this benchmark measures, and through the API it takes minutes at this size.
 */
async function createDirectly(backend: string, storeUrl: string, dir: string, placed: { name: string; member: string }[]): Promise<void> {
  const store = await openStore(storeUrl);
  try {
    const pools = new Map<string, DirPool>();
    const now = new Date().toISOString();
    const arch = hostArchitecture();
    const ops: Op[] = [];
    const compares: Compare[] = [];
    await pool(placed, 32, async ({ name, member }) => {
      let p = pools.get(member);
      if (!p) pools.set(member, (p = new DirPool('default', join(dir, member, 'storage-pools', 'default'))));
      await p.createVolume({ type: 'container', project: 'default', name });
      await mkdir(join(dir, member, 'instances', `default_${name}`), { recursive: true, mode: 0o700 });
    });
    for (const { name, member } of placed) {
      const record: InstanceRecord = {
        name,
        project: 'default',
        type: 'sim',
        location: member,
        architecture: arch,
        description: '',
        ephemeral: false,
        profiles: ['default'],
        config: {},
        devices: {},
        createdAt: now,
        lastUsedAt: '1970-01-01T00:00:00Z',
      };
      compares.push({ key: keys.instance('default', name), modRevision: 0 });
      ops.push({ type: 'put', key: keys.instance('default', name), value: JSON.stringify(record) });
    }
    for (let i = 0; i < ops.length; i += maxOpsPerTxn) {
      const r = await store.txn(compares.slice(i, i + maxOpsPerTxn), ops.slice(i, i + maxOpsPerTxn));
      if (!r.succeeded) throw new Error('an instance to create exists already');
    }
    console.log(`[${backend}] wrote ${placed.length} instance records and volumes directly`);
  } finally {
    await store.close();
  }
}

async function runBackend(backend: string): Promise<Figures> {
  const dir = await mkdtemp(join(os.tmpdir(), 'roost-scale-'));
  let etcd: EtcdCluster | null = null;
  const hosts: ChildProcess[] = [];
  const clients = new Map<string, RoostClient>();
  let store: Store | null = null;
  const names = Array.from({ length: shape.members }, (_, i) => `m${String(i + 1).padStart(3, '0')}`);
  const source = names[0] as string;
  const observerName = names[1] as string;
  const client = (m: string): RoostClient => {
    let c = clients.get(m);
    if (!c) clients.set(m, (c = new RoostClient(join(dir, m, 'unix.socket'))));
    return c;
  };
  try {
    if (backend === 'etcd') etcd = await startEtcdCluster({ nodes: 3 });
    const storeUrl = etcd ? etcd.url : `sqlite:${join(dir, 'cluster.db')}`;
    const logs: string[] = [];
    const groups: string[][] = [];
    for (let i = 0; i < names.length; i += shape.perProcess) groups.push(names.slice(i, i + shape.perProcess));

    // The cluster: the first host bootstraps, the others join through its first member.
    let t = performance.now();
    const [firstGroup, ...otherGroups] = groups;
    logs.push(join(dir, 'host-0.log'));
    hosts.push(await startHost(dir, storeUrl, firstGroup ?? [], { bootstrap: true }, join(dir, 'host-0.log')));
    hosts.push(
      ...(await Promise.all(
        otherGroups.map((g, i) => {
          const log = join(dir, `host-${i + 1}.log`);
          logs.push(log);
          return startHost(dir, storeUrl, g, { bootstrap: false, joinVia: join(dir, source, 'unix.socket') }, log);
        }),
      )),
    );
    const startS = (performance.now() - t) / 1000;
    console.log(`[${backend}] ${names.length} members in ${hosts.length} processes up in ${startS.toFixed(1)} s`);

    // Instances: `onSource` on the source member, the rest spread over the others; each created on its member.
    const placed: { name: string; member: string }[] = [];
    for (let i = 0; i < shape.onSource; i++) placed.push({ name: `s${String(i + 1).padStart(4, '0')}`, member: source });
    const others = names.slice(1);
    for (let i = 0; i < shape.instances - shape.onSource; i++) {
      placed.push({ name: `i${String(i + 1).padStart(5, '0')}`, member: others[i % others.length] as string });
    }
    t = performance.now();
    if (createVia === 'api') await createThroughApi(backend, placed, client);
    else await createDirectly(backend, storeUrl, dir, placed);
    const createS = (performance.now() - t) / 1000;
    t = performance.now();
    await pool(placed.filter((p) => p.member === source), 32, async ({ name }) => {
      const c = client(source);
      // Setup, not a measurement: a store too busy for a moment (503) is asked again, a few times.
      for (let attempt = 1; ; attempt++) {
        try {
          const res = await c.request('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
          if (res.type !== 'async') return;
          const op = (await c.get(`${res.operation}/wait?timeout=120`)) as { status: string; err: string };
          if (op.status !== 'Success') throw new Error(`starting ${name}: ${op.err}`);
          return;
        } catch (err) {
          if (attempt >= 5 || !(err instanceof ApiClientError && err.status === 503)) throw err;
          await new Promise((r) => setTimeout(r, 500 * attempt));
        }
      }
    });
    const startInstancesS = (performance.now() - t) / 1000;
    console.log(`[${backend}] ${placed.length} instances created in ${createS.toFixed(1)} s, ${shape.onSource} started in ${startInstancesS.toFixed(1)} s`);

    // Idle: what the members cost when nothing happens (heartbeats, watches, sweeps).
    const pids = hosts.map((h) => h.pid as number);
    await new Promise((r) => setTimeout(r, 5000));
    const cpu0 = pids.map(cpuSeconds);
    const idleWindowS = 10;
    await new Promise((r) => setTimeout(r, idleWindowS * 1000));
    const cpuPercent = (100 * pids.reduce((s, pid, i) => s + cpuSeconds(pid) - (cpu0[i] ?? 0), 0)) / idleWindowS;
    const idle = { cpuPercent, hostRssMb: pids.map((pid) => mb(rss(pid).now)) };
    console.log(`[${backend}] idle: ${cpuPercent.toFixed(0)} % CPU over all hosts, RSS ${idle.hostRssMb.join(', ')} MB`);

    // GET /1.0/instances?recursion=1 with every instance, asked of a member that holds none of the source's.
    const listMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const list = (await client(observerName).get('/1.0/instances?recursion=1')) as unknown[];
      listMs.push(performance.now() - t0);
      if (list.length !== shape.instances) throw new Error(`the listing shows ${list.length} instances, not ${shape.instances}`);
    }
    console.log(`[${backend}] GET /1.0/instances?recursion=1: ${listMs.map((x) => x.toFixed(0)).join(', ')} ms`);

    // The pure planner on the cluster's snapshot, read as the drainer reads it (store + every member's capacity).
    store = await openStore(storeUrl);
    const certKv = await store.get(keys.clusterCertificate());
    if (!certKv) throw new Error('no cluster certificate in the store');
    const peers = new PeerClient(JSON.parse(certKv.value) as ClusterCertificateRecord);
    const internal = new InternalClient(peers);
    const quiet = pino({ level: 'silent' });
    const snapshot = await readSnapshotWith({ store, cluster: new ClusterService(store, 'bench', quiet), capacity: (v, held) => internal.capacity(v.record.address, held) });
    const planTimes: number[] = [];
    for (let i = 0; i < 25; i++) {
      const t0 = performance.now();
      const plan = planEvacuation(snapshot, source);
      if (i >= 5) planTimes.push(performance.now() - t0);
      if (plan.refusals.length > 0) throw new Error(`the plan refuses ${plan.refusals.length} instances: ${plan.refusals[0]?.reason ?? ''}`);
    }
    planTimes.sort((a, b) => a - b);
    await peers.close();
    t = performance.now();
    await client(observerName).request('POST', `/1.0/cluster/members/${source}/state`, { action: 'evacuate', dry_run: true });
    const dryRunMs = performance.now() - t;

    // Evacuate, then restore, counting the store's write transactions meanwhile.
    const body = { action: 'evacuate', ...(parallel !== undefined ? { parallel } : {}) };
    let counter = countWrites(store, (await store.rangeMany([])).revision);
    t = performance.now();
    await client(observerName).runAsync('POST', `/1.0/cluster/members/${source}/state`, body);
    const evacuateS = (performance.now() - t) / 1000;
    await caughtUp(store, counter);
    const evacuateWrites = counter.stop();
    const away = (await client(observerName).get('/1.0/instances?recursion=1')) as { name: string; location: string; status: string }[];
    const moved = away.filter((x) => x.name.startsWith('s') && x.location !== source && x.status === 'Running').length;
    if (moved !== shape.onSource) throw new Error(`after the evacuation ${moved} of ${shape.onSource} instances run elsewhere`);
    console.log(`[${backend}] evacuated ${moved} instances in ${evacuateS.toFixed(1)} s`);

    counter = countWrites(store, (await store.rangeMany([])).revision);
    t = performance.now();
    await client(observerName).runAsync('POST', `/1.0/cluster/members/${source}/state`, { action: 'restore', ...(parallel !== undefined ? { parallel } : {}) });
    const restoreS = (performance.now() - t) / 1000;
    await caughtUp(store, counter);
    const restoreWrites = counter.stop();
    const home = (await client(observerName).get('/1.0/instances?recursion=1')) as { name: string; location: string; status: string }[];
    const back = home.filter((x) => x.name.startsWith('s') && x.location === source && x.status === 'Running').length;
    if (back !== shape.onSource) throw new Error(`after the restore ${back} of ${shape.onSource} instances run at home`);
    console.log(`[${backend}] restored in ${restoreS.toFixed(1)} s`);

    const peakRssMb = {
      hosts: pids.map((pid) => mb(rss(pid).peak)),
      etcd: etcd ? [0, 1, 2].map((i) => mb(rss(etcd?.pid(i) ?? 0).peak)) : [],
    };
    return {
      backend,
      setup: { startS, createS, startInstancesS },
      idle,
      plannerMs: { median: median(planTimes), p95: planTimes[Math.ceil(0.95 * planTimes.length) - 1] ?? 0 },
      dryRunMs,
      drainerPlan: await drainerPlan(logs, source),
      evacuateS,
      restoreS,
      moved,
      evacuateWrites,
      restoreWrites,
      listMs,
      peakRssMb,
    };
  } finally {
    for (const c of clients.values()) await c.close().catch(() => undefined);
    await store?.close().catch(() => undefined);
    await Promise.all(
      hosts.map(
        (h) =>
          new Promise<void>((resolve) => {
            if (h.exitCode !== null || h.signalCode !== null) return resolve();
            const kill = setTimeout(() => h.kill('SIGKILL'), 30_000);
            h.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            h.kill('SIGTERM');
          }),
      ),
    );
    await etcd?.stopAll();
    if (process.env.ROOST_BENCH_KEEP !== '1') await rm(dir, { recursive: true, force: true });
    else console.log(`kept ${dir}`);
  }
}

const results: Figures[] = [];
for (const backend of backends) results.push(await runBackend(backend));

const ok = (met: boolean): string => (met ? 'ok' : 'OVER');
const perMove = (w: WriteCount, moved: number): string => `${((w.total - w.heartbeats) / moved).toFixed(1)} (${(w.total / moved).toFixed(1)} with heartbeats)`;
const table = new Table({ head: ['', 'goal', ...results.map((r) => r.backend)], style: { head: [], border: [] } });
const row = (label: string, goal: string, cell: (r: Figures) => string): void => {
  table.push([label, goal, ...results.map(cell)]);
};
row('pure planner (median, p95)', `≤ ${goals.planMs} ms`, (r) => `${r.plannerMs.median.toFixed(1)} / ${r.plannerMs.p95.toFixed(1)} ms ${ok(r.plannerMs.median <= goals.planMs)}`);
row("drainer's plan step (snapshot + plan)", `≤ ${goals.planMs} ms`, (r) =>
  r.drainerPlan ? `${r.drainerPlan.totalMs.toFixed(0)} ms (${r.drainerPlan.snapshotMs.toFixed(0)} + ${r.drainerPlan.planMs.toFixed(0)}) ${ok(r.drainerPlan.totalMs <= goals.planMs)}` : 'not logged',
);
row('dry run through the API', '', (r) => `${r.dryRunMs.toFixed(0)} ms`);
row(`evacuate ${shape.onSource}`, `≤ ${goals.evacuateSqliteS} s sqlite, ≤ ${goals.evacuateEtcdS} s etcd`, (r) =>
  `${r.evacuateS.toFixed(1)} s ${ok(r.evacuateS <= (r.backend === 'etcd' ? goals.evacuateEtcdS : goals.evacuateSqliteS))}`,
);
row(`restore ${shape.onSource}`, '', (r) => `${r.restoreS.toFixed(1)} s`);
row('store transactions per moved instance: evacuate', '', (r) => perMove(r.evacuateWrites, r.moved));
row('store transactions per moved instance: restore', '', (r) => perMove(r.restoreWrites, r.moved));
row('peak RSS per member process (max / sum)', `≤ ${goals.rssMb} MB`, (r) =>
  `${Math.max(...r.peakRssMb.hosts)} / ${r.peakRssMb.hosts.reduce((a, b) => a + b, 0)} MB ${ok(Math.max(...r.peakRssMb.hosts) <= goals.rssMb)}`,
);
row('peak RSS per etcd process (max / sum)', '', (r) => (r.peakRssMb.etcd.length > 0 ? `${Math.max(...r.peakRssMb.etcd)} / ${r.peakRssMb.etcd.reduce((a, b) => a + b, 0)} MB` : '-'));
row(`GET /1.0/instances?recursion=1 (${shape.instances}, median of 5)`, `≤ ${goals.listMs} ms`, (r) => `${median(r.listMs).toFixed(0)} ms ${ok(median(r.listMs) <= goals.listMs)}`);
row('idle CPU of all member processes', '', (r) => `${r.idle.cpuPercent.toFixed(0)} %`);
row('setup: members up / instances created / source started', '', (r) => `${r.setup.startS.toFixed(0)} / ${r.setup.createS.toFixed(0)} / ${r.setup.startInstancesS.toFixed(0)} s`);

console.log(
  `\nscale: ${shape.members} members (${shape.perProcess} per process${storePerMember ? ', a store object each' : ', one store object per process'}), ` +
    `${shape.instances} sim instances, evacuate and restore the member holding ${shape.onSource} (parallel ${parallel ?? 'default'}); ` +
    `${os.cpus().length} CPUs, ${new Date().toISOString().slice(0, 10)}`,
);
console.log(table.toString());
for (const r of results) {
  const kinds = new Table({ head: [`${r.backend}: what the evacuation's transactions wrote`, 'transactions', 'per moved instance'], style: { head: [], border: [] } });
  for (const [kind, n] of [...r.evacuateWrites.byKind].sort((a, b) => b[1] - a[1]).slice(0, 12)) kinds.push([kind, String(n), (n / r.moved).toFixed(2)]);
  console.log(kinds.toString());
}
