// Pre-copy: the lowest-downtime move Roost can make without checkpoint/restore (CRIU does not work on the
// kernels Roost targets), used for `live: true` user moves and `cluster.evacuate=live-migrate`. The source
// copies every volume while the instances still run, then, pass after pass while what changed keeps
// shrinking, only what changed; move.ts then stops the instances, and `finish` sends the last changes and
// checks that the target's copy equals the source's tree before move.ts commits exactly as for a cold move.
//
// Passes, all into the target's staging directory of the move (through `MoveTarget`, cluster/internal.ts;
// the receiving side, and the listing, packing and digesting of trees, are in tree.ts):
//   pass 1   sendDelta(fresh): a tar of every entry, into a fresh staging directory
//   pass n   deletePaths: paths gone (or whose kind changed) since the last pass, then sendDelta: a tar of
//            the entries that are new or whose stat changed
//   warm     warmDigest: the target digests its copy while the instances run
//   final    the same as pass n after the stop, then digest: the target answers the digest of its staging
//            tree (reading again only what changed since the warm digest), the source reads and hashes its
//            whole tree (while the final pass travels); differences are sent again, at most twice, else the
//            move aborts and rolls back.
// Each pass's stream is hashed on both sides, as cold copies are; the target gives every entry exactly its
// mode (and owner, as root) and fsyncs it, so the commit after the stop finds the copy already on disk.
// The source remembers what it sent as a manifest (relative path → kind, size, mtime, ctime, inode, mode).
// ctime is in it because chmod, chown and new hard links leave mtime alone; an entry whose ctime lay within
// a tenth of a second of the moment it was looked at is sent again, since a write in the same clock tick
// would leave its times unchanged. Writes that no time reflects (through mmap) are what the final check is for.
// Between two pools that stream volumes in their own format (btrfs send/receive; the target answers whether it
// can when the move is prepared), every pass above is instead a stream of each volume from a read-only send
// point, incremental against the previous pass's (streamed.ts): the last pass, after the stop, carries only
// the extents that changed. The final check and its repairs (as tar, into the writable staging copy) are the
// same. A cold copy between such pools is one full streamed pass and the same check (`copyStreamedCold`).
// Nothing here touches the journal: a crash during the passes is a crash before the commit, and the
// target's staging directory is removed by the rollback (or its own recovery) as for a cold move.

import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { MoveTarget, TreeEntry } from '../cluster/internal.js';
import type { InstanceService } from '../instances/service.js';
import { volumeKey, type VolumeRef, type VolumeStreams } from '../storage/driver.js';
import type { InstanceRecord } from '../store/schema.js';
import type { Logger } from '../util/log.js';
import { compareTrees, digestVolume, poolFootprints, packEntries, scanTree, type Changes, type Manifest, type Seen } from './tree.js';
import { StreamedVolumes } from './streamed.js';

/** Passes while the instances run after the first, full one; each must shrink what is left to send. */
const maxWarmPasses = 3;
/** Changes this small are left for the pass after the stop: another pass while running would not pay. */
const settledBytes = 1024 * 1024;
/**
 * An entry that changed this close (ns) before it was looked at may change again with the same times: file
 * times come from the kernel's coarse clock, one tick (at most 10 ms) behind; the rest is margin.
 */
const racyNs = 100_000_000n;
/** Rounds of re-sending what the final check found different before giving up. */
const maxRepairs = 2;
/** Deleted paths per request (the API takes 16 MiB of JSON). */
const deleteBatch = 5000;

/** What a pre-copy needs from the move that runs it. */
export interface PrecopyRequest {
  moveId: string;
  refs: VolumeRef[];
  /** Where each ref's files are on this member (in the pool it names). */
  volumePath: (ref: VolumeRef) => string;
  /** The stream format of the refs' pool, when they are all in one pool that has one (`streamsOf`). */
  streams?: VolumeStreams;
  /** The receiving end of the move. */
  link: MoveTarget;
  /** The target member's name (for messages). */
  target: string;
  /** The moving instances' names (for logs). */
  instances: string[];
  signal?: AbortSignal;
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  log: Logger;
}

