// Small builders for cluster snapshots, so placement and planner tests state only what matters to them,
// plus a deterministic synthetic cluster shared by the scale test and the planner benchmark.

import type { ClusterSnapshot, InstanceSnapshot, MemberSnapshot, VolumeSnapshot } from '../../src/placement/snapshot.js';

/** Byte units for readable test data. */
export const MiB = 2 ** 20;
export const GiB = 2 ** 30;
export const TiB = 2 ** 40;

/**
 * An Online x86_64 member with 8 CPUs, 16GiB and 100GiB free unless the test says otherwise, with pools
 * `local` and `default` that each have all of its free disk.
 */
export function member(name: string, over: Partial<Omit<MemberSnapshot, 'name'>> = {}): MemberSnapshot {
  const diskFree = over.diskFree ?? 100 * GiB;
  return {
    name,
    status: 'Online',
    architecture: 'x86_64',
    config: {},
    cpuCapacity: 8,
    memoryCapacity: 16 * GiB,
    diskFree,
    pools: { local: diskFree, default: diskFree },
    clusterGroups: ['default'],
    ...over,
  };
}

/** Options of `instance`: config and devices are added to the defaults rather than replacing them. */
export interface InstanceOptions {
  project?: string;
  type?: string;
  architecture?: string;
  config?: Record<string, string>;
  devices?: Record<string, Record<string, string>>;
  rootBytes?: number;
  running?: boolean;
}

/** A running x86_64 process instance in project `default` with a 1GiB root disk on pool `local`. */
export function instance(name: string, location: string, over: InstanceOptions = {}): InstanceSnapshot {
  return {
    name,
    project: over.project ?? 'default',
    type: over.type ?? 'process',
    location,
    architecture: over.architecture ?? 'x86_64',
    config: { ...(over.config ?? {}) },
    devices: { root: { type: 'disk', path: '/', pool: 'local' }, ...(over.devices ?? {}) },
    rootBytes: over.rootBytes ?? GiB,
    running: over.running ?? true,
  };
}

/** A custom volume on pool `local` (or `pool`). */
export function volume(
  name: string,
  location: string,
  bytes: number,
  over: Partial<Omit<VolumeSnapshot, 'name' | 'location' | 'bytes'>> = {},
): VolumeSnapshot {
  return { name, project: over.project ?? 'default', pool: over.pool ?? 'local', location, bytes };
}

/** A disk device attaching custom volume `source` of pool `local` at `path`. */
export function volumeDisk(source: string, path = `/mnt/${source}`, pool = 'local'): Record<string, string> {
  return { type: 'disk', pool, source, path };
}

/** Assemble a snapshot. */
export function snapshot(
  members: MemberSnapshot[],
  instances: InstanceSnapshot[] = [],
  volumes: VolumeSnapshot[] = [],
): ClusterSnapshot {
  return { members, instances, volumes };
}

/** What `syntheticCluster` builds, so a benchmark can say what it measured. */
export interface SyntheticClusterOptions {
  members: number;
  instances: number;
  /** How many instances member `source` (the first member) holds. */
  onSource: number;
  seed?: number;
}

/** A small deterministic PRNG (mulberry32), so the synthetic cluster is the same on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A realistic large cluster: members of 192 CPUs, 512GiB and 4TiB (a few Evacuated, manual or arm64),
 * instances with limits of 0 to 4 CPUs and 0 to 8GiB, 1 to 20GiB roots, some placement groups, some
 * pairs sharing a custom volume, some with host devices, some pinned to stop, some stopped. The source
 * member is `members[0]`.
 */
export function syntheticCluster(options: SyntheticClusterOptions): ClusterSnapshot {
  const random = prng(options.seed ?? 42);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
  const members: MemberSnapshot[] = [];
  for (let i = 0; i < options.members; i++) {
    const name = `m${String(i).padStart(3, '0')}`;
    members.push(
      member(name, {
        status: i > 0 && i % 37 === 0 ? 'Evacuated' : 'Online',
        architecture: i > 0 && i % 41 === 0 ? 'aarch64' : 'x86_64',
        config: i > 0 && i % 43 === 0 ? { 'scheduler.instance': 'manual' } : {},
        cpuCapacity: 192,
        memoryCapacity: 512 * GiB,
        diskFree: 4 * TiB,
      }),
    );
  }
  const source = members[0]?.name ?? 'm000';
  const archOf = new Map(members.map((m) => [m.name, m.architecture]));
  const others = members.slice(1);
  const instances: InstanceSnapshot[] = [];
  const volumes: VolumeSnapshot[] = [];
  for (let i = 0; i < options.instances; i++) {
    // The second instance of a volume-sharing pair lives with the first (a local volume has one member).
    const slot = i % 20 === 4 ? i - 1 : i;
    const location = slot < options.onSource ? source : (others[slot % others.length]?.name ?? source);
    const arch = archOf.get(location) ?? 'x86_64';
    // Projects by blocks of ten, so the two instances sharing a volume are in the same project.
    const project = Math.floor(i / 10) % 3 === 0 ? 'web' : 'default';
    const config: Record<string, string> = {};
    const cpu = pick([0, 1, 1, 2, 2, 4]);
    if (cpu > 0) config['limits.cpu'] = String(cpu);
    const mem = pick([0, 512, 1024, 2048, 4096, 8192]);
    if (mem > 0) config['limits.memory'] = `${mem}MiB`;
    if (i % 10 === 0) config['placement.group'] = `g${i % 7}`;
    if (i % 25 === 0) config['cluster.evacuate'] = 'stop';
    const devices: Record<string, Record<string, string>> = {};
    if (i % 50 === 23) devices.serial = { type: 'usb', vendorid: '0403' };
    if (i % 50 === 41) devices.scratch = { type: 'disk', source: '/srv/scratch', path: '/scratch' };
    if (i % 20 === 3 || i % 20 === 4) {
      const vol = `shared${Math.floor(i / 20)}`;
      devices.data = volumeDisk(vol);
      if (i % 20 === 3) volumes.push(volume(vol, location, Math.floor(random() * 5 * GiB), { project }));
    }
    instances.push(
      instance(`i${String(i).padStart(5, '0')}`, location, {
        project,
        architecture: arch,
        config,
        devices,
        rootBytes: Math.floor((1 + random() * 19) * GiB),
        running: random() > 0.15,
      }),
    );
  }
  return { members, instances, volumes };
}
