// The member-to-member protocol under `/internal/` (HTTPS with the cluster certificate only). This module
// owns it whole: the paths, the request bodies (zod schemas the server validates with), the answers, and the
// typed client every caller uses. Nothing else spells an `/internal/` path.
//
//   POST /internal/instances/state          runtime state of the named instances the member holds
//   POST /internal/capacity                 pool space, volume sizes and which of the named instances run
//                                           (for placement); the caller names the instances it read at the
//                                           member, so the member reads those records, not every one
//   GET  /internal/images/:fp               an image file (copied to a member on first use)
//   POST /internal/instances/start|stop     start or stop an instance the member holds
//   POST /internal/pools/open               open (create) a storage pool on the member, with its merged config
//   POST /internal/pools/remove             remove a storage pool from the member (refused while it holds a volume)
//   POST /internal/moves/run                ask the holder of instances to move them (the drainer): the answer
//                                           streams progress lines (NDJSON) and ends with the outcome
//   POST /internal/moves/run/:run/cancel    cancel that move if it has not committed; the caller keeps reading
//                                           the answer above for what really happened (404: no such run here)
//   and the receiving side of one move, on its target, keyed by the move's journal id:
//   POST /internal/moves/:id/prepare        clear stale copies, check the pool has room, open staging; the
//                                           source offers its pool's stream format (btrfs), the answer says
//                                           whether the target's pool receives it (else the move uses tar)
//   PUT  /internal/moves/:id/volume?ref     one volume's tar stream (cold copy) → every entry as it landed
//   PUT  /internal/moves/:id/delta?ref      one pre-copy pass (tar of changed entries) → its stream digest
//   PUT  /internal/moves/:id/stream?ref     one volume in the offered format (btrfs send; incremental against
//                                           the one before unless `fresh`) → its stream digest
//   POST /internal/moves/:id/delete         paths gone since the last pre-copy pass
//   POST /internal/moves/:id/digest         the staged tree's per-entry digest (or warm it up)
//   POST /internal/moves/:id/commit         make every staged volume durable and put it in place
//   POST /internal/moves/:id/discard        drop what the move left on the target

import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import type { PeerClient } from './peers.js';
import type { InstanceRuntimeState } from '../instances/driver.js';
import type { VolumeRef } from '../storage/driver.js';

/** Route patterns, for the server side (`api/routes/internal.ts`). */
export const internalRoutes = {
  instanceStates: '/internal/instances/state',
  capacity: '/internal/capacity',
  image: '/internal/images/:fp',
  startInstance: '/internal/instances/start',
  stopInstance: '/internal/instances/stop',
  openPool: '/internal/pools/open',
  removePool: '/internal/pools/remove',
  runMove: '/internal/moves/run',
  cancelMove: '/internal/moves/run/:run/cancel',
  prepare: '/internal/moves/:id/prepare',
  volume: '/internal/moves/:id/volume',
  delta: '/internal/moves/:id/delta',
  stream: '/internal/moves/:id/stream',
  deletePaths: '/internal/moves/:id/delete',
  digest: '/internal/moves/:id/digest',
  commit: '/internal/moves/:id/commit',
  discard: '/internal/moves/:id/discard',
} as const;

/** A volume named on the wire. */
export const volumeRefSchema = z.object({
  type: z.enum(['container', 'custom']),
  project: z.string(),
  name: z.string(),
  snapshot: z.string().optional(),
  pool: z.string().optional(),
});

/** `POST /internal/pools/open`: the pool, its driver, and the cluster-wide config merged with the member's own. */
export const openPoolBody = z.object({ name: z.string(), driver: z.string(), config: z.record(z.string(), z.string()) });
export type OpenPoolBody = z.infer<typeof openPoolBody>;

/** `POST /internal/pools/remove`: the pool, and its `source` on the member if one was given. */
export const removePoolBody = z.object({ name: z.string(), source: z.string().optional() });
export type RemovePoolBody = z.infer<typeof removePoolBody>;

