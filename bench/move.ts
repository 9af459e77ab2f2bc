// Move throughput: a stopped instance with a 200 MiB root volume moved between two members
// (stream over mutual TLS, verify, fsync, commit), next to a plain tar | tar copy of the same data.
// Also what durable commits cost: the store transaction that flips an instance's location, timed with
// SQLite's synchronous=FULL (what the daemon runs: fsync at every commit) and NORMAL (fsync at checkpoints
// only, which a power cut can undo), side by side on the same disk in the same run.
// And, run as root with btrfs-progs, the same data moved between two btrfs pools (each on a loop file the
// bench makes and removes) by btrfs send | receive: the whole cold copy Roost makes (send points, streams,
// the entry-by-entry check on both sides, commit) next to a bare `btrfs send | btrfs receive`. A member has
// one fixed dir pool until pools can be configured, so this copy runs in process (the target's receiving
// side is a real Migrator; no TLS between them), as test/migration/btrfs-move.test.ts does.
// Also a tree of many small files (1 GiB in 10,000 files by default: ROOST_BENCH_SMALL_MIB, _SMALL_FILES).
// Run: npm run bench -- move        (ROOST_BENCH_MIB=200 to change the size; ROOST_BENCH_LOG=info logs the
// btrfs copy's pass and check times)

import Table from 'cli-table3';
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { benchCluster, launchMany, median, since, tarFloor } from './lib.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { Precopy } from '../src/migration/precopy.js';
import { poolFootprints, scanTree } from '../src/migration/tree.js';
import { rootVolumeRefs } from '../src/storage/driver.js';
import { BtrfsPool } from '../src/storage/drivers/btrfs.js';
import { btrfsMissing, makeLoopBtrfs, type LoopBtrfs } from '../test/helpers/btrfs.js';
import { journalMove, linkTo, targetMigrator } from '../test/helpers/move-link.js';

/** Location flips timed per synchronous mode. */
const commits = 300;

/**
 * Median seconds of one move's commit transaction (compare on the instance's revision, put it with its new
 * location, record the journal phase) on a fresh store file in `dir` opened with `synchronous`.
 */
async function commitSeconds(dir: string, synchronous: 'FULL' | 'NORMAL'): Promise<number> {
  const store = await openSqliteStore(join(dir, `${synchronous}.db`), { synchronous });
  try {
    const record = { name: 'big', project: 'default', type: 'process', location: 'm01', config: { 'process.command': 'sleep 1000', 'volatile.last_state.power': 'STOPPED' }, devices: {} };
    let revision = await store.put('instances/default/big', JSON.stringify(record));
    const times: number[] = [];
    for (let i = 0; i < commits; i++) {
      const next = { ...record, location: i % 2 === 0 ? 'm02' : 'm01' };
      const t0 = process.hrtime.bigint();
      const r = await store.txn([{ key: 'instances/default/big', modRevision: revision }], [
        { type: 'put', key: 'instances/default/big', value: JSON.stringify(next) },
        { type: 'put', key: 'moves/default/big', value: JSON.stringify({ id: String(i), phase: 'committed' }) },
      ]);
      times.push(since(t0));
      if (!r.succeeded) throw new Error('the location flip lost its compare');
      revision = r.revision;
    }
    return median(times);
  } finally {
    await store.close();
  }
}

