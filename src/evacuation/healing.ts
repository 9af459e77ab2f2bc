// What healing an offline member does with each of its instances, decided over a snapshot (no I/O): an
// instance whose every volume is on a remote (`shared`) pool is relinked to a member that placement chooses
// (the same planner an evacuation uses, so groups, pools and limits count alike); any other is unreachable
// (its data is on the gone member's local storage) or stays (pinned by `cluster.evacuate=stop`, a host
// device, or no member fits), and healing never touches it.

import { instancePools } from '../config/devices.js';
import type { ClusterSnapshot, InstanceSnapshot } from '../placement/snapshot.js';
import { planEvacuation } from './planner.js';

/** An instance healing relinks: where to, and whether to start it there. */
export interface HealRelink {
  project: string;
  name: string;
  target: string;
  /** It ran (or should have: `volatile.last_state.power`) on the gone member. */
  running: boolean;
}

/** What healing does with a gone member's instances. */
export interface HealPlan {
  relinks: HealRelink[];
  /** `project/name` (bare name in `default`) of the instances on its local storage, in name order. */
  unreachable: string[];
  /** Instances on shared storage that stay anyway, with why (pinned, or no member fits). */
  stays: { name: string; reason: string }[];
}

/** An instance as healing names it to the user. */
function label(inst: Pick<InstanceSnapshot, 'project' | 'name'>): string {
  return inst.project === 'default' ? inst.name : `${inst.project}/${inst.name}`;
}

/** Whether every pool `inst` keeps data on is remote: another member sees its volumes as they are. */
export function onRemoteStorage(inst: InstanceSnapshot, snapshot: ClusterSnapshot): boolean {
  const pools = instancePools(inst.devices);
  const remote = snapshot.remotePools ?? [];
  return pools.length > 0 && pools.every((p) => remote.includes(p));
}

/** Plan the healing of `member` (Offline in `snapshot`). */
export function planHealing(snapshot: ClusterSnapshot, member: string): HealPlan {
  const held = snapshot.instances.filter((i) => i.location === member);
  const shared = held.filter((i) => onRemoteStorage(i, snapshot));
  const unreachable = held.filter((i) => !shared.includes(i)).map(label).sort();
  // Planned as an evacuation of the shared ones alone: the local ones copy nothing anywhere, so they must not
  // take room from the members that could run the shared ones.
  const plan = planEvacuation({ ...snapshot, instances: [...snapshot.instances.filter((i) => i.location !== member), ...shared] }, member);
  const relinks: HealRelink[] = [];
  const stays: HealPlan['stays'] = plan.refusals.map((r) => ({ name: label(r), reason: r.reason }));
  for (const p of plan.instances) {
    if (p.target === null) stays.push({ name: label(p), reason: p.reason });
    else relinks.push({ project: p.project, name: p.name, target: p.target, running: p.running });
  }
  return { relinks, unreachable, stays: stays.sort((a, b) => (a.name < b.name ? -1 : 1)) };
}