/** `POST /internal/instances/start`. */
export const startInstanceBody = z.object({
  project: z.string(),
  name: z.string(),
  allowRestoring: z.boolean().optional(),
  moveId: z.string().optional(),
});
export type StartInstanceBody = z.infer<typeof startInstanceBody>;

/**
 * `POST /internal/instances/state` and `/internal/capacity`: the instances the caller's store read places at the
 * member. Naming them spares every member a read of every instance record in the cluster on each call.
 */
export const instanceKeysBody = z.object({ instances: z.array(z.object({ project: z.string(), name: z.string() })) });
export type InstanceKeys = z.infer<typeof instanceKeysBody>['instances'];

/** `POST /internal/instances/stop`: a restore or drainer stops an instance ahead of its copy (power state kept). */
export const stopInstanceBody = z.object({ project: z.string(), name: z.string(), force: z.boolean().optional() });
export type StopInstanceBody = z.infer<typeof stopInstanceBody>;

/** `POST /internal/moves/run`: what the holder of the instances is asked to move, and how. */
export const runMoveBody = z.object({
  instances: z.array(z.object({ project: z.string(), name: z.string() })).min(1),
  target: z.string(),
  origin: z.string().nullable().optional(),
  clearOrigin: z.boolean().optional(),
  allowRestoringTarget: z.boolean().optional(),
  honourLastState: z.boolean().optional(),
  forceStop: z.boolean().optional(),
  precopy: z.boolean().optional(),
  evacuation: z.string().nullable().optional(),
  /** The drainer term that ordered the move: its journal and its commit hold only while that term lasts. */
  fence: z.object({ key: z.string(), createRevision: z.number().int() }).optional(),
  /** The caller's name for this run, by which it can cancel it (`cancelMove`); without one, only hanging up cancels. */
  run: z.string().uuid().optional(),
});
export type RunMoveBody = z.infer<typeof runMoveBody>;

/** How a move asked of its holder failed, for the caller's retry decision. */
export type MoveFailureKind = 'unreachable' | 'busy' | 'target-unavailable' | 'failed';

/** One line of a `runMove` answer: a phase, bytes so far, or the outcome (the last line). */
export type RunMoveLine =
  | { phase: 'stopping' | 'copying' | 'starting' }
  | { bytesDone: number; bytesTotal: number }
  | { ok: true }
  | { ok: false; failure: MoveFailureKind; error: string };

/** The lines before the outcome: what a caller's progress display sees. */
export type RunMoveProgressLine = Exclude<RunMoveLine, { ok: boolean }>;

/** A move that the holder reported as failed. */
export class RemoteMoveError extends Error {
  constructor(
    readonly failure: MoveFailureKind,
    message: string,
  ) {
    super(message);
    this.name = 'RemoteMoveError';
  }
}


/** What a copy about to be sent will take on the target's pool (`VolumeFootprint`), checked before it starts. */
export const footprintSchema = z.object({ bytes: z.number().int().nonnegative(), inodes: z.number().int().nonnegative() });

/**
 * `POST /internal/moves/:id/prepare`: the volumes the move sends, what they take in all and on each pool, and
 * the stream format of the source's pool (`VolumeStreams.format`) it offers to send them in instead of tar.
 */
export const prepareBody = z.object({
  refs: z.array(volumeRefSchema),
  need: footprintSchema,
  pools: z.record(z.string(), footprintSchema).optional(),
  stream: z.string().optional(),
});
export type PrepareBody = z.infer<typeof prepareBody>;

/** What `prepare` answers: the offered stream format if the target's pool receives it, else null (tar). */
export interface PrepareAnswer {
  stream: string | null;
}

/** `POST /internal/moves/:id/delete`. */
export const deletePathsBody = z.object({ ref: volumeRefSchema, paths: z.array(z.string()) });

/** `POST /internal/moves/:id/digest`; `warm`: digest now (while the instance runs) and answer nothing. */
export const digestBody = z.object({ ref: volumeRefSchema, warm: z.boolean().optional() });

