// The `btrfs` storage driver: the dir pool's layout (dir.ts) on a btrfs file system, every volume, snapshot
// and staging copy a subvolume of its own. What differs from dir:
//   - a volume is made with `btrfs subvolume create`; a snapshot is `btrfs subvolume snapshot -r` (atomic and
//     copy-on-write: no copy, it shares every extent with its volume);
//   - a restore puts a writable snapshot of the snapshot in `.restoring`, then swaps it in by two renames, as
//     dir does with its copy (and `init` finishes a swap a crash cut short the same way);
//   - removal is `btrfs subvolume delete`, which unlinks a subvolume at once (a volume with subvolumes a user
//     nested in it is renamed into `.deleting` first, as dir does, and taken apart there);
//   - durability is one btrfs transaction commit (`btrfs filesystem sync`), which writes every extent and
//     directory entry changed so far: a subvolume appears whole after a crash, or not at all;
//   - moves between two btrfs pools stream `btrfs send | btrfs receive` (`streams`):
//       .sending/<moveId>/<entry>.<uuid>/       read-only snapshots a move sends from (source side)
//       .receiving/<moveId>/<entry>/<uuid>/<name>  what `btrfs receive` landed (read-only), kept as the parent the
//                                               next incremental stream of a pre-copy is applied against
//     and the staging copy is a writable snapshot of the last stream received, committed as any staging is.
// Needs root: `btrfs send` and `subvolume delete` do (as LXD's btrfs driver, which runs as root).

import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { Stats } from 'node:fs';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { PoolUsage, SendPoint, StorageDriver, VolumeFootprint, VolumeRef, VolumeStreams } from '../driver.js';
import { checkSegment, DirPool, errorCode, refOfStagingEntry, renameIntoTrash, stagingEntry } from './dir.js';

/** statfs(2) `f_type` of btrfs (BTRFS_SUPER_MAGIC). */
const btrfsMagic = 0x9123683e;
/** The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID): how a subvolume is told from a directory. */
const subvolumeRootIno = 256;
const stagingDir = '.staging';
const deletingDir = '.deleting';
const restoringDir = '.restoring';
const sendingDir = '.sending';
const receivingDir = '.receiving';
/** As dir's: directories above volumes, staging and trash, and new volumes, are the daemon user's alone. */
const privateDirMode = 0o700;
/** Lines of a btrfs command's complaints kept for an error message. */
const stderrLimit = 4000;

/** True if `dir` lies on a btrfs file system (statfs type): a btrfs pool refuses any other. */
export async function isOnBtrfs(dir: string): Promise<boolean> {
  return (await fsp.statfs(dir)).type === btrfsMagic;
}

/** A btrfs command that failed, with its complaint and, where it says one, the errno code it amounts to. */
export class BtrfsCommandError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'BtrfsCommandError';
  }
}

/** A pool on a btrfs file system: a subvolume per volume; moves to another btrfs pool send and receive subvolumes. */
export class BtrfsPool implements StorageDriver {
  readonly driver = 'btrfs';
  readonly streams: VolumeStreams;
  private readonly root: string;
  /** The layout, names, walks and renames btrfs shares with dir; every write of a subvolume is done here. */
  private readonly layout: DirPool;
  /** Trees being removed now (renamed into the trash): `emptyTrash` leaves them to their removal. */
  private readonly removing = new Set<string>();

  /** `root` is a directory on a mounted btrfs file system (LXD's `source` of a btrfs pool on an existing btrfs mount). */
  constructor(
    readonly poolName: string,
    root: string,
  ) {
    this.root = path.resolve(root);
    this.layout = new DirPool(poolName, this.root);
    this.streams = {
      format: 'btrfs',
      sendPoint: (ref, moveId) => this.sendPoint(ref, moveId),
      send: (point, parent) => sendStream(point, parent),
      releaseSendPoint: (point) => this.releaseSendPoint(point),
      receive: (ref, moveId, stream, fresh) => this.receive(ref, moveId, stream, fresh),
    };
  }

