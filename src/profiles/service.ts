// Profiles: records in the store (`profiles/<project>/<name>`) that instances apply in the order they list
// them (config/expand.ts). Their config is checked with the instance key registry; a change that would leave
// an instance using the profile without a root disk, or with a custom volume on another member, is refused.
// A profile in use cannot be deleted; `default` can be changed but never deleted or renamed. A change
// reaches running instances at their next start (LXD applies some keys live; Roost does not).
//
// Instances and profiles change in separate transactions, so each side guards the other: an instance write
// compares the revision of every profile it lists as it read them, and rewrites (unchanged) the profiles
// it newly lists; a profile write compares the profile's own revision. A profile deleted, renamed or
// changed between an instance's read and its write fails that write, and an instance that starts using a
// profile fails a delete, rename or change that read the instances before.

import { createHash } from 'node:crypto';
import type { Compare, Op, Store } from '../store/store.js';
import { keys, type DeviceConfig, type InstanceRecord, type ProfileRecord, type VolumeRecord } from '../store/schema.js';
import type { EventBus } from '../operations/events.js';
import { errors, type ApiError } from '../errors/index.js';
import { checkConfig } from '../config/keys.js';
import { attachedVolumes, checkDevices, hasRootDisk, rootPool } from '../config/devices.js';
import { volumeLabel } from '../storage/driver.js';
import { expandInstance, initialDefaultProfile, profileSets, type ProfileSet } from '../config/expand.js';

/** The user-editable part of a profile (LXD's `ProfilePut`). */
export interface ProfileChange {
  config: Record<string, string>;
  description: string;
  devices: Record<string, DeviceConfig>;
}

/** A profile with the store revision it was read at (0: `default`, never stored yet). */
export interface LoadedProfile {
  record: ProfileRecord;
  modRevision: number;
}

/** The profiles an instance write lists, and what its transaction must compare and write to keep them. */
export interface ProfileClaim {
  set: ProfileSet;
  compares: Compare[];
  ops: Op[];
}

/** The ETag of a profile's editable fields (LXD compares it on PUT and PATCH with If-Match). */
export function profileEtag(record: ProfileRecord): string {
  return createHash('sha256').update(JSON.stringify([record.config, record.description, record.devices])).digest('hex');
}

/** Refuse a profile name LXD refuses (400, its words). */
export function checkProfileName(name: string): void {
  if (name === '') throw errors.invalidProfileName('No name provided');
  if (name.includes('/')) throw errors.invalidProfileName('Profile names may not contain slashes');
  if (name === '.' || name === '..') throw errors.invalidProfileName(`Invalid profile name '${name}'`);
  // Not in LXD's rules, but a name must stay one store key and one URL segment.
  if ([...name].some((ch) => ch.charCodeAt(0) < 0x20)) throw errors.invalidProfileName(`Invalid profile name '${name}': no control characters`);
}

/** Refuse (400) profile config the instance registry refuses, and the keys only an instance may hold. */
export function checkProfileConfig(config: Record<string, unknown>): void {
  const problem = checkConfig('instance', config);
  if (problem) throw errors.badRequest(problem);
  for (const name of Object.keys(config)) {
    if (name.startsWith('volatile.')) throw errors.badRequest('Volatile keys can only be set on instances');
    if (name.startsWith('image.')) throw errors.badRequest('Image keys can only be set on instances');
  }
}

/** Profiles of the cluster, for every member's API. */
export class ProfileService {
  constructor(
    private readonly store: Store,
    private readonly events: EventBus,
  ) {}

  /** Store the initial `default` profile of `project` unless one is stored (each member at start; the first one wins). */
  async ensureDefault(project = 'default'): Promise<void> {
    const key = keys.profile(project, 'default');
    await this.store.txn([{ key, modRevision: 0 }], [{ type: 'put', key, value: JSON.stringify(initialDefaultProfile(project)) }]);
  }

  /** Every profile of `project` by name, `default` included. */
  async set(project: string): Promise<Map<string, ProfileRecord>> {
    const { kvs } = await this.store.range(keys.profiles(project));
    return profileSets(kvs.map((kv) => JSON.parse(kv.value) as ProfileRecord), [project]).get(project) ?? new Map();
  }

