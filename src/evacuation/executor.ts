// Runs an evacuation plan: stop-only instances are stopped all at once; moves go through the shared
// stop-ahead pipeline (pipeline.ts), where only data copies hold one of the `parallel` slots. One instance failing never stops the others; a target that stops taking instances is
// replaced by a fresh placement. The executor is the only writer of an evacuation's effects. `live-migrate`
// units whose drivers can pre-copy skip the stop ahead: their move copies while they run, then stops them.

import type { Member } from '../daemon/context.js';
import type { EvacuationPlan, PlannedInstance } from './planner.js';
import { planEvacuation } from './planner.js';
import { MoveAbortedError } from '../migration/move.js';
import type { ProgressTracker } from './progress.js';
import { readPlanningSnapshot } from './snapshot.js';
import { runPipeline } from './pipeline.js';

/** How an evacuation runs. */
export interface ExecuteOptions {
  evacuationId: string;
  mode: string;
  parallel: number;
  signal: AbortSignal;
  progress: ProgressTracker;
}

/** How many times a move is placed again after its target stopped taking instances. */
const maxReplacements = 2;

/** Key of an instance in progress reports. */
export function instanceKey(project: string, name: string): string {
  return `${project}/${name}`;
}

/** Run `plan` (for this member). Resolves when every instance is done, failed or skipped by a cancel. */
export async function executeEvacuation(m: Member, plan: EvacuationPlan, options: ExecuteOptions): Promise<void> {
  const { progress } = options;
  for (const p of plan.instances) {
    progress.add(instanceKey(p.project, p.name), p.action, p.target, p.bytes, p.action === 'none' ? 'done' : 'pending');
  }

  const stopOnly = plan.instances.filter((p) => p.action === 'stop' || p.action === 'force-stop');
  const units = groupUnits(plan.instances.filter((p) => p.action === 'migrate' || p.action === 'live-migrate'));

  const stops = Promise.all(stopOnly.map((p) => stopInstance(m, p, p.action === 'force-stop', progress)));
  const moves = runMoves(m, plan, units, options);
  await Promise.all([stops, moves]);
}

async function stopInstance(m: Member, p: PlannedInstance, force: boolean, progress: ProgressTracker): Promise<void> {
  const key = instanceKey(p.project, p.name);
  progress.set(key, 'stopping', `Stopping "${p.name}" in project "${p.project}"`);
  try {
    await m.instances.stop(p.project, p.name, { force, keepLastState: true });
    progress.set(key, 'done');
  } catch (err) {
    progress.set(key, 'failed', undefined, errorText(err));
  }
}

/** The moves, through the shared stop-ahead pipeline. */
async function runMoves(m: Member, plan: EvacuationPlan, units: PlannedInstance[][], options: ExecuteOptions): Promise<void> {
  const { progress, signal } = options;
  const keysOf = (unit: PlannedInstance[]): string[] => unit.map((p) => instanceKey(p.project, p.name));
  // Pre-copy units are not stopped ahead: their move copies while they run, then stops them itself.
  const precopy = await precopyUnits(m, units);
  const work = units.map((unit) => ({
    unit,
    bytes: unit.reduce((s, p) => s + p.bytes, 0),
    running: unit.some((p) => p.running) && !precopy.has(unit),
    precopy: precopy.has(unit),
  }));
  await runPipeline(work, options.parallel, signal, {
    stop: async ({ unit }) => {
      const running = unit.filter((p) => p.running);
      for (const p of running) progress.set(instanceKey(p.project, p.name), 'stopping', `Stopping "${p.name}" in project "${p.project}"`);
      await Promise.all(running.map((p) => m.instances.stop(p.project, p.name, { keepLastState: true })));
    },
    waiting: ({ unit }) => {
      for (const k of keysOf(unit)) progress.set(k, 'waiting');
    },
    copy: async ({ unit, precopy }) => {
      await moveUnit(m, plan, unit, options, precopy);
      for (const k of keysOf(unit)) progress.set(k, 'done');
    },
    failed: ({ unit }, stage, err) => {
      const text = stage === 'copy' && signal.aborted ? 'cancelled before its move committed' : errorText(err);
      for (const k of keysOf(unit)) progress.set(k, 'failed', undefined, text);
    },
  });
}

/** Move one unit, placing it again (at most twice) if its target stops taking instances. */
async function moveUnit(m: Member, plan: EvacuationPlan, unit: PlannedInstance[], options: ExecuteOptions, precopy: boolean): Promise<void> {
  const { progress, signal } = options;
  const first = unit[0];
  if (!first) return;
  let target = first.target;
  const tried: string[] = [];
  for (let attempt = 0; ; attempt++) {
    if (!target) throw new Error('no target member');
    const to = target;
    try {
      await m.migrator.move({
        instances: unit.map((p) => ({ project: p.project, name: p.name })),
        target: to,
        origin: m.name,
        honourLastState: true,
        precopy,
        evacuation: options.evacuationId,
        signal,
        onProgress: (done, total) => progress.bytes(instanceKey(first.project, first.name), done, total),
        onPhase: (phase) => {
          for (const p of unit) {
            const key = instanceKey(p.project, p.name);
            if (phase === 'copying') progress.set(key, 'copying', `Migrating "${p.name}" in project "${p.project}" to "${to}"`);
            if (phase === 'starting') progress.set(key, 'starting', p.running ? `Starting "${p.name}" in project "${p.project}"` : undefined);
          }
        },
      });
      return;
    } catch (err) {
      if (!(err instanceof MoveAbortedError && err.targetUnavailable) || signal.aborted || attempt >= maxReplacements) throw err;
      tried.push(to);
      target = await placeAgain(m, plan, first, tried);
      for (const p of unit) progress.retarget(instanceKey(p.project, p.name), target);
      m.log.info({ instance: first.name, from: to, to: target }, 'target stopped taking instances; placed again');
    }
  }
}

/** The `live-migrate` units whose every instance's driver can pre-copy (one range read of the records). */
async function precopyUnits(m: Member, units: PlannedInstance[][]): Promise<Set<PlannedInstance[]>> {
  const live = units.filter((unit) => unit.every((p) => p.action === 'live-migrate'));
  if (live.length === 0) return new Set();
  const types = new Map((await m.instances.localRecords()).map((r) => [instanceKey(r.project, r.name), r.type]));
  const canPrecopy = (p: PlannedInstance): boolean => {
    const type = types.get(instanceKey(p.project, p.name));
    try {
      return type !== undefined && m.instances.driver(type).capabilities.precopy;
    } catch {
      return false; // an unknown type moves cold, and the move reports what is wrong with it
    }
  };
  return new Set(live.filter((unit) => unit.every(canPrecopy)));
}

/** A new target for an instance from a fresh snapshot, avoiding members that already failed it. */
async function placeAgain(m: Member, plan: EvacuationPlan, p: PlannedInstance, avoid: string[]): Promise<string> {
  const snapshot = await readPlanningSnapshot(m);
  snapshot.members = snapshot.members.filter((x) => !avoid.includes(x.name));
  const again = planEvacuation(snapshot, m.name, { mode: plan.mode });
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

/** The user-facing text of an error. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
