// roostd: one cluster member. Wires the store, membership, storage, drivers, operations, events, the
// migrator and the API servers; at start it repairs interrupted moves, re-adopts instances and
// resumes unfinished work, because everything that matters is rebuilt from the store.

import { rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Metrics } from '../metrics/metrics.js';
import { clusterFacts } from './metrics-facts.js';
import { openStore } from '../store/index.js';
import type { Store } from '../store/store.js';
import { keys, type MemberRecord } from '../store/schema.js';
import { ensureClusterCertificate } from '../cluster/certificate.js';
import { PeerClient } from '../cluster/peers.js';
import { InternalClient } from '../cluster/internal.js';
import { ClusterService } from '../cluster/members.js';
import { EventBus } from '../operations/events.js';
import { Operations } from '../operations/operations.js';
import { ProfileService } from '../profiles/service.js';
import { SnapshotService } from '../instances/snapshots.js';
import { InstanceService } from '../instances/service.js';
import { VolumeService } from '../storage/volumes.js';
import { MemberPools } from '../storage/pools.js';
import { driverConfig, PoolService } from '../storage/pool-service.js';
import { ProcessDriver } from '../instances/drivers/process.js';
import { LxcDriver } from '../instances/drivers/lxc.js';
import { SimDriver } from '../instances/drivers/sim.js';
import type { InstanceDriver } from '../instances/driver.js';
import { Migrator } from '../migration/move.js';
import { buildApi } from '../api/server.js';
import { createLogger, type Logger } from '../util/log.js';
import type { Member } from './context.js';
import { decodeJoinToken } from '../cluster/token.js';
import { consumeToken, tokenOperations } from '../cluster/tokens.js';
import { Drainer } from '../evacuation/drainer.js';
import { LeaderElection } from '../cluster/leader.js';
import { clusterPorts, maintenanceBook, maintenancePorts, maintenanceRequestPorts, requestBook, requestPorts } from './drainer-ports.js';
import { evacuateOnShutdown } from './shutdown.js';
import { ImageService } from '../images/service.js';
import { ExecSessions } from '../api/exec-session.js';
import { ensureDir, memberDirMode, privateDirMode, privateFileMode, restrict, socketMode, traversableDirMode } from './permissions.js';

/** How to run a member. */
export interface DaemonOptions {
  name: string;
  dir: string;
  /** HTTPS listen address `host:port`. */
  address: string;
  storeUrl: string;
  /**
   * An open store this member shares with the other members of its process (the scale simulation runs many
   * members per process, and one store object polls once for all of them); the member then neither opens
   * nor closes a store of its own. Default: it opens `storeUrl` and closes it when it stops.
   */
  store?: Store;
  /** Create the cluster (certificate) if it does not exist yet. */
  bootstrap?: boolean;
  /** A join token from `POST /1.0/cluster/members` (LXD's `lxc cluster add`). */
  joinToken?: string;
  /** Group id that may use the unix socket (LXD's `--group`); default: the daemon user's primary group. */
  socketGroup?: number;
  log?: Logger;
}

/** How often the drainer writes a run's progress to the store (ms); `ROOST_PROGRESS_INTERVAL_MS` changes it. */
const progressIntervalMs = Number(process.env.ROOST_PROGRESS_INTERVAL_MS) || 1000;

/** A running member and how to stop it. */
export interface RunningDaemon {
  member: Member;
  stop(): Promise<void>;
  /** The host is shutting down (SIGTERM): evacuate first if `core.shutdown_action` says so, then stop. */
  shutdown(): Promise<void>;
  /** Resolves when the member was removed from the cluster (its process should then stop). */
  removed: Promise<void>;
}