  /** Every profile of `project`, by name. */
  async list(project: string): Promise<ProfileRecord[]> {
    return [...(await this.set(project)).values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** One profile; 404 (`context` prefixes LXD's text, as each of its handlers words it). */
  async load(project: string, name: string, context = ''): Promise<LoadedProfile> {
    const kv = await this.store.get(keys.profile(project, name));
    if (kv) return { record: JSON.parse(kv.value) as ProfileRecord, modRevision: kv.modRevision };
    if (name === 'default') return { record: initialDefaultProfile(project), modRevision: 0 };
    throw errors.profileNotFound(context);
  }

  /** URLs of the instances that list the profile (LXD's `used_by`), from `instances` if the caller read them. */
  async usedBy(project: string, name: string, instances?: InstanceRecord[]): Promise<string[]> {
    const all = instances ?? (await this.instances(project)).map((l) => l.record);
    return all.filter((r) => r.profiles.includes(name)).map((r) => instanceUrl(r));
  }

  /**
   * The profiles an instance write will list (`names`), 404 (`missing`) for one that does not exist; with
   * compares that hold while each stays as read, and a rewrite of each of `added` (newly listed) so that a
   * delete, rename or change of it that read the instances before fails.
   */
  async claim(project: string, names: string[], added: string[], missing: (name: string) => ApiError = () => errors.profileNotFound()): Promise<ProfileClaim> {
    const set = new Map<string, ProfileRecord>();
    const compares: Compare[] = [];
    const ops: Op[] = [];
    for (const name of new Set(names)) {
      const kv = await this.store.get(keys.profile(project, name));
      if (!kv && name !== 'default') throw missing(name);
      const record = kv ? (JSON.parse(kv.value) as ProfileRecord) : initialDefaultProfile(project);
      set.set(name, record);
      compares.push({ key: keys.profile(project, name), modRevision: kv?.modRevision ?? 0 });
      if (added.includes(name) && kv) ops.push({ type: 'put', key: kv.key, value: kv.value });
    }
    return { set, compares, ops };
  }

  /** Create a profile (LXD's `POST /1.0/profiles`). */
  async create(project: string, name: string, change: ProfileChange): Promise<ProfileRecord> {
    checkProfileName(name);
    checkProfileConfig(change.config);
    checkDevices(change.devices);
    await this.checkAttachable(project, change.devices);
    const record: ProfileRecord = { name, project, ...normalise(change) };
    const key = keys.profile(project, name);
    // `default` always exists, stored or not.
    if (name === 'default') throw errors.profileExists(name);
    const r = await this.store.txn([{ key, modRevision: 0 }], [{ type: 'put', key, value: JSON.stringify(record) }]);
    if (!r.succeeded) throw errors.profileExists(name);
    this.events.lifecycle('profile-created', `/1.0/profiles/${name}`, {}, project);
    return record;
  }

  /**
   * Replace a profile's editable fields with `next(current)` (PUT gives the body, PATCH merges it), if the
   * `etag` (when given) still matches and every instance using it stays valid. `context` words a 404.
   */
  async update(project: string, name: string, next: (current: ProfileRecord) => ProfileChange, etag: string | undefined, context: string): Promise<ProfileRecord> {
    for (;;) {
      const { record, modRevision } = await this.load(project, name, context);
      if (etag !== undefined && etag !== profileEtag(record)) throw errors.preconditionFailed();
      const change = next(record);
      checkProfileConfig(change.config);
      checkDevices(change.devices);
      await this.checkAttachable(project, change.devices);
      const updated: ProfileRecord = { ...record, ...normalise(change) };
      const { set, users } = await this.usersOf(project, name);
      set.set(name, updated);
      const volumes = await this.volumes(project);
      const before = profileSets([...set.values()].map((p) => (p.name === name ? record : p)), [project]).get(project) ?? new Map();
      for (const r of users) {
        const expanded = expandInstance(r, set);
        if (!hasRootDisk(expanded.devices)) throw errors.profileRootDiskInUse();
        // An instance's root volume stays in the pool it was created in (its data is there).
        const pool = rootPool(expanded.devices);
        if (pool !== rootPool(expandInstance(r, before).devices)) {
          throw errors.badRequest(`Cannot update root disk device pool name to "${pool ?? ''}": instance "${r.name}" uses this profile's root disk`);
        }
        for (const v of attachedVolumes(expanded.devices)) {
          const vol = volumes.get(volumeLabel(v.pool, v.volume));
          if (vol && vol.location !== r.location) {
            throw errors.badRequest(`Storage volume "${v.volume}" is on member "${vol.location}", instance "${r.name}" (using profile "${name}") on "${r.location}"`);
          }
        }
      }
      const key = keys.profile(project, name);
      const r = await this.store.txn([{ key, modRevision }], [{ type: 'put', key, value: JSON.stringify(updated) }]);
      if (r.succeeded) {
        this.events.lifecycle('profile-updated', `/1.0/profiles/${name}`, {}, project);
        return updated;
      }
    }
  }

  /** Rename a profile, and every instance's (and snapshot's) mention of it, in one transaction. */
  async rename(project: string, name: string, newName: string): Promise<void> {
    if (name === 'default') throw errors.defaultProfileKept('renamed');
    checkProfileName(newName);
    for (;;) {
      const { record, modRevision } = await this.load(project, name);
      if (await this.store.get(keys.profile(project, newName))) throw errors.profileNameTaken(newName);
      if (newName === 'default') throw errors.profileNameTaken(newName);
      const compares: Compare[] = [
        { key: keys.profile(project, name), modRevision },
        { key: keys.profile(project, newName), modRevision: 0 },
      ];
      const ops: Op[] = [
        { type: 'delete', key: keys.profile(project, name) },
        { type: 'put', key: keys.profile(project, newName), value: JSON.stringify({ ...record, name: newName }) },
      ];
      const swap = (list: string[]): string[] => list.map((p) => (p === name ? newName : p));
      for (const { record: r, modRevision: rev } of await this.instances(project)) {
        const mentioned = r.profiles.includes(name) || (r.snapshots ?? []).some((s) => s.profiles.includes(name));
        if (!mentioned) continue;
        // A moving instance's record must stay as its move read it (its commit compares it).
        if (await this.store.get(keys.move(project, r.name))) throw errors.instanceBusy(r.name);
        const next: InstanceRecord = { ...r, profiles: swap(r.profiles) };
        if (r.snapshots) next.snapshots = r.snapshots.map((s) => ({ ...s, profiles: swap(s.profiles) }));
        compares.push({ key: keys.instance(project, r.name), modRevision: rev }, { key: keys.move(project, r.name), modRevision: 0 });
        ops.push({ type: 'put', key: keys.instance(project, r.name), value: JSON.stringify(next) });
      }
      const r = await this.store.txn(compares, ops);
      if (r.succeeded) {
        this.events.lifecycle('profile-renamed', `/1.0/profiles/${newName}`, { old_name: name }, project);
        return;
      }
    }
  }

  /** Delete a profile no instance uses; `default` never. */
  async delete(project: string, name: string): Promise<void> {
    if (name === 'default') throw errors.defaultProfileKept('deleted');
    for (;;) {
      const { modRevision } = await this.load(project, name);
      const { users } = await this.usersOf(project, name);
      if (users.length > 0) throw errors.profileInUse();
      const key = keys.profile(project, name);
      const r = await this.store.txn([{ key, modRevision }], [{ type: 'delete', key }]);
      if (r.succeeded) {
        this.events.lifecycle('profile-deleted', `/1.0/profiles/${name}`, {}, project);
        return;
      }
    }
  }

  /** The project's profiles and the instances that list `name`, read at one revision. */
  private async usersOf(project: string, name: string): Promise<{ set: Map<string, ProfileRecord>; users: InstanceRecord[] }> {
    const { kvs } = await this.store.rangeMany([keys.profiles(project), keys.instances(project)]);
    const profiles: ProfileRecord[] = [];
    const users: InstanceRecord[] = [];
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.profiles(project))) profiles.push(JSON.parse(kv.value) as ProfileRecord);
      else {
        const r = JSON.parse(kv.value) as InstanceRecord;
        if (r.profiles.includes(name)) users.push(r);
      }
    }
    return { set: profileSets(profiles, [project]).get(project) ?? new Map(), users };
  }

