// Instances on this member: create, start, stop, delete, update, runtime state, and adoption at boot.
// Every rule that protects the cluster (a member that is not Online takes no new or starting
// instance; nothing starts while it is being moved) is checked inside the store transaction.

import { createHash, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Store, Compare } from '../store/store.js';
import { keys, type InstanceRecord, type MemberRecord, type PoolRecord, type VolumeRecord } from '../store/schema.js';
import { DriverError, type ExecInvocation, type ExecOptions, type FilesRoot, type InstanceDriver, type InstanceRuntimeState, type InstanceSpec } from './driver.js';
import { startExec } from './exec.js';
import { defaultPool, snapshotRef, type PoolLookup, type StorageDriver, type VolumeRef } from '../storage/driver.js';
import type { EventBus } from '../operations/events.js';
import type { Logger } from '../util/log.js';
import { errors, ApiError } from '../errors/index.js';
import { checkConfig, checkUserChange, configValue } from '../config/keys.js';
import { mergeConfig, hostArchitecture } from '../cluster/members.js';
import { KeyedMutex } from '../util/mutex.js';
import { checkDevices, checkRootDisk, attachedVolumes, rootPool } from '../config/devices.js';
import { expandInstance, type ExpandedInstance, type ProfileSet } from '../config/expand.js';
import type { ProfileClaim, ProfileService } from '../profiles/service.js';

/** Files served under `/1.0/instances/<n>/logs/`: the workload's logs and recorded exec output. */
const logFilePattern = /^(?:[A-Za-z0-9._-]+\.log|exec_[A-Za-z0-9-]+\.(?:stdout|stderr))$/;

/** Names LXD accepts for instances (a host name label). */
const instanceNamePattern = /^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

/** Refuse a name LXD would refuse (and any path trick). */
export function checkInstanceName(name: string): void {
  if (!instanceNamePattern.test(name) || /^\d+$/.test(name)) {
    throw errors.badRequest(`Invalid instance name "${name}": must be 1-63 letters, digits or dashes, not all digits, not starting or ending with a dash`);
  }
}

/** What a new instance needs. */
export interface CreateInstance {
  name: string;
  project: string;
  type: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  profiles: string[];
  description: string;
  ephemeral: boolean;
  /** Fill the new root volume (e.g. unpack an image's rootfs) before the instance is recorded. */
  prepareRoot?: (rootPath: string) => Promise<void>;
}

/** Options for start. */
export interface StartOptions {
  /** The member's own restore may start instances while the member is Restoring. */
  allowRestoring?: boolean;
  /** The move (by journal id) whose final step this start is: its journal entry may still exist. */
  moveId?: string;
}

/** Options for stop. */
export interface StopInstanceOptions {
  force?: boolean;
  /** Seconds for a clean stop; default `boot.host_shutdown_timeout`. */
  timeoutSeconds?: number;
  /** Keep `volatile.last_state.power` as is (evacuation stops keep RUNNING so restore starts them). */
  keepLastState?: boolean;
}

/** Services an instance needs from its member. */
export interface InstanceServiceDeps {
  store: Store;
  member: string;
  memberDir: string;
  /** This member's pools by name: each volume is in the pool its device names. */
  pools: PoolLookup;
  drivers: Map<string, InstanceDriver>;
  profiles: ProfileService;
  events: EventBus;
  log: Logger;
}

/** An instance record with the store revision it was read at. */
export interface LoadedInstance {
  record: InstanceRecord;
  modRevision: number;
}

/** Instances held by this member. */
export class InstanceService {
  /** Serialises lifecycle changes of one instance on this member. */
  readonly locks = new KeyedMutex();

  constructor(private readonly deps: InstanceServiceDeps) {}

  /** The driver for an instance type; 400 for an unknown type. */
  driver(type: string): InstanceDriver {
    const d = this.deps.drivers.get(type);
    if (!d) throw errors.badRequest(`Unknown instance type "${type}"`);
    return d;
  }

  /** Read one instance; 404 if absent. */
  async load(project: string, name: string): Promise<LoadedInstance> {
    const kv = await this.deps.store.get(keys.instance(project, name));
    if (!kv) throw errors.instanceNotFound();
    return { record: JSON.parse(kv.value) as InstanceRecord, modRevision: kv.modRevision };
  }

