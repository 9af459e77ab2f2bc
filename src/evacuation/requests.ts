// `POST /1.0/cluster/members/<m>/state` on any member: validate, plan (refusals are synchronous 400s, the
// dry-run is free), and write one durable request in one transaction (the member's new state, the request
// record, its operation). Nothing more: the drainer, wherever it runs, picks the request up from the store.
// Also: cancelling a run from any member, and the progress any member answers for any member.

import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { errors } from '../errors/index.js';
import type { EvacuationRecord, MemberStatus, OperationRecord, StoredMemberState } from '../store/schema.js';
import type { ClusterSnapshot } from '../placement/index.js';
import type { EvacuationProgress } from '../wire/evacuation.js';
import { isEvacuateMode, planEvacuation, planHasWork, planRestore, type EvacuationPlan } from './planner.js';
import type { Fence, HealResult, StoredRequest } from './ports.js';

const requestSchema = z.object({
  action: z.enum(['evacuate', 'restore']),
  mode: z.string().optional(),
  dry_run: z.boolean().optional(),
  parallel: z
    .custom<number | 'auto'>((v) => v === 'auto' || (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 64), { error: 'expected "auto" or a whole number from 1 to 64' })
    .optional(),
  force: z.boolean().optional(),
}).passthrough();

/** What the request handler needs, and nothing more. */
export interface RequestPorts {
  /** A snapshot to plan `member` on (with the reservations of active runs). */
  snapshot(member: string): Promise<ClusterSnapshot>;
  /** A member's stored state and derived status, with the record's revision. */
  member(name: string): Promise<{ state: StoredMemberState; status: MemberStatus; modRevision: number }>;
  /** `cluster.evacuation_parallelism`: a number, or `auto`. */
  defaultParallel(): Promise<number | 'auto'>;
  /** The member's request record (the running or last run). */
  current(member: string): Promise<StoredRequest | null>;
  /**
   * In one transaction, only if the member record and the request record are still at the revisions read:
   * set the member's state, write the request record and its operation. False if anything changed.
   */
  begin(member: string, to: StoredMemberState, memberRevision: number, record: EvacuationRecord, requestRevision: number, op: OperationRecord, fence?: Fence): Promise<boolean>;
  /** Set the cancel flag of a run's record (and its operation's status), if it still runs. */
  requestCancel(member: string, operation: string): Promise<boolean>;
  /** Publish an operation as an `operation` event. */
  publishOperation(op: OperationRecord): void;
  /** Heal an offline member by hand (what the drainer does after `cluster.healing_threshold`). */
  heal(member: string): Promise<HealResult>;
  /** Read an operation record. */
  operation(id: string): Promise<OperationRecord | null>;
}

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

const busy = (member: string): Error => errors.conflict(`An evacuation or restore of "${member}" is already running`);

/** True while a run of the member is recorded and not over. */
export function isActive(stored: StoredRequest | null): boolean {
  return stored !== null && (stored.record.status === 'pending' || stored.record.status === 'running');
}

