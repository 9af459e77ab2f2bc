// Runs an evacuation plan. Only data copies hold one of the `parallel` slots; clean shutdowns (which
// only wait) run ahead of the copies, as far ahead as the copies are expected to catch up within one
// shutdown, so no instance sits stopped long before its copy begins. Stop-only instances are stopped
// all at once. One instance failing never stops the others; a target that stops taking instances is
// replaced by a fresh placement. The executor is the only writer of an evacuation's effects.

import PQueue from 'p-queue';
import type { Member } from '../daemon/context.js';
import type { EvacuationPlan, PlannedInstance } from './planner.js';
import { planEvacuation } from './planner.js';
import { MoveAbortedError } from '../migration/move.js';
import type { ProgressTracker } from './progress.js';
import { readPlanningSnapshot } from './snapshot.js';

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

/** The adaptive pipeline of moves. */
async function runMoves(m: Member, plan: EvacuationPlan, units: PlannedInstance[][], options: ExecuteOptions): Promise<void> {
  const { progress, signal, parallel } = options;
  const copies = new PQueue({ concurrency: parallel });
  let copiesStarted = 0;
  let stopMs = 3000; // until measured: a typical clean shutdown
  let stopSamples = 0;
  let copyMs = 0;
  let copySamples = 0;
  const waiters: (() => void)[] = [];
  const notify = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  signal.addEventListener('abort', notify);

  const expectedCopyMs = (unit: PlannedInstance[]): number => {
    if (copySamples > 0) return copyMs / copySamples;
    const bytes = unit.reduce((s, p) => s + p.bytes, 0);
    return 300 + bytes / 100_000; // ~100 MB/s plus commit and start, until measured
  };
  const window = (unit: PlannedInstance[]): number => parallel * Math.max(1, Math.ceil(stopMs / Math.max(50, expectedCopyMs(unit))));
  const gate = async (i: number, unit: PlannedInstance[]): Promise<void> => {
    while (!signal.aborted && i >= copiesStarted + window(unit)) await new Promise<void>((r) => waiters.push(r));
  };

  await Promise.all(
    units.map(async (unit, i) => {
      await gate(i, unit);
      if (signal.aborted) return;
      const keys = unit.map((p) => instanceKey(p.project, p.name));
      // Clean shutdown ahead of the copy: holds no slot.
      const t0 = Date.now();
      const running = unit.filter((p) => p.running);
      if (running.length > 0) {
        for (const p of running) progress.set(instanceKey(p.project, p.name), 'stopping', `Stopping "${p.name}" in project "${p.project}"`);
        try {
          await Promise.all(running.map((p) => m.instances.stop(p.project, p.name, { keepLastState: true })));
          stopMs = (stopMs * stopSamples + (Date.now() - t0)) / (stopSamples + 1);
          stopSamples++;
        } catch (err) {
          for (const k of keys) progress.set(k, 'failed', undefined, errorText(err));
          notify();
          return;
        }
      }
      for (const k of keys) progress.set(k, 'waiting');
      await copies.add(async () => {
        copiesStarted++;
        notify();
        if (signal.aborted) return;
        const c0 = Date.now();
        try {
          await moveUnit(m, plan, unit, options);
          copyMs += Date.now() - c0;
          copySamples++;
          for (const k of keys) progress.set(k, 'done');
        } catch (err) {
          for (const k of keys) progress.set(k, 'failed', undefined, signal.aborted ? 'cancelled before its move committed' : errorText(err));
        }
        notify();
      });
    }),
  );
  signal.removeEventListener('abort', notify);
}

/** Move one unit, placing it again (at most twice) if its target stops taking instances. */
async function moveUnit(m: Member, plan: EvacuationPlan, unit: PlannedInstance[], options: ExecuteOptions): Promise<void> {
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
