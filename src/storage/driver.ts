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
}
