// The `dir` storage driver: a pool is a directory on the member's file system, each volume a directory in it.
// Layout under the pool root:
//   containers/<project>_<name>/              root volumes
//   containers-snapshots/<project>_<name>/<snapshot>/  snapshots of root volumes (LXD's layout)
//   custom/<project>_<name>/                  custom volumes
//   .staging/<moveId>/<type>_<project>_<name>/  incoming copies, renamed into place when complete
//                                             (`<type>-snapshot_<project>_<name>_<snapshot>` for snapshots)
//   .copying/<random>/                        snapshots and restores being copied, renamed into place when complete
//   .restoring/<type>_<project>_<name>/       a restored copy about to replace its volume (see restoreSnapshot)
//   .deleting/<random>/                       volumes being removed (renamed out of sight first)
// Modes, as LXD lays a pool out: the pool root 0711, the directories above volumes 0700, a new volume 0700.
// A volume's own root is part of its content (a container's `/` gets the image's mode, and moves carry it),
// so the 0700 directories above the volumes are what keeps every volume private; they and the root are
// tightened at every start, whatever an older install left.

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { Dirent, Stats } from 'node:fs';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { entryFootprint, type PoolUsage, type StorageDriver, type VolumeFootprint, type VolumeRef, type VolumeType } from '../driver.js';

const volumeDirs: Record<VolumeType, string> = { container: 'containers', custom: 'custom' };
const volumeTypes = Object.keys(volumeDirs) as VolumeType[];
/** Volume types that have snapshots, and where they are kept. */
const snapshotDirs: Partial<Record<VolumeType, string>> = { container: 'containers-snapshots' };
const stagingDir = '.staging';
const deletingDir = '.deleting';
const copyingDir = '.copying';
const restoringDir = '.restoring';
/** How many files are fsynced at once when committing; enough to keep the disk queue busy. */
const syncParallelism = 16;
/** The pool root: traversable by anyone (as LXD's), listable by the daemon user only. */
const poolRootMode = 0o711;
/** The directories holding volumes, staging copies and trash, and new volumes: the daemon user's alone. */
const privateDirMode = 0o700;

/** A local directory pool; moving a volume to another member copies its bytes through staging. */
export class DirPool implements StorageDriver {
  readonly driver: string = 'dir';
  private readonly root: string;
  /** Where staging, trash and copies in progress live: the pool root, or a directory of this member's own in it. */
  protected readonly scratch: string;
  /** Trees `removeTree` is removing now (renamed into the trash): `emptyTrash` leaves them to it. */
  private readonly removing = new Set<string>();

