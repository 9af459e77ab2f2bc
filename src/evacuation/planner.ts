// The evacuation and restore planners: snapshot in, plan out, no I/O (spec sections 3 to 5).
// The API refuses a request whose plan has refusals before anything changes, a dry-run returns the plan
// as is, and the executor only carries it out; so every decision, and every reason, is made here.

import { configValue } from '../config/keys.js';
import {
  LoadLedger,
  addPoolBytes,
  clusterGroupOf,
  compareText,
  cpuLimit,
  indexVolumes,
  listNames,
  localVolumes,
  memoryLimit,
  groupMembers,
  pickTarget,
  placementGroup,
  poolBytes,
  volumeRefs,
} from '../placement/index.js';
import type { ClusterSnapshot, Demand, InstanceSnapshot, PickResult, PlacementRequest, VolumeIndex, VolumeSnapshot } from '../placement/index.js';
import { immovableReasons, type RuleContext } from './rules.js';
import { instancePools } from '../config/devices.js';

/** What evacuation does with one instance; `none` is an instance that stays and is already stopped. */
export type PlanAction = 'migrate' | 'live-migrate' | 'stop' | 'force-stop' | 'none';

/** One instance of the evacuated member and what the run will do with it. */
export interface PlannedInstance {
  name: string;
  project: string;
  action: PlanAction;
  /** The member it moves to; null when it stays. */
  target: string | null;
  reason: string;
  /** Bytes the move copies: its root volume plus the volumes it carries; 0 when it stays. */
  bytes: number;
  running: boolean;
  /**
   * Custom volumes (`pool/name`, in the instance's project) the move copies; a volume shared by a unit
   * is listed, and counted in `bytes`, on the unit's first instance only, so totals count it once.
   */
  volumes: string[];
  /** `project/name` of the first instance of its unit: instances sharing a volume move as one. */
  unit: string;
}

/** An instance that makes the whole request fail, and why. */
export interface Refusal {
  name: string;
  project: string;
  reason: string;
}

/** Everything an evacuation of `member` will do; each of its instances is in `instances` or in `refusals`. */
export interface EvacuationPlan {
  member: string;
  mode: string;
  instances: PlannedInstance[];
  refusals: Refusal[];
}

/** The evacuate modes the API accepts (`auto`: each instance's `cluster.evacuate` decides). */
export const evacuateModes = ['auto', 'migrate', 'live-migrate', 'stop', 'force-stop'] as const;

/** One of `evacuateModes`. */
export type EvacuateMode = (typeof evacuateModes)[number];

/** Narrow user input to a mode, so the API can answer `Invalid mode` before planning. */
export function isEvacuateMode(mode: string): mode is EvacuateMode {
  return (evacuateModes as readonly string[]).includes(mode);
}

/** What one instance would do on its own, before its unit is taken into account. */
type Decision =
  | { kind: 'move'; action: 'migrate' | 'live-migrate'; reason: string }
  | { kind: 'stay'; action: 'stop' | 'force-stop'; reason: string }
  | { kind: 'refuse'; reason: string };

/** An instance of the evacuated member with what the rules and its mode say about it. */
interface Candidate {
  inst: InstanceSnapshot;
  id: string;
  mode: EvacuateMode;
  /** Where the mode came from, as the reason quotes it: `mode=stop` or `cluster.evacuate=stop`. */
  label: string;
  decision: Decision;
}

const sep = '\u0000';

/** Keys of the local custom volumes an instance attaches; equal keys mean one shared volume. */
function sharedVolumeKeys(inst: InstanceSnapshot): string[] {
  return volumeRefs(inst).map((r) => `${inst.project}${sep}${r.pool}${sep}${r.source}${sep}${inst.location}`);
}

const volumeLabel = (key: string): string => {
  const [, pool, source] = key.split(sep);
  return `${pool ?? ''}/${source ?? ''}`;
};

