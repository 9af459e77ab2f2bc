// Moving instances between members: the primitive that user moves, evacuation and restore all use.
//
// Run by the member that holds the instance (the source):
//   1. journal the intent under each instance's move key (one transaction, guarded by revisions);
//   2. stop the instances cleanly (their `volatile.last_state.power` is kept);
//   3. the target checks that its pool can take the copy (bytes and inodes; 507 if not), then every volume
//      (root and attached custom volumes) streams as tar over member-to-member HTTPS into a staging
//      directory there. The source hashes each file as it packs it; the target hashes each file as it
//      writes it, fails on any write error, fsyncs, and answers every entry as it landed (kind, mode,
//      owner as root, size, content): the source compares that with what it packed, so what is committed
//      is what is on the target's disk, not merely what crossed the wire;
//      between two pools that stream in the same format (both btrfs: the source offers it when it prepares
//      the target, which answers whether its pool receives it), every volume goes as a `btrfs send` stream
//      instead, and the staged copy is checked entry by entry afterwards as a pre-copy's is (streamed.ts);
//   4. the target makes the staging directories durable and renames them into place;
//   5. one store transaction flips `location` (and the origin key) — only while the target is Online;
//   6. start on the target what was running, delete the source copies, clear the journal (retried until
//      it succeeds: the instance answers 409 while its journal stays).
// A volume on a remote (`shared`) pool is at the same path for both members: it is neither copied nor ever
// deleted by a move. When every volume is on one (a relink), steps 3 and 4 vanish: the stop is the downtime.
// With `precopy` (precopy.ts) the volumes are copied while the instances still run before step 2, and step
// 3 sends only what changed, then checks the whole copy; the journal and the rest are the same.
// A crash anywhere is repaired by `recover()`: before the commit the move is rolled back (the target's
// copies are garbage), after it the move is finished. The source copy is never deleted before step 5.
// A target the rollback cannot reach removes what the move left by itself (`sweepLeftovers`), once the
// move is no longer journaled.
// Only the commit (step 5) waits for the disk: it must be durable before step 6 deletes the source copy. The
// journal's other writes commit relaxed (see the store's TxnOptions): a power cut that loses one leaves the
// source copy in place, and the commit, when it comes, carries every one before it to disk.

import type { MoveObserver } from '../metrics/metrics.js';
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { Store, Op, Compare, TxnOptions, Watch } from '../store/store.js';
import { keys, type InstanceRecord, type MoveJournal, type VolumeRecord, type MemberRecord, type PoolMemberRecord } from '../store/schema.js';
import { customRef, defaultPool, parseVolumeLabel, poolOf, rootVolumeRefs, snapshotRef, volumeKey, volumeLabel, type StorageDriver, type VolumeFootprint, type VolumeRef, type VolumeStreams } from '../storage/driver.js';
import type { InstanceService } from '../instances/service.js';
import { attachedVolumes, rootPool } from '../config/devices.js';
import { expandInstance } from '../config/expand.js';
import { PeerError, PeerUnreachableError } from '../cluster/peers.js';
import type { InternalClient, MoveTarget, PrepareAnswer, ReceivedVolume, StreamDigest, TreeEntry } from '../cluster/internal.js';
import type { ClusterService } from '../cluster/members.js';
import type { EventBus } from '../operations/events.js';
import type { Logger } from '../util/log.js';
import { KeyedMutex } from '../util/mutex.js';
import { moveSweepIntervalMs } from '../config/env.js';
import { ApiError, errors } from '../errors/index.js';
import { Precopy, precopyFits } from './precopy.js';
import { isRemotePool } from '../storage/pools.js';
import { applyPass, firstDifference, forgetStagingDigest, HashCounter, packEntries, poolFootprints, receiveCopy, scanTree, UnpackError } from './tree.js';

/** What to move and how. */
export interface MoveRequest {
  /** Instances that move together (they share a custom volume); usually one. */
  instances: { project: string; name: string }[];
  target: string;
  /** Set `volatile.evacuate.origin` to this on commit, unless already set (evacuation). */
  origin?: string | null;
  /** Remove `volatile.evacuate.origin` on commit (restore). */
  clearOrigin?: boolean;
  /** The target may be Restoring (a member's own restore pulling instances home). */
  allowRestoringTarget?: boolean;
  /** Start on the target what had `volatile.last_state.power=RUNNING`, not only what runs now (evacuation, restore). */
  honourLastState?: boolean;
  /** Kill instead of a clean stop. */
  forceStop?: boolean;
  /** Copy while running first, then stop and send what changed (precopy.ts), if every driver can and one runs. */
  precopy?: boolean;
  /** The evacuation/restore run this belongs to. */
  evacuation?: string | null;
  /**
   * The term of the drainer that ordered the move: its journal and its commit are written only while that
   * term lasts, so a drainer cut off from the cluster can never have a move committed once its lease is gone.
   */
  fence?: { key: string; createRevision: number };
  /** Cancels the move if it has not committed yet. */
  signal?: AbortSignal;
  /** Bytes sent so far out of the total, as the copy goes. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  /** Called when each phase begins (for progress texts). */
  onPhase?: (phase: 'stopping' | 'copying' | 'starting') => void;
}

/** The move was refused or undone; nothing changed (the instance is whole at its source). */
export class MoveAbortedError extends ApiError {
  /**
   * @param targetUnavailable the target cannot take the instance now (it went away, stopped taking
   *   instances, or has no room): an evacuation places the instance elsewhere.
   * @param status the API status (default 503 when the target is unavailable, else 400).
   */
  constructor(
    message: string,
    readonly targetUnavailable = false,
    status?: number,
  ) {
    super(status ?? (targetUnavailable ? 503 : 400), message);
    this.name = 'MoveAbortedError';
  }
}

/** Journal writes other than the commit (see the header). */
const relaxed: TxnOptions = { durability: 'relaxed' };

/** Another move of the instance is journaled (still running, or waiting for its recovery). */
export class MoveBusyError extends ApiError {
  constructor(name: string) {
    super(409, `Instance "${name}" changed or is already being moved; try again`);
    this.name = 'MoveBusyError';
  }
}

/** The drainer term that ordered a move ended before the move could commit. */
export class FenceLostError extends ApiError {
  constructor() {
    super(409, 'the drainer that ordered this move is no longer the leader; the move was undone');
    this.name = 'FenceLostError';
  }
}

/** How a failed move is reported to the drainer that ordered it (its retry decision). */
export function moveFailureKind(err: unknown): 'busy' | 'target-unavailable' | 'failed' {
  if (err instanceof MoveBusyError) return 'busy';
  if (err instanceof MoveAbortedError && err.targetUnavailable) return 'target-unavailable';
  return 'failed';
}