  /**
   * @param scratch where this pool instance keeps its staging, trash and copies in progress (on the pool's
   *   file system, since they are renamed into place); default: the pool root. A pool that several members
   *   open at once (`shared`) gives each member its own, so that no member's cleanup touches another's work.
   */
  constructor(
    readonly poolName: string,
    root: string,
    scratch?: string,
  ) {
    this.root = path.resolve(root);
    this.scratch = scratch === undefined ? this.root : path.resolve(scratch);
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true, mode: poolRootMode });
    await fsp.chmod(this.root, poolRootMode);
    const dirs = [
      ...[...Object.values(volumeDirs), ...Object.values(snapshotDirs)].map((d) => path.join(this.root, d)),
      ...[stagingDir, deletingDir, copyingDir, restoringDir].map((d) => path.join(this.scratch, d)),
    ];
    for (const dir of dirs) {
      await fsp.mkdir(dir, { recursive: true, mode: privateDirMode });
      await fsp.chmod(dir, privateDirMode);
    }
    // A crash during deleteVolume leaves the renamed-away volume here; nothing refers to it any more.
    await this.emptyDir(path.join(this.scratch, deletingDir));
    // A crash during a snapshot or a restore leaves its incomplete copy here; nothing refers to it.
    await this.emptyDir(path.join(this.scratch, copyingDir));
    await this.finishRestores();
    // A crash between commitStaging's rename and the removal of its move directory leaves that directory
    // empty; listStaging shows only its entries, so no recovery would ever see (and remove) it.
    for (const move of await readDirOrEmpty(path.join(this.scratch, stagingDir))) {
      if (move.isDirectory()) await removeIfEmpty(path.join(this.scratch, stagingDir, move.name));
    }
  }

  volumePath(ref: VolumeRef): string {
    checkRef(ref);
    if (ref.snapshot !== undefined) return path.join(this.snapshotsPath(ref), ref.snapshot);
    return path.join(this.root, volumeDirs[ref.type], `${ref.project}_${ref.name}`);
  }

  /** The directory holding the snapshots of the volume `ref` belongs to. */
  private snapshotsPath(ref: VolumeRef): string {
    const dir = snapshotDirs[ref.type];
    if (dir === undefined) throw new Error(`Volumes of type "${ref.type}" have no snapshots`);
    return path.join(this.root, dir, `${ref.project}_${ref.name}`);
  }

  async createVolume(ref: VolumeRef): Promise<void> {
    if (ref.snapshot !== undefined) throw new Error(`Snapshot "${ref.snapshot}" of volume "${ref.name}" is made with createSnapshot`);
    const target = this.volumePath(ref);
    await fsp.mkdir(path.dirname(target), { recursive: true, mode: privateDirMode });
    try {
      await fsp.mkdir(target, { mode: privateDirMode });
    } catch (err) {
      if (errorCode(err) === 'EEXIST') throw this.existsError(ref);
      throw err;
    }
  }

  async volumeExists(ref: VolumeRef): Promise<boolean> {
    return (await lstatOrNull(this.volumePath(ref)))?.isDirectory() ?? false;
  }

  async deleteVolume(ref: VolumeRef): Promise<void> {
    await this.removeTree(this.volumePath(ref));
    if (ref.snapshot !== undefined) await removeIfEmpty(this.snapshotsPath(ref));
  }

  async createSnapshot(snapshot: VolumeRef): Promise<void> {
    const target = this.volumePath(snapshot);
    const source = this.volumePath(parentRef(snapshot));
    if (!(await lstatOrNull(source))?.isDirectory()) {
      throw new Error(`Storage volume "${snapshot.name}" (${snapshot.type}, project "${snapshot.project}") not found in pool "${this.poolName}"`);
    }
    if (await lstatOrNull(target)) throw this.existsError(snapshot);
    const copy = await this.copyOf(source);
    try {
      await renameInto(copy, target, () => this.existsError(snapshot));
    } catch (err) {
      await this.removeTree(copy);
      throw err;
    }
  }

  async restoreSnapshot(snapshot: VolumeRef): Promise<void> {
    const source = this.volumePath(snapshot);
    const volume = parentRef(snapshot);
    const target = this.volumePath(volume);
    if (!(await lstatOrNull(source))?.isDirectory()) {
      throw new Error(`Snapshot "${String(snapshot.snapshot)}" of storage volume "${snapshot.name}" not found in pool "${this.poolName}"`);
    }
    const copy = await this.copyOf(source);
    // The complete copy waits under a name that says which volume it replaces; `finishRestores` completes
    // the swap if the daemon dies between the two renames below (the volume gone, the copy not yet in place).
    const waiting = path.join(this.scratch, restoringDir, stagingEntry(volume));
    await fsp.rm(waiting, { recursive: true, force: true });
    await fsp.rename(copy, waiting);
    await syncPath(path.join(this.scratch, restoringDir));
    const trash = path.join(this.scratch, deletingDir, randomUUID());
    try {
      await fsp.rename(target, trash);
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') {
        await this.removeTree(waiting);
        throw err;
      }
    }
    await fsp.mkdir(path.dirname(target), { recursive: true, mode: privateDirMode });
    await fsp.rename(waiting, target);
    await syncPath(path.dirname(target));
    await syncPath(path.join(this.scratch, restoringDir));
    await this.purge(trash);
  }

  async renameSnapshot(snapshot: VolumeRef, newName: string): Promise<void> {
    const from = this.volumePath(snapshot);
    const to = this.volumePath({ ...snapshot, snapshot: newName });
    if (!(await lstatOrNull(from))?.isDirectory()) {
      throw new Error(`Snapshot "${String(snapshot.snapshot)}" of storage volume "${snapshot.name}" not found in pool "${this.poolName}"`);
    }
    await renameInto(from, to, () => this.existsError({ ...snapshot, snapshot: newName }));
  }

  async listSnapshots(ref: VolumeRef): Promise<string[]> {
    checkRef(ref);
    const names = (await readDirOrEmpty(this.snapshotsPath(parentRef(ref)))).filter((e) => e.isDirectory()).map((e) => e.name);
    return names.sort();
  }

  /**
   * A durable copy of the tree at `source` in `.copying`, for a snapshot or a restore to rename into place.
   * `cp -a` keeps modes, owners (as root), times, symlinks, hard links and special files, and shares blocks
   * where the file system can (reflinks); files the running instance removes during the copy are left out,
   * as LXD's dir driver leaves them out of its rsync.
   */
  private async copyOf(source: string): Promise<string> {
    const copy = path.join(this.scratch, copyingDir, randomUUID());
    try {
      await copyTree(source, copy);
      await syncTree(copy);
      return copy;
    } catch (err) {
      await this.removeTree(copy);
      throw err;
    }
  }

  /** After a crash during restoreSnapshot: a waiting copy whose volume is gone takes its place; one whose volume is still there was never used. */
  private async finishRestores(): Promise<void> {
    for (const entry of await readDirOrEmpty(path.join(this.scratch, restoringDir))) {
      const waiting = path.join(this.scratch, restoringDir, entry.name);
      const volume = entry.isDirectory() ? refOfStagingEntry(entry.name) : null;
      if (volume && !(await lstatOrNull(this.volumePath(volume)))) {
        const target = this.volumePath(volume);
        await fsp.mkdir(path.dirname(target), { recursive: true, mode: privateDirMode });
        await fsp.rename(waiting, target);
        await syncPath(path.dirname(target));
      } else {
        await fsp.rm(waiting, { recursive: true, force: true });
      }
    }
  }

  async volumeUsage(ref: VolumeRef): Promise<number> {
    const target = this.volumePath(ref);
    if (!(await this.volumeExists(ref))) {
      throw new Error(`Storage volume "${ref.name}" (${ref.type}, project "${ref.project}") not found in pool "${this.poolName}"`);
    }
    return treeBytes(target);
  }

  async volumeFootprint(ref: VolumeRef): Promise<VolumeFootprint> {
    const target = this.volumePath(ref);
    if (!(await this.volumeExists(ref))) {
      throw new Error(`Storage volume "${ref.name}" (${ref.type}, project "${ref.project}") not found in pool "${this.poolName}"`);
    }
    return treeFootprint(target);
  }

  async poolUsage(): Promise<PoolUsage> {
    const s = await fsp.statfs(this.root);
    const totalBytes = s.blocks * s.bsize;
    // bavail, not bfree: blocks reserved for root are not space volumes can use.
    const freeBytes = s.bavail * s.bsize;
    const usedBytes = (s.blocks - s.bfree) * s.bsize;
    // A file system without an inode table of fixed size (btrfs) reports none at all.
    return { totalBytes, usedBytes, freeBytes, freeInodes: s.files > 0 ? s.ffree : null };
  }

  async createStaging(ref: VolumeRef, moveId: string): Promise<string> {
    checkRef(ref);
    checkSegment('move id', moveId);
    const dir = path.join(this.scratch, stagingDir, moveId, stagingEntry(ref));
    // A retried move reuses its id; whatever an earlier attempt left is incomplete, so start empty.
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.mkdir(dir, { recursive: true, mode: privateDirMode });
    return dir;
  }

  async commitStaging(ref: VolumeRef, stagingPath: string): Promise<void> {
    const target = this.volumePath(ref);
    const source = this.checkStagingPath(stagingPath);
    if (path.basename(source) !== stagingEntry(ref)) {
      throw new Error(`Staging directory ${source} does not belong to volume "${ref.name}" (${ref.type}, project "${ref.project}")`);
    }
    if (!(await lstatOrNull(source))?.isDirectory()) {
      throw new Error(`Staging directory ${source} does not exist in pool "${this.poolName}"`);
    }
    if (await lstatOrNull(target)) throw this.existsError(ref);

    await syncTree(source);
    const parent = path.dirname(target);
    await fsp.mkdir(parent, { recursive: true, mode: privateDirMode });
    // rename(2) would silently replace an *empty* directory; the check above covers that except for a
    // concurrent create of the same volume, which the daemon's per-volume operations already exclude.
    try {
      await fsp.rename(source, target);
    } catch (err) {
      const code = errorCode(err);
      if (code === 'EEXIST' || code === 'ENOTEMPTY' || code === 'ENOTDIR') throw this.existsError(ref);
      throw err;
    }
    // The rename is durable only once the directory entries that changed are on disk.
    await syncPath(parent);
    await syncPath(path.dirname(source));
    await removeIfEmpty(path.dirname(source));
  }

  async discardStaging(stagingPath: string): Promise<void> {
    const dir = this.checkStagingPath(stagingPath);
    await this.removeTree(dir);
    await removeIfEmpty(path.dirname(dir));
  }

  async listStaging(): Promise<{ path: string; moveId: string }[]> {
    const out: { path: string; moveId: string }[] = [];
    for (const move of await readDirOrEmpty(path.join(this.scratch, stagingDir))) {
      if (!move.isDirectory()) continue;
      const moveDir = path.join(this.scratch, stagingDir, move.name);
      for (const entry of await readDirOrEmpty(moveDir)) {
        if (entry.isDirectory()) out.push({ path: path.join(moveDir, entry.name), moveId: move.name });
      }
    }
    return out.sort((a, b) => a.path.localeCompare(b.path));
  }

  async listVolumes(): Promise<VolumeRef[]> {
    const out: VolumeRef[] = [];
    for (const type of volumeTypes) {
      for (const entry of await readDirOrEmpty(path.join(this.root, volumeDirs[type]))) {
        const ref = entry.isDirectory() ? splitVolumeDir(type, entry.name) : null;
        if (ref) out.push(ref);
      }
      const snapshots = snapshotDirs[type];
      if (snapshots === undefined) continue;
      for (const entry of await readDirOrEmpty(path.join(this.root, snapshots))) {
        const ref = entry.isDirectory() ? splitVolumeDir(type, entry.name) : null;
        if (!ref) continue;
        for (const snapshot of await this.listSnapshots(ref)) out.push({ ...ref, snapshot });
      }
    }
    return out;
  }

  /**
   * Remove a tree by renaming it away first. It vanishes at once, so a crash halfway through removing a large
   * tree never leaves a partial volume that listVolumes would report as present; and a writer that is still
   * finishing (a copy being discarded) cannot recreate it: its next file lands in the trash or fails.
   */
  private async removeTree(target: string): Promise<void> {
    const trash = await renameIntoTrash(path.join(this.scratch, deletingDir), target);
    if (trash !== null) await this.purge(trash);
  }

  /** Remove a tree already renamed into the trash. */
  private async purge(trash: string): Promise<void> {
    // Retries cover a writer that still adds files while the tree goes (ENOTEMPTY). What cannot be removed
    // now (an immutable file) stays in the trash, out of sight, for `emptyTrash` (or the next start).
    this.removing.add(trash);
    try {
      await fsp.rm(trash, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    } finally {
      this.removing.delete(trash);
    }
  }

  async emptyTrash(): Promise<void> {
    const trash = path.join(this.scratch, deletingDir);
    for (const entry of await readDirOrEmpty(trash)) {
      const p = path.join(trash, entry.name);
      if (this.removing.has(p)) continue;
      await fsp.rm(p, { recursive: true, force: true }).catch(() => undefined); // still stuck: the next sweep retries
    }
  }

  /** Remove the pool's own directories (the caller checked it holds no volume), and its root if nothing else is in it. */
  async destroy(): Promise<void> {
    for (const dir of [...Object.values(volumeDirs), ...Object.values(snapshotDirs)]) {
      await fsp.rm(path.join(this.root, dir), { recursive: true, force: true });
    }
    for (const dir of [stagingDir, deletingDir, copyingDir, restoringDir]) {
      await fsp.rm(path.join(this.scratch, dir), { recursive: true, force: true });
    }
    await removeIfEmpty(this.root);
  }

  private checkStagingPath(stagingPath: string): string {
    const resolved = path.resolve(stagingPath);
    const rel = path.relative(path.join(this.scratch, stagingDir), resolved);
    const parts = rel.split(path.sep);
    if (path.isAbsolute(rel) || parts.length !== 2 || parts.some((p) => p === '' || p === '.' || p === '..')) {
      throw new Error(`${stagingPath} is not a staging directory of pool "${this.poolName}"`);
    }
    return resolved;
  }

  private existsError(ref: VolumeRef): Error {
    return new Error(`Storage volume "${ref.name}" (${ref.type}, project "${ref.project}") already exists in pool "${this.poolName}"`);
  }

  private async emptyDir(dir: string): Promise<void> {
    for (const entry of await readDirOrEmpty(dir)) {
      await fsp.rm(path.join(dir, entry.name), { recursive: true, force: true });
    }
  }
}

