// Everything one member's API handlers and background work need, wired once by the daemon.

import type { Store } from '../store/store.js';
import type { Logger } from '../util/log.js';
import type { ClusterCertificateRecord } from '../store/schema.js';
import type { PeerClient } from '../cluster/peers.js';
import type { InternalClient } from '../cluster/internal.js';
import type { ClusterService } from '../cluster/members.js';
import type { EventBus } from '../operations/events.js';
import type { Operations } from '../operations/operations.js';
import type { InstanceService } from '../instances/service.js';
import type { ProfileService } from '../profiles/service.js';
import type { SnapshotService } from '../instances/snapshots.js';
import type { VolumeService } from '../storage/volumes.js';
import type { MemberPools } from '../storage/pools.js';
import type { PoolService } from '../storage/pool-service.js';
import type { Migrator } from '../migration/move.js';
import type { ImageService } from '../images/service.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ExecSessions } from '../api/exec-session.js';

/** One running member. */
export interface Member {
  name: string;
  dir: string;
  /** HTTPS address (`host:port`). */
  address: string;
  store: Store;
  /** The store URL members of this cluster use (handed to joining members). */
  storeUrl: string;
  log: Logger;
  cert: ClusterCertificateRecord;
  peers: PeerClient;
  /** The typed member-to-member protocol (`/internal/...`). */
  internal: InternalClient;
  cluster: ClusterService;
  events: EventBus;
  operations: Operations;
  instances: InstanceService;
  profiles: ProfileService;
  snapshots: SnapshotService;
  volumes: VolumeService;
  /** This member's storage pools (each with its own driver). */
  pools: MemberPools;
  /** The cluster's storage pools: records, and their creation and deletion on every member. */
  storagePools: PoolService;
  migrator: Migrator;
  /** Its Prometheus metrics (`GET /1.0/metrics`). */
  metrics: Metrics;
  images: ImageService;
  /** The websockets of this member's running exec operations. */
  execSessions: ExecSessions;
}