  /** The profiles of `project`, to expand instances with (one store read). */
  async profileSet(project: string): Promise<ProfileSet> {
    return this.deps.profiles.set(project);
  }

  /** What `record` is once its profiles apply (LXD's expanded config and devices). */
  async expanded(record: InstanceRecord): Promise<ExpandedInstance> {
    return expandInstance(record, await this.profileSet(record.project));
  }

  /** Everything a driver needs to run `record` on this member (its profiles read now). */
  async specOf(record: InstanceRecord): Promise<InstanceSpec> {
    return this.spec(record, await this.profileSet(record.project));
  }

  /** Everything a driver needs to run `record` on this member, expanded with `profiles`. */
  spec(record: InstanceRecord, profiles: ProfileSet): InstanceSpec {
    const { config, devices } = expandInstance(record, profiles);
    return {
      name: record.name,
      project: record.project,
      type: record.type,
      config,
      devices,
      rootPath: this.deps.pools(rootPool(devices) ?? defaultPool).volumePath({ type: 'container', project: record.project, name: record.name }),
      runtimeDir: this.runtimeDir(record.project, record.name),
      mounts: attachedVolumes(devices).map((v) => ({
        device: v.device,
        source: this.deps.pools(v.pool).volumePath({ type: 'custom', project: record.project, name: v.volume }),
        path: v.path,
      })),
    };
  }

  /** The pool of `record`'s root volume (its expanded root disk's) on this member; 404 if the member has no such pool. */
  async rootPoolOf(record: InstanceRecord): Promise<StorageDriver> {
    return this.deps.pools(rootPool((await this.expanded(record)).devices) ?? defaultPool);
  }

  /** Where driver state (pid file, logs) of an instance lives on this member. */
  runtimeDir(project: string, name: string): string {
    return join(this.deps.memberDir, 'instances', `${project}_${name}`);
  }

  /** The profiles a create request lists, with what its transaction must compare and write (404, LXD's words, for a missing one). */
  private async claimForCreate(req: CreateInstance): Promise<ProfileClaim> {
    return this.deps.profiles.claim(req.project, req.profiles, req.profiles, (name) => errors.requestedProfileNotFound(name));
  }

  /** What a create request would be once its profiles apply; 404 for a profile that does not exist. */
  async expandCreate(req: CreateInstance): Promise<ExpandedInstance> {
    return expandInstance(req, (await this.claimForCreate(req)).set);
  }

  /** Validate a create request (everything but placement); throws ApiError 400 (404 for a missing profile). */
  async validateCreate(req: CreateInstance): Promise<void> {
    checkInstanceName(req.name);
    this.driver(req.type);
    const problem = checkConfig('instance', req.config);
    if (problem) throw errors.badRequest(problem);
    checkDevices(req.devices);
    const expanded = await this.expandCreate(req);
    checkRootDisk(expanded.devices);
    await this.checkRootPool(rootPool(expanded.devices) ?? defaultPool);
    for (const v of attachedVolumes(expanded.devices)) {
      const kv = await this.deps.store.get(keys.volume(req.project, v.pool, v.volume));
      if (!kv) throw errors.badRequest(`Storage volume "${v.volume}" of device "${v.device}" not found`);
    }
  }

  /**
   * Refuse (400) a root disk on a pool that does not exist or was never created. An `Errored` pool serves the
   * members where it was created: the member creating the instance must have it (placement picks only those).
   */
  private async checkRootPool(pool: string): Promise<void> {
    const kv = await this.deps.store.get(keys.pool(pool));
    if (!kv) throw errors.badRequest(`Invalid devices: Failed detecting root disk device: Storage pool "${pool}" not found`);
    const record = JSON.parse(kv.value) as PoolRecord;
    if (record.status === 'Pending') throw errors.badRequest(`Storage pool "${pool}" is not created yet (status Pending)`);
  }