const byProjectName = (a: InstanceSnapshot, b: InstanceSnapshot): number =>
  compareText(a.project, b.project) || compareText(a.name, b.name);

/**
 * Split `items` (already in their final order) into units of items that share a key, transitively;
 * units come in the order of their first item, and items within a unit keep their order.
 */
function groupUnits<T>(items: readonly T[], keysOf: (item: T) => readonly string[]): T[][] {
  const parent = items.map((_, i) => i);
  const find = (i: number): number => {
    let r = i;
    while ((parent[r] ?? r) !== r) r = parent[r] ?? r;
    while ((parent[i] ?? i) !== r) {
      const next = parent[i] ?? i;
      parent[i] = r;
      i = next;
    }
    return r;
  };
  const owner = new Map<string, number>();
  items.forEach((item, i) => {
    for (const key of keysOf(item)) {
      const o = owner.get(key);
      if (o === undefined) {
        owner.set(key, i);
        continue;
      }
      const a = find(o);
      const b = find(i);
      // The smaller index stays the root, so a unit is keyed by its first item.
      if (a !== b) parent[Math.max(a, b)] = Math.min(a, b);
    }
  });
  const units = new Map<number, T[]>();
  items.forEach((item, i) => {
    const root = find(i);
    const unit = units.get(root);
    if (unit === undefined) units.set(root, [item]);
    else unit.push(item);
  });
  return [...units.values()];
}

/** The volumes each instance of a unit carries: each shared volume goes with the first instance that attaches it. */
function carriedVolumes(unit: readonly InstanceSnapshot[], volumes: VolumeIndex): VolumeSnapshot[][] {
  const seen = new Set<VolumeSnapshot>();
  return unit.map((inst) =>
    localVolumes(inst, volumes).filter((v) => {
      if (seen.has(v)) return false;
      seen.add(v);
      return true;
    }),
  );
}

const quoted = (names: readonly string[]): string => listNames(names.map((n) => `"${n}"`), 3);

/** What `inst` does on its own under `mode`, given the first reason it cannot move (or null). */
function decide(inst: InstanceSnapshot, mode: EvacuateMode, label: string, tie: string | null): Decision {
  switch (mode) {
    case 'stop':
    case 'force-stop':
      return { kind: 'stay', action: mode, reason: label };
    case 'migrate':
    case 'live-migrate':
      if (tie !== null) return { kind: 'refuse', reason: `${label} but it cannot move: ${tie}` };
      if (mode === 'live-migrate' && !inst.running) {
        return { kind: 'move', action: 'migrate', reason: `${label}; stopped, so a cold move` };
      }
      return { kind: 'move', action: mode, reason: label };
    case 'auto':
      if (tie !== null) return { kind: 'stay', action: 'stop', reason: `cannot move: ${tie}` };
      return { kind: 'move', action: 'migrate', reason: 'every device can move' };
  }
}

/**
 * Where an instance is pinned to moving (`migrate` or `live-migrate`, by the request or its own
 * config), staying behind is a refusal; in `auto` it is a stop.
 */
const pinnedToMove = (c: Candidate): boolean => c.mode === 'migrate' || c.mode === 'live-migrate';

/** Apply "a unit moves whole or not at all": if one instance stays or is refused, the others cannot move. */
function holdUnitTogether(unit: readonly Candidate[], keyUsers: ReadonlyMap<string, number>): void {
  const blocker = unit.find((c) => c.decision.kind !== 'move');
  if (blocker === undefined) return;
  const verb = blocker.decision.kind === 'refuse' ? 'cannot move' : 'stays';
  for (const c of unit) {
    if (c.decision.kind !== 'move') continue;
    const key = sharedVolumeKeys(c.inst).find((k) => (keyUsers.get(k) ?? 0) > 1) ?? '';
    const why = `shares volume ${volumeLabel(key)} with "${blocker.inst.name}", which ${verb}`;
    c.decision = pinnedToMove(c)
      ? { kind: 'refuse', reason: `${c.label} but it ${why}` }
      : { kind: 'stay', action: 'stop', reason: why };
  }
}

