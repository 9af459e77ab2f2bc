// What the members page shows as load: instances' `limits.cpu` and `limits.memory` summed per member,
// against the member's `capacity.*` (what it offers placement). Pure, for the page to render.

import { parseBytes } from '../../src/util/units.js';
import type { Instance, Member } from './api.js';

/** One member's reserved resources and what it offers (null: `capacity.*` unset, i.e. the host's). */
export interface MemberLoad {
  instances: number;
  cpu: number;
  cpuCapacity: number | null;
  memoryBytes: number;
  memoryCapacity: number | null;
}

/** Load of every member, keyed by name (members without instances included). */
export function memberLoads(members: Member[], instances: Instance[]): Map<string, MemberLoad> {
  const loads = new Map<string, MemberLoad>();
  for (const m of members) {
    const config = m.config ?? {};
    const cpu = Number(config['capacity.cpu'] ?? '');
    loads.set(m.server_name, {
      instances: 0,
      cpu: 0,
      cpuCapacity: Number.isFinite(cpu) && cpu > 0 ? cpu : null,
      memoryBytes: 0,
      memoryCapacity: parseBytes(config['capacity.memory'] ?? ''),
    });
  }
  for (const inst of instances) {
    const load = loads.get(inst.location);
    if (!load) continue;
    const config = inst.config ?? {};
    load.instances += 1;
    load.cpu += Number(config['limits.cpu'] ?? '') || 0;
    load.memoryBytes += parseBytes(config['limits.memory'] ?? '') ?? 0;
  }
  return loads;
}

/** A share of a capacity in percent (0..), or null without a capacity. */
export function percentOf(used: number, capacity: number | null): number | null {
  if (capacity === null || capacity <= 0) return null;
  return Math.round((used / capacity) * 100);
}