  /** Refuse (400) a new instance on `member` whose attached custom volumes live on another member. */
  async checkVolumesOn(req: CreateInstance, member: string): Promise<void> {
    for (const v of attachedVolumes((await this.expandCreate(req)).devices)) {
      const kv = await this.deps.store.get(keys.volume(req.project, v.pool, v.volume));
      const vol = kv ? (JSON.parse(kv.value) as VolumeRecord) : null;
      if (vol && vol.location !== member) {
        throw errors.badRequest(`Storage volume "${v.volume}" is on member "${vol.location}"; create the instance there`);
      }
    }
  }

  /** Create an instance on this member (root volume first, then the record, guarded by the member's state). */
  async create(req: CreateInstance): Promise<InstanceRecord> {
    await this.validateCreate(req);
    const { store, member } = this.deps;
    await this.checkVolumesOn(req, member);
    const pool = this.deps.pools(rootPool((await this.expandCreate(req)).devices) ?? defaultPool);
    const now = new Date().toISOString();
    const record: InstanceRecord = {
      name: req.name,
      project: req.project,
      type: req.type,
      location: member,
      architecture: hostArchitecture(),
      description: req.description,
      ephemeral: req.ephemeral,
      profiles: req.profiles,
      config: mergeConfig({}, req.config),
      devices: req.devices,
      createdAt: now,
      lastUsedAt: '1970-01-01T00:00:00Z',
    };
    return this.locks.run(`${req.project}/${req.name}`, async () => {
      const ref = { type: 'container' as const, project: req.project, name: req.name };
      if (await store.get(keys.instance(req.project, req.name))) throw errors.instanceExists(req.name);
      await pool.createVolume(ref);
      try {
        await req.prepareRoot?.(pool.volumePath(ref));
      } catch (err) {
        await pool.deleteVolume(ref);
        throw err;
      }
      const guard = await this.memberGuard(false);
      const claim = await this.claimForCreate(req);
      const r = await store.txn([...guard, ...claim.compares, { key: keys.instance(req.project, req.name), modRevision: 0 }], [
        ...claim.ops,
        { type: 'put', key: keys.instance(req.project, req.name), value: JSON.stringify(record) },
      ]);
      if (!r.succeeded) {
        const exists = await store.get(keys.instance(req.project, req.name));
        if (!exists) await pool.deleteVolume(ref);
        if (exists) throw errors.instanceExists(req.name);
        if ((await this.memberGuard(false).catch(() => null)) === null) throw errors.memberEvacuated();
        throw errors.conflict(`A profile of instance "${req.name}" changed while it was created; try again`);
      }
      await this.driver(record.type).create(this.spec(record, claim.set));
      this.deps.events.lifecycle('instance-created', `/1.0/instances/${record.name}`, { location: member, type: record.type }, record.project);
      return record;
    });
  }

  /**
   * Compares that hold only while this member is Online (or Restoring, for its own restore):
   * the member record must be unchanged since it was read in that state.
   */
  async memberGuard(allowRestoring: boolean): Promise<Compare[]> {
    const kv = await this.deps.store.get(keys.member(this.deps.member));
    if (!kv) throw errors.memberNotFound(this.deps.member);
    const m = JSON.parse(kv.value) as MemberRecord;
    if (!(m.state === 'Online' || (allowRestoring && m.state === 'Restoring'))) throw errors.memberEvacuated();
    return [{ key: kv.key, modRevision: kv.modRevision }];
  }

  /** Runtime state from the driver (re-adopting an instance left running by an earlier daemon); `profiles` spares a read. */
  async state(record: InstanceRecord, profiles?: ProfileSet): Promise<InstanceRuntimeState> {
    return this.driver(record.type).state(this.spec(record, profiles ?? (await this.profileSet(record.project))));
  }

  /** Start an instance held here; records `volatile.last_state.power=RUNNING` first, guarded by the member's state. */
  async start(project: string, name: string, options: StartOptions = {}): Promise<void> {
    await this.locks.run(`${project}/${name}`, () => this.startUnlocked(project, name, options));
  }

