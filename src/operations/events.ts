// The cluster-wide event stream: every member publishes its events into the store, every member
// watches them and hands them to its local subscribers (the /1.0/events websockets). Members on
// several hosts thus see each other's events with no mesh of connections.

import type { Store, Watch } from '../store/store.js';
import { keys, type EventRecord } from '../store/schema.js';
import { applyInChunks, deleteKeys } from '../store/batch.js';

/** A local subscriber. */
export type EventListener = (event: EventRecord) => void;

/** How long published events stay in the store (long enough for a slow watcher to catch up). */
const retentionMs = 60_000;

/** Publishes and delivers events. */
export class EventBus {
  private readonly listeners = new Set<EventListener>();
  private pending: EventRecord[] = [];
  private flushing: Promise<void> | null = null;
  private watch: Watch | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private seq = 0;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly member: string,
  ) {}

  /** Begin delivering events published from now on by any member. */
  async start(): Promise<void> {
    await this.follow();
    this.sweepTimer = setInterval(() => void this.sweep().catch(() => undefined), 10_000);
    this.sweepTimer.unref();
  }

  /**
   * Watch the events from now on. If the store lost the history the watch had to resume from (etcd compacted
   * it while this member could not reach it), events of that gap are gone for good: follow again from now.
   */
  private async follow(): Promise<void> {
    const { revision } = await this.store.range(keys.events());
    this.watch = this.store.watch(
      keys.events(),
      revision,
      (events) => {
        for (const e of events) {
          if (e.type !== 'put') continue;
          let record: EventRecord;
          try {
            record = JSON.parse(e.kv.value) as EventRecord;
          } catch {
            continue;
          }
          for (const l of this.listeners) l(record);
        }
      },
      () => {
        if (this.stopped) return;
        void this.follow().catch(() => setTimeout(() => void this.follow().catch(() => undefined), 1000).unref());
      },
    );
  }

  /** Publish an event to every member's subscribers. Batched: one store write per burst. */
  publish(type: EventRecord['type'], metadata: unknown, project = 'default', location = this.member): void {
    this.pending.push({ type, timestamp: new Date().toISOString(), metadata, location, project });
    if (!this.flushing) this.flushing = new Promise((resolve) => setImmediate(resolve)).then(() => this.flush());
  }

  /** Publish a lifecycle event as LXD shapes it. */
  lifecycle(action: string, source: string, context: Record<string, unknown> = {}, project = 'default', location = this.member): void {
    this.publish('lifecycle', { action, source, context, requestor: null }, project, location);
  }

  /** Wait until everything published so far is in the store. */
  async drain(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  /** Subscribe; returns the unsubscribe function. */
  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stop watching and sweeping. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.drain();
    this.watch?.close();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
  }

  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    try {
      if (batch.length > 0) {
        const now = Date.now();
        await applyInChunks(
          this.store,
          batch.map((e) => ({
            type: 'put' as const,
            key: keys.event(`${String(now).padStart(15, '0')}-${this.member}-${String(this.seq++).padStart(9, '0')}`),
            value: JSON.stringify(e),
          })),
          // Notifications, not state: one lost to a power cut costs nothing, so they need not wait for the disk.
          { durability: 'relaxed' },
        );
      }
    } catch {
      // Events are best effort: a store hiccup must not fail the action that emitted them.
    } finally {
      this.flushing = this.pending.length > 0 ? this.flush() : null;
    }
  }

  /** Delete this member's events older than the retention time. */
  private async sweep(): Promise<void> {
    const cutoff = String(Date.now() - retentionMs).padStart(15, '0');
    const { kvs } = await this.store.range(keys.events());
    const old = kvs.filter((kv) => {
      const id = kv.key.slice(keys.events().length);
      return id < cutoff && id.includes(`-${this.member}-`);
    });
    await deleteKeys(this.store, old.map((kv) => kv.key));
  }
}
