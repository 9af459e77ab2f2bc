// A member's storage pools: the driver factory (one entry per driver name, which `GET /1.0` lists as
// `storage_supported_drivers`) and the registry of the pools this member has, built at boot from the store
// and changed as pools are created and deleted here. Engines get its `lookup`, never the registry itself.

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BtrfsPool } from './drivers/btrfs.js';
import { DirPool } from './drivers/dir.js';
import { SharedPool } from './drivers/shared.js';
import type { PoolLookup, StorageDriver } from './driver.js';
import { errors } from '../errors/index.js';

/** Member-specific config a driver is made with (the pool's `source`, `size`). */
export interface PoolDriverConfig {
  source?: string;
  size?: string;
}

/** Makes the driver of pool `poolName` whose data lives at `root`, opened by member `member`. */
type PoolDriverFactory = (poolName: string, root: string, config: PoolDriverConfig, member: string) => StorageDriver;

/**
 * A driver the factory knows: how to make it, and whether it is `remote` (LXD's term: every member sees the
 * same volumes, so a move relinks the record instead of copying, and no member's cleanup may delete a volume).
 */
interface PoolDriverEntry {
  make: PoolDriverFactory;
  remote: boolean;
}

/** The drivers a pool can be created with, by the name LXD's API uses. */
const poolDriverFactories: ReadonlyMap<string, PoolDriverEntry> = new Map<string, PoolDriverEntry>([
  ['dir', { make: (poolName, root) => new DirPool(poolName, root), remote: false }],
  // `source` must be a directory on a mounted btrfs file system (init refuses anything else, saying so).
  ['btrfs', { make: (poolName, root) => new BtrfsPool(poolName, root), remote: false }],
  [
    'shared',
    {
      make: (poolName, root, config, member) => {
        if (config.source === undefined) throw errors.badRequest(`A shared storage pool needs a source (a directory every member mounts): source=<path>`);
        return new SharedPool(poolName, root, member);
      },
      remote: true,
    },
  ],
]);

/** Names of the drivers pools can be created with, in the factory's order. */
export function supportedPoolDrivers(): string[] {
  return [...poolDriverFactories.keys()];
}

/** Whether pool driver `driver` is remote (see PoolDriverEntry); unknown drivers are not. */
export function remotePoolDriver(driver: string): boolean {
  return poolDriverFactories.get(driver)?.remote === true;
}

/** Whether this member's pool `pool` is remote: its volumes are every member's at once (a move relinks them). */
export function isRemotePool(pool: Pick<StorageDriver, 'driver'>): boolean {
  return remotePoolDriver(pool.driver);
}

/** Refuse (400) a driver name the factory does not know. */
export function checkPoolDriver(driver: string): void {
  if (!poolDriverFactories.has(driver)) {
    throw errors.badRequest(`Storage pool driver "${driver}" is not supported (supported: ${supportedPoolDrivers().join(', ')})`);
  }
}

/** Where a pool keeps its data on a member without a `source`: LXD's `storage-pools/<pool>` in the member directory. */
export function defaultPoolRoot(memberDir: string, pool: string): string {
  return join(memberDir, 'storage-pools', pool);
}

/** The pools this member has, each with its own driver instance. */
export class MemberPools {
  private readonly pools = new Map<string, StorageDriver>();

  /**
   * @param member this member's name: a pool every member opens (`shared`) keeps this member's own
   *   work apart under it.
   */
  constructor(
    private readonly memberDir: string,
    private readonly member: string,
  ) {}

  /** The pool named `name`; 404 (LXD's words) if this member has none. */
  get(name: string): StorageDriver {
    const pool = this.pools.get(name);
    if (!pool) throw errors.poolNotFound();
    return pool;
  }

  /** Whether this member has pool `name`. */
  has(name: string): boolean {
    return this.pools.has(name);
  }

  /** Every pool of this member, by name. */
  all(): ReadonlyMap<string, StorageDriver> {
    return this.pools;
  }

  /** The lookup engines take: `get` bound to this registry. */
  readonly lookup: PoolLookup = (name) => this.get(name);

  /**
   * Make pool `name` exist here with `driver` (its directories created, its leftovers cleaned, as at every
   * boot) and serve it from now on. Opening a pool this member already has is a no-op.
   */
  async open(name: string, driver: string, config: PoolDriverConfig): Promise<StorageDriver> {
    const existing = this.pools.get(name);
    if (existing) return existing;
    checkPoolDriver(driver);
    const entry = poolDriverFactories.get(driver) as PoolDriverEntry;
    const pool = entry.make(name, config.source ?? defaultPoolRoot(this.memberDir, name), config, this.member);
    await pool.init();
    this.pools.set(name, pool);
    return pool;
  }

  /**
   * Remove pool `name` from this member; refused (400) while it holds a volume. A pool in the default place
   * goes whole; one on a user's `source` keeps that directory (as LXD's dir driver), emptied of the pool's own.
   */
  async remove(name: string, source: string | undefined): Promise<void> {
    const pool = this.pools.get(name);
    if (!pool) return;
    if ((await pool.listVolumes()).length > 0) throw errors.badRequest(`Storage pool "${name}" still holds volumes on this member`);
    this.pools.delete(name);
    await pool.destroy?.();
    if (source === undefined) await rm(defaultPoolRoot(this.memberDir, name), { recursive: true, force: true });
  }
}
