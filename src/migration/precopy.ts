// Pre-copy: the lowest-downtime move Roost can make without checkpoint/restore (CRIU does not work on the
// kernels Roost targets), used for `live: true` user moves and `cluster.evacuate=live-migrate`. The source
// copies every volume while the instances still run, then, pass after pass while what changed keeps
// shrinking, only what changed; move.ts then stops the instances, and `finish` sends the last changes and
// checks that the target's copy equals the source's tree before move.ts commits exactly as for a cold move.
//
// Passes, all into the target's staging directory of the move (through `MoveTarget`, cluster/internal.ts;
// the receiving side is at the bottom):
//   pass 1   sendDelta(fresh): a tar of every entry, into a fresh staging directory
//   pass n   deletePaths: paths gone (or whose kind changed) since the last pass, then sendDelta: a tar of
//            the entries that are new or whose stat changed
//   warm     warmDigest: the target digests its copy while the instances run
//   final    the same as pass n after the stop, then digest: the target answers the digest of its staging
//            tree (reading again only what changed since the warm digest), the source reads and hashes its
//            whole tree (while the final pass travels); differences are sent again, at most twice, else the
//            move aborts and rolls back.
// Each pass's stream is hashed on both sides, as cold copies are; the target gives every entry exactly its
// mode (and owner, as root) and fsyncs it, so the commit after the stop finds the copy already on disk.
// The source remembers what it sent as a manifest (relative path → kind, size, mtime, ctime, inode, mode).
// ctime is in it because chmod, chown and new hard links leave mtime alone; an entry whose ctime lay within
// a tenth of a second of the moment it was looked at is sent again, since a write in the same clock tick
// would leave its times unchanged. Writes that no time reflects (through mmap) are what the final check is for.
// Nothing here touches the journal: a crash during the passes is a crash before the commit, and the
// target's staging directory is removed by the rollback (or its own recovery) as for a cold move.

