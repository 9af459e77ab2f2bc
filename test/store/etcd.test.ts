// The etcd backend on real etcd clusters: the shared conformance suite on 3 members, then what only a
// networked, replicated backend needs: members dying (the leader too), etcd down altogether and back,
// two clients racing compare-and-swap, compaction under a watch, TLS, big reads, and a process that
// must exit by itself once its store is closed.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import selfsigned from 'selfsigned';
import { openStore } from '../../src/store/index.js';
import { StoreError, type Store, type WatchEvent } from '../../src/store/store.js';
import { startEtcdCluster, type EtcdCluster, type EtcdTlsFiles } from '../helpers/etcd.js';
import { storeConformance } from './conformance.js';
import { waitFor } from './wait.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

let shared: EtcdCluster | null = null;

/** One cluster for the tests that kill nothing; each of them starts from an empty key space. */
async function sharedCluster(): Promise<EtcdCluster> {
  shared ??= await startEtcdCluster();
  return shared;
}

after(async () => {
  await shared?.stopAll();
});

/** A client of etcd itself, for what the Store cannot do (wipe, compact); closed by the caller. */
function etcdAdmin(cluster: EtcdCluster): Etcd3 {
  return new Etcd3({ hosts: cluster.endpoints.map((e) => `http://${e}`) });
}

/** Deletes every key and revokes every lease, so a test sees nothing left by the one before. */
async function wipe(cluster: EtcdCluster): Promise<void> {
  const admin = etcdAdmin(cluster);
  try {
    await admin.delete().all();
    const { leases } = await admin.leaseClient.leaseLeases();
    await Promise.all(leases.map((l) => admin.leaseClient.leaseRevoke({ ID: l.ID })));
  } finally {
    admin.close();
  }
}

/** A store URL with a call deadline added to the cluster's URL. */
function withTimeout(url: string, ms: number): string {
  return `${url}${url.includes('?') ? '&' : '?'}timeout_ms=${ms}`;
}

/** Asserts that `call` fails with a StoreError naming every endpoint, within `deadlineMs` (plus slack). */
async function assertFailsInTime(what: string, call: () => Promise<unknown>, endpoints: string[], deadlineMs: number): Promise<number> {
  const started = Date.now();
  await assert.rejects(call(), (err: unknown) => {
    assert.ok(err instanceof StoreError, `${what}: expected a StoreError, got ${String(err)}`);
    for (const endpoint of endpoints) assert.ok(err.message.includes(endpoint), `${what}: "${err.message}" names ${endpoint}`);
    return true;
  });
  const elapsed = Date.now() - started;
  // Slack for the event loop and the last attempt's own gRPC deadline timer.
  assert.ok(elapsed <= deadlineMs + 300, `${what} took ${elapsed} ms, past its ${deadlineMs} ms deadline`);
  return elapsed;
}

/** Records what a watch delivers, one array per callback call. */
function record(store: Store, prefix: string, fromRevision: number): { calls: WatchEvent[][]; keys(): string[]; close(): void } {
  const calls: WatchEvent[][] = [];
  const watch = store.watch(prefix, fromRevision, (events) => calls.push(events));
  return { calls, keys: () => calls.flat().map((e) => `${e.type} ${e.kv.key}`), close: () => watch.close() };
}

/** Writes until a write succeeds; calls that fail meanwhile must fail with a StoreError. Returns the ms it took. */
async function untilWritable(store: Store, key: string, value: string, timeoutMs = 20_000): Promise<number> {
  const started = Date.now();
  await waitFor(
    `a write to ${key} to go through`,
    async () => {
      try {
        await store.put(key, value);
        return true;
      } catch (err) {
        assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
        return false;
      }
    },
    timeoutMs,
  );
  return Date.now() - started;
}

