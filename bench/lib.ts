// Shared by the cluster benchmarks: a throw-away local cluster, launching instances through the
// API, waiting with deadlines, and a plain tar | tar copy as the floor to compare moves against.

import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { LocalCluster } from '../src/daemon/local-cluster.js';
import type { RoostClient } from '../src/client/client.js';

/** A local cluster in a temp dir; `done()` stops it and removes everything. */
export async function benchCluster(members: number): Promise<{ cluster: LocalCluster; done: () => Promise<void> }> {
  const dir = await mkdtemp(join(os.tmpdir(), 'roost-bench-'));
  const cluster = new LocalCluster(dir);
  await cluster.up(members);
  return { cluster, done: async () => { await cluster.down(true); await rm(dir, { recursive: true, force: true }); } };
}

/** Create (and optionally start) process instances on `target`, `batch` at a time. */
export async function launchMany(client: RoostClient, names: string[], target: string, command: string, start: boolean, batch = 8): Promise<void> {
  for (let i = 0; i < names.length; i += batch) {
    await Promise.all(
      names.slice(i, i + batch).map(async (name) => {
        await client.runAsync('POST', `/1.0/instances?target=${target}`, { name, type: 'process', source: { type: 'none' }, config: { 'process.command': command } });
        if (start) await client.runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
      }),
    );
  }
}

/** Poll until `check` holds or fail after `timeoutMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Seconds a plain `tar -cf - . | tar -xf -` takes to copy each directory, one after the other. */
export async function tarFloor(dirs: string[]): Promise<number> {
  const scratch = await mkdtemp(join(os.tmpdir(), 'roost-floor-'));
  const t0 = process.hrtime.bigint();
  for (const [i, dir] of dirs.entries()) {
    const to = join(scratch, String(i));
    await mkdir(to);
    const r = spawnSync('sh', ['-c', `tar -C "$1" -cf - . | tar -C "$2" -xf - && sync -f "$2"`, 'floor', dir, to]);
    if (r.status !== 0) throw new Error(`tar | tar failed: ${r.stderr.toString()}`);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  await rm(scratch, { recursive: true, force: true });
  return seconds;
}

/** Median of numbers. */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return 0;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** The `q` quantile (0..1) of numbers, nearest rank. */
export function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return 0;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] as number;
}

/** Seconds since `t0` (from process.hrtime.bigint()). */
export function since(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e9;
}