import { createHash, webcrypto, type Hash } from 'node:crypto';
import { constants, promises as fsp, type BigIntStats, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { errors } from '../errors/index.js';
import type { MoveTarget, StreamDigest, TreeEntry } from '../cluster/internal.js';
import type { InstanceService } from '../instances/service.js';
import type { StorageDriver, VolumeRef } from '../storage/driver.js';
import type { InstanceRecord } from '../store/schema.js';
import { exactTree } from '../util/exact-tree.js';
import type { Logger } from '../util/log.js';

/** Passes while the instances run after the first, full one; each must shrink what is left to send. */
const maxWarmPasses = 3;
/** Changes this small are left for the pass after the stop: another pass while running would not pay. */
const settledBytes = 1024 * 1024;
/**
 * An entry that changed this close (ns) before it was looked at may change again with the same times: file
 * times come from the kernel's coarse clock, one tick (at most 10 ms) behind; the rest is margin.
 */
const racyNs = 100_000_000n;
/** Rounds of re-sending what the final check found different before giving up. */
const maxRepairs = 2;
/** Deleted paths per request (the API takes 16 MiB of JSON). */
const deleteBatch = 5000;
/** Bytes read from a file at a time, packing or hashing (16 files at once stay within 16 MiB). */
const readChunk = 1024 * 1024;
/** Files fsynced, or hashed, at once: enough to keep the disk queue busy. */
const ioParallelism = 16;

/** The kinds of entries a move carries; sockets, FIFOs and devices are skipped, as tar skips them in cold moves. */
type Kind = 'file' | 'dir' | 'link';

/** What the source saw of one entry when it listed it for a pass. */
interface Seen {
  kind: Kind;
  size: number;
  mode: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
  /** Wall clock (ns) just before the entry was looked at. */
  atNs: bigint;
}

/** Relative path (`.` for the volume itself, `a/b` below it) → what was seen, in sorted pre-order. */
type Manifest = Map<string, Seen>;

/** What one pass sends for one volume. */
interface Changes {
  send: string[];
  deleted: string[];
  /** File bytes in `send`. */
  bytes: number;
}

/** What a pre-copy needs from the move that runs it. */
export interface PrecopyRequest {
  moveId: string;
  refs: VolumeRef[];
  pool: StorageDriver;
  /** The receiving end of the move. */
  link: MoveTarget;
  /** The target member's name (for messages). */
  target: string;
  /** The moving instances' names (for logs). */
  instances: string[];
  signal?: AbortSignal;
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  log: Logger;
}

/** Whether a move of these instances can pre-copy: every instance's driver can, and at least one runs. */
export function precopyFits(svc: InstanceService, loaded: { record: InstanceRecord; running: boolean }[]): boolean {
  return loaded.some((l) => l.running) && loaded.every((l) => svc.driver(l.record.type).capabilities.precopy);
}

/** The source side of one pre-copy: `copyWhileRunning` before the stop, `finish` after it. */
export class Precopy {
  /** Per volume, what the target holds now (as the source saw it when it sent it). */
  private readonly sent = new Map<string, Manifest>();
  private pass = 0;
  private bytesDone = 0;
  private bytesTotal = 0;

  constructor(private readonly req: PrecopyRequest) {}

  /** Pass 1 (everything), then passes of what changed while those keep shrinking and are not yet small. */
  async copyWhileRunning(): Promise<void> {
    const { link, refs, signal } = this.req;
    await link.prepare(refs, signal);
    const first = await this.scanAll(true);
    this.bytesTotal = first.reduce((s, x) => s + x.changes.bytes, 0);
    this.req.onProgress?.(0, this.bytesTotal);
    await this.sendPass(first, true, true);
    let last = this.bytesTotal;
    for (let i = 0; i < maxWarmPasses; i++) {
      this.throwIfAborted();
      const scans = await this.scanAll(false);
      const bytes = scans.reduce((s, x) => s + x.changes.bytes, 0);
      // Small enough to send after the stop, or no longer shrinking: more passes would not cut the downtime.
      if (bytes <= settledBytes || bytes >= last) break;
      await this.sendPass(scans, true, false);
      last = bytes;
    }
    // The target digests its copy now, while the instances run; after the stop it reads only the last pass.
    for (const ref of refs) await link.warmDigest(ref, signal);
  }

  /** After the stop: send the last changes, then make sure the target's copy equals the source's tree. */
  async finish(): Promise<void> {
    const { refs, pool, link, moveId, signal, log } = this.req;
    // The source's own digest needs only the stopped tree, so it is computed while the last pass travels.
    const t0 = Date.now();
    const timed = <T>(p: Promise<T>): Promise<{ value: T; ms: number }> => p.then((value) => ({ value, ms: Date.now() - t0 }));
    const local = timed(Promise.all(refs.map((ref) => digestVolume(pool.volumePath(ref)))));
    local.catch(() => undefined); // awaited below; a failure before that must not go unhandled
    await this.sendPass(await this.scanAll(false), false, false);
    const askDigest = (ref: VolumeRef): Promise<TreeEntry[]> => link.digest(ref, signal);
    const [{ value: mine, ms: sourceMs }, { value: theirs, ms: targetMs }] = await Promise.all([local, timed(Promise.all(refs.map(askDigest)))]);
    for (const [i, ref] of refs.entries()) {
      const source = mine[i] ?? [];
      let target = theirs[i] ?? [];
      for (let round = 0; ; round++) {
        const diff = compareTrees(source, target);
        if (diff.send.length === 0 && diff.deleted.length === 0) break;
        const first = diff.send[0] ?? diff.deleted[0] ?? '';
        if (round >= maxRepairs) {
          throw new Error(`the copy of volume "${ref.name}" on "${this.req.target}" still differs from the source after ${maxRepairs} repairs (e.g. "${first}")`);
        }
        // Only a change no timestamp showed (a write through mmap) gets here; resend just those entries.
        log.warn({ move: moveId, volume: ref.name, differ: diff.send.length + diff.deleted.length, example: first }, 'pre-copy: target copy differs; sending those entries again');
        await this.send(ref, diff, false);
        target = await askDigest(ref);
      }
    }
    // Times since the stop: when the source's own digest and the target's were ready, and when all was checked.
    log.info({ move: moveId, instances: this.req.instances, target: this.req.target, passes: this.pass, sourceDigestMs: sourceMs, targetDigestMs: targetMs, ms: Date.now() - t0 }, 'pre-copy verified');
  }

  /** List every volume and what changed in it since it was last sent. */
  private async scanAll(full: boolean): Promise<{ ref: VolumeRef; now: Manifest; changes: Changes }[]> {
    const out: { ref: VolumeRef; now: Manifest; changes: Changes }[] = [];
    for (const ref of this.req.refs) {
      const now = await scanTree(this.req.pool.volumePath(ref));
      out.push({ ref, now, changes: changesSince(full ? null : (this.sent.get(refKey(ref)) ?? null), now) });
    }
    return out;
  }

  /** Send one pass over every volume; what was listed becomes what the target holds. */
  private async sendPass(scans: { ref: VolumeRef; now: Manifest; changes: Changes }[], running: boolean, fresh: boolean): Promise<void> {
    this.pass++;
    const t0 = Date.now();
    let bytes = 0;
    for (const s of scans) {
      this.throwIfAborted();
      if (!fresh) this.bytesTotal += s.changes.bytes;
      bytes += await this.send(s.ref, s.changes, fresh);
      this.sent.set(refKey(s.ref), s.now);
    }
    this.req.log.info(
      {
        move: this.req.moveId,
        instances: this.req.instances,
        target: this.req.target,
        pass: this.pass,
        running,
        files: scans.reduce((n, s) => n + s.changes.send.length, 0),
        deleted: scans.reduce((n, s) => n + s.changes.deleted.length, 0),
        bytes,
        ms: Date.now() - t0,
      },
      'pre-copy pass',
    );
  }

  /** Deletions, then a tar of `send`, for one volume; returns the bytes streamed. */
  private async send(ref: VolumeRef, changes: Changes, fresh: boolean): Promise<number> {
    const { link, signal } = this.req;
    for (let i = 0; i < changes.deleted.length; i += deleteBatch) {
      await link.deletePaths(ref, changes.deleted.slice(i, i + deleteBatch), signal);
    }
    if (changes.send.length === 0 && !fresh) return 0;
    const hash = createHash('sha256');
    const tally = { bytes: 0 };
    const body = Readable.from(
      packEntries(this.req.pool.volumePath(ref), changes.send, hash, (n) => {
        tally.bytes += n;
        this.bytesDone += n;
        this.req.onProgress?.(this.bytesDone, Math.max(this.bytesTotal, this.bytesDone));
      }),
      { objectMode: false },
    );
    const remote = await link.sendDelta(ref, body, fresh, signal);
    if (remote.sha256 !== hash.digest('hex') || remote.bytes !== tally.bytes) {
      throw new Error(`pre-copy pass of volume "${ref.name}" arrived damaged on "${this.req.target}" (checksum mismatch)`);
    }
    return tally.bytes;
  }

  private throwIfAborted(): void {
    if (this.req.signal?.aborted) throw new Error('move cancelled');
  }
}

// ---- listing, comparing and packing trees ----

/** Visit every file, directory and symlink under `root` in sorted pre-order, `.` first; entries that vanish while listed are skipped. */
async function walkTree(root: string, visit: (rel: string, st: BigIntStats, kind: Kind, atNs: bigint) => void): Promise<void> {
  const rootAt = nowNs();
  visit('.', await fsp.lstat(root, { bigint: true }), 'dir', rootAt);
  const dir = async (rel: string): Promise<void> => {
    let names: string[];
    try {
      names = (await fsp.readdir(rel === '.' ? root : path.join(root, rel))).sort(byCodeUnits);
    } catch (err) {
      if (isGone(err)) return; // removed by the running instance since its parent was listed
      throw err;
    }
    const atNs = nowNs();
    const children = names.map((n) => (rel === '.' ? n : `${rel}/${n}`));
    const stats = await Promise.all(children.map((c) => lstatOrNull(path.join(root, c))));
    for (const [i, child] of children.entries()) {
      const st = stats[i];
      const kind = st ? kindOf(st) : null;
      if (!st || !kind) continue;
      visit(child, st, kind, atNs);
      if (kind === 'dir') await dir(child);
    }
  };
  await dir('.');
}

/** The manifest of a tree as it is now. */
async function scanTree(root: string): Promise<Manifest> {
  const out: Manifest = new Map();
  await walkTree(root, (rel, st, kind, atNs) => {
    out.set(rel, { kind, size: kind === 'file' ? Number(st.size) : 0, mode: Number(st.mode) & 0o7777, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino, atNs });
  });
  return out;
}

/** What to send so that a target holding `sent` (null: nothing) ends up holding `now`. */
function changesSince(sent: Manifest | null, now: Manifest): Changes {
  const send: string[] = [];
  let bytes = 0;
  for (const [rel, e] of now) {
    const was = sent?.get(rel);
    if (was && unchanged(was, e)) continue;
    send.push(rel);
    bytes += e.size;
  }
  const deleted: string[] = [];
  if (sent) {
    let gone: string | null = null; // a deleted directory takes what is below it along
    for (const [rel, was] of sent) {
      if (gone !== null && rel.startsWith(gone)) continue;
      if (now.get(rel)?.kind === was.kind) continue;
      deleted.push(rel);
      if (was.kind === 'dir') gone = `${rel}/`;
    }
  }
  return { send, deleted, bytes };
}

function unchanged(was: Seen, now: Seen): boolean {
  // Racy: a change in the same clock tick as the look would not have moved the times.
  if (was.ctimeNs >= was.atNs - racyNs) return false;
  return was.kind === now.kind && was.size === now.size && was.mode === now.mode && was.mtimeNs === now.mtimeNs && was.ctimeNs === now.ctimeNs && was.ino === now.ino;
}

/** What to send so that a target whose tree digests to `target` ends up as `source`. */
function compareTrees(source: TreeEntry[], target: TreeEntry[]): Changes {
  const theirs = new Map(target.map((e) => [e.path, e]));
  const ours = new Set(source.map((e) => e.path));
  const send: string[] = [];
  const deleted: string[] = [];
  let bytes = 0;
  for (const e of source) {
    const t = theirs.get(e.path);
    if (t && sameEntry(e, t)) continue;
    if (t && t.kind !== e.kind) deleted.push(e.path);
    send.push(e.path);
    bytes += e.size;
  }
  let gone: string | null = null;
  for (const t of target) {
    if (gone !== null && t.path.startsWith(gone)) continue;
    if (ours.has(t.path)) continue;
    deleted.push(t.path);
    if (t.kind === 'dir') gone = `${t.path}/`;
  }
  return { send, deleted, bytes };
}

function sameEntry(a: TreeEntry, b: TreeEntry): boolean {
  const owners = a.owner === undefined || b.owner === undefined || a.owner === b.owner;
  return a.kind === b.kind && a.mode === b.mode && a.size === b.size && a.content === b.content && owners;
}

/** A file's content digest and the stat it was taken under: the same stat on the target means the same bytes. */
type DigestCache = Map<string, { stat: string; sha256: string }>;

/**
 * Every entry under `root` with its kind, permission bits, owner (as root) and content digest. With a
 * cache, files whose size, times and inode are those of the cached digest are not read again (only for a
 * tree that nothing but this process writes: a staging directory).
 */
async function digestTree(root: string, cache?: DigestCache): Promise<TreeEntry[]> {
  const asRoot = process.getuid?.() === 0;
  const out: TreeEntry[] = [];
  const stats = new Map<string, string>();
  await walkTree(root, (rel, st, kind) => {
    out.push({
      path: rel,
      kind,
      mode: Number(st.mode) & 0o7777,
      ...(asRoot ? { owner: `${st.uid}:${st.gid}` } : {}),
      size: kind === 'file' ? Number(st.size) : 0,
      content: '',
    });
    if (kind === 'file') stats.set(rel, `${st.size}:${st.mtimeNs}:${st.ctimeNs}:${st.ino}`);
  });
  await eachLimited(out, ioParallelism, async (e) => {
    const abs = path.join(root, e.path);
    if (e.kind === 'link') e.content = await fsp.readlink(abs);
    if (e.kind !== 'file') return;
    const stat = stats.get(e.path) ?? '';
    const known = cache?.get(e.path);
    if (known && known.stat === stat) {
      e.content = known.sha256;
      return;
    }
    const { sha256, size } = await hashFile(abs);
    e.content = sha256;
    e.size = size;
    cache?.set(e.path, { stat, sha256 });
  });
  return out;
}

/**
 * The content digest of a file: sha256 of its bytes, or for a file over `readChunk`, sha256 of its chunks'
 * sha256s (both sides of a move digest alike). Hashed by WebCrypto on libuv's thread pool, so several files
 * hash at once and the event loop stays free: this runs while the instance is down.
 */
async function hashFile(abs: string): Promise<{ sha256: string; size: number }> {
  const parts: Buffer[] = [];
  let size = 0;
  await withNoFollow(abs, async (fh) => {
    for (;;) {
      const buf = Buffer.allocUnsafe(readChunk);
      let n = 0;
      while (n < readChunk) {
        const { bytesRead } = await fh.read(buf, n, readChunk - n, size + n);
        if (bytesRead === 0) break;
        n += bytesRead;
      }
      if (n === 0) break;
      size += n;
      parts.push(Buffer.from(await webcrypto.subtle.digest('SHA-256', buf.subarray(0, n))));
      if (n < readChunk) break;
    }
  });
  const sha256 = parts.length === 1 ? (parts[0] as Buffer).toString('hex') : createHash('sha256').update(Buffer.concat(parts)).digest('hex');
  return { sha256, size };
}

/** Target: digests of staging directories, kept from one digest request of a move to the next. */
const stagingDigests = new Map<string, DigestCache>();

/**
 * Target: the digest of a staging tree, reading again only the files written since the last digest of it
 * (asked for once while the instance still runs, so the check after the stop reads only the last pass).
 */
export async function digestStaging(dir: string): Promise<TreeEntry[]> {
  let cache = stagingDigests.get(dir);
  if (!cache) {
    // Staging directories of finished moves are gone by now; their digests go with them.
    for (const known of stagingDigests.keys()) if (!(await lstatPlain(known))) stagingDigests.delete(known);
    cache = new Map();
    stagingDigests.set(dir, cache);
  }
  return digestTree(dir, cache);
}

/** The source's own digest of a volume: every file read again, since only its bytes can prove the copy. */
function digestVolume(root: string): Promise<TreeEntry[]> {
  return digestTree(root);
}

/**
 * A tar stream of `paths` (relative to `root`) as they are at the moment each is read, hashed into `hash`.
 * Entries that vanished or changed kind since they were listed are left out, and a file that shrank while
 * read is padded to the size its header announced: either way the entry changed after it was listed, so
 * the next pass sends it again. Hard links within one stream stay links.
 */
async function* packEntries(root: string, paths: string[], hash: Hash, onBytes: (n: number) => void): AsyncGenerator<Buffer> {
  const emit = (chunk: Buffer): Buffer => {
    hash.update(chunk);
    onBytes(chunk.length);
    return chunk;
  };
  const links = new Map<string, string>();
  for (const rel of paths) {
    const abs = rel === '.' ? root : path.join(root, rel);
    const st = await fsp.lstat(abs).catch((err: unknown) => (isGone(err) ? null : Promise.reject(err)));
    if (!st) continue;
    if (st.isDirectory()) {
      for (const b of headerBlocks({ ...headerOf(st), path: rel === '.' ? './' : `${rel}/`, type: 'Directory', size: 0 })) yield emit(b);
      continue;
    }
    if (st.isSymbolicLink()) {
      const target = await fsp.readlink(abs).catch((err: unknown) => (isGone(err) ? null : Promise.reject(err)));
      if (target === null) continue;
      for (const b of headerBlocks({ ...headerOf(st), path: rel, type: 'SymbolicLink', linkpath: target, size: 0 })) yield emit(b);
      continue;
    }
    if (!st.isFile()) continue;
    const inode = `${st.dev}:${st.ino}`;
    const linkedTo = st.nlink > 1 ? links.get(inode) : undefined;
    if (linkedTo !== undefined) {
      for (const b of headerBlocks({ ...headerOf(st), path: rel, type: 'Link', linkpath: linkedTo, size: 0 })) yield emit(b);
      continue;
    }
    let fh: FileHandle;
    try {
      fh = await fsp.open(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      if (isGone(err) || errorCode(err) === 'ELOOP') continue; // replaced by a link since it was listed
      throw err;
    }
    try {
      const fst = await fh.stat();
      if (!fst.isFile()) continue;
      if (fst.nlink > 1) links.set(inode, rel);
      for (const b of headerBlocks({ ...headerOf(fst), path: rel, type: 'File', size: fst.size })) yield emit(b);
      let left = fst.size;
      let pos = 0;
      let ended = false;
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(readChunk, left));
        const n = ended ? 0 : (await fh.read(buf, 0, buf.length, pos)).bytesRead;
        if (n === 0) {
          ended = true;
          buf.fill(0);
        }
        const chunk = ended ? buf : buf.subarray(0, n);
        pos += chunk.length;
        left -= chunk.length;
        yield emit(chunk);
      }
      const pad = (512 - (fst.size % 512)) % 512;
      if (pad > 0) yield emit(Buffer.alloc(pad));
    } finally {
      await fh.close();
    }
  }
  yield emit(Buffer.alloc(1024)); // two zero blocks end an archive
}

