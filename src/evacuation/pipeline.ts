// The move pipeline shared by evacuation and restore. Only data copies hold one of the copy slots (a fixed
// number, or one that follows the copies' throughput: copy-slots.ts) until the data is in place (starts run
// outside them); clean shutdowns (which only wait) run ahead of the copies — as far ahead as the copies are
// expected to catch up within one shutdown — so shutdowns overlap instead of queueing behind the
// copy slots, yet no instance sits stopped long before its copy can begin.

import PQueue from 'p-queue';
import type { CopySlots } from './copy-slots.js';

/** One unit of work: instances that stop, then move, together. */
export interface PipelineUnit {
  /** Bytes its copy moves (for the first estimate of copy time). */
  bytes: number;
  /** Whether it needs a clean shutdown before its copy. */
  running: boolean;
}

/** What the pipeline does with a unit. */
export interface PipelineSteps<U extends PipelineUnit> {
  /** Clean shutdown (holds no copy slot). */
  stop(unit: U): Promise<void>;
  /** Called when the unit is stopped and waits for a copy slot. */
  waiting(unit: U): void;
  /**
   * Copy, commit and start. It holds a copy slot until it calls `committed` (its data in place: what is left
   * is the start and the source's clean-up, which no copy waits for) or ends.
   */
  copy(unit: U, committed: () => void): Promise<void>;
  /** The unit failed at `stage`; the others go on. */
  failed(unit: U, stage: 'stop' | 'copy', err: unknown): void;
}

/** Run `units` in order; resolves when each is done, failed, or skipped because `signal` aborted. */
export async function runPipeline<U extends PipelineUnit>(units: U[], slots: CopySlots, signal: AbortSignal, steps: PipelineSteps<U>): Promise<void> {
  const copies = new PQueue({ concurrency: slots.limit });
  let copiesStarted = 0;
  let stopMs = 3000; // a typical clean shutdown, until measured
  let stopSamples = 0;
  let copyMs = 0;
  let copySamples = 0;
  const waiters: (() => void)[] = [];
  const notify = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  signal.addEventListener('abort', notify);

  const expectedCopyMs = (unit: U): number => (copySamples > 0 ? copyMs / copySamples : 300 + unit.bytes / 100_000);
  const window = (unit: U): number => slots.limit * Math.max(1, Math.ceil(stopMs / Math.max(50, expectedCopyMs(unit))));

  await Promise.all(
    units.map(async (unit, i) => {
      while (!signal.aborted && i >= copiesStarted + window(unit)) await new Promise<void>((r) => waiters.push(r));
      if (signal.aborted) return;
      if (unit.running) {
        const t0 = Date.now();
        try {
          await steps.stop(unit);
        } catch (err) {
          steps.failed(unit, 'stop', err);
          notify();
          return;
        }
        stopMs = (stopMs * stopSamples + (Date.now() - t0)) / (stopSamples + 1);
        stopSamples++;
      }
      steps.waiting(unit);
      let whole: Promise<void> = Promise.resolve();
      await copies.add(async () => {
        copiesStarted++;
        notify();
        if (signal.aborted) return;
        const t0 = Date.now();
        let committed = (): void => undefined;
        const inPlace = new Promise<void>((resolve) => (committed = resolve));
        whole = (async () => {
          try {
            await steps.copy(unit, committed);
          } catch (err) {
            steps.failed(unit, 'copy', err);
          }
          notify();
        })();
        // The slot is free once the data is in place (or the move is over), while the unit starts.
        await Promise.race([whole, inPlace]);
        const now = Date.now();
        copyMs += now - t0;
        copySamples++;
        slots.released(unit.bytes, now);
        if (copies.concurrency !== slots.limit) {
          copies.concurrency = slots.limit;
          notify(); // a wider window lets more shutdowns run ahead
        }
      });
      await whole;
    }),
  );
  signal.removeEventListener('abort', notify);
}