  /** Start without taking the instance lock (the caller holds it, as a move rolling back does). */
  async startUnlocked(project: string, name: string, options: StartOptions = {}): Promise<void> {
    const { record, modRevision } = await this.load(project, name);
    this.assertLocal(record);
    const driver = this.driver(record.type);
    const profiles = await this.profileSet(project);
    const spec = this.spec(record, profiles);
    const current = await driver.state(spec);
    const guard = await this.memberGuard(options.allowRestoring === true);
    const moveKv = await this.deps.store.get(keys.move(project, name));
    if (moveKv && (JSON.parse(moveKv.value) as { id: string }).id !== options.moveId) throw errors.instanceBusy(name);
    const next: InstanceRecord = {
      ...record,
      config: { ...record.config, 'volatile.last_state.power': 'RUNNING' },
      lastUsedAt: current.status === 'Running' ? record.lastUsedAt : new Date().toISOString(),
    };
    const r = await this.deps.store.txn(
      [...guard, { key: keys.instance(project, name), modRevision }, { key: keys.move(project, name), modRevision: moveKv?.modRevision ?? 0 }],
      [{ type: 'put', key: keys.instance(project, name), value: JSON.stringify(next) }],
    );
    if (!r.succeeded) {
      if (await this.deps.store.get(keys.move(project, name))) throw errors.instanceBusy(name);
      throw errors.conflict(`Instance "${name}" changed while starting; try again`);
    }
    if (current.status === 'Running') return;
    await mkdir(spec.runtimeDir, { recursive: true });
    await driver.start(this.spec(next, profiles));
    this.deps.events.lifecycle('instance-started', `/1.0/instances/${name}`, {}, project);
  }

  /** Stop an instance held here; records `volatile.last_state.power=STOPPED` unless asked to keep it. */
  async stop(project: string, name: string, options: StopInstanceOptions = {}): Promise<void> {
    await this.locks.run(`${project}/${name}`, () => this.stopUnlocked(project, name, options));
  }

  /** Stop without taking the instance lock (the caller holds it). */
  async stopUnlocked(project: string, name: string, options: StopInstanceOptions = {}): Promise<void> {
    const { record } = await this.load(project, name);
    this.assertLocal(record);
    const driver = this.driver(record.type);
    const spec = await this.specOf(record);
    const current = await driver.state(spec);
    const timeout = options.timeoutSeconds ?? Number(configValue('instance', spec.config, 'boot.host_shutdown_timeout'));
    if (current.status === 'Running') {
      if (!options.force) this.deps.events.lifecycle('instance-shutdown', `/1.0/instances/${name}`, {}, project);
      await driver.stop(spec, { force: options.force === true, timeoutSeconds: options.force ? 0 : timeout });
      this.deps.events.lifecycle('instance-stopped', `/1.0/instances/${name}`, {}, project);
    }
    if (!options.keepLastState) await this.setConfig(project, name, { 'volatile.last_state.power': 'STOPPED' });
  }

  /** Set config keys of an instance directly (internal; values are trusted). */
  async setConfig(project: string, name: string, change: Record<string, string>): Promise<InstanceRecord> {
    for (;;) {
      const { record, modRevision } = await this.load(project, name);
      const next = { ...record, config: mergeConfig(record.config, change) };
      const r = await this.deps.store.txn([{ key: keys.instance(project, name), modRevision }], [
        { type: 'put', key: keys.instance(project, name), value: JSON.stringify(next) },
      ]);
      if (r.succeeded) return next;
    }
  }