/** Whether a move of these instances can pre-copy: every instance's driver can, and at least one runs. */
export function precopyFits(svc: InstanceService, loaded: { record: InstanceRecord; running: boolean }[]): boolean {
  return loaded.some((l) => l.running) && loaded.every((l) => svc.driver(l.record.type).capabilities.precopy);
}

/** The source side of one pre-copy: `copyWhileRunning` before the stop, `finish` after it. */
export class Precopy {
  /** Per volume, what the target holds now (as the source saw it when it sent it). */
  private readonly sent = new Map<string, Manifest>();
  private pass = 0;
  private bytesDone = 0;
  private bytesTotal = 0;
  /** Set once the target agreed to receive the pool's own stream format: passes stream volumes instead of tar. */
  private streamed: StreamedVolumes | null = null;

  constructor(private readonly req: PrecopyRequest) {}

  /** Pass 1 (everything), then passes of what changed while those keep shrinking and are not yet small. */
  async copyWhileRunning(): Promise<void> {
    const { link, refs, signal, streams } = this.req;
    const first = await this.scanAll(true);
    const answer = await link.prepare(refs, poolFootprints(refs, first.map((s) => s.now)), signal, streams?.format);
    this.bytesTotal = first.reduce((s, x) => s + x.changes.bytes, 0);
    this.req.onProgress?.(0, this.bytesTotal);
    if (streams !== undefined && answer.stream === streams.format) {
      this.streamed = this.streamedVolumes();
      await this.streamedPass(true);
      // A pass's size is known once sent: passes go on while the last one was not yet small and still shrinking.
      let last = Infinity;
      for (let i = 0; i < maxWarmPasses; i++) {
        this.throwIfAborted();
        const bytes = await this.streamedPass(true);
        if (bytes <= settledBytes || bytes >= last) break;
        last = bytes;
      }
    } else {
      await this.sendPass(first, true, true);
      let last = this.bytesTotal;
      for (let i = 0; i < maxWarmPasses; i++) {
        this.throwIfAborted();
        const scans = await this.scanAll(false);
        const bytes = scans.reduce((s, x) => s + x.changes.bytes, 0);
        // Small enough to send after the stop, or no longer shrinking: more passes would not cut the downtime.
        if (bytes <= settledBytes || bytes >= last) break;
        await this.sendPass(scans, true, false);
        last = bytes;
      }
    }
    // The target digests its copy now, while the instances run; after the stop it reads only the last pass.
    for (const ref of refs) await link.warmDigest(ref, signal);
  }

  /** After the stop: send the last changes, then make sure the target's copy equals the source's tree. */
  async finish(): Promise<void> {
    const check = this.startCheck();
    if (this.streamed) await this.streamedPass(false);
    else await this.sendPass(await this.scanAll(false), false, false);
    await this.check(check);
  }

  /**
   * A cold copy (the instances are stopped) to a target that agreed, when `prepare` was called, to receive the
   * pool's own stream format: one full streamed pass of `bytesTotal` file bytes, then the same check as after
   * a pre-copy.
   */
  async copyStreamedCold(bytesTotal: number): Promise<void> {
    this.streamed = this.streamedVolumes();
    this.bytesTotal = bytesTotal;
    const check = this.startCheck();
    await this.streamedPass(false);
    await this.check(check);
  }

  /** Remove what the source kept for later streamed passes (its send points); the move is over, done or undone. */
  async close(): Promise<void> {
    await this.streamed?.release();
  }

