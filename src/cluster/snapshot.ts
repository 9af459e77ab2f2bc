// Reads the cluster into the plain snapshot that placement and the planner decide on: one
// consistent store read, plus each Online member's pool capacity and instance runtime (asked in
// parallel, one request per member, naming the instances the store read places there).

import { keys, type GroupRecord, type InstanceRecord, type MemberRecord, type PoolMemberRecord, type PoolRecord, type ProfileRecord, type VolumeRecord } from '../store/schema.js';
import { isRemotePool, remotePoolDriver } from '../storage/pools.js';
import { rootPool } from '../config/devices.js';
import { groupsOf, resolveMembership } from './groups.js';
import type { ClusterSnapshot, InstanceSnapshot, MemberSnapshot } from '../placement/snapshot.js';
import { parseBytes } from '../util/units.js';
import { expandInstance, profileSets } from '../config/expand.js';
import { defaultPool, volumeKey } from '../storage/driver.js';
import type { Member } from '../daemon/context.js';
import type { Store } from '../store/store.js';
import type { CapacityReport, InstanceKeys } from './internal.js';
import type { ClusterService, MemberView } from './members.js';

/** Capacity of this member, with which of `instances` (those held here) run (served to peers on `/internal/capacity`). */
export async function localCapacity(m: Pick<Member, 'pools' | 'instances'>, instances: InstanceKeys): Promise<CapacityReport> {
  const pools: CapacityReport['pools'] = {};
  const volumeBytes: Record<string, number> = {};
  for (const [name, pool] of m.pools.all()) {
    const usage = await pool.poolUsage();
    pools[name] = { freeBytes: usage.freeBytes, totalBytes: usage.totalBytes };
    // A remote pool's volumes are every member's, and a move relinks them (0 bytes): no need to walk them.
    if (isRemotePool(pool)) continue;
    for (const ref of await pool.listVolumes()) {
      // What a copy takes (whole blocks), not the sum of file sizes: what the target's pool must hold.
      volumeBytes[volumeKey({ ...ref, pool: name })] = await pool.volumeFootprint(ref).then((f) => f.bytes, () => 0);
    }
  }
  const running: Record<string, boolean> = {};
  for (const [k, st] of await m.instances.statesOf(instances)) running[k] = st.status === 'Running';
  return { pools, volumeBytes, running };
}

/** What reading a snapshot needs: the store, the membership view, and each member's capacity report. */
export interface SnapshotReader {
  store: Store;
  cluster: Pick<ClusterService, 'members'>;
  /** The capacity report of a member that is not Offline (its own, or asked over the member link), asking about `instances`. */
  capacity(member: MemberView, instances: InstanceKeys): Promise<CapacityReport>;
}

/** Build a snapshot of the whole cluster as seen from member `m`. */
export async function readSnapshot(m: Member): Promise<ClusterSnapshot> {
  return readSnapshotWith({
    store: m.store,
    cluster: m.cluster,
    capacity: (v, instances) => (v.record.name === m.name ? localCapacity(m, instances) : m.internal.capacity(v.record.address, instances)),
  });
}