/** Reads until a read succeeds; reads that fail meanwhile must fail with a StoreError. Returns the ms it took. */
async function untilReadable(store: Store, key: string, timeoutMs = 20_000): Promise<number> {
  const started = Date.now();
  await waitFor(
    `a read of ${key} to go through`,
    async () => {
      try {
        await store.get(key);
        return true;
      } catch (err) {
        assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
        return false;
      }
    },
    timeoutMs,
  );
  return Date.now() - started;
}

storeConformance('etcd store on 3 members', async () => {
  const cluster = await sharedCluster();
  await wipe(cluster);
  const store = await openStore(cluster.url);
  return { store, cleanup: () => store.close() };
});

describe('etcd store when etcd members die', () => {
  it('keeps reading, writing, keeping leases and watching when one member dies, the leader too', async () => {
    const cluster = await startEtcdCluster();
    const store = await openStore(withTimeout(cluster.url, 3000));
    try {
      const lease = await store.grantLease(10);
      await store.put('members/m1', 'heartbeat', lease);
      const watched = record(store, 'w/', (await store.range('w/')).revision);
      for (const victim of ['a follower', 'the leader']) {
        const leader = await cluster.leader();
        const index = victim === 'the leader' ? leader : (leader + 1) % 3;
        await cluster.killNode(index);
        const [readable, writable] = await Promise.all([untilReadable(store, 'members/m1'), untilWritable(store, 'probe', victim)]);
        console.log(`# ${victim} killed: reads work again after ${readable} ms, writes after ${writable} ms`);

        assert.equal((await store.get('probe'))?.value, victim);
        const cas = await store.txn([{ key: 'probe', value: victim }], [{ type: 'put', key: `w/${index}`, value: victim }]);
        assert.equal(cas.succeeded, true);
        assert.equal(await store.keepAlive(lease), true);
        assert.equal((await store.get('members/m1'))?.lease, lease);
        const fresh = await store.grantLease(5);
        await store.put('w/leased', victim, fresh);
        await store.revokeLease(fresh);
        assert.equal(await store.get('w/leased'), null);
        await waitFor(`the watch to see the writes after ${victim} died`, () => watched.keys().includes('delete w/leased'));

        await cluster.restartNode(index);
        await cluster.waitHealthy();
        await store.keepAlive(lease);
        watched.calls.length = 0;
      }
      watched.close();
    } finally {
      await store.close();
      await cluster.stopAll();
    }
  });

  it('a watch whose member dies resumes after the last revision it delivered, missing and repeating nothing', async () => {
    const cluster = await startEtcdCluster();
    // The watching store knows only the member that dies, so its stream is certainly there; the writer
    // knows only the others. The victim is a follower: this is about the watch, not about failover.
    const victim = ((await cluster.leader()) + 1) % 3;
    const watcher = await openStore(withTimeout(cluster.urlOf(victim), 2000));
    const writer = await openStore(`etcd://${cluster.endpoints.filter((_, i) => i !== victim).join(',')}`);
    try {
      const start = await writer.put('r/0', 'before');
      const watched = record(watcher, 'r/', start);
      await writer.txn([], [
        { type: 'put', key: 'r/1', value: 'a' },
        { type: 'put', key: 'r/2', value: 'b' },
      ]);
      await waitFor('the first transaction', () => watched.calls.length === 1);
      await cluster.killNode(victim);
      // Written while the watch's member is dead, some in one transaction, one a delete.
      await writer.put('r/3', 'c');
      await writer.txn([], [
        { type: 'put', key: 'r/4', value: 'd' },
        { type: 'delete', key: 'r/1' },
      ]);
      await writer.put('r/5', 'e');
      await cluster.restartNode(victim);
      await cluster.waitHealthy();
      await writer.put('r/6', 'f');
      await waitFor('every write to arrive after the restart', () => watched.keys().includes('put r/6'), 20_000);
      assert.deepEqual(
        watched.calls.map((call) => call.map((e) => `${e.type} ${e.kv.key}`)),
        [['put r/1', 'put r/2'], ['put r/3'], ['put r/4', 'delete r/1'], ['put r/5'], ['put r/6']],
      );
      watched.close();
    } finally {
      await watcher.close();
      await writer.close();
      await cluster.stopAll();
    }
  });

  it('with etcd down every call fails within its deadline naming the endpoints; the same store works again once etcd is back', async () => {
    const cluster = await startEtcdCluster();
    const deadlineMs = 1500;
    const store = await openStore(withTimeout(cluster.url, deadlineMs));
    try {
      const lease = await store.grantLease(60);
      const watched = record(store, 'w/', (await store.range('w/')).revision);
      await store.put('w/before', '1');
      await waitFor('the first event', () => watched.keys().length === 1);

      // Three-key transactions race the outage, so one is likely in flight when etcd goes.
      let committed = 0;
      let stop = false;
      const writing = (async () => {
        for (let i = 0; !stop; i++) {
          const ops = ['a', 'b', 'c'].map((k) => ({ type: 'put' as const, key: `batch/${String(i).padStart(5, '0')}/${k}`, value: k }));
          try {
            await store.txn([], ops);
            committed++;
          } catch (err) {
            assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
          }
        }
      })();
      await waitFor('some transactions to commit', () => committed >= 20);
      await Promise.all([0, 1, 2].map((i) => cluster.killNode(i)));
      stop = true;
      await writing;

      const calls: Record<string, () => Promise<unknown>> = {
        get: () => store.get('w/before'),
        range: () => store.range('w/'),
        rangeMany: () => store.rangeMany(['w/', 'batch/']),
        txn: () => store.txn([{ key: 'w/before', value: '1' }], [{ type: 'put', key: 'w/during', value: 'x' }]),
        put: () => store.put('w/during', 'x'),
        delete: () => store.delete('w/before'),
        grantLease: () => store.grantLease(5),
        keepAlive: () => store.keepAlive(lease),
        revokeLease: () => store.revokeLease(lease),
      };
      const timings = Object.fromEntries(
        await Promise.all(
          Object.entries(calls).map(async ([name, call]) => [name, await assertFailsInTime(name, call, cluster.endpoints, deadlineMs)]),
        ),
      );
      console.log(`# etcd down, ${deadlineMs} ms deadline: calls failed after ${JSON.stringify(timings)} ms`);

      const restartedAt = Date.now();
      for (const i of [0, 1, 2]) await cluster.restartNode(i);
      const back = await untilWritable(store, 'w/after', '2');
      console.log(`# etcd restarted: the same store writes again ${Date.now() - restartedAt} ms after the restart (${back} ms of retrying)`);

      // Every transaction applied fully or not at all.
      const { kvs } = await store.range('batch/');
      const perTxn = new Map<string, number>();
      for (const kv of kvs) {
        const txn = kv.key.split('/')[1] ?? '';
        perTxn.set(txn, (perTxn.get(txn) ?? 0) + 1);
      }
      assert.ok(perTxn.size >= committed, `${perTxn.size} transactions found, ${committed} confirmed`);
      for (const [txn, count] of perTxn) assert.equal(count, 3, `transaction ${txn} is half applied`);

      assert.equal(await store.keepAlive(lease), true);
      await waitFor('the watch to resume after the outage', () => watched.keys().includes('put w/after'), 20_000);
      assert.deepEqual(watched.keys(), ['put w/before', 'put w/after']);
      watched.close();
    } finally {
      await store.close();
      await cluster.stopAll();
    }
  });
});

