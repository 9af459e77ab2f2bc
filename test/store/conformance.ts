// The behaviour every store backend must have, written once so the SQLite and etcd backends are held
// to the same contract. A backend's test file calls `storeConformance` with a way to open a fresh store.
//
// Contract for `open`: each call returns a store that nothing else writes to while the test runs (a new
// file, or a fresh etcd), so tests may compare revisions exactly. Tests never assume an absolute
// revision number, only order and equality, since etcd starts counting wherever it is.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreError, type Store, type Watch, type WatchEvent } from '../../src/store/store.js';
import { waitFor } from './wait.js';

/** A freshly opened store and how to dispose of it (close it and remove whatever `open` created). */
export interface OpenedStore {
  store: Store;
  cleanup(): Promise<void>;
}

/** What a watch has delivered so far, one array per callback call. */
interface Recorder {
  calls: WatchEvent[][];
  watch: Watch;
  events(): WatchEvent[];
}

function record(store: Store, prefix: string, fromRevision: number): Recorder {
  const calls: WatchEvent[][] = [];
  const watch = store.watch(prefix, fromRevision, (events) => calls.push(events));
  return { calls, watch, events: () => calls.flat() };
}

function summary(events: WatchEvent[]): string[] {
  return events.map((e) => (e.type === 'put' ? `put ${e.kv.key}=${e.kv.value}` : `delete ${e.kv.key}`));
}

async function keysOf(store: Store, prefix: string): Promise<string[]> {
  return (await store.range(prefix)).kvs.map((kv) => kv.key);
}

