// One evacuation or restore as the drainer carries it out during one leader term: plan from a fresh
// snapshot, execute, keep the progress in the request record and the operation (throttled), and end it:
// the member's new state, the record's outcome, the operation's status. A term that ends mid-run leaves
// the record `running`: the next leader takes it over under the same operation id, and instances an earlier
// term already finished stay finished.

import { performance } from 'node:perf_hooks';
import type { EvacuationRecord, OperationRecord } from '../store/schema.js';
import type { Term } from '../cluster/leader.js';
import { planEvacuation, planRestore, type EvacuationPlan } from './planner.js';
import { ProgressTracker } from './progress.js';
import { errorText, executeEvacuation, executeRestore, instanceKey, type ExecuteOptions } from './executor.js';
import type { ClusterPorts, RequestBook, StoredRequest } from './ports.js';
import { writeFenced } from './fenced.js';
import type { RunStatus } from '../wire/evacuation.js';

/** Settings of every run. */
export interface RunOptions {
  /** How often progress reaches the record and the operation (ms). */
  progressIntervalMs: number;
  /** How long a holder may stay unreachable before its instance's move fails (ms). */
  unreachableMs: number;
  /** Runs plan one at a time, so two runs never place onto the same room. */
  planning: <T>(fn: () => Promise<T>) => Promise<T>;
}

const round = (ms: number): number => Math.round(ms * 10) / 10;

/** The full progress is rewritten this often at most while only bytes change. */
const fullProgressEveryMs = 5000;

/** A run of one request during one term. */
export class Run {
  readonly id: string;
  readonly member: string;
  private record: EvacuationRecord;
  private modRevision: number;
  private op: OperationRecord | null = null;
  private readonly cancel = new AbortController();
  private readonly signal: AbortSignal;
  private readonly tracker: ProgressTracker;
  private persisted = -1;
  private persistedState = -1;
  private fullAt = 0;
  private writing: Promise<void> = Promise.resolve();
  private termLost = false;
  /** Resolves when the run has stopped (finished, or given up because its term ended). */
  readonly done: Promise<void>;

  constructor(
    private readonly ports: ClusterPorts,
    private readonly book: RequestBook,
    stored: StoredRequest,
    private readonly term: Term,
    private readonly options: RunOptions,
  ) {
    this.record = { ...stored.record };
    this.modRevision = stored.modRevision;
    this.id = stored.record.id;
    this.member = stored.record.member;
    this.signal = AbortSignal.any([term.signal, this.cancel.signal]);
    this.tracker = new ProgressTracker(this.record.action, this.member, this.record.startedAt);
    this.tracker.seed(this.record.progress);
    this.done = this.execute().catch((err: unknown) => {
      this.ports.log.error({ err, run: this.id, member: this.member }, 'drainer run failed unexpectedly');
    });
  }

  /** A user asked to cancel (seen in the record): no new move starts; moves in flight finish or roll back. */
  requestCancel(): void {
    this.cancel.abort(new Error('cancelled'));
  }

  private async execute(): Promise<void> {
    const { ports } = this;
    this.op = await this.book.operation(this.record.operation);
    this.record.status = 'running';
    this.record.term = this.term.fence.createRevision;
    if (this.record.cancelRequested) this.cancel.abort(new Error('cancelled'));
    await this.persist(true);
    if (this.termLost) return;
    const timer = setInterval(() => void this.persist(false), this.options.progressIntervalMs);
    timer.unref();
    let outcome: RunStatus = 'done';
    let message = '';
    try {
      await this.countEarlierMoves();
      if (this.record.action === 'evacuate') await this.evacuate();
      else if (this.record.mode !== 'skip') await this.restore();
      if (this.term.signal.aborted) return; // the next leader carries on
      const failures = this.tracker.failures();
      outcome = this.cancel.signal.aborted ? 'cancelled' : failures.length > 0 ? 'failed' : 'done';
      if (outcome === 'failed') {
        const verb = this.record.action === 'evacuate' ? 'evacuate' : 'restore';
        const lines = failures.map((f) => `Instance "${f.key.split('/')[1] ?? f.key}" in project "${f.key.split('/')[0] ?? ''}": ${f.error}`);
        message = [`Failed to ${verb} ${failures.length} instance${failures.length === 1 ? '' : 's'} of "${this.member}":`, ...lines].join('\n');
      }
    } catch (err) {
      if (this.term.signal.aborted) return;
      outcome = this.cancel.signal.aborted ? 'cancelled' : 'failed';
      message = errorText(err);
      ports.log.warn({ err, run: this.id, member: this.member }, 'drainer run failed');
    } finally {
      clearInterval(timer);
    }
    await this.end(outcome, message);
  }

