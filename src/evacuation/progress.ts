// Progress of one evacuation or restore: the structured `roost_evacuation` object and LXD's
// `evacuation_progress` text, pushed to the operation as they change. Pure bookkeeping, no I/O.

import type { EvacuationProgress } from '../store/schema.js';

/** States an instance goes through in a run; `done` and `failed` are final. */
export type InstanceRunState = 'pending' | 'stopping' | 'waiting' | 'copying' | 'starting' | 'done' | 'failed';

/** One instance's line in the progress object. */
export interface InstanceProgress {
  action: string;
  target: string | null;
  state: InstanceRunState;
  error?: string;
  bytes: number;
  bytesDone: number;
}

/** The `roost_evacuation` object as the API shows it. */
export interface EvacuationProgressView extends EvacuationProgress {
  action: 'evacuate' | 'restore';
  member: string;
  status: 'running' | 'done' | 'failed' | 'cancelled';
  startedAt: string;
  etaSeconds: number | null;
}

/** Tracks a run and tells its listener whenever something a user would see changes. */
export class ProgressTracker {
  private readonly items = new Map<string, InstanceProgress>();
  private readonly started = Date.now();
  private status: EvacuationProgressView['status'] = 'running';
  /** LXD's one-line progress text of the latest step. */
  text = '';

  constructor(
    readonly action: 'evacuate' | 'restore',
    readonly member: string,
    private readonly onChange: (view: EvacuationProgressView, text: string) => void,
  ) {}

  /** Register an instance of the run. */
  add(key: string, action: string, target: string | null, bytes: number, state: InstanceRunState = 'pending'): void {
    this.items.set(key, { action, target, state, bytes, bytesDone: state === 'done' ? bytes : 0 });
    this.emit();
  }

  /** Move an instance to a new state, with LXD's text for the step if any. */
  set(key: string, state: InstanceRunState, text?: string, error?: string): void {
    const item = this.items.get(key);
    if (!item) return;
    item.state = state;
    if (error !== undefined) item.error = error;
    if (state === 'done') item.bytesDone = item.bytes;
    if (text) this.text = text;
    this.emit();
  }

  /** Change where an instance goes (after it was placed again). */
  retarget(key: string, target: string): void {
    const item = this.items.get(key);
    if (item) item.target = target;
  }

  /** Record copy progress of an instance. */
  bytes(key: string, done: number, total: number): void {
    const item = this.items.get(key);
    if (!item) return;
    item.bytes = Math.max(item.bytes, total);
    item.bytesDone = Math.min(done, item.bytes);
    this.emit();
  }

  /** Mark the run finished. */
  finish(status: EvacuationProgressView['status']): void {
    this.status = status;
    this.emit();
  }

  /** Instances that failed, with their errors. */
  failures(): { key: string; error: string }[] {
    return [...this.items].filter(([, i]) => i.state === 'failed').map(([key, i]) => ({ key, error: i.error ?? 'failed' }));
  }

  /** The current view. */
  view(): EvacuationProgressView {
    let done = 0;
    let failed = 0;
    let bytesTotal = 0;
    let bytesDone = 0;
    const instances: EvacuationProgress['instances'] = {};
    for (const [key, i] of this.items) {
      if (i.state === 'done') done++;
      if (i.state === 'failed') failed++;
      bytesTotal += i.bytes;
      bytesDone += i.bytesDone;
      instances[key] = { action: i.action, target: i.target, state: i.state, ...(i.error ? { error: i.error } : {}) };
    }
    const elapsed = Math.max(0.001, (Date.now() - this.started) / 1000);
    const rate = Math.round(bytesDone / elapsed);
    const remaining = bytesTotal - bytesDone;
    return {
      action: this.action,
      member: this.member,
      status: this.status,
      startedAt: new Date(this.started).toISOString(),
      total: this.items.size,
      done,
      failed,
      bytesTotal,
      bytesDone,
      rate,
      etaSeconds: this.status !== 'running' ? 0 : rate > 0 ? Math.round(remaining / rate) : null,
      instances,
    };
  }

  private emit(): void {
    this.onChange(this.view(), this.text);
  }
}