/** Watches a move from the outside (see Migrator.watchMove). */
interface MoveWatchdog {
  /** Aborted once the move can no longer lead anywhere. */
  signal: AbortSignal;
  /** Aborted once the target is Offline (even after the move stopped for another reason). */
  targetGone: AbortSignal;
  /** Why, once it is so: the error the move fails with. */
  reason(): Error | null;
  close(): void;
}

/** Services the migrator uses. */
export interface MigratorDeps {
  store: Store;
  member: string;
  /** This member's pools: by name (each volume is in the pool its ref names), and all of them (sweeps). */
  pools: { get(name: string): StorageDriver; all(): ReadonlyMap<string, StorageDriver> };
  instances: InstanceService;
  internal: InternalClient;
  cluster: ClusterService;
  events: EventBus;
  log: Logger;
  /** Told of every move this member sends (the metrics). */
  observer?: MoveObserver;
}

/** Target side: a move whose copy is arriving, and what its pool must still hold for it. */
interface Incoming {
  /** What it takes on each pool. */
  need: Record<string, VolumeFootprint>;
  /** Stream bytes received so far (the part of `need.bytes` already written, roughly). */
  received: number;
}

/** Passes a stream through, counting its bytes; an error of `body` ends it too. */
function counted(body: Readable, onBytes: (n: number) => void): Readable {
  const tap = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
  body.on('error', (err) => tap.destroy(err));
  return body.pipe(tap);
}

/** Runs moves (as source) and receives them (as target). */
export class Migrator {
  /** Target side: staging directories per move id. */
  private readonly staging = new Map<string, Map<string, { ref: VolumeRef; path: string }>>();
  /** Target side: streams still being written into a move's staging, which a discard stops first. */
  private readonly writes = new Map<string, Set<{ body: Readable; discarded: AbortController; done: Promise<void> }>>();
  /** Target side: moves prepared here and not yet committed or discarded, with the room they still need. */
  private readonly incoming = new Map<string, Incoming>();
  /**
   * Target side: the volumes each move put in place here (committed staging). If the move is then undone
   * by a source that cannot reach this member, they are garbage; `sweepLeftovers` removes them.
   */
  private readonly placed = new Map<string, VolumeRef[]>();
  /** Target side: serialises what creates or removes one volume's copy (prepare, commit, discard, sweep). */
  private readonly volumeLocks = new KeyedMutex();
  private recoveryTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  /** Source side: ids of the moves this process is running; recovery leaves them alone. */
  private readonly active = new Set<string>();
  /**
   * Source side: moves whose instances run again on the target (their downtime is a metric): `running` if
   * the move stops them, `stopped` if the drainer stopped them just before (ahead of their copy slot).
   */
  private readonly interrupting = new WeakMap<MoveRequest, 'running' | 'stopped'>();

  constructor(private readonly deps: MigratorDeps) {}

  /** Move instances (held by this member) to `target`. Resolves once they are there (and started if they ran). */
  async move(req: MoveRequest): Promise<void> {
    const { instances: svc, observer } = this.deps;
    // What the metrics learn of it: bytes sent, and the downtime (from the stop to the end, started on the target).
    const began = performance.now();
    let stoppedAt: number | null = null;
    let bytes = 0;
    const observed: MoveRequest = {
      ...req,
      onProgress: (done, total) => {
        bytes = done;
        req.onProgress?.(done, total);
      },
      onPhase: (phase) => {
        if (phase === 'stopping' && stoppedAt === null) stoppedAt = performance.now();
        req.onPhase?.(phase);
      },
    };
    const lockKeys = req.instances.map((i) => `${i.project}/${i.name}`).sort();
    const runLocked = (i: number): Promise<void> =>
      i === lockKeys.length ? this.moveLocked(observed) : svc.locks.run(lockKeys[i] as string, () => runLocked(i + 1));
    observer?.moveStarted();
    let ok = false;
    try {
      await runLocked(0);
      ok = true;
    } finally {
      const end = performance.now();
      const how = this.interrupting.get(observed);
      const down = how === 'running' && stoppedAt !== null ? (end - stoppedAt) / 1000 : how === 'stopped' ? (end - began) / 1000 : null;
      observer?.moveFinished({ ok, seconds: (end - began) / 1000, bytes, downtimeSeconds: down });
    }
  }