/** Start a member. */
export async function startDaemon(options: DaemonOptions): Promise<RunningDaemon> {
  const dir = resolve(options.dir);
  const log = options.log ?? createLogger(`roostd:${options.name}`);
  const socketGroup = options.socketGroup ?? process.getgid?.() ?? 0;
  await securePrivateLayout(dir, socketGroup);
  const ownStore = options.store === undefined;
  const metrics = new Metrics(options.name);
  const store = metrics.instrument(options.store ?? (await openStore(options.storeUrl)));
  try {
    await admit(store, options);
    const cert = await ensureClusterCertificate(store);
    const pools = new MemberPools(dir, options.name);
    const drivers = new Map<string, InstanceDriver>([
      ['process', new ProcessDriver()],
      ['container', new LxcDriver({ lxcPath: join(dir, 'lxc'), memberName: options.name })],
      // Simulated instances, for scale simulation and benchmarks; never chosen without `type: sim`.
      ['sim', new SimDriver()],
    ]);
    const events = new EventBus(store, options.name);
    await events.start();
    const operations = new Operations(store, events, options.name, log);
    operations.start();
    const cluster = new ClusterService(store, options.name, log);
    const peers = new PeerClient(cert);
    const internal = new InternalClient(peers);
    const storagePools = new PoolService(store, options.name, pools, {
      members: async () => (await cluster.members()).map((v) => ({ name: v.record.name, online: v.status !== 'Offline' })),
      openOn: async (member, name, driver, config) => {
        if (member === options.name) await pools.open(name, driver, driverConfig(config));
        else await internal.openPool((await cluster.member(member)).record.address, { name, driver, config });
      },
      removeOn: async (member, name, source) => {
        if (member === options.name) await pools.remove(name, source);
        else await internal.removePool((await cluster.member(member)).record.address, source === undefined ? { name } : { name, source });
      },
    }, events, log);
    // The `default` pool first (every member has it, as before pools), then those created in the cluster.
    await storagePools.ensureDefault();
    await storagePools.openAtBoot();
    const profiles = new ProfileService(store, events);
    await profiles.ensureDefault();
    const instances = new InstanceService({ store, member: options.name, memberDir: dir, pools: pools.lookup, drivers, profiles, events, log });
    const volumes = new VolumeService(store, options.name, pools.lookup, events);
    const migrator = new Migrator({ store, member: options.name, pools, instances, internal, cluster, events, log, observer: metrics });
    metrics.readFrom(clusterFacts(store, cluster));
    const member: Member = {
      name: options.name, dir, address: options.address, store, storeUrl: options.storeUrl, log, cert, peers, internal, cluster,
      events, operations, instances, profiles, volumes, pools, storagePools, migrator, metrics,
      snapshots: new SnapshotService({ store, member: options.name, instances, events }),
      images: new ImageService(store, options.name, dir, internal, cluster, events),
      execSessions: new ExecSessions(),
    };
    // Leftovers of moves and creations a crash interrupted, before anything can start new ones here.
    await migrator.sweepAtBoot().catch((err: unknown) => log.error({ err }, 'could not sweep leftover volume copies'));
    // Image copies deleted while this member was down go now; later deletions as their events arrive.
    await member.images.prune();
    member.images.watch();

    // Servers: HTTPS for members and remote clients, the unix socket for local clients.
    const [host, portText] = splitAddress(options.address);
    const httpsApp = await buildApi(member, 'https', { key: cert.key, cert: cert.cert });
    await httpsApp.listen({ host, port: Number(portText) });
    const bound = httpsApp.server.address();
    if (bound && typeof bound === 'object') member.address = `${host}:${bound.port}`;
    const socketPath = join(dir, 'unix.socket');
    await rm(socketPath, { force: true });
    const unixApp = await buildApi(member, 'unix');
    await unixApp.listen({ path: socketPath });
    // Created under umask 077 (nobody may connect); now opened to the socket's group, as LXD's --group.
    await restrict(socketPath, socketMode, socketGroup);

    // Back after being cut off: first stop what was healed elsewhere meanwhile (fencing: it runs there now);
    // then copies other members gave up sending here meanwhile are garbage.
    cluster.onReturn(
      () =>
        void instances
          .fenceMovedAway()
          .catch((err: unknown) => log.error({ err }, 'fencing after a lapsed heartbeat failed'))
          .then(() => migrator.sweepLeftovers())
          .then(() => log.info('swept what other members gave up sending here while this member was cut off'))
          .catch((err: unknown) => log.warn({ err }, 'could not sweep what moves given up meanwhile left here')),
    );
    const record = await cluster.register(member.address);
    await cluster.startHeartbeat();
    await writeFile(join(dir, 'roostd.pid'), `${process.pid}\n`, { mode: privateFileMode });
    log.info({ address: member.address, socket: socketPath, state: record.state }, 'member started');

    await migrator.recover().catch((err: unknown) => log.error({ err }, 'move recovery failed'));
    await instances.adoptAtBoot(record.state);
    await operations.failStale(new Set(), 'The member restarted while the operation ran');

    // Every member campaigns to run the drainer; the one holding the lease runs evacuations and restores.
    const drainer = new Drainer(Object.assign(clusterPorts(member), maintenancePorts(member)), requestBook(member), maintenanceBook(member));
    const requests = requestPorts(member);
    operations.handle('evacuation', { cancel: (op) => requests.requestCancel(op.location, op.id) });
    const maintenances = maintenanceRequestPorts(member);
    operations.handle('maintenance', {
      cancel: async (op) => {
        const record = (await maintenances.list()).find((x) => x.record.operation === op.id);
        return record ? maintenances.requestCancel(record.record.id) : false;
      },
    });
    operations.handle('join-token', tokenOperations(store, events));
    operations.handle('trust-token', tokenOperations(store, events));
    let leading: Promise<void> = Promise.resolve();
    const election = new LeaderElection({
      store,
      key: keys.drainerLeader(),
      member: options.name,
      ttlSeconds: () => cluster.offlineThreshold(),
      log,
      onTerm: (term) => {
        leading = (async () => {
          const threshold = await cluster.offlineThreshold().catch(() => 20);
          await drainer.lead(term, {
            progressIntervalMs,
            // A holder may restart within this without failing its instances' moves.
            unreachableMs: Math.max(10_000, 3 * threshold * 1000),
            settleIntervalMs: Math.max(500, (threshold * 1000) / 2),
          });
        })().catch((err: unknown) => log.error({ err }, 'the drainer stopped with an error'));
      },
    });
    election.start();

    const removed = new Promise<void>((resolve) => {
      cluster.onRemoved = resolve;
    });
    const stop = async (): Promise<void> => {
      await election.stop();
      await leading;
      await stopDaemon(member, [httpsApp, unixApp], ownStore);
    };
    return {
      member,
      removed,
      stop,
      shutdown: async () => {
        await evacuateOnShutdown(member);
        await stop();
      },
    };
  } catch (err) {
    if (ownStore) await store.close().catch(() => undefined);
    throw err;
  }
}

