// The multi-host cluster store: etcd (3.4 or later) through the npm `etcd3` client. The Store interface
// copies etcd's model, so most of this file translates; the rest is what a cluster needs to survive
// etcd members dying:
//
// - Revisions, createRevision/modRevision/version and transactions are etcd's own, one to one. Keys and
//   values are UTF-8 bytes in etcd, so keys sort byte-wise as in the SQLite backend.
// - Lease ids are etcd's int64 lease ids as 16 hex digits, the form etcdctl prints.
// - Every call has a deadline (`callTimeoutMs`) and fails with a StoreError naming the endpoints when
//   it passes. Calls that are safe to repeat (reads, lease grants, keepalives and revokes) are retried
//   on any member until then. A write is retried only when etcd certainly did not apply it (it never
//   left this process, or etcd dropped the proposal); a write whose answer was lost fails saying its
//   outcome is unknown, because neither we nor etcd can tell whether it was applied.
// - Each watch has its own etcd watch stream and remembers the last revision it delivered. When the
//   stream breaks (the member serving it died, etcd was unreachable) it reconnects to any member and
//   resumes after that revision, so no event is lost or repeated. etcd3's own Watcher is not used: it
//   moves its resume point to the header revision of each response, which during a replay is ahead of
//   the events delivered so far, so a reconnect in the middle of a replay would skip events.
// - A watch whose resume point etcd has compacted away cannot be exact any more; it ends with a
//   StoreError (see Store.watch) instead of silently skipping history.
//
// What etcd refuses and SQLite accepts: a transaction writing one key twice (two puts, or a put and a
// delete covering it), and, with etcd's defaults, transactions of more than 128 operations
// (`--max-txn-ops`) or requests over 1.5 MiB (`--max-request-bytes`); these fail with a StoreError.
//
// etcd keeps all history until it is compacted, and this backend leaves compaction to etcd: run it
// with `--auto-compaction-retention` (an hour is plenty; the SQLite backend keeps ten minutes), or its
// backend quota fills up and every write fails. Keep the retention well above etcd's watch progress
// interval (`--experimental-watch-progress-notify-interval`, 10 minutes), which is how often a quiet
// watch learns that it has missed nothing.

import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, isBrokenCircuitError, noop } from 'cockatiel';
import {
  Etcd3,
  EtcdLeaseInvalidError,
  castGrpcError,
  isRecoverableError,
  type ICompare,
  type IDuplexStream,
  type IEvent,
  type IKeyValue,
  type IRequestOp,
  type IWatchRequest,
  type IWatchResponse,
} from 'etcd3';
import {
  StoreError,
  type Compare,
  type KeyValue,
  type Op,
  type RangeResult,
  type Store,
  type TxnResult,
  type Watch,
  type WatchEvent,
} from './store.js';

/** Default deadline of one store call. */
const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** First pause before retrying a call, doubled up to the next constant. */
const RETRY_DELAY_MS = 25;
const MAX_RETRY_DELAY_MS = 400;
/** First pause before reconnecting a broken watch stream, doubled up to the next constant. */
const WATCH_RECONNECT_MS = 50;
const MAX_WATCH_RECONNECT_MS = 1000;
/**
 * Largest answer accepted from etcd. gRPC's default of 4 MiB is too small for one read of the whole
 * cluster (20,000 instance records are several MiB); etcd itself sends answers of up to 2 GiB.
 */
const MAX_RESPONSE_BYTES = 512 * 1024 * 1024;
/** A member is skipped for this long after this many consecutive failures, then tried again. */
const BREAKER_HALF_OPEN_MS = 1000;
const BREAKER_FAILURES = 3;

/** Where and how to reach etcd. */
export interface EtcdStoreOptions {
  /** Client endpoints of the etcd members, `host:port`. */
  endpoints: string[];
  /** Talk HTTPS to etcd: PEM files of the CA that signed etcd's certificate, and of our client certificate. */
  tls?: { caFile: string; certFile?: string; keyFile?: string };
  /** Deadline of every store call, in ms (default 5000). */
  callTimeoutMs?: number;
}

/** Parameters of a gRPC call (its deadline), as the etcd3 clients take them. */
type CallOptions = NonNullable<Parameters<Etcd3['kv']['range']>[1]>;

/**
 * How a call may be retried: `repeatable` calls any number of times, `once` calls (writes) only when
 * the failed attempt certainly changed nothing.
 */
type Repeat = 'repeatable' | 'once';

