// Runs a restore plan on the member being restored: start what evacuation stopped here, then pull
// home, in parallel, every instance whose origin is this member (each move is run by its holder).

import PQueue from 'p-queue';
import type { Member } from '../daemon/context.js';
import type { RestorePlan } from './planner.js';
import type { ProgressTracker } from './progress.js';
import { errorText, instanceKey } from './executor.js';

/** How a restore runs. */
export interface RestoreOptions {
  evacuationId: string;
  parallel: number;
  signal: AbortSignal;
  progress: ProgressTracker;
}

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

  const units = new Map<string, RestorePlan['moves']>();
  for (const mv of plan.moves) units.set(mv.unit, [...(units.get(mv.unit) ?? []), mv]);
  const queue = new PQueue({ concurrency: options.parallel });
  const views = await m.cluster.members();
  for (const unit of units.values()) {
    void queue.add(async () => {
      if (signal.aborted) return;
      const first = unit[0];
      if (!first) return;
      const keys = unit.map((u) => instanceKey(u.project, u.name));
      for (const u of unit) progress.set(instanceKey(u.project, u.name), 'copying', `Migrating "${u.name}" in project "${u.project}" from "${u.from}"`);
      try {
        const holder = views.find((v) => v.record.name === first.from);
        if (!holder || holder.status === 'Offline') throw new Error(`member "${first.from}" holding it is offline`);
        await m.peers.call(holder.record.address, 'POST', '/internal/moves/run', {
          json: {
            instances: unit.map((u) => ({ project: u.project, name: u.name })),
            target: m.name,
            clearOrigin: true,
            allowRestoringTarget: true,
            honourLastState: true,
            evacuation: options.evacuationId,
          },
          signal,
          timeoutMs: 3_600_000,
        });
        for (const k of keys) progress.set(k, 'done');
      } catch (err) {
        for (const k of keys) progress.set(k, 'failed', undefined, signal.aborted ? 'cancelled before its move committed' : errorText(err));
      }
    });
  }
  await queue.onIdle();
}
