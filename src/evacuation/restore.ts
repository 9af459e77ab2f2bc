// Runs a restore plan on the member being restored: start what evacuation stopped here, then bring
// home every instance whose origin is this member, through the shared stop-ahead pipeline (each
// instance is stopped and moved by the member that holds it).

import type { Member } from '../daemon/context.js';
import type { RestorePlan } from './planner.js';
import type { ProgressTracker } from './progress.js';
import { errorText, instanceKey } from './executor.js';
import { runPipeline } from './pipeline.js';

/** How a restore runs. */
export interface RestoreOptions {
  evacuationId: string;
  parallel: number;
  signal: AbortSignal;
  progress: ProgressTracker;
}

type Move = RestorePlan['moves'][number];

/** Run `plan`. Resolves when every instance is done, failed or skipped by a cancel. */
export async function executeRestore(m: Member, plan: RestorePlan, options: RestoreOptions): Promise<void> {
  const { progress, signal } = options;
  for (const s of plan.start) progress.add(instanceKey(s.project, s.name), 'start', m.name, 0);
  for (const mv of plan.moves) progress.add(instanceKey(mv.project, mv.name), 'migrate', m.name, mv.bytes);

  await Promise.all(
    plan.start.map(async (s) => {
      const key = instanceKey(s.project, s.name);
      progress.set(key, 'starting', `Starting "${s.name}" in project "${s.project}"`);
      try {
        await m.instances.start(s.project, s.name, { allowRestoring: true });
        progress.set(key, 'done');
      } catch (err) {
        progress.set(key, 'failed', undefined, errorText(err));
      }
    }),
  );

  const byUnit = new Map<string, Move[]>();
  for (const mv of plan.moves) byUnit.set(mv.unit, [...(byUnit.get(mv.unit) ?? []), mv]);
  const views = await m.cluster.members();
  const holderAddress = (name: string): string => {
    const holder = views.find((v) => v.record.name === name);
    if (!holder || holder.status === 'Offline') throw new Error(`member "${name}" holding it is offline`);
    return holder.record.address;
  };
  const keysOf = (unit: Move[]): string[] => unit.map((u) => instanceKey(u.project, u.name));
  const work = [...byUnit.values()].map((unit) => ({ unit, bytes: unit.reduce((s, u) => s + u.bytes, 0), running: unit.some((u) => u.running) }));

  await runPipeline(work, options.parallel, signal, {
    stop: async ({ unit }) => {
      for (const u of unit.filter((x) => x.running)) {
        progress.set(instanceKey(u.project, u.name), 'stopping', `Stopping "${u.name}" in project "${u.project}"`);
        await m.internal.stopInstance(holderAddress(u.from), { project: u.project, name: u.name }, signal);
      }
    },
    waiting: ({ unit }) => {
      for (const k of keysOf(unit)) progress.set(k, 'waiting');
    },
    copy: async ({ unit }) => {
      const first = unit[0];
      if (!first) return;
      for (const u of unit) progress.set(instanceKey(u.project, u.name), 'copying', `Migrating "${u.name}" in project "${u.project}" from "${u.from}"`);
      await m.internal.runMove(holderAddress(first.from), {
        instances: unit.map((u) => ({ project: u.project, name: u.name })),
        target: m.name,
        clearOrigin: true,
        allowRestoringTarget: true,
        honourLastState: true,
        evacuation: options.evacuationId,
      }, signal);
      for (const k of keysOf(unit)) progress.set(k, 'done');
    },
    failed: ({ unit }, stage, err) => {
      const text = stage === 'copy' && signal.aborted ? 'cancelled before its move committed' : errorText(err);
      for (const k of keysOf(unit)) progress.set(k, 'failed', undefined, text);
    },
  });
}