/** Handle `POST /1.0/cluster/members/<member>/state`: a plan (dry run) or the operation of a recorded request. */
export async function requestStateChange(
  ports: RequestPorts,
  member: string,
  body: unknown,
  fence?: Fence,
): Promise<{ sync: unknown } | { operation: OperationRecord }> {
  const parsed = requestSchema.safeParse(body ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw errors.badRequest(`Invalid request${issue && issue.path.length > 0 ? ` (field "${issue.path.join('.')}")` : ''}: ${issue?.message ?? 'malformed'}`);
  }
  const req = parsed.data;
  const mode = req.mode ?? '';
  const evacuate = req.action === 'evacuate';
  if (evacuate ? mode !== '' && !isEvacuateMode(mode) : mode !== '' && mode !== 'skip') throw errors.badRequest(`Invalid mode "${mode}"`);
  const view = await ports.member(member);
  if (view.status === 'Offline') {
    // `evacuate --force` of a member that is gone: heal it now, as the drainer would after the healing threshold.
    if (!evacuate || req.force !== true || req.dry_run === true) {
      throw errors.badRequest(`Cannot ${req.action} offline cluster member${evacuate ? ' (evacuate it with force to heal it: its instances on local storage stay where they are until it is restored)' : ''}`);
    }
    if (view.state !== 'Online') throw errors.badRequest(`Cannot heal cluster member "${member}": it is ${view.state}, not Online, in the store`);
    const healed = await ports.heal(member);
    if (!healed.healed) throw errors.conflict(`Cluster member "${member}" changed while it was being healed; try again`);
    const op = await ports.operation(healed.operation);
    if (!op) throw errors.conflict(`The operation of healing "${member}" vanished`);
    return { operation: op };
  }

  if (req.dry_run === true) {
    const snapshot = await ports.snapshot(member);
    if (evacuate) return { sync: planToApi(planEvacuation(snapshot, member, { mode })) };
    const plan = planRestore(snapshot, member);
    return { sync: { member, mode, start: plan.start, moves: plan.moves.map((x) => ({ name: x.name, project: x.project, from: x.from, bytes: x.bytes })) } };
  }

  const parallel = req.parallel ?? (await ports.defaultParallel());
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await ports.current(member);
    if (isActive(current)) throw busy(member);
    const state = await ports.member(member);
    let to: StoredMemberState;
    let reservations: EvacuationRecord['reservations'] = [];
    if (evacuate) {
      if (state.state === 'Restoring') throw busy(member);
      const plan = planEvacuation(await ports.snapshot(member), member, { mode });
      if (plan.refusals.length > 0) throw errors.badRequest(refusalMessage(member, plan));
      if (state.state === 'Evacuated' && !planHasWork(plan)) throw errors.badRequest('Cluster member is already evacuated');
      reservations = plan.instances
        .filter((p) => p.target && (p.action === 'migrate' || p.action === 'live-migrate'))
        .map((p) => ({ project: p.project, name: p.name, target: p.target as string }));
      to = 'Evacuating';
    } else {
      if (state.state === 'Online') throw errors.badRequest('Cluster member is already restored');
      to = 'Restoring';
    }
    const record = newRecord(member, req.action, mode, parallel, reservations);
    const op = newOperation(record);
    if (await ports.begin(member, to, state.modRevision, record, current?.modRevision ?? 0, op, fence)) {
      ports.publishOperation(op);
      return { operation: op };
    }
  }
  throw busy(member);
}

function newRecord(member: string, action: 'evacuate' | 'restore', mode: string, parallel: number | 'auto', reservations: EvacuationRecord['reservations']): EvacuationRecord {
  return {
    id: randomUUID(),
    member,
    action,
    mode,
    parallel,
    operation: randomUUID(),
    status: 'pending',
    startedAt: new Date().toISOString(),
    finishedAt: null,
    cancelRequested: false,
    term: 0,
    progress: null,
    reservations,
    error: '',
  };
}

/** The progress of a run no drainer has picked up yet. */
function pendingProgress(record: EvacuationRecord): EvacuationProgress {
  return {
    action: record.action, member: record.member, status: 'pending', startedAt: record.startedAt, total: 0, done: 0, failed: 0,
    bytesTotal: 0, bytesDone: 0, rate: 0, etaSeconds: null, instances: {}, partial: true,
  };
}

/** The operation of a run, as LXD shows an evacuation (`location`: the member evacuated or restored). */
function newOperation(record: EvacuationRecord): OperationRecord {
  const now = new Date().toISOString();
  return {
    id: record.operation,
    class: 'task',
    description: record.action === 'evacuate' ? 'Evacuating cluster member' : 'Restoring cluster member',
    createdAt: now,
    updatedAt: now,
    status: 'Running',
    resources: { cluster: [`/1.0/cluster/members/${record.member}`] },
    metadata: { evacuation_progress: '', roost_evacuation: pendingProgress(record) },
    mayCancel: true,
    err: '',
    location: record.member,
    kind: 'evacuation',
  };
}

/** The `roost_evacuation` progress of a member's running or last run (any member answers it from the record). */
export async function memberProgress(ports: Pick<RequestPorts, 'current'>, member: string): Promise<EvacuationProgress | null> {
  return (await ports.current(member))?.record.progress ?? null;
}
