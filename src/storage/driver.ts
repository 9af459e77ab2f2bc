// The storage driver interface: a member's pool and the volumes in it.

import type { Readable } from 'node:stream';

/** Volume kinds in a pool, as LXD names them in the API. */
export type VolumeType = 'container' | 'custom';

/**
 * Which volume. Root volumes have type `container` and the instance's name; a snapshot of a root volume is
 * the same ref with `snapshot` set to the snapshot's name (a volume of its own, as LXD's `container` snapshots).
 */
export interface VolumeRef {
  type: VolumeType;
  project: string;
  name: string;
  /** Set for a snapshot: its name. Only `container` volumes have snapshots. */
  snapshot?: string;
  /**
   * The pool holding it, for code that serves every pool of a member (moves, the capacity report); absent:
   * `default`. A driver, being one pool, ignores it.
   */
  pool?: string;
}

/** The pool every member has from the start (and the one a ref without `pool` names). */
export const defaultPool = 'default';

/** The pool a ref names. */
export function poolOf(ref: Pick<VolumeRef, 'pool'>): string {
  return ref.pool ?? defaultPool;
}

/** One key per volume and per snapshot (`pool/type/project/name[/snapshot]`): what maps, capacity reports and logs key on. */
export function volumeKey(ref: VolumeRef): string {
  const base = `${poolOf(ref)}/${ref.type}/${ref.project}/${ref.name}`;
  return ref.snapshot === undefined ? base : `${base}/${ref.snapshot}`;
}

/** An instance's root volume (on `pool`) and its snapshots, in that order: what a move carries and checks for the instance. */
export function rootVolumeRefs(project: string, name: string, snapshots: readonly string[], pool: string = defaultPool): VolumeRef[] {
  const root: VolumeRef = { type: 'container', project, name, pool };
  return [root, ...snapshots.map((s) => snapshotRef(root, s))];
}

/** The ref of snapshot `snapshot` of the volume `ref` (same pool). */
export function snapshotRef(ref: VolumeRef, snapshot: string): VolumeRef {
  const out: VolumeRef = { type: ref.type, project: ref.project, name: ref.name, snapshot };
  if (ref.pool !== undefined) out.pool = ref.pool;
  return out;
}

/** A custom volume as journals and plans name it: `<pool>/<name>`. */
export function volumeLabel(pool: string, name: string): string {
  return `${pool}/${name}`;
}

/** The pool and name of a custom volume label; a bare name (a journal written before pools) is on `default`. */
export function parseVolumeLabel(label: string): { pool: string; name: string } {
  const i = label.indexOf('/');
  return i < 0 ? { pool: defaultPool, name: label } : { pool: label.slice(0, i), name: label.slice(i + 1) };
}

/** The ref of a custom volume named by its label (`<pool>/<name>`). */
export function customRef(project: string, label: string): VolumeRef {
  const { pool, name } = parseVolumeLabel(label);
  return { type: 'custom', project, name, pool };
}

/** Capacity of a pool's backing file system. */
export interface PoolUsage {
  totalBytes: number;
  usedBytes: number;
  freeBytes: number;
  /** Inodes that can still be created; null when the file system does not count them. */
  freeInodes: number | null;
}

/** What a copy of a volume takes on a pool, to check before copying that the pool can hold it. */
export interface VolumeFootprint {
  /** Its data in whole blocks (see `entryFootprint`). */
  bytes: number;
  /** One per file, directory and symlink (hard links share one, counted once per path: an upper bound). */
  inodes: number;
}

/** The allocation unit footprints count in: the block size of the common Linux file systems and tmpfs pages. */
const footprintBlock = 4096;
/** Link targets shorter than this sit in the inode itself on ext4 (and on tmpfs, in its small inline space). */
const inlineLinkTarget = 60;

/**
 * Bytes one entry takes on a pool once a copy writes it: a file's data rounded up to whole blocks (file
 * systems allocate blocks, and a copy writes sparse files out in full), a block for a directory, a block
 * for a symlink whose target does not fit in its inode. Placement and the free-space check before a copy
 * both count this, so that what fits by one also fits by the other.
 */
export function entryFootprint(kind: 'file' | 'dir' | 'link', size: number): number {
  if (kind === 'file') return Math.ceil(size / footprintBlock) * footprintBlock;
  if (kind === 'dir') return footprintBlock;
  return size >= inlineLinkTarget ? footprintBlock : 0;
}

/** Finds a pool of this member by name; throws (404, LXD's words) when the member has no such pool. */
export type PoolLookup = (name: string) => StorageDriver;

/**
 * A read-only point-in-time copy of a volume that a pool sends from (`VolumeStreams.sendPoint`): a snapshot
 * the pool took for the send, or the volume's own snapshot when the ref is one.
 */
