// The live display of an evacuate/restore on a terminal: an overall line (bar, instances, bytes, rate,
// ETA) and one line per instance in flight, redrawn in place by cli-progress.

import { MultiBar, type SingleBar } from 'cli-progress';
import type { Operation } from '../client/client.js';
import { asObject } from '../client/json.js';
import {
  type EvacuationProgress,
  ProgressFollower,
  inFlightLine,
  isInFlight,
  overallFields,
  progressText,
} from './evacuation-progress.js';

/** Most instance lines shown at once; the rest are counted on one line so the display fits a screen. */
const maxInstanceLines = 10;

/** A bar of `width` cells, `fraction` of them filled. */
export function drawBar(fraction: number, width = 30): string {
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
}

/** The overall line for `title` from the structured progress, or LXD's text when that is all there is. */
export function overallLine(title: string, progress: EvacuationProgress | null, text: string | null): string {
  if (!progress) return text ? `${title}: ${text}` : title;
  const f = overallFields(progress);
  const fraction = progress.total > 0 ? (progress.done + progress.failed) / progress.total : 0;
  return `${title} [${drawBar(fraction)}] ${f.instances} | ${f.bytes} | ${f.rate} | ETA ${f.eta}`;
}

/** The lines under the overall one: each instance in flight, capped, with the overflow counted. */
export function inFlightLines(progress: EvacuationProgress | null): string[] {
  if (!progress) return [];
  const lines = Object.entries(progress.instances)
    .filter(([, step]) => isInFlight(step.state))
    .map(([key, step]) => inFlightLine(key, step));
  if (lines.length <= maxInstanceLines) return lines;
  return [...lines.slice(0, maxInstanceLines), `  ... and ${lines.length - maxInstanceLines} more in flight`];
}

const lineFormat = (_options: unknown, _params: unknown, payload: unknown): string => String(asObject(payload).line ?? '');

/** Redraws the progress of one operation on a terminal until `stop`. */
export class LiveProgressView {
  private readonly multi: MultiBar;
  private readonly overall: SingleBar;
  private rows: SingleBar[] = [];
  private readonly follower = new ProgressFollower();
  private stopped = false;

  constructor(
    stream: NodeJS.WritableStream,
    private readonly title: string,
  ) {
    this.multi = new MultiBar({
      stream,
      format: lineFormat,
      hideCursor: false,
      gracefulExit: false,
      clearOnComplete: false,
      linewrap: false,
      fps: 10,
    });
    this.overall = this.multi.create(1, 0, { line: title });
  }

  /** Show the state carried by `op`. */
  update(op: Operation): void {
    if (this.stopped) return;
    const progress = this.follower.update(op);
    this.overall.update(0, { line: overallLine(this.title, progress, progressText(op.metadata)) });
    const lines = inFlightLines(progress);
    while (this.rows.length > lines.length) {
      const row = this.rows.pop();
      if (row) this.multi.remove(row);
    }
    lines.forEach((line, i) => {
      const row = this.rows[i];
      if (row) row.update(0, { line });
      else this.rows.push(this.multi.create(1, 0, { line }));
    });
  }

  /** Draw the last state and release the terminal. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.multi.stop();
  }
}