const ENDPOINT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/;

/**
 * Parses `etcd://host:port[,host:port…][?cacert=…&cert=…&key=…&timeout_ms=…]` (see openStore); a port
 * left out is etcd's 2379. Throws a StoreError naming what is wrong.
 */
export function parseEtcdUrl(url: string): EtcdStoreOptions {
  if (!url.startsWith('etcd://')) {
    throw new StoreError(`store URL "${url}": expected etcd://host:port[,host:port...]`);
  }
  const rest = url.slice('etcd://'.length);
  const q = rest.indexOf('?');
  const hostList = q === -1 ? rest : rest.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : rest.slice(q + 1));
  const endpoints = hostList.split(',').map((h) => h.trim());
  if (hostList.length === 0 || endpoints.some((h) => h.length === 0)) {
    throw new StoreError(`store URL "${url}" names no etcd endpoint (expected etcd://host:port[,host:port...])`);
  }
  const normalized = endpoints.map((endpoint) => {
    const m = ENDPOINT.exec(endpoint);
    const port = m?.[2] === undefined ? 2379 : Number(m[2]);
    if (!m || port < 1 || port > 65535) {
      throw new StoreError(`store URL "${url}": "${endpoint}" is not an etcd endpoint (host:port)`);
    }
    return `${m[1]}:${port}`;
  });
  const known = new Set(['cacert', 'cert', 'key', 'timeout_ms']);
  for (const name of query.keys()) {
    if (!known.has(name)) {
      throw new StoreError(`store URL "${url}": unknown parameter "${name}" (known: cacert, cert, key, timeout_ms)`);
    }
  }
  const options: EtcdStoreOptions = { endpoints: normalized };
  const cacert = query.get('cacert');
  const cert = query.get('cert');
  const key = query.get('key');
  if ((cert === null) !== (key === null)) {
    throw new StoreError(`store URL "${url}": a client certificate needs both cert= and key=`);
  }
  if (cert !== null && cacert === null) {
    throw new StoreError(`store URL "${url}": TLS needs cacert= (the CA that signed etcd's certificate)`);
  }
  if (cacert !== null) options.tls = { caFile: cacert, certFile: cert ?? undefined, keyFile: key ?? undefined };
  const timeout = query.get('timeout_ms');
  if (timeout !== null) {
    const ms = Number(timeout);
    if (!Number.isInteger(ms) || ms <= 0) {
      throw new StoreError(`store URL "${url}": timeout_ms must be a positive whole number of milliseconds`);
    }
    options.callTimeoutMs = ms;
  }
  return options;
}

function bytes(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

/** The etcd key range holding exactly the keys that start with `prefix` (etcd's "prefix end" rule). */
function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  if (prefix.length === 0) return { key: Buffer.from([0]), range_end: Buffer.from([0]) };
  const key = bytes(prefix);
  const end = Buffer.from(key);
  for (let i = end.length - 1; i >= 0; i--) {
    const b = end[i] ?? 0xff;
    if (b < 0xff) {
      end[i] = b + 1;
      return { key, range_end: end.subarray(0, i + 1) };
    }
  }
  // Every byte is 0xff: the range runs to the end of the key space.
  return { key, range_end: Buffer.from([0]) };
}

/** Prefixes inside another one add nothing; the rest, in byte order, give results already sorted. */
function outermost(prefixes: string[]): string[] {
  const unique = [...new Set(prefixes)];
  return unique
    .filter((p) => !unique.some((q) => q !== p && p.startsWith(q)))
    .sort((a, b) => Buffer.compare(bytes(a), bytes(b)));
}

/** etcd's decimal int64 lease id as the hex id the Store hands out. */
function leaseFromEtcd(id: string): string {
  return BigInt(id).toString(16).padStart(16, '0');
}

/** A Store lease id back to etcd's decimal form, or null if it cannot be an etcd lease. */
function leaseToEtcd(lease: string): string | null {
  if (!/^[0-9a-f]{1,16}$/.test(lease)) return null;
  const id = BigInt(`0x${lease}`);
  return id > 0n && id < 2n ** 63n ? id.toString(10) : null;
}

function toKeyValue(kv: IKeyValue): KeyValue {
  return {
    key: kv.key.toString('utf8'),
    value: kv.value.toString('utf8'),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
    lease: kv.lease === '0' ? null : leaseFromEtcd(kv.lease),
  };
}