/** `POST /internal/moves/:id/discard`. */
export const discardBody = z.object({ project: z.string(), instances: z.array(z.string()), volumes: z.array(z.string()) });
export type DiscardBody = z.infer<typeof discardBody>;

/** The volume a stream request (`volume`, `delta`) carries, from its query string. */
export function streamRef(query: Record<string, unknown>): VolumeRef | null {
  const r = volumeRefSchema.safeParse({ type: query.type, project: query.project, name: query.name, snapshot: query.snapshot, pool: query.pool });
  return r.success ? r.data : null;
}

/** Digest and length of one streamed pre-copy pass, as both ends counted it. */
export interface StreamDigest {
  sha256: string;
  bytes: number;
}

/** What the target answers for a cold copy of a volume: every entry as it landed, read back once durable. */
export interface ReceivedVolume {
  landed: TreeEntry[];
}

/** One entry of a tree as a move's check compares source and target. */
export interface TreeEntry {
  path: string;
  kind: 'file' | 'dir' | 'link';
  /** Permission bits. */
  mode: number;
  /** `uid:gid`, only when the daemon runs as root (otherwise copies cannot keep owners, cold or not). */
  owner?: string;
  /** File size (0 for directories and links). */
  size: number;
  /** sha256 of a file, the target of a link, empty for a directory. */
  content: string;
}

/** What a member reports about itself for placement (`GET /internal/capacity`). */
export interface CapacityReport {
  /** Each pool the member has: the space of its file system. */
  pools: Record<string, { freeBytes: number; totalBytes: number }>;
  /** Bytes a copy of every volume held would take (whole blocks, `entryFootprint`), keyed by `volumeKey` (`pool/type/project/name`). */
  volumeBytes: Record<string, number>;
  /** Which of the instances asked about (those held here) run now, keyed `project/name`. */
  running: Record<string, boolean>;
}

/**
 * Timeouts (ms without response headers) of calls that wait on slow work at the other end: a stream's
 * answer comes once the copy is written and fsynced, a commit's once every staged tree is durable and in
 * place, however many GB that is. Other calls wait `ROOST_PEER_TIMEOUT_MS` (config/env.ts).
 */
const slow = { stop: 600_000, stream: 600_000, digest: 600_000, commit: 600_000, move: 3_600_000 } as const;
/** How long a cancelled move may take to roll back or finish before its caller hangs up on it (ms). */
const cancelGraceMs = 120_000;

/** The typed client of the internal protocol. */
export class InternalClient {
  constructor(private readonly peers: PeerClient) {}

  /** Runtime states of those of `instances` the member at `address` holds, keyed `project/name`. */
  async instanceStates(address: string, instances: InstanceKeys): Promise<Record<string, InstanceRuntimeState>> {
    return (await this.peers.call(address, 'POST', internalRoutes.instanceStates, { json: { instances }, timeoutMs: 15_000 })) as Record<string, InstanceRuntimeState>;
  }

  /** What the member at `address` offers placement, with which of `instances` (those it holds) run. */
  async capacity(address: string, instances: InstanceKeys): Promise<CapacityReport> {
    return (await this.peers.call(address, 'POST', internalRoutes.capacity, { json: { instances }, timeoutMs: 10_000 })) as CapacityReport;
  }

  /** Have the member at `address` open (create) a storage pool. */
  async openPool(address: string, body: OpenPoolBody): Promise<void> {
    await this.peers.call(address, 'POST', internalRoutes.openPool, { json: body, timeoutMs: slow.stop });
  }

  /** Have the member at `address` remove a storage pool. */
  async removePool(address: string, body: RemovePoolBody): Promise<void> {
    await this.peers.call(address, 'POST', internalRoutes.removePool, { json: body, timeoutMs: slow.stop });
  }

