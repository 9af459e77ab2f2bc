// The snapshot evacuation plans on: the cluster as it is, plus the moves other runs have planned but not
// finished, counted as load on their targets so two evacuations at once never place more on a member than it
// can take. Pure: the daemon reads the snapshot and the records, this adds the shadows.

import type { ClusterSnapshot, InstanceSnapshot } from '../placement/snapshot.js';
import type { EvacuationRecord } from '../store/schema.js';

/**
 * Add a shadow of every instance another active run still has to move, located on its target. Runs of
 * members that are offline count no more: they cannot move anything until their member is back.
 */
export function withReservations(snapshot: ClusterSnapshot, runs: EvacuationRecord[], planned: { run: string | null; member: string | null }): ClusterSnapshot {
  const byKey = new Map<string, InstanceSnapshot>();
  for (const i of snapshot.instances) byKey.set(`${i.project}/${i.name}`, i);
  const offline = new Set(snapshot.members.filter((m) => m.status === 'Offline').map((m) => m.name));
  const shadows: InstanceSnapshot[] = [];
  for (const run of runs) {
    if (run.id === planned.run || (run.status !== 'running' && run.status !== 'pending') || run.action !== 'evacuate' || offline.has(run.member)) continue;
    for (const r of run.reservations ?? []) {
      const inst = byKey.get(`${r.project}/${r.name}`);
      // Already moved (now counted where it is), or headed to the member this snapshot plans for (that
      // move will be placed again, and a shadow there would look like one of its own instances).
      if (!inst || inst.location !== run.member || r.target === planned.member) continue;
      shadows.push({ ...inst, name: `${inst.name}@${run.member}`, location: r.target, running: false });
    }
  }
  return { ...snapshot, instances: [...snapshot.instances, ...shadows] };
}
