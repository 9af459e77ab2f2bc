// What Roost keeps in the cluster store: the key layout and the JSON records under each key.
// Everything above the store speaks in these records; nothing else knows key strings.

import type { EvacuationProgress, RunStatus } from '../wire/evacuation.js';

/** Member states as the API spells them. `Offline` is derived from heartbeats, never stored. */
export type StoredMemberState = 'Online' | 'Evacuating' | 'Evacuated' | 'Restoring';
export type MemberStatus = StoredMemberState | 'Offline';

/** A cluster member (one roostd). */
export interface MemberRecord {
  name: string;
  /** HTTPS address other members and remote clients use, `host:port`. */
  address: string;
  architecture: string;
  description: string;
  state: StoredMemberState;
  /** Member config (`scheduler.instance`, `capacity.*`, `user.*`). */
  config: Record<string, string>;
  /** Host facts reported by the member at startup (used for capacity defaults). */
  host: { cpus: number; memoryBytes: number };
  createdAt: string;
  /** When its daemon last started (ISO): a rolling maintenance knows from it that a member was rebooted. */
  startedAt?: string;
  /** Set when it was healed (evacuated while offline); cleared by its restore. */
  healed?: { at: string; unreachable: string[] };
}

/** Written by each member on every heartbeat under its lease. */
export interface HeartbeatRecord {
  at: string;
}

/** A device as LXD spells it: a type plus string options. */
export type DeviceConfig = Record<string, string>;

/** An instance: config and where it lives. Runtime state comes from its member's driver. */
export interface InstanceRecord {
  name: string;
  project: string;
  /** Driver type: `process` now, `container` with the LXC driver, `sim` for scale runs. */
  type: string;
  /** The member that holds the instance and its data. Exactly one. */
  location: string;
  architecture: string;
  description: string;
  ephemeral: boolean;
  profiles: string[];
  /** Instance config, including `volatile.*` keys. */
  config: Record<string, string>;
  devices: Record<string, DeviceConfig>;
  createdAt: string;
  lastUsedAt: string;
  /**
   * Its snapshots, oldest first (absent in records written before Roost had snapshots). They live in the
   * instance's record so that a move's one commit transaction carries them along with its location.
   */
  snapshots?: InstanceSnapshotRecord[];
}

/**
 * A snapshot of an instance: what the instance was when it was taken. Its data is a volume of its own
 * beside the root volume (`VolumeRef` with `snapshot`), on the instance's member.
 */
export interface InstanceSnapshotRecord {
  /** Unique among the instance's snapshots; no `/`, `?`, `&` or `+` (LXD's rule). */
  name: string;
  createdAt: string;
  /** When it may go (LXD's `expires_at`), or null for never; shown, not yet acted on. */
  expiresAt: string | null;
  /** Always false: Roost takes no stateful (CRIU) snapshots. */
  stateful: false;
  architecture: string;
  description: string;
  ephemeral: boolean;
  /** The instance's own config (volatile keys included), devices and profiles when the snapshot was taken. */
  profiles: string[];
  config: Record<string, string>;
  devices: Record<string, DeviceConfig>;
}

/**
 * A profile: config and devices instances apply in order before their own (`config/expand.ts`). Every
 * project has `default`, which starts with the root disk and can be changed but never deleted or renamed.
 */
export interface ProfileRecord {
  name: string;
  project: string;
  description: string;
  config: Record<string, string>;
  devices: Record<string, DeviceConfig>;
}

/** A custom storage volume on a member's local pool. */
export interface VolumeRecord {
  name: string;
  project: string;
  pool: string;
  /** The member holding its data. */
  location: string;
  description: string;
  contentType: 'filesystem';
  config: Record<string, string>;
  createdAt: string;
}

/** A storage pool's state as LXD spells it: defined on members but not created yet, created everywhere, or failed somewhere. */
export type PoolStatus = 'Pending' | 'Created' | 'Errored';

/**
 * A storage pool of the cluster (LXD's `/1.0/storage-pools/<name>`): its driver and cluster-wide config. It
 * exists on every member, each with a `PoolMemberRecord` for what differs per member (`source`).
 */
export interface PoolRecord {
  name: string;
  driver: string;
  description: string;
  /** Cluster-wide config (no member-specific key such as `source`). */
  config: Record<string, string>;
  status: PoolStatus;
  createdAt: string;
}

