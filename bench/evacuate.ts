// Evacuate and restore wall times for 6 and 24 running process instances, each with a clean stop of
// about 3 s (a TERM trap that sleeps) and 4 MiB of data, next to the same data copied by a plain
// tar | tar pipe in the same run (the floor), plus each instance's downtime (shutdown → started).
// Run: npm run bench -- evacuate        (ROOST_BENCH_SIZES=6,24 to choose sizes)

import Table from 'cli-table3';
import { join } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { benchCluster, launchMany, median, since, tarFloor, until } from './lib.js';
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
const blobBytes = 4 * 1024 * 1024;
const command =
  `[ -f blob ] || head -c ${blobBytes} /dev/urandom > blob; trap "sleep 3; exit 0" TERM; while true; do sleep 0.2; done`;

const table = new Table({
  head: ['instances', 'data', 'evacuate', 'restore', 'tar|tar floor', 'downtime median', 'downtime max', 'parallel', 'store writes per moved instance'],
  style: { head: [], border: [] },
});

for (const n of sizes) {
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
    await client.runAsync('POST', '/1.0/cluster/members/m01/state', { action: 'evacuate' });
    const evacuate = since(t0);
    const writes = await storeWrites(store, before);
    await store.close();
    await until('every instance started again', () => downtimes.length >= n, 30_000).catch(() => undefined);
    const evacDowntimes = [...downtimes];

    const t1 = process.hrtime.bigint();
    await client.runAsync('POST', '/1.0/cluster/members/m01/state', { action: 'restore' });
    const restore = since(t1);
    events.close();

    const floor = await tarFloor(names.map((x) => rootOf('m01', x)));
    const parallel = 4;
    table.push([
      String(n),
      `${((n * blobBytes) / 2 ** 20).toFixed(0)} MiB`,
      `${evacuate.toFixed(2)} s`,
      `${restore.toFixed(2)} s`,
      `${floor.toFixed(2)} s`,
      `${median(evacDowntimes).toFixed(2)} s`,
      `${Math.max(0, ...evacDowntimes).toFixed(2)} s`,
      String(parallel),
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
console.log('Downtime = instance-shutdown event → instance-started event of the same instance; its floor is its own 3 s stop + copy + start.');
console.log('Store writes per moved instance: write transactions during the evacuation over the instances moved (heartbeats of the 3 members included), and keys written per kind.');