  /** The source's own digest of every volume, begun now: it needs only the stopped tree, so it runs while the last pass travels. */
  private startCheck(): { t0: number; local: Promise<{ value: TreeEntry[][]; ms: number }> } {
    const t0 = Date.now();
    const local = Promise.all(this.req.refs.map((ref) => digestVolume(this.req.volumePath(ref)))).then((value) => ({ value, ms: Date.now() - t0 }));
    local.catch(() => undefined); // awaited by `check`; a failure before that must not go unhandled
    return { t0, local };
  }

  /** Make sure the target's staged copy equals the source's tree, sending what differs again (as tar) at most `maxRepairs` times. */
  private async check({ t0, local }: ReturnType<Precopy['startCheck']>): Promise<void> {
    const { refs, link, moveId, signal, log } = this.req;
    const timed = <T>(p: Promise<T>): Promise<{ value: T; ms: number }> => p.then((value) => ({ value, ms: Date.now() - t0 }));
    const askDigest = (ref: VolumeRef): Promise<TreeEntry[]> => link.digest(ref, signal);
    const [{ value: mine, ms: sourceMs }, { value: theirs, ms: targetMs }] = await Promise.all([local, timed(Promise.all(refs.map(askDigest)))]);
    for (const [i, ref] of refs.entries()) {
      const source = mine[i] ?? [];
      let target = theirs[i] ?? [];
      for (let round = 0; ; round++) {
        const diff = compareTrees(source, target);
        if (diff.send.length === 0 && diff.deleted.length === 0) break;
        const first = diff.send[0] ?? diff.deleted[0] ?? '';
        if (round >= maxRepairs) {
          throw new Error(`the copy of volume "${ref.name}" on "${this.req.target}" still differs from the source after ${maxRepairs} repairs (e.g. "${first}")`);
        }
        // Only a change no timestamp showed (a write through mmap), or what a stream format cannot carry (a
        // subvolume nested in a btrfs volume), gets here; resend just those entries.
        log.warn({ move: moveId, volume: ref.name, differ: diff.send.length + diff.deleted.length, example: first }, 'pre-copy: target copy differs; sending those entries again');
        await this.send(ref, diff, false);
        target = await askDigest(ref);
      }
    }
    // Times since the stop: when the source's own digest and the target's were ready, and when all was checked.
    log.info({ move: moveId, instances: this.req.instances, target: this.req.target, passes: this.pass, stream: this.streamed ? this.req.streams?.format : 'tar', sourceDigestMs: sourceMs, targetDigestMs: targetMs, ms: Date.now() - t0 }, 'pre-copy verified');
  }

  /** The streamed passes of this move, in the format both pools speak. */
  private streamedVolumes(): StreamedVolumes {
    const { moveId, refs, streams, link, target, signal } = this.req;
    if (!streams) throw new Error('the pool of these volumes has no stream format');
    return new StreamedVolumes({
      moveId,
      refs,
      streams,
      link,
      target,
      signal,
      onBytes: (n) => {
        this.bytesDone += n;
        this.req.onProgress?.(this.bytesDone, Math.max(this.bytesTotal, this.bytesDone));
      },
    });
  }

  /** One streamed pass over every volume; returns the bytes it streamed. */
  private async streamedPass(running: boolean): Promise<number> {
    const streamed = this.streamed;
    if (!streamed) throw new Error('no streamed copy under way');
    this.pass++;
    const t0 = Date.now();
    const bytes = await streamed.pass();
    if (this.pass > 1) this.bytesTotal += bytes;
    const { moveId, instances, target, streams } = this.req;
    this.req.log.info({ move: moveId, instances, target, pass: this.pass, running, stream: streams?.format, bytes, ms: Date.now() - t0 }, 'streamed pass');
    return bytes;
  }

  /** List every volume and what changed in it since it was last sent. */
  private async scanAll(full: boolean): Promise<{ ref: VolumeRef; now: Manifest; changes: Changes }[]> {
    const out: { ref: VolumeRef; now: Manifest; changes: Changes }[] = [];
    for (const ref of this.req.refs) {
      const now = await scanTree(this.req.volumePath(ref));
      out.push({ ref, now, changes: changesSince(full ? null : (this.sent.get(volumeKey(ref)) ?? null), now) });
    }
    return out;
  }

