// Progress of one evacuation or restore: per-instance states, bytes, rate and ETA, and LXD's one-line
// `evacuation_progress` text. Pure bookkeeping, no I/O: the drainer decides when to persist and publish it,
// taking the full view for the request record and small deltas for the operation's updates.

import type { EvacuationProgress, InstanceProgress, InstanceRunState, RunStatus } from '../wire/evacuation.js';

/** Tracks one run. */
export class ProgressTracker {
  private readonly items = new Map<string, InstanceProgress>();
  private readonly startedMs: number;
  private status: RunStatus = 'running';
  /** Instances whose state changed since the last delta. */
  private readonly changed = new Set<string>();
  /** LXD's one-line progress text of the latest step. */
  text = '';
  /** Bumped by every change; `stateVersion` only by changes other than bytes. */
  version = 0;
  stateVersion = 0;

  constructor(
    readonly action: 'evacuate' | 'restore',
    readonly member: string,
    startedAt: string = new Date().toISOString(),
  ) {
    this.startedMs = Date.parse(startedAt) || Date.now();
  }

  /**
   * Register an instance of the run. One already known from an earlier term of the run (`seed`) keeps its
   * final state, so a run taken over by another leader does not count an instance twice.
   */
  add(key: string, action: string, target: string | null, bytes: number, state: InstanceRunState = 'pending'): void {
    const known = this.items.get(key);
    if (known && (known.state === 'done' || known.state === 'failed') && state === 'pending') return;
    this.items.set(key, { action, target, state, bytes, bytesDone: state === 'done' ? bytes : 0 });
    this.touch(key);
  }

  /** Start from what an earlier term of the run recorded (instances already done stay done). */
  seed(view: EvacuationProgress | null): void {
    if (!view) return;
    for (const [key, item] of Object.entries(view.instances)) {
      if (item.state === 'done') this.items.set(key, { ...item });
    }
  }

  /** Move an instance to a new state, with LXD's text for the step if any. */
  set(key: string, state: InstanceRunState, text?: string, error?: string): void {
    const item = this.items.get(key);
    if (!item) return;
    item.state = state;
    if (error !== undefined) item.error = error;
    else if (state !== 'failed') delete item.error;
    if (state === 'done') item.bytesDone = item.bytes;
    if (text) this.text = text;
    this.touch(key);
  }

  /** Change where an instance goes (after it was placed again). */
  retarget(key: string, target: string): void {
    const item = this.items.get(key);
    if (!item) return;
    item.target = target;
    this.touch(key);
  }

  /** Record copy progress of an instance. */
  bytes(key: string, done: number, total: number): void {
    const item = this.items.get(key);
    if (!item) return;
    item.bytes = Math.max(item.bytes, total);
    item.bytesDone = Math.min(done, item.bytes);
    this.version++;
  }

  /** Mark the run finished. */
  finish(status: RunStatus): void {
    this.status = status;
    this.version++;
    this.stateVersion++;
  }

  /** Instances that failed, with their errors. */
  failures(): { key: string; error: string }[] {
    return [...this.items].filter(([, i]) => i.state === 'failed').map(([key, i]) => ({ key, error: i.error ?? 'failed' }));
  }

  /** The full view: every instance of the run. */
  full(): EvacuationProgress {
    return this.view(new Map(this.items), false);
  }

  /** A small view: the instances in flight or changed since the previous delta (a finished run lists all). */
  delta(): EvacuationProgress {
    if (this.status !== 'running') return this.full();
    const picked = new Map<string, InstanceProgress>();
    for (const [key, item] of this.items) {
      if (this.changed.has(key) || (item.state !== 'pending' && item.state !== 'done' && item.state !== 'failed')) picked.set(key, item);
    }
    this.changed.clear();
    return this.view(picked, true);
  }

  private view(instances: Map<string, InstanceProgress>, partial: boolean): EvacuationProgress {
    let done = 0;
    let failed = 0;
    let bytesTotal = 0;
    let bytesDone = 0;
    for (const i of this.items.values()) {
      if (i.state === 'done') done++;
      if (i.state === 'failed') failed++;
      bytesTotal += i.bytes;
      bytesDone += i.bytesDone;
    }
    const elapsed = Math.max(0.001, (Date.now() - this.startedMs) / 1000);
    const rate = Math.round(bytesDone / elapsed);
    const remaining = bytesTotal - bytesDone;
    const out: Record<string, InstanceProgress> = {};
    for (const [key, i] of instances) out[key] = { ...i };
    return {
      action: this.action,
      member: this.member,
      status: this.status,
      startedAt: new Date(this.startedMs).toISOString(),
      total: this.items.size,
      done,
      failed,
      bytesTotal,
      bytesDone,
      rate,
      etaSeconds: this.status !== 'running' ? 0 : rate > 0 ? Math.round(remaining / rate) : null,
      instances: out,
      partial,
    };
  }

  private touch(key: string): void {
    this.changed.add(key);
    this.version++;
    this.stateVersion++;
  }
}
