// The `shared` storage driver: a directory that every member mounts at the same path (NFS or CephFS in
// production), laid out as a `dir` pool, so a volume is at the same path for every member. It is `remote`
// in LXD's sense: a move relinks the instance's record instead of copying bytes (migration/move.ts).
// Every member opens the same directory, so nothing a member does on its own may remove what another one
// owns: its staging, trash and copies in progress live in a directory of its own (`.members/<member>/`),
// which is all its boot and periodic cleanup ever empties; volumes go only when the store says so (an
// explicit delete), never in a sweep (the sweeps skip remote pools).

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { DirPool } from './dir.js';

/** Where each member's own scratch directories live in a shared pool. */
const membersDir = '.members';

/** A pool on a directory every member mounts; volumes move by relinking, never by copying. */
export class SharedPool extends DirPool {
  override readonly driver = 'shared';
  private readonly sharedRoot: string;

  constructor(poolName: string, root: string, member: string) {
    if (member === '' || member.includes('/') || member === '.' || member === '..') throw new Error(`Invalid member name "${member}" for a shared pool`);
    super(poolName, root, path.join(root, membersDir, member));
    this.sharedRoot = path.resolve(root);
  }

  override async init(): Promise<void> {
    const stat = await fsp.stat(this.sharedRoot).catch(() => null);
    // The source is a mount every member has; creating it here would hide a missing mount behind an empty pool.
    if (!stat?.isDirectory()) throw new Error(`The source of shared storage pool "${this.poolName}" (${this.sharedRoot}) is not a directory on this member; mount it first`);
    await fsp.mkdir(path.join(this.sharedRoot, membersDir), { recursive: true, mode: 0o711 });
    await super.init();
  }

  /**
   * This member leaves the pool: only its own scratch directory goes. The volume directories are the other
   * members' too, so they are removed only once empty (the last member to leave), and the source stays.
   */
  override async destroy(): Promise<void> {
    await fsp.rm(this.scratch, { recursive: true, force: true });
    for (const dir of ['containers', 'containers-snapshots', 'custom', membersDir]) {
      await fsp.rmdir(path.join(this.sharedRoot, dir)).catch(() => undefined); // not empty: another member still uses it
    }
  }
}