/** A unit whose every instance moves, with what it asks of its one target. */
interface MovingUnit {
  id: string;
  candidates: Candidate[];
  carried: VolumeSnapshot[][];
  demands: Demand[];
  request: PlacementRequest;
  size: number;
}

/**
 * Plan the evacuation of `member`: per instance migrate, live-migrate, stop, force-stop or nothing, a
 * target for every move (counting the moves planned before it), and a refusal for whatever cannot be
 * done. Deterministic for a given snapshot. Throws on a mode outside `evacuateModes` (the API checks first).
 */
export function planEvacuation(
  snapshot: ClusterSnapshot,
  member: string,
  options: { mode?: string } = {},
): EvacuationPlan {
  const requested = options.mode === undefined || options.mode === '' ? 'auto' : options.mode;
  if (!isEvacuateMode(requested)) throw new Error(`Invalid mode "${requested}"`);

  const volumes = indexVolumes(snapshot);
  const context: RuleContext = { snapshot };
  const local = snapshot.instances.filter((i) => i.location === member).sort(byProjectName);

  const candidates = local.map((inst): Candidate => {
    const own = configValue('instance', inst.config, 'cluster.evacuate');
    const [mode, label]: [EvacuateMode, string] =
      requested !== 'auto'
        ? [requested, `mode=${requested}`]
        : [isEvacuateMode(own) ? own : 'auto', `cluster.evacuate=${own}`];
    const tie = immovableReasons(inst, context)[0]?.reason ?? null;
    return { inst, id: `${inst.project}/${inst.name}`, mode, label, decision: decide(inst, mode, label, tie) };
  });

  const keyUsers = new Map<string, number>();
  for (const c of candidates) {
    for (const k of new Set(sharedVolumeKeys(c.inst))) keyUsers.set(k, (keyUsers.get(k) ?? 0) + 1);
  }
  const units = groupUnits(candidates, (c) => sharedVolumeKeys(c.inst));
  for (const unit of units) holdUnitTogether(unit, keyUsers);

  const ledger = new LoadLedger(snapshot);
  const planned = new Map<Candidate, PlannedInstance>();
  const refusals: Refusal[] = [];
  const refuse = (c: Candidate, reason: string): void => {
    refusals.push({ name: c.inst.name, project: c.inst.project, reason });
  };

  const moving: MovingUnit[] = [];
  for (const unit of units) {
    const id = unit[0]?.id ?? '';
    if (unit.some((c) => c.decision.kind === 'move')) {
      moving.push(movingUnit(id, unit, volumes));
      continue;
    }
    for (const c of unit) {
      const d = c.decision;
      if (d.kind === 'refuse') refuse(c, d.reason);
      else if (d.kind === 'stay') planned.set(c, stayed(c, d.action, d.reason, id));
    }
  }

  // Larger demands first pack better; the unit id breaks ties so the order never depends on input order.
  const totals = capacityTotals(ledger, member);
  for (const u of moving) u.size = relativeSize(u.request, totals);
  moving.sort((a, b) => b.size - a.size || compareText(a.id, b.id));

  const within = new Map<string, Set<string>>();
  for (const u of moving) {
    const { pick, note } = pickInClusterGroup(ledger, u, member, snapshot, within);
    u.candidates.forEach((c, i) => {
      const others = u.candidates.filter((o) => o !== c).map((o) => o.inst.name);
      const together = others.length > 0 ? `moves with ${quoted(others)} (shared volume)` : '';
      if (!pick.ok) {
        refuse(c, together === '' ? pick.reason : `${together}; ${pick.reason}`);
        return;
      }
      const d = c.decision;
      if (d.kind !== 'move') return;
      const demand = u.demands[i] ?? { cpu: 0, memoryBytes: 0, bytes: 0 };
      const group = placementGroup(c.inst);
      ledger.place(pick.member, group === undefined ? { ...demand, project: c.inst.project } : { ...demand, project: c.inst.project, group });
      const notes = [d.reason];
      if (relinks(c.inst, snapshot)) notes.push('shared: no copy');
      if (note !== '') notes.push(note);
      if (together !== '') notes.push(together);
      if (!c.inst.running) notes.push('stays stopped');
      planned.set(c, {
        name: c.inst.name,
        project: c.inst.project,
        action: d.action,
        target: pick.member,
        reason: notes.join('; '),
        bytes: demand.bytes,
        running: c.inst.running,
        volumes: (u.carried[i] ?? []).map((v) => `${v.pool}/${v.name}`),
        unit: u.id,
      });
    });
  }

  const instances = candidates.flatMap((c) => planned.get(c) ?? []);
  refusals.sort((a, b) => compareText(a.project, b.project) || compareText(a.name, b.name));
  return { member, mode: requested, instances, refusals };
}

