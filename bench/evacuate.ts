// Evacuate and restore wall times for 6 and 24 running process instances, each with a clean stop of
// about 3 s (a TERM trap that sleeps) and 4 MiB of data, next to the same data copied by a plain
// tar | tar pipe in the same run (the floor), plus each instance's downtime (shutdown → started) as p50, p95
// and max, against that instance's own floor measured in the same run: its clean stop + its copy at
// tar | tar speed + its start, each measured alone.
// Each size runs once per copy parallelism of ROOST_BENCH_PARALLEL (default `4,auto`: the old fixed default
// next to copy slots that follow the throughput), side by side in the same run.
// Run: npm run bench -- evacuate        (ROOST_BENCH_SIZES=6,24 to choose sizes, ROOST_BENCH_PARALLEL=4,auto)

import Table from 'cli-table3';
import { join } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { benchCluster, launchMany, median, quantile, since, tarFloor, until } from './lib.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/store.js';

/**
 * Store write transactions between two revisions (every write bumps the revision once), and how many keys
 * of each kind they wrote, read back through a watch of the whole key space.
 */
async function storeWrites(store: Store, from: number): Promise<{ txns: number; byKind: Map<string, number> }> {
  const { revision: to } = await store.range('config');
  const byKind = new Map<string, number>();
  await new Promise<void>((resolve) => {
    if (to <= from) return resolve();
    const watch = store.watch('', from, (events) => {
      for (const e of events) {
        const kind = e.kv.key.split('/')[0] ?? e.kv.key;
        byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
      }
      if ((events[0]?.kv.modRevision ?? 0) >= to) {
        watch.close();
        resolve();
      }
    });
  });
  return { txns: to - from, byKind };
}

const sizes = (process.env.ROOST_BENCH_SIZES ?? '6,24').split(',').map(Number);
const parallels = (process.env.ROOST_BENCH_PARALLEL ?? '4,auto').split(',').map((p) => (p.trim() === 'auto' ? 'auto' : Number(p)));
if (parallels.some((p) => p !== 'auto' && !(Number.isInteger(p) && p >= 1))) {
  console.error(`ROOST_BENCH_PARALLEL must list whole numbers of at least 1 or "auto", not "${process.env.ROOST_BENCH_PARALLEL}"`);
  process.exit(2);
}
const blobBytes = 4 * 1024 * 1024;
const command =
  `[ -f blob ] || head -c ${blobBytes} /dev/urandom > blob; trap "sleep 3; exit 0" TERM; while true; do sleep 0.2; done`;

const table = new Table({
  head: ['instances', 'copies at once', 'data', 'evacuate', 'restore', 'tar|tar floor', 'downtime evacuate p50 / p95 / max', 'downtime restore p50 / p95 / max', 'own floor (stop + copy + start)', 'store writes per moved instance'],
  style: { head: [], border: [] },
});

for (const n of sizes) for (const parallel of parallels) {
  const { cluster, done } = await benchCluster(3);
  try {
    const client = cluster.client('m01');
    const observer = cluster.client('m02');
    const names = Array.from({ length: n }, (_, i) => `b${String(i + 1).padStart(3, '0')}`);
    await launchMany(client, names, 'm01', command, true);
    const rootOf = (member: string, name: string): string => join(cluster.dir, member, 'storage-pools', 'default', 'containers', `default_${name}`);
    await until('every instance wrote its data', () => names.every((x) => existsSync(join(rootOf('m01', x), 'blob')) && statSync(join(rootOf('m01', x), 'blob')).size === blobBytes));

    // Downtime per instance: its shutdown began (instance-shutdown) → it runs again (instance-started).
    const down = new Map<string, number>();
    const downtimes: number[] = [];
    const events = await observer.events(['lifecycle'], (e) => {
      const md = e.metadata as { action?: string; source?: string };
      const name = (md.source ?? '').split('/').pop() ?? '';
      if (md.action === 'instance-shutdown') down.set(name, Date.parse(e.timestamp));
      if (md.action === 'instance-started' && down.has(name)) {
        downtimes.push((Date.parse(e.timestamp) - (down.get(name) as number)) / 1000);
        down.delete(name);
      }
    });

    const store = await openStore(cluster.sqliteUrl);
    const before = (await store.range('config')).revision;
    const t0 = process.hrtime.bigint();
    await client.runAsync('POST', '/1.0/cluster/members/m01/state', { action: 'evacuate', parallel });
    const evacuate = since(t0);
    const writes = await storeWrites(store, before);
    await store.close();
    await until('every instance started again', () => downtimes.length >= n, 30_000).catch(() => undefined);
    const evacDowntimes = downtimes.splice(0);

    const t1 = process.hrtime.bigint();
    await client.runAsync('POST', '/1.0/cluster/members/m01/state', { action: 'restore', parallel });
    const restore = since(t1);
    await until('every instance started again at home', () => downtimes.length >= n, 30_000).catch(() => undefined);
    const restoreDowntimes = downtimes.splice(0);
    events.close();

    const floor = await tarFloor(names.map((x) => rootOf('m01', x)));
    // Each instance's own floor, measured alone on three of them: a clean stop, its copy, a start.
    const own = { stop: [] as number[], copy: [] as number[], start: [] as number[] };
    for (const name of names.slice(0, 3)) {
      const s0 = process.hrtime.bigint();
      await client.runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'stop', timeout: 30 });
      own.stop.push(since(s0));
      own.copy.push(await tarFloor([rootOf('m01', name)]));
      const s1 = process.hrtime.bigint();
      await client.runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
      own.start.push(since(s1));
    }
    const ownFloor = median(own.stop) + median(own.copy) + median(own.start);
    const spread = (d: number[]): string =>
      `${quantile(d, 0.5).toFixed(2)} / ${quantile(d, 0.95).toFixed(2)} / ${Math.max(0, ...d).toFixed(2)} s (p50 ${(quantile(d, 0.5) / ownFloor).toFixed(1)}x own)`;
    table.push([
      String(n),
      String(parallel),
      `${((n * blobBytes) / 2 ** 20).toFixed(0)} MiB`,
      `${evacuate.toFixed(2)} s`,
      `${restore.toFixed(2)} s`,
      `${floor.toFixed(2)} s`,
      spread(evacDowntimes),
      spread(restoreDowntimes),
      `${ownFloor.toFixed(2)} s (${median(own.stop).toFixed(2)} + ${median(own.copy).toFixed(2)} + ${median(own.start).toFixed(2)})`,
      `${(writes.txns / n).toFixed(1)} (${[...writes.byKind].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${(v / n).toFixed(1)}`).join(', ')})`,
    ]);
    await client.close();
    await observer.close();
  } finally {
    await done();
  }
}

console.log('Evacuation of one member of a local 3-member cluster (process instances, clean stop ≈ 3 s each)');
console.log(table.toString());
console.log('Reference (../shared/wire/README.md): LXD 5.0.2 needs 112 s to evacuate 24 containers on this machine kind, one at a time.');
console.log('Downtime = instance-shutdown event → instance-started event of the same instance, during the evacuation and during the restore.');
console.log('Own floor = the median, over three of the instances measured alone after the run, of a clean stop, a tar | tar copy of its volume, and a start.');
console.log('Store writes per moved instance: write transactions during the evacuation over the instances moved (heartbeats of the 3 members included), and keys written per kind.');