/** A staging directory's name encodes its volume so that leftovers can be told apart after a crash (the btrfs pool names them alike). */
export function stagingEntry(ref: VolumeRef): string {
  if (ref.snapshot !== undefined) return `${ref.type}-snapshot_${ref.project}_${ref.name}_${ref.snapshot}`;
  return `${ref.type}_${ref.project}_${ref.name}`;
}

/** The volume a `.restoring` entry (named as `stagingEntry` names a volume) replaces, or null for anything else. */
export function refOfStagingEntry(entry: string): VolumeRef | null {
  const cut = entry.indexOf('_');
  const type = entry.slice(0, cut) as VolumeType;
  if (cut <= 0 || !volumeTypes.includes(type)) return null;
  return splitVolumeDir(type, entry.slice(cut + 1));
}

/** `<project>_<name>` back into a ref; as in LXD, project names have no underscore, so the first one splits it. */
function splitVolumeDir(type: VolumeType, entry: string): VolumeRef | null {
  const cut = entry.indexOf('_');
  if (cut <= 0 || cut === entry.length - 1) return null;
  return { type, project: entry.slice(0, cut), name: entry.slice(cut + 1) };
}

/** The volume a snapshot ref belongs to (the ref itself for a volume). */
function parentRef(ref: VolumeRef): VolumeRef {
  return { type: ref.type, project: ref.project, name: ref.name };
}

