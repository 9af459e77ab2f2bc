// Carries out plans through the ports: stop-only instances are stopped all at once; moves go through the
// shared stop-ahead pipeline (pipeline.ts), where only data copies hold one of the `parallel` slots. One
// instance failing never stops the others. Each move is asked of the member holding the instance; a target
// that stops taking instances is replaced by a fresh placement, a holder that cannot be reached for a moment
// is asked again, and a move an earlier drainer term ordered is waited for, then looked at again.
// `live-migrate` units whose drivers can pre-copy skip the stop ahead: their move copies while they run.

import type { EvacuationPlan, PlannedInstance, RestorePlan } from './planner.js';
import { planEvacuation } from './planner.js';
import type { ProgressTracker } from './progress.js';
import { AdaptiveSlots, fixedSlots, type CopySlots } from './copy-slots.js';
import { runPipeline } from './pipeline.js';
import { PortError, type ClusterPorts, type Fence, type MoveOrder, type MoveProgress } from './ports.js';

/** How a run executes. */
export interface ExecuteOptions {
  /** The request record's id (journals name it). */
  runId: string;
  /** Copies at once: a fixed number, or `auto` (copy-slots.ts). */
  parallel: number | 'auto';
  /** Told each limit an `auto` run's copy slots take, after the first. */
  slotsChanged?: (limit: number) => void;
  fence: Fence;
  signal: AbortSignal;
  progress: ProgressTracker;
  /** Instance types by `project/name`, for the pre-copy decision. */
  types: ReadonlyMap<string, string>;
  /** How long a holder may stay unreachable before its instance's move fails (ms). */
  unreachableMs: number;
}

/** The most copies an `auto` run takes on at once. */
export const autoMaxParallel = 16;

/** The copy slots of a run: fixed, or following the throughput (reporting each new limit). */
function copySlots(o: ExecuteOptions): CopySlots {
  if (o.parallel !== 'auto') return fixedSlots(o.parallel);
  const slots = new AdaptiveSlots(autoMaxParallel);
  const report = o.slotsChanged;
  if (!report) return slots;
  let last = slots.limit;
  return {
    get limit() {
      return slots.limit;
    },
    released(bytes, now) {
      slots.released(bytes, now);
      if (slots.limit !== last) report((last = slots.limit));
    },
  };
}

/** How many times a move is placed again after its target stopped taking instances. */
const maxReplacements = 2;

/** Key of an instance in progress reports. */
export function instanceKey(project: string, name: string): string {
  return `${project}/${name}`;
}

/** Run an evacuation `plan`. Resolves when every instance is done, failed or skipped by a cancel. */
export async function executeEvacuation(ports: ClusterPorts, plan: EvacuationPlan, o: ExecuteOptions): Promise<void> {
  const { progress } = o;
  for (const p of plan.instances) {
    progress.add(instanceKey(p.project, p.name), p.action, p.target, p.bytes, p.action === 'none' ? 'done' : 'pending');
  }
  const stopOnly = plan.instances.filter((p) => p.action === 'stop' || p.action === 'force-stop');
  const units = groupUnits(plan.instances.filter((p) => p.action === 'migrate' || p.action === 'live-migrate'));
  await Promise.all([
    Promise.all(stopOnly.map((p) => stopInPlace(ports, plan.member, p, o))),
    runEvacuationMoves(ports, plan, units, o),
  ]);
}

async function stopInPlace(ports: ClusterPorts, member: string, p: PlannedInstance, o: ExecuteOptions): Promise<void> {
  const key = instanceKey(p.project, p.name);
  o.progress.set(key, 'stopping', `Stopping "${p.name}" in project "${p.project}"`);
  try {
    await withHolder(ports, member, o, () => ports.stop(member, p, p.action === 'force-stop', o.signal));
    o.progress.set(key, 'done');
  } catch (err) {
    o.progress.set(key, 'failed', undefined, errorText(err));
  }
}

async function runEvacuationMoves(ports: ClusterPorts, plan: EvacuationPlan, units: PlannedInstance[][], o: ExecuteOptions): Promise<void> {
  const { progress, signal } = o;
  const keysOf = (unit: PlannedInstance[]): string[] => unit.map((p) => instanceKey(p.project, p.name));
  const precopy = (unit: PlannedInstance[]): boolean =>
    unit.every((p) => p.action === 'live-migrate' && ports.canPrecopy(o.types.get(instanceKey(p.project, p.name)) ?? ''));
  const work = units.map((unit) => ({
    unit,
    bytes: unit.reduce((s, p) => s + p.bytes, 0),
    precopy: precopy(unit),
    running: unit.some((p) => p.running) && !precopy(unit),
  }));
  await runPipeline(work, copySlots(o), signal, {
    stop: async ({ unit }) => {
      const running = unit.filter((p) => p.running);
      for (const p of running) progress.set(instanceKey(p.project, p.name), 'stopping', `Stopping "${p.name}" in project "${p.project}"`);
      await Promise.all(running.map((p) => withHolder(ports, plan.member, o, () => ports.stop(plan.member, p, false, signal))));
    },
    waiting: ({ unit }) => {
      for (const k of keysOf(unit)) progress.set(k, 'waiting');
    },
    copy: async ({ unit, precopy }, committed) => {
      await moveUnitOut(ports, plan, unit, o, precopy, committed);
      for (const k of keysOf(unit)) progress.set(k, 'done');
    },
    failed: ({ unit }, stage, err) => {
      const text = stage === 'copy' && signal.aborted ? 'cancelled before its move committed' : errorText(err);
      for (const k of keysOf(unit)) progress.set(k, 'failed', undefined, text);
    },
  });
}

