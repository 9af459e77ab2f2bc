// Move throughput: a stopped instance with a 200 MiB root volume moved between two members
// (stream over mutual TLS, verify, fsync, commit), next to a plain tar | tar copy of the same data.
// Also what durable commits cost: the store transaction that flips an instance's location, timed with
// SQLite's synchronous=FULL (what the daemon runs: fsync at every commit) and NORMAL (fsync at checkpoints
// only, which a power cut can undo), side by side on the same disk in the same run.
// Run: npm run bench -- move        (ROOST_BENCH_MIB=200 to change the size)

import Table from 'cli-table3';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { benchCluster, launchMany, median, since, tarFloor } from './lib.js';
import { openSqliteStore } from '../src/store/sqlite.js';

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
const { cluster, done } = await benchCluster(2);
try {
  const client = cluster.client('m01');
  await launchMany(client, ['big'], 'm01', 'sleep 1000', false);
  const root = (member: string): string => join(cluster.dir, member, 'storage-pools', 'default', 'containers', 'default_big');
  // Several files, as a real root file system has, of incompressible data.
  spawnSync('sh', ['-c', `for i in $(seq 1 ${mib / 10}); do head -c 10485760 /dev/urandom > f$i; done`], { cwd: root('m01') });

  const pids = ['m01', 'm02'].map((m) => cluster.pidOf(m)).filter((p): p is number => p !== null);
  const floor = await tarFloor([root('m01')]);
  const c0 = daemonCpu(pids);
  const t0 = process.hrtime.bigint();
  await client.runAsync('POST', '/1.0/instances/big?target=m02', { name: 'big', migration: true });
  const there = since(t0);
  const c1 = daemonCpu(pids);
  const t1 = process.hrtime.bigint();
  await client.runAsync('POST', '/1.0/instances/big?target=m01', { name: 'big', migration: true });
  const back = since(t1);
  const c2 = daemonCpu(pids);

  const table = new Table({ head: ['copy', 'data', 'seconds', 'MB/s', 'vs tar|tar', 'daemon CPU s'], style: { head: [], border: [] } });
  const mb = (mib * 2 ** 20) / 1e6;
  table.push(['tar | tar (floor)', `${mib} MiB`, floor.toFixed(2), (mb / floor).toFixed(0), '1.00×', '']);
  table.push(['roost move m01 → m02', `${mib} MiB`, there.toFixed(2), (mb / there).toFixed(0), `${(there / floor).toFixed(2)}×`, (c1 - c0).toFixed(2)]);
  table.push(['roost move m02 → m01', `${mib} MiB`, back.toFixed(2), (mb / back).toFixed(0), `${(back / floor).toFixed(2)}×`, (c2 - c1).toFixed(2)]);
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