  private async moveLocked(req: MoveRequest): Promise<void> {
    const { store, member, instances: svc, log } = this.deps;
    if (req.target === member) throw errors.badRequest('The instance is already on that member');
    const target = await this.targetMember(req.target, req.allowRestoringTarget === true);

    // Read the instances and their volumes.
    const loaded: { record: InstanceRecord; modRevision: number; running: boolean; pool: string }[] = [];
    // Custom volumes as `<pool>/<name>`: a move carries each into the pool of the same name on the target.
    const volumeNames = new Set<string>();
    for (const ref of req.instances) {
      const { record, modRevision } = await svc.load(ref.project, ref.name);
      if (record.location !== member) throw errors.badRequest(`Instance "${ref.name}" is not on member "${member}"`);
      const running = (await svc.state(record)).status === 'Running';
      const { devices } = await svc.expanded(record);
      loaded.push({ record, modRevision, running, pool: rootPool(devices) ?? defaultPool });
      for (const v of attachedVolumes(devices)) volumeNames.add(volumeLabel(v.pool, v.volume));
    }
    const project = loaded[0]?.record.project ?? 'default';
    await this.checkVolumeSharing(project, [...volumeNames], req.instances.map((i) => i.name));
    const volumeKvs = await Promise.all([...volumeNames].map((label) => {
      const v = parseVolumeLabel(label);
      return store.get(keys.volume(project, v.pool, v.name));
    }));
    // Each instance's root volume with its snapshots, then the custom volumes: every one copied and checked,
    // except those on a remote (`shared`) pool, which the target sees already: they move by the commit alone.
    const refs: VolumeRef[] = [
      ...loaded.flatMap((l) => rootVolumeRefs(l.record.project, l.record.name, (l.record.snapshots ?? []).map((s) => s.name), l.pool)),
      ...[...volumeNames].map((label) => customRef(project, label)),
    ].filter((ref) => !this.remote(ref));
    // A relink: every volume is on a remote pool, so the move is journal, stop, commit, start (no copy, no staging).
    const relink = refs.length === 0;
    // The target's copy check covers the pools copied into; the remote ones are checked here.
    await this.checkRelinkTarget(req.target, [...new Set([...loaded.map((l) => l.pool), ...[...volumeNames].map((label) => parseVolumeLabel(label).pool)])].filter((pool) => this.remote({ pool })));

    // 1. Journal.
    const id = randomUUID();
    const journals = new Map<string, MoveJournal>();
    for (const l of loaded) {
      journals.set(`${l.record.project}/${l.record.name}`, {
        id,
        project: l.record.project,
        instance: l.record.name,
        source: member,
        target: req.target,
        phase: 'started',
        wasRunning: l.running || (req.honourLastState === true && l.record.config['volatile.last_state.power'] === 'RUNNING'),
        volumes: [...volumeNames],
        pool: l.pool,
        origin: req.origin ?? null,
        clearOrigin: req.clearOrigin === true,
        evacuation: req.evacuation ?? null,
        startedAt: new Date().toISOString(),
        ...(relink ? { relink: true } : {}),
      });
    }
    const journalOps = (phase: MoveJournal['phase']): Op[] =>
      [...journals.values()].map((j) => ({ type: 'put' as const, key: keys.move(j.project, j.instance), value: JSON.stringify({ ...j, phase }) }));
    const fence: Compare[] = req.fence ? [req.fence] : [];
    const started = await store.txn(
      [
        ...fence,
        ...loaded.map((l): Compare => ({ key: keys.instance(l.record.project, l.record.name), modRevision: l.modRevision })),
        ...loaded.map((l): Compare => ({ key: keys.move(l.record.project, l.record.name), modRevision: 0 })),
      ],
      journalOps('started'),
      [],
      relaxed,
    );
    if (!started.succeeded) {
      if (req.fence && !(await this.fenceHolds(req.fence))) throw new FenceLostError();
      throw new MoveBusyError(req.instances[0]?.name ?? '');
    }

    // Each phase is written only over the one before: a journal that a drainer deleted (settling this move
    // as if this member were gone) is never written again, and the move then stops and rolls back.
    let journalRevision = started.revision;
    const advance = async (phase: MoveJournal['phase']): Promise<number> => {
      const r = await store.txn(loaded.map((l): Compare => ({ key: keys.move(l.record.project, l.record.name), modRevision: journalRevision })), journalOps(phase), [], relaxed);
      if (!r.succeeded) throw new MoveAbortedError('the move was settled elsewhere while it ran (its journal is gone)');
      journalRevision = r.revision;
      return r.revision;
    };

    // Recovery (which may run meanwhile, retrying an earlier failure) leaves this move alone.
    this.active.add(id);
    const link = this.deps.internal.moveTarget(target.address, id);
    const watchdog = await this.watchMove(req.target, req.fence);
    const signal = req.signal ? AbortSignal.any([req.signal, watchdog.signal]) : watchdog.signal;
    let warm: Precopy | null = null;
    try {
      let committed = false;
      try {
        // 1b. Pre-copy (precopy.ts): copy the volumes while the instances still run; step 3 then sends only what changed.
        warm = !relink && req.precopy === true && precopyFits(svc, loaded)
          ? new Precopy({ moveId: id, refs, volumePath: (ref) => this.pool(ref).volumePath(ref), streams: this.streamsOf(refs), link, target: req.target, instances: loaded.map((l) => l.record.name), signal, onProgress: req.onProgress, log })
          : null;
        if (warm) {
          req.onPhase?.('copying');
          await warm.copyWhileRunning();
        }

        // 2. Stop.
        if (loaded.some((l) => l.running)) this.interrupting.set(req, 'running');
        else if (req.honourLastState === true && loaded.some((l) => l.record.config['volatile.last_state.power'] === 'RUNNING')) this.interrupting.set(req, 'stopped');
        req.onPhase?.('stopping');
        await Promise.all(
          loaded
            .filter((l) => l.running)
            .map((l) => svc.stopUnlocked(l.record.project, l.record.name, { keepLastState: true, force: req.forceStop === true })),
        );
        await advance('stopped');
        this.throwIfAborted(signal);

        // 3. Stream (after a pre-copy, only what changed since its last pass).
        if (!relink) {
          req.onPhase?.('copying');
          if (warm) {
            await warm.finish(); // the last changes, then a check that the target's copy equals the source
          } else {
            await this.copyCold(refs, link, req, signal);
          }

          // 4. Target makes the copies durable.
          this.throwIfAborted(signal);
          await link.commit(signal);
        }
        const copiedRevision = await advance('copied');
        this.throwIfAborted(signal);

        // 5. Commit the new location, only while the target still takes instances.
        const guard = await this.targetGuard(req.target, req.allowRestoringTarget === true);
        const ops: Op[] = [...journalOps('committed')];
        for (const l of loaded) {
          const config = { ...l.record.config };
          if (req.clearOrigin) delete config['volatile.evacuate.origin'];
          else if (req.origin && !config['volatile.evacuate.origin']) config['volatile.evacuate.origin'] = req.origin;
          const next: InstanceRecord = { ...l.record, location: req.target, config };
          ops.push({ type: 'put', key: keys.instance(l.record.project, l.record.name), value: JSON.stringify(next) });
        }
        volumeKvs.forEach((kv) => {
          if (!kv) return;
          const vol = JSON.parse(kv.value) as VolumeRecord;
          ops.push({ type: 'put', key: kv.key, value: JSON.stringify({ ...vol, location: req.target }) });
        });
        // The journal must still be as written: a drainer settling this move (as if this member were gone)
        // deletes it, and then this commit must not happen.
        const commit = await store.txn(
          [
            ...guard,
            ...fence,
            ...loaded.map((l): Compare => ({ key: keys.instance(l.record.project, l.record.name), modRevision: l.modRevision })),
            ...loaded.map((l): Compare => ({ key: keys.move(l.record.project, l.record.name), modRevision: copiedRevision })),
          ],
          ops,
        );
        if (!commit.succeeded) {
          if (req.fence && !(await this.fenceHolds(req.fence))) throw new FenceLostError();
          throw new MoveAbortedError(`member "${req.target}" stopped taking instances during the move`, true);
        }
        committed = true;
      } catch (err) {
        await this.rollback(id, target.address, [...journals.values()], loaded.some((l) => l.running) && !req.evacuation, watchdog.targetGone).catch((e: unknown) => {
          log.error({ err: e, move: id }, 'rollback of a move failed; recovery will retry');
          this.retryRecoverySoon();
        });
        const cut = watchdog.reason();
        if (cut && !req.signal?.aborted) throw cut;
        if (err instanceof ApiError) throw err;
        if (req.signal?.aborted) throw err;
        // The target has no room (507): an evacuation places the instance on another member.
        if (err instanceof PeerError && err.status === 507) throw new MoveAbortedError(err.message, true, 507);
        throw new MoveAbortedError(err instanceof Error ? err.message : String(err), isUnreachable(err));
      }
      if (committed) {
        try {
          await this.finish([...journals.values()], target.address, req.allowRestoringTarget === true, req.onPhase);
        } catch (err) {
          // The move is done (the instance lives on the target now); what is left is cleaning up after it.
          // Until that succeeds the journal stays and the instance answers 409, so it is retried until it does.
          log.error({ err, move: id, target: req.target }, 'a committed move could not finish cleaning up; retrying');
          this.retryRecoverySoon();
        }
      }
    } finally {
      // What a streamed pre-copy kept for its next pass (read-only send points) goes, whatever the outcome.
      await warm?.close().catch((err: unknown) => log.warn({ err, move: id }, 'could not remove the send points of a move; the next start does'));
      watchdog.close();
      this.active.delete(id);
    }
  }

