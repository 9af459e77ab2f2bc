// Profile expansion, as LXD does it: an instance's effective config and devices are its profiles' in the
// order it lists them (a later profile over an earlier one), then its own over all of them. Devices go
// whole by name. Everything that acts on config or devices (drivers, stop timeouts, moves, placement, the
// evacuation planner through its snapshot) reads what this returns, never the record's own maps.

import type { DeviceConfig, InstanceRecord, ProfileRecord } from '../store/schema.js';

/** The `default` profile's devices in a new cluster: a root disk on the `default` pool. */
export const defaultProfileDevices: Readonly<Record<string, DeviceConfig>> = {
  root: { type: 'disk', path: '/', pool: 'default' },
};

/** The `default` profile of `project` as it starts out (and as it is read before it was ever stored). */
export function initialDefaultProfile(project: string): ProfileRecord {
  return { name: 'default', project, description: 'Default Roost profile', config: {}, devices: structuredClone(defaultProfileDevices) };
}

/** One project's profiles by name: what expansion looks names up in. */
export type ProfileSet = ReadonlyMap<string, Pick<ProfileRecord, 'config' | 'devices'>>;

/** An instance's effective config and devices (LXD's `expanded_config` and `expanded_devices`). */
export interface ExpandedInstance {
  config: Record<string, string>;
  devices: Record<string, DeviceConfig>;
}

/** What expansion needs of an instance (a record, a snapshot of one, or a request to create one). */
export type Expandable = Pick<InstanceRecord, 'config' | 'devices' | 'profiles'>;

/**
 * Expand `instance` with `profiles`. A name the set does not hold adds nothing (a profile is never deleted
 * while in use, so this is only a record read in the middle of a change), except `default`, which then is
 * the initial one.
 */
export function expandInstance(instance: Expandable, profiles: ProfileSet): ExpandedInstance {
  const config: Record<string, string> = {};
  const devices: Record<string, DeviceConfig> = {};
  for (const name of instance.profiles) {
    const profile = profiles.get(name) ?? (name === 'default' ? { config: {}, devices: defaultProfileDevices } : undefined);
    if (!profile) continue;
    Object.assign(config, profile.config);
    for (const [device, options] of Object.entries(profile.devices)) devices[device] = { ...options };
  }
  Object.assign(config, instance.config);
  for (const [device, options] of Object.entries(instance.devices)) devices[device] = { ...options };
  return { config, devices };
}

/** Index profile records by project, each project with its `default` (the initial one if none is stored). */
export function profileSets(records: Iterable<ProfileRecord>, projects: Iterable<string> = ['default']): Map<string, Map<string, ProfileRecord>> {
  const out = new Map<string, Map<string, ProfileRecord>>();
  const setOf = (project: string): Map<string, ProfileRecord> => {
    let set = out.get(project);
    if (!set) out.set(project, (set = new Map()));
    return set;
  };
  for (const r of records) setOf(r.project).set(r.name, r);
  for (const project of projects) setOf(project);
  for (const [project, set] of out) if (!set.has('default')) set.set('default', initialDefaultProfile(project));
  return out;
}
