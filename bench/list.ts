// `roost list` with 1,000 instances spread over 3 members (every member reports its instances'
// state, as LXD's list does): wall time of the CLI command, median of 5 runs.
// Run: npm run bench -- list        (ROOST_BENCH_INSTANCES=1000 to change the count)

import Table from 'cli-table3';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { benchCluster, launchMany, median, since } from './lib.js';

const count = Number(process.env.ROOST_BENCH_INSTANCES ?? '1000');
const { cluster, done } = await benchCluster(3);
try {
  const client = cluster.client('m01');
  const t0 = process.hrtime.bigint();
  const names = Array.from({ length: count }, (_, i) => `i${String(i + 1).padStart(4, '0')}`);
  for (const [k, member] of ['m01', 'm02', 'm03'].entries()) {
    await launchMany(client, names.filter((_, i) => i % 3 === k), member, 'sleep 1000', false, 16);
  }
  const createSeconds = since(t0);
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = process.hrtime.bigint();
    const r = spawnSync(process.execPath, [join(import.meta.dirname, '..', 'bin', 'roost.js'), 'list', '--format', 'csv'], {
      env: { ...process.env, ROOST_DIR: join(cluster.dir, 'm01') },
      encoding: 'utf8',
    });
    runs.push(since(t));
    if (r.status !== 0 || r.stdout.trim().split('\n').length !== count) throw new Error(`roost list failed: ${r.stderr}`);
  }
  const table = new Table({ head: ['instances', 'create all (API)', 'roost list median', 'min', 'max'], style: { head: [], border: [] } });
  table.push([String(count), `${createSeconds.toFixed(1)} s`, `${median(runs).toFixed(2)} s`, `${Math.min(...runs).toFixed(2)} s`, `${Math.max(...runs).toFixed(2)} s`]);
  console.log('roost list over a 3-member local cluster (instances stopped; state asked of every member)');
  console.log(table.toString());
  await client.close();
} finally {
  await done();
}
