// Downtime of a busy instance moved cold and with pre-copy (`live: true`): a process instance with a
// 200 MiB root volume (many files of random data) that appends a line every ~10 ms and rewrites a small
// file, moved between two members, alternately cold and with pre-copy, in one run. Per move: wall time
// of the operation, downtime (instance-shutdown event → instance-started event), and the bytes sent after
// the stop (cold: the whole volume; pre-copy: its last pass, from the source daemon's log).
// Run: npm run bench -- precopy        (ROOST_BENCH_MIB=200, ROOST_BENCH_ROUNDS=2 to change)

import Table from 'cli-table3';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { benchCluster, launchMany, median, since, until } from './lib.js';

const mib = Number(process.env.ROOST_BENCH_MIB ?? '200');
const rounds = Number(process.env.ROOST_BENCH_ROUNDS ?? '2');
const fileBytes = 512 * 1024;
const command = 'trap "exit 0" TERM; i=$(tail -n 1 log.txt 2>/dev/null); i=${i:-0}; while true; do i=$((i+1)); echo $i >> log.txt; echo "$i" > small.txt; sleep 0.01; done';

/** Bytes as MiB, or KiB when under one MiB. */
function sizeText(bytes: number): string {
  return bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

const { cluster, done } = await benchCluster(2);
try {
  const client = cluster.client('m01');
  await launchMany(client, ['hot'], 'm01', command, false);
  const root = (member: string): string => join(cluster.dir, member, 'storage-pools', 'default', 'containers', 'default_hot');
  const files = Math.round((mib * 2 ** 20) / fileBytes);
  for (let i = 0; i < files; i++) {
    const dir = join(root('m01'), 'data', `d${i % 16}`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, `f${i}.bin`), randomBytes(fileBytes));
  }
  await client.runAsync('PUT', '/1.0/instances/hot/state', { action: 'start' });

  // Downtime: the instance-shutdown event to the next instance-started event (events of every member arrive here).
  let down: number | null = null;
  const downtimes: number[] = [];
  const events = await client.events(['lifecycle'], (e) => {
    const md = e.metadata as { action?: string; source?: string };
    if (md.source !== '/1.0/instances/hot') return;
    if (md.action === 'instance-shutdown') down = Date.parse(e.timestamp);
    if (md.action === 'instance-started' && down !== null) {
      downtimes.push((Date.parse(e.timestamp) - down) / 1000);
      down = null;
    }
  });

  /** The last pass of the newest pre-copy in a member's log: bytes and the number of passes. */
  const lastPrecopy = (member: string): { bytes: number; passes: number } => {
    const lines = readFileSync(join(cluster.dir, member, 'roostd.log'), 'utf8').split('\n').filter((l) => l.includes('"pre-copy pass"'));
    const recs = lines.map((l) => JSON.parse(l) as { move: string; pass: number; bytes: number; running: boolean });
    const last = recs.at(-1);
    if (!last || last.running) throw new Error(`no finished pre-copy in the log of ${member}`);
    return { bytes: last.bytes, passes: recs.filter((r) => r.move === last.move).length };
  };

  const table = new Table({
    head: ['move', 'mode', 'wall', 'downtime', 'sent after the stop', 'passes'],
    style: { head: [], border: [] },
  });
  const summary = { cold: { wall: [] as number[], down: [] as number[] }, precopy: { wall: [] as number[], down: [] as number[] } };
  let at = 'm01';
  for (let r = 0; r < rounds; r++) {
    for (const live of [false, true]) {
      const to = at === 'm01' ? 'm02' : 'm01';
      const seen = downtimes.length;
      const t0 = process.hrtime.bigint();
      await client.runAsync('POST', `/1.0/instances/hot?target=${to}`, { name: 'hot', migration: true, live });
      const wall = since(t0);
      await until('the instance started on the target', () => downtimes.length > seen, 30_000);
      const downtime = downtimes[downtimes.length - 1] ?? 0;
      const after = live ? lastPrecopy(at) : { bytes: mib * 2 ** 20, passes: 1 }; // cold: the whole volume
      const mode = live ? 'pre-copy' : 'cold';
      table.push([`${at} → ${to}`, mode, `${wall.toFixed(2)} s`, `${downtime.toFixed(2)} s`, sizeText(after.bytes), live ? String(after.passes) : '—']);
      summary[live ? 'precopy' : 'cold'].wall.push(wall);
      summary[live ? 'precopy' : 'cold'].down.push(downtime);
      at = to;
    }
  }
  events.close();

  console.log(`Moving a running instance (${mib} MiB in ${files} files; appends a line every ~10 ms, rewrites a small file) between two members`);
  console.log(table.toString());
  const ratio = median(summary.precopy.down) / Math.max(1e-9, median(summary.cold.down));
  console.log(
    `median downtime: cold ${median(summary.cold.down).toFixed(2)} s, pre-copy ${median(summary.precopy.down).toFixed(2)} s (${ratio.toFixed(2)}×); ` +
      `median wall: cold ${median(summary.cold.wall).toFixed(2)} s, pre-copy ${median(summary.precopy.wall).toFixed(2)} s`,
  );
  console.log('Downtime includes the clean stop and the process driver\'s 0.2 s start check on the target.');
  await client.close();
} finally {
  await done();
}