  async init(): Promise<void> {
    // Refuse before creating anything: the nearest directory that exists must be on btrfs already.
    let probe = this.root;
    while (!(await lstatOrNull(probe))) probe = path.dirname(probe);
    if (!(await isOnBtrfs(probe))) {
      throw new Error(`Storage pool "${this.poolName}": ${this.root} is not on a btrfs file system (a btrfs pool's source must be a directory on a mounted btrfs file system)`);
    }
    await fsp.mkdir(this.root, { recursive: true, mode: privateDirMode });
    for (const dir of [deletingDir, restoringDir, sendingDir, receivingDir]) {
      await fsp.mkdir(path.join(this.root, dir), { recursive: true, mode: privateDirMode });
      await fsp.chmod(path.join(this.root, dir), privateDirMode);
    }
    // dir's own start-up removes trash with `rm`, which cannot remove read-only subvolumes: these go first.
    for (const dir of [deletingDir, sendingDir]) {
      for (const entry of await fsp.readdir(path.join(this.root, dir))) await removeSubvolumes(path.join(this.root, dir, entry));
    }
    await this.finishRestores();
    await this.layout.init();
  }

  volumePath(ref: VolumeRef): string {
    return this.layout.volumePath(ref);
  }

  async createVolume(ref: VolumeRef): Promise<void> {
    if (ref.snapshot !== undefined) throw new Error(`Snapshot "${ref.snapshot}" of volume "${ref.name}" is made with createSnapshot`);
    const target = this.volumePath(ref);
    if (await lstatOrNull(target)) throw this.existsError(ref);
    await fsp.mkdir(path.dirname(target), { recursive: true, mode: privateDirMode });
    await createSubvolume(target).catch((err: unknown) => {
      throw errorCode(err) === 'EEXIST' ? this.existsError(ref) : err;
    });
  }

  volumeExists(ref: VolumeRef): Promise<boolean> {
    return this.layout.volumeExists(ref);
  }

  async deleteVolume(ref: VolumeRef): Promise<void> {
    const target = this.volumePath(ref);
    await this.removeTree(target);
    if (ref.snapshot !== undefined) await removeIfEmpty(path.dirname(target));
  }

  async createSnapshot(snapshot: VolumeRef): Promise<void> {
    const target = this.volumePath(snapshot);
    const source = this.volumePath(parentRef(snapshot));
    if (!(await lstatOrNull(source))?.isDirectory()) {
      throw new Error(`Storage volume "${snapshot.name}" (${snapshot.type}, project "${snapshot.project}") not found in pool "${this.poolName}"`);
    }
    if (await lstatOrNull(target)) throw this.existsError(snapshot);
    await fsp.mkdir(path.dirname(target), { recursive: true, mode: privateDirMode });
    // Atomic, so it never appears half made; the commit makes it durable before this returns.
    await btrfs(['subvolume', 'snapshot', '-r', source, target]).catch((err: unknown) => {
      throw errorCode(err) === 'EEXIST' ? this.existsError(snapshot) : err;
    });
    await this.sync();
  }

  async restoreSnapshot(snapshot: VolumeRef): Promise<void> {
    const source = this.volumePath(snapshot);
    const volume = parentRef(snapshot);
    const target = this.volumePath(volume);
    if (!(await lstatOrNull(source))?.isDirectory()) {
      throw new Error(`Snapshot "${String(snapshot.snapshot)}" of storage volume "${snapshot.name}" not found in pool "${this.poolName}"`);
    }
    // A writable snapshot of the snapshot waits under a name that says which volume it replaces;
    // `finishRestores` completes the swap if the daemon dies between the two renames below.
    const waiting = path.join(this.root, restoringDir, stagingEntry(volume));
    await removeSubvolumes(waiting);
    await btrfs(['subvolume', 'snapshot', source, waiting]);
    await this.sync();
    const trash = path.join(this.root, deletingDir, randomUUID());
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
    await this.sync();
    await this.purge(trash);
  }