/** Move one unit off the evacuated member, placing it again (at most twice) if its target stops taking instances. */
async function moveUnitOut(ports: ClusterPorts, plan: EvacuationPlan, unit: PlannedInstance[], o: ExecuteOptions, precopy: boolean, committed: () => void): Promise<void> {
  const { progress, signal } = o;
  const first = unit[0];
  if (!first) return;
  let target = first.target;
  const tried: string[] = [];
  for (;;) {
    if (!target) throw new Error('no target member');
    const to = target;
    const order: MoveOrder = {
      instances: unit.map((p) => ({ project: p.project, name: p.name })),
      target: to,
      origin: plan.member,
      honourLastState: true,
      precopy,
      evacuation: o.runId,
    };
    try {
      const away = async (): Promise<boolean> => (await Promise.all(unit.map((p) => ports.location(p.project, p.name)))).every((l) => l !== null && l !== plan.member);
      await withHolder(ports, plan.member, o, () => ports.move(plan.member, order, o.fence, signal, reporter(progress, unit, () => `to "${to}"`, precopy, committed)), undefined, away);
      return;
    } catch (err) {
      if (!(err instanceof PortError && err.failure === 'target-unavailable') || signal.aborted || tried.length >= maxReplacements) throw err;
      tried.push(to);
      target = await placeAgain(ports, plan, first, tried, o.runId);
      for (const p of unit) progress.retarget(instanceKey(p.project, p.name), target);
      ports.log.info({ instance: first.name, from: to, to: target }, 'target stopped taking instances; placed again');
    }
  }
}

/** Run a restore `plan`: start what evacuation stopped on the member, then bring home what left it. */
export async function executeRestore(ports: ClusterPorts, plan: RestorePlan, o: ExecuteOptions): Promise<void> {
  const { progress, signal } = o;
  for (const s of plan.start) progress.add(instanceKey(s.project, s.name), 'start', plan.member, 0);
  for (const mv of plan.moves) progress.add(instanceKey(mv.project, mv.name), 'migrate', plan.member, mv.bytes);

  await Promise.all(
    plan.start.map(async (s) => {
      const key = instanceKey(s.project, s.name);
      progress.set(key, 'starting', `Starting "${s.name}" in project "${s.project}"`);
      try {
        await withHolder(ports, plan.member, o, () => ports.start(plan.member, s, true));
        progress.set(key, 'done');
      } catch (err) {
        progress.set(key, 'failed', undefined, errorText(err));
      }
    }),
  );

  type Move = RestorePlan['moves'][number];
  const byUnit = new Map<string, Move[]>();
  for (const mv of plan.moves) byUnit.set(mv.unit, [...(byUnit.get(mv.unit) ?? []), mv]);
  const keysOf = (unit: Move[]): string[] => unit.map((u) => instanceKey(u.project, u.name));
  // A unit of `live-migrate` instances comes home pre-copied, as it left: its move stops it, not the pipeline.
  const precopy = (unit: Move[]): boolean => unit.every((u) => u.live && ports.canPrecopy(o.types.get(instanceKey(u.project, u.name)) ?? ''));
  const work = [...byUnit.values()].map((unit) => ({
    unit,
    bytes: unit.reduce((s, u) => s + u.bytes, 0),
    precopy: precopy(unit),
    running: unit.some((u) => u.running) && !precopy(unit),
  }));

  await runPipeline(work, copySlots(o), signal, {
    stop: async ({ unit }) => {
      for (const u of unit.filter((x) => x.running)) {
        progress.set(instanceKey(u.project, u.name), 'stopping', `Stopping "${u.name}" in project "${u.project}"`);
        await withHolder(ports, u.from, o, () => ports.stop(u.from, u, false, signal));
      }
    },
    waiting: ({ unit }) => {
      for (const k of keysOf(unit)) progress.set(k, 'waiting');
    },
    copy: async ({ unit, precopy }, committed) => {
      const first = unit[0];
      if (!first) return;
      const order: MoveOrder = {
        instances: unit.map((u) => ({ project: u.project, name: u.name })),
        target: plan.member,
        clearOrigin: true,
        allowRestoringTarget: true,
        honourLastState: true,
        precopy,
        evacuation: o.runId,
      };
      // The member being restored may itself restart meanwhile: its being unreachable is retried too.
      const home = async (): Promise<boolean> => (await Promise.all(unit.map((u) => ports.location(u.project, u.name)))).every((l) => l === plan.member);
      await withHolder(ports, first.from, o, () => ports.move(first.from, order, o.fence, signal, reporter(progress, unit, (u) => `from "${u.from}"`, precopy, committed)), plan.member, home);
      for (const k of keysOf(unit)) progress.set(k, 'done');
    },
    failed: ({ unit }, stage, err) => {
      const text = stage === 'copy' && signal.aborted ? 'cancelled before its move committed' : errorText(err);
      for (const k of keysOf(unit)) progress.set(k, 'failed', undefined, text);
    },
  });
}