/** One member's part of a storage pool: its member-specific config and whether the pool exists there. */
export interface PoolMemberRecord {
  pool: string;
  member: string;
  /** Member-specific config (`source`, `size`), as LXD's `--target` create defines it. */
  config: Record<string, string>;
  status: PoolStatus;
  /** Why creating the pool on this member failed, when it did. */
  error: string;
}

/** Operation status, LXD's words and codes. */
export type OperationStatus = 'Pending' | 'Running' | 'Cancelling' | 'Success' | 'Failure' | 'Cancelled';

/** An LXD-style operation, mirrored into the store so every member can list and forward it. */
export interface OperationRecord {
  id: string;
  class: 'task' | 'websocket' | 'token';
  description: string;
  createdAt: string;
  updatedAt: string;
  status: OperationStatus;
  resources: Record<string, string[]> | null;
  metadata: Record<string, unknown> | null;
  mayCancel: boolean;
  err: string;
  /** The member running it (for a drainer run: the member evacuated or restored, as LXD shows it). */
  location: string;
  /**
   * Set for operations driven by a record in the store rather than by the process of one member (the
   * drainer's runs, pending tokens): any member shows and cancels them, and no member's restart fails them.
   */
  kind?: 'evacuation' | 'maintenance' | 'join-token' | 'trust-token';
}

/** Phases of one move, in order. The journal key exists from `started` until the move is finished. */
export type MovePhase = 'started' | 'stopped' | 'copied' | 'committed';

/** The durable intent of one instance move (journal entry). */
export interface MoveJournal {
  id: string;
  project: string;
  instance: string;
  source: string;
  target: string;
  phase: MovePhase;
  /** Whether the instance was running when the move began (start it on the target afterwards). */
  wasRunning: boolean;
  /** Custom volumes moving with it, as `<pool>/<name>` (a bare name, as journals before pools wrote: pool `default`). */
  volumes: string[];
  /** The pool of the instance's root volume (absent: `default`, as journals written before pools). */
  pool?: string;
  /** Set `volatile.evacuate.origin` to this on commit if not set yet (evacuation moves). */
  origin: string | null;
  /** Remove `volatile.evacuate.origin` on commit (restore moves). */
  clearOrigin: boolean;
  /** The evacuation or restore this move belongs to, if any. */
  evacuation: string | null;
  startedAt: string;
  /** Every volume is on a remote (`shared`) pool: nothing was copied, and nothing is deleted at either end. */
  relink?: boolean;
}

/**
 * A durable evacuate/restore request of one member: written by the member that took the user's request,
 * carried out by the drainer (whichever member leads), kept after the run ends as the member's "last run".
 */
export interface EvacuationRecord {
  id: string;
  member: string;
  action: 'evacuate' | 'restore';
  mode: string;
  /** Copies at once: a fixed number, or `auto` (following their throughput; evacuation/copy-slots.ts). */
  parallel: number | 'auto';
  /** Operation id showing this run; the same through every drainer term that works on it. */
  operation: string;
  /** `pending` until a drainer picks it up, `running` until the run ends. */
  status: RunStatus;
  startedAt: string;
  finishedAt: string | null;
  /** A user asked to cancel it (from any member); the drainer stops the run. */
  cancelRequested: boolean;
  /** The drainer term (leader key createRevision) working on it; 0 while pending. */
  term: number;
  /** The full progress, written by the drainer (throttled). */
  progress: EvacuationProgress | null;
  /** Moves this run planned and has not finished: placement of other runs counts them as load. */
  reservations: { project: string; name: string; target: string }[];
  /** Why the run failed, when it did. */
  error: string;
}

/**
 * A cluster group (LXD's `lxc cluster group`): members an instance can be placed among with
 * `--target=@<group>`. A member in no group's list belongs to `default`, so new members join it by themselves.
 */
export interface GroupRecord {
  name: string;
  description: string;
  /** Members explicitly in the group, in name order. */
  members: string[];
}

/** Where one member stands in a rolling maintenance. */
export type MaintenanceStep = 'pending' | 'evacuating' | 'rebooting' | 'restoring' | 'verifying' | 'done' | 'failed';

/**
 * A rolling maintenance of several members (`roost cluster maintain`), carried out by the drainer like an
 * evacuation: each member in turn is evacuated, rebooted (the operator's command, or waited for), restored and
 * checked, never more than `concurrency` at once. Every step is recorded, so a new leader carries on.
 */