function toEvent(event: IEvent): WatchEvent {
  if (event.type === 'Delete') {
    // etcd reports a delete with the key and the delete's revision only, which is the Store's contract.
    return {
      type: 'delete',
      kv: {
        key: event.kv.key.toString('utf8'),
        value: '',
        createRevision: 0,
        modRevision: Number(event.kv.mod_revision),
        version: 0,
        lease: null,
      },
    };
  }
  return { type: 'put', kv: toKeyValue(event.kv) };
}

function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw new StoreError('store keys must be non-empty strings');
}

function toCompare(c: Compare): ICompare {
  checkKey(c.key);
  // A missing key compares as revision 0 in etcd, which is the Store's "absent".
  if ('modRevision' in c) return { key: bytes(c.key), target: 'Mod', result: 'Equal', mod_revision: c.modRevision };
  if ('createRevision' in c) {
    return { key: bytes(c.key), target: 'Create', result: 'Equal', create_revision: c.createRevision };
  }
  return { key: bytes(c.key), target: 'Value', result: 'Equal', value: bytes(c.value) };
}

function toRequestOp(op: Op): IRequestOp {
  switch (op.type) {
    case 'put': {
      checkKey(op.key);
      const lease = op.lease === undefined ? '0' : leaseToEtcd(op.lease);
      if (lease === null) throw new StoreError(`lease ${op.lease} not found (expired or revoked)`);
      return { request_put: { key: bytes(op.key), value: bytes(op.value), lease } };
    }
    case 'delete':
      checkKey(op.key);
      return { request_delete_range: { key: bytes(op.key) } };
    case 'deletePrefix':
      return { request_delete_range: prefixRange(op.prefix) };
  }
}

/** The keys a transaction touches, for error messages: the first three and how many more. */
function describeKeys(compares: Compare[], ops: Op[]): string {
  const named = [
    ...compares.map((c) => c.key),
    ...ops.map((op) => (op.type === 'deletePrefix' ? `${op.prefix}*` : op.key)),
  ];
  const keys = [...new Set(named)];
  const shown = keys.slice(0, 3).map((k) => `"${k}"`).join(', ');
  return keys.length > 3 ? `${shown} and ${keys.length - 3} more keys` : shown || 'no keys';
}

function asError(err: unknown): Error {
  return castGrpcError(err instanceof Error ? err : new Error(String(err)));
}

/** True if the failed attempt certainly changed nothing in etcd, so even a write may be sent again. */
function changedNothing(err: Error): boolean {
  if (isBrokenCircuitError(err)) return true; // never sent: the member is being skipped
  return /No connection established|raft proposal dropped|etcdserver: (too many requests|no leader|leader changed|not capable)/.test(
    err.message,
  );
}

/** True if the failure is etcd or the network being unavailable rather than etcd refusing the request. */
function isTransient(err: Error): boolean {
  return isRecoverableError(err) || changedNothing(err);
}

/** Words that tell an operator what to change when etcd refuses a request for its size or shape. */
function hintFor(message: string): string {
  if (message.includes('too many operations in txn request')) return " (raise etcd's --max-txn-ops)";
  if (message.includes('request is too large') || message.includes('larger than max')) {
    return " (raise etcd's --max-request-bytes)";
  }
  if (message.includes('duplicate key given in txn request')) {
    return ' (etcd refuses a transaction that writes one key twice)';
  }
  if (message.includes('database space exceeded')) return " (etcd's backend quota is full: compact and defragment etcd)";
  return '';
}

