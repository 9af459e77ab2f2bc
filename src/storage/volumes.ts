// Custom storage volumes: records in the store, data in the member's pool.

import type { Store } from '../store/store.js';
import { keys, type InstanceRecord, type ProfileRecord, type VolumeRecord } from '../store/schema.js';
import type { PoolLookup } from './driver.js';
import { errors } from '../errors/index.js';
import { checkConfig } from '../config/keys.js';
import { attachedVolumes, checkVolumeName } from '../config/devices.js';
import { expandInstance, profileSets } from '../config/expand.js';
import type { EventBus } from '../operations/events.js';

/** Custom volumes held by this member. */
export class VolumeService {
  constructor(
    private readonly store: Store,
    private readonly member: string,
    private readonly pools: PoolLookup,
    private readonly events: EventBus,
  ) {}

  /** Every custom volume of a project (all members). */
  async list(project: string, pool: string): Promise<VolumeRecord[]> {
    const { kvs } = await this.store.range(keys.volumes(project, pool));
    return kvs.map((kv) => JSON.parse(kv.value) as VolumeRecord);
  }

  /** One volume; 404 if absent. */
  async get(project: string, pool: string, name: string): Promise<VolumeRecord> {
    const kv = await this.store.get(keys.volume(project, pool, name));
    if (!kv) throw errors.volumeNotFound();
    return JSON.parse(kv.value) as VolumeRecord;
  }

  /** Validate a create request. */
  validate(name: string, config: Record<string, unknown>): void {
    checkVolumeName(name);
    const problem = checkConfig('volume', config);
    if (problem) throw errors.badRequest(problem);
  }

  /** Create a custom volume on this member (data directory first, then the record). */
  async create(project: string, pool: string, name: string, config: Record<string, string>, description: string): Promise<VolumeRecord> {
    this.validate(name, config);
    if (await this.store.get(keys.volume(project, pool, name))) throw errors.volumeExists(name);
    const record: VolumeRecord = {
      name, project, pool, location: this.member, description, contentType: 'filesystem', config, createdAt: new Date().toISOString(),
    };
    const ref = { type: 'custom' as const, project, name };
    await this.pools(pool).createVolume(ref);
    const r = await this.store.txn([{ key: keys.volume(project, pool, name), modRevision: 0 }], [
      { type: 'put', key: keys.volume(project, pool, name), value: JSON.stringify(record) },
    ]);
    if (!r.succeeded) throw errors.volumeExists(name);
    this.events.lifecycle('storage-volume-created', `/1.0/storage-pools/${pool}/volumes/custom/${name}`, {}, project);
    return record;
  }

  /** Instances that have the volume attached (by their own devices or a profile's). */
  async usedBy(project: string, pool: string, name: string): Promise<string[]> {
    const { kvs } = await this.store.rangeMany([keys.instances(project), keys.profiles(project)]);
    const instances: InstanceRecord[] = [];
    const profiles: ProfileRecord[] = [];
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.profiles(project))) profiles.push(JSON.parse(kv.value) as ProfileRecord);
      else instances.push(JSON.parse(kv.value) as InstanceRecord);
    }
    const set = profileSets(profiles, [project]).get(project) ?? new Map<string, ProfileRecord>();
    return instances
      .filter((r) => attachedVolumes(expandInstance(r, set).devices).some((v) => v.pool === pool && v.volume === name))
      .map((r) => `/1.0/instances/${r.name}`);
  }

  /** Delete a volume held here that no instance uses. */
  async delete(project: string, pool: string, name: string): Promise<void> {
    const kv = await this.store.get(keys.volume(project, pool, name));
    if (!kv) throw errors.volumeNotFound();
    const used = await this.usedBy(project, pool, name);
    if (used.length > 0) throw errors.badRequest(`The storage volume is still in use by ${used.join(', ')}`);
    const r = await this.store.txn([{ key: kv.key, modRevision: kv.modRevision }], [{ type: 'delete', key: kv.key }]);
    if (!r.succeeded) throw errors.conflict(`Storage volume "${name}" changed; try again`);
    await this.pools(pool).deleteVolume({ type: 'custom', project, name });
    this.events.lifecycle('storage-volume-deleted', `/1.0/storage-pools/${pool}/volumes/custom/${name}`, {}, project);
  }

  /** Bytes used by a volume held here. */
  async usage(project: string, pool: string, name: string): Promise<number> {
    return this.pools(pool).volumeUsage({ type: 'custom', project, name });
  }
}