  renameSnapshot(snapshot: VolumeRef, newName: string): Promise<void> {
    return this.layout.renameSnapshot(snapshot, newName);
  }

  listSnapshots(ref: VolumeRef): Promise<string[]> {
    return this.layout.listSnapshots(ref);
  }

  volumeUsage(ref: VolumeRef): Promise<number> {
    return this.layout.volumeUsage(ref);
  }

  volumeFootprint(ref: VolumeRef): Promise<VolumeFootprint> {
    return this.layout.volumeFootprint(ref);
  }

  poolUsage(): Promise<PoolUsage> {
    return this.layout.poolUsage();
  }

  async createStaging(ref: VolumeRef, moveId: string): Promise<string> {
    const staging = this.stagingPath(ref, moveId);
    // A retried move reuses its id; whatever an earlier attempt left (received streams too) is incomplete.
    await this.dropReceived(moveId, stagingEntry(ref));
    await removeSubvolumes(staging);
    await fsp.mkdir(path.dirname(staging), { recursive: true, mode: privateDirMode });
    await createSubvolume(staging);
    return staging;
  }

  async commitStaging(ref: VolumeRef, stagingPath: string): Promise<void> {
    const target = this.volumePath(ref);
    const source = this.checkStagingPath(stagingPath);
    if (path.basename(source) !== stagingEntry(ref)) {
      throw new Error(`Staging directory ${source} does not belong to volume "${ref.name}" (${ref.type}, project "${ref.project}")`);
    }
    const st = await lstatOrNull(source);
    if (!st?.isDirectory() || st.ino !== subvolumeRootIno) {
      throw new Error(`Staging subvolume ${source} does not exist in pool "${this.poolName}"`);
    }
    if (await lstatOrNull(target)) throw this.existsError(ref);
    await fsp.mkdir(path.dirname(target), { recursive: true, mode: privateDirMode });
    if (ref.snapshot !== undefined) {
      // A snapshot is read-only in the pool, however it arrived (a tar stream writes into a writable staging
      // subvolume), and appears so at once: a read-only snapshot of the staging takes its place, atomically.
      await btrfs(['subvolume', 'snapshot', '-r', source, target]).catch((err: unknown) => {
        throw errorCode(err) === 'EEXIST' ? this.existsError(ref) : err;
      });
      await this.sync();
      await this.removeTree(source);
    } else {
      await this.sync();
      // rename(2) would silently replace an empty directory; the check above covers that except for a
      // concurrent create of the same volume, which the daemon's per-volume operations already exclude.
      try {
        await fsp.rename(source, target);
      } catch (err) {
        const code = errorCode(err);
        if (code === 'EEXIST' || code === 'ENOTEMPTY' || code === 'ENOTDIR') throw this.existsError(ref);
        throw err;
      }
      await this.sync();
    }
    await removeIfEmpty(path.dirname(source));
    await this.dropReceived(path.basename(path.dirname(source)), path.basename(source));
  }

  async discardStaging(stagingPath: string): Promise<void> {
    const staging = this.checkStagingPath(stagingPath);
    await this.removeTree(staging);
    await removeIfEmpty(path.dirname(staging));
    await this.dropReceived(path.basename(path.dirname(staging)), path.basename(staging));
  }

  /**
   * Staging of every move, named by its staging path, whether the staging subvolume exists or only what a
   * receive landed (a crash between the receive and the staging snapshot): `discardStaging` removes both.
   */
  async listStaging(): Promise<{ path: string; moveId: string }[]> {
    const found = new Map<string, { path: string; moveId: string }>();
    for (const top of [stagingDir, receivingDir]) {
      for (const move of await readDirOrEmpty(path.join(this.root, top))) {
        for (const entry of await readDirOrEmpty(path.join(this.root, top, move))) {
          const p = path.join(this.root, stagingDir, move, entry);
          found.set(p, { path: p, moveId: move });
        }
      }
    }
    return [...found.values()].sort((a, b) => a.path.localeCompare(b.path));
  }

