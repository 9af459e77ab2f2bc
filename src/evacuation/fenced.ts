// Writing a run's record under the drainer's fence, shared by evacuation runs and rolling maintenances: the
// record moves on only while this term lasts, and a cancel a user wrote meanwhile is picked up, not lost.

import type { OperationRecord } from '../store/schema.js';
import type { Fence, RecordBook } from './ports.js';

/** What a run keeps between writes of its record. */
export interface FencedWrite<T extends { cancelRequested?: boolean }> {
  book: RecordBook<T>;
  /** The record's key in its book. */
  key: string;
  record: T;
  op: OperationRecord | null;
  fence: Fence;
  modRevision: number;
  /** Whether the record now stored is still this run's (not replaced by a newer request). */
  isOurs?: (stored: T) => boolean;
}

/**
 * How a fenced write ended: written, or left for the next write after five users' changes in a row (either
 * way the record's revision is now `modRevision`), or this run may write no more (term over, record replaced).
 */
export type FencedOutcome = { kind: 'written' | 'deferred'; modRevision: number } | { kind: 'term-lost' } | { kind: 'replaced' };

/**
 * Write the record and its operation under the fence, retrying while only a user's change (a cancel request)
 * stands in the way; `onCancelRequested` runs once when one is seen, after the record and operation say so.
 */
export async function writeFenced<T extends { cancelRequested?: boolean }>(w: FencedWrite<T>, onCancelRequested: () => void): Promise<FencedOutcome> {
  let modRevision = w.modRevision;
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await w.book.write(w.record, w.op, w.fence, modRevision);
    if (r.ok) {
      if (w.op) w.book.publishOperation(w.op);
      return { kind: 'written', modRevision: r.modRevision };
    }
    const current = await w.book.get(w.key);
    if (!current || (w.isOurs && !w.isOurs(current.record))) return { kind: 'replaced' };
    // Nothing changed the record, so the fence failed: another member leads now.
    if (current.modRevision === modRevision) return { kind: 'term-lost' };
    modRevision = current.modRevision;
    if (current.record.cancelRequested && !w.record.cancelRequested) {
      w.record.cancelRequested = true;
      if (w.op && w.op.status === 'Running') w.op.status = 'Cancelling';
      onCancelRequested();
    }
  }
  return { kind: 'deferred', modRevision };
}
