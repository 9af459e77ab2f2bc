// "Exactly one copy, whole, where the store says": the checks every move fault test ends with. A move that
// failed, was cancelled or lost its peer must leave the instance's root volume on one member only (the one
// its record names), byte for byte as before, with no staging entry or journal anywhere.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { keys, type InstanceRecord } from '../../src/store/schema.js';
import { processAlive, sha256Tree, waitFor, type TestCluster } from './cluster.js';

/** Members holding a root volume directory of `name`. */
export function rootHolders(c: TestCluster, name: string): string[] {
  return c.names.filter((m) => existsSync(c.instanceDir(m, name)));
}

/** Every staging entry (`member/move id`) on every member. */
export async function stagingEntries(c: TestCluster): Promise<string[]> {
  const out: string[] = [];
  for (const m of c.names) for (const e of await readdir(c.stagingDir(m)).catch(() => [] as string[])) out.push(`${m}/${e}`);
  return out;
}

/** What a settled instance must look like. */
export interface SoleCopy {
  location: string;
  /** `sha256Tree` of its root volume before the move. */
  sum: string;
  running: boolean;
}

/**
 * Waits (with a deadline) until the moves of `name` have settled, no journal and no staging anywhere,
 * then asserts that its record's location holds the only root volume, with exactly the bytes it had,
 * and that it runs there (or not) as expected.
 */
export async function assertSoleCopy(c: TestCluster, name: string, expected: SoleCopy, timeoutMs = 30_000): Promise<void> {
  const store = await c.store();
  await waitFor(
    `${name} has settled: no journal, no staging, one copy`,
    async () => (await store.get(keys.move('default', name))) === null && (await stagingEntries(c)).length === 0 && rootHolders(c, name).length === 1,
    timeoutMs,
  );
  const kv = await store.get(keys.instance('default', name));
  assert.ok(kv, `${name} has a record`);
  const record = JSON.parse(kv.value) as InstanceRecord;
  assert.equal(record.location, expected.location, `${name} is recorded on ${expected.location}`);
  assert.deepEqual(rootHolders(c, name), [expected.location], `the only copy of ${name} is on ${expected.location}`);
  assert.equal(await sha256Tree(c.instanceDir(expected.location, name)), expected.sum, `every byte of ${name} is intact`);
  if (expected.running) {
    await waitFor(`${name} runs on ${expected.location}`, async () => (await c.instance(name)).status === 'Running', 15_000);
    assert.ok(processAlive((await c.instance(name)).state?.pid ?? 0), `${name}'s process runs`);
  } else {
    assert.equal((await c.instance(name)).status, 'Stopped');
  }
}

/** Write `count` files of `bytes` random bytes each under `dir/sub` (small files: few bytes, many blocks). */
export async function writeFiles(dir: string, sub: string, count: number, bytes: number): Promise<void> {
  await mkdir(path.join(dir, sub), { recursive: true });
  for (let i = 0; i < count; i++) await writeFile(path.join(dir, sub, `f${i}`), randomBytes(bytes));
}

/** Poll fast (every 2 ms) until `probe` answers something, for moments that last only a little while. */
export async function catchMoment<T>(what: string, probe: () => Promise<T | null> | T | null, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
