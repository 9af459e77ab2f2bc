// Evacuate and restore requests of this member: validation and refusals before anything changes,
// the per-member lock, the durable request (so a restarted daemon resumes by itself), and the
// operation that shows the run. Deciding is the planner's job, doing is the executor's.

import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { EvacuationRunner, Member } from '../daemon/context.js';
import { keys, type EvacuationRecord, type MemberRecord, type OperationRecord } from '../store/schema.js';
import { errors } from '../errors/index.js';
import { configValue } from '../config/keys.js';
import { OperationCancelled, type RunContext } from '../operations/operations.js';
import { isEvacuateMode, planEvacuation, planHasWork, planRestore, type EvacuationPlan } from './planner.js';
import { executeEvacuation, instanceKey } from './executor.js';
import { executeRestore } from './restore.js';
import { ProgressTracker, type EvacuationProgressView } from './progress.js';
import { readPlanningSnapshot } from './snapshot.js';
import { readSnapshot } from '../cluster/snapshot.js';
import { LeaseLock } from '../cluster/lock.js';

const requestSchema = z.object({
  action: z.enum(['evacuate', 'restore']),
  mode: z.string().optional(),
  dry_run: z.boolean().optional(),
  parallel: z.number().int().min(1).max(64).optional(),
}).passthrough();

/** The plan as `dry_run` returns it. */
export function planToApi(plan: EvacuationPlan): Record<string, unknown> {
  return {
    member: plan.member,
    mode: plan.mode,
    instances: plan.instances.map((p) => ({ name: p.name, project: p.project, action: p.action, target: p.target, reason: p.reason, bytes: p.bytes })),
    refusals: plan.refusals,
  };
}

/** One message line per refused instance. */
export function refusalMessage(member: string, plan: EvacuationPlan): string {
  const lines = plan.refusals.map((r) => `Instance "${r.name}" in project "${r.project}": ${r.reason}`);
  return [`Cannot evacuate cluster member "${member}" (nothing was changed):`, ...lines].join('\n');
}

/** Evacuations and restores of the member this daemon runs. */
export class EvacuationService implements EvacuationRunner {
  private tracker: ProgressTracker | null = null;
  private persistTimer: NodeJS.Timeout | null = null;
  private readonly runLock: LeaseLock;
  private readonly placementLock: LeaseLock;

  constructor(private readonly m: Member) {
    this.runLock = new LeaseLock(m.store, keys.lock(`evacuation/${m.name}`), m.name);
    this.placementLock = new LeaseLock(m.store, keys.lock('placement'), m.name);
  }

  /** Handle `POST /1.0/cluster/members/<this member>/state`. */
  async request(body: unknown): Promise<{ sync: unknown } | { operation: OperationRecord }> {
    const parsed = requestSchema.safeParse(body ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw errors.badRequest(`Invalid request${issue && issue.path.length > 0 ? ` (field "${issue.path.join('.')}")` : ''}: ${issue?.message ?? 'malformed'}`);
    }
    const req = parsed.data;
    const mode = req.mode ?? '';
    if (req.action === 'evacuate' ? mode !== '' && !isEvacuateMode(mode) : mode !== '' && mode !== 'skip') {
      throw errors.badRequest(`Invalid mode "${mode}"`);
    }
    const config = await this.m.cluster.serverConfig();
    const parallel = req.parallel ?? Number(configValue('server', config, 'cluster.evacuation_parallelism'));
    return req.action === 'evacuate' ? this.evacuate(mode, req.dry_run === true, parallel) : this.restore(mode, req.dry_run === true, parallel);
  }

  private async evacuate(mode: string, dryRun: boolean, parallel: number): Promise<{ sync: unknown } | { operation: OperationRecord }> {
    const m = this.m;
    if (dryRun) return { sync: planToApi(planEvacuation(await readPlanningSnapshot(m), m.name, { mode })) };
    const view = await m.cluster.member(m.name);
    if (view.status === 'Restoring' || this.tracker) throw this.busy();
    if (!(await this.runLock.acquire())) throw this.busy();
    try {
      if (!(await this.placementLock.acquire(15_000))) throw errors.unavailable('Another evacuation is planning; try again');
      try {
        const plan = planEvacuation(await readPlanningSnapshot(m), m.name, { mode });
        if (plan.refusals.length > 0) throw errors.badRequest(refusalMessage(m.name, plan));
        const current = await m.cluster.member(m.name);
        if (current.status === 'Evacuated' && !planHasWork(plan)) throw errors.badRequest('Cluster member is already evacuated');
        const record = this.newRecord('evacuate', mode, parallel, plan);
        await this.begin(record, ['Online', 'Evacuated', 'Evacuating'], 'Evacuating');
        return { operation: await this.run(record, plan) };
      } finally {
        await this.placementLock.release();
      }
    } catch (err) {
      await this.runLock.release();
      throw err;
    }
  }

