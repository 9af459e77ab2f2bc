// The snapshot evacuation plans on: the cluster as it is, plus the moves other running evacuations
// have planned but not finished, counted as load on their targets so two evacuations at once never
// place more on a member than it can take.

import type { Member } from '../daemon/context.js';
import { readSnapshot } from '../cluster/snapshot.js';
import type { ClusterSnapshot, InstanceSnapshot } from '../placement/snapshot.js';
import { keys, type EvacuationRecord } from '../store/schema.js';

/** Read a snapshot for planning an evacuation of member `m`. */
export async function readPlanningSnapshot(m: Member): Promise<ClusterSnapshot> {
  const [snapshot, { kvs }] = await Promise.all([readSnapshot(m), m.store.range(keys.evacuations())]);
  return withReservations(snapshot, kvs.map((kv) => JSON.parse(kv.value) as EvacuationRecord), m.name);
}

/** Add a shadow of every instance another running evacuation still has to move, located on its target. */
export function withReservations(snapshot: ClusterSnapshot, runs: EvacuationRecord[], self: string): ClusterSnapshot {
  const byKey = new Map<string, InstanceSnapshot>();
  for (const i of snapshot.instances) byKey.set(`${i.project}/${i.name}`, i);
  const shadows: InstanceSnapshot[] = [];
  for (const run of runs) {
    if (run.member === self || run.status !== 'running' || run.action !== 'evacuate') continue;
    for (const r of run.reservations ?? []) {
      const inst = byKey.get(`${r.project}/${r.name}`);
      // Already moved (now counted where it is), or headed here (that move will be placed again).
      if (!inst || inst.location !== run.member || r.target === self) continue;
      shadows.push({ ...inst, name: `${inst.name}@${run.member}`, location: r.target, running: false });
    }
  }
  return { ...snapshot, instances: [...snapshot.instances, ...shadows] };
}