/** Seconds of the btrfs rows: Roost's cold copy between two btrfs pools, and a bare send | receive of the same data. */
async function btrfsSeconds(mib: number): Promise<{ roost: number; floor: number; streamed: number }> {
  const size = `${Math.max(300, Math.ceil(mib * 2.5))}M`;
  const made: LoopBtrfs[] = [];
  const scratch = await mkdtemp(join(os.tmpdir(), 'roost-bench-btrfs-'));
  try {
    const a = await makeLoopBtrfs(size);
    made.push(a);
    const b = await makeLoopBtrfs(size);
    made.push(b);
    const source = new BtrfsPool('default', join(a.mount, 'pool'));
    const target = new BtrfsPool('default', join(b.mount, 'pool'));
    await source.init();
    await target.init();
    const refs = rootVolumeRefs('default', 'big', []);
    const ref = refs[0];
    if (!ref || !source.streams) throw new Error('no btrfs streams');
    await source.createVolume(ref);
    spawnSync('sh', ['-c', `for i in $(seq 1 ${mib / 10}); do head -c 10485760 /dev/urandom > f$i; done`], { cwd: source.volumePath(ref) });
    spawnSync('btrfs', ['filesystem', 'sync', a.mount]);

    // The floor: a read-only snapshot sent and received, made durable, nothing checked.
    const t0 = process.hrtime.bigint();
    const point = await source.streams.sendPoint(ref, 'floor');
    const r = spawnSync('sh', ['-c', 'btrfs send -q "$1" | btrfs receive -q "$2" && btrfs filesystem sync "$2"', 'floor', point.path, b.mount]);
    if (r.status !== 0) throw new Error(`btrfs send | receive failed: ${r.stderr.toString()}`);
    const floor = since(t0);
    await source.streams.releaseSendPoint(point);
    spawnSync('btrfs', ['subvolume', 'delete', join(b.mount, point.path.split('/').at(-1) ?? '')]);

    // Roost's copy: scan and prepare (the offer), the stream, the check on both sides, the commit.
    const store = await openSqliteStore(join(scratch, 'cluster.db'));
    const log = pino({ level: process.env.ROOST_BENCH_LOG ?? 'warn' });
    let streamed = 0;
    try {
      await journalMove(store, 'bench-move', 'big');
      const link = linkTo(targetMigrator(store, target, log), 'bench-move');
      const t1 = process.hrtime.bigint();
      const scans = [await scanTree(source.volumePath(ref))];
      let bytes = 0;
      for (const e of scans[0]?.values() ?? []) bytes += e.size;
      const answer = await link.prepare(refs, poolFootprints(refs, scans), undefined, source.streams.format);
      if (answer.stream !== 'btrfs') throw new Error('the btrfs target declined the btrfs stream');
      const copy = new Precopy({ moveId: 'bench-move', refs, volumePath: (r) => source.volumePath(r), streams: source.streams, link, target: 'm2', instances: ['big'], log, onProgress: (done) => (streamed = done) });
      try {
        await copy.copyStreamedCold(bytes);
      } finally {
        await copy.close();
      }
      await link.commit();
      return { roost: since(t1), floor, streamed };
    } finally {
      await store.close();
    }
  } finally {
    for (const fs of made) await fs.remove();
    await rm(scratch, { recursive: true, force: true });
  }
}

/** CPU seconds (user + system) the two daemons have used so far: less disturbed by a busy host than wall time. */
function daemonCpu(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
  }
  return ticks / 100; // USER_HZ
}

const mib = Number(process.env.ROOST_BENCH_MIB ?? '200');
/** The tree of many small files: its size in MiB and its file count. */
const smallMib = Number(process.env.ROOST_BENCH_SMALL_MIB ?? '1024');
const smallFiles = Number(process.env.ROOST_BENCH_SMALL_FILES ?? '10000');

/** `files` files of incompressible data, `bytes` in all, 100 to a directory (as a real tree spreads them). */
function fillSmall(dir: string, files: number, bytes: number): void {
  const each = Math.floor(bytes / files);
  const buf = Buffer.allocUnsafe(each);
  for (let i = 0; i < files; i++) {
    const sub = join(dir, `d${Math.floor(i / 100)}`);
    if (i % 100 === 0) mkdirSync(sub);
    randomFillSync(buf);
    writeFileSync(join(sub, `f${i}`), buf);
  }
}