export interface MaintenanceRecord {
  id: string;
  operation: string;
  status: RunStatus;
  startedAt: string;
  finishedAt: string | null;
  cancelRequested: boolean;
  term: number;
  /** The operator's command per member (`{member}` is replaced), run on the drainer's host; null: wait for the member to go offline and come back. */
  exec: string | null;
  /** Seconds a member may take to come back Online (and for the command to end). */
  waitOnlineSeconds: number;
  concurrency: number;
  members: {
    name: string;
    step: MaintenanceStep;
    error?: string;
    /** When its current step began (ISO), and how long its evacuation and restore took (s). */
    stepAt?: string;
    /** When its daemon had started as its reboot began: it is back once it started again. */
    bootBefore?: string;
    /** The operator's command ended well (a drainer taking over does not know, and waits for a new boot). */
    commandDone?: boolean;
    evacuateSeconds?: number;
    restoreSeconds?: number;
  }[];
  error: string;
}

/** A one-time token: to join the cluster (`lxc cluster add`) or to be trusted as a client (`lxc config trust add`). */
export interface TokenRecord {
  kind: 'join' | 'trust';
  /** The member or client name it is for. */
  name: string;
  secret: string;
  expiresAt: string;
  /** The token's operation (Running while the token can be used). */
  operation: string;
}

/** A client certificate in the trust store (LXD's `/1.0/certificates/<fingerprint>`). */
export interface CertificateRecord {
  /** SHA-256 of the DER certificate, lower-case hex (the key). */
  fingerprint: string;
  /** `client` (API access) or `metrics` (only `GET /1.0/metrics`, as LXD's metrics certificates). */
  type: 'client' | 'metrics';
  name: string;
  /** PEM. */
  certificate: string;
  /** A restricted client reaches only the projects listed, and nothing cluster-wide it could change. */
  restricted: boolean;
  projects: string[];
  createdAt: string;
}

/** The cluster-wide TLS identity shared by all members. */
export interface ClusterCertificateRecord {
  cert: string;
  key: string;
  fingerprint: string;
}

/** An event as it travels between members through the store. */
export interface EventRecord {
  type: 'operation' | 'lifecycle' | 'logging';
  timestamp: string;
  metadata: unknown;
  location: string;
  project: string;
}

/** Store key layout. */
export const keys = {
  serverConfig: () => 'config',
  clusterCertificate: () => 'cluster/certificate',
  member: (name: string) => `members/${name}`,
  members: () => 'members/',
  heartbeat: (name: string) => `heartbeats/${name}`,
  heartbeats: () => 'heartbeats/',
  instance: (project: string, name: string) => `instances/${project}/${name}`,
  instances: (project?: string) => (project ? `instances/${project}/` : 'instances/'),
  profile: (project: string, name: string) => `profiles/${project}/${name}`,
  profiles: (project?: string) => (project ? `profiles/${project}/` : 'profiles/'),
  volume: (project: string, pool: string, name: string) => `volumes/${project}/${pool}/${name}`,
  volumes: (project?: string, pool?: string) =>
    project ? (pool ? `volumes/${project}/${pool}/` : `volumes/${project}/`) : 'volumes/',
  pool: (name: string) => `pools/${name}`,
  pools: () => 'pools/',
  poolMember: (pool: string, member: string) => `pool-members/${pool}/${member}`,
  poolMembers: (pool?: string) => (pool ? `pool-members/${pool}/` : 'pool-members/'),
  operation: (id: string) => `operations/${id}`,
  operations: () => 'operations/',
  move: (project: string, instance: string) => `moves/${project}/${instance}`,
  moves: () => 'moves/',
  evacuation: (member: string) => `evacuations/${member}`,
  evacuations: () => 'evacuations/',
  maintenance: (id: string) => `maintenance/${id}`,
  maintenances: () => 'maintenance/',
  lock: (name: string) => `locks/${name}`,
  /** The drainer's leader key (under a lease; its createRevision is the leader's term). */
  drainerLeader: () => 'drainer/leader',
  token: (kind: 'join' | 'trust', name: string) => `tokens/${kind}/${name}`,
  tokens: (kind?: 'join' | 'trust') => (kind ? `tokens/${kind}/` : 'tokens/'),
  /** The trust store: client certificates by fingerprint. */
  certificate: (fingerprint: string) => `certificates/${fingerprint}`,
  certificates: () => 'certificates/',
  group: (name: string) => `groups/${name}`,
  groups: () => 'groups/',
  events: () => 'events/',
  event: (id: string) => `events/${id}`,
} as const;