  listVolumes(): Promise<VolumeRef[]> {
    return this.layout.listVolumes();
  }

  async emptyTrash(): Promise<void> {
    const trash = path.join(this.root, deletingDir);
    for (const entry of await readDirOrEmpty(trash)) {
      const p = path.join(trash, entry);
      if (this.removing.has(p)) continue;
      await removeSubvolumes(p).catch(() => undefined); // still stuck: the next sweep retries
    }
  }

  // ---- send and receive ----

  private async sendPoint(ref: VolumeRef, moveId: string): Promise<SendPoint> {
    const volume = this.volumePath(ref);
    checkSegment('move id', moveId);
    if (!(await lstatOrNull(volume))?.isDirectory()) {
      throw new Error(`Storage volume "${ref.name}" (${ref.type}, project "${ref.project}") not found in pool "${this.poolName}"`);
    }
    // A snapshot is read-only already and does not change: it is sent as it is.
    if (ref.snapshot !== undefined) return { ref, path: volume, owned: false };
    const dir = path.join(this.root, sendingDir, moveId);
    await fsp.mkdir(dir, { recursive: true, mode: privateDirMode });
    const point = path.join(dir, `${stagingEntry(ref)}.${randomUUID()}`);
    await btrfs(['subvolume', 'snapshot', '-r', volume, point]);
    return { ref, path: point, owned: true };
  }

  private async releaseSendPoint(point: SendPoint): Promise<void> {
    if (!point.owned) return;
    const resolved = path.resolve(point.path);
    if (path.dirname(path.dirname(resolved)) !== path.join(this.root, sendingDir)) {
      throw new Error(`${point.path} is not a send point of pool "${this.poolName}"`);
    }
    await this.removeTree(resolved);
    await removeIfEmpty(path.dirname(resolved));
  }

  private async receive(ref: VolumeRef, moveId: string, stream: Readable, fresh: boolean): Promise<string> {
    const staging = this.stagingPath(ref, moveId);
    const entry = stagingEntry(ref);
    const received = path.join(this.root, receivingDir, moveId, entry);
    if (fresh) {
      await this.dropReceived(moveId, entry);
      await removeSubvolumes(staging);
    }
    const earlier = await readDirOrEmpty(received);
    const pass = path.join(received, randomUUID());
    await fsp.mkdir(pass, { recursive: true, mode: privateDirMode });
    try {
      await receiveStream(stream, pass);
    } catch (err) {
      await removeSubvolumes(pass).catch(() => undefined);
      throw err;
    }
    const landed = await readDirOrEmpty(pass);
    if (landed.length !== 1) throw new Error(`btrfs receive of volume "${ref.name}" landed ${landed.length} subvolumes, not one`);
    // The stream just received is complete: the earlier ones are no longer needed as parents.
    for (const old of earlier) await removeSubvolumes(path.join(received, old));
    // The staging copy is a writable snapshot of it (tar repairs, if any, write into it); the received one
    // stays read-only, unchanged, as the parent the next incremental stream is applied against.
    await removeSubvolumes(staging);
    await fsp.mkdir(path.dirname(staging), { recursive: true, mode: privateDirMode });
    await btrfs(['subvolume', 'snapshot', path.join(pass, landed[0] as string), staging]);
    return staging;
  }

  /** Remove what receives of one volume of a move landed (its staging aside). */
  private async dropReceived(moveId: string, entry: string): Promise<void> {
    const moveDir = path.join(this.root, receivingDir, moveId);
    const dir = path.join(moveDir, entry);
    if (!(await lstatOrNull(dir))) return;
    await this.removeTree(dir);
    await removeIfEmpty(moveDir);
  }

  // ---- helpers ----

  /** Where move `moveId` stages `ref` (checked names). */
  private stagingPath(ref: VolumeRef, moveId: string): string {
    this.volumePath(ref); // checks the ref
    checkSegment('move id', moveId);
    return path.join(this.root, stagingDir, moveId, stagingEntry(ref));
  }

