// The embedded cluster store: one SQLite file shared by every member process on one host.
//
// Several processes open the same file, so every write runs in a `BEGIN IMMEDIATE` transaction (the
// write lock is taken before anything is read, which makes compare-and-swap exact across processes)
// and WAL mode lets readers and watch pollers proceed while one process writes. Revisions, leases and
// watches follow etcd's semantics so the etcd backend can pass the same conformance suite:
//
// - One revision counter for the whole store; each transaction that writes bumps it once and all of
//   its ops share the new revision. Reaping expired leases is a write of its own (own revision).
// - Leases live in wall-clock time (`Date.now()`), which every process on one host shares. Expired
//   leases are reaped (their keys deleted and logged as delete changes) at the start of every write
//   transaction and from a 250 ms timer; reads additionally filter out keys whose lease has expired,
//   so no read ever returns such a key, even between two reaps.
// - Watches poll the `changes` log. There is no cross-process notification in SQLite, so polling
//   (default every 25 ms, and at once after a local write) is the price of needing no extra daemon.
// - Compaction: a change is dropped from the log once it is older than 10 minutes or more than
//   100,000 revisions behind the head, whichever comes first; that bounds the file while letting a
//   member that restarts within minutes resume its watches without a gap.
// - Durability: `synchronous=FULL`, so every commit is on disk (the WAL fsynced) before the transaction
//   returns. Under WAL's usual NORMAL a commit reaches the disk only at the next checkpoint, and a power cut
//   could lose a committed new location after the move had deleted the source copy. FULL costs one fsync per
//   write transaction (`npm run bench -- move` prints it beside NORMAL); an explicit sync before each
//   destructive step instead would have to be remembered at every such step, by every caller.
//   Liveness writes are the exception: lease grants, keep-alives and revocations, and transactions asked with
//   `durability: 'relaxed'` (heartbeats), commit under NORMAL. They mean nothing after a reboot, a power cut can
//   lose only the latest of them (the next FULL commit fsyncs the WAL with every frame before it, so none is
//   ever reordered after a durable one), and with a hundred members heartbeating an fsync each would need more
//   than a disk gives (≈ 50 a second on a busy one), holding the write lock, and every other writer, meanwhile.
// - Privacy: the file holds the cluster's private key and every instance's config, so it and its `-wal` and
//   `-shm` files are readable by the daemon's user only (0600), also when an older install left them looser.