const { cluster, done } = await benchCluster(2);
try {
  const client = cluster.client('m01');
  const root = (member: string, name: string): string => join(cluster.dir, member, 'storage-pools', 'default', 'containers', `default_${name}`);
  const pids = ['m01', 'm02'].map((m) => cluster.pidOf(m)).filter((p): p is number => p !== null);
  const table = new Table({ head: ['copy', 'data', 'seconds', 'MB/s', 'throughput vs tar|tar', 'daemon CPU s'], style: { head: [], border: [] } });
  const shapes = [
    // Several files, as a real root file system has, of incompressible data.
    { name: 'big', label: `${mib} MiB, ${mib / 10} files`, bytes: mib * 2 ** 20, fill: (dir: string) => spawnSync('sh', ['-c', `for i in $(seq 1 ${mib / 10}); do head -c 10485760 /dev/urandom > f$i; done`], { cwd: dir }) },
    { name: 'small', label: `${smallMib} MiB, ${smallFiles} files`, bytes: smallMib * 2 ** 20, fill: (dir: string) => fillSmall(dir, smallFiles, smallMib * 2 ** 20) },
  ];
  for (const shape of shapes) {
    await launchMany(client, [shape.name], 'm01', 'sleep 1000', false);
    shape.fill(root('m01', shape.name));
    const floor = await tarFloor([root('m01', shape.name)]);
    const c0 = daemonCpu(pids);
    const t0 = process.hrtime.bigint();
    await client.runAsync('POST', `/1.0/instances/${shape.name}?target=m02`, { name: shape.name, migration: true });
    const there = since(t0);
    const c1 = daemonCpu(pids);
    const t1 = process.hrtime.bigint();
    await client.runAsync('POST', `/1.0/instances/${shape.name}?target=m01`, { name: shape.name, migration: true });
    const back = since(t1);
    const c2 = daemonCpu(pids);
    const mb = shape.bytes / 1e6;
    table.push(['tar | tar (floor)', shape.label, floor.toFixed(2), (mb / floor).toFixed(0), '1.00×', '']);
    table.push(['roost move m01 → m02', shape.label, there.toFixed(2), (mb / there).toFixed(0), `${(floor / there).toFixed(2)}×`, (c1 - c0).toFixed(2)]);
    table.push(['roost move m02 → m01', shape.label, back.toFixed(2), (mb / back).toFixed(0), `${(floor / back).toFixed(2)}×`, (c2 - c1).toFixed(2)]);
    await client.runAsync('DELETE', `/1.0/instances/${shape.name}`);
  }
  const mb = (mib * 2 ** 20) / 1e6;
  const missing = btrfsMissing();
  if (missing === null) {
    const btrfs = await btrfsSeconds(mib);
    table.push(['btrfs send | btrfs receive (floor)', `${mib} MiB`, btrfs.floor.toFixed(2), (mb / btrfs.floor).toFixed(0), '1.00×', '']);
    table.push([`roost copy btrfs → btrfs (in process; ${(btrfs.streamed / 1e6).toFixed(0)} MB streamed)`, `${mib} MiB`, btrfs.roost.toFixed(2), (mb / btrfs.roost).toFixed(0), `${(btrfs.floor / btrfs.roost).toFixed(2)}× (of send|receive)`, '']);
  } else {
    table.push(['btrfs rows skipped', missing, '', '', '', '']);
  }
  // Same disk as the cluster's store; each mode on its own file, one after the other.
  const scratch = await mkdtemp(join(cluster.dir, 'commit-bench-'));
  const normal = await commitSeconds(scratch, 'NORMAL');
  const full = await commitSeconds(scratch, 'FULL');
  await rm(scratch, { recursive: true, force: true });
  const ms = (s: number): string => (s * 1000).toFixed(2);
  table.push([`commit of the new location (median of ${commits}), NORMAL | FULL`, '1 txn', `${ms(normal)} ms | ${ms(full)} ms`, '', `FULL ${(full / normal).toFixed(1)}× NORMAL`, '']);
  console.log('Moving a stopped instance between two members of a local cluster');
  console.log(table.toString());
  console.log(`synchronous=FULL (the daemon's): every store write waits ${ms(full - normal)} ms longer than under NORMAL, for commits that survive a power cut.`);
  await client.close();
} finally {
  await done();
}