describe('etcd store with several clients', () => {
  it('two stores doing compare-and-swap increments lose no update', async () => {
    const cluster = await sharedCluster();
    await wipe(cluster);
    const n = 300;
    const [a, b] = await Promise.all([openStore(cluster.url), openStore(cluster.url)]);
    const observer = await openStore(cluster.url);
    try {
      let watched = '';
      const watch = observer.watch('counter', (await observer.range('counter')).revision, (events) => {
        for (const e of events) if (e.type === 'put') watched = e.kv.value;
      });
      let retries = 0;
      async function increment(store: Store): Promise<void> {
        for (let i = 0; i < n; i++) {
          for (;;) {
            const kv = await store.get('counter');
            const next = String(Number(kv?.value ?? '0') + 1);
            const res = await store.txn(
              [{ key: 'counter', modRevision: kv?.modRevision ?? 0 }],
              [{ type: 'put', key: 'counter', value: next }],
            );
            if (res.succeeded) break;
            retries++;
          }
        }
      }
      const started = Date.now();
      await Promise.all([increment(a), increment(b)]);
      assert.equal((await observer.get('counter'))?.value, String(2 * n));
      await waitFor('the watch to see the final value', () => watched === String(2 * n));
      watch.close();
      console.log(`# ${2 * n} increments by 2 clients in ${Date.now() - started} ms, ${retries} retried compares`);
      assert.ok(retries > 0, 'the two clients never raced; the test proves nothing');
    } finally {
      await Promise.all([a.close(), b.close(), observer.close()]);
    }
  });

  it('reads 20,000 keys in one rangeMany at one revision', async () => {
    const cluster = await sharedCluster();
    await wipe(cluster);
    const store = await openStore(cluster.url);
    try {
      const total = 20_000;
      // Records about the size of an instance's: 20,000 of them are well past gRPC's default 4 MiB.
      const filler = 'x'.repeat(300);
      let last = 0;
      for (let start = 0; start < total; start += 1000) {
        const ops = [];
        for (let i = start; i < start + 1000; i++) {
          const prefix = i % 2 === 0 ? 'instances/' : 'volumes/';
          ops.push({ type: 'put' as const, key: `${prefix}${String(i).padStart(6, '0')}`, value: JSON.stringify({ i, filler }) });
        }
        last = (await store.txn([], ops)).revision;
      }
      const started = Date.now();
      const res = await store.rangeMany(['volumes/', 'instances/']);
      const elapsed = Date.now() - started;
      console.log(`# rangeMany of ${res.kvs.length} keys (${Math.round(res.kvs.reduce((s, kv) => s + kv.value.length, 0) / 1024 / 1024)} MiB) took ${elapsed} ms`);
      assert.equal(res.kvs.length, total);
      assert.equal(res.revision, last);
      assert.equal(res.kvs[0]?.key, 'instances/000000');
      assert.equal(res.kvs[total - 1]?.key, 'volumes/019999');
      assert.ok(res.kvs.every((kv, i) => i === 0 || (res.kvs[i - 1]?.key ?? '') < kv.key), 'keys come sorted');
    } finally {
      await store.close();
    }
  });

  it('a watch that cannot resume because etcd compacted its history ends with a StoreError', async () => {
    const cluster = await startEtcdCluster({ nodes: 1 });
    const store = await openStore(cluster.url);
    const admin = etcdAdmin(cluster);
    try {
      const old = await store.put('c/1', 'a');
      await store.put('c/2', 'b');
      const head = await store.put('c/3', 'c');
      await admin.kv.compact({ revision: head, physical: true });
      const errors: StoreError[] = [];
      const delivered: WatchEvent[] = [];
      store.watch('c/', old, (events) => delivered.push(...events), (err) => errors.push(err));
      await waitFor('the compaction error', () => errors.length === 1);
      assert.match(errors[0]?.message ?? '', /compacted its history up to revision \d+/);
      assert.match(errors[0]?.message ?? '', /watch of "c\/"/);
      assert.deepEqual(delivered, []);
      // A watch from a revision still kept works as ever.
      const fresh = record(store, 'c/', head);
      await store.put('c/4', 'd');
      await waitFor('the fresh watch', () => fresh.keys().includes('put c/4'));
      fresh.close();
    } finally {
      admin.close();
      await store.close();
      await cluster.stopAll();
    }
  });

  it('a process whose store is closed exits by itself, even with a watch left open', async () => {
    const cluster = await sharedCluster();
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/store/fixtures/etcd-watcher.ts', cluster.url], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor('the watcher process to close its store', () => out.includes('closed'), 20_000);
      const code = await Promise.race([exited, new Promise<'alive'>((resolve) => setTimeout(() => resolve('alive'), 5000).unref())]);
      assert.equal(code, 0, `the process ${code === 'alive' ? 'is still alive 5 s after closing its store' : `exited with ${code}: ${err}`}`);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});

describe('etcd store over TLS', () => {
  it('talks HTTPS to etcd with the CA and client certificate named in the URL, and refuses without them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roost-etcd-tls-'));
    let cluster: EtcdCluster | null = null;
    try {
      const pems = await selfsigned.generate([{ name: 'commonName', value: 'roost-etcd-test' }], {
        keyType: 'ec',
        curve: 'P-256',
        extensions: [
          { name: 'basicConstraints', cA: true },
          { name: 'keyUsage', digitalSignature: true, keyCertSign: true },
          { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
          { name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] },
        ],
      });
      const tls: EtcdTlsFiles = { cacert: join(dir, 'ca.pem'), cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), clientCertAuth: true };
      await writeFile(tls.cacert, pems.cert);
      await writeFile(tls.cert, pems.cert);
      await writeFile(tls.key, pems.private, { mode: 0o600 });
      cluster = await startEtcdCluster({ nodes: 1, tls });

      const store = await openStore(cluster.url);
      try {
        const rev = await store.put('tls/k', 'v');
        assert.equal((await store.get('tls/k'))?.modRevision, rev);
      } finally {
        await store.close();
      }
      const endpoint = cluster.endpoints[0] ?? '';
      // Plain HTTP to a TLS-only etcd, and HTTPS without the client certificate etcd demands.
      await assertFailsInTime('plain HTTP', () => openStore(`etcd://${endpoint}?timeout_ms=1000`), [endpoint], 1000);
      await assertFailsInTime(
        'no client certificate',
        () => openStore(`etcd://${endpoint}?cacert=${encodeURIComponent(tls.cacert)}&timeout_ms=1000`),
        [endpoint],
        1000,
      );
    } finally {
      await cluster?.stopAll();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('openStore with etcd URLs', () => {
  it('refuses malformed etcd URLs with a StoreError saying what is wrong', async () => {
    const cases: Array<[string, RegExp]> = [
      ['etcd://', /names no etcd endpoint/],
      ['etcd://a:1,,b:2', /names no etcd endpoint/],
      ['etcd:127.0.0.1:2379', /expected etcd:\/\/host:port/],
      ['etcd://127.0.0.1:99999', /"127\.0\.0\.1:99999" is not an etcd endpoint/],
      ['etcd://127.0.0.1:2379/path', /is not an etcd endpoint/],
      ['etcd://127.0.0.1:2379?tls=1', /unknown parameter "tls"/],
      ['etcd://127.0.0.1:2379?cacert=/a&cert=/b', /needs both cert= and key=/],
      ['etcd://127.0.0.1:2379?cert=/b&key=/c', /needs cacert=/],
      ['etcd://127.0.0.1:2379?timeout_ms=soon', /timeout_ms must be a positive whole number/],
      ['etcd://127.0.0.1:2379?cacert=/nonexistent-roost/ca.pem', /cannot read the etcd CA certificate \/nonexistent-roost\/ca\.pem/],
    ];
    for (const [url, message] of cases) {
      await assert.rejects(openStore(url), (err: unknown) => {
        assert.ok(err instanceof StoreError, `${url}: expected a StoreError`);
        assert.match(err.message, message, url);
        return true;
      });
    }
  });

  it('fails to open, within the deadline and naming them, when no endpoint answers', async () => {
    // Ports that were free a moment ago: nothing listens there.
    const cluster = await startEtcdCluster({ nodes: 1 });
    const endpoint = cluster.endpoints[0] ?? '';
    await cluster.stopAll();
    await assertFailsInTime('open', () => openStore(`etcd://${endpoint},127.0.0.1:9?timeout_ms=800`), [endpoint, '127.0.0.1:9'], 800);
  });
});