  /** Staging paths come back from callers (and listStaging after a restart): exactly two levels under `.staging`. */
  private checkStagingPath(stagingPath: string): string {
    const resolved = path.resolve(stagingPath);
    const rel = path.relative(path.join(this.root, stagingDir), resolved);
    const parts = rel.split(path.sep);
    if (path.isAbsolute(rel) || parts.length !== 2 || parts.some((p) => p === '' || p === '.' || p === '..')) {
      throw new Error(`${stagingPath} is not a staging directory of pool "${this.poolName}"`);
    }
    return resolved;
  }

  /** After a crash during restoreSnapshot: a waiting copy whose volume is gone takes its place; one whose volume is still there was never used. */
  private async finishRestores(): Promise<void> {
    for (const entry of await readDirOrEmpty(path.join(this.root, restoringDir))) {
      const waiting = path.join(this.root, restoringDir, entry);
      const volume = refOfStagingEntry(entry);
      if (volume && !(await lstatOrNull(this.volumePath(volume)))) {
        await fsp.mkdir(path.dirname(this.volumePath(volume)), { recursive: true, mode: privateDirMode });
        await fsp.rename(waiting, this.volumePath(volume));
      } else {
        await removeSubvolumes(waiting);
      }
    }
    await this.sync();
  }

  /**
   * Remove a volume, snapshot or staging copy so that it vanishes at once (as dir's renaming into the trash
   * does): `btrfs subvolume delete` unlinks a subvolume in one step and frees its extents in the background.
   * Only one with subvolumes nested in it (which block that) is renamed into the trash first and taken apart
   * there; a read-only subvolume cannot be renamed to another directory, but has no real nested subvolumes.
   */
  private async removeTree(target: string): Promise<void> {
    const st = await lstatOrNull(target);
    if (!st) return;
    if (st.isDirectory() && st.ino === subvolumeRootIno) {
      try {
        await btrfs(['subvolume', 'delete', target]);
        return;
      } catch (err) {
        if (errorCode(err) === 'ENOENT') return;
        if (errorCode(err) !== 'ENOTEMPTY') throw err;
      }
    }
    const trash = await renameIntoTrash(path.join(this.root, deletingDir), target);
    if (trash !== null) await this.purge(trash);
  }

  /** Remove a tree already in the trash; what cannot go now stays there for `emptyTrash` (or the next start). */
  private async purge(trash: string): Promise<void> {
    this.removing.add(trash);
    try {
      await removeSubvolumes(trash);
    } finally {
      this.removing.delete(trash);
    }
  }

  /** Commit the file system's transaction: everything written or renamed so far is on disk. */
  private async sync(): Promise<void> {
    await btrfs(['filesystem', 'sync', this.root]);
  }

  private existsError(ref: VolumeRef): Error {
    return new Error(`Storage volume "${ref.name}" (${ref.type}, project "${ref.project}") already exists in pool "${this.poolName}"`);
  }
}

/** Run `btrfs` with `args` (never through a shell); a failure carries its complaint and the errno it names. */
function btrfs(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('btrfs', args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const complaint = (stderr || err.message).trim().slice(0, stderrLimit);
      reject(new BtrfsCommandError(`btrfs ${args.slice(0, 2).join(' ')} failed: ${complaint}`, codeOf(complaint)));
    });
  });
}

/** The errno a btrfs complaint names, so callers can tell a full pool (ENOSPC) or an existing name from other failures. */
function codeOf(complaint: string): string | undefined {
  if (/No space left on device/i.test(complaint)) return 'ENOSPC';
  if (/Disk quota exceeded/i.test(complaint)) return 'EDQUOT';
  if (/Directory not empty/i.test(complaint)) return 'ENOTEMPTY';
  if (/already exists|File exists/i.test(complaint)) return 'EEXIST';
  if (/No such file or directory/i.test(complaint)) return 'ENOENT';
  return undefined;
}