  /**
   * Stops a move's copy once it can lead nowhere: its target stopped heartbeating (a stream into a member cut
   * off from the network would otherwise hang until TCP gives up, many minutes later, holding the instances'
   * locks, so no later order could move them either), or the drainer term that ordered it ended (its commit is
   * fenced and would fail anyway). Both are watched in the store, so the copy ends as soon as the store knows.
   * A heartbeat that lapses and comes back within one more offline threshold (a target held up for a moment,
   * as a loaded machine does) is not a gone target: its copy goes on, and the commit checks the heartbeat anyway.
   */
  private async watchMove(target: string, fence: MoveRequest['fence']): Promise<MoveWatchdog> {
    const { store } = this.deps;
    const abort = new AbortController();
    const gone = new AbortController();
    let reason: Error | null = null;
    const stop = (why: Error): void => {
      if (why instanceof MoveAbortedError) gone.abort(why);
      if (reason) return;
      reason = why;
      abort.abort(why);
    };
    const watches: Watch[] = [];
    let lapse: NodeJS.Timeout | null = null;
    const offline = (): MoveAbortedError => new MoveAbortedError(`member "${target}" went offline during the move`, true);
    // Best effort: a store that cannot be read now fails the move's own writes soon enough.
    try {
      const graceMs = (await this.deps.cluster.offlineThreshold()) * 1000;
      const beat = await store.get(keys.heartbeat(target));
      if (!beat) stop(offline());
      else {
        watches.push(store.watch(beat.key, beat.modRevision, (events) => {
          for (const e of events) {
            if (e.kv.key !== beat.key) continue;
            if (e.type === 'delete' && lapse === null) {
              lapse = setTimeout(() => stop(offline()), graceMs);
              lapse.unref();
            } else if (e.type === 'put' && lapse !== null) {
              clearTimeout(lapse);
              lapse = null;
            }
          }
        }, () => undefined));
      }
      if (fence) {
        const leader = await store.get(fence.key);
        if (!leader || leader.createRevision !== fence.createRevision) stop(new FenceLostError());
        else {
          watches.push(store.watch(fence.key, leader.modRevision, (events) => {
            if (events.some((e) => e.kv.key === fence.key && (e.type === 'delete' || e.kv.createRevision !== fence.createRevision))) stop(new FenceLostError());
          }, () => undefined));
        }
      }
    } catch (err) {
      this.deps.log.warn({ err }, 'could not watch a move\'s target and drainer term; the move goes on unwatched');
    }
    return {
      signal: abort.signal,
      targetGone: gone.signal,
      reason: () => reason,
      close: () => {
        if (lapse !== null) clearTimeout(lapse);
        for (const w of watches) w.close();
      },
    };
  }

  /**
   * A cold copy: list the volumes, have the target check that its pool can take them, then stream each,
   * packed (and every file hashed) in one read, and compare what the target reports as landed with what
   * was packed, entry by entry. When the target's pool receives the stream format of this one (both
   * btrfs), the volumes go as such streams instead and the staged copy is checked as a pre-copy's is.
   */
  private async copyCold(refs: VolumeRef[], link: MoveTarget, req: MoveRequest, signal: AbortSignal): Promise<void> {
    const scans = [];
    for (const ref of refs) scans.push(await scanTree(this.pool(ref).volumePath(ref)));
    let total = 0;
    for (const scan of scans) for (const e of scan.values()) total += e.size;
    let done = 0;
    req.onProgress?.(0, total);
    const streams = this.streamsOf(refs);
    const answer = await link.prepare(refs, poolFootprints(refs, scans), signal, streams?.format);
    if (streams !== undefined && answer.stream === streams.format) {
      const { log } = this.deps;
      const streamed = new Precopy({ moveId: link.moveId, refs, volumePath: (ref) => this.pool(ref).volumePath(ref), streams, link, target: req.target, instances: req.instances.map((i) => i.name), signal, onProgress: req.onProgress, log });
      try {
        await streamed.copyStreamedCold(total);
      } finally {
        await streamed.close();
      }
      return;
    }
    for (const [i, ref] of refs.entries()) {
      this.throwIfAborted(signal);
      const packed: TreeEntry[] = [];
      const body = Readable.from(
        packEntries(this.pool(ref).volumePath(ref), [...(scans[i]?.keys() ?? [])], {
          onBytes: (n) => {
            done += n;
            req.onProgress?.(done, Math.max(total, done));
          },
          onEntry: (e) => packed.push(e),
        }),
        { objectMode: false },
      );
      const { landed } = await link.sendVolume(ref, body, signal);
      const difference = firstDifference(packed, landed);
      if (difference !== null) {
        throw new MoveAbortedError(`the copy of volume "${ref.name}" on "${req.target}" is not what was sent (${difference})`, false, 500);
      }
    }
  }

  /** After the commit: start on the target, delete the source copies, clear the journal. */
  private async finish(journals: MoveJournal[], targetAddress: string, allowRestoring: boolean, onPhase?: MoveRequest['onPhase']): Promise<void> {
    const { store, instances: svc, events } = this.deps;
    onPhase?.('starting');
    for (const j of journals) {
      if (!j.wasRunning) continue;
      try {
        await this.deps.internal.startInstance(targetAddress, { project: j.project, name: j.instance, allowRestoring, moveId: j.id });
      } catch (err) {
        // The instance is safe on the target; it is recorded RUNNING, so the target starts it at its next boot.
        this.deps.log.warn({ err, instance: j.instance }, 'moved instance did not start on its new member');
      }
    }
    const first = journals[0];
    if (!first) return;
    const refs: VolumeRef[] = [
      ...journals.map((j) => ({ type: 'container' as const, project: j.project, name: j.instance, pool: j.pool ?? defaultPool })),
      ...first.volumes.map((label) => customRef(first.project, label)),
    ];
    for (const j of journals) {
      // The driver's state here goes too (an LXC container's config directory, which `lxc-ls` lists);
      // the record already names the target, but the spec's paths are this member's.
      const kv = await store.get(keys.instance(j.project, j.instance));
      if (kv) {
        const record = JSON.parse(kv.value) as InstanceRecord;
        await svc.driver(record.type).delete(await svc.specOf(record)).catch((err: unknown) =>
          this.deps.log.warn({ err, instance: j.instance }, 'could not remove the driver state of a moved instance'),
        );
      }
      await rm(svc.runtimeDir(j.project, j.instance), { recursive: true, force: true });
    }
    // Snapshots first (as found here: the instance and every snapshot of it now live on the target). A volume
    // on a remote pool is the target's copy too: it stays.
    for (const ref of refs) {
      if (this.remote(ref)) continue;
      const pool = this.pool(ref);
      if (ref.type === 'container') for (const s of await pool.listSnapshots(ref)) await pool.deleteVolume(snapshotRef(ref, s));
      await pool.deleteVolume(ref);
    }
    await store.txn([], journals.map((j) => ({ type: 'delete' as const, key: keys.move(j.project, j.instance) })), [], relaxed);
    for (const j of journals) {
      events.lifecycle('instance-migrated', `/1.0/instances/${j.instance}`, { source: j.source, target: j.target }, j.project);
    }
  }

