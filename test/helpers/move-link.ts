// The target side of a move in the same process as its source: a real Migrator's receiving end on a pool,
// reached through calls that do what each route of the member link does (api/routes/internal.ts), for
// module-level tests and benchmarks of moves between pools a member cannot yet be configured with (btrfs).

import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { MoveTarget } from '../../src/cluster/internal.js';
import { Migrator, type MigratorDeps } from '../../src/migration/move.js';
import { deletePaths, digestStaging } from '../../src/migration/tree.js';
import type { StorageDriver, VolumeRef } from '../../src/storage/driver.js';
import { keys, type MoveJournal } from '../../src/store/schema.js';
import type { Store } from '../../src/store/store.js';

/** The name the receiving member goes by in journals. */
export const targetMember = 'm2';

/**
 * The receiving side of moves into `pool` on member `m2`. A target uses only the store, its pool and the
 * log; the other services are the source's business, so none are given.
 */
export function targetMigrator(store: Store, pool: StorageDriver, log: Logger): Migrator {
  const pools = new Map([[pool.poolName, pool]]);
  const deps = { store, member: targetMember, pools: { get: () => pool, all: () => pools }, log } as Partial<MigratorDeps> as MigratorDeps;
  return new Migrator(deps);
}

/** Journal move `id` of `instance` to m2, as a source does first: a target takes only journaled moves. */
export async function journalMove(store: Store, id: string, instance: string): Promise<void> {
  const j: MoveJournal = { id, project: 'default', instance, source: 'm1', target: targetMember, phase: 'started', wasRunning: false, volumes: [], origin: null, clearOrigin: false, evacuation: null, startedAt: new Date().toISOString() };
  await store.put(keys.move('default', instance), JSON.stringify(j));
}

/** The member link of move `id` to `migrator`, in process, and its commit. */
export function linkTo(migrator: Migrator, id: string): MoveTarget & { commit(): Promise<void> } {
  const link = {
    moveId: id,
    address: 'in-process',
    prepare: (refs: VolumeRef[], need: Record<string, { bytes: number; inodes: number }>, _signal?: AbortSignal, stream?: string) => migrator.prepareIncoming(id, refs, need, stream),
    sendStream: (ref: VolumeRef, body: Readable, fresh: boolean) => migrator.receiveStream(id, ref, body, fresh),
    sendDelta: (ref: VolumeRef, body: Readable, fresh: boolean) => migrator.receiveDelta(id, ref, body, fresh),
    deletePaths: async (ref: VolumeRef, paths: string[]) => deletePaths(await migrator.stagingFor(id, ref, false), paths),
    digest: async (ref: VolumeRef) => digestStaging(await migrator.stagingFor(id, ref, false)),
    warmDigest: async (ref: VolumeRef) => void (await digestStaging(await migrator.stagingFor(id, ref, false))),
    commit: () => migrator.commitIncoming(id),
  };
  // Only what the source side of a copy calls is here (the rest of MoveTarget is the HTTP client's).
  return link as unknown as MoveTarget & { commit(): Promise<void> };
}
