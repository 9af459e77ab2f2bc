// Snapshots of instances, as LXD's `/1.0/instances/<i>/snapshots`: a copy of the root volume (taken while the
// instance runs, as LXD's dir driver does, without freezing it) plus the instance's config, devices and
// profiles at that moment, listed in the instance's record (`InstanceRecord.snapshots`) so that a move's one
// commit carries them with the location. The data is written first and the record after; a snapshot
// directory the record does not list is a leftover of a crash in between and is replaced.
// Every change runs under the instance's lock and fails while a move of the instance is journaled.

import { keys, type InstanceRecord, type InstanceSnapshotRecord } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { snapshotRef, type StorageDriver, type VolumeRef } from '../storage/driver.js';
import type { EventBus } from '../operations/events.js';
import { errors } from '../errors/index.js';
import type { InstanceService } from './service.js';

/** Longest snapshot name: with the instance's, it stays one file name in the pool's staging directory. */
const maxSnapshotName = 128;

/** Refuse (400) a snapshot name LXD refuses (`/`, `?`, `&`, `+`, in its words), and names no directory can have. */
export function checkSnapshotName(name: string): void {
  for (const c of ['/', '?', '&', '+']) if (name.includes(c)) throw errors.invalidSnapshotName(`Cannot contain "${c}"`);
  if (name === '' || name === '.' || name === '..') throw errors.invalidSnapshotName(`"${name}" is not a name`);
  if ([...name].some((ch) => ch.charCodeAt(0) < 0x20)) throw errors.invalidSnapshotName('Cannot contain control characters');
  if (name.length > maxSnapshotName) throw errors.invalidSnapshotName(`Longer than ${maxSnapshotName} characters`);
}

/** LXD's name for a snapshot taken without one: `snap<N>`, N one more than the highest taken so far (from 0). */
export function nextSnapshotName(snapshots: readonly InstanceSnapshotRecord[]): string {
  let next = 0;
  for (const s of snapshots) {
    const m = /^snap(\d+)$/.exec(s.name);
    if (m) next = Math.max(next, Number(m[1]) + 1);
  }
  return `snap${next}`;
}

/** What a new snapshot may say (LXD's `InstanceSnapshotsPost`). */
export interface CreateSnapshot {
  /** Empty: LXD's next `snap<N>`. */
  name: string;
  stateful: boolean;
  expiresAt: string | null;
}

/** Services snapshots use. */
export interface SnapshotServiceDeps {
  store: Store;
  member: string;
  instances: InstanceService;
  events: EventBus;
}

/** Snapshots of the instances held by this member. */
export class SnapshotService {
  constructor(private readonly deps: SnapshotServiceDeps) {}

  /** The instance's snapshots, oldest first. */
  async list(project: string, name: string): Promise<InstanceSnapshotRecord[]> {
    const { record } = await this.deps.instances.load(project, name);
    return record.snapshots ?? [];
  }

  /** One snapshot; 404 (LXD's words) if the instance has none of that name. */
  async get(project: string, name: string, snapshot: string): Promise<{ instance: InstanceRecord; snapshot: InstanceSnapshotRecord }> {
    const { record } = await this.deps.instances.load(project, name);
    const found = (record.snapshots ?? []).find((s) => s.name === snapshot);
    if (!found) throw errors.snapshotNotFound();
    return { instance: record, snapshot: found };
  }

  /** Refuse a create request before any operation starts: bad name (400), name taken (409), stateful (400). */
  async validateCreate(project: string, name: string, req: CreateSnapshot): Promise<string> {
    const { record } = await this.deps.instances.load(project, name);
    const snapshot = req.name === '' ? nextSnapshotName(record.snapshots ?? []) : req.name;
    checkSnapshotName(snapshot);
    if (req.stateful) throw errors.statefulSnapshot();
    if ((record.snapshots ?? []).some((s) => s.name === snapshot)) throw errors.snapshotExists(name, snapshot);
    return snapshot;
  }

  /** Take snapshot `snapshot` of an instance held here, running or not. */
  async create(project: string, name: string, snapshot: string, req: CreateSnapshot): Promise<InstanceSnapshotRecord> {
    checkSnapshotName(snapshot);
    return this.locked(project, name, async (record, pool) => {
      if ((record.snapshots ?? []).some((s) => s.name === snapshot)) throw errors.snapshotExists(name, snapshot);
      const ref = this.ref(project, name, snapshot);
      // Not listed by the record, so a crash left it half made: it is garbage.
      await pool.deleteVolume(ref);
      await pool.createSnapshot(ref);
      const taken: InstanceSnapshotRecord = {
        name: snapshot,
        createdAt: new Date().toISOString(),
        expiresAt: req.expiresAt,
        stateful: false,
        architecture: record.architecture,
        description: '',
        ephemeral: record.ephemeral,
        profiles: [...record.profiles],
        config: { ...record.config },
        devices: structuredClone(record.devices),
      };
      try {
        await this.commit(project, name, (now) => ({ ...now, snapshots: [...(now.snapshots ?? []), taken] }));
      } catch (err) {
        await pool.deleteVolume(ref);
        throw err;
      }
      this.deps.events.lifecycle('instance-snapshot-created', `/1.0/instances/${name}/snapshots/${snapshot}`, {}, project);
      return taken;
    });
  }

