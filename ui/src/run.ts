// The live view's model of one member's evacuation or restore: the operation and the merged progress,
// updated from operation events (each carries a partial `roost_evacuation`), and per-instance copy rates
// measured from successive updates (the wire gives rates for the run as a whole only). Pure.

import { mergeEvacuationProgress, parseEvacuationProgress, type EvacuationProgress } from '../../src/wire/evacuation.js';
import { isRunOf, type Operation } from './api.js';

/** What the live view knows of the member's current or last run. */
export interface RunView {
  /** Its operation, once known (null: only the progress `GET .../state` answered). */
  operation: Operation | null;
  progress: EvacuationProgress | null;
  /** When each instance's copy was first seen, for its rate (keyed as `progress.instances`). */
  copies: Record<string, CopySample>;
  /** When the last update arrived (ms since the epoch). */
  at: number;
}

/** Nothing known yet. */
export const emptyRun: RunView = { operation: null, progress: null, copies: {}, at: 0 };

/** `view` with `progress` (of the same run, or a new one when `sameRun` is false) received at `now`. */
export function withProgress(view: RunView, progress: EvacuationProgress | null, operation: Operation | null, sameRun: boolean, now: number): RunView {
  const copies = sameRun ? { ...view.copies } : {};
  for (const [key, step] of Object.entries(progress?.instances ?? {})) {
    if (step.state === 'copying' && !copies[key]) copies[key] = { at: now, bytesDone: step.bytesDone };
  }
  return { operation, progress, copies, at: now };
}

/**
 * Fold an operation (from an event or the operations list) into `view` if it is a run of `member`. A new
 * run (another operation id, or another start time) replaces what was known instead of merging into it.
 */
export function applyOperation(view: RunView, op: Operation, member: string, now: number): RunView {
  if (!isRunOf(op, member)) return view;
  const update = parseEvacuationProgress(op.metadata?.roost_evacuation);
  const sameRun = view.operation !== null ? view.operation.id === op.id : view.progress !== null && update !== null && view.progress.startedAt === update.startedAt;
  const known = sameRun ? view.progress : null;
  return withProgress(view, update ? mergeEvacuationProgress(known, update) : known, op, sameRun, now);
}

/** The first sighting of an instance's copy: when, and how many bytes had arrived. */
export interface CopySample {
  at: number;
  bytesDone: number;
}

/** Bytes per second of an instance's copy since it was first seen copying, or null before there is anything to measure. */
export function copyRate(view: RunView, key: string): number | null {
  const first = view.copies[key];
  const bytesDone = view.progress?.instances[key]?.bytesDone ?? 0;
  if (!first || view.at <= first.at || bytesDone <= first.bytesDone) return null;
  return ((bytesDone - first.bytesDone) * 1000) / (view.at - first.at);
}

/** The overall figures: instances finished of total, bytes moved of total, rate, and seconds left. */
export function overall(p: EvacuationProgress): { finished: number; total: number; etaSeconds: number | null } {
  const finished = p.done + p.failed;
  const remaining = p.bytesTotal - p.bytesDone;
  const etaSeconds = p.etaSeconds ?? (remaining <= 0 ? 0 : p.rate > 0 ? remaining / p.rate : null);
  return { finished, total: p.total, etaSeconds };
}