/** One store watch on its own etcd watch stream, resuming after the last delivered revision. */
class EtcdWatch implements Watch {
  private stream: IDuplexStream<IWatchRequest, IWatchResponse> | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectDelay = WATCH_RECONNECT_MS;
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    private readonly where: string,
    private readonly prefix: string,
    /** Every event up to this revision has been delivered (or did not concern this watch). */
    private delivered: number,
    private readonly onEvents: (events: WatchEvent[]) => void,
    private readonly onError: ((err: StoreError) => void) | undefined,
    private readonly detach: (w: EtcdWatch) => void,
  ) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.dropStream();
    this.detach(this);
  }

  /** Opens a watch stream on any member, asking for every change after the last delivered revision. */
  async connect(): Promise<void> {
    this.reconnectTimer = null;
    if (this.closed) return;
    let stream: IDuplexStream<IWatchRequest, IWatchResponse>;
    try {
      stream = await this.client.watchClient.watch();
    } catch {
      // No member can be tried right now (every one is being skipped after failures).
      this.scheduleReconnect();
      return;
    }
    if (this.closed) {
      stream.end();
      stream.cancel();
      return;
    }
    this.stream = stream;
    stream.on('data', (res) => this.receive(stream, res));
    stream.on('error', () => this.broken(stream));
    stream.on('end', () => this.broken(stream));
    stream.write({
      create_request: {
        ...prefixRange(this.prefix),
        start_revision: this.delivered + 1,
        // Progress notifications move the resume point of a quiet watch forward, so a reconnect after
        // a compaction does not fail for history that held nothing for this watch.
        progress_notify: true,
      },
    });
  }

  private receive(stream: IDuplexStream<IWatchRequest, IWatchResponse>, res: IWatchResponse): void {
    if (stream !== this.stream || this.closed) return;
    if (res.canceled) {
      const compacted = Number(res.compact_revision);
      const reason =
        compacted > 0
          ? `etcd compacted its history up to revision ${compacted}, so the changes after revision ` +
            `${this.delivered} are gone; read the keys again and watch from a newer revision`
          : `etcd cancelled it: ${res.cancel_reason || 'no reason given'}`;
      this.fail(new StoreError(`${this.where}: the watch of "${this.prefix}" cannot go on: ${reason}`));
      return;
    }
    this.reconnectDelay = WATCH_RECONNECT_MS;
    if (res.created) return;
    if (res.events.length === 0) {
      // A progress notification, sent only to a watch that has caught up: nothing up to here is missing.
      this.delivered = Math.max(this.delivered, Number(res.header.revision));
      return;
    }
    // etcd never splits one revision across responses (we ask for no fragments), but one response may
    // hold several revisions: hand them over one revision per call.
    let group: WatchEvent[] = [];
    let groupRevision = -1;
    const flush = (): void => {
      if (group.length === 0) return;
      const events = group;
      group = [];
      this.delivered = groupRevision;
      try {
        this.onEvents(events);
      } catch (err) {
        // A throwing callback must not break the stream, nor be swallowed: surface it as uncaught.
        queueMicrotask(() => {
          throw err;
        });
      }
    };
    for (const event of res.events) {
      const revision = Number(event.kv.mod_revision);
      if (revision <= this.delivered) continue;
      if (revision !== groupRevision) {
        flush();
        if (this.closed) return;
        groupRevision = revision;
      }
      group.push(toEvent(event));
    }
    flush();
  }

  private broken(stream: IDuplexStream<IWatchRequest, IWatchResponse>): void {
    if (stream !== this.stream || this.closed) return;
    this.dropStream();
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    this.reconnectTimer = setTimeout(() => void this.connect(), this.reconnectDelay);
    // A watch waiting for etcd to come back must not, alone, keep the process alive.
    this.reconnectTimer.unref();
    this.reconnectDelay = Math.min(this.reconnectDelay * 2, MAX_WATCH_RECONNECT_MS);
  }

  private dropStream(): void {
    const stream = this.stream;
    this.stream = null;
    if (!stream) return;
    // Half-close first: etcd3 takes an error on a stream still open for writing as a failed member.
    stream.end();
    stream.cancel();
  }

  private fail(err: StoreError): void {
    this.close();
    if (this.onError) {
      this.onError(err);
      return;
    }
    queueMicrotask(() => {
      throw err;
    });
  }
}

