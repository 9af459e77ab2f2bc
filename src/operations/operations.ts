// LXD-style operations: every long action runs as one, with a status, metadata (progress), cancel
// and wait. The running member holds the live state; a copy in the store lets any member list,
// show and wait on it, and every change is published as an `operation` event.

import { randomUUID } from 'node:crypto';
import type { Store } from '../store/store.js';
import { keys, type OperationRecord, type OperationStatus } from '../store/schema.js';
import { deleteKeys } from '../store/batch.js';
import type { EventBus } from './events.js';
import type { Logger } from '../util/log.js';

/** What a running operation's body can do. */
export interface RunContext {
  id: string;
  /** Aborted when a user cancels the operation. */
  signal: AbortSignal;
  /** Merge keys into the operation's metadata (published at most every `publishIntervalMs`). */
  update(metadata: Record<string, unknown>): void;
}

/** Describes an operation to start. */
export interface OperationSpec {
  description: string;
  class?: OperationRecord['class'];
  resources?: Record<string, string[]>;
  mayCancel?: boolean;
  metadata?: Record<string, unknown>;
  project?: string;
  /** Reuse this id (resuming an operation after a daemon restart). */
  id?: string;
  /** The work. Its result is merged into the metadata on success; a throw fails the operation. */
  run(ctx: RunContext): Promise<Record<string, unknown> | void>;
}

/** Numeric codes LXD gives each status. */
export const statusCodes: Record<OperationStatus, number> = {
  Pending: 105,
  Running: 103,
  Cancelling: 104,
  Success: 200,
  Failure: 400,
  Cancelled: 401,
};

/** True once an operation can no longer change. */
export function isFinal(status: OperationStatus): boolean {
  return status === 'Success' || status === 'Failure' || status === 'Cancelled';
}

/** An operation as the API returns it. */
export function operationToApi(op: OperationRecord): Record<string, unknown> {
  return {
    id: op.id,
    class: op.class,
    description: op.description,
    created_at: op.createdAt,
    updated_at: op.updatedAt,
    status: op.status,
    status_code: statusCodes[op.status],
    resources: op.resources,
    metadata: op.metadata,
    may_cancel: op.mayCancel,
    err: op.err,
    location: op.location,
  };
}

/** Thrown by an operation body to end in `Cancelled` rather than `Failure`. */
export class OperationCancelled extends Error {
  constructor() {
    super('Operation cancelled');
    this.name = 'OperationCancelled';
  }
}

interface Live {
  record: OperationRecord;
  project: string;
  abort: AbortController;
  dirty: boolean;
  timer: NodeJS.Timeout | null;
  done: Promise<void>;
}

/** How a kind of store-driven operation is cancelled (by any member). */
export interface OperationKindHandler {
  /** Ask for the operation to end; false if it cannot be cancelled (any more). */
  cancel(op: OperationRecord): Promise<boolean>;
  /** Periodic look at a running operation of this kind (e.g. a token that expired ends). */
  sweep?(op: OperationRecord): Promise<void>;
}

/** How often metadata changes reach the store and the event stream. */
const publishIntervalMs = 200;
/** How long finished operations stay listed. */
const keepFinishedMs = 5 * 60_000;