import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { chmodSync, closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import {
  StoreError,
  type Compare,
  type KeyValue,
  type Op,
  type RangeResult,
  type Store,
  type TxnOptions,
  type TxnResult,
  type Watch,
  type WatchEvent,
} from './store.js';

/** Change-log entries older than this are compacted. */
const RETAIN_CHANGES_MS = 10 * 60 * 1000;
/** Change-log entries this many revisions behind the head are compacted, whatever their age. */
const RETAIN_CHANGES_REVISIONS = 100_000;
/** How often expired leases are looked for outside write transactions. */
const MAINTENANCE_INTERVAL_MS = 250;
/** Compaction runs on every this-many maintenance ticks (about every 10 s). */
const COMPACT_EVERY_TICKS = 40;
/** How long a write waits for another process's write lock before failing. */
const BUSY_TIMEOUT_MS = 5000;
/** Schema version in `PRAGMA user_version`, so a later layout can migrate or refuse old files. */
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  revision INTEGER NOT NULL,
  compact_revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  create_revision INTEGER NOT NULL,
  mod_revision INTEGER NOT NULL,
  version INTEGER NOT NULL,
  lease TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS leases (
  id TEXT PRIMARY KEY,
  ttl_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
  revision INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  key TEXT NOT NULL,
  type TEXT NOT NULL CHECK (type IN ('put', 'delete')),
  value TEXT NOT NULL,
  create_revision INTEGER NOT NULL,
  version INTEGER NOT NULL,
  lease TEXT,
  at_ms INTEGER NOT NULL,
  PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
`;

/** Mode of the database file and of the `-wal` and `-shm` files SQLite creates beside it with the same mode. */
const STORE_FILE_MODE = 0o600;

/** Options of the SQLite backend. */
export interface SqliteStoreOptions {
  /** How often watches look for new changes (ms); other processes' writes arrive this late at worst. */
  pollIntervalMs?: number;
  /**
   * When a commit reaches the disk: `FULL` (the default, and all the daemon uses) before it returns; `NORMAL`
   * at the next checkpoint, which a power cut can undo. NORMAL exists to measure what durability costs.
   */
  synchronous?: 'FULL' | 'NORMAL';
}

/** The settings of a store's connection that say how durable a commit is. */
export type SqliteSetting = 'journal_mode' | 'synchronous';

/** A SQLite-backed store: the Store interface plus a read of its connection's durability settings. */
export interface SqliteBackedStore extends Store {
  /** The value SQLite reports for `PRAGMA <name>` on this store's own connection (settings are per connection). */
  setting(name: SqliteSetting): string | number;
}

interface KvRow {
  key: string;
  value: string;
  create_revision: number;
  mod_revision: number;
  version: number;
  lease: string | null;
}

interface ChangeRow {
  revision: number;
  key: string;
  type: string;
  value: string;
  create_revision: number;
  version: number;
  lease: string | null;
}

/** The key range `[lo, hi)` holding exactly the keys that start with a prefix; `hi` null means unbounded. */
interface KeyRange {
  lo: string;
  hi: string | null;
}

/**
 * Smallest string greater than every string starting with `prefix`, or null if there is none.
 * SQLite compares TEXT byte-wise as UTF-8, which orders like code points, so incrementing the last
 * code point (skipping the surrogate block, which UTF-8 cannot encode) gives the exact upper bound.
 */
function prefixRange(prefix: string): KeyRange {
  const points = Array.from(prefix, (c) => c.codePointAt(0) ?? 0);
  while (points.length > 0) {
    const last = points.pop() ?? 0;
    if (last < 0x10ffff) {
      const next = last + 1 === 0xd800 ? 0xe000 : last + 1;
      points.push(next);
      return { lo: prefix, hi: String.fromCodePoint(...points) };
    }
  }
  return { lo: prefix, hi: null };
}

/** Byte-wise (UTF-8) order, the order SQLite and etcd sort keys in. */
function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function toKeyValue(row: KvRow): KeyValue {
  return {
    key: row.key,
    value: row.value,
    createRevision: row.create_revision,
    modRevision: row.mod_revision,
    version: row.version,
    lease: row.lease,
  };
}

function toEvent(row: ChangeRow): WatchEvent {
  if (row.type === 'delete') {
    // etcd reports deletes with only the key and the delete's revision; mirror that.
    return {
      type: 'delete',
      kv: { key: row.key, value: '', createRevision: 0, modRevision: row.revision, version: 0, lease: null },
    };
  }
  return {
    type: 'put',
    kv: {
      key: row.key,
      value: row.value,
      createRevision: row.create_revision,
      modRevision: row.revision,
      version: row.version,
      lease: row.lease,
    },
  };
}

function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw new StoreError('store keys must be non-empty strings');
}

/** Allocates one revision to a group of writes, lazily, so a group that changes nothing bumps nothing. */
class RevisionBatch {
  private revision: number | null = null;
  private seq = 0;

  constructor(private readonly head: number) {}

  /** The revision of this batch and the position of the next change in it. */
  next(): { revision: number; seq: number } {
    this.revision ??= this.head + 1;
    return { revision: this.revision, seq: this.seq++ };
  }

  /** The store revision after this batch. */
  get result(): number {
    return this.revision ?? this.head;
  }

  get wrote(): boolean {
    return this.revision !== null;
  }
}

class SqliteWatch implements Watch {
  closed = false;

  constructor(
    readonly range: KeyRange,
    /** Last revision delivered (or skipped as irrelevant) to this watch. */
    public last: number,
    readonly onEvents: (events: WatchEvent[]) => void,
    private readonly detach: (w: SqliteWatch) => void,
  ) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.detach(this);
  }
}

function prepareStatements(db: Database.Database) {
  const alive = '(k.lease IS NULL OR EXISTS (SELECT 1 FROM leases l WHERE l.id = k.lease AND l.expires_at_ms > @now))';
  const kvCols = 'k.key, k.value, k.create_revision, k.mod_revision, k.version, k.lease';
  const changeCols = 'revision, key, type, value, create_revision, version, lease';
  return {
    head: db.prepare<[], { revision: number }>('SELECT revision FROM meta WHERE id = 1'),
    setHead: db.prepare<[number]>('UPDATE meta SET revision = ? WHERE id = 1'),
    getLive: db.prepare<{ key: string; now: number }, KvRow>(
      `SELECT ${kvCols} FROM kv k WHERE k.key = @key AND ${alive}`,
    ),
    rangeLive: db.prepare<{ lo: string; hi: string; now: number }, KvRow>(
      `SELECT ${kvCols} FROM kv k WHERE k.key >= @lo AND k.key < @hi AND ${alive} ORDER BY k.key`,
    ),
    rangeLiveFrom: db.prepare<{ lo: string; now: number }, KvRow>(
      `SELECT ${kvCols} FROM kv k WHERE k.key >= @lo AND ${alive} ORDER BY k.key`,
    ),
    // Inside write transactions expired leases were just reaped, so no lease filter is needed.
    getRaw: db.prepare<[string], KvRow>(`SELECT ${kvCols} FROM kv k WHERE k.key = ?`),
    keysIn: db.prepare<[string, string], { key: string }>('SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key'),
    keysFrom: db.prepare<[string], { key: string }>('SELECT key FROM kv WHERE key >= ? ORDER BY key'),
    keysOfLease: db.prepare<[string], { key: string }>('SELECT key FROM kv WHERE lease = ? ORDER BY key'),
    upsert: db.prepare<[string, string, number, number, number, string | null]>(
      `INSERT INTO kv (key, value, create_revision, mod_revision, version, lease) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision,
         version = excluded.version, lease = excluded.lease`,
    ),
    deleteKey: db.prepare<[string]>('DELETE FROM kv WHERE key = ?'),
    logChange: db.prepare<[number, number, string, string, string, number, number, string | null, number]>(
      `INSERT INTO changes (revision, seq, key, type, value, create_revision, version, lease, at_ms)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    changesIn: db.prepare<[number, number, string, string], ChangeRow>(
      `SELECT ${changeCols} FROM changes WHERE revision > ? AND revision <= ? AND key >= ? AND key < ?
       ORDER BY revision, seq`,
    ),
    changesFrom: db.prepare<[number, number, string], ChangeRow>(
      `SELECT ${changeCols} FROM changes WHERE revision > ? AND revision <= ? AND key >= ? ORDER BY revision, seq`,
    ),
    anyExpired: db.prepare<[number], { id: string }>('SELECT id FROM leases WHERE expires_at_ms <= ? LIMIT 1'),
    expired: db.prepare<[number], { id: string }>('SELECT id FROM leases WHERE expires_at_ms <= ? ORDER BY id'),
    lease: db.prepare<[string], { ttl_ms: number }>('SELECT ttl_ms FROM leases WHERE id = ?'),
    insertLease: db.prepare<[string, number, number]>('INSERT INTO leases (id, ttl_ms, expires_at_ms) VALUES (?, ?, ?)'),
    touchLease: db.prepare<[number, string]>('UPDATE leases SET expires_at_ms = ? + ttl_ms WHERE id = ?'),
    deleteLease: db.prepare<[string]>('DELETE FROM leases WHERE id = ?'),
    oldestChange: db.prepare<[], { revision: number; at_ms: number }>(
      'SELECT revision, at_ms FROM changes ORDER BY revision, seq LIMIT 1',
    ),
    lastChangeBefore: db.prepare<[number], { revision: number | null }>(
      'SELECT MAX(revision) AS revision FROM changes WHERE at_ms < ?',
    ),
    compactTo: db.prepare<[number]>('DELETE FROM changes WHERE revision <= ?'),
    setCompacted: db.prepare<[number]>('UPDATE meta SET compact_revision = MAX(compact_revision, ?) WHERE id = 1'),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

class SqliteStore implements SqliteBackedStore {
  readonly backend = 'sqlite';
  private readonly st: Statements;
  private readonly watches = new Set<SqliteWatch>();
  private readonly pollTimer: NodeJS.Timeout;
  private readonly maintenanceTimer: NodeJS.Timeout;
  private pollSoon: NodeJS.Immediate | null = null;
  /** Writes of this process waiting for another process's write lock, and the chain that keeps them in order. */
  private writesQueued = 0;
  private writeQueue: Promise<void> = Promise.resolve();
  private ticks = 0;
  private closed = false;

  constructor(
    private readonly db: Database.Database,
    private readonly path: string,
    pollIntervalMs: number,
    private readonly synchronous: 'FULL' | 'NORMAL',
  ) {
    this.st = prepareStatements(db);
    this.pollTimer = setInterval(() => this.poll(), pollIntervalMs);
    this.pollTimer.unref();
    this.maintenanceTimer = setInterval(() => this.maintain(), MAINTENANCE_INTERVAL_MS);
    this.maintenanceTimer.unref();
  }

  async get(key: string): Promise<KeyValue | null> {
    return this.guard(() => {
      const row = this.st.getLive.get({ key, now: Date.now() });
      return row ? toKeyValue(row) : null;
    });
  }

  async range(prefix: string): Promise<RangeResult> {
    return this.rangeMany([prefix]);
  }

  async rangeMany(prefixes: string[]): Promise<RangeResult> {
    // A prefix inside another adds nothing; what is left are disjoint key intervals, and read in
    // byte order of their prefixes they come out sorted without a merge.
    const outer = prefixes
      .filter((p, i) => !prefixes.some((q, j) => (q !== p && p.startsWith(q)) || (q === p && j < i)))
      .sort(compareBytes);
    return this.guard(() =>
      this.db.transaction(() => {
        const now = Date.now();
        const revision = this.head();
        const kvs: KeyValue[] = [];
        for (const prefix of outer) {
          const { lo, hi } = prefixRange(prefix);
          const rows = hi === null ? this.st.rangeLiveFrom.all({ lo, now }) : this.st.rangeLive.all({ lo, hi, now });
          for (const row of rows) kvs.push(toKeyValue(row));
        }
        return { kvs, revision };
      }).deferred(),
    );
  }

  async txn(compares: Compare[], ops: Op[], failure: Op[] = [], options: TxnOptions = {}): Promise<TxnResult> {
    for (const c of compares) checkKey(c.key);
    for (const op of [...ops, ...failure]) if (op.type !== 'deletePrefix') checkKey(op.key);
    return this.write(() => {
      const succeeded = compares.every((c) => this.holds(c));
      const batch = new RevisionBatch(this.head());
      this.apply(succeeded ? ops : failure, batch);
      this.finish(batch);
      return { succeeded, revision: batch.result };
    }, options.durability === 'relaxed');
  }

  async put(key: string, value: string, lease?: string): Promise<number> {
    const result = await this.txn([], [{ type: 'put', key, value, lease }]);
    return result.revision;
  }

  async delete(key: string): Promise<boolean> {
    checkKey(key);
    return this.write(() => {
      const batch = new RevisionBatch(this.head());
      this.deleteOne(key, batch);
      this.finish(batch);
      return batch.wrote;
    });
  }

  async grantLease(ttlSeconds: number): Promise<string> {
    if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
      throw new StoreError(`lease TTL must be a positive number of seconds, not ${ttlSeconds}`);
    }
    const ttlMs = Math.max(1, Math.round(ttlSeconds * 1000));
    // Random ids are never reused, so a holder of a long-gone lease cannot refresh someone else's.
    const id = randomBytes(8).toString('hex');
    return this.write((now) => {
      this.st.insertLease.run(id, ttlMs, now + ttlMs);
      return id;
    }, true);
  }

  async keepAlive(lease: string): Promise<boolean> {
    // The write reaps first, so a lease past its expiry is gone here and cannot be revived.
    return this.write((now) => this.st.touchLease.run(now, lease).changes > 0, true);
  }

  /** Revoking a lease that is already gone (expired or revoked) does nothing, so shutdown paths can always call it. */
  async revokeLease(lease: string): Promise<void> {
    await this.write(() => {
      const batch = new RevisionBatch(this.head());
      this.dropLease(lease, batch);
      this.finish(batch);
    }, true);
  }

  setting(name: SqliteSetting): string | number {
    return this.guard(() => this.db.pragma(name, { simple: true }) as string | number);
  }

  watch(prefix: string, fromRevision: number, onEvents: (events: WatchEvent[]) => void): Watch {
    this.assertOpen();
    const w = new SqliteWatch(prefixRange(prefix), fromRevision, onEvents, (x) => this.watches.delete(x));
    this.watches.add(w);
    this.schedulePoll();
    return w;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pollTimer);
    clearInterval(this.maintenanceTimer);
    if (this.pollSoon) clearImmediate(this.pollSoon);
    for (const w of [...this.watches]) w.close();
    this.db.close();
  }

  private head(): number {
    const row = this.st.head.get();
    if (!row) throw new StoreError(`store ${this.path} has no revision row (not a Roost store?)`);
    return row.revision;
  }

  private holds(c: Compare): boolean {
    const row = this.st.getRaw.get(c.key);
    if ('modRevision' in c) return (row?.mod_revision ?? 0) === c.modRevision;
    if ('createRevision' in c) return (row?.create_revision ?? 0) === c.createRevision;
    // As in etcd, a value compare on a missing key fails: "absent" is not the empty string.
    return row !== undefined && row.value === c.value;
  }

  private apply(ops: Op[], batch: RevisionBatch): void {
    for (const op of ops) {
      switch (op.type) {
        case 'put':
          this.putOne(op.key, op.value, op.lease ?? null, batch);
          break;
        case 'delete':
          this.deleteOne(op.key, batch);
          break;
        case 'deletePrefix': {
          const { lo, hi } = prefixRange(op.prefix);
          const rows = hi === null ? this.st.keysFrom.all(lo) : this.st.keysIn.all(lo, hi);
          for (const { key } of rows) this.deleteOne(key, batch);
          break;
        }
      }
    }
  }

  private putOne(key: string, value: string, lease: string | null, batch: RevisionBatch): void {
    if (lease !== null && !this.st.lease.get(lease)) {
      // Throwing rolls back the whole transaction, as etcd refuses a txn naming an unknown lease.
      throw new StoreError(`lease ${lease} not found (expired or revoked)`);
    }
    const old = this.st.getRaw.get(key);
    const { revision, seq } = batch.next();
    const createRevision = old ? old.create_revision : revision;
    const version = old ? old.version + 1 : 1;
    this.st.upsert.run(key, value, createRevision, revision, version, lease);
    this.st.logChange.run(revision, seq, key, 'put', value, createRevision, version, lease, Date.now());
  }

  private deleteOne(key: string, batch: RevisionBatch): void {
    if (!this.st.getRaw.get(key)) return;
    const { revision, seq } = batch.next();
    this.st.deleteKey.run(key);
    this.st.logChange.run(revision, seq, key, 'delete', '', 0, 0, null, Date.now());
  }

  private dropLease(lease: string, batch: RevisionBatch): void {
    for (const { key } of this.st.keysOfLease.all(lease)) this.deleteOne(key, batch);
    this.st.deleteLease.run(lease);
  }

  private finish(batch: RevisionBatch): void {
    if (batch.wrote) this.st.setHead.run(batch.result);
  }

  /** Deletes the keys of every expired lease under one revision of its own. */
  private reap(now: number): void {
    const expired = this.st.expired.all(now);
    if (expired.length === 0) return;
    const batch = new RevisionBatch(this.head());
    for (const { id } of expired) this.dropLease(id, batch);
    this.finish(batch);
  }

  /**
   * Runs `fn` in a `BEGIN IMMEDIATE` transaction after reaping expired leases, then wakes local watches.
   * `relaxed` commits it without waiting for the disk (see Durability above).
   *
   * While another process holds the write lock this waits without blocking the event loop: SQLite's own busy
   * handler sleeps inside the call, and with several members' processes writing, their event loops spent
   * more time asleep there than working (`npm run bench -- scale`). The attempts back off from 0 to 8 ms.
   */
  private write<T>(fn: (now: number) => T, relaxed = false): Promise<T> {
    const deadline = Date.now() + BUSY_TIMEOUT_MS;
    if (this.writesQueued === 0) {
      const outcome = this.tryWrite(fn, relaxed);
      if (outcome.done) return Promise.resolve(outcome.value);
    }
    // Behind a write that waits, in call order: this process's writes never overtake one another.
    this.writesQueued++;
    const run = this.writeQueue.then(() => this.writeWhenFree(fn, relaxed, deadline));
    this.writeQueue = run.then(
      () => undefined,
      () => undefined,
    );
    return run.finally(() => this.writesQueued--);
  }

  private async writeWhenFree<T>(fn: (now: number) => T, relaxed: boolean, deadline: number): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const outcome = this.tryWrite(fn, relaxed);
      if (outcome.done) return outcome.value;
      if (Date.now() >= deadline) {
        throw new StoreError(`sqlite store ${this.path}: database is locked (another process held the write lock for ${BUSY_TIMEOUT_MS / 1000} s)`);
      }
      await sleep(attempt === 0 ? 0 : Math.min(8, 2 ** Math.floor(attempt / 2)) * (0.5 + Math.random()));
    }
  }

  /** One attempt at `write`: not done when another process holds the write lock. */
  private tryWrite<T>(fn: (now: number) => T, relaxed: boolean): { done: true; value: T } | { done: false } {
    return this.guard(() => {
      const relax = relaxed && this.synchronous === 'FULL';
      this.db.pragma('busy_timeout = 0');
      if (relax) this.db.pragma('synchronous = NORMAL');
      try {
        const value = this.db
          .transaction(() => {
            const now = Date.now();
            this.reap(now);
            return fn(now);
          })
          .immediate();
        this.schedulePoll();
        return { done: true as const, value };
      } catch (err) {
        if (isBusy(err)) return { done: false as const };
        throw err;
      } finally {
        if (relax) this.db.pragma('synchronous = FULL');
        this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      }
    });
  }

  /** Runs `fn` on an open store, turning SQLite errors into StoreErrors that name the file. */
  private guard<T>(fn: () => T): T {
    this.assertOpen();
    try {
      return fn();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      throw new StoreError(`sqlite store ${this.path}: ${message}`, { cause: err });
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError(`sqlite store ${this.path} is closed`);
  }

  private schedulePoll(): void {
    if (this.pollSoon || this.closed || this.watches.size === 0) return;
    this.pollSoon = setImmediate(() => {
      this.pollSoon = null;
      this.poll();
    });
  }

  /**
   * Delivers new changes to every watch, one callback per revision. A watch that starts at a revision
   * already compacted gets what remains of the log (the compacted changes are silently skipped); the
   * caller is expected to start from a recent `range` revision, as the members do.
   */
  private poll(): void {
    if (this.closed || this.watches.size === 0) return;
    const deliveries: Array<{ watch: SqliteWatch; head: number; groups: WatchEvent[][] }> = [];
    try {
      this.db
        .transaction(() => {
          const head = this.head();
          for (const watch of this.watches) {
            if (watch.last >= head) continue;
            const { lo, hi } = watch.range;
            const rows =
              hi === null
                ? this.st.changesFrom.all(watch.last, head, lo)
                : this.st.changesIn.all(watch.last, head, lo, hi);
            const groups: WatchEvent[][] = [];
            let current = -1;
            for (const row of rows) {
              if (row.revision !== current) {
                groups.push([]);
                current = row.revision;
              }
              groups[groups.length - 1]?.push(toEvent(row));
            }
            deliveries.push({ watch, head, groups });
          }
        })
        .deferred();
    } catch {
      // A transient read failure (the file briefly locked by a checkpoint): the next tick retries,
      // and nothing was marked delivered because `watch.last` only moves once the whole read worked.
      return;
    }
    for (const { watch, head, groups } of deliveries) {
      watch.last = Math.max(watch.last, head);
      for (const events of groups) {
        if (watch.closed || this.closed) break;
        try {
          watch.onEvents(events);
        } catch (err) {
          // A throwing callback must not starve other watches, nor be swallowed: surface it as uncaught.
          queueMicrotask(() => {
            throw err;
          });
        }
      }
    }
  }

  /** Timer work: reap expired leases so watchers see their deletes, and compact the change log. */
  private maintain(): void {
    if (this.closed) return;
    const now = Date.now();
    try {
      // Check with a plain read first so idle processes do not take the write lock four times a second.
      // One attempt: a busy lock means another process is writing, and its write reaps too.
      if (this.st.anyExpired.get(now)) this.tryWrite((at) => this.reap(at), true);
      if (++this.ticks % COMPACT_EVERY_TICKS === 0) this.compact(now);
    } catch {
      // Another process holding the lock past the busy timeout: the next tick (or write) retries.
    }
  }

  private compact(now: number): void {
    const oldest = this.st.oldestChange.get();
    if (!oldest) return;
    const cutoffTime = now - RETAIN_CHANGES_MS;
    if (oldest.at_ms >= cutoffTime && oldest.revision > this.head() - RETAIN_CHANGES_REVISIONS) return;
    // One attempt, like reaping above: the next compaction tick tries again.
    this.tryWrite(() => {
      const byCount = this.head() - RETAIN_CHANGES_REVISIONS;
      const byAge = this.st.lastChangeBefore.get(cutoffTime)?.revision ?? 0;
      const upTo = Math.max(byCount, byAge);
      if (upTo <= 0) return;
      this.st.compactTo.run(upTo);
      this.st.setCompacted.run(upTo);
    }, true);
  }
}