/**
 * Pick a target for a moving unit: inside the cluster group its instances were placed into
 * (`volatile.cluster.group`) when a member of that group has room, else anywhere, with a note saying which.
 * `within` caches each group's members across units.
 */
function pickInClusterGroup(
  ledger: LoadLedger,
  u: MovingUnit,
  source: string,
  snapshot: ClusterSnapshot,
  within: Map<string, Set<string>>,
): { pick: PickResult; note: string } {
  const group = u.candidates.map((c) => clusterGroupOf(c.inst)).find((g) => g !== undefined);
  if (group === undefined) return { pick: pickTarget(ledger, u.request, { exclude: [source] }), note: '' };
  let members = within.get(group);
  if (members === undefined) {
    members = groupMembers(snapshot, group);
    within.set(group, members);
  }
  const inGroup = pickTarget(ledger, u.request, { exclude: [source], within: members });
  if (inGroup.ok) return { pick: inGroup, note: `stays in cluster group "${group}"` };
  const anywhere = pickTarget(ledger, u.request, { exclude: [source] });
  const others = [...members].some((name) => name !== source);
  const why = others ? `no member of cluster group "${group}" fits (${inGroup.reason})` : `cluster group "${group}" has no other member`;
  return { pick: anywhere, note: `${why}; placed outside the group` };
}

/** A planned instance that stays on the member: stopped if running, else nothing to do. */
function stayed(c: Candidate, action: 'stop' | 'force-stop', reason: string, unit: string): PlannedInstance {
  return {
    name: c.inst.name,
    project: c.inst.project,
    action: c.inst.running ? action : 'none',
    target: null,
    reason: c.inst.running ? reason : `already stopped; ${reason}`,
    bytes: 0,
    running: c.inst.running,
    volumes: [],
    unit,
  };
}

/** Whether every pool `inst` keeps data on is remote (`shared`): its move relinks it, copying nothing. */
function relinks(inst: InstanceSnapshot, snapshot: ClusterSnapshot): boolean {
  const pools = instancePools(inst.devices);
  const remote = snapshot.remotePools ?? [];
  return pools.length > 0 && pools.every((p) => remote.includes(p));
}

/** Sum a moving unit's demand: each instance's limits and root bytes, each shared volume once. */
function movingUnit(id: string, unit: Candidate[], volumes: VolumeIndex): MovingUnit {
  const carried = carriedVolumes(
    unit.map((c) => c.inst),
    volumes,
  );
  const demands = unit.map((c, i): Demand => ({
    cpu: cpuLimit(c.inst),
    memoryBytes: memoryLimit(c.inst),
    bytes: c.inst.rootBytes + (carried[i] ?? []).reduce((sum, v) => sum + v.bytes, 0),
    pools: poolBytes(c.inst, carried[i] ?? []),
  }));
  const first = unit[0]?.inst;
  const request: PlacementRequest = {
    cpu: demands.reduce((s, d) => s + d.cpu, 0),
    memoryBytes: demands.reduce((s, d) => s + d.memoryBytes, 0),
    bytes: demands.reduce((s, d) => s + d.bytes, 0),
    // The unit lands whole on one member: every pool any of its instances uses must be there.
    pools: demands.reduce((all, d) => addPoolBytes(all, d.pools), {}),
    architecture: first?.architecture ?? '',
    project: first?.project ?? '',
  };
  // A unit lands on one member whatever its groups, so it spreads by the first group it has.
  const group = unit.map((c) => placementGroup(c.inst)).find((g) => g !== undefined);
  if (group !== undefined) request.group = group;
  return { id, candidates: unit, carried, demands, request, size: 0 };
}

