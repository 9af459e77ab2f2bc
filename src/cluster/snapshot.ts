// Reads the cluster into the plain snapshot that placement and the planner decide on: one
// consistent store read, plus each Online member's pool capacity and instance runtime (asked in
// parallel, one request per member).

import { keys, type InstanceRecord, type MemberRecord, type VolumeRecord } from '../store/schema.js';
import type { ClusterSnapshot, InstanceSnapshot, MemberSnapshot } from '../placement/snapshot.js';
import { parseBytes } from '../util/units.js';
import { expandDevices } from '../config/devices.js';
import type { Member } from '../daemon/context.js';
import type { CapacityReport } from './internal.js';

/** Capacity of this member (served to peers on `/internal/capacity`). */
export async function localCapacity(m: Member): Promise<CapacityReport> {
  const usage = await m.pool.poolUsage();
  const volumeBytes: Record<string, number> = {};
  for (const ref of await m.pool.listVolumes()) {
    // What a copy takes (whole blocks), not the sum of file sizes: what the target's pool must hold.
    volumeBytes[`${ref.type}/${ref.project}/${ref.name}`] = await m.pool.volumeFootprint(ref).then((f) => f.bytes, () => 0);
  }
  const running: Record<string, boolean> = {};
  for (const [k, st] of await m.instances.localStates()) running[k] = st.status === 'Running';
  return { poolFreeBytes: usage.freeBytes, poolTotalBytes: usage.totalBytes, volumeBytes, running };
}

/** Build a snapshot of the whole cluster as seen from member `m`. */
export async function readSnapshot(m: Member): Promise<ClusterSnapshot> {
  const views = await m.cluster.members();
  const { kvs } = await m.store.rangeMany([keys.instances(), keys.volumes()]);
  const instances: InstanceRecord[] = [];
  const volumes: VolumeRecord[] = [];
  for (const kv of kvs) {
    if (kv.key.startsWith(keys.instances())) instances.push(JSON.parse(kv.value) as InstanceRecord);
    else volumes.push(JSON.parse(kv.value) as VolumeRecord);
  }
  const reports = new Map<string, CapacityReport>();
  await Promise.all(
    views.map(async (v) => {
      if (v.status === 'Offline') return;
      try {
        const report =
          v.record.name === m.name
            ? await localCapacity(m)
            : await m.internal.capacity(v.record.address);
        reports.set(v.record.name, report);
      } catch {
        // An unreachable member offers nothing; placement will not pick it.
      }
    }),
  );
  const members: MemberSnapshot[] = views.map((v) => memberSnapshot(v.record, v.status, reports.get(v.record.name)));
  const instanceSnaps: InstanceSnapshot[] = instances.map((r) => {
    const report = reports.get(r.location);
    const key = `${r.project}/${r.name}`;
    return {
      name: r.name,
      project: r.project,
      type: r.type,
      location: r.location,
      architecture: r.architecture,
      config: r.config,
      devices: expandDevices(r.devices),
      rootBytes: report?.volumeBytes[`container/${key}`] ?? 0,
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
      bytes: reports.get(v.location)?.volumeBytes[`custom/${v.project}/${v.name}`] ?? 0,
    })),
  };
}

function memberSnapshot(r: MemberRecord, status: MemberSnapshot['status'], report: CapacityReport | undefined): MemberSnapshot {
  const cpu = Number(r.config['capacity.cpu'] ?? '') || r.host.cpus;
  const memory = parseBytes(r.config['capacity.memory'] ?? '') ?? r.host.memoryBytes;
  const diskCap = parseBytes(r.config['capacity.disk'] ?? '');
  const held = report ? Object.values(report.volumeBytes).reduce((a, b) => a + b, 0) : 0;
  const diskFree = !report ? 0 : diskCap !== null ? Math.max(0, Math.min(diskCap - held, report.poolFreeBytes)) : report.poolFreeBytes;
  return { name: r.name, status, architecture: r.architecture, config: r.config, cpuCapacity: cpu, memoryCapacity: memory, diskFree };
}
