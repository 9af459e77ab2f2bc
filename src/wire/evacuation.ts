// The progress of an evacuation or restore as it travels: in the API (`roost_evacuation` in the operation's
// metadata and in `GET /1.0/cluster/members/<m>/state`), in the store (the request record), and as clients
// read it. One shape for all of them, with the parser clients use to read it from JSON they cannot trust.

import { z } from 'zod';

/** States an instance goes through in a run; `done` and `failed` are final. */
export const instanceRunStates = ['pending', 'stopping', 'waiting', 'copying', 'starting', 'done', 'failed'] as const;
export type InstanceRunState = (typeof instanceRunStates)[number];

/** Where a run as a whole stands. `pending`: recorded, not yet picked up by the drainer. */
export const runStatuses = ['pending', 'running', 'done', 'failed', 'cancelled'] as const;
export type RunStatus = (typeof runStatuses)[number];

const instanceProgressSchema = z.object({
  /** What the run does with it: `migrate`, `live-migrate`, `stop`, `force-stop`, `none`, `start` (restore). */
  action: z.string(),
  /** Where it goes (restore: the member being restored); null when it stays. */
  target: z.string().nullable().default(null),
  state: z.enum(instanceRunStates),
  error: z.string().optional(),
  /** Bytes its copy moves, and how many of them have arrived. */
  bytes: z.number().default(0),
  bytesDone: z.number().default(0),
});

/** One instance of a run. */
export type InstanceProgress = z.infer<typeof instanceProgressSchema>;

const evacuationProgressSchema = z.object({
  action: z.enum(['evacuate', 'restore']).default('evacuate'),
  member: z.string().default(''),
  status: z.enum(runStatuses).default('running'),
  startedAt: z.string().default(''),
  total: z.number().default(0),
  done: z.number().default(0),
  failed: z.number().default(0),
  bytesTotal: z.number().default(0),
  bytesDone: z.number().default(0),
  /** Bytes per second over the run so far. */
  rate: z.number().default(0),
  etaSeconds: z.number().nullable().default(null),
  /** Keyed `<project>/<name>`. */
  instances: z.record(z.string(), instanceProgressSchema),
  /**
   * True when `instances` holds only the instances in flight or changed since the previous update (the
   * operation's updates, to keep each one small); false when it holds every instance of the run.
   */
  partial: z.boolean().default(false),
});

/** The `roost_evacuation` object. */
export type EvacuationProgress = z.infer<typeof evacuationProgressSchema>;

/**
 * Read a `roost_evacuation` value sent by a server; null if it is absent or not that shape. Fields an older
 * server may not send take their defaults.
 */
export function parseEvacuationProgress(value: unknown): EvacuationProgress | null {
  const r = evacuationProgressSchema.safeParse(value);
  return r.success ? r.data : null;
}

/** Merge an update into what a client knew: a partial update changes only the instances it lists. */
export function mergeEvacuationProgress(known: EvacuationProgress | null, update: EvacuationProgress): EvacuationProgress {
  if (!update.partial || !known) return update;
  return { ...update, instances: { ...known.instances, ...update.instances }, partial: known.partial };
}

/** True for a step that has started and not ended. */
export function isInFlight(state: InstanceRunState): boolean {
  return state !== 'done' && state !== 'failed' && state !== 'pending';
}