class EtcdStore implements Store {
  readonly backend = 'etcd';
  private readonly watches = new Set<EtcdWatch>();
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    /** "etcd at host:port,host:port", the words every error starts with. */
    private readonly where: string,
    private readonly callTimeoutMs: number,
  ) {}

  async get(key: string): Promise<KeyValue | null> {
    checkKey(key);
    const res = await this.call(`get "${key}"`, 'repeatable', (o) => this.client.kv.range({ key: bytes(key) }, o));
    const kv = res.kvs[0];
    return kv ? toKeyValue(kv) : null;
  }

  async range(prefix: string): Promise<RangeResult> {
    return this.rangeMany([prefix]);
  }

  async rangeMany(prefixes: string[]): Promise<RangeResult> {
    // One read-only transaction: etcd answers all its ranges at one revision, in one round trip.
    const success: IRequestOp[] = outermost(prefixes).map((p) => ({ request_range: prefixRange(p) }));
    const what = `read ${prefixes.map((p) => `"${p}"`).join(', ') || 'the revision'}`;
    const res = await this.call(what, 'repeatable', (o) => this.client.kv.txn({ success }, o));
    const kvs: KeyValue[] = [];
    for (const r of res.responses) for (const kv of r.response_range.kvs) kvs.push(toKeyValue(kv));
    return { kvs, revision: Number(res.header.revision) };
  }

  /** Every commit is replicated before it returns, so a `durability` option (the interface's fourth argument) changes nothing here. */
  async txn(compares: Compare[], ops: Op[], failure: Op[] = []): Promise<TxnResult> {
    const request = { compare: compares.map(toCompare), success: ops.map(toRequestOp), failure: failure.map(toRequestOp) };
    const what = `transaction on ${describeKeys(compares, [...ops, ...failure])}`;
    // A transaction that writes nothing in either branch is a read, and may be repeated.
    const repeat: Repeat = ops.length + failure.length === 0 ? 'repeatable' : 'once';
    const res = await this.call(what, repeat, (o) => this.client.kv.txn(request, o));
    return { succeeded: res.succeeded, revision: Number(res.header.revision) };
  }

  async put(key: string, value: string, lease?: string): Promise<number> {
    const request = toRequestOp({ type: 'put', key, value, lease }).request_put ?? {};
    const res = await this.call(`put "${key}"`, 'once', (o) => this.client.kv.put(request, o));
    return Number(res.header.revision);
  }

  async delete(key: string): Promise<boolean> {
    checkKey(key);
    const res = await this.call(`delete "${key}"`, 'once', (o) => this.client.kv.deleteRange({ key: bytes(key) }, o));
    return Number(res.deleted) > 0;
  }

  /** etcd counts lease TTLs in whole seconds (and raises very short ones to its minimum), so this rounds up. */
  async grantLease(ttlSeconds: number): Promise<string> {
    if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
      throw new StoreError(`lease TTL must be a positive number of seconds, not ${ttlSeconds}`);
    }
    const TTL = Math.ceil(ttlSeconds);
    // Repeating a grant whose answer was lost leaves an unused lease, which expires by itself.
    const res = await this.call(`grant a ${TTL} s lease`, 'repeatable', (o) => this.client.leaseClient.leaseGrant({ TTL }, o));
    if (res.error) throw new StoreError(`${this.where}: grant a ${TTL} s lease failed: ${res.error}`);
    return leaseFromEtcd(res.ID);
  }

  async keepAlive(lease: string): Promise<boolean> {
    const ID = leaseToEtcd(lease);
    if (ID === null) return false;
    return this.call(`keep lease ${lease} alive`, 'repeatable', async (o) => {
      // etcd refreshes leases over a stream only: send one request, half-close, read the one answer.
      const stream = await this.client.leaseClient.leaseKeepAlive(o);
      return new Promise<boolean>((resolve, reject) => {
        let answered = false;
        stream.on('data', (res) => {
          answered = true;
          // etcd answers TTL 0 for a lease it no longer has.
          resolve(Number(res.TTL) > 0);
        });
        stream.on('error', (err) => reject(err));
        stream.on('end', () => {
          if (!answered) reject(new Error('etcd closed the keepalive stream without an answer'));
        });
        stream.write({ ID });
        stream.end();
      });
    });
  }

  /** Revoking a lease that is already gone (expired or revoked) does nothing, so shutdown paths can always call it. */
  async revokeLease(lease: string): Promise<void> {
    const ID = leaseToEtcd(lease);
    if (ID === null) return;
    try {
      await this.call(`revoke lease ${lease}`, 'repeatable', (o) => this.client.leaseClient.leaseRevoke({ ID }, o));
    } catch (err) {
      if (err instanceof StoreError && err.cause instanceof EtcdLeaseInvalidError) return;
      throw err;
    }
  }

  /**
   * An open watch keeps the process alive as any open connection does, until it or the store is
   * closed; while etcd is unreachable it waits to reconnect without holding the process.
   */
  watch(
    prefix: string,
    fromRevision: number,
    onEvents: (events: WatchEvent[]) => void,
    onError?: (err: StoreError) => void,
  ): Watch {
    this.assertOpen('watch');
    const w = new EtcdWatch(this.client, this.where, prefix, fromRevision, onEvents, onError, (x) => this.watches.delete(x));
    this.watches.add(w);
    void w.connect();
    return w;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watches]) w.close();
    this.client.close();
  }

  /**
   * Runs one etcd request under the store's deadline, retrying it on failures that allow it, and turns
   * every failure into a StoreError that names the endpoints.
   */
  private async call<T>(what: string, repeat: Repeat, attempt: (options: CallOptions) => Promise<T>): Promise<T> {
    this.assertOpen(what);
    const started = Date.now();
    const deadline = started + this.callTimeoutMs;
    let delay = RETRY_DELAY_MS;
    // The error worth reporting: "circuit open" only says an earlier attempt failed, not why.
    let telling: Error | null = null;
    for (;;) {
      const now = Date.now();
      // A repeatable call gives each attempt half the budget, so one member that stalls cannot use it all.
      const budget = repeat === 'repeatable' ? Math.min(deadline - now, Math.ceil(this.callTimeoutMs / 2)) : deadline - now;
      let err: Error;
      try {
        return await attempt({ deadline: now + budget });
      } catch (raw) {
        err = asError(raw);
      }
      if (!isBrokenCircuitError(err) || !telling) telling = err;
      if (this.closed) throw new StoreError(`${this.where}: ${what} failed: the store was closed`, { cause: err });
      const retry = repeat === 'repeatable' ? isTransient(err) : changedNothing(err);
      if (!retry || Date.now() + delay >= deadline) throw this.failure(what, repeat, err, telling, started);
      await sleep(delay);
      delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
    }
  }

  private failure(what: string, repeat: Repeat, err: Error, telling: Error, started: number): StoreError {
    const elapsed = Date.now() - started;
    // gRPC's messages end in an empty "Resolution note: " when name resolution had nothing to add.
    const detail = telling.message.replace(/^\w*Error: /, '').replace(/\.? Resolution note: ?$/, '');
    if (err instanceof EtcdLeaseInvalidError) {
      return new StoreError(`${this.where}: ${what} failed: lease not found (expired or revoked)`, { cause: err });
    }
    if (!isTransient(err)) {
      return new StoreError(`${this.where}: ${what} failed: ${detail}${hintFor(detail)}`, { cause: err });
    }
    const outcome =
      repeat === 'once' && !changedNothing(err) ? '; it may or may not have been applied' : '';
    return new StoreError(
      `${this.where}: ${what} failed: no etcd member answered within ${elapsed} ms${outcome} (last error: ${detail})`,
      { cause: err },
    );
  }

  private assertOpen(what: string): void {
    if (this.closed) throw new StoreError(`${this.where}: cannot ${what}: the store is closed`);
  }
}