  private async instances(project: string): Promise<{ record: InstanceRecord; modRevision: number }[]> {
    const { kvs } = await this.store.range(keys.instances(project));
    return kvs.map((kv) => ({ record: JSON.parse(kv.value) as InstanceRecord, modRevision: kv.modRevision }));
  }

  /** The project's custom volumes, keyed by `<pool>/<name>`. */
  private async volumes(project: string): Promise<Map<string, VolumeRecord>> {
    const { kvs } = await this.store.range(keys.volumes(project));
    return new Map(kvs.map((kv) => {
      const v = JSON.parse(kv.value) as VolumeRecord;
      return [volumeLabel(v.pool, v.name), v];
    }));
  }

  /** A profile may attach only custom volumes that exist. */
  private async checkAttachable(project: string, devices: Record<string, DeviceConfig>): Promise<void> {
    const attached = attachedVolumes(devices);
    if (attached.length === 0) return;
    const volumes = await this.volumes(project);
    for (const v of attached) {
      if (!volumes.has(volumeLabel(v.pool, v.volume))) throw errors.badRequest(`Storage volume "${v.volume}" of device "${v.device}" not found`);
    }
  }
}

/** An instance's URL as `used_by` lists it. */
function instanceUrl(r: InstanceRecord): string {
  return r.project === 'default' ? `/1.0/instances/${r.name}` : `/1.0/instances/${r.name}?project=${r.project}`;
}

/** Empty values unset keys and empty devices remove them, as LXD stores profiles. */
function normalise(change: ProfileChange): ProfileChange {
  return {
    config: Object.fromEntries(Object.entries(change.config).filter(([, v]) => v !== '')),
    description: change.description,
    devices: Object.fromEntries(Object.entries(change.devices).filter(([, d]) => Object.keys(d).length > 0)),
  };
}