/** Registers the store conformance tests under `describe(name)`, opening a fresh store for each test. */
export function storeConformance(name: string, open: () => Promise<OpenedStore>): void {
  async function withStore(fn: (store: Store) => Promise<void>): Promise<void> {
    const { store, cleanup } = await open();
    try {
      await fn(store);
    } finally {
      await cleanup();
    }
  }

  async function revisionNow(store: Store): Promise<number> {
    return (await store.range('\u0000never-written/')).revision;
  }

  describe(name, () => {
    describe('keys and revisions', () => {
      it('put then get returns the value with its revisions', () =>
        withStore(async (store) => {
          const rev = await store.put('k', 'v');
          assert.deepEqual(await store.get('k'), {
            key: 'k',
            value: 'v',
            createRevision: rev,
            modRevision: rev,
            version: 1,
            lease: null,
          });
        }));

      it('get of a missing key is null', () =>
        withStore(async (store) => {
          assert.equal(await store.get('missing'), null);
        }));

      it('delete removes a key and says whether it existed', () =>
        withStore(async (store) => {
          await store.put('k', 'v');
          assert.equal(await store.delete('k'), true);
          assert.equal(await store.get('k'), null);
          assert.equal(await store.delete('k'), false);
        }));

      it('revisions increase with every write', () =>
        withStore(async (store) => {
          const r0 = await revisionNow(store);
          const r1 = await store.put('a', '1');
          const r2 = await store.put('b', '2');
          await store.delete('a');
          const r3 = await revisionNow(store);
          assert.ok(r0 < r1 && r1 < r2 && r2 < r3, `expected ${r0} < ${r1} < ${r2} < ${r3}`);
        }));

      it("a transaction's writes share one revision", () =>
        withStore(async (store) => {
          const before = await store.put('t/old', 'x');
          const res = await store.txn(
            [],
            [
              { type: 'put', key: 't/a', value: '1' },
              { type: 'put', key: 't/b', value: '2' },
              { type: 'delete', key: 't/old' },
            ],
          );
          assert.equal(res.succeeded, true);
          assert.equal(res.revision, before + 1);
          const { kvs, revision } = await store.range('t/');
          assert.deepEqual(
            kvs.map((kv) => [kv.key, kv.modRevision]),
            [
              ['t/a', res.revision],
              ['t/b', res.revision],
            ],
          );
          assert.equal(revision, res.revision);
        }));

      it('version counts writes since creation and restarts after a delete', () =>
        withStore(async (store) => {
          const first = await store.put('v', '1');
          await store.put('v', '2');
          const third = await store.put('v', '3');
          assert.deepEqual(await store.get('v'), {
            key: 'v',
            value: '3',
            createRevision: first,
            modRevision: third,
            version: 3,
            lease: null,
          });
          await store.delete('v');
          const again = await store.put('v', '4');
          const kv = await store.get('v');
          assert.equal(kv?.version, 1);
          assert.equal(kv?.createRevision, again);
        }));

      it('a write that changes nothing keeps the revision', () =>
        withStore(async (store) => {
          await store.put('k', 'v');
          const before = await revisionNow(store);
          assert.equal(await store.delete('absent'), false);
          const empty = await store.txn([], []);
          assert.equal(empty.succeeded, true);
          assert.equal(empty.revision, before);
          const noMatch = await store.txn([], [{ type: 'deletePrefix', prefix: 'nothing/' }]);
          assert.equal(noMatch.revision, before);
          assert.equal(await revisionNow(store), before);
        }));
    });

    describe('range', () => {
      it('range returns the keys under a prefix sorted by key, with the revision read', () =>
        withStore(async (store) => {
          await store.put('r/c', '3');
          await store.put('r/a', '1');
          const last = await store.put('r/b', '2');
          const { kvs, revision } = await store.range('r/');
          assert.deepEqual(
            kvs.map((kv) => [kv.key, kv.value]),
            [
              ['r/a', '1'],
              ['r/b', '2'],
              ['r/c', '3'],
            ],
          );
          assert.equal(revision, last);
        }));

      it('range is exact about prefixes (no sibling, parent or next-character keys)', () =>
        withStore(async (store) => {
          // '.' sorts just before '/', '0' just after it.
          for (const key of ['a', 'a/', 'a/x', 'a/y/z', 'ab', 'a0', 'a.', 'b/x']) await store.put(key, key);
          assert.deepEqual(await keysOf(store, 'a/'), ['a/', 'a/x', 'a/y/z']);
          assert.deepEqual(await keysOf(store, 'a/y/'), ['a/y/z']);
        }));

      it('range treats % and _ in a prefix as plain characters', () =>
        withStore(async (store) => {
          for (const key of ['p%/1', 'pX/1', 'p_/1', 'pY/1', 'p%%/1']) await store.put(key, 'v');
          assert.deepEqual(await keysOf(store, 'p%/'), ['p%/1']);
          assert.deepEqual(await keysOf(store, 'p_/'), ['p_/1']);
        }));

      it('range of a prefix with no keys is empty but still reports a revision', () =>
        withStore(async (store) => {
          const rev = await store.put('elsewhere', 'v');
          const res = await store.range('none/');
          assert.deepEqual(res.kvs, []);
          assert.equal(res.revision, rev);
        }));

      it('rangeMany reads several prefixes in one sorted result at one revision', () =>
        withStore(async (store) => {
          await store.put('y/2', 'b');
          await store.put('x/1', 'a');
          await store.put('z/1', 'c');
          const last = await store.put('y/1', 'd');
          const res = await store.rangeMany(['y/', 'x/']);
          assert.deepEqual(
            res.kvs.map((kv) => kv.key),
            ['x/1', 'y/1', 'y/2'],
          );
          assert.equal(res.revision, last);
          // Overlapping or repeated prefixes still list each key once.
          assert.deepEqual(
            (await store.rangeMany(['y/', 'y/1', 'y/'])).kvs.map((kv) => kv.key),
            ['y/1', 'y/2'],
          );
          const none = await store.rangeMany([]);
          assert.deepEqual(none.kvs, []);
          assert.equal(none.revision, last);
        }));
    });

    describe('transactions', () => {
      it('a modRevision compare of 0 creates a key only if it is absent', () =>
        withStore(async (store) => {
          const put = { type: 'put', key: 'once', value: 'first' } as const;
          const first = await store.txn([{ key: 'once', modRevision: 0 }], [put]);
          assert.equal(first.succeeded, true);
          const second = await store.txn([{ key: 'once', modRevision: 0 }], [{ ...put, value: 'second' }]);
          assert.equal(second.succeeded, false);
          assert.equal(second.revision, first.revision);
          assert.equal((await store.get('once'))?.value, 'first');
        }));

      it('a modRevision compare succeeds on the current revision and fails on a stale one', () =>
        withStore(async (store) => {
          const r1 = await store.put('c', '1');
          const r2 = await store.put('c', '2');
          const stale = await store.txn([{ key: 'c', modRevision: r1 }], [{ type: 'put', key: 'c', value: 'stale' }]);
          assert.equal(stale.succeeded, false);
          const fresh = await store.txn([{ key: 'c', modRevision: r2 }], [{ type: 'put', key: 'c', value: 'fresh' }]);
          assert.equal(fresh.succeeded, true);
          assert.ok(fresh.revision > r2);
          assert.equal((await store.get('c'))?.value, 'fresh');
        }));

      it('a createRevision compare holds across rewrites of a key and fails once it was deleted and created again', () =>
        withStore(async (store) => {
          const created = await store.put('beat', '1');
          await store.put('beat', '2');
          const alive = await store.txn([{ key: 'beat', createRevision: created }], [{ type: 'put', key: 'x', value: 'alive' }]);
          assert.equal(alive.succeeded, true);
          await store.delete('beat');
          const gone = await store.txn([{ key: 'beat', createRevision: created }], [{ type: 'put', key: 'x', value: 'gone' }]);
          assert.equal(gone.succeeded, false);
          await store.put('beat', '3');
          const again = await store.txn([{ key: 'beat', createRevision: created }], [{ type: 'put', key: 'x', value: 'reborn' }]);
          assert.equal(again.succeeded, false);
          const absent = await store.txn([{ key: 'nothing', createRevision: 0 }], [{ type: 'put', key: 'x', value: 'absent' }]);
          assert.equal(absent.succeeded, true);
          assert.equal((await store.get('x'))?.value, 'absent');
        }));

      it('a value compare succeeds on an equal value and fails on another value or a missing key', () =>
        withStore(async (store) => {
          await store.put('s', 'Online');
          const wrong = await store.txn([{ key: 's', value: 'Evacuated' }], [{ type: 'put', key: 's', value: 'x' }]);
          assert.equal(wrong.succeeded, false);
          const right = await store.txn([{ key: 's', value: 'Online' }], [{ type: 'put', key: 's', value: 'Evacuating' }]);
          assert.equal(right.succeeded, true);
          assert.equal((await store.get('s'))?.value, 'Evacuating');
          const missing = await store.txn([{ key: 'nope', value: '' }], [{ type: 'put', key: 'nope', value: 'x' }]);
          assert.equal(missing.succeeded, false);
          assert.equal(await store.get('nope'), null);
        }));

      it('every compare must hold for the ops to apply', () =>
        withStore(async (store) => {
          const ra = await store.put('a', '1');
          await store.put('b', '1');
          const res = await store.txn(
            [
              { key: 'a', modRevision: ra },
              { key: 'b', value: '2' },
            ],
            [{ type: 'put', key: 'a', value: 'changed' }],
          );
          assert.equal(res.succeeded, false);
          assert.equal((await store.get('a'))?.value, '1');
        }));

      it('failure ops run, under a new revision, when a compare fails', () =>
        withStore(async (store) => {
          const before = await store.put('lock', 'held');
          const res = await store.txn(
            [{ key: 'lock', modRevision: 0 }],
            [{ type: 'put', key: 'won', value: 'yes' }],
            [{ type: 'put', key: 'lost', value: 'yes' }],
          );
          assert.equal(res.succeeded, false);
          assert.ok(res.revision > before);
          assert.equal(await store.get('won'), null);
          assert.equal((await store.get('lost'))?.modRevision, res.revision);
        }));

      it('a failed txn without failure ops changes nothing and reports the current revision', () =>
        withStore(async (store) => {
          const before = await store.put('k', 'v');
          const res = await store.txn([{ key: 'k', value: 'other' }], [{ type: 'delete', key: 'k' }]);
          assert.deepEqual(res, { succeeded: false, revision: before });
          assert.equal(await revisionNow(store), before);
          assert.equal((await store.get('k'))?.value, 'v');
        }));

      it('deletePrefix removes exactly the keys under a prefix, in one revision', () =>
        withStore(async (store) => {
          for (const key of ['d', 'd/1', 'd/2', 'd/sub/3', 'd0', 'e/1']) await store.put(key, 'v');
          const before = await revisionNow(store);
          const res = await store.txn([], [{ type: 'deletePrefix', prefix: 'd/' }]);
          assert.equal(res.succeeded, true);
          assert.equal(res.revision, before + 1);
          assert.deepEqual(await keysOf(store, 'd'), ['d', 'd0']);
          assert.deepEqual(await keysOf(store, 'e/'), ['e/1']);
        }));
    });

    describe('leases', () => {
      it('a key attached to a lease vanishes after the TTL', () =>
        withStore(async (store) => {
          const lease = await store.grantLease(1);
          await store.put('l/k', 'v', lease);
          await store.put('l/plain', 'v');
          assert.equal((await store.get('l/k'))?.lease, lease);
          await waitFor('the leased key to expire', async () => (await store.get('l/k')) === null);
          assert.deepEqual(await keysOf(store, 'l/'), ['l/plain']);
        }));

      it('keepAlive keeps a lease alive past its TTL', () =>
        withStore(async (store) => {
          const lease = await store.grantLease(1);
          await store.put('hb', 'alive', lease);
          const start = Date.now();
          // Refresh well inside the TTL for longer than the TTL; this loop is the heartbeat, not a wait.
          while (Date.now() - start < 1600) {
            assert.equal(await store.keepAlive(lease), true);
            await sleep(150);
          }
          assert.equal((await store.get('hb'))?.value, 'alive');
          await waitFor('the key to expire once keepalives stop', async () => (await store.get('hb')) === null);
        }));

      it('keepAlive returns false once the lease has expired', () =>
        withStore(async (store) => {
          const lease = await store.grantLease(1);
          await store.put('gone', 'v', lease);
          await waitFor('the leased key to expire', async () => (await store.get('gone')) === null);
          assert.equal(await store.keepAlive(lease), false);
        }));

      it('revoking a lease deletes its keys at once', () =>
        withStore(async (store) => {
          const lease = await store.grantLease(60);
          await store.put('rv/a', '1', lease);
          await store.put('rv/b', '2', lease);
          await store.put('rv/c', '3');
          await store.revokeLease(lease);
          assert.deepEqual(await keysOf(store, 'rv/'), ['rv/c']);
          assert.equal(await store.keepAlive(lease), false);
          await store.revokeLease(lease); // already gone: harmless
        }));

      it('a put naming a lease that no longer exists is refused', () =>
        withStore(async (store) => {
          const lease = await store.grantLease(60);
          await store.revokeLease(lease);
          await assert.rejects(store.put('orphan', 'v', lease), StoreError);
          assert.equal(await store.get('orphan'), null);
        }));
    });

    describe('watch', () => {
      it('watch delivers later puts and deletes under its prefix in revision order', () =>
        withStore(async (store) => {
          await store.put('w/before', 'old');
          const { revision } = await store.range('w/');
          const rec = record(store, 'w/', revision);
          try {
            const r1 = await store.put('w/a', '1');
            await store.put('x/outside', 'no');
            const r2 = await store.put('w/b', '2');
            await store.delete('w/a');
            await waitFor('three events', () => rec.events().length >= 3);
            const events = rec.events();
            assert.deepEqual(summary(events), ['put w/a=1', 'put w/b=2', 'delete w/a']);
            assert.equal(events[0]?.kv.modRevision, r1);
            assert.equal(events[1]?.kv.modRevision, r2);
            assert.ok((events[2]?.kv.modRevision ?? 0) > r2);
            assert.equal(events[2]?.kv.value, '');
            assert.equal(rec.calls.length, 3);
          } finally {
            rec.watch.close();
          }
        }));

      it("the events of one transaction arrive in one call, in op order", () =>
        withStore(async (store) => {
          const start = await store.put('g/0', 'x');
          const rec = record(store, 'g/', start);
          try {
            const t1 = await store.txn(
              [],
              [
                { type: 'put', key: 'g/1', value: 'a' },
                { type: 'put', key: 'other', value: 'b' },
                { type: 'put', key: 'g/2', value: 'c' },
                { type: 'delete', key: 'g/0' },
              ],
            );
            await store.txn([], [{ type: 'deletePrefix', prefix: 'g/' }]);
            await waitFor('two calls', () => rec.calls.length >= 2);
            assert.deepEqual(
              rec.calls.map((call) => summary(call)),
              [
                ['put g/1=a', 'put g/2=c', 'delete g/0'],
                ['delete g/1', 'delete g/2'],
              ],
            );
            assert.ok(rec.calls[0]?.every((e) => e.kv.modRevision === t1.revision));
          } finally {
            rec.watch.close();
          }
        }));

      it('watch replays history after an old revision', () =>
        withStore(async (store) => {
          const r1 = await store.put('h/1', 'a');
          await store.put('h/2', 'b');
          await store.delete('h/1');
          const rec = record(store, 'h/', r1);
          try {
            await waitFor('the replayed events', () => rec.events().length >= 2);
            await store.put('h/3', 'c');
            await waitFor('the live event', () => rec.events().length >= 3);
            assert.deepEqual(summary(rec.events()), ['put h/2=b', 'delete h/1', 'put h/3=c']);
          } finally {
            rec.watch.close();
          }
        }));

      it('watch reports keys deleted by lease expiry', () =>
        withStore(async (store) => {
          const lease = await store.grantLease(1);
          const rev = await store.put('e/member', 'hb', lease);
          const rec = record(store, 'e/', rev);
          try {
            await waitFor('the expiry delete event', () => rec.events().some((e) => e.type === 'delete'));
            assert.deepEqual(summary(rec.events()), ['delete e/member']);
          } finally {
            rec.watch.close();
          }
        }));

      it('a closed watch gets no more events', () =>
        withStore(async (store) => {
          const start = await store.put('c/0', 'x');
          const closed = record(store, 'c/', start);
          await store.put('c/1', 'a');
          await waitFor('the first event', () => closed.events().length >= 1);
          closed.watch.close();
          const live = record(store, 'c/', await revisionNow(store));
          try {
            await store.put('c/2', 'b');
            // The live watch seeing c/2 shows delivery has happened; the closed one must not have it.
            await waitFor('the live watch to see c/2', () => live.events().length >= 1);
            assert.deepEqual(summary(live.events()), ['put c/2=b']);
            assert.deepEqual(summary(closed.events()), ['put c/1=a']);
          } finally {
            live.watch.close();
          }
        }));
    });
  });
}