  private async restore(mode: string, dryRun: boolean, parallel: number): Promise<{ sync: unknown } | { operation: OperationRecord }> {
    const m = this.m;
    const view = await m.cluster.member(m.name);
    if (dryRun) {
      const plan = planRestore(await readSnapshot(m), m.name);
      return { sync: { member: m.name, mode, start: plan.start, moves: plan.moves.map((x) => ({ name: x.name, project: x.project, from: x.from, bytes: x.bytes })) } };
    }
    if (this.tracker) throw this.busy();
    if (view.status === 'Online') throw errors.badRequest('Cluster member is already restored');
    if (!(await this.runLock.acquire())) throw this.busy();
    try {
      const record = this.newRecord('restore', mode, parallel, null);
      await this.begin(record, ['Evacuated', 'Evacuating', 'Restoring'], 'Restoring');
      return { operation: await this.run(record, null) };
    } catch (err) {
      await this.runLock.release();
      throw err;
    }
  }

  private busy(): Error {
    return errors.conflict(`An evacuation or restore of "${this.m.name}" is already running`);
  }

  private newRecord(action: 'evacuate' | 'restore', mode: string, parallel: number, plan: EvacuationPlan | null): EvacuationRecord {
    return {
      id: randomUUID(),
      member: this.m.name,
      action,
      mode,
      parallel,
      operation: randomUUID(),
      status: 'running',
      startedAt: new Date().toISOString(),
      finishedAt: null,
      owner: this.m.name,
      progress: null,
      reservations: (plan?.instances ?? [])
        .filter((p) => p.target && (p.action === 'migrate' || p.action === 'live-migrate'))
        .map((p) => ({ project: p.project, name: p.name, target: p.target as string })),
    };
  }

  /** In one transaction: the member's new state (only from `from`) and the durable request. */
  private async begin(record: EvacuationRecord, from: MemberRecord['state'][], to: MemberRecord['state']): Promise<void> {
    const { store } = this.m;
    for (;;) {
      const kv = await store.get(keys.member(this.m.name));
      if (!kv) throw errors.memberNotFound(this.m.name);
      const member = JSON.parse(kv.value) as MemberRecord;
      if (!from.includes(member.state)) throw this.busy();
      member.state = to;
      const r = await store.txn([{ key: kv.key, modRevision: kv.modRevision }], [
        { type: 'put', key: kv.key, value: JSON.stringify(member) },
        { type: 'put', key: keys.evacuation(this.m.name), value: JSON.stringify(record) },
      ]);
      if (r.succeeded) return;
    }
  }