function headerOf(st: Stats): tar.HeaderData {
  return { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime, uname: '', gname: '' };
}

/** The header blocks of one entry, with a pax header first when a field does not fit ustar. */
function headerBlocks(h: tar.HeaderData): Buffer[] {
  const header = new tar.Header(h);
  const out: Buffer[] = [];
  if (header.encode()) {
    out.push(new tar.Pax({ path: h.path, linkpath: h.linkpath, size: h.size, uid: h.uid, gid: h.gid, mtime: h.mtime }).encode());
  }
  if (!header.block) throw new Error(`could not encode a tar header for "${h.path ?? ''}"`);
  out.push(header.block);
  return out;
}

// ---- target side ----

/** An entry a pass wrote, and the owner it must end up with. */
interface Written {
  rel: string;
  type: string;
  uid?: number;
  gid?: number;
}

/**
 * Target: extract one pass into `dir` (a staging directory) and make it exactly what was sent: modes and
 * absolute symlink targets (exactTree: node-tar changes both) and, as root, owners (node-tar never chowns
 * symlinks); then fsync what it wrote, so that the commit after the stop finds the copy already on disk.
 * Returns the stream's digest.
 */
export async function applyPass(dir: string, body: Readable, fresh: boolean): Promise<StreamDigest> {
  const asRoot = process.getuid?.() === 0;
  if (fresh) stagingDigests.delete(dir); // a new staging directory (a retried move reuses the path)
  const written = new Map<string, Written>();
  let refused: string | null = null;
  let warning: string | null = null;
  const counter = new HashCounter();
  const exact = exactTree(dir);
  await pipeline(
    body,
    counter,
    tar.x({
      cwd: dir,
      preserveOwner: asRoot,
      filter: (p, entry) => {
        const rel = relativePath(p);
        if (rel === null || !(entry instanceof tar.ReadEntry)) {
          refused ??= p;
          return false;
        }
        written.set(rel, { rel, type: entry.type, uid: entry.uid, gid: entry.gid });
        return true;
      },
      onReadEntry: exact.record,
      onwarn: (code, message) => {
        if (code !== 'TAR_ENTRY_INFO') warning ??= `${code}: ${String(message)}`;
      },
    }),
  );
  if (refused !== null) throw errors.badRequest(`pre-copy entry "${refused}" would land outside the staging directory`);
  if (warning !== null) throw new Error(`a pre-copy pass could not be applied: ${warning}`);
  // Only entries reached through real directories are touched (a symlink planted on the way could lead anywhere).
  const entries: { w: Written; abs: string }[] = [];
  for (const w of written.values()) if (await insideAsDirs(dir, w.rel)) entries.push({ w, abs: w.rel === '.' ? dir : path.join(dir, w.rel) });
  const owned = (w: Written): w is Written & { uid: number; gid: number } => asRoot && w.uid !== undefined && w.gid !== undefined;
  // Owners before modes: a chown clears the set-id bits that exactTree's chmod then puts back.
  await eachLimited(entries.filter(({ w }) => owned(w) && (w.type === 'File' || w.type === 'Directory')), ioParallelism, async ({ w, abs }) => {
    await withNoFollow(abs, async (fh) => {
      const st = await fh.stat();
      if (owned(w) && (st.uid !== w.uid || st.gid !== w.gid)) await fh.chown(w.uid, w.gid);
    });
  });
  await exact.apply();
  for (const { w, abs } of entries) if (owned(w) && w.type === 'SymbolicLink') await fsp.lchown(abs, w.uid, w.gid);
  const parents = new Set(entries.filter(({ w }) => w.rel !== '.').map(({ abs }) => path.dirname(abs)));
  await eachLimited(entries.filter(({ w }) => w.type === 'File' || w.type === 'Directory'), ioParallelism, ({ abs }) => withNoFollow(abs, (fh) => fh.sync()));
  await eachLimited([...parents], ioParallelism, syncPath);
  return counter.digest();
}