function checkRef(ref: VolumeRef): void {
  if (!volumeTypes.includes(ref.type)) throw new Error(`Unknown volume type "${String(ref.type)}"`);
  checkSegment('project name', ref.project);
  // The directory name is `<project>_<name>`; as in LXD, project names have no underscore, so it splits back.
  if (ref.project.includes('_')) throw new Error(`Invalid project name "${ref.project}": may not contain underscores`);
  checkSegment('volume name', ref.name);
  if (ref.snapshot !== undefined) {
    if (snapshotDirs[ref.type] === undefined) throw new Error(`Volumes of type "${ref.type}" have no snapshots`);
    checkSegment('snapshot name', ref.snapshot);
  }
}

/**
 * Rename the complete tree `from` to `to` (a name that must be free) durably: the directories whose entries
 * changed are fsynced. rename(2) would silently replace an empty directory, hence the check first.
 */
async function renameInto(from: string, to: string, exists: () => Error): Promise<void> {
  if (await lstatOrNull(to)) throw exists();
  await fsp.mkdir(path.dirname(to), { recursive: true, mode: privateDirMode });
  try {
    await fsp.rename(from, to);
  } catch (err) {
    const code = errorCode(err);
    if (code === 'EEXIST' || code === 'ENOTEMPTY' || code === 'ENOTDIR') throw exists();
    throw err;
  }
  await syncPath(path.dirname(to));
  if (path.dirname(from) !== path.dirname(to)) await syncPath(path.dirname(from));
}