/** Whether SQLite refused because another connection holds a lock it needs. */
function isBusy(err: unknown): boolean {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' && err.code.startsWith('SQLITE_BUSY');
}

/** Opens (creating if needed) the SQLite store at `path`, which other processes on this host may share. */
export async function openSqliteStore(path: string, options: SqliteStoreOptions = {}): Promise<SqliteBackedStore> {
  const pollIntervalMs = options.pollIntervalMs ?? 25;
  if (!Number.isFinite(pollIntervalMs) || pollIntervalMs <= 0) {
    throw new StoreError(`pollIntervalMs must be a positive number, not ${pollIntervalMs}`);
  }
  const synchronous = options.synchronous ?? 'FULL';
  let db: Database.Database | null = null;
  try {
    createPrivately(path);
    const conn = new Database(path, { timeout: BUSY_TIMEOUT_MS });
    db = conn;
    conn.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    const mode = conn.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') throw new StoreError(`sqlite store ${path}: could not switch to WAL mode (got ${String(mode)})`);
    conn.pragma(`synchronous = ${synchronous}`);
    // Once the WAL mode is set the -wal and -shm files exist; an older install may have left all three looser.
    for (const file of [path, `${path}-wal`, `${path}-shm`]) makePrivate(file);
    conn
      .transaction(() => {
        const version = conn.pragma('user_version', { simple: true });
        if (typeof version === 'number' && version > SCHEMA_VERSION) {
          throw new StoreError(`sqlite store ${path} has schema version ${version}; this Roost knows ${SCHEMA_VERSION}`);
        }
        conn.exec(SCHEMA);
        conn.prepare('INSERT OR IGNORE INTO meta (id, revision, compact_revision) VALUES (1, 1, 0)').run();
        conn.pragma(`user_version = ${SCHEMA_VERSION}`);
      })
      .immediate();
    return new SqliteStore(conn, path, pollIntervalMs, synchronous);
  } catch (err) {
    db?.close();
    if (err instanceof StoreError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new StoreError(`cannot open sqlite store ${path}: ${message}`, { cause: err });
  }
}

/** Creates the database file empty with the private mode if it is missing (SQLite would use 0644 minus umask). */
function createPrivately(path: string): void {
  try {
    closeSync(openSync(path, 'wx', STORE_FILE_MODE));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

function makePrivate(file: string): void {
  try {
    chmodSync(file, STORE_FILE_MODE);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
