// The source side of moves between two pools that stream volumes in their file system's own format (btrfs
// send | btrfs receive, `VolumeStreams` in storage/driver.ts), instead of tar. Used by pre-copy and cold
// copies alike (precopy.ts): each pass sends every volume from a fresh read-only send point, the first in
// full, later ones only what changed since the previous pass's point (`send -p`), which the target kept as
// the parent to apply them against. A snapshot of a volume never changes, so it is sent once; a volume's
// snapshots go first, oldest first, each against the one before, and then the volume against the newest, so
// that the target's copies share their extents as the source's do (and the stream carries each extent once). Each pass's
// stream is hashed on both ends, and the whole staged copy is checked entry by entry afterwards (precopy.ts)
// exactly as a tar copy is: btrfs send leaves out what it cannot carry (subvolumes nested in a volume).

import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { createHash } from 'node:crypto';
import type { MoveTarget } from '../cluster/internal.js';
import { volumeKey, type SendPoint, type VolumeRef, type VolumeStreams } from '../storage/driver.js';

/** What a streamed copy needs from the move that runs it. */
export interface StreamedCopyRequest {
  moveId: string;
  refs: VolumeRef[];
  streams: VolumeStreams;
  /** The receiving end of the move, which accepted `streams.format` when the move was prepared. */
  link: MoveTarget;
  /** The target member's name (for messages). */
  target: string;
  signal?: AbortSignal;
  /** Every byte streamed, as it goes (progress). */
  onBytes: (n: number) => void;
}

/** The send points of one move's volumes, pass after pass; `release` removes the last ones when the move is over. */
export class StreamedVolumes {
  /** Per volume, the point the target holds now: the parent of the next pass. */
  private readonly held = new Map<string, SendPoint>();

  constructor(private readonly req: StreamedCopyRequest) {}

  /** Send every volume (what changed since the last pass, or everything the first time); returns the bytes streamed. */
  async pass(): Promise<number> {
    const { refs, streams, link, moveId, signal } = this.req;
    let total = 0;
    /** Per volume (snapshots aside), the newest of its snapshots the target holds: the parent of the volume's first send. */
    const newestSnapshot = new Map<string, SendPoint>();
    const ordered = [...refs.filter((r) => r.snapshot !== undefined), ...refs.filter((r) => r.snapshot === undefined)];
    for (const ref of ordered) {
      if (signal?.aborted) throw new Error('move cancelled');
      const key = volumeKey(ref);
      const volume = volumeKey({ type: ref.type, project: ref.project, name: ref.name });
      const previous = this.held.get(key);
      if (previous && ref.snapshot !== undefined) {
        newestSnapshot.set(volume, previous); // a snapshot does not change: it was sent in full
        continue;
      }
      const parent = previous ?? newestSnapshot.get(volume);
      const point = await streams.sendPoint(ref, moveId);
      let bytes = 0;
      try {
        const hash = createHash('sha256');
        const body = tap(streams.send(point, parent), (chunk) => {
          hash.update(chunk);
          bytes += chunk.length;
          this.req.onBytes(chunk.length);
        });
        // `fresh`: this volume's first stream in the move, though it may be sent against one of its snapshots.
        const remote = await link.sendStream(ref, body, previous === undefined, signal);
        if (remote.sha256 !== hash.digest('hex') || remote.bytes !== bytes) {
          throw new Error(`the ${streams.format} stream of volume "${ref.name}" arrived damaged on "${this.req.target}" (checksum mismatch)`);
        }
      } catch (err) {
        await streams.releaseSendPoint(point).catch(() => undefined);
        throw err;
      }
      // The target applied this pass on top of the parent and keeps this one instead of the previous one.
      this.held.set(key, point);
      if (previous) await streams.releaseSendPoint(previous);
      if (ref.snapshot !== undefined) newestSnapshot.set(volume, point);
      total += bytes;
    }
    return total;
  }

  /** Remove the send points still held; the move is over (done or undone). */
  async release(): Promise<void> {
    const points = [...this.held.values()];
    this.held.clear();
    for (const point of points) await this.req.streams.releaseSendPoint(point);
  }
}

/** Passes `body` through, showing each chunk to `see`; an error of `body` ends it too. */
function tap(body: Readable, see: (chunk: Buffer) => void): Readable {
  const through = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
      see(chunk);
      cb(null, chunk);
    },
  });
  body.on('error', (err) => through.destroy(err));
  // The send stops if the request ends early (the target refused, or the move was cancelled).
  through.on('close', () => {
    if (!body.readableEnded) body.destroy();
  });
  return body.pipe(through);
}