  /** Start the operation that runs `record` (planning afresh when no plan is given, as on resume). */
  private async run(record: EvacuationRecord, plan: EvacuationPlan | null): Promise<OperationRecord> {
    const m = this.m;
    let ctxRef: RunContext | null = null;
    const tracker = new ProgressTracker(record.action, m.name, (view, text) => {
      ctxRef?.update({ evacuation_progress: text, roost_evacuation: view });
      record.progress = view;
      this.schedulePersist(record);
    });
    this.tracker = tracker;
    const description = record.action === 'evacuate' ? 'Evacuating cluster member' : 'Restoring cluster member';
    return m.operations.begin({
      id: record.operation,
      description,
      resources: { cluster: [`/1.0/cluster/members/${m.name}`] },
      mayCancel: true,
      metadata: { evacuation_progress: '', roost_evacuation: tracker.view() },
      run: async (ctx) => {
        ctxRef = ctx;
        ctx.update({ evacuation_progress: '', roost_evacuation: tracker.view() });
        let outcome: EvacuationRecord['status'] = 'done';
        try {
          if (record.action === 'evacuate') {
            const p = plan ?? planEvacuation(await readPlanningSnapshot(m), m.name, { mode: record.mode });
            if (!plan) {
              record.reservations = p.instances
                .filter((x) => x.target && (x.action === 'migrate' || x.action === 'live-migrate'))
                .map((x) => ({ project: x.project, name: x.name, target: x.target as string }));
            }
            const options = { evacuationId: record.id, mode: record.mode, parallel: record.parallel, signal: ctx.signal, progress: tracker };
            await executeEvacuation(m, p, options);
            // A move of another evacuation may have committed here after `plan` was read and before
            // this member stopped taking instances; once Evacuating nothing more can land, so one
            // look from a fresh snapshot finds every such instance, and it moves on too.
            if (plan && !ctx.signal.aborted) {
              const planned = new Set(p.instances.map((x) => instanceKey(x.project, x.name)));
              const again = planEvacuation(await readPlanningSnapshot(m), m.name, { mode: record.mode });
              const late = again.instances.filter((x) => !planned.has(instanceKey(x.project, x.name)) && x.action !== 'none');
              if (late.length > 0) {
                m.log.info({ instances: late.map((x) => x.name) }, 'instances arrived while the evacuation was planned; moving them too');
                // The move that brought them may still be finishing (its journal entry blocks a new move).
                for (const deadline = Date.now() + 30_000; Date.now() < deadline && !ctx.signal.aborted; ) {
                  const journaled = await Promise.all(late.map((x) => m.store.get(keys.move(x.project, x.name))));
                  if (journaled.every((kv) => kv === null)) break;
                  await new Promise((resolve) => setTimeout(resolve, 100));
                }
                await executeEvacuation(m, { ...again, instances: late }, options);
              }
            }
          } else if (record.mode !== 'skip') {
            const p = planRestore(await readSnapshot(m), m.name);
            await executeRestore(m, p, { evacuationId: record.id, parallel: record.parallel, signal: ctx.signal, progress: tracker });
          }
          const failures = tracker.failures();
          outcome = ctx.signal.aborted ? 'cancelled' : failures.length > 0 ? 'failed' : 'done';
          if (record.action === 'evacuate') {
            await m.cluster.transition(m.name, ['Evacuating'], 'Evacuated');
            if (outcome === 'done') m.events.lifecycle('cluster-member-evacuated', `/1.0/cluster/members/${m.name}`);
          } else {
            const ok = outcome === 'done';
            await m.cluster.transition(m.name, ['Restoring'], ok ? 'Online' : 'Evacuated');
            if (ok) m.events.lifecycle('cluster-member-restored', `/1.0/cluster/members/${m.name}`);
          }
          if (outcome === 'cancelled') throw new OperationCancelled();
          if (outcome === 'failed') {
            const verb = record.action === 'evacuate' ? 'evacuate' : 'restore';
            const lines = failures.map((f) => `Instance "${f.key.split('/')[1] ?? f.key}" in project "${f.key.split('/')[0] ?? ''}": ${f.error}`);
            throw new Error([`Failed to ${verb} ${failures.length} instance${failures.length === 1 ? '' : 's'} of "${m.name}":`, ...lines].join('\n'));
          }
        } catch (err) {
          if (outcome === 'done') outcome = err instanceof OperationCancelled ? 'cancelled' : 'failed';
          if (record.action === 'evacuate') await m.cluster.transition(m.name, ['Evacuating'], 'Evacuated').catch(() => undefined);
          else await m.cluster.transition(m.name, ['Restoring'], 'Evacuated').catch(() => undefined);
          throw err;
        } finally {
          tracker.finish(outcome);
          record.status = outcome;
          record.finishedAt = new Date().toISOString();
          record.reservations = [];
          await this.persist(record).catch((e: unknown) => m.log.error({ err: e }, 'could not store the end of an evacuation'));
          this.tracker = null;
          await this.runLock.release();
        }
      },
    });
  }

  private schedulePersist(record: EvacuationRecord): void {
    if (this.persistTimer) return;
    this.persistTimer = setTimeout(() => {
      this.persistTimer = null;
      void this.persist(record).catch(() => undefined);
    }, 1000);
    this.persistTimer.unref();
  }

  private async persist(record: EvacuationRecord): Promise<void> {
    if (record.status !== 'running' && this.persistTimer) {
      clearTimeout(this.persistTimer);
      this.persistTimer = null;
    }
    await this.m.store.put(keys.evacuation(this.m.name), JSON.stringify(record));
  }

  /** The `roost_evacuation` object of the running or last run, or null if there never was one. */
  async progress(): Promise<EvacuationProgressView | null> {
    if (this.tracker) return this.tracker.view();
    const kv = await this.m.store.get(keys.evacuation(this.m.name));
    if (!kv) return null;
    return (JSON.parse(kv.value) as EvacuationRecord).progress as EvacuationProgressView | null;
  }

  /**
   * At daemon start: resume a run this member left unfinished (same operation id), once the lock of
   * the dead run has expired. Returns the resumed operation id, if any.
   */
  async resume(): Promise<string | null> {
    const m = this.m;
    const kv = await m.store.get(keys.evacuation(m.name));
    if (!kv) return null;
    const record = JSON.parse(kv.value) as EvacuationRecord;
    if (record.status !== 'running') return null;
    const view = await m.cluster.member(m.name);
    const expected = record.action === 'evacuate' ? 'Evacuating' : 'Restoring';
    if (view.record.state !== expected) {
      record.status = 'failed';
      record.finishedAt = new Date().toISOString();
      await this.persist(record);
      return null;
    }
    if (!(await this.runLock.acquire(60_000))) {
      m.log.warn('could not take the evacuation lock to resume; another process holds it');
      return null;
    }
    m.log.info({ action: record.action, operation: record.operation }, 'resuming an unfinished run');
    await this.run(record, null);
    return record.operation;
  }

  /** Stop timers and release locks (daemon shutdown). */
  async stop(): Promise<void> {
    if (this.persistTimer) clearTimeout(this.persistTimer);
    this.runLock.stopKeepAlive();
    this.placementLock.stopKeepAlive();
  }
}