async function readPem(file: string, role: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new StoreError(`cannot read the etcd ${role} ${file}: ${reason}`, { cause: err });
  }
}

/**
 * Connects to etcd and checks that it answers (within the call deadline), so a wrong address or TLS
 * setting fails at startup with a clear StoreError rather than at the first write.
 */
export async function openEtcdStore(options: EtcdStoreOptions): Promise<Store> {
  const callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  if (!Number.isFinite(callTimeoutMs) || callTimeoutMs <= 0) {
    throw new StoreError(`callTimeoutMs must be a positive number, not ${callTimeoutMs}`);
  }
  if (options.endpoints.length === 0) throw new StoreError('the etcd store needs at least one endpoint');
  const tls = options.tls;
  const credentials = tls
    ? {
        rootCertificate: await readPem(tls.caFile, 'CA certificate'),
        certChain: tls.certFile === undefined ? undefined : await readPem(tls.certFile, 'client certificate'),
        privateKey: tls.keyFile === undefined ? undefined : await readPem(tls.keyFile, 'client key'),
      }
    : undefined;
  const scheme = tls ? 'https' : 'http';
  const where = `etcd at ${options.endpoints.join(',')}`;
  const client = new Etcd3({
    hosts: options.endpoints.map((e) => `${scheme}://${e}`),
    credentials,
    grpcOptions: {
      'grpc.max_receive_message_length': MAX_RESPONSE_BYTES,
      // Reconnect quickly once a member is back (gRPC's default backoff grows to two minutes).
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      // Find a dead connection under a long-lived watch (etcd refuses pings more often than every 5 s).
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5000,
    },
    faultHandling: {
      // Retries are ours (see EtcdStore.call): etcd3's default retries writes whose outcome is unknown.
      global: noop,
      host: () =>
        circuitBreaker(handleWhen(isRecoverableError), {
          halfOpenAfter: BREAKER_HALF_OPEN_MS,
          breaker: new ConsecutiveBreaker(BREAKER_FAILURES),
        }),
    },
  });
  const store = new EtcdStore(client, where, callTimeoutMs);
  try {
    await store.rangeMany([]);
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
