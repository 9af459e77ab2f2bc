// The SQLite backend: the shared conformance suite on a temporary file, then what only an embedded,
// multi-process backend needs: several connections and several processes on one file.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSqliteStore, type SqliteBackedStore } from '../../src/store/sqlite.js';
import { openStore } from '../../src/store/index.js';
import { StoreError, type Store, type WatchEvent } from '../../src/store/store.js';
import { storeConformance } from './conformance.js';
import { waitFor } from './wait.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

async function tempDir(): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'roost-store-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

storeConformance('sqlite store', async () => {
  const { dir, remove } = await tempDir();
  const store = await openSqliteStore(join(dir, 'store.db'));
  return {
    store,
    async cleanup() {
      await store.close();
      await remove();
    },
  };
});

/** Runs the incrementer fixture; resolves with its JSON tally, rejects with its stderr if it fails. */
function runIncrementer(dbPath: string, n: number): Promise<{ pid: number; count: number; retries: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/store/fixtures/incrementer.ts', dbPath, String(n)], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`incrementer exited with ${code}: ${err}`));
      try {
        const tally: unknown = JSON.parse(out.trim());
        if (typeof tally !== 'object' || tally === null || !('retries' in tally) || !('pid' in tally)) {
          throw new Error(`unexpected output: ${out}`);
        }
        resolve(tally as { pid: number; count: number; retries: number });
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  });
}

describe('sqlite store on a shared file', () => {
  it('two stores opened on one file see each other’s writes and watches', async () => {
    const { dir, remove } = await tempDir();
    const path = join(dir, 'shared.db');
    const a = await openSqliteStore(path);
    const b = await openSqliteStore(path, { pollIntervalMs: 10 });
    try {
      const seenByB: WatchEvent[] = [];
      const seenByA: WatchEvent[] = [];
      const start = (await a.range('m/')).revision;
      const wb = b.watch('m/', start, (events) => seenByB.push(...events));
      const wa = a.watch('m/', start, (events) => seenByA.push(...events));
      const rev = await a.put('m/from-a', '1');
      assert.equal((await b.get('m/from-a'))?.modRevision, rev);
      await b.put('m/from-b', '2');
      assert.deepEqual((await a.range('m/')).kvs.map((kv) => kv.key), ['m/from-a', 'm/from-b']);
      await waitFor('both watches to see both writes', () => seenByA.length >= 2 && seenByB.length >= 2);
      assert.deepEqual(seenByB.map((e) => e.kv.key), ['m/from-a', 'm/from-b']);
      assert.deepEqual(seenByA.map((e) => e.kv.key), ['m/from-a', 'm/from-b']);
      // A lease granted through one connection is usable and revocable through the other.
      const lease = await a.grantLease(30);
      await b.put('m/leased', 'x', lease);
      await b.revokeLease(lease);
      assert.equal(await a.get('m/leased'), null);
      wa.close();
      wb.close();
    } finally {
      await a.close();
      await b.close();
      await remove();
    }
  });

  it('two processes doing compare-and-swap increments lose no update', async () => {
    const n = 300;
    const { dir, remove } = await tempDir();
    const path = join(dir, 'counter.db');
    // Create the file (schema, WAL) before the children race to open it.
    const store: Store = await openSqliteStore(path);
    try {
      const final = String(2 * n);
      let watched = '';
      const watch = store.watch('counter', (await store.range('counter')).revision, (events) => {
        for (const e of events) if (e.type === 'put') watched = e.kv.value;
      });
      const tallies = await Promise.all([runIncrementer(path, n), runIncrementer(path, n)]);
      assert.equal((await store.get('counter'))?.value, final);
      await waitFor('the parent watch to see the final value', () => watched === final);
      watch.close();
      const retries = tallies.reduce((sum, t) => sum + t.retries, 0);
      console.log(`# ${2 * n} increments by 2 processes, ${retries} retried compares`);
    } finally {
      await store.close();
      await remove();
    }
  });
});

describe('openStore', () => {
  it('opens sqlite: and sqlite:// URLs', async () => {
    const { dir, remove } = await tempDir();
    try {
      const rel = await openStore(`sqlite:${relative(process.cwd(), join(dir, 'a.db'))}`);
      assert.equal(rel.backend, 'sqlite');
      await rel.put('k', 'v');
      await rel.close();
      const abs = await openStore(`sqlite://${join(dir, 'a.db')}`);
      assert.equal((await abs.get('k'))?.value, 'v');
      await abs.close();
    } finally {
      await remove();
    }
  });

  it('refuses unknown schemes by name', async () => {
    await assert.rejects(openStore('redis://localhost'), (e: unknown) => {
      assert.ok(e instanceof StoreError);
      assert.match(e.message, /redis:\/\/localhost/);
      return true;
    });
    await assert.rejects(openStore('sqlite://relative.db'), StoreError);
  });

  it('makes every commit durable: the store a daemon opens runs WAL with synchronous=FULL (PRAGMA synchronous reads 2)', async () => {
    const { dir, remove } = await tempDir();
    const store = await openStore(`sqlite:${join(dir, 'cluster.db')}`);
    try {
      assert.equal(store.backend, 'sqlite');
      const setting = (store as Partial<SqliteBackedStore>).setting?.bind(store);
      assert.ok(setting, 'the SQLite store reports its connection settings');
      assert.equal(setting('journal_mode'), 'wal');
      // 2 is FULL: the WAL is fsynced at every commit, not only at checkpoints (NORMAL, 1).
      assert.equal(setting('synchronous'), 2);
      await store.put('k', 'v');
      assert.equal(setting('synchronous'), 2, 'and stays so after writes');
      // Heartbeats and leases commit relaxed (NORMAL, 1) and leave the connection FULL for the next commit.
      const lease = await store.grantLease(5);
      await store.keepAlive(lease);
      const relaxed = await store.txn([], [{ type: 'put', key: 'beat', value: 'x', lease }], [], { durability: 'relaxed' });
      assert.equal(relaxed.succeeded, true);
      assert.equal((await store.get('beat'))?.value, 'x');
      await store.revokeLease(lease);
      assert.equal(setting('synchronous'), 2, 'relaxed commits put FULL back');
    } finally {
      await store.close();
      await remove();
    }
  });

  it('keeps the store file and its -wal and -shm files private (0600), tightening looser ones when opened', async () => {
    const { dir, remove } = await tempDir();
    const path = join(dir, 'cluster.db');
    const files = [path, `${path}-wal`, `${path}-shm`];
    const modes = async (): Promise<string[]> => Promise.all(files.map(async (f) => `${f.slice(dir.length)} ${((await stat(f)).mode & 0o777).toString(8)}`));
    const first = await openStore(`sqlite:${path}`);
    let second: Store | null = null;
    try {
      await first.put('k', 'v');
      // This process's umask (022) would give 0644: the store sets the mode itself.
      assert.deepEqual(await modes(), files.map((f) => `${f.slice(dir.length)} 600`));
      // An install from before: everything world-readable; the next member that opens the store closes it.
      for (const f of files) await chmod(f, 0o644);
      second = await openStore(`sqlite:${path}`);
      assert.deepEqual(await modes(), files.map((f) => `${f.slice(dir.length)} 600`));
      assert.equal((await second.get('k'))?.value, 'v');
    } finally {
      await second?.close();
      await first.close();
      await remove();
    }
  });

  it('reports an unopenable file as a StoreError', async () => {
    await assert.rejects(openStore('sqlite:/nonexistent-dir-for-roost/x.db'), StoreError);
  });
});
