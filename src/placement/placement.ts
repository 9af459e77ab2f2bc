// Placement: which member may take an instance, and which of those it should be (spec section 4).
// Pure over a snapshot plus a ledger of planned load, so an evacuation plan of a thousand moves and the
// placement of one new instance go through the same rules, and a dry-run shows what a real run would do.

import { configValue } from '../config/keys.js';
import { attachedVolumes, instancePools, rootPool } from '../config/devices.js';
import { formatBytes, parseBytes } from '../util/units.js';
import type { ClusterSnapshot, InstanceSnapshot, MemberSnapshot, VolumeSnapshot } from './snapshot.js';

/** What an instance takes from the member that holds it; placement checks it against `capacity.*`. */
export interface Demand {
  cpu: number;
  memoryBytes: number;
  /** Bytes a move copies: its root volume plus the local custom volumes it carries. */
  bytes: number;
  /**
   * The storage pools it keeps data on, with the bytes it puts in each: a target must have every one of
   * them, with room. Absent: no pool is asked for (callers that place by resources alone).
   */
  pools?: Readonly<Record<string, number>>;
}

/** A demand plus what else decides where it may go: architecture, and `placement.group` spreading. */
export interface PlacementRequest extends Demand {
  architecture: string;
  project: string;
  group?: string;
}

/** Either the chosen member or, in one line, why no member fits (the user sees it as the refusal). */
export type PickResult = { ok: true; member: string } | { ok: false; reason: string };

/** A custom volume attached to an instance as a disk device (`pool` + `source`). */
export interface VolumeRef {
  device: string;
  pool: string;
  source: string;
}

/** Custom volumes keyed by project, pool, name and location, so demand lookups stay O(1) at scale. */
export type VolumeIndex = ReadonlyMap<string, VolumeSnapshot>;

const sep = '\u0000';
const volumeKey = (project: string, pool: string, name: string, location: string): string =>
  `${project}${sep}${pool}${sep}${name}${sep}${location}`;

/** Index the snapshot's custom volumes once so that planning many instances does not rescan them. */
export function indexVolumes(snapshot: ClusterSnapshot): VolumeIndex {
  const index = new Map<string, VolumeSnapshot>();
  for (const v of snapshot.volumes) index.set(volumeKey(v.project, v.pool, v.name, v.location), v);
  return index;
}

/** The custom volumes an instance attaches, in device-name order so every plan built from them is stable. */
export function volumeRefs(inst: InstanceSnapshot): VolumeRef[] {
  return attachedVolumes(inst.devices).map((v) => ({ device: v.device, pool: v.pool, source: v.volume }));
}

/**
 * The custom volumes a move of `inst` copies: those of its project on its own member (a volume the
 * snapshot does not hold there is not copied, so it adds no bytes), each once.
 */
export function localVolumes(inst: InstanceSnapshot, volumes: VolumeIndex): VolumeSnapshot[] {
  const found: VolumeSnapshot[] = [];
  for (const ref of volumeRefs(inst)) {
    const v = volumes.get(volumeKey(inst.project, ref.pool, ref.source, inst.location));
    if (v !== undefined && !found.includes(v)) found.push(v);
  }
  return found;
}

