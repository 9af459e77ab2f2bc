// The storage driver interface: a member's pool and the volumes in it.

/** Volume kinds in a pool, as LXD names them in the API. */
export type VolumeType = 'container' | 'custom';

/** Which volume. Root volumes have type `container` and the instance's name. */
export interface VolumeRef {
  type: VolumeType;
  project: string;
  name: string;
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

/** A storage pool driver on one member. */
export interface StorageDriver {
  readonly driver: string;
  readonly poolName: string;
  /** Create the pool's directories if missing. */
  init(): Promise<void>;
  /** Directory holding the volume's files. */
  volumePath(ref: VolumeRef): string;
  createVolume(ref: VolumeRef): Promise<void>;
  volumeExists(ref: VolumeRef): Promise<boolean>;
  /** Remove the volume and all its files. Missing volumes are not an error. */
  deleteVolume(ref: VolumeRef): Promise<void>;
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
  /** Every volume present in the pool. */
  listVolumes(): Promise<VolumeRef[]>;
  /** Finish deletions that failed half way (what a later retry of `deleteVolume` no longer sees), not those under way. */
  emptyTrash(): Promise<void>;
}