  /** Update config/devices/description from a user (PUT replaces, PATCH merges); If-Match etag optional. */
  async update(
    project: string,
    name: string,
    change: { config?: Record<string, unknown>; devices?: Record<string, Record<string, string>>; description?: string; profiles?: string[] },
    replace: boolean,
    etag?: string,
  ): Promise<InstanceRecord> {
    if (change.config) {
      const problem = checkConfig('instance', change.config);
      if (problem) throw errors.badRequest(problem);
    }
    if (change.devices) checkDevices(change.devices);
    for (;;) {
      const { record, modRevision } = await this.load(project, name);
      if (etag !== undefined && etag !== instanceEtag(record)) throw errors.preconditionFailed();
      // Against the config just read, so a volatile key Roost changed meanwhile counts as changed by this request.
      const readOnly = change.config ? checkUserChange('instance', record.config, change.config) : null;
      if (readOnly) throw errors.badRequest(readOnly);
      const next: InstanceRecord = { ...record };
      if (change.config) {
        const volatile = Object.fromEntries(Object.entries(record.config).filter(([k]) => k.startsWith('volatile.')));
        next.config = replace
          ? mergeConfig(volatile, change.config as Record<string, string>)
          : mergeConfig(record.config, change.config as Record<string, string>);
      }
      if (change.devices) next.devices = replace ? change.devices : dropEmpty({ ...record.devices, ...change.devices });
      if (change.description !== undefined) next.description = change.description;
      if (change.profiles) next.profiles = change.profiles;
      const claim = await this.claimFor(next, record);
      await this.checkExpanded(next, claim.set);
      // The root volume stays in the pool it was created in (its data is there), as in LXD.
      const pool = rootPool(expandInstance(next, claim.set).devices);
      if (pool !== rootPool(expandInstance(record, claim.set).devices)) throw errors.badRequest(`Cannot update root disk device pool name to "${pool ?? ''}"`);
      const r = await this.deps.store.txn(
        [{ key: keys.instance(project, name), modRevision }, { key: keys.move(project, name), modRevision: 0 }, ...claim.compares],
        [...claim.ops, { type: 'put', key: keys.instance(project, name), value: JSON.stringify(next) }],
      );
      if (r.succeeded) {
        this.deps.events.lifecycle('instance-updated', `/1.0/instances/${name}`, {}, project);
        return next;
      }
      if (await this.deps.store.get(keys.move(project, name))) throw errors.instanceBusy(name);
    }
  }

  /** The profiles `next` lists (404 for a missing one), guarded; those `current` does not list yet are claimed. */
  private async claimFor(next: InstanceRecord, current: InstanceRecord): Promise<ProfileClaim> {
    return this.deps.profiles.claim(next.project, next.profiles, next.profiles.filter((p) => !current.profiles.includes(p)));
  }

  /** Refuse (400) an instance that expanded has no root disk, or a custom volume missing or on another member. */
  private async checkExpanded(record: InstanceRecord, profiles: ProfileSet): Promise<void> {
    const { devices } = expandInstance(record, profiles);
    checkRootDisk(devices);
    for (const v of attachedVolumes(devices)) {
      const kv = await this.deps.store.get(keys.volume(record.project, v.pool, v.volume));
      if (!kv) throw errors.badRequest(`Storage volume "${v.volume}" of device "${v.device}" not found`);
      const vol = JSON.parse(kv.value) as VolumeRecord;
      if (vol.location !== record.location) {
        throw errors.badRequest(`Storage volume "${v.volume}" is on member "${vol.location}", the instance on "${record.location}"`);
      }
    }
  }

  /** Delete a stopped instance held here (the record, then driver state, its snapshots and its volume). */
  async delete(project: string, name: string): Promise<void> {
    await this.locks.run(`${project}/${name}`, async () => {
      const { record, modRevision } = await this.load(project, name);
      this.assertLocal(record);
      const spec = await this.specOf(record);
      const driver = this.driver(record.type);
      if ((await driver.state(spec)).status === 'Running') throw errors.badRequest('The instance is currently running, stop it first');
      const r = await this.deps.store.txn(
        [{ key: keys.instance(project, name), modRevision }, { key: keys.move(project, name), modRevision: 0 }],
        [{ type: 'delete', key: keys.instance(project, name) }],
      );
      if (!r.succeeded) throw errors.instanceBusy(name);
      await driver.delete(spec);
      const pool = this.deps.pools(rootPool(spec.devices) ?? defaultPool);
      const root: VolumeRef = { type: 'container', project, name };
      for (const snapshot of await pool.listSnapshots(root)) await pool.deleteVolume(snapshotRef(root, snapshot));
      await pool.deleteVolume(root);
      await rm(spec.runtimeDir, { recursive: true, force: true });
      this.deps.events.lifecycle('instance-deleted', `/1.0/instances/${name}`, {}, project);
    });
  }

  /** Every instance record whose location is this member. */
  async localRecords(): Promise<InstanceRecord[]> {
    const { kvs } = await this.deps.store.range(keys.instances());
    return kvs.map((kv) => JSON.parse(kv.value) as InstanceRecord).filter((r) => r.location === this.deps.member);
  }

