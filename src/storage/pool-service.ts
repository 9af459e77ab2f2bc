// Storage pools of the cluster, as LXD's clustered pool API has them: a pool is first defined on each member
// (`POST /1.0/storage-pools?target=<member>` with member-specific config, the pool `Pending`), then created
// everywhere at once (`POST` without target, cluster-wide config): each member opens its own driver instance,
// and the pool is `Created` if every member succeeded, else `Errored` naming the member that failed. Records
// live in the store (`PoolRecord`, one `PoolMemberRecord` per member); data in each member's `MemberPools`.

import type { Store, Op } from '../store/store.js';
import { keys, type InstanceRecord, type PoolMemberRecord, type PoolRecord, type ProfileRecord, type VolumeRecord } from '../store/schema.js';
import { checkConfig, findKey } from '../config/keys.js';
import { attachedVolumes, rootPool } from '../config/devices.js';
import { expandInstance, profileSets } from '../config/expand.js';
import { errors } from '../errors/index.js';
import type { EventBus } from '../operations/events.js';
import type { Logger } from '../util/log.js';
import { defaultPool } from './driver.js';
import { checkPoolDriver, type MemberPools, type PoolDriverConfig } from './pools.js';

/** A pool with every member's part of it. */
export interface PoolState {
  record: PoolRecord;
  members: PoolMemberRecord[];
}

/** What the pool service needs of the cluster: its members, and a way to have one open or remove a pool. */
export interface PoolPorts {
  /** Every member's name, and whether it answers now. */
  members(): Promise<{ name: string; online: boolean }[]>;
  /** Have member `member` open pool `name` with `driver` and its merged config (this member: directly). */
  openOn(member: string, name: string, driver: string, config: Record<string, string>): Promise<void>;
  /** Have member `member` remove pool `name` (refused there while it holds a volume). */
  removeOn(member: string, name: string, source: string | undefined): Promise<void>;
}

const poolNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Refuse (400, LXD's words where it has them) a pool name that could not be a directory of its own. */
export function checkPoolName(name: string): void {
  if (name === '') throw errors.badRequest('No name provided');
  if (name.includes('/')) throw errors.badRequest('Storage pool names may not contain slashes');
  if (!poolNamePattern.test(name) || name.includes('..')) {
    throw errors.badRequest(`Invalid storage pool name "${name}": use letters, digits, dashes, dots and underscores`);
  }
}

/** Whether `key` is one of the pool keys that differ per member (`source`, `size`). */
export function memberSpecificKey(key: string): boolean {
  return findKey('pool', key)?.memberSpecific === true;
}

/** Refuse (400) pool config with an unknown key or a bad value. */
function checkPoolConfig(config: Record<string, unknown>): void {
  const problem = checkConfig('pool', config);
  if (problem) throw errors.badRequest(problem);
}

/** The driver config a member opens a pool with, from its member-specific config. */
export function driverConfig(config: Record<string, string>): PoolDriverConfig {
  const out: PoolDriverConfig = {};
  if (config.source) out.source = config.source;
  if (config.size) out.size = config.size;
  return out;
}

/** The cluster's storage pools: records, and their creation, change and deletion on every member. */
export class PoolService {
  constructor(
    private readonly store: Store,
    private readonly member: string,
    private readonly local: MemberPools,
    private readonly ports: PoolPorts,
    private readonly events: EventBus,
    private readonly log: Logger,
  ) {}

  /** Every pool, in name order, with its members' parts. */
  async list(): Promise<PoolState[]> {
    const { kvs } = await this.store.rangeMany([keys.pools(), keys.poolMembers()]);
    const byName = new Map<string, PoolState>();
    const parts: PoolMemberRecord[] = [];
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.poolMembers())) parts.push(JSON.parse(kv.value) as PoolMemberRecord);
      else {
        const record = JSON.parse(kv.value) as PoolRecord;
        byName.set(record.name, { record, members: [] });
      }
    }
    for (const p of parts) byName.get(p.pool)?.members.push(p);
    return [...byName.values()].sort((a, b) => (a.record.name < b.record.name ? -1 : 1));
  }

  /** One pool; 404 if absent. */
  async get(name: string): Promise<PoolState> {
    const { kvs } = await this.store.rangeMany([keys.pool(name), keys.poolMembers(name)]);
    let record: PoolRecord | null = null;
    const members: PoolMemberRecord[] = [];
    for (const kv of kvs) {
      if (kv.key === keys.pool(name)) record = JSON.parse(kv.value) as PoolRecord;
      else if (kv.key.startsWith(keys.poolMembers(name))) members.push(JSON.parse(kv.value) as PoolMemberRecord);
    }
    if (!record) throw errors.poolNotFound();
    return { record, members };
  }

  /**
   * The `default` pool (dir) on this member, as every member has had it: its records are written if missing
   * (an install from before pools, a new member), and it is opened.
   */
  async ensureDefault(): Promise<void> {
    const now = new Date().toISOString();
    const pool: PoolRecord = { name: defaultPool, driver: 'dir', description: '', config: {}, status: 'Created', createdAt: now };
    const part: PoolMemberRecord = { pool: defaultPool, member: this.member, config: {}, status: 'Created', error: '' };
    for (const [key, value] of [[keys.pool(defaultPool), pool], [keys.poolMember(defaultPool, this.member), part]] as const) {
      await this.store.txn([{ key, modRevision: 0 }], [{ type: 'put', key, value: JSON.stringify(value) }]);
    }
    await this.local.open(defaultPool, 'dir', {});
  }

  /**
   * At boot: open every pool this member has a created part of; a pool created before this member joined is
   * created here now with its default member config (what LXD asks of a joining member), `Errored` here if that fails.
   */
  async openAtBoot(): Promise<void> {
    for (const { record, members } of await this.list()) {
      if (record.name === defaultPool || record.status === 'Pending') continue;
      const mine = members.find((p) => p.member === this.member);
      if (mine && mine.status !== 'Created' && record.status !== 'Created') continue;
      try {
        await this.local.open(record.name, record.driver, driverConfig(mine?.config ?? {}));
        if (!mine || mine.status !== 'Created') await this.putPart({ pool: record.name, member: this.member, config: mine?.config ?? {}, status: 'Created', error: '' });
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        this.log.error({ err, pool: record.name }, 'could not open a storage pool on this member');
        await this.putPart({ pool: record.name, member: this.member, config: mine?.config ?? {}, status: 'Errored', error }).catch(() => undefined);
      }
    }
  }

  /** `POST /1.0/storage-pools?target=<member>`: define the pool on one member (member-specific config only). */
  async define(name: string, driver: string, target: string, config: Record<string, string>, description: string): Promise<void> {
    checkPoolName(name);
    checkPoolDriver(driver);
    for (const key of Object.keys(config)) {
      if (!memberSpecificKey(key)) throw errors.badRequest(`Config key "${key}" may not be used as member-specific key`);
    }
    checkPoolConfig(config);
    if (!(await this.ports.members()).some((m) => m.name === target)) throw errors.memberNotFound(target);
    const existing = await this.get(name).catch(() => null);
    if (existing) {
      if (existing.record.status !== 'Pending') throw errors.badRequest('Pool is not in pending state');
      if (existing.record.driver !== driver) throw errors.badRequest(`Storage pool already exists with a different driver "${existing.record.driver}"`);
      if (existing.members.some((p) => p.member === target)) throw errors.badRequest(`Storage pool "${name}" already defined on member "${target}"`);
    }
    const ops: Op[] = [];
    if (!existing) {
      const record: PoolRecord = { name, driver, description, config: {}, status: 'Pending', createdAt: new Date().toISOString() };
      ops.push({ type: 'put', key: keys.pool(name), value: JSON.stringify(record) });
    }
    const part: PoolMemberRecord = { pool: name, member: target, config, status: 'Pending', error: '' };
    ops.push({ type: 'put', key: keys.poolMember(name, target), value: JSON.stringify(part) });
    const r = await this.store.txn(
      [{ key: keys.poolMember(name, target), modRevision: 0 }, ...(existing ? [] : [{ key: keys.pool(name), modRevision: 0 }])],
      ops,
    );
    if (!r.succeeded) throw errors.badRequest(`Storage pool "${name}" already defined on member "${target}"`);
  }

  /**
   * `POST /1.0/storage-pools` without target: create a pool defined on every member (a cluster of one member
   * needs no definition first), with cluster-wide config. Each member opens it; the pool is `Created` if all
   * did, else `Errored` and the error names the members that failed. An `Errored` pool can be created again
   * (the members where it exists are left alone).
   */
  async createEverywhere(name: string, driver: string, config: Record<string, string>, description: string): Promise<PoolState> {
    checkPoolName(name);
    checkPoolDriver(driver);
    for (const key of Object.keys(config)) {
      if (memberSpecificKey(key)) throw errors.badRequest(`Config key "${key}" is cluster member specific`);
    }
    checkPoolConfig(config);
    const members = await this.ports.members();
    let state = await this.get(name).catch(() => null);
    if (!state && members.length === 1 && members[0]) {
      await this.define(name, driver, members[0].name, {}, description);
      state = await this.get(name);
    }
    if (!state) throw errors.badRequest('Pool not pending on any node (use --target <node> first)');
    const { record } = state;
    if (record.status === 'Created') throw errors.badRequest('The storage pool is already created');
    if (record.driver !== driver) {
      throw errors.badRequest(`Requested storage pool driver "${driver}" does not match driver in existing database record "${record.driver}"`);
    }
    const missing = members.map((m) => m.name).filter((m) => !state.members.some((p) => p.member === m));
    if (missing.length > 0) throw errors.badRequest(`Pool not defined on nodes: ${missing.join(', ')}`);
    if (record.status === 'Errored' && Object.keys(config).length > 0) {
      throw errors.badRequest('Storage pool already partially created. Please do not specify any global config when re-running create');
    }
    const globalConfig = record.status === 'Errored' ? record.config : config;
    await this.putRecord({ ...record, config: globalConfig, description: description || record.description, status: 'Errored' });

    const failures: string[] = [];
    await Promise.all(
      state.members.map(async (part) => {
        if (part.status === 'Created') return;
        try {
          await this.ports.openOn(part.member, name, driver, { ...globalConfig, ...part.config });
          await this.putPart({ ...part, status: 'Created', error: '' });
        } catch (err) {
          const error = err instanceof Error ? err.message : String(err);
          failures.push(`member "${part.member}": ${error}`);
          await this.putPart({ ...part, status: 'Errored', error });
        }
      }),
    );
    const status = failures.length === 0 ? 'Created' : 'Errored';
    await this.putRecord({ ...(await this.get(name)).record, status });
    if (failures.length > 0) throw errors.internal(`Failed to create storage pool "${name}" on ${failures.sort().join('; ')}`);
    this.events.lifecycle('storage-pool-created', `/1.0/storage-pools/${name}`, {});
    return this.get(name);
  }

  /**
   * `PUT`/`PATCH /1.0/storage-pools/<name>[?target=]`: cluster-wide config and description without target,
   * member-specific config with one. `replace` (PUT) sets the whole map; PATCH merges. A created pool's
   * `source` stays what it was created with (its data is there).
   */
  async update(name: string, change: { config?: Record<string, string>; description?: string }, replace: boolean, target?: string): Promise<void> {
    const state = await this.get(name);
    const config = change.config ?? {};
    if (target === undefined) {
      if (state.record.status !== 'Created') throw errors.badRequest('Cannot update storage pool global config when not in created state');
      for (const key of Object.keys(config)) {
        if (memberSpecificKey(key)) throw errors.badRequest(`Config key "${key}" is cluster member specific`);
      }
      checkPoolConfig(config);
      const next = replace ? config : { ...state.record.config, ...config };
      for (const [k, v] of Object.entries(next)) if (v === '') delete next[k];
      await this.putRecord({ ...state.record, config: next, description: change.description ?? state.record.description });
    } else {
      const part = state.members.find((p) => p.member === target);
      if (!part) throw errors.memberNotFound(target);
      for (const [key, value] of Object.entries(config)) {
        if (memberSpecificKey(key)) continue;
        // A PUT of what `show --target` printed sends the cluster-wide keys back unchanged.
        if ((state.record.config[key] ?? '') !== value) throw errors.badRequest(`Config key "${key}" may not be used as cluster member specific key`);
      }
      const own = Object.fromEntries(Object.entries(config).filter(([k]) => memberSpecificKey(k)));
      checkPoolConfig(own);
      const next = replace ? own : { ...part.config, ...own };
      for (const [k, v] of Object.entries(next)) if (v === '') delete next[k];
      if (part.status === 'Created' && (next.source ?? '') !== (part.config.source ?? '')) {
        throw errors.badRequest(`The source of storage pool "${name}" on member "${target}" cannot change once it is created`);
      }
      await this.putPart({ ...part, config: next });
      if (change.description !== undefined) await this.putRecord({ ...state.record, description: change.description });
    }
    this.events.lifecycle('storage-pool-updated', `/1.0/storage-pools/${name}`, target === undefined ? {} : { target });
  }

  /** `DELETE /1.0/storage-pools/<name>`: refused while anything uses it; else removed from every member, then its records. */
  async delete(name: string): Promise<void> {
    const state = await this.get(name);
    if ((await this.usedBy(name)).length > 0) throw errors.badRequest('The storage pool is currently in use');
    const created = state.members.filter((p) => p.status !== 'Pending');
    const online = new Map((await this.ports.members()).map((m) => [m.name, m.online]));
    const offline = created.filter((p) => online.get(p.member) !== true).map((p) => p.member);
    if (offline.length > 0) throw errors.unavailable(`Cannot delete storage pool "${name}": member${offline.length > 1 ? 's' : ''} ${offline.join(', ')} offline`);
    for (const part of created) await this.ports.removeOn(part.member, name, part.config.source);
    const ops: Op[] = [{ type: 'delete', key: keys.pool(name) }, ...state.members.map((p): Op => ({ type: 'delete', key: keys.poolMember(name, p.member) }))];
    await this.store.txn([], ops);
    this.events.lifecycle('storage-pool-deleted', `/1.0/storage-pools/${name}`, {});
  }

  /** What uses pool `name` (LXD's `used_by`): instances with a volume on it, profiles naming it, its custom volumes. */
  async usedBy(name: string, member?: string): Promise<string[]> {
    const { kvs } = await this.store.rangeMany([keys.instances(), keys.profiles(), keys.volumes()]);
    const instances: InstanceRecord[] = [];
    const profiles: ProfileRecord[] = [];
    const out: string[] = [];
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.instances())) instances.push(JSON.parse(kv.value) as InstanceRecord);
      else if (kv.key.startsWith(keys.profiles())) profiles.push(JSON.parse(kv.value) as ProfileRecord);
      else {
        const v = JSON.parse(kv.value) as VolumeRecord;
        if (v.pool === name && (member === undefined || v.location === member)) out.push(`/1.0/storage-pools/${name}/volumes/custom/${v.name}`);
      }
    }
    const sets = profileSets(profiles, new Set([...instances.map((r) => r.project), 'default']));
    for (const r of instances) {
      if (member !== undefined && r.location !== member) continue;
      const { devices } = expandInstance(r, sets.get(r.project) ?? new Map());
      if (rootPool(devices) === name || attachedVolumes(devices).some((v) => v.pool === name)) out.push(`/1.0/instances/${r.name}`);
    }
    for (const p of profiles) {
      if (Object.values(p.devices).some((d) => d.type === 'disk' && d.pool === name)) out.push(`/1.0/profiles/${p.name}`);
    }
    // The `default` profile before it was ever stored still names the pool its root disk is on.
    if (!profiles.some((p) => p.name === 'default') && name === defaultPool) out.push('/1.0/profiles/default');
    return out.sort();
  }

  /** Refuse (400, LXD's words) an instance or volume on a pool that does not exist or is not created. */
  async checkUsable(name: string): Promise<void> {
    const state = await this.get(name).catch(() => null);
    if (!state) throw errors.badRequest(`Storage pool "${name}" not found`);
    if (state.record.status !== 'Created') throw errors.badRequest(`Storage pool "${name}" is not created yet (status ${state.record.status})`);
  }

  private async putRecord(record: PoolRecord): Promise<void> {
    await this.store.txn([], [{ type: 'put', key: keys.pool(record.name), value: JSON.stringify(record) }]);
  }

  private async putPart(part: PoolMemberRecord): Promise<void> {
    await this.store.txn([], [{ type: 'put', key: keys.poolMember(part.pool, part.member), value: JSON.stringify(part) }]);
  }
}
