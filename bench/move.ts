// Move throughput: a stopped instance with a 200 MiB root volume moved between two members
// (stream over mutual TLS, verify, fsync, commit), next to a plain tar | tar copy of the same data.
// Run: npm run bench -- move        (ROOST_BENCH_MIB=200 to change the size)

import Table from 'cli-table3';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchCluster, launchMany, since, tarFloor } from './lib.js';

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
  console.log('Moving a stopped instance between two members of a local cluster');
  console.log(table.toString());
  await client.close();
} finally {
  await done();
}
