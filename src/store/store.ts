// The cluster store interface: small and etcd-shaped, so the embedded SQLite backend and the etcd
// backend can be swapped behind it and pass one conformance suite.

/** One key with its value and etcd-style revisions. */
export interface KeyValue {
  key: string;
  value: string;
  /** Store revision at which the key was created (0 never appears for an existing key). */
  createRevision: number;
  /** Store revision of the last write to this key. */
  modRevision: number;
  /** Number of writes since creation (1 after the first put). */
  version: number;
  /** Lease the key is attached to, if any. */
  lease: string | null;
}

/**
 * A transaction guard: the key's modRevision must equal `modRevision` (0 means "the key does not
 * exist"); or its createRevision must equal `createRevision` (the same key, not deleted and created again
 * since, however often it was rewritten: a heartbeat still alive on one lease); or, with `value`, the key's
 * current value must equal `value` exactly.
 */
export type Compare =
  | { key: string; modRevision: number }
  | { key: string; createRevision: number }
  | { key: string; value: string };

/** A write inside a transaction. */
export type Op =
  | { type: 'put'; key: string; value: string; lease?: string }
  | { type: 'delete'; key: string }
  | { type: 'deletePrefix'; prefix: string };

/** What a transaction did. */
export interface TxnResult {
  succeeded: boolean;
  /** Store revision after the transaction (unchanged if it did not succeed or wrote nothing). */
  revision: number;
}

/** A consistent read of one or more prefixes. */
export interface RangeResult {
  kvs: KeyValue[];
  /** Store revision the read observed. */
  revision: number;
}

/** One change seen by a watch. For deletes, `kv.value` is empty and `kv.modRevision` is the delete's revision. */
export interface WatchEvent {
  type: 'put' | 'delete';
  kv: KeyValue;
}

/** A running watch. */
export interface Watch {
  close(): void;
}

/** How a transaction is committed. */
export interface TxnOptions {
  /**
   * `durable` (the default): on disk before the call returns. `relaxed`: may be undone by a power cut until
   * the next durable commit carries it to disk (never reordered after one), for liveness records such as
   * heartbeats that are rewritten every few seconds and mean nothing after a reboot. Backends that replicate
   * every commit (etcd) treat both alike.
   */
  durability?: 'durable' | 'relaxed';
}

/** The cluster store. Every method is safe to call from several processes sharing one backend. */
export interface Store {
  /** Which backend this is (`sqlite` or `etcd`). */
  readonly backend: string;
  /** One key, or null if absent. */
  get(key: string): Promise<KeyValue | null>;
  /** Every key starting with `prefix`, sorted by key, in one consistent read. */
  range(prefix: string): Promise<RangeResult>;
  /** Several prefixes read at one revision (one consistent snapshot). */
  rangeMany(prefixes: string[]): Promise<RangeResult>;
  /** Apply `ops` atomically if every compare holds; otherwise apply `failure` ops (default none). */
  txn(compares: Compare[], ops: Op[], failure?: Op[], options?: TxnOptions): Promise<TxnResult>;
  /** Convenience: unconditional put. */
  put(key: string, value: string, lease?: string): Promise<number>;
  /** Convenience: unconditional delete. Returns true if the key existed. */
  delete(key: string): Promise<boolean>;
  /** Create a lease that expires `ttlSeconds` after its last keepalive; keys attached to it are deleted then. */
  grantLease(ttlSeconds: number): Promise<string>;
  /** Refresh a lease. Resolves false if it already expired (its keys are gone). */
  keepAlive(lease: string): Promise<boolean>;
  /** End a lease now, deleting its keys. */
  revokeLease(lease: string): Promise<void>;
  /**
   * Call `onEvents` with every change to keys under `prefix` after revision `fromRevision` (exclusive),
   * in revision order. Events of one transaction arrive in one call. A watch outlives connection
   * losses (it resumes where it was); if it cannot go on exactly (etcd compacted the history it must
   * resume from) it closes and calls `onError`, or, without one, raises the StoreError as uncaught,
   * since silently missing changes would be worse. The SQLite backend never calls `onError`.
   */
  watch(
    prefix: string,
    fromRevision: number,
    onEvents: (events: WatchEvent[]) => void,
    onError?: (err: StoreError) => void,
  ): Watch;
  /** Release connections and timers. */
  close(): Promise<void>;
}

/** Thrown when a store backend cannot be reached or answers with an error. */
export class StoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreError';
  }
}