  /**
   * A run taken over from an earlier term: a move that term ordered may have committed after its last
   * progress write (the holder finishes a move it was given while the lease lasts). Such an instance is no
   * longer in any new plan, so it is counted done here from where it now is, not lost from the totals.
   */
  private async countEarlierMoves(): Promise<void> {
    const moving = new Map<string, { target: string | null; bytes: number }>();
    for (const [key, item] of Object.entries(this.record.progress?.instances ?? {})) {
      if (item.state !== 'done' && item.state !== 'failed' && (item.action === 'migrate' || item.action === 'live-migrate')) moving.set(key, { target: item.target, bytes: item.bytes });
    }
    for (const r of this.record.reservations) {
      const key = instanceKey(r.project, r.name);
      if (!moving.has(key)) moving.set(key, { target: r.target, bytes: 0 });
    }
    for (const [key, item] of moving) {
      const slash = key.indexOf('/');
      const location = await this.ports.location(key.slice(0, slash), key.slice(slash + 1)).catch(() => null);
      if (location === null) continue;
      const arrived = this.record.action === 'evacuate' ? location !== this.member : location === this.member;
      if (arrived) this.tracker.add(key, 'migrate', this.record.action === 'evacuate' ? location : item.target, item.bytes, 'done');
    }
  }

  private async evacuate(): Promise<void> {
    const { ports } = this;
    const plan = await this.plan();
    await executeEvacuation(ports, plan.plan, this.executeOptions(plan.types));
    // A move of another run may have committed here after the plan was read and before this member stopped
    // taking instances; once Evacuating nothing more lands, so one look from a fresh snapshot finds them all.
    if (this.signal.aborted) return;
    const planned = new Set(plan.plan.instances.map((x) => instanceKey(x.project, x.name)));
    const again = await this.plan(planned);
    const late = again.plan.instances.filter((x) => !planned.has(instanceKey(x.project, x.name)) && x.action !== 'none');
    if (late.length > 0) {
      ports.log.info({ instances: late.map((x) => x.name) }, 'instances arrived while the evacuation was planned; moving them too');
      await executeEvacuation(ports, { ...again.plan, instances: late }, this.executeOptions(again.types));
    }
  }

  private async restore(): Promise<void> {
    const snapshot = await this.ports.snapshot({ run: this.id, member: this.member });
    const plan = planRestore(snapshot, this.member);
    const types = new Map(snapshot.instances.map((i) => [instanceKey(i.project, i.name), i.type]));
    await executeRestore(this.ports, plan, this.executeOptions(types));
  }

  /**
   * Plan from a fresh snapshot, one run at a time, and record what the plan reserves on its targets. Refused
   * instances fail (the request was validated when made; a refusal now means the cluster changed since).
   */
  private async plan(skip: Set<string> = new Set()): Promise<{ plan: EvacuationPlan; types: Map<string, string> }> {
    return this.options.planning(async () => {
      const t0 = performance.now();
      const snapshot = await this.ports.snapshot({ run: this.id, member: this.member });
      const t1 = performance.now();
      const plan = planEvacuation(snapshot, this.member, { mode: this.record.mode });
      const t2 = performance.now();
      const types = new Map(snapshot.instances.map((i) => [instanceKey(i.project, i.name), i.type]));
      for (const r of plan.refusals) {
        const key = instanceKey(r.project, r.name);
        if (skip.has(key)) continue;
        this.tracker.add(key, 'migrate', null, 0);
        this.tracker.set(key, 'failed', undefined, r.reason);
      }
      this.record.reservations = plan.instances
        .filter((p) => p.target && (p.action === 'migrate' || p.action === 'live-migrate'))
        .map((p) => ({ project: p.project, name: p.name, target: p.target as string }));
      await this.persist(true);
      // What planning costs at the cluster's size (the scale benchmark reads it): the snapshot read, the pure planner, all of it.
      this.ports.log.info(
        { run: this.id, member: this.member, instances: plan.instances.length, snapshotMs: round(t1 - t0), planMs: round(t2 - t1), totalMs: round(performance.now() - t0) },
        'drainer: planned',
      );
      return { plan, types };
    });
  }