  /**
   * Before the commit: drop the target's copies, clear the journal, restart locally what ran (user moves;
   * the caller holds the instance locks). A target that cannot be reached does not keep the instance
   * hostage: nothing was committed there, so its copies are garbage its own sweep removes (`sweepLeftovers`).
   */
  private async rollback(id: string, targetAddress: string, journals: MoveJournal[], restart: boolean, targetGone?: AbortSignal): Promise<void> {
    const first = journals[0];
    if (!first) return;
    try {
      // A target gone Offline may not answer for a long time; it removes the copy itself when it is back.
      if (targetGone?.aborted) throw targetGone.reason;
      // A relink put nothing on the target.
      if (first.relink !== true) await this.deps.internal.moveTarget(targetAddress, id).discard({ project: first.project, instances: journals.map((j) => j.instance), volumes: first.volumes }, targetGone);
    } catch (err) {
      if (!(err instanceof PeerUnreachableError) && !targetGone?.aborted) throw err;
      this.deps.log.warn({ err, move: id }, 'move target unreachable; its partial copy is removed when it recovers');
    }
    await this.deps.store.txn([], journals.map((j) => ({ type: 'delete' as const, key: keys.move(j.project, j.instance) })), [], relaxed);
    if (restart) {
      for (const j of journals) {
        if (j.wasRunning) await this.deps.instances.startUnlocked(j.project, j.instance).catch(() => undefined);
      }
    }
  }

  /** The target member, if it may receive instances now. */
  private async targetMember(name: string, allowRestoring: boolean): Promise<MemberRecord> {
    const view = await this.deps.cluster.member(name);
    if (view.status === 'Offline') throw new MoveAbortedError(`Cluster member "${name}" is offline`, true);
    // Flagged as the target being unavailable, not as a refusal: a member planned as a target may have
    // begun its own evacuation since, and an evacuation then places the instance again.
    if (!(view.status === 'Online' || (allowRestoring && view.status === 'Restoring'))) {
      throw new MoveAbortedError(errors.memberEvacuated().message, true);
    }
    return view.record;
  }

  /** Compares that hold while the target member still takes instances. */
  private async targetGuard(name: string, allowRestoring: boolean): Promise<Compare[]> {
    const kv = await this.deps.store.get(keys.member(name));
    const heartbeat = await this.deps.store.get(keys.heartbeat(name));
    if (!kv || !heartbeat) throw new MoveAbortedError(`member "${name}" went offline during the move`, true);
    const m = JSON.parse(kv.value) as MemberRecord;
    if (!(m.state === 'Online' || (allowRestoring && m.state === 'Restoring'))) {
      throw new MoveAbortedError(`member "${name}" stopped taking instances during the move`, true);
    }
    // The member record as read (its state), and its heartbeat key alive since the same creation: each
    // heartbeat rewrites the key (a new modRevision every beat), but it keeps its createRevision for as long
    // as the member stays alive on one lease. Comparing the modRevision would abort a good move whenever a
    // heartbeat lands between this read and the commit.
    return [{ key: kv.key, modRevision: kv.modRevision }, { key: heartbeat.key, createRevision: heartbeat.createRevision }];
  }

  /** Refuse (400) moving these instances alone if a custom volume ties them to an instance left behind. */
  async checkMovable(project: string, names: string[]): Promise<void> {
    const volumes = new Set<string>();
    for (const name of names) {
      const { record } = await this.deps.instances.load(project, name);
      for (const v of attachedVolumes((await this.deps.instances.expanded(record)).devices)) volumes.add(volumeLabel(v.pool, v.volume));
    }
    await this.checkVolumeSharing(project, [...volumes], names);
  }

  /** A custom volume (`<pool>/<name>`) shared with an instance that is not moving along would be torn away from it. */
  private async checkVolumeSharing(project: string, volumes: string[], moving: string[]): Promise<void> {
    if (volumes.length === 0) return;
    const { kvs } = await this.deps.store.range(keys.instances(project));
    const profiles = await this.deps.instances.profileSet(project);
    for (const kv of kvs) {
      const other = JSON.parse(kv.value) as InstanceRecord;
      if (moving.includes(other.name)) continue;
      const shared = attachedVolumes(expandInstance(other, profiles).devices).find((v) => volumes.includes(volumeLabel(v.pool, v.volume)));
      if (shared) {
        throw errors.badRequest(`Storage volume "${shared.volume}" is also attached to instance "${other.name}"; move them together`);
      }
    }
  }

  private async fenceHolds(fence: { key: string; createRevision: number }): Promise<boolean> {
    const kv = await this.deps.store.get(fence.key);
    return kv !== null && kv.createRevision === fence.createRevision;
  }

  /** Whether `ref` is on a remote pool of this member (a move relinks it; no copy, no deletion). */
  private remote(ref: Pick<VolumeRef, 'pool'>): boolean {
    const pool = this.deps.pools.all().get(poolOf(ref));
    return pool !== undefined && isRemotePool(pool);
  }

  /** Refuse (400, naming the pool) a relink to a member where one of the remote pools `pools` is not created. */
  private async checkRelinkTarget(target: string, pools: string[]): Promise<void> {
    for (const pool of pools) {
      const kv = await this.deps.store.get(keys.poolMember(pool, target));
      const part = kv ? (JSON.parse(kv.value) as PoolMemberRecord) : null;
      if (part?.status !== 'Created') throw new MoveAbortedError(`member "${target}" has no storage pool "${pool}"`, true, 400);
    }
  }

  /** The pool of this member that `ref` names. */
  private pool(ref: Pick<VolumeRef, 'pool'>): StorageDriver {
    return this.deps.pools.get(poolOf(ref));
  }

  /** The stream format of `refs`' pool when they all live in one pool that has one: a move may use it instead of tar. */
  private streamsOf(refs: VolumeRef[]): VolumeStreams | undefined {
    const first = refs[0];
    if (first === undefined || refs.some((r) => poolOf(r) !== poolOf(first))) return undefined;
    return this.pool(first).streams;
  }