export interface SendPoint {
  ref: VolumeRef;
  /** Where the read-only copy is. */
  path: string;
  /** True if the pool took it for this send (and `releaseSendPoint` removes it); false for a snapshot of the volume's own. */
  owned: boolean;
}

/**
 * What a pool that can stream volumes in a format of its file system (btrfs send/receive) offers moves: a
 * move between two pools that speak the same `format` carries extents instead of files, and a pre-copy's
 * later passes only what changed since the previous pass's send point. Optional: pools without it move by tar.
 */
export interface VolumeStreams {
  /** The stream format; a move uses it only when the target's pool answers the same one. */
  readonly format: string;
  /** A read-only copy of `ref` as it is now, to send from (and, later, to send the next pass incrementally against). */
  sendPoint(ref: VolumeRef, moveId: string): Promise<SendPoint>;
  /** The stream of `point`; with `parent` (an earlier point of the same volume the target received), only what changed since it. */
  send(point: SendPoint, parent?: SendPoint): Readable;
  /** Remove a send point the pool took (a volume's own snapshot stays). */
  releaseSendPoint(point: SendPoint): Promise<void>;
  /**
   * Receive a stream of `ref` into staging for move `moveId` and answer the staging directory (writable, to
   * be committed with `commitStaging`). `fresh`: the first stream of the volume in this move (whatever an
   * earlier attempt left goes); otherwise the stream is incremental against the one received before.
   */
  receive(ref: VolumeRef, moveId: string, stream: Readable, fresh: boolean): Promise<string>;
}

/** A storage pool driver on one member. */
export interface StorageDriver {
  readonly driver: string;
  readonly poolName: string;
  /** Create the pool's directories if missing. */
  init(): Promise<void>;
  /** Directory holding the volume's (or the snapshot's) files. */
  volumePath(ref: VolumeRef): string;
  createVolume(ref: VolumeRef): Promise<void>;
  volumeExists(ref: VolumeRef): Promise<boolean>;
  /**
   * Remove the volume and all its files; with a snapshot ref, that snapshot (which is how snapshots are
   * deleted; a volume's own deletion leaves its snapshots alone). Missing volumes are not an error.
   */
  deleteVolume(ref: VolumeRef): Promise<void>;
  /**
   * Make snapshot `snapshot.snapshot` of its volume: a copy of the volume as it is now, taken while its
   * instance may be running (as LXD's dir driver does: no freeze, files that vanish during the copy are
   * left out), durable before it appears. Fails if the snapshot exists.
   */
  createSnapshot(snapshot: VolumeRef): Promise<void>;
  /** Replace the volume's content with a copy of the snapshot, at once (a crash leaves one or the other); the snapshot stays. */
  restoreSnapshot(snapshot: VolumeRef): Promise<void>;
  /** Give a snapshot another name; fails if that name is taken. */
  renameSnapshot(snapshot: VolumeRef, newName: string): Promise<void>;
  /** Names of the snapshots of volume `ref` in the pool, sorted. */
  listSnapshots(ref: VolumeRef): Promise<string[]>;
  /** Bytes used by the volume's files. */
  volumeUsage(ref: VolumeRef): Promise<number>;
  /** What a copy of the volume would take on a pool (blocks and inodes); placement counts it. */
  volumeFootprint(ref: VolumeRef): Promise<VolumeFootprint>;
  poolUsage(): Promise<PoolUsage>;
  /** A fresh, empty staging directory for an incoming copy of `ref`, on the same file system. */
  createStaging(ref: VolumeRef, moveId: string): Promise<string>;
  /** Atomically make a staging directory the volume (fsynced first). Fails if the volume exists. */
  commitStaging(ref: VolumeRef, stagingPath: string): Promise<void>;
  /** Remove a staging directory. */
  discardStaging(stagingPath: string): Promise<void>;
  /** Staging directories left over (for cleanup after a crash), with the move id each belongs to. */
  listStaging(): Promise<{ path: string; moveId: string }[]>;
  /** Every volume present in the pool, snapshots included (as snapshot refs). */
  listVolumes(): Promise<VolumeRef[]>;
  /** Finish deletions that failed half way (what a later retry of `deleteVolume` no longer sees), not those under way. */
  emptyTrash(): Promise<void>;
  /**
   * Remove what the pool itself made (its directories, a loop file), once it holds no volume: the pool is
   * being deleted. Optional: without it, deleting a pool removes its default directory and nothing else.
   */
  destroy?(): Promise<void>;

  /** Streams of the pool's own format (btrfs send/receive), if it has one; moves use tar otherwise. */
  readonly streams?: VolumeStreams;
}