/** Run `fn` on `abs` opened for reading without following a symlink. */
async function withNoFollow(abs: string, fn: (fh: FileHandle) => Promise<void>): Promise<void> {
  const fh = await fsp.open(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    await fn(fh);
  } finally {
    await fh.close();
  }
}

/** Target: remove `paths` (relative, as the source listed them) from `dir`; refuses any that would leave it. */
export async function deletePaths(dir: string, paths: string[]): Promise<void> {
  const checked = paths.map((p) => {
    const rel = relativePath(p);
    if (rel === null || rel === '.') throw errors.badRequest(`cannot delete "${p}" from a staging directory`);
    return rel;
  });
  for (const rel of checked) {
    // Through a parent that is not a real directory the path is not inside the staging tree: nothing to remove.
    if (!(await insideAsDirs(dir, rel))) continue;
    await fsp.rm(path.join(dir, rel), { recursive: true, force: true });
  }
}

/** A tar entry path as a clean relative path (`.` for the root), or null if it is absolute or climbs out. */
function relativePath(p: string): string | null {
  if (p.includes('\0') || p.startsWith('/')) return null;
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.some((s) => s === '..')) return null;
  return parts.length === 0 ? '.' : parts.join('/');
}

/** True if every parent of `rel` below `dir` is a real directory (no symlink leads out of the tree). */
async function insideAsDirs(dir: string, rel: string): Promise<boolean> {
  const parts = rel === '.' ? [] : rel.split('/').slice(0, -1);
  let at = dir;
  for (const part of parts) {
    at = path.join(at, part);
    const st = await lstatPlain(at);
    if (!st?.isDirectory()) return false;
  }
  return true;
}

/** Hashes and counts what flows through it. */
class HashCounter extends Transform {
  private readonly hash = createHash('sha256');
  private bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
  digest(): StreamDigest {
    return { sha256: this.hash.digest('hex'), bytes: this.bytes };
  }
}

// ---- small helpers ----

function refKey(ref: VolumeRef): string {
  return `${ref.type}/${ref.project}/${ref.name}`;
}

function kindOf(st: BigIntStats): Kind | null {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'link';
  return null;
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

/** Sorting by UTF-16 code units: both sides must list a tree in the same order, whatever the locale. */
function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function errorCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

function isGone(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

async function lstatOrNull(p: string): Promise<BigIntStats | null> {
  try {
    return await fsp.lstat(p, { bigint: true });
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
}

async function lstatPlain(p: string): Promise<Stats | null> {
  try {
    return await fsp.lstat(p);
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
}

async function syncPath(p: string): Promise<void> {
  const fh = await fsp.open(p, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Run `fn` over `items`, at most `limit` at once. */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