/** Lines of `cp`'s complaints kept for an error message. */
const copyErrorLines = 5;

/** `cp -a` of the tree at `source` to `target` (which must not exist); complaints about files that vanished meanwhile are not failures. */
async function copyTree(source: string, target: string): Promise<void> {
  const problems: string[] = [];
  let pending = '';
  const take = (line: string): void => {
    // A running instance removed the file between cp's listing and its copy: left out, as rsync's "vanished".
    if (line.trim() === '' || /: No such file or directory$/.test(line)) return;
    if (problems.length < copyErrorLines) problems.push(line.trim());
  };
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn('cp', ['-a', '--reflink=auto', '--no-target-directory', '--', source, target], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      const lines = (pending + chunk).split('\n');
      pending = lines.pop() ?? '';
      lines.forEach(take);
    });
    child.once('error', reject);
    child.once('close', (exit) => resolve(exit ?? 1));
  });
  take(pending);
  if (problems.length > 0) throw new Error(`Copying ${source} failed: ${problems.join('; ')}`);
  if (code !== 0 && !(await lstatOrNull(target))?.isDirectory()) throw new Error(`Copying ${source} failed (cp exited ${code})`);
}

/** Refuses a name that could leave its directory (empty, `.`, `..`, a slash or NUL): every path segment a pool builds is checked so. */
export function checkSegment(what: string, value: string): void {
  if (typeof value !== 'string' || value === '' || value === '.' || value === '..') {
    throw new Error(`Invalid ${what} "${String(value)}"`);
  }
  if (value.includes('/') || value.includes('\0')) {
    throw new Error(`Invalid ${what} "${value}": may not contain slashes or NUL`);
  }
}