  /** Runtime state of every local instance, keyed `project/name`. */
  async localStates(): Promise<Map<string, InstanceRuntimeState>> {
    const out = new Map<string, InstanceRuntimeState>();
    const sets = new Map<string, ProfileSet>();
    for (const r of await this.localRecords()) {
      try {
        let profiles = sets.get(r.project);
        if (!profiles) sets.set(r.project, (profiles = await this.profileSet(r.project)));
        out.set(`${r.project}/${r.name}`, await this.state(r, profiles));
      } catch (err) {
        this.deps.log.warn({ err, instance: r.name }, 'could not read instance state');
      }
    }
    return out;
  }

  /**
   * Runtime state of those of `instances` this member holds, keyed `project/name`: each record read by its key,
   * so a caller that knows which instances are here (it read the records) costs their reads only, not a read
   * of every instance in the cluster as `localStates` makes. Named instances held elsewhere (moved since the
   * caller looked) or gone are left out.
   */
  async statesOf(instances: { project: string; name: string }[]): Promise<Map<string, InstanceRuntimeState>> {
    const out = new Map<string, InstanceRuntimeState>();
    // One read of each project's profiles, not one per instance (a listing asks about thousands).
    const profileSets = new Map<string, Promise<ProfileSet>>();
    const profilesOf = (project: string): Promise<ProfileSet> => {
      let set = profileSets.get(project);
      if (!set) profileSets.set(project, (set = this.profileSet(project)));
      return set;
    };
    await Promise.all(
      instances.map(async ({ project, name }) => {
        const kv = await this.deps.store.get(keys.instance(project, name));
        if (!kv) return;
        const record = JSON.parse(kv.value) as InstanceRecord;
        if (record.location !== this.deps.member) return;
        try {
          out.set(`${project}/${name}`, await this.state(record, await profilesOf(project)));
        } catch (err) {
          this.deps.log.warn({ err, instance: name }, 'could not read instance state');
        }
      }),
    );
    return out;
  }

  /**
   * At daemon start: re-adopt what still runs; on an Online member, start what should be running
   * (`volatile.last_state.power=RUNNING`) and is not. An Evacuated member starts nothing.
   */
  async adoptAtBoot(memberState: string): Promise<void> {
    await this.fenceMovedAway();
    const { kvs: moves } = await this.deps.store.range(keys.moves());
    const moving = new Set(moves.map((kv) => kv.key));
    for (const r of await this.localRecords()) {
      if (moving.has(keys.move(r.project, r.name))) continue; // move recovery decides
      try {
        const st = await this.state(r);
        if (st.status !== 'Running' && memberState === 'Online' && r.config['volatile.last_state.power'] === 'RUNNING') {
          await this.start(r.project, r.name);
        }
      } catch (err) {
        this.deps.log.warn({ err, instance: r.name }, 'could not restart instance at boot');
      }
    }
  }