  /** An image file from the member at `address`. */
  async image(address: string, fingerprint: string): Promise<Readable> {
    return this.peers.stream(address, `/internal/images/${encodeURIComponent(fingerprint)}`);
  }

  /** Start an instance on the member that holds it. */
  async startInstance(address: string, body: StartInstanceBody): Promise<void> {
    await this.peers.call(address, 'POST', internalRoutes.startInstance, { json: body, timeoutMs: slow.stop });
  }

  /** Stop an instance on the member that holds it, keeping its power state. */
  async stopInstance(address: string, body: StopInstanceBody, signal?: AbortSignal): Promise<void> {
    await this.peers.call(address, 'POST', internalRoutes.stopInstance, { json: body, signal, timeoutMs: slow.stop });
  }

  /**
   * Ask the member holding the instances to move them; resolves once the move is done, rejects with a
   * `RemoteMoveError` saying how it failed. `onLine` sees each phase and byte count as the holder reports it.
   */
  async runMove(address: string, body: RunMoveBody, signal: AbortSignal | undefined, onLine: (line: RunMoveProgressLine) => void = () => undefined): Promise<void> {
    // `signal` cancels the move, but the answer still says what happened: a move may commit before the
    // cancel reaches it, and then it finishes (starts on the target, deletes its source copy) before it
    // answers. The connection is dropped (which cancels too) only if the cancel cannot be delivered or the
    // holder takes longer than `cancelGraceMs` to settle.
    signal?.throwIfAborted();
    const run = randomUUID();
    const hangUp = new AbortController();
    let grace: NodeJS.Timeout | undefined;
    const cancel = (): void => {
      this.peers.call(address, 'POST', internalRoutes.cancelMove.replace(':run', run), { timeoutMs: 15_000 }).then(
        () => {
          grace = setTimeout(() => hangUp.abort(signal?.reason), cancelGraceMs);
          grace.unref();
        },
        () => hangUp.abort(signal?.reason),
      );
    };
    const settled = (): void => {
      signal?.removeEventListener('abort', cancel);
      clearTimeout(grace);
    };
    signal?.addEventListener('abort', cancel, { once: true });
    const stream = await this.peers.stream(address, internalRoutes.runMove, { method: 'POST', json: { ...body, run }, signal: hangUp.signal, timeoutMs: slow.stop }).catch((err: unknown) => {
      settled();
      throw err;
    });
    let buffered = '';
    let outcome: RunMoveLine | null = null;
    try {
      for await (const chunk of stream) {
        buffered += (chunk as Buffer).toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const text = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (text.trim() === '') continue;
          const line = JSON.parse(text) as RunMoveLine;
          if ('ok' in line) outcome = line;
          else onLine(line as RunMoveProgressLine);
        }
      }
    } catch (err) {
      if (hangUp.signal.aborted) throw err;
      throw new RemoteMoveError('unreachable', `the connection to the member at ${address} broke during the move: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      settled();
    }
    if (!outcome) throw new RemoteMoveError('unreachable', `the member at ${address} ended the move without an outcome (it may have restarted)`);
    if (!('ok' in outcome) || outcome.ok) return;
    throw new RemoteMoveError(outcome.failure, outcome.error);
  }

  /** The receiving end of move `moveId` on the member at `address`. */
  moveTarget(address: string, moveId: string): MoveTarget {
    return new MoveTarget(this.peers, address, moveId);
  }
}

/** The target side of one move, as the source calls it. */
export class MoveTarget {
  private readonly base: string;

  constructor(
    private readonly peers: PeerClient,
    readonly address: string,
    readonly moveId: string,
  ) {
    this.base = `/internal/moves/${encodeURIComponent(moveId)}`;
  }

  /**
   * Clear stale copies of `refs` on the target, have it check that each pool can take what `pools` says (a refusal is a
   * `PeerError` with status 507 naming the bytes or inodes needed and free), and open the move's staging.
   */
  async prepare(refs: VolumeRef[], pools: Record<string, PrepareBody['need']>, signal?: AbortSignal, stream?: string): Promise<PrepareAnswer> {
    const need = { bytes: 0, inodes: 0 };
    for (const f of Object.values(pools)) {
      need.bytes += f.bytes;
      need.inodes += f.inodes;
    }
    const body: PrepareBody = { refs, need, pools, ...(stream !== undefined ? { stream } : {}) };
    const answer = (await this.peers.call(this.address, 'POST', `${this.base}/prepare`, { json: body, signal })) as Partial<PrepareAnswer> | null;
    // A member that predates stream formats answers nothing about them: tar.
    return { stream: typeof answer?.stream === 'string' ? answer.stream : null };
  }

  /** Stream one volume's tar (a cold copy) into staging; returns every entry as it landed there. */
  async sendVolume(ref: VolumeRef, body: Readable, signal?: AbortSignal): Promise<ReceivedVolume> {
    return (await this.peers.call(this.address, 'PUT', `${this.base}/volume?${refQuery(ref).toString()}`, { body, signal, timeoutMs: slow.stream })) as ReceivedVolume;
  }

  /** Stream one pre-copy pass of a volume (`fresh`: into a new, empty staging); returns what the target received. */
  async sendDelta(ref: VolumeRef, body: Readable, fresh: boolean, signal?: AbortSignal): Promise<StreamDigest> {
    const q = refQuery(ref);
    if (fresh) q.set('fresh', '1');
    return (await this.peers.call(this.address, 'PUT', `${this.base}/delta?${q.toString()}`, { body, signal, timeoutMs: slow.stream })) as StreamDigest;
  }

  /** Stream one volume in the format `prepare` agreed on (`fresh`: in full, else against the one sent before); returns what the target received. */
  async sendStream(ref: VolumeRef, body: Readable, fresh: boolean, signal?: AbortSignal): Promise<StreamDigest> {
    const q = refQuery(ref);
    if (fresh) q.set('fresh', '1');
    return (await this.peers.call(this.address, 'PUT', `${this.base}/stream?${q.toString()}`, { body, signal, timeoutMs: slow.stream })) as StreamDigest;
  }

  /** Remove paths from a volume's staging (gone at the source since the last pass). */
  async deletePaths(ref: VolumeRef, paths: string[], signal?: AbortSignal): Promise<void> {
    await this.peers.call(this.address, 'POST', `${this.base}/delete`, { json: { ref, paths }, signal });
  }

  /** The per-entry digest of a volume's staged tree. */
  async digest(ref: VolumeRef, signal?: AbortSignal): Promise<TreeEntry[]> {
    return (await this.peers.call(this.address, 'POST', `${this.base}/digest`, { json: { ref }, signal, timeoutMs: slow.digest })) as TreeEntry[];
  }

  /** Have the target digest a volume's staging now, so the digest after the stop reads only what changed. */
  async warmDigest(ref: VolumeRef, signal?: AbortSignal): Promise<void> {
    await this.peers.call(this.address, 'POST', `${this.base}/digest`, { json: { ref, warm: true }, signal, timeoutMs: slow.digest });
  }

  /** Make every staged volume durable and put it in place (as long as that takes: a commit fsyncs whole trees). */
  async commit(signal?: AbortSignal): Promise<void> {
    await this.peers.call(this.address, 'POST', `${this.base}/commit`, { json: {}, signal, timeoutMs: slow.commit });
  }

  /** Drop everything the move left on the target (unless the store says it belongs there now). */
  async discard(body: DiscardBody, signal?: AbortSignal): Promise<void> {
    await this.peers.call(this.address, 'POST', `${this.base}/discard`, { json: body, signal });
  }
}

function refQuery(ref: VolumeRef): URLSearchParams {
  const q = new URLSearchParams({ type: ref.type, project: ref.project, name: ref.name });
  if (ref.snapshot !== undefined) q.set('snapshot', ref.snapshot);
  if (ref.pool !== undefined) q.set('pool', ref.pool);
  return q;
}