/**
 * Rename `target` into a fresh entry of `trashDir` (made if missing) and answer where it went, or null if it was
 * already gone: the first step of every pool's removal (see `DirPool.removeTree`).
 */
export async function renameIntoTrash(trashDir: string, target: string): Promise<string | null> {
  const trash = path.join(trashDir, randomUUID());
  await fsp.mkdir(trashDir, { recursive: true, mode: privateDirMode });
  try {
    await fsp.rename(target, trash);
    return trash;
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return null;
    throw err;
  }
}

/** The `code` of a Node system error (`ENOENT`…), if it is one. */
export function errorCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await fsp.lstat(p);
  } catch (err) {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return null;
    throw err;
  }
}

async function readDirOrEmpty(dir: string): Promise<Dirent[]> {
  try {
    return await fsp.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return [];
    throw err;
  }
}

async function removeIfEmpty(dir: string): Promise<void> {
  try {
    await fsp.rmdir(dir);
  } catch (err) {
    const code = errorCode(err);
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOENT') throw err;
  }
}

/** Sums the sizes of everything but directories, without following symlinks (a link counts as itself). */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await readDirOrEmpty(dir);
  const sizes = await Promise.all(
    entries.map(async (entry) => {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) return treeBytes(p);
      // A file removed while we walk simply no longer counts.
      return (await lstatOrNull(p))?.size ?? 0;
    }),
  );
  for (const size of sizes) total += size;
  return total;
}

/** The footprint of the tree at `dir` (itself included), without following symlinks. */
async function treeFootprint(dir: string): Promise<VolumeFootprint> {
  const total: VolumeFootprint = { bytes: entryFootprint('dir', 0), inodes: 1 };
  const entries = await readDirOrEmpty(dir);
  const parts = await Promise.all(
    entries.map(async (entry): Promise<VolumeFootprint> => {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) return treeFootprint(p);
      const st = await lstatOrNull(p); // a file removed while we walk no longer counts
      if (!st) return { bytes: 0, inodes: 0 };
      if (st.isFile()) return { bytes: entryFootprint('file', st.size), inodes: 1 };
      if (st.isSymbolicLink()) return { bytes: entryFootprint('link', st.size), inodes: 1 };
      return { bytes: 0, inodes: 0 }; // sockets, FIFOs and devices are not copied
    }),
  );
  for (const part of parts) {
    total.bytes += part.bytes;
    total.inodes += part.inodes;
  }
  return total;
}

/** Every regular file and directory under (and including) `root`: what must reach the disk before the rename. */
async function syncTargets(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fsp.readdir(root, { withFileTypes: true })) {
    const p = path.join(root, entry.name);
    if (entry.isDirectory()) out.push(...(await syncTargets(p)));
    // Symlinks cannot be opened without following them; their directory's fsync makes them durable.
    else if (entry.isFile()) out.push(p);
  }
  out.push(root);
  return out;
}

async function syncTree(root: string): Promise<void> {
  const targets = await syncTargets(root);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < targets.length) {
      const target = targets[next++];
      if (target !== undefined) await syncPath(target);
    }
  };
  await Promise.all(Array.from({ length: Math.min(syncParallelism, targets.length) }, worker));
}

async function syncPath(p: string): Promise<void> {
  const handle = await fsp.open(p, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