/** Build a snapshot of the whole cluster through `reader` (a member, or a benchmark reading as one). */
export async function readSnapshotWith(m: SnapshotReader): Promise<ClusterSnapshot> {
  const views = await m.cluster.members();
  const { kvs } = await m.store.rangeMany([keys.instances(), keys.volumes(), keys.profiles(), keys.groups(), keys.poolMembers(), keys.pools()]);
  const instances: InstanceRecord[] = [];
  const volumes: VolumeRecord[] = [];
  const profiles: ProfileRecord[] = [];
  const groups: GroupRecord[] = [];
  /** The pools created on each member. */
  const createdPools = new Map<string, string[]>();
  /** Pools on a remote driver (`shared`): a move relinks what is on them, so it copies (and counts) 0 bytes. */
  const remotePools = new Set<string>();
  for (const kv of kvs) {
    if (kv.key.startsWith(keys.pools())) {
      const pool = JSON.parse(kv.value) as PoolRecord;
      if (remotePoolDriver(pool.driver)) remotePools.add(pool.name);
    } else if (kv.key.startsWith(keys.instances())) instances.push(JSON.parse(kv.value) as InstanceRecord);
    else if (kv.key.startsWith(keys.profiles())) profiles.push(JSON.parse(kv.value) as ProfileRecord);
    else if (kv.key.startsWith(keys.groups())) groups.push(JSON.parse(kv.value) as GroupRecord);
    else if (kv.key.startsWith(keys.poolMembers())) {
      const part = JSON.parse(kv.value) as PoolMemberRecord;
      if (part.status === 'Created') createdPools.set(part.member, [...(createdPools.get(part.member) ?? []), part.pool]);
    } else volumes.push(JSON.parse(kv.value) as VolumeRecord);
  }
  // The planner and placement read expanded config and devices only, so they need no profile reads.
  const sets = profileSets(profiles, new Set(instances.map((r) => r.project)));
  // Each member is asked only about the instances this read places there.
  const held = new Map<string, InstanceKeys>();
  for (const r of instances) {
    const list = held.get(r.location);
    if (list) list.push({ project: r.project, name: r.name });
    else held.set(r.location, [{ project: r.project, name: r.name }]);
  }
  const membership = resolveMembership(groups, views.map((v) => v.record.name).sort());
  const reports = new Map<string, CapacityReport>();
  await Promise.all(
    views.map(async (v) => {
      if (v.status === 'Offline') return;
      try {
        reports.set(v.record.name, await m.capacity(v, held.get(v.record.name) ?? []));
      } catch {
        // An unreachable member offers nothing; placement will not pick it.
      }
    }),
  );
  const members: MemberSnapshot[] = views.map((v) =>
    memberSnapshot(v.record, v.status, reports.get(v.record.name), groupsOf(membership, v.record.name), createdPools.get(v.record.name) ?? [], remotePools),
  );
  const instanceSnaps: InstanceSnapshot[] = instances.map((r) => {
    const report = reports.get(r.location);
    const key = `${r.project}/${r.name}`;
    const expanded = expandInstance(r, sets.get(r.project) ?? new Map());
    const root = { type: 'container' as const, project: r.project, name: r.name, pool: rootPool(expanded.devices) ?? defaultPool };
    // A move carries the snapshots too, so they count in what the target's pool must hold.
    const rootBytes = remotePools.has(root.pool) ? 0 : [undefined, ...(r.snapshots ?? []).map((s) => s.name)]
      .reduce((sum, snapshot) => sum + (report?.volumeBytes[volumeKey(snapshot === undefined ? root : { ...root, snapshot })] ?? 0), 0);
    return {
      name: r.name,
      project: r.project,
      type: r.type,
      location: r.location,
      architecture: r.architecture,
      config: expanded.config,
      devices: expanded.devices,
      rootBytes,
      running: report ? report.running[key] === true : r.config['volatile.last_state.power'] === 'RUNNING',
    };
  });
  return {
    members,
    instances: instanceSnaps,
    volumes: volumes.map((v) => ({
      name: v.name,
      project: v.project,
      pool: v.pool,
      location: v.location,
      bytes: remotePools.has(v.pool) ? 0 : reports.get(v.location)?.volumeBytes[volumeKey({ type: 'custom', project: v.project, name: v.name, pool: v.pool })] ?? 0,
    })),
    remotePools: [...remotePools].sort(),
  };
}

function memberSnapshot(
  r: MemberRecord,
  status: MemberSnapshot['status'],
  report: CapacityReport | undefined,
  clusterGroups: string[],
  createdPools: readonly string[],
  remotePools: ReadonlySet<string>,
): MemberSnapshot {
  const cpu = Number(r.config['capacity.cpu'] ?? '') || r.host.cpus;
  const memory = parseBytes(r.config['capacity.memory'] ?? '') ?? r.host.memoryBytes;
  const diskCap = parseBytes(r.config['capacity.disk'] ?? '');
  // A remote pool's volumes are every member's alike (and its space is not this member's disk): not counted.
  const held = report ? Object.entries(report.volumeBytes).reduce((a, [key, b]) => (remotePools.has(key.slice(0, key.indexOf('/'))) ? a : a + b), 0) : 0;
  // `capacity.disk` bounds the member as a whole; without it, what its pools have free.
  const poolFree = (pool: string): number => report?.pools[pool]?.freeBytes ?? 0;
  const allFree = createdPools.reduce((sum, p) => sum + poolFree(p), 0);
  const diskFree = !report ? 0 : diskCap !== null ? Math.max(0, Math.min(diskCap - held, allFree)) : allFree;
  const pools: Record<string, number> = {};
  for (const pool of createdPools) pools[pool] = Math.min(poolFree(pool), diskFree);
  return { name: r.name, status, architecture: r.architecture, config: r.config, cpuCapacity: cpu, memoryCapacity: memory, diskFree, pools, clusterGroups };
}