  /**
   * Fencing: stop every instance this member still runs (it has a runtime directory here) whose record the
   * store places on another member: it was healed elsewhere (relinked from a shared pool) while this member
   * was cut off or down, and two copies must never run on the same data. Killed, not stopped cleanly (the
   * other copy already writes), its driver state here removed, its data left alone (it is the other member's
   * now). Instances a move journal names are left to move recovery. Returns the names of those stopped.
   */
  async fenceMovedAway(): Promise<string[]> {
    const { store, member, log } = this.deps;
    const entries = await readdir(join(this.deps.memberDir, 'instances'), { withFileTypes: true }).catch(() => []);
    if (entries.length === 0) return [];
    const { kvs } = await store.rangeMany([keys.instances(), keys.moves()]);
    const records = new Map<string, InstanceRecord>();
    const moving = new Set<string>();
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.moves())) moving.add(kv.key);
      else {
        const r = JSON.parse(kv.value) as InstanceRecord;
        records.set(`${r.project}_${r.name}`, r);
      }
    }
    const stopped: string[] = [];
    for (const entry of entries) {
      const record = entry.isDirectory() ? records.get(entry.name) : undefined;
      if (!record || record.location === member || moving.has(keys.move(record.project, record.name))) continue;
      await this.locks.run(`${record.project}/${record.name}`, async () => {
        try {
          const spec = await this.specOf(record);
          const driver = this.driver(record.type);
          if ((await driver.state(spec)).status === 'Running') {
            await driver.stop(spec, { timeoutSeconds: 0, force: true });
            stopped.push(record.name);
            log.warn({ instance: record.name, location: record.location }, 'fencing: stopped an instance that runs on another member now (it was healed there while this member was away)');
            this.deps.events.lifecycle('instance-fenced', `/1.0/instances/${record.name}`, { location: record.location }, record.project, member);
          }
          await driver.delete(spec);
          await rm(spec.runtimeDir, { recursive: true, force: true });
        } catch (err) {
          log.error({ err, instance: record.name }, 'fencing: could not stop an instance that runs on another member now');
        }
      });
    }
    return stopped;
  }

  /** Log files of an instance (names), from its runtime directory: its output and recorded exec output. */
  async logFiles(record: InstanceRecord): Promise<string[]> {
    try {
      return (await readdir(this.runtimeDir(record.project, record.name))).filter((f) => logFilePattern.test(f));
    } catch {
      return [];
    }
  }

  /** Contents of one log file; 404 if absent. */
  async readLog(record: InstanceRecord, file: string): Promise<Buffer> {
    if (!logFilePattern.test(file)) throw errors.notFound();
    try {
      return await readFile(join(this.runtimeDir(record.project, record.name), file));
    } catch {
      throw errors.notFound();
    }
  }

  /** Delete a recorded exec output file (LXD lets clients remove them after reading). */
  async deleteLog(record: InstanceRecord, file: string): Promise<void> {
    if (!/^exec_[A-Za-z0-9-]+\.(stdout|stderr)$/.test(file)) throw errors.badRequest('Only exec output files can be deleted');
    await rm(join(this.runtimeDir(record.project, record.name), file), { force: true });
  }

  /** How to run a command in a running instance held here; a driver's refusal (a missing cwd) is a 400. */
  async execInvocation(record: InstanceRecord, command: string[], options: ExecOptions): Promise<ExecInvocation> {
    this.assertLocal(record);
    try {
      return await this.driver(record.type).execInvocation(await this.specOf(record), command, options);
    } catch (err) {
      if (err instanceof DriverError) throw errors.badRequest(err.message);
      throw err;
    }
  }

  /**
   * Run a command in a running instance held here with its output recorded as two log files (LXD's
   * `record-output` exec); killed after `timeoutSeconds` (default 600).
   */
  async execRecorded(
    record: InstanceRecord,
    command: string[],
    options: ExecOptions & { timeoutSeconds?: number },
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const invocation = await this.execInvocation(record, command, options);
    const id = randomUUID();
    const dir = this.runtimeDir(record.project, record.name);
    await mkdir(dir, { recursive: true });
    const proc = await startExec(invocation);
    proc.stdin.end();
    const timer = setTimeout(() => void proc.signal(9), (options.timeoutSeconds ?? 600) * 1000);
    try {
      await Promise.all([
        pipeline(proc.stdout, createWriteStream(join(dir, `exec_${id}.stdout`), { mode: 0o600 })),
        proc.stderr ? pipeline(proc.stderr, createWriteStream(join(dir, `exec_${id}.stderr`), { mode: 0o600 })) : undefined,
      ]);
      return { code: await proc.exited, stdout: `exec_${id}.stdout`, stderr: `exec_${id}.stderr` };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Where the files of an instance held here are (file push and pull). */
  async filesRoot(record: InstanceRecord): Promise<FilesRoot> {
    this.assertLocal(record);
    return this.driver(record.type).filesRoot(await this.specOf(record));
  }

  private assertLocal(record: InstanceRecord): void {
    if (record.location !== this.deps.member) {
      throw new ApiError(409, `Instance "${record.name}" is on member "${record.location}", not "${this.deps.member}"`);
    }
  }
}

/** The ETag of an instance's user-editable fields (LXD compares it on PUT with If-Match). */
export function instanceEtag(record: InstanceRecord): string {
  const editable = [record.config, record.devices, record.description, record.profiles, record.ephemeral];
  return createHash('sha256').update(JSON.stringify(editable)).digest('hex');
}

function dropEmpty(devices: Record<string, Record<string, string>>): Record<string, Record<string, string>> {
  return Object.fromEntries(Object.entries(devices).filter(([, d]) => Object.keys(d).length > 0));
}
