// Reading an evacuate/restore operation's progress for display: the structured `roost_evacuation`
// object when the server sends it, else LXD's `evacuation_progress` text. Pure, so the plain-text report
// and the summary are tested without a terminal.

import type { Operation } from '../client/client.js';
import type { JsonObject } from '../client/json.js';
import { mergeEvacuationProgress, parseEvacuationProgress as parseWire, type EvacuationProgress, type InstanceProgress } from '../wire/evacuation.js';
import { formatBytes, formatEta } from '../util/units.js';

export type { EvacuationProgress, InstanceProgress } from '../wire/evacuation.js';
export { isInFlight } from '../wire/evacuation.js';

/** Which command is running, for wording. */
export type MemberAction = 'evacuate' | 'restore';

/** Read `roost_evacuation` from operation metadata; null when the server does not send it. */
export function parseEvacuationProgress(metadata: JsonObject | null): EvacuationProgress | null {
  return parseWire(metadata?.roost_evacuation);
}

/**
 * Follows one operation's updates: the server sends only what changed in each (a partial view), so the
 * client keeps the whole picture by merging them.
 */
export class ProgressFollower {
  private known: EvacuationProgress | null = null;

  /** The whole progress as known after `op`'s update (null from a server that sends none). */
  update(op: Operation): EvacuationProgress | null {
    const update = parseEvacuationProgress(op.metadata);
    if (update) this.known = mergeEvacuationProgress(this.known, update);
    return this.known;
  }
}

/** LXD's progress text (`evacuation_progress`, or any `*_progress` string the server sends). */
export function progressText(metadata: JsonObject | null): string | null {
  if (!metadata) return null;
  if (typeof metadata.evacuation_progress === 'string') return metadata.evacuation_progress;
  for (const [key, value] of Object.entries(metadata)) {
    if (key.endsWith('_progress') && typeof value === 'string') return value;
  }
  return null;
}

/** `default/c1` → `c1`; other projects keep their prefix so names stay unambiguous. */
export function instanceLabel(key: string): string {
  return key.startsWith('default/') ? key.slice('default/'.length) : key;
}

/** How an action counts in the summary (`none`: a stopped instance that stays where it is). */
export function actionKind(action: string): 'moved' | 'stopped' | 'started' | 'unchanged' | 'other' {
  if (action === 'none') return 'unchanged';
  if (action.includes('migrate') || action === 'move') return 'moved';
  if (action.includes('stop')) return 'stopped';
  if (action === 'start') return 'started';
  return 'other';
}

/** The plain line for an instance that reached a final state (`c1: migrated to m2`, `c5: failed: ...`). */
export function finishedLine(key: string, step: InstanceProgress): string {
  const label = instanceLabel(key);
  if (step.state === 'failed') return `${label}: failed: ${step.error || 'unknown error'}`;
  switch (actionKind(step.action)) {
    case 'moved':
      return step.target ? `${label}: migrated to ${step.target}` : `${label}: migrated`;
    case 'stopped':
      return `${label}: stopped`;
    case 'started':
      return `${label}: started`;
    case 'unchanged':
      return `${label}: stays (not running)`;
    case 'other':
      return `${label}: ${step.action || 'done'}`;
  }
}

/** The line of an instance in flight in the live display (`  c2: copying → m3`). */
export function inFlightLine(key: string, step: InstanceProgress): string {
  const target = step.target && actionKind(step.action) === 'moved' ? ` → ${step.target}` : '';
  return `  ${instanceLabel(key)}: ${step.state}${target}`;
}

/** The overall figures of the live display: instances, bytes, rate, ETA. */
export function overallFields(p: EvacuationProgress): { instances: string; bytes: string; rate: string; eta: string } {
  const remaining = p.bytesTotal - p.bytesDone;
  return {
    instances: `${p.done + p.failed}/${p.total} instances${p.failed > 0 ? ` (${p.failed} failed)` : ''}`,
    bytes: `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}`,
    rate: `${formatBytes(Math.round(p.rate))}/s`,
    eta: p.etaSeconds !== null ? formatEta(p.etaSeconds) : remaining <= 0 ? '0s' : p.rate > 0 ? formatEta(remaining / p.rate) : '-',
  };
}

/**
 * Turns successive operation states into the plain lines printed when stdout is not a terminal: one per
 * instance reaching a final state, or each new progress text from a server without `roost_evacuation`.
 */
export class PlainProgressLog {
  private readonly reported = new Set<string>();
  private readonly follower = new ProgressFollower();
  private lastText: string | null = null;

  /** The new lines that `op` brings compared with what was already reported. */
  lines(op: Operation): string[] {
    const progress = this.follower.update(op);
    if (!progress) {
      const text = progressText(op.metadata);
      if (text === null || text === this.lastText) return [];
      this.lastText = text;
      return [text];
    }
    const out: string[] = [];
    for (const [key, step] of Object.entries(progress.instances)) {
      if ((step.state !== 'done' && step.state !== 'failed') || this.reported.has(key)) continue;
      this.reported.add(key);
      out.push(finishedLine(key, step));
    }
    return out;
  }
}

/** Counts for the summary line. */
export function countOutcomes(p: EvacuationProgress): { moved: number; stopped: number; started: number; failed: number } {
  const c = { moved: 0, stopped: 0, started: 0, failed: 0 };
  for (const step of Object.values(p.instances)) {
    if (step.state === 'failed') c.failed++;
    else if (step.state === 'done') {
      const kind = actionKind(step.action);
      if (kind !== 'other' && kind !== 'unchanged') c[kind]++;
    }
  }
  return c;
}

/**
 * The closing line: `Evacuated "m1": 9 moved, 3 stopped, 0 failed` (restore: moved, started, failed);
 * an operation that did not succeed says so instead of claiming the member's new state.
 */
export function summaryLine(action: MemberAction, member: string, status: string, progress: EvacuationProgress | null): string {
  let head: string;
  if (status === 'Success') head = `${action === 'evacuate' ? 'Evacuated' : 'Restored'} "${member}"`;
  else {
    const what = action === 'evacuate' ? 'Evacuation' : 'Restore';
    head = `${what} of "${member}" ${status === 'Cancelled' ? 'cancelled' : 'failed'}`;
  }
  if (!progress) return head;
  const c = countOutcomes(progress);
  const middle = action === 'evacuate' ? `${c.stopped} stopped` : `${c.started} started`;
  return `${head}: ${c.moved} moved, ${middle}, ${c.failed} failed`;
}

/** One line per failed instance with its reason, for the end of a failed run. */
export function failureLines(progress: EvacuationProgress | null): string[] {
  if (!progress) return [];
  return Object.entries(progress.instances)
    .filter(([, step]) => step.state === 'failed')
    .map(([key, step]) => `  ${instanceLabel(key)}: ${step.error || 'unknown error'}`);
}