/**
 * Turns what the holder reports about a unit's move into progress (LXD's texts on each phase). Only a unit
 * that was not stopped ahead (a pre-copy) shows the stop its move makes.
 */
function reporter<U extends { project: string; name: string; running: boolean }>(
  progress: ProgressTracker,
  unit: U[],
  where: (u: U) => string,
  stopsInMove: boolean,
  committed: () => void,
): (p: MoveProgress) => void {
  const first = unit[0];
  return (p) => {
    if (!first) return;
    if ('bytesDone' in p) {
      progress.bytes(instanceKey(first.project, first.name), p.bytesDone, p.bytesTotal);
      return;
    }
    if (p.phase === 'starting') committed(); // the move committed: its copy slot is free
    for (const u of unit) {
      const key = instanceKey(u.project, u.name);
      if (p.phase === 'stopping' && stopsInMove && u.running) progress.set(key, 'stopping', `Stopping "${u.name}" in project "${u.project}"`);
      if (p.phase === 'copying') progress.set(key, 'copying', `Migrating "${u.name}" in project "${u.project}" ${where(u)}`);
      if (p.phase === 'starting') progress.set(key, 'starting', u.running ? `Starting "${u.name}" in project "${u.project}"` : undefined);
    }
  };
}

/**
 * Run `action` on `holder`, retrying while the holder is unreachable (until `unreachableMs` passes or it is
 * Offline) or busy with an earlier move (until that move's journal clears, within the same time). With
 * `fixedTarget`, a target that is unavailable for a moment (restarting) is waited for in the same way, since
 * the move has nowhere else to go.
 */
async function withHolder(
  ports: ClusterPorts,
  holder: string,
  o: ExecuteOptions,
  action: () => Promise<void>,
  fixedTarget?: string,
  alreadyDone?: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + o.unreachableMs;
  let delayMs = 200;
  for (let attempt = 0; ; attempt++) {
    try {
      // A move an earlier term ordered may have committed while this one waited: nothing left to do then.
      if (attempt > 0 && alreadyDone && (await alreadyDone())) return;
      await action();
      return;
    } catch (err) {
      if (o.signal.aborted || !(err instanceof PortError)) throw err;
      const waitFor = err.failure === 'unreachable' || err.failure === 'busy' ? holder : err.failure === 'target-unavailable' && fixedTarget ? fixedTarget : null;
      if (waitFor === null) throw err;
      const info = (await ports.members()).find((x) => x.name === waitFor);
      if (!info || info.status === 'Offline' || Date.now() > deadline) {
        throw new PortError('failed', err.failure === 'busy' ? err.message : `member "${waitFor}" is offline or unreachable: ${err.message}`);
      }
      await sleep(delayMs, o.signal);
      delayMs = Math.min(2000, delayMs * 2);
    }
  }
}

/** A new target for an instance from a fresh snapshot, avoiding members that already failed it. */
async function placeAgain(ports: ClusterPorts, plan: EvacuationPlan, p: PlannedInstance, avoid: string[], runId: string): Promise<string> {
  const snapshot = await ports.snapshot({ run: runId, member: plan.member });
  snapshot.members = snapshot.members.filter((x) => !avoid.includes(x.name));
  const again = planEvacuation(snapshot, plan.member, { mode: plan.mode });
  const entry = again.instances.find((x) => x.project === p.project && x.name === p.name);
  if (entry?.target) return entry.target;
  const refusal = again.refusals.find((x) => x.project === p.project && x.name === p.name);
  throw new Error(refusal ? refusal.reason : 'no other member can take it');
}

/** Instances grouped by unit (instances sharing a volume move together), in plan order. */
function groupUnits(moves: PlannedInstance[]): PlannedInstance[][] {
  const byUnit = new Map<string, PlannedInstance[]>();
  for (const p of moves) byUnit.set(p.unit, [...(byUnit.get(p.unit) ?? []), p]);
  return [...byUnit.values()];
}

/** Wait `ms`, or less if `signal` aborts first (never rejects). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}

/** The user-facing text of an error. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