  /** Delete a snapshot: the record first, then its data. */
  async delete(project: string, name: string, snapshot: string): Promise<void> {
    await this.locked(project, name, async (record, pool) => {
      if (!(record.snapshots ?? []).some((s) => s.name === snapshot)) throw errors.snapshotNotFound();
      await this.commit(project, name, (now) => ({ ...now, snapshots: (now.snapshots ?? []).filter((s) => s.name !== snapshot) }));
      await pool.deleteVolume(this.ref(project, name, snapshot));
      this.deps.events.lifecycle('instance-snapshot-deleted', `/1.0/instances/${name}/snapshots/${snapshot}`, {}, project);
    });
  }

  /** Give a snapshot another name (LXD's `POST /1.0/instances/<i>/snapshots/<s>`). */
  async rename(project: string, name: string, snapshot: string, newName: string): Promise<void> {
    checkSnapshotName(newName);
    await this.locked(project, name, async (record, pool) => {
      const snapshots = record.snapshots ?? [];
      if (!snapshots.some((s) => s.name === snapshot)) throw errors.snapshotNotFound();
      if (snapshots.some((s) => s.name === newName)) throw errors.snapshotNameTaken(name, newName);
      await pool.deleteVolume(this.ref(project, name, newName)); // a leftover, as in create
      await pool.renameSnapshot(this.ref(project, name, snapshot), newName);
      try {
        await this.commit(project, name, (now) => ({
          ...now,
          snapshots: (now.snapshots ?? []).map((s) => (s.name === snapshot ? { ...s, name: newName } : s)),
        }));
      } catch (err) {
        await pool.renameSnapshot(this.ref(project, name, newName), snapshot);
        throw err;
      }
      this.deps.events.lifecycle('instance-snapshot-renamed', `/1.0/instances/${name}/snapshots/${newName}`, { old_name: snapshot }, project);
    });
  }

  /**
   * Restore an instance to a snapshot (LXD's `PUT /1.0/instances/<i>` with `restore`): its root volume's
   * content and its config (volatile keys kept as they are now), devices and profiles as they were. A
   * running instance is stopped for it and started again, as LXD does.
   */
  async restore(project: string, name: string, snapshot: string): Promise<void> {
    const { instances } = this.deps;
    await this.locked(project, name, async (record, pool) => {
      const taken = (record.snapshots ?? []).find((s) => s.name === snapshot);
      if (!taken) throw errors.restoreSnapshotNotFound(name, snapshot);
      const running = (await instances.state(record)).status === 'Running';
      if (running) await instances.stopUnlocked(project, name, { keepLastState: true });
      await pool.restoreSnapshot(this.ref(project, name, snapshot));
      const own = Object.fromEntries(Object.entries(taken.config).filter(([k]) => !k.startsWith('volatile.')));
      await this.commit(project, name, (now) => {
        const volatile = Object.fromEntries(Object.entries(now.config).filter(([k]) => k.startsWith('volatile.')));
        return { ...now, config: { ...own, ...volatile }, devices: structuredClone(taken.devices), profiles: [...taken.profiles] };
      });
      if (running) await instances.startUnlocked(project, name);
      this.deps.events.lifecycle('instance-restored', `/1.0/instances/${name}`, { snapshot }, project);
    });
  }

  private ref(project: string, name: string, snapshot: string): VolumeRef {
    return snapshotRef({ type: 'container', project, name }, snapshot);
  }

  /** Run `work` under the instance's lock, on its record read there; 409 while it is being moved, elsewhere if not here. */
  private async locked<T>(project: string, name: string, work: (record: InstanceRecord, pool: StorageDriver) => Promise<T>): Promise<T> {
    return this.deps.instances.locks.run(`${project}/${name}`, async () => {
      const { record } = await this.deps.instances.load(project, name);
      if (record.location !== this.deps.member) {
        throw errors.conflict(`Instance "${name}" is on member "${record.location}", not "${this.deps.member}"`);
      }
      if (await this.deps.store.get(keys.move(project, name))) throw errors.instanceBusy(name);
      // Snapshots live beside the root volume, in its pool.
      return work(record, await this.deps.instances.rootPoolOf(record));
    });
  }

  /**
   * Write `change(record)` while no move is journaled, reading the record again if another writer (a config
   * change, a start) got there first; 409 once a move has begun.
   */
  private async commit(project: string, name: string, change: (record: InstanceRecord) => InstanceRecord): Promise<void> {
    let { record, modRevision } = await this.deps.instances.load(project, name);
    for (;;) {
      const r = await this.deps.store.txn(
        [{ key: keys.instance(project, name), modRevision }, { key: keys.move(project, name), modRevision: 0 }],
        [{ type: 'put', key: keys.instance(project, name), value: JSON.stringify(change(record)) }],
      );
      if (r.succeeded) return;
      if (await this.deps.store.get(keys.move(project, name))) throw errors.instanceBusy(name);
      ({ record, modRevision } = await this.deps.instances.load(project, name));
    }
  }
}