/** CPUs an instance reserves; unset (or not a number) reserves none, as the spec says. */
export function cpuLimit(inst: InstanceSnapshot): number {
  const n = Number(configValue('instance', inst.config, 'limits.cpu'));
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/** Memory an instance reserves in bytes; unset reserves none. */
export function memoryLimit(inst: InstanceSnapshot): number {
  const text = configValue('instance', inst.config, 'limits.memory');
  return text === '' ? 0 : (parseBytes(text) ?? 0);
}

/** The instance's `placement.group`, or undefined when it has none (so it spreads from nothing). */
export function placementGroup(inst: InstanceSnapshot): string | undefined {
  const g = configValue('instance', inst.config, 'placement.group');
  return g === '' ? undefined : g;
}

/** The instance key recording the cluster group `--target=@<group>` placed it into (LXD 6.x's name). */
export const clusterGroupKey = 'volatile.cluster.group';

/** The cluster group the instance was placed into, or undefined when it was placed without one. */
export function clusterGroupOf(inst: Pick<InstanceSnapshot, 'config'>): string | undefined {
  const g = inst.config[clusterGroupKey] ?? '';
  return g === '' ? undefined : g;
}

/**
 * The bytes `inst` puts in each pool it uses when it moves with `carried` (its custom volumes that travel
 * with it): its root volume in its root disk's pool, each carried volume in its own; every pool it uses is
 * named, with 0 when nothing of it is copied there.
 */
export function poolBytes(inst: InstanceSnapshot, carried: readonly VolumeSnapshot[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const pool of instancePools(inst.devices)) out[pool] = 0;
  const root = rootPool(inst.devices);
  if (root !== undefined) out[root] = (out[root] ?? 0) + inst.rootBytes;
  for (const v of carried) out[v.pool] = (out[v.pool] ?? 0) + v.bytes;
  return out;
}

/** Add pool demands together (a unit of instances moving as one). */
export function addPoolBytes(into: Record<string, number>, more: Readonly<Record<string, number>> | undefined): Record<string, number> {
  for (const [pool, bytes] of Object.entries(more ?? {})) into[pool] = (into[pool] ?? 0) + bytes;
  return into;
}

/** What moving `inst` would take from a target: its limits, the bytes of its root and custom volumes, and its pools. */
export function instanceDemand(
  inst: InstanceSnapshot,
  snapshot: ClusterSnapshot,
  volumes: VolumeIndex = indexVolumes(snapshot),
): Demand {
  const carried = localVolumes(inst, volumes);
  let bytes = inst.rootBytes;
  for (const v of carried) bytes += v.bytes;
  return { cpu: cpuLimit(inst), memoryBytes: memoryLimit(inst), bytes, pools: poolBytes(inst, carried) };
}

/** The full placement request for `inst`, so callers never assemble architecture and group by hand. */
export function placementRequest(
  inst: InstanceSnapshot,
  snapshot: ClusterSnapshot,
  volumes: VolumeIndex = indexVolumes(snapshot),
): PlacementRequest {
  const request: PlacementRequest = {
    ...instanceDemand(inst, snapshot, volumes),
    architecture: inst.architecture,
    project: inst.project,
  };
  const group = placementGroup(inst);
  if (group !== undefined) request.group = group;
  return request;
}

/** A member's load as placement counts it: its instances (running or not) plus the placements planned so far. */
export interface MemberLoad {
  readonly member: MemberSnapshot;
  /** `scheduler.instance=manual`: never an automatic target. */
  readonly manual: boolean;
  cpuUsed: number;
  memoryUsed: number;
  instances: number;
  /** The snapshot's `diskFree` minus the bytes of planned placements. */
  diskFree: number;
  /** The snapshot's free bytes of each pool on the member, minus what planned placements put there. */
  poolFree: Map<string, number>;
}

const groupKey = (project: string, group: string): string => `${project}${sep}${group}`;

/**
 * The load of every member, kept current as placements are planned so that each pick counts the ones
 * before it; members are held in name order so ties resolve the same way whatever the snapshot order.
 */
export class LoadLedger {
  /** Every member's load, in name order. */
  readonly members: readonly MemberLoad[];
  private readonly byName = new Map<string, MemberLoad>();
  /** Instances per member for each (project, placement.group). */
  private readonly groups = new Map<string, Map<string, number>>();

  /** Count what every instance of `snapshot` already uses where it is located (its data is already outside `diskFree`). */
  constructor(snapshot: ClusterSnapshot) {
    const members = [...snapshot.members].sort((a, b) => compareText(a.name, b.name));
    this.members = members.map((member) => {
      const load: MemberLoad = {
        member,
        manual: configValue('member', member.config, 'scheduler.instance') === 'manual',
        cpuUsed: 0,
        memoryUsed: 0,
        instances: 0,
        diskFree: member.diskFree,
        poolFree: new Map(Object.entries(member.pools)),
      };
      this.byName.set(member.name, load);
      return load;
    });
    for (const inst of snapshot.instances) {
      const load = this.byName.get(inst.location);
      if (load === undefined) continue;
      load.cpuUsed += cpuLimit(inst);
      load.memoryUsed += memoryLimit(inst);
      load.instances += 1;
      const group = placementGroup(inst);
      if (group !== undefined) this.countGroup(inst.project, group, inst.location);
    }
  }

  /** The load of `member`, or undefined if the snapshot has no such member. */
  load(member: string): Readonly<MemberLoad> | undefined {
    return this.byName.get(member);
  }

  /** How many instances of (project, group) `member` holds or is planned to hold. */
  groupCount(project: string, group: string, member: string): number {
    return this.groups.get(groupKey(project, group))?.get(member) ?? 0;
  }

  /** The members holding (project, group), for one lookup per pick rather than one per member. */
  groupHolders(project: string, group: string): ReadonlyMap<string, number> | undefined {
    return this.groups.get(groupKey(project, group));
  }

  /** Record one planned placement so the next pick sees it. */
  place(member: string, placement: Demand & { project: string; group?: string }): void {
    const load = this.byName.get(member);
    if (load === undefined) throw new Error(`Cluster member "${member}" not found in the placement snapshot`);
    load.cpuUsed += placement.cpu;
    load.memoryUsed += placement.memoryBytes;
    load.diskFree -= placement.bytes;
    for (const [pool, bytes] of Object.entries(placement.pools ?? {})) load.poolFree.set(pool, (load.poolFree.get(pool) ?? 0) - bytes);
    load.instances += 1;
    if (placement.group !== undefined && placement.group !== '') {
      this.countGroup(placement.project, placement.group, member);
    }
  }

  private countGroup(project: string, group: string, member: string): void {
    const key = groupKey(project, group);
    let holders = this.groups.get(key);
    if (holders === undefined) {
      holders = new Map();
      this.groups.set(key, holders);
    }
    holders.set(member, (holders.get(member) ?? 0) + 1);
  }
}

/** Build the ledger of `snapshot`, for callers that prefer a function to a constructor. */
export function buildLedger(snapshot: ClusterSnapshot): LoadLedger {
  return new LoadLedger(snapshot);
}

/** Plain code-unit order: locale-independent, so plans are the same on every host. */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const share = (used: number, capacity: number): number =>
  capacity > 0 ? used / capacity : used > 0 ? Number.POSITIVE_INFINITY : 0;

/** The larger of cpu and memory use over capacity: the spec's measure of how loaded a member is. */
export function memberLoadShare(load: Readonly<MemberLoad>): number {
  return Math.max(share(load.cpuUsed, load.member.cpuCapacity), share(load.memoryUsed, load.member.memoryCapacity));
}

/** Why `load` cannot take `request` (status, scheduler, architecture), or null if it may in principle. */
function ineligibility(load: Readonly<MemberLoad>, request: PlacementRequest): string | null {
  const m = load.member;
  if (m.status !== 'Online') return m.status.toLowerCase();
  if (load.manual) return 'scheduler.instance=manual';
  if (m.architecture !== request.architecture) return `architecture ${m.architecture}`;
  if (request.pools !== undefined) {
    for (const pool in request.pools) {
      if (load.poolFree.has(pool)) continue;
      const missing = Object.keys(request.pools).filter((p) => !load.poolFree.has(p));
      return `no storage pool ${missing.map((p) => `"${p}"`).join(', ')}`;
    }
  }
  return null;
}

/** The pools of `request` where `load` lacks room (a pool it does not have counts as lacking nothing here). */
function poolsShort(load: Readonly<MemberLoad>, request: Demand): string[] {
  const short: string[] = [];
  for (const [pool, bytes] of Object.entries(request.pools ?? {})) {
    const free = load.poolFree.get(pool);
    if (free !== undefined && bytes > 0 && bytes > free) short.push(pool);
  }
  return short;
}

/** The allocation-free form of `shortfall`, for the per-member loop of every pick. */
function hasRoom(load: Readonly<MemberLoad>, request: Demand): boolean {
  return (
    (request.cpu <= 0 || load.cpuUsed + request.cpu <= load.member.cpuCapacity) &&
    (request.memoryBytes <= 0 || load.memoryUsed + request.memoryBytes <= load.member.memoryCapacity) &&
    request.bytes <= load.diskFree &&
    poolsFit(load, request.pools)
  );
}

/** Whether every pool of `pools` that `load` has takes its bytes (without allocating: it runs per member per pick). */
function poolsFit(load: Readonly<MemberLoad>, pools: Demand['pools']): boolean {
  if (pools === undefined) return true;
  for (const pool in pools) {
    const bytes = pools[pool] ?? 0;
    const free = load.poolFree.get(pool);
    if (free !== undefined && bytes > 0 && bytes > free) return false;
  }
  return true;
}

/** The resources `load` lacks for `request`, empty if it has room. */
function shortfall(load: Readonly<MemberLoad>, request: Demand): string[] {
  const lacking: string[] = [];
  if (request.cpu > 0 && load.cpuUsed + request.cpu > load.member.cpuCapacity) lacking.push('CPU');
  if (request.memoryBytes > 0 && load.memoryUsed + request.memoryBytes > load.member.memoryCapacity) {
    lacking.push('memory');
  }
  if (request.bytes > load.diskFree) lacking.push('disk');
  // A pool is short on its own only when the member as a whole is not (then "disk" says it already).
  else for (const pool of poolsShort(load, request)) lacking.push(`space in storage pool "${pool}"`);
  return lacking;
}

/** Which members a pick may choose from. */
export interface PickOptions {
  /** Members never chosen (the member being evacuated, the instance's own). */
  exclude: readonly string[];
  /** When set, only these members are candidates (the members of a cluster group, for `--target=@<group>`). */
  within?: ReadonlySet<string>;
}

/**
 * Choose the member for `request` by the rules of spec section 4: Online, not excluded, not
 * `scheduler.instance=manual`, same architecture, with room; then members without the request's
 * placement group, then least loaded, fewest instances, name. O(members).
 */
export function pickTarget(
  ledger: LoadLedger,
  request: PlacementRequest,
  options: PickOptions = { exclude: [] },
): PickResult {
  const holders = request.group !== undefined && request.group !== '' ? ledger.groupHolders(request.project, request.group) : undefined;
  let best: Readonly<MemberLoad> | undefined;
  let bestSpread = false;
  let bestShare = 0;
  for (const load of ledger.members) {
    if (!candidate(load.member.name, options)) continue;
    if (ineligibility(load, request) !== null || !hasRoom(load, request)) continue;
    const spread = (holders?.get(load.member.name) ?? 0) === 0;
    const loadShare = memberLoadShare(load);
    // Members come in name order, so a tie on everything else keeps the earlier name.
    if (
      best === undefined ||
      (spread && !bestSpread) ||
      (spread === bestSpread &&
        (loadShare < bestShare || (loadShare === bestShare && load.instances < best.instances)))
    ) {
      best = load;
      bestSpread = spread;
      bestShare = loadShare;
    }
  }
  if (best !== undefined) return { ok: true, member: best.member.name };
  return { ok: false, reason: noRoomReason(ledger, request, options) };
}

/** Whether `options` let a pick consider `member` at all. */
function candidate(member: string, options: PickOptions): boolean {
  return !options.exclude.includes(member) && (options.within === undefined || options.within.has(member));
}

/** The members of cluster group `group` in `snapshot` (empty if no member is in it). */
export function groupMembers(snapshot: ClusterSnapshot, group: string): Set<string> {
  return new Set(snapshot.members.filter((m) => m.clusterGroups.includes(group)).map((m) => m.name));
}

/**
 * Pick a member for a new instance created without `--target` (the same rules, nothing excluded), or, with
 * `within`, among the members of the cluster group `--target=@<group>` named.
 */
export function placeNewInstance(snapshot: ClusterSnapshot, request: PlacementRequest, within?: ReadonlySet<string>): PickResult {
  return pickTarget(new LoadLedger(snapshot), request, within === undefined ? { exclude: [] } : { exclude: [], within });
}

/** What a request needs, as the refusal shows it (`2 CPU, 1.00GiB memory, 300.00MiB disk`). */
export function describeDemand(demand: Demand): string {
  const parts: string[] = [];
  if (demand.cpu > 0) parts.push(`${demand.cpu} CPU`);
  if (demand.memoryBytes > 0) parts.push(`${formatBytes(demand.memoryBytes)} memory`);
  parts.push(`${formatBytes(demand.bytes)} disk`);
  return parts.join(', ');
}

/** How many member names a refusal lists per reason before it summarises the rest as a count. */
const namesPerReason = 3;

/** One line naming, per reason, the members that could not take `request` (computed only on refusal). */
function noRoomReason(ledger: LoadLedger, request: PlacementRequest, options: PickOptions): string {
  const byReason = new Map<string, string[]>();
  for (const load of ledger.members) {
    if (!candidate(load.member.name, options)) continue;
    const why = ineligibility(load, request) ?? `not enough ${shortfall(load, request).join(' and ')}`;
    const names = byReason.get(why);
    if (names === undefined) byReason.set(why, [load.member.name]);
    else names.push(load.member.name);
  }
  const details = [...byReason].map(([why, names]) => `${listNames(names, namesPerReason)}: ${why}`);
  const detail = details.length > 0 ? details.join('; ') : 'no other member';
  return `no member has room: needs ${describeDemand(request)} (${detail})`;
}

/** `a, b, c` or, past `max`, `a, b and 7 more`: names in a one-line message without flooding it. */
export function listNames(names: readonly string[], max: number): string {
  if (names.length <= max) return names.join(', ');
  const shown = names.slice(0, Math.max(1, max - 1));
  return `${shown.join(', ')} and ${names.length - shown.length} more`;
}