/** A new subvolume at `target`, private to the daemon user (as dir makes a new volume). */
async function createSubvolume(target: string): Promise<void> {
  await btrfs(['subvolume', 'create', target]);
  await fsp.chmod(target, privateDirMode);
}

/**
 * Remove `target` whatever it is: a subvolume (read-only too) by `btrfs subvolume delete`, after any
 * subvolumes nested in it (which block its deletion); a plain tree by `rm`, after the subvolumes in it.
 */
async function removeSubvolumes(target: string): Promise<void> {
  const st = await lstatOrNull(target);
  if (!st) return;
  if (!st.isDirectory()) {
    await fsp.rm(target, { force: true });
    return;
  }
  if (st.ino === subvolumeRootIno) {
    try {
      await btrfs(['subvolume', 'delete', target]);
      return;
    } catch (err) {
      if (errorCode(err) !== 'ENOTEMPTY') throw err;
    }
  }
  for (const nested of await nestedSubvolumes(target, st.dev)) await removeSubvolumes(nested);
  if (st.ino === subvolumeRootIno) await btrfs(['subvolume', 'delete', target]);
  else await fsp.rm(target, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
}

/** The subvolumes directly nested in the tree at `dir` (a subvolume shows as a root directory of another device). */
async function nestedSubvolumes(dir: string, dev: number): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fsp.readdir(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const p = path.join(dir, entry.name);
    const st = await lstatOrNull(p);
    if (!st) continue;
    if (st.ino === subvolumeRootIno && st.dev !== dev) out.push(p);
    else out.push(...(await nestedSubvolumes(p, dev)));
  }
  return out;
}

/**
 * `btrfs send` of `point` (incremental against `parent`) as a stream that ends only once the command has
 * succeeded: a failed send ends it with an error carrying the command's complaint, never as a short stream.
 * Destroying the stream stops the command.
 */
function sendStream(point: SendPoint, parent?: SendPoint): Readable {
  const args = ['send', '-q', ...(parent ? ['-p', parent.path] : []), point.path];
  const child = spawn('btrfs', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  let complaint = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (complaint.length < stderrLimit) complaint += chunk;
  });
  child.stdout.pipe(out, { end: false });
  child.once('error', (err) => out.destroy(err));
  child.once('close', (code, signal) => {
    if (code === 0) out.end();
    else out.destroy(new BtrfsCommandError(`btrfs send of ${path.basename(point.path)} failed (${signal ?? `exit ${String(code)}`}): ${complaint.trim()}`, codeOf(complaint)));
  });
  out.once('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill();
  });
  return out;
}

/** Feed `stream` to `btrfs receive` into `dir`; resolves once the command has succeeded. */
async function receiveStream(stream: Readable, dir: string): Promise<void> {
  const child = spawn('btrfs', ['receive', '-q', dir], { stdio: ['pipe', 'ignore', 'pipe'] });
  let complaint = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (complaint.length < stderrLimit) complaint += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  let fed: unknown = null;
  try {
    await pipeline(stream, child.stdin);
  } catch (err) {
    fed = err;
    child.kill(); // the stream broke (or was discarded): what was received is incomplete
  }
  const { code, signal } = await exited;
  // The command's own failure says more than the broken pipe it caused.
  if (code !== 0) {
    throw new BtrfsCommandError(`btrfs receive failed (${signal ?? `exit ${String(code)}`}): ${complaint.trim() || (fed instanceof Error ? fed.message : '')}`, codeOf(complaint) ?? errorCode(fed));
  }
  if (fed) throw fed;
}

/** The volume a snapshot ref belongs to (the ref itself for a volume). */
function parentRef(ref: VolumeRef): VolumeRef {
  return { type: ref.type, project: ref.project, name: ref.name };
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await fsp.lstat(p);
  } catch (err) {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return null;
    throw err;
  }
}

async function readDirOrEmpty(dir: string): Promise<string[]> {
  try {
    return (await fsp.readdir(dir)).sort();
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
