// The cluster as pure decision code sees it: plain data, read from the store in one consistent pass.
// Placement and the evacuation planner take a snapshot and never do I/O.

/** A member's status as placement needs it: only `Online` members take instances. */
export type MemberStatus = 'Online' | 'Evacuating' | 'Evacuated' | 'Restoring' | 'Offline';

/** A member as placement sees it. */
export interface MemberSnapshot {
  name: string;
  status: MemberStatus;
  architecture: string;
  /** Member config (`scheduler.instance`, `capacity.*`). */
  config: Record<string, string>;
  /** CPUs offered: `capacity.cpu` or the host's CPU count. */
  cpuCapacity: number;
  /** Memory offered in bytes: `capacity.memory` or the host's memory. */
  memoryCapacity: number;
  /**
   * Bytes of new data the member's pool can take now: `capacity.disk` minus what its instances and
   * volumes hold, or, without `capacity.disk`, the pool's free space.
   */
  diskFree: number;
  /**
   * Each storage pool created on the member, with the bytes of new data it can take now (its file system's
   * free space, within `diskFree`). An instance goes only where every pool it uses is.
   */
  pools: Readonly<Record<string, number>>;
  /** The cluster groups the member is in (`default` unless it was assigned elsewhere). */
  clusterGroups: readonly string[];
}

/** An instance as placement sees it. */
export interface InstanceSnapshot {
  name: string;
  project: string;
  type: string;
  location: string;
  architecture: string;
  /** Instance config after profile expansion (`config/expand.ts`), `volatile.*` included. */
  config: Record<string, string>;
  /** Devices after profile expansion. */
  devices: Record<string, Record<string, string>>;
  /** Bytes of its root volume and its snapshots (a move carries them all); 0 on a remote pool (a move relinks it). */
  rootBytes: number;
  /** Whether it runs now (or, for a member that is down, whether it should: last_state.power). */
  running: boolean;
}

/** A custom volume as placement sees it. */
export interface VolumeSnapshot {
  name: string;
  project: string;
  pool: string;
  location: string;
  /** What a move copies: 0 on a remote pool. */
  bytes: number;
}

/** A whole-cluster snapshot. */
export interface ClusterSnapshot {
  members: MemberSnapshot[];
  instances: InstanceSnapshot[];
  volumes: VolumeSnapshot[];
  /** Pools on a remote driver (`shared`): what is on them moves by relinking, no copy (absent: none). */
  remotePools?: readonly string[];
}