  /** Send one pass over every volume; what was listed becomes what the target holds. */
  private async sendPass(scans: { ref: VolumeRef; now: Manifest; changes: Changes }[], running: boolean, fresh: boolean): Promise<void> {
    this.pass++;
    const t0 = Date.now();
    let bytes = 0;
    for (const s of scans) {
      this.throwIfAborted();
      if (!fresh) this.bytesTotal += s.changes.bytes;
      bytes += await this.send(s.ref, s.changes, fresh, s.now);
      this.sent.set(volumeKey(s.ref), s.now);
    }
    this.req.log.info(
      {
        move: this.req.moveId,
        instances: this.req.instances,
        target: this.req.target,
        pass: this.pass,
        running,
        files: scans.reduce((n, s) => n + s.changes.send.length, 0),
        deleted: scans.reduce((n, s) => n + s.changes.deleted.length, 0),
        bytes,
        ms: Date.now() - t0,
      },
      'pre-copy pass',
    );
  }

  /** Deletions, then a tar of `send`, for one volume; returns the bytes streamed. */
  private async send(ref: VolumeRef, changes: Changes, fresh: boolean, listed?: Manifest): Promise<number> {
    const { link, signal } = this.req;
    for (let i = 0; i < changes.deleted.length; i += deleteBatch) {
      await link.deletePaths(ref, changes.deleted.slice(i, i + deleteBatch), signal);
    }
    if (changes.send.length === 0 && !fresh) return 0;
    const hash = createHash('sha256');
    const tally = { bytes: 0 };
    const body = Readable.from(
      packEntries(this.req.volumePath(ref), changes.send, {
        ...(listed ? { listed } : {}),
        streamHash: hash,
        onBytes: (n) => {
          tally.bytes += n;
          this.bytesDone += n;
          this.req.onProgress?.(this.bytesDone, Math.max(this.bytesTotal, this.bytesDone));
        },
      }),
      { objectMode: false },
    );
    const remote = await link.sendDelta(ref, body, fresh, signal);
    if (remote.sha256 !== hash.digest('hex') || remote.bytes !== tally.bytes) {
      throw new Error(`pre-copy pass of volume "${ref.name}" arrived damaged on "${this.req.target}" (checksum mismatch)`);
    }
    return tally.bytes;
  }

  private throwIfAborted(): void {
    if (this.req.signal?.aborted) throw new Error('move cancelled');
  }
}

/** What to send so that a target holding `sent` (null: nothing) ends up holding `now`. */
function changesSince(sent: Manifest | null, now: Manifest): Changes {
  const send: string[] = [];
  let bytes = 0;
  for (const [rel, e] of now) {
    const was = sent?.get(rel);
    if (was && unchanged(was, e)) continue;
    send.push(rel);
    bytes += e.size;
  }
  const deleted: string[] = [];
  if (sent) {
    let gone: string | null = null; // a deleted directory takes what is below it along
    for (const [rel, was] of sent) {
      if (gone !== null && rel.startsWith(gone)) continue;
      if (now.get(rel)?.kind === was.kind) continue;
      deleted.push(rel);
      if (was.kind === 'dir') gone = `${rel}/`;
    }
  }
  return { send, deleted, bytes };
}

function unchanged(was: Seen, now: Seen): boolean {
  // Racy: a change in the same clock tick as the look would not have moved the times.
  if (was.ctimeNs >= was.atNs - racyNs) return false;
  return was.kind === now.kind && was.size === now.size && was.mode === now.mode && was.mtimeNs === now.mtimeNs && was.ctimeNs === now.ctimeNs && was.ino === now.ino;
}

// ---- small helpers ----