/**
 * Creates the member's directories with private modes, and tightens what an older install left looser:
 * the member directory (its group: the socket's), `storage-pools`, the directories of instance logs and pid
 * files, images and LXC's path, the daemon's pid and log files. The pool tightens itself in its init.
 */
async function securePrivateLayout(dir: string, socketGroup: number): Promise<void> {
  await ensureDir(dir, memberDirMode, socketGroup);
  await ensureDir(join(dir, 'storage-pools'), traversableDirMode);
  for (const sub of ['instances', 'images', 'lxc']) await ensureDir(join(dir, sub), privateDirMode);
  for (const file of ['roostd.pid', 'roostd.log']) await restrict(join(dir, file), privateFileMode);
}

async function stopDaemon(member: Member, apps: FastifyInstance[], closeStore: boolean): Promise<void> {
  member.migrator.stop();
  member.images.unwatch();
  member.operations.stop();
  await member.cluster.stopHeartbeat(true);
  await Promise.all(apps.map((a) => a.close().catch(() => undefined)));
  await member.events.stop();
  await member.peers.close();
  if (closeStore) await member.store.close();
}

/**
 * Decide whether this process may act as member `name`: an existing member restarts; a new one
 * needs a valid join token (consumed atomically) or `bootstrap` on a cluster without members.
 */
async function admit(store: Store, options: DaemonOptions): Promise<void> {
  const existing = await store.get(keys.member(options.name));
  if (existing) return;
  if (options.joinToken) {
    const token = decodeJoinToken(options.joinToken);
    if (token.server_name !== options.name) throw new Error(`the join token is for member "${token.server_name}", not "${options.name}"`);
    // The issuing member's event stream is not running here yet: the token's operation ends in the store.
    await consumeToken(store, null, 'join', options.name, token.secret);
    return;
  }
  if (options.bootstrap) {
    const { kvs } = await store.range(keys.members());
    const others = kvs.map((kv) => (JSON.parse(kv.value) as MemberRecord).name);
    if (others.length > 0) throw new Error(`the cluster already has members (${others.join(', ')}); join with a token instead`);
    return;
  }
  throw new Error(`"${options.name}" is not a member of this cluster; bootstrap a new cluster or join with a token`);
}

function splitAddress(address: string): [string, string] {
  const i = address.lastIndexOf(':');
  if (i <= 0) throw new Error(`listen address "${address}" must be host:port`);
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), address.slice(i + 1)];
}