  private executeOptions(types: Map<string, string>): ExecuteOptions {
    return {
      runId: this.id,
      parallel: this.record.parallel,
      slotsChanged: (limit) => this.ports.log.info({ run: this.id, member: this.member, limit }, 'drainer: copy slots follow the throughput'),
      fence: this.term.fence,
      signal: this.signal,
      progress: this.tracker,
      types,
      unreachableMs: this.options.unreachableMs,
    };
  }

  /** The run's end: the member's new state, then the record and the operation. */
  private async end(outcome: RunStatus, message: string): Promise<void> {
    const { ports } = this;
    const fence = this.term.fence;
    if (this.record.action === 'evacuate') {
      await ports.transition(this.member, ['Evacuating'], 'Evacuated', fence).catch(() => false);
      if (outcome === 'done') ports.lifecycle('cluster-member-evacuated', `/1.0/cluster/members/${this.member}`, this.member);
    } else {
      const ok = outcome === 'done';
      await ports.transition(this.member, ['Restoring'], ok ? 'Online' : 'Evacuated', fence).catch(() => false);
      if (ok) ports.lifecycle('cluster-member-restored', `/1.0/cluster/members/${this.member}`, this.member);
    }
    this.tracker.finish(outcome);
    ports.runFinished(this.record.action, outcome, (Date.now() - Date.parse(this.record.startedAt)) / 1000);
    this.record.status = outcome;
    this.record.finishedAt = new Date().toISOString();
    this.record.reservations = [];
    this.record.error = message;
    if (this.op) {
      this.op.status = outcome === 'done' ? 'Success' : outcome === 'cancelled' ? 'Cancelled' : 'Failure';
      this.op.err = outcome === 'failed' ? message : '';
    }
    await this.persist(true);
  }

  /**
   * Write progress to the record (the full view when states changed, or every few seconds) and the operation
   * (a small delta), in one fenced transaction, then publish the operation. Writes never overlap.
   */
  private persist(force: boolean): Promise<void> {
    const next = this.writing.then(() => this.persistNow(force)).catch((err: unknown) => {
      this.ports.log.warn({ err, run: this.id }, 'could not store evacuation progress; retrying with the next update');
    });
    this.writing = next;
    return next;
  }

  private async persistNow(force: boolean): Promise<void> {
    if (this.termLost) return;
    const t = this.tracker;
    if (!force && t.version === this.persisted) return;
    const now = Date.now();
    if (force || t.stateVersion !== this.persistedState || now - this.fullAt >= fullProgressEveryMs) {
      this.record.progress = t.full();
      this.fullAt = now;
      this.persistedState = t.stateVersion;
    }
    this.persisted = t.version;
    if (this.op) {
      this.op.metadata = { ...(this.op.metadata ?? {}), evacuation_progress: t.text, roost_evacuation: t.delta() };
      this.op.updatedAt = new Date().toISOString();
    }
    const outcome = await writeFenced(
      { book: this.book, key: this.member, record: this.record, op: this.op, fence: this.term.fence, modRevision: this.modRevision, isOurs: (r) => r.id === this.id },
      () => this.requestCancel(),
    );
    if (outcome.kind === 'replaced') {
      this.ports.log.warn({ run: this.id }, 'the request record was replaced; this run stops');
      this.termLost = true;
      this.cancel.abort(new Error('superseded'));
    } else if (outcome.kind === 'term-lost') {
      this.termLost = true;
    } else {
      this.modRevision = outcome.modRevision;
    }
  }
}