  /** Target: the pool a copy goes into; refused (a target without it cannot take the move) if this member has none of that name. */
  private targetPool(ref: Pick<VolumeRef, 'pool'>): StorageDriver {
    const name = poolOf(ref);
    if (!this.deps.pools.all().has(name)) throw new MoveAbortedError(`member "${this.deps.member}" has no storage pool "${name}"`, true, 400);
    return this.deps.pools.get(name);
  }

  private throwIfAborted(signal?: AbortSignal): void {
    if (signal?.aborted) throw new MoveAbortedError('move cancelled');
  }

  // ---- target side ----

  /**
   * Target: a move is about to send `refs`, which take `need` on a pool. Clear stale copies of them that
   * no record places here, then refuse (507) if the pool, less what moves already arriving still need,
   * cannot hold the copy; else open the move's staging. Answers whether the pool receives the stream format
   * the source offers (`stream`, its own pool's), which the move then uses instead of tar.
   */
  async prepareIncoming(id: string, refs: VolumeRef[], need: Record<string, VolumeFootprint>, stream?: string): Promise<PrepareAnswer> {
    await this.assertIncoming(id);
    const { member } = this.deps;
    for (const ref of refs) {
      const pool = this.targetPool(ref);
      if (isRemotePool(pool)) throw new MoveAbortedError(`volume "${ref.name}" is on remote pool "${pool.poolName}": it moves by relinking, never by a copy`, false, 400);
      await this.volumeLocks.run(volumeKey(ref), async () => {
        if ((await pool.volumeExists(ref)) && !(await this.ownedHere(ref))) await pool.deleteVolume(ref);
      });
    }
    for (const [name, needed] of Object.entries(need)) {
      const pool = this.targetPool({ pool: name });
      const usage = await pool.poolUsage();
      let heldBytes = 0;
      let heldInodes = 0;
      for (const [other, arriving] of this.incoming) {
        if (other === id) continue;
        const there = arriving.need[name];
        if (!there) continue;
        // What arrived so far counts against the whole move: a move into several pools is held to the safe side.
        heldBytes += Math.max(0, there.bytes - arriving.received);
        heldInodes += there.inodes;
      }
      const freeBytes = Math.max(0, usage.freeBytes - heldBytes);
      if (needed.bytes > freeBytes) throw errors.notEnoughSpace(member, pool.poolName, needed.bytes, freeBytes);
      if (usage.freeInodes !== null) {
        const freeInodes = Math.max(0, usage.freeInodes - heldInodes);
        if (needed.inodes > freeInodes) throw errors.notEnoughInodes(member, pool.poolName, needed.inodes, freeInodes);
      }
    }
    this.incoming.set(id, { need, received: 0 });
    this.staging.set(id, new Map());
    // The offered format is taken only if every pool these volumes go into receives it.
    const receives = stream !== undefined && refs.every((ref) => this.targetPool(ref).streams?.format === stream);
    return { stream: receives ? stream : null };
  }

  /**
   * Target: run `work`, which writes `body` into the staging of move `id`. A discard of the move (the
   * source gave up, e.g. a cancel) ends `body`, fires `work`'s signal (so it stops waiting for a sync of
   * what it wrote) and waits for `work` before it removes the staging, so no write races the removal.
   */
  async writing<T>(id: string, body: Readable, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const discarded = new AbortController();
    const running = work(discarded.signal);
    const entry = { body, discarded, done: running.then(() => undefined, () => undefined) };
    let set = this.writes.get(id);
    if (!set) this.writes.set(id, (set = new Set()));
    set.add(entry);
    try {
      return await running;
    } finally {
      set.delete(entry);
      if (set.size === 0 && this.writes.get(id) === set) this.writes.delete(id);
    }
  }

  /** Target: receive one volume's cold copy into staging; answers every entry as it landed, once durable. */
  async receiveVolume(id: string, ref: VolumeRef, body: Readable): Promise<ReceivedVolume> {
    return this.writing(id, body, async (discarded) => {
      await this.assertIncoming(id);
      const slots = this.staging.get(id);
      if (!slots) throw errors.badRequest(`move ${id} was not prepared here`);
      const path = await this.targetPool(ref).createStaging(ref, id);
      slots.set(volumeKey(ref), { ref, path });
      const { landed, syncMs } = await this.receiving(id, ref, () => receiveCopy(path, this.countReceived(id, body), discarded));
      this.deps.log.info({ move: id, volume: ref.name, entries: landed.length, syncMs }, 'copy made durable');
      return { landed };
    });
  }

  /** Target: apply one pre-copy pass of a volume to its staging (`fresh`: a new, empty one); answers the stream's digest. */
  async receiveDelta(id: string, ref: VolumeRef, body: Readable, fresh: boolean): Promise<StreamDigest> {
    return this.writing(id, body, async (discarded) => {
      const path = await this.stagingFor(id, ref, fresh);
      return this.receiving(id, ref, () => applyPass(path, this.countReceived(id, body), fresh, discarded));
    });
  }

  /**
   * Target: receive one volume in the pool's own stream format (btrfs send) into staging, in full (`fresh`)
   * or against the one received before; answers the stream's digest. The staged copy is then checked entry
   * by entry, as a pre-copy's is (`digest`).
   */
  async receiveStream(id: string, ref: VolumeRef, body: Readable, fresh: boolean): Promise<StreamDigest> {
    return this.writing(id, body, async () => {
      await this.assertIncoming(id);
      const { member } = this.deps;
      const pool = this.targetPool(ref);
      const streams = pool.streams;
      if (!streams) throw errors.badRequest(`pool "${pool.poolName}" of member "${member}" receives no ${pool.driver} streams; send tar`);
      const slots = this.staging.get(id);
      if (!slots) throw errors.badRequest(`move ${id} was not prepared here`);
      const key = volumeKey(ref);
      if (!fresh && !slots.has(key)) throw errors.badRequest(`volume "${ref.name}" of move ${id} has no copy here yet`);
      const tally = new HashCounter();
      const counted = this.countReceived(id, body);
      counted.on('error', (err) => tally.destroy(err));
      const path = await this.receiving(id, ref, () => streams.receive(ref, id, counted.pipe(tally), fresh));
      if (fresh) forgetStagingDigest(path);
      slots.set(key, { ref, path });
      return tally.digest();
    });
  }

  /** `body`, counting what arrives against the room move `id` holds on the pool. */
  private countReceived(id: string, body: Readable): Readable {
    return counted(body, (n) => {
      const arriving = this.incoming.get(id);
      if (arriving) arriving.received += n;
    });
  }

  /** Run a write into staging; a pool that fills up meanwhile (someone else wrote into it) fails it with a 507. */
  private async receiving<T>(id: string, ref: VolumeRef, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (err) {
      const code = err instanceof UnpackError ? err.code : errorCode(err);
      if (code !== 'ENOSPC' && code !== 'EDQUOT') throw err;
      this.deps.log.warn({ err, move: id, volume: ref.name }, 'the pool filled up while a copy was written');
      throw errors.ranOutOfSpace(this.deps.member, poolOf(ref), ref.name, err instanceof Error ? err.message : String(err));
    }
  }