/** The operations of one member. */
export class Operations {
  private readonly live = new Map<string, Live>();
  private readonly kinds = new Map<NonNullable<OperationRecord['kind']>, OperationKindHandler>();
  private sweepTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: Store,
    private readonly events: EventBus,
    private readonly member: string,
    private readonly log: Logger,
  ) {}

  /** Begin sweeping finished operations. */
  start(): void {
    this.sweepTimer = setInterval(() => void this.sweep().catch(() => undefined), 30_000);
    this.sweepTimer.unref();
  }

  /** Stop timers (running operations are left to the daemon's shutdown). */
  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
  }

  /** Create an operation, store it, and run its body in the background. */
  async begin(spec: OperationSpec): Promise<OperationRecord> {
    const now = new Date().toISOString();
    const record: OperationRecord = {
      id: spec.id ?? randomUUID(),
      class: spec.class ?? 'task',
      description: spec.description,
      createdAt: now,
      updatedAt: now,
      status: 'Running',
      resources: spec.resources ?? null,
      metadata: spec.metadata ?? null,
      mayCancel: spec.mayCancel ?? false,
      err: '',
      location: this.member,
    };
    const abort = new AbortController();
    const live: Live = { record, project: spec.project ?? 'default', abort, dirty: false, timer: null, done: Promise.resolve() };
    this.live.set(record.id, live);
    await this.persist(live);
    const ctx: RunContext = {
      id: record.id,
      signal: abort.signal,
      update: (metadata) => {
        live.record.metadata = { ...(live.record.metadata ?? {}), ...metadata };
        this.schedule(live);
      },
    };
    live.done = (async () => {
      try {
        const result = await spec.run(ctx);
        if (result) live.record.metadata = { ...(live.record.metadata ?? {}), ...result };
        live.record.status = 'Success';
      } catch (err) {
        const cancelled = err instanceof OperationCancelled || (abort.signal.aborted && isAbortError(err));
        live.record.status = cancelled ? 'Cancelled' : 'Failure';
        live.record.err = cancelled ? '' : err instanceof Error ? err.message : String(err);
        if (!cancelled) this.log.warn({ op: record.id, description: record.description, err: live.record.err }, 'operation failed');
      }
      if (live.timer) clearTimeout(live.timer);
      live.timer = null;
      await this.persist(live).catch((e: unknown) => this.log.error({ err: e }, 'could not store the end of an operation'));
      this.live.delete(record.id);
    })();
    return { ...record };
  }

  /** An operation by id: the live one if this member runs it, else the store's copy. */
  async get(id: string): Promise<OperationRecord | null> {
    const live = this.live.get(id);
    if (live) return { ...live.record };
    const kv = await this.store.get(keys.operation(id));
    return kv ? (JSON.parse(kv.value) as OperationRecord) : null;
  }

  /** Every operation of the cluster (store copies, refreshed by live ones of this member). */
  async list(): Promise<OperationRecord[]> {
    const { kvs } = await this.store.range(keys.operations());
    return kvs.map((kv) => {
      const stored = JSON.parse(kv.value) as OperationRecord;
      return this.live.get(stored.id)?.record ?? stored;
    });
  }

  /** Register how operations of a store-driven kind are cancelled. */
  handle(kind: NonNullable<OperationRecord['kind']>, handler: OperationKindHandler): void {
    this.kinds.set(kind, handler);
  }

  /**
   * Cancel an operation: one this member runs, or a store-driven one (any member can). Returns `unknown` if
   * it is neither (the caller forwards the request to the member running it).
   */
  async cancel(id: string): Promise<'cancelled' | 'not-cancellable' | 'unknown'> {
    const live = this.live.get(id);
    if (!live) {
      const stored = await this.get(id);
      const handler = stored?.kind ? this.kinds.get(stored.kind) : undefined;
      if (!stored || !handler) return 'unknown';
      if (!stored.mayCancel) return 'not-cancellable';
      return (await handler.cancel(stored)) ? 'cancelled' : 'not-cancellable';
    }
    if (!live.record.mayCancel) return 'not-cancellable';
    if (live.record.status === 'Running') {
      live.record.status = 'Cancelling';
      this.schedule(live, true);
    }
    live.abort.abort();
    return 'cancelled';
  }

  /** Resolves when a live operation of this member ends (immediately if it is not live here). */
  async settled(id: string): Promise<void> {
    await this.live.get(id)?.done;
  }

  /** Wait until the operation ends or `timeoutMs` passes; returns its latest record. */
  async wait(id: string, timeoutMs: number, signal?: AbortSignal): Promise<OperationRecord | null> {
    const first = await this.get(id);
    if (!first || isFinal(first.status)) return first;
    const kv = await this.store.get(keys.operation(id));
    const from = kv?.modRevision ?? (await this.store.range(keys.operation(id))).revision;
    return new Promise((resolve) => {
      let latest: OperationRecord = first;
      const finish = (): void => {
        watch.close();
        clearTimeout(timer);
        signal?.removeEventListener('abort', finish);
        resolve(this.live.get(id)?.record ?? latest);
      };
      // A watch the store cannot resume (history compacted) ends the wait with what is known; the client asks again.
      const watch = this.store.watch(keys.operation(id), from, (events) => {
        for (const e of events) {
          if (e.type === 'put') latest = JSON.parse(e.kv.value) as OperationRecord;
        }
        if (isFinal(latest.status)) finish();
      }, finish);
      const timer = setTimeout(finish, timeoutMs);
      signal?.addEventListener('abort', finish);
    });
  }

  /** Mark operations this member left running before a restart as failed (except the listed ones). */
  async failStale(except: Set<string>, reason: string): Promise<void> {
    const { kvs } = await this.store.range(keys.operations());
    for (const kv of kvs) {
      const op = JSON.parse(kv.value) as OperationRecord;
      if (op.kind || op.location !== this.member || isFinal(op.status) || except.has(op.id) || this.live.has(op.id)) continue;
      op.status = 'Failure';
      op.err = reason;
      op.updatedAt = new Date().toISOString();
      await this.store.txn([{ key: kv.key, modRevision: kv.modRevision }], [{ type: 'put', key: kv.key, value: JSON.stringify(op) }]);
      this.events.publish('operation', operationToApi(op));
    }
  }

  private schedule(live: Live, now = false): void {
    live.dirty = true;
    if (now) {
      if (live.timer) clearTimeout(live.timer);
      live.timer = null;
      void this.persist(live).catch(() => undefined);
      return;
    }
    if (live.timer) return;
    live.timer = setTimeout(() => {
      live.timer = null;
      if (live.dirty) void this.persist(live).catch(() => undefined);
    }, publishIntervalMs);
  }

  private async persist(live: Live): Promise<void> {
    live.dirty = false;
    live.record.updatedAt = new Date().toISOString();
    const snapshot = { ...live.record };
    // An operation's record tells what happened, not what may be destroyed: it need not wait for the disk.
    await this.store.txn([], [{ type: 'put', key: keys.operation(snapshot.id), value: JSON.stringify(snapshot) }], [], { durability: 'relaxed' });
    this.events.publish('operation', operationToApi(snapshot), live.project);
  }

  private async sweep(): Promise<void> {
    const { kvs } = await this.store.range(keys.operations());
    for (const kv of kvs) {
      const op = JSON.parse(kv.value) as OperationRecord;
      const handler = op.kind ? this.kinds.get(op.kind) : undefined;
      if (handler?.sweep && !isFinal(op.status)) await handler.sweep(op).catch(() => undefined);
    }
    const cutoff = Date.now() - keepFinishedMs;
    const old = kvs.filter((kv) => {
      const op = JSON.parse(kv.value) as OperationRecord;
      // Store-driven operations may outlive the member named as their location; any member sweeps them.
      return (op.location === this.member || op.kind !== undefined) && isFinal(op.status) && Date.parse(op.updatedAt) < cutoff;
    });
    await deleteKeys(this.store, old.map((kv) => kv.key));
  }
}

function isAbortError(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || err.message.includes('aborted'));
}