/** What the members that could receive moves offer in all, to weigh cpu, memory and bytes against each other. */
function capacityTotals(ledger: LoadLedger, source: string): Demand {
  const totals: Demand = { cpu: 0, memoryBytes: 0, bytes: 0 };
  for (const load of ledger.members) {
    if (load.member.name === source || load.member.status !== 'Online' || load.manual) continue;
    totals.cpu += load.member.cpuCapacity;
    totals.memoryBytes += load.member.memoryCapacity;
    totals.bytes += Math.max(0, load.diskFree);
  }
  return totals;
}

/** A demand's size as the sum of its shares of what the cluster offers. */
function relativeSize(d: Demand, totals: Demand): number {
  const part = (x: number, total: number): number => (total > 0 ? x / total : 0);
  return part(d.cpu, totals.cpu) + part(d.memoryBytes, totals.memoryBytes) + part(d.bytes, totals.bytes);
}

/** True if evacuating with `plan` would change anything, or must be refused; false: already evacuated. */
export function planHasWork(plan: EvacuationPlan): boolean {
  return plan.refusals.length > 0 || plan.instances.some((i) => i.action !== 'none');
}

/** Everything a restore of `member` does: start what evacuation stopped there, bring home what it moved. */
export interface RestorePlan {
  member: string;
  start: { name: string; project: string }[];
  /** `live`: running with `cluster.evacuate=live-migrate`, so it comes home as it left, pre-copied while it runs. */
  moves: { name: string; project: string; from: string; bytes: number; running: boolean; live: boolean; volumes: string[]; unit: string }[];
}

/**
 * Plan the restore of `member`: start its instances recorded as RUNNING that are not running, and bring
 * back every instance whose `volatile.evacuate.origin` is `member`, units kept together. Restore goes
 * home, so it checks no capacity (as LXD).
 */
export function planRestore(snapshot: ClusterSnapshot, member: string): RestorePlan {
  const start = snapshot.instances
    .filter(
      (i) =>
        i.location === member &&
        !i.running &&
        configValue('instance', i.config, 'volatile.last_state.power') === 'RUNNING',
    )
    .sort(byProjectName)
    .map((i) => ({ name: i.name, project: i.project }));

  const volumes = indexVolumes(snapshot);
  const away = snapshot.instances
    .filter((i) => i.location !== member && configValue('instance', i.config, 'volatile.evacuate.origin') === member)
    .sort(byProjectName);
  const moves: RestorePlan['moves'] = [];
  for (const unit of groupUnits(away, sharedVolumeKeys)) {
    const first = unit[0];
    const id = first === undefined ? '' : `${first.project}/${first.name}`;
    const carried = carriedVolumes(unit, volumes);
    unit.forEach((inst, i) => {
      const vols = carried[i] ?? [];
      moves.push({
        name: inst.name,
        project: inst.project,
        from: inst.location,
        bytes: inst.rootBytes + vols.reduce((s, v) => s + v.bytes, 0),
        running: inst.running,
        live: inst.running && configValue('instance', inst.config, 'cluster.evacuate') === 'live-migrate',
        volumes: vols.map((v) => `${v.pool}/${v.name}`),
        unit: id,
      });
    });
  }
  return { member, start, moves };
}