  /** Target: the staging directory of `ref` in move `id`, made anew with `fresh`; pre-copy passes write into it again and again. */
  async stagingFor(id: string, ref: VolumeRef, fresh: boolean): Promise<string> {
    await this.assertIncoming(id);
    const slots = this.staging.get(id);
    if (!slots) throw errors.badRequest(`move ${id} was not prepared here`);
    const key = volumeKey(ref);
    if (fresh) slots.set(key, { ref, path: await this.targetPool(ref).createStaging(ref, id) });
    const slot = slots.get(key);
    if (!slot) throw errors.badRequest(`volume "${ref.name}" of move ${id} has no copy here yet`);
    return slot.path;
  }

  /** Target: make every staged volume of a move durable and put it in place. */
  async commitIncoming(id: string): Promise<void> {
    await this.assertIncoming(id);
    const slots = this.staging.get(id);
    if (!slots) throw errors.badRequest(`move ${id} has nothing staged here`);
    const placed = this.placed.get(id) ?? [];
    this.placed.set(id, placed);
    for (const { ref, path } of slots.values()) {
      await this.volumeLocks.run(volumeKey(ref), () => this.pool(ref).commitStaging(ref, path));
      placed.push(ref);
    }
    this.staging.delete(id);
    this.incoming.delete(id);
  }

  /** Target: drop everything a move left here, unless the store says the data now belongs here. */
  async discardIncoming(id: string, project: string, instances: string[], volumes: string[]): Promise<void> {
    await this.dropStaging(id);
    this.placed.delete(id);
    const refs: VolumeRef[] = [];
    // The instances' root volumes may be in any pool here (the discard does not say which): every pool is looked at.
    for (const name of instances) {
      for (const pool of this.deps.pools.all().keys()) {
        const root: VolumeRef = { type: 'container', project, name, pool };
        refs.push(...(await this.pool(root).listSnapshots(root)).map((s) => snapshotRef(root, s)), root);
      }
    }
    refs.push(...volumes.map((label) => customRef(project, label)).filter((ref) => this.deps.pools.all().has(poolOf(ref))));
    for (const ref of refs) await this.removeUnowned(ref, id);
  }

  /** Target: stop what still writes into a move's staging, remove its staging directories, forget it; returns how many went. */
  private async dropStaging(id: string): Promise<number> {
    const writes = [...(this.writes.get(id) ?? [])];
    for (const w of writes) {
      w.body.destroy(new Error('move discarded'));
      w.discarded.abort(new Error('move discarded'));
    }
    await Promise.all(writes.map((w) => w.done));
    let removed = 0;
    for (const pool of this.deps.pools.all().values()) {
      for (const s of await pool.listStaging()) {
        if (s.moveId !== id) continue;
        await pool.discardStaging(s.path);
        removed++;
      }
    }
    this.staging.delete(id);
    this.incoming.delete(id);
    return removed;
  }

  /**
   * Target: delete this member's copy of `ref` unless the store says the data lives here, or a move still
   * journaled (other than `undoing`, the move whose copy this is) is bringing it here: its commit may be
   * about to rename a fresh copy into place.
   */
  private async removeUnowned(ref: VolumeRef, undoing?: string): Promise<boolean> {
    const pool = this.deps.pools.all().get(poolOf(ref));
    // A remote pool's volumes are every member's: one not placed here is another member's, not garbage.
    if (!pool || isRemotePool(pool)) return false;
    // An instance being created here has its root volume before its record: under the instance's own lock
    // (which creation holds throughout) its volume is never taken for a copy a move left.
    if (ref.type === 'container') return this.deps.instances.locks.run(`${ref.project}/${ref.name}`, () => this.removeUnownedLocked(pool, ref, undoing));
    return this.removeUnownedLocked(pool, ref, undoing);
  }

  private async removeUnownedLocked(pool: StorageDriver, ref: VolumeRef, undoing?: string): Promise<boolean> {
    return this.volumeLocks.run(volumeKey(ref), async () => {
      if (!(await pool.volumeExists(ref)) || (await this.ownedHere(ref))) return false;
      const { kvs } = await this.deps.store.range(keys.moves());
      const arriving = kvs
        .map((kv) => JSON.parse(kv.value) as MoveJournal)
        .some(
          (j) =>
            j.id !== undoing &&
            j.target === this.deps.member &&
            j.project === ref.project &&
            (ref.type === 'container' ? j.instance === ref.name : j.volumes.some((label) => sameLabel(label, poolOf(ref), ref.name))),
        );
      if (arriving) return false;
      await pool.deleteVolume(ref);
      return true;
    });
  }

  private async assertIncoming(id: string): Promise<void> {
    const { kvs } = await this.deps.store.range(keys.moves());
    const j = kvs.map((kv) => JSON.parse(kv.value) as MoveJournal).find((x) => x.id === id);
    if (!j || j.target !== this.deps.member) throw errors.badRequest(`no move ${id} is headed to member "${this.deps.member}"`);
  }

  /** True if the store says this volume's data lives on this member (a snapshot's: its instance's, which lists it). */
  private async ownedHere(ref: VolumeRef): Promise<boolean> {
    const kv = await this.deps.store.get(ref.type === 'container' ? keys.instance(ref.project, ref.name) : keys.volume(ref.project, poolOf(ref), ref.name));
    if (!kv) return false;
    const record = JSON.parse(kv.value) as { location: string; snapshots?: { name: string }[] };
    if (ref.snapshot !== undefined && !(record.snapshots ?? []).some((s) => s.name === ref.snapshot)) return false;
    return record.location === this.deps.member;
  }

  /**
   * Target, every `ROOST_MOVE_SWEEP_INTERVAL_MS`: remove what moves that are no longer journaled left
   * here. A source that undid a move without reaching this member (it was cut off, or paused) leaves its
   * staging, and perhaps copies already put in place, which would otherwise stay until the next restart
   * (and, in place, make a new instance of that name fail with "already exists"). Only what this process
   * knows a move wrote is touched: never a volume being created (its directory exists before its record),
   * never the staging of a move still journaled.
   */
  async sweepLeftovers(): Promise<void> {
    const { store, log } = this.deps;
    const pools = [...this.deps.pools.all().values()];
    // Moves seen here first, the journal read after: a move prepared here was journaled before it
    // prepared, so one that is not journaled now is over for good (move ids are never reused).
    const seen = new Set<string>([...this.staging.keys(), ...this.incoming.keys(), ...this.writes.keys(), ...this.placed.keys()]);
    for (const pool of pools) for (const s of await pool.listStaging()) seen.add(s.moveId);
    if (seen.size > 0) {
      const { kvs } = await store.range(keys.moves());
      const live = new Set(kvs.map((kv) => (JSON.parse(kv.value) as MoveJournal).id));
      for (const id of seen) {
        if (live.has(id)) continue;
        const staging = await this.dropStaging(id);
        const removed: string[] = [];
        for (const ref of this.placed.get(id) ?? []) if (await this.removeUnowned(ref)) removed.push(ref.name);
        this.placed.delete(id);
        // A move that committed leaves nothing to remove; one undone without this member's knowledge does.
        if (staging > 0 || removed.length > 0) log.info({ move: id, staging, volumes: removed }, 'removed what a move no longer journaled left here');
      }
    }
    // Deletions that failed half way (a file that could not be removed for a while) are finished now.
    for (const pool of pools) await pool.emptyTrash();
  }

  // ---- crash recovery ----

  /**
   * At boot, before this member serves anything (so no create or incoming move can be half way): remove
   * staging left by moves no longer journaled, and volume copies that no record places here and no journal
   * is bringing here or taking away. Then sweeps what moves leave behind every interval (`sweepLeftovers`).
   */
  async sweepAtBoot(): Promise<void> {
    try {
      await this.sweepOrphansAtBoot();
    } finally {
      this.sweepPeriodically(); // even if this first sweep failed: the next ones may not
    }
  }

  private async sweepOrphansAtBoot(): Promise<void> {
    const { store, member, log } = this.deps;
    // One read for everything the sweep decides on, rather than a store round trip per volume.
    const { kvs } = await store.rangeMany([keys.moves(), keys.instances(), keys.volumes()]);
    const journals: MoveJournal[] = [];
    // Root volumes as `container/<project>/<name>` (in whichever pool), custom ones as `custom/<pool>/<project>/<name>`:
    // the volumes placed here or in flight.
    const keep = new Set<string>();
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.moves())) {
        const j = JSON.parse(kv.value) as MoveJournal;
        journals.push(j);
        keep.add(`container/${j.project}/${j.instance}`);
        for (const label of j.volumes) {
          const v = parseVolumeLabel(label);
          keep.add(`custom/${v.pool}/${j.project}/${v.name}`);
        }
      } else if (kv.key.startsWith(keys.instances())) {
        const r = JSON.parse(kv.value) as InstanceRecord;
        if (r.location === member) keep.add(`container/${r.project}/${r.name}`);
      } else {
        const v = JSON.parse(kv.value) as VolumeRecord;
        if (v.location === member) keep.add(`custom/${v.pool}/${v.project}/${v.name}`);
      }
    }
    const liveIds = new Set(journals.map((j) => j.id));
    for (const [name, pool] of this.deps.pools.all()) {
      for (const s of await pool.listStaging()) if (!liveIds.has(s.moveId)) await pool.discardStaging(s.path);
      // Every member sees a remote pool's volumes: one not placed here belongs to another member.
      if (isRemotePool(pool)) continue;
      for (const ref of await pool.listVolumes()) {
        if (keep.has(ref.type === 'container' ? `container/${ref.project}/${ref.name}` : `custom/${name}/${ref.project}/${ref.name}`)) continue;
        log.info({ volume: ref, pool: name }, 'deleting a volume copy that belongs to another member');
        await pool.deleteVolume(ref);
      }
    }
  }

  /** Run `sweepLeftovers` every `ROOST_MOVE_SWEEP_INTERVAL_MS` from now on (until `stop`). */
  private sweepPeriodically(): void {
    if (this.sweepTimer) return;
    const tick = (): void => {
      this.sweepTimer = setTimeout(() => {
        void this.sweepLeftovers()
          .catch((err: unknown) => this.deps.log.warn({ err }, 'sweeping what moves left behind failed; trying again later'))
          .finally(() => {
            if (this.sweepTimer) tick();
          });
      }, moveSweepIntervalMs());
      this.sweepTimer.unref();
    };
    tick();
  }

  /**
   * Finish or undo the moves this member (as source) left half done, except those it is running now.
   * Peers that cannot be reached are retried later.
   */
  async recover(): Promise<void> {
    const { store, member, log } = this.deps;
    const { kvs } = await store.rangeMany([keys.moves(), keys.instances()]);
    const journals = kvs.filter((kv) => kv.key.startsWith(keys.moves())).map((kv) => JSON.parse(kv.value) as MoveJournal);
    const records = new Map<string, InstanceRecord>();
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.instances())) {
        const r = JSON.parse(kv.value) as InstanceRecord;
        records.set(`${r.project}/${r.name}`, r);
      }
    }
    const byId = new Map<string, MoveJournal[]>();
    for (const j of journals) if (j.source === member && !this.active.has(j.id)) byId.set(j.id, [...(byId.get(j.id) ?? []), j]);
    let pending = false;
    for (const [id, group] of byId) {
      const first = group[0] as MoveJournal;
      const committed = group.every((j) => records.get(`${j.project}/${j.instance}`)?.location === j.target);
      try {
        const view = await this.deps.cluster.member(first.target);
        if (committed) {
          log.info({ move: id, target: first.target }, 'finishing a move committed before a restart');
          await this.finish(group, view.record.address, true);
        } else {
          log.info({ move: id, target: first.target }, 'rolling back a move interrupted before its commit');
          await this.rollback(id, view.record.address, group, false);
          // Boot adoption skipped these while journaled (and a retry runs after it): restart what ran.
          for (const j of group) {
            if (!j.wasRunning || j.evacuation) continue;
            await this.deps.instances.start(j.project, j.instance).catch((err: unknown) => log.warn({ err, instance: j.instance }, 'could not restart an instance after rolling back its move'));
          }
        }
      } catch (err) {
        pending = true;
        log.warn({ err, move: id }, 'move recovery must wait for its target');
      }
    }
    if (pending) this.retryRecoverySoon();
  }

  /** Run recovery again in 2 s (once, however often asked). */
  private retryRecoverySoon(): void {
    if (this.recoveryTimer) return;
    this.recoveryTimer = setTimeout(() => {
      this.recoveryTimer = null;
      void this.recover().catch((err: unknown) => this.deps.log.warn({ err }, 'move recovery failed'));
    }, 2000);
    this.recoveryTimer.unref();
  }

  /** Stop the recovery retry and sweep timers. */
  stop(): void {
    if (this.recoveryTimer) clearTimeout(this.recoveryTimer);
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = null;
  }
}

/** Whether a journal's volume label names volume `name` of pool `pool`. */
function sameLabel(label: string, pool: string, name: string): boolean {
  const v = parseVolumeLabel(label);
  return v.pool === pool && v.name === name;
}

function errorCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

function isUnreachable(err: unknown): boolean {
  return err instanceof Error && err.name === 'PeerUnreachableError';
}

