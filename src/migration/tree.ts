// Trees of a volume as moves see them, shared by cold moves (move.ts) and pre-copy (precopy.ts): listing
// a tree in a stable order, packing entries as a tar stream (hashing each file as it is read), unpacking a
// stream into a staging directory exactly as sent (modes, owners, links) and durably, and digesting and
// comparing trees entry by entry (kind, mode, owner as root, size, content).

import { spawn } from 'node:child_process';
import { createHash, webcrypto, type Hash } from 'node:crypto';
import { constants, promises as fsp, type BigIntStats, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Transform, Writable, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { errors } from '../errors/index.js';
import type { StreamDigest, TreeEntry } from '../cluster/internal.js';
import { entryFootprint, poolOf, type VolumeFootprint, type VolumeRef } from '../storage/driver.js';
import { exactTree } from '../util/exact-tree.js';

/** Bytes read from a file at a time, packing or hashing (16 files at once stay within 16 MiB). */
const readChunk = 1024 * 1024;
/** Files fsynced, or hashed, at once: enough to keep the disk queue busy. */
const ioParallelism = 16;

/** The kinds of entries a move carries; sockets, FIFOs and devices are skipped, as tar skips them in cold moves. */
export type Kind = 'file' | 'dir' | 'link';

/** What the source saw of one entry when it listed it for a pass. */
export interface Seen {
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
export type Manifest = Map<string, Seen>;

/** What one pass sends for one volume. */
export interface Changes {
  send: string[];
  deleted: string[];
  /** File bytes in `send`. */
  bytes: number;
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
export async function scanTree(root: string): Promise<Manifest> {
  const out: Manifest = new Map();
  await walkTree(root, (rel, st, kind, atNs) => {
    out.set(rel, { kind, size: kind === 'file' ? Number(st.size) : 0, mode: Number(st.mode) & 0o7777, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino, atNs });
  });
  return out;
}
/** What to send so that a target whose tree digests to `target` ends up as `source`. */
export function compareTrees(source: TreeEntry[], target: TreeEntry[]): Changes {
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

/**
 * The first way in which `target` (what landed) is not `source` (what was sent), in the user's words
 * (`"a/b": 2093056 bytes on the target, 3000000 sent`), or null if they are the same tree.
 */
export function firstDifference(source: TreeEntry[], target: TreeEntry[]): string | null {
  const diff = compareTrees(source, target);
  const at = diff.send[0] ?? diff.deleted[0];
  if (at === undefined) return null;
  const sent = source.find((e) => e.path === at);
  const got = target.find((e) => e.path === at);
  if (!sent) return `"${at}": on the target, not sent`;
  if (!got) return `"${at}": missing on the target`;
  const octal = (mode: number): string => mode.toString(8).padStart(4, '0');
  if (got.kind !== sent.kind) return `"${at}": a ${got.kind} on the target, a ${sent.kind} sent`;
  if (got.size !== sent.size) return `"${at}": ${got.size} bytes on the target, ${sent.size} sent`;
  if (got.mode !== sent.mode) return `"${at}": mode ${octal(got.mode)} on the target, ${octal(sent.mode)} sent`;
  if (got.owner !== sent.owner) return `"${at}": owner ${got.owner ?? '?'} on the target, ${sent.owner ?? '?'} sent`;
  return `"${at}": content differs`;
}

/** What a copy of trees listed as `manifests` takes on a pool (see `entryFootprint`); links count as inline. */
export function manifestFootprint(manifests: Manifest[]): VolumeFootprint {
  const total: VolumeFootprint = { bytes: 0, inodes: 0 };
  for (const m of manifests) {
    for (const e of m.values()) {
      total.bytes += entryFootprint(e.kind, e.size);
      total.inodes += 1;
    }
  }
  return total;
}

/** What copies of `refs` take on each pool they go to (`manifests[i]` is the tree of `refs[i]`). */
export function poolFootprints(refs: readonly VolumeRef[], manifests: Manifest[]): Record<string, VolumeFootprint> {
  const out: Record<string, VolumeFootprint> = {};
  refs.forEach((ref, i) => {
    const part = manifestFootprint(manifests[i] === undefined ? [] : [manifests[i]]);
    const into = (out[poolOf(ref)] ??= { bytes: 0, inodes: 0 });
    into.bytes += part.bytes;
    into.inodes += part.inodes;
  });
  return out;
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

/** Target: forget the digests of a staging directory that is made anew (a fresh stream received into its path). */
export function forgetStagingDigest(dir: string): void {
  stagingDigests.delete(dir);
}

/** The source's own digest of a volume: every file read again, since only its bytes can prove the copy. */
export function digestVolume(root: string): Promise<TreeEntry[]> {
  return digestTree(root);
}

/** What `packEntries` reports as it goes. */
export interface PackOptions {
  /** Every byte of the stream, as it is produced (progress). */
  onBytes: (n: number) => void;
  /** Hashes the whole stream (pre-copy passes compare it with what the target received). */
  streamHash?: Hash;
  /**
   * Receives each entry as it was packed: kind, mode, owner (as root), size and the sha256 of a file's
   * bytes as they were read, in the same pass that packs them (cold copies compare it with what landed).
   */
  onEntry?: (entry: TreeEntry) => void;
  /**
   * The kind each path had when it was listed: an entry whose kind changed since (a file become a
   * directory) is left out, because the receiver still holds the old kind and would refuse it. The
   * listing then records the old kind as sent, so the next pass deletes it and sends the new one.
   */
  listed?: ReadonlyMap<string, { kind: Kind }>;
}

/** Entries looked at (lstat, opened, small files read whole) ahead of the one being packed. */
const packAhead = 16;
/** Stream chunks smaller than this are gathered into one of about this size (fewer, larger writes to the wire). */
const batchBytes = 256 * 1024;

/** One entry as looked at ahead of its turn in the stream. */
interface Looked {
  /** Its stat at the look (fstat of what was opened, lstat of a symlink); null if it was gone. */
  st: Stats | null;
  /** A symlink's target (null if it went away meanwhile). */
  target?: string | null;
  /** A regular file opened without following links, and its stat once open (not set: gone, or no longer a file). */
  file?: { fh: FileHandle | null; st: Stats; data: Buffer | null; read: number };
}

/**
 * Look at one entry ahead of its turn: open it (without following a link, without blocking on a FIFO) and
 * fstat it; a regular file no larger than a chunk is read whole and closed, a larger one is left open for
 * its turn; a symlink (which cannot be opened so) is lstat'ed and its target read. So many small files are
 * read several at a time, each in four trips to the thread pool, not five one after another.
 */
async function lookAt(abs: string): Promise<Looked> {
  let fh: FileHandle;
  try {
    fh = await fsp.open(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (isGone(err)) return { st: null };
    // A symlink (ELOOP), or something that cannot be opened for reading (a socket: ENXIO): by its lstat.
    const st = await fsp.lstat(abs).catch((e: unknown) => (isGone(e) ? null : Promise.reject(e)));
    if (st?.isSymbolicLink()) return { st, target: await fsp.readlink(abs).catch((e: unknown) => (isGone(e) ? null : Promise.reject(e))) };
    if (st?.isFile() || st?.isDirectory()) throw err; // it could not be read
    return { st }; // gone, or a kind that is not packed
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      return { st };
    }
    if (st.size > readChunk) return { st, file: { fh, st, data: null, read: 0 } };
    const data = Buffer.allocUnsafe(st.size);
    let read = 0;
    while (read < st.size) {
      const { bytesRead } = await fh.read(data, read, st.size - read, read);
      if (bytesRead === 0) break; // it shrank since its stat: the rest is padded
      read += bytesRead;
    }
    await fh.close();
    return { st, file: { fh: null, st, data, read } };
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
}

/** Close what a look left open (an entry not packed after all). */
async function release(looked: Promise<Looked>): Promise<void> {
  const l = await looked.catch(() => null);
  await l?.file?.fh?.close().catch(() => undefined);
}

/**
 * A tar stream of `paths` (relative to `root`) as they are at the moment each is read. Entries that
 * vanished or changed kind since they were listed are left out, and a file that shrank while read is
 * padded to the size its header announced: either way the entry changed after it was listed, so the next
 * pass sends it again (and its `onEntry` digest, of the bytes read, differs from what the target wrote).
 * Hard links within one stream stay links. Up to `packAhead` entries are looked at (and small files read)
 * ahead of the one being packed, and small pieces of the stream go out gathered into larger chunks.
 */
export async function* packEntries(root: string, paths: string[], options: PackOptions): AsyncGenerator<Buffer> {
  const { onBytes, streamHash, onEntry, listed } = options;
  const changedKind = (rel: string, now: Kind): boolean => {
    const was = listed?.get(rel)?.kind;
    return was !== undefined && was !== now;
  };
  const asRoot = process.getuid?.() === 0;
  let gathered: Buffer[] = [];
  let gatheredBytes = 0;
  /** Queue a piece; answers the chunks to send now (a gathered batch, or a large piece after what was gathered). */
  const put = (chunk: Buffer): Buffer[] => {
    streamHash?.update(chunk);
    onBytes(chunk.length);
    if (chunk.length >= batchBytes) return [...flush(), chunk];
    gathered.push(chunk);
    gatheredBytes += chunk.length;
    return gatheredBytes >= batchBytes ? flush() : [];
  };
  const flush = (): Buffer[] => {
    if (gathered.length === 0) return [];
    const out = gathered.length === 1 ? (gathered[0] as Buffer) : Buffer.concat(gathered, gatheredBytes);
    gathered = [];
    gatheredBytes = 0;
    return [out];
  };
  const describe = (rel: string, st: Stats, kind: Kind, size: number, content: string): void => {
    onEntry?.({ path: rel, kind, mode: st.mode & 0o7777, ...(asRoot ? { owner: `${st.uid}:${st.gid}` } : {}), size, content });
  };
  /** The first path packed of each inode with more than one link, and the digest of its bytes. */
  const links = new Map<string, { rel: string; sha256: string }>();
  const absOf = (rel: string): string => (rel === '.' ? root : path.join(root, rel));
  const ahead: Promise<Looked>[] = [];
  let next = 0;
  const lookAhead = (): void => {
    while (ahead.length < packAhead && next < paths.length) {
      const looked = lookAt(absOf(paths[next++] as string));
      looked.catch(() => undefined); // awaited at its turn; a failure must not go unhandled before that
      ahead.push(looked);
    }
  };
  try {
    for (const rel of paths) {
      lookAhead();
      const { st, target, file } = await (ahead.shift() as Promise<Looked>);
      lookAhead();
      if (!st) continue;
      if (st.isDirectory()) {
        if (changedKind(rel, 'dir')) continue;
        for (const b of headerBlocks({ ...headerOf(st), path: rel === '.' ? './' : `${rel}/`, type: 'Directory', size: 0 })) yield* put(b);
        describe(rel, st, 'dir', 0, '');
        continue;
      }
      if (st.isSymbolicLink()) {
        if (changedKind(rel, 'link') || target === null || target === undefined) continue;
        for (const b of headerBlocks({ ...headerOf(st), path: rel, type: 'SymbolicLink', linkpath: target, size: 0 })) yield* put(b);
        describe(rel, st, 'link', 0, target);
        continue;
      }
      if (!st.isFile() || changedKind(rel, 'file') || !file) {
        await file?.fh?.close();
        continue;
      }
      const inode = `${st.dev}:${st.ino}`;
      const linkedTo = st.nlink > 1 ? links.get(inode) : undefined;
      if (linkedTo !== undefined) {
        await file.fh?.close();
        for (const b of headerBlocks({ ...headerOf(st), path: rel, type: 'Link', linkpath: linkedTo.rel, size: 0 })) yield* put(b);
        describe(rel, st, 'file', st.size, linkedTo.sha256);
        continue;
      }
      const fst = file.st;
      const content = onEntry ? createHash('sha256') : null;
      try {
        for (const b of headerBlocks({ ...headerOf(fst), path: rel, type: 'File', size: fst.size })) yield* put(b);
        if (file.data) {
          // Read whole at the look: the bytes read, then zeros for what it lost since its stat.
          const read = file.data.subarray(0, file.read);
          content?.update(read);
          if (file.read < fst.size) file.data.fill(0, file.read);
          if (fst.size > 0) yield* put(file.data);
        } else if (file.fh) {
          let left = fst.size;
          let pos = 0;
          let ended = false;
          while (left > 0) {
            const buf = Buffer.allocUnsafe(Math.min(readChunk, left));
            const n = ended ? 0 : (await file.fh.read(buf, 0, buf.length, pos)).bytesRead;
            if (n === 0) {
              ended = true;
              buf.fill(0);
            }
            const chunk = ended ? buf : buf.subarray(0, n);
            if (!ended) content?.update(chunk); // the bytes read, not the padding of a file that shrank
            pos += chunk.length;
            left -= chunk.length;
            yield* put(chunk);
          }
        }
      } finally {
        await file.fh?.close();
      }
      const pad = (512 - (fst.size % 512)) % 512;
      if (pad > 0) yield* put(Buffer.alloc(pad));
      const sha256 = content ? content.digest('hex') : '';
      if (fst.nlink > 1) links.set(inode, { rel, sha256 });
      describe(rel, fst, 'file', fst.size, sha256);
    }
    yield* put(Buffer.alloc(1024)); // two zero blocks end an archive
    yield* flush();
  } finally {
    // Stopped early (the stream was destroyed, or a look failed): close what was opened ahead.
    await Promise.all(ahead.splice(0).map(release));
  }
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

/** An entry a stream wrote, and the owner it must end up with. */
interface Written {
  rel: string;
  type: string;
  uid?: number;
  gid?: number;
  /** For a hard link: the path (relative) of the file it links to. */
  linkTo?: string;
}

/** A copy could not be written as sent (a write failed, or node-tar warned); `code` is the errno code if any. */
export class UnpackError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'UnpackError';
  }
}

/**
 * Target: extract a pre-copy pass into `dir` (a staging directory, new with `fresh`) with node-tar and make
 * it exactly what was sent: modes and absolute symlink targets (exactTree: node-tar changes both) and, as
 * root, owners (node-tar never chowns symlinks); then fsync what it wrote. Any write error or warning of
 * node-tar (a full pool, a path it refused) stops the extraction at once and fails it: node-tar would
 * otherwise only warn, and go on, and a file whose write failed or fell short would be left cut. Returns
 * the stream's digest (what the source compares with what it sent).
 */
async function unpack(dir: string, body: Readable, fresh: boolean, signal?: AbortSignal): Promise<StreamDigest> {
  const asRoot = process.getuid?.() === 0;
  if (fresh) stagingDigests.delete(dir); // a new staging directory (a retried move reuses the path)
  const written = new Map<string, Written>();
  const relOf = new WeakMap<tar.ReadEntry, string>();
  let refused: string | null = null;
  let failure: UnpackError | null = null;
  const counter = new HashCounter();
  const exact = exactTree(dir);
  const extraction = tar.x({
    cwd: dir,
    preserveOwner: asRoot,
    // Directories that exist already (an earlier pass) get the mode node-tar gives those it creates, owner
    // rwx, so that this pass can write into a read-only one; exactTree puts the final mode back afterwards.
    chmod: true,
    filter: (p, entry) => {
      const rel = relativePath(p);
      if (rel === null || !(entry instanceof tar.ReadEntry)) {
        refused ??= p;
        return false;
      }
      const linkTo = entry.type === 'Link' && typeof entry.linkpath === 'string' ? (relativePath(entry.linkpath) ?? undefined) : undefined;
      written.set(rel, { rel, type: entry.type, uid: entry.uid, gid: entry.gid, linkTo });
      relOf.set(entry, rel);
      return true;
    },
    onReadEntry: exact.record,
    // A file's bytes go to the disk in writes of up to a chunk, gathered from the network's small pieces (one
    // write at a time, each a trip to the thread pool). node-tar pipes the entry through what this returns;
    // its type names only its own class.
    transform: (entry) => (relOf.has(entry) && entry.type === 'File' ? (new FileChunks() as unknown as tar.ReadEntry) : undefined),
    onwarn: (code, message, data) => {
      if (code === 'TAR_ENTRY_INFO' || failure) return; // info: an absolute link target made relative (exactTree restores it)
      const errno = typeof data.code === 'string' && data.code !== code ? data.code : undefined;
      failure = new UnpackError(`${code}: ${String(message)}`, errno);
      extraction.abort(failure);
    },
  });
  try {
    await pipeline(body, counter, extraction);
  } catch (err) {
    if (failure) throw failure;
    throw err;
  }
  if (failure) throw failure;
  if (refused !== null) throw errors.badRequest(`entry "${refused}" would land outside the staging directory`);
  const entries = await reachable(dir, written);
  const owned = (w: Written): w is Written & { uid: number; gid: number } => asRoot && w.uid !== undefined && w.gid !== undefined;
  // Owners before modes: a chown clears the set-id bits that exactTree's chmod then puts back. In a fresh
  // staging directory node-tar created every file and directory itself, as root, and gave each its owner;
  // only entries that were already there (a later pre-copy pass) may have kept an old one.
  const reused = fresh ? [] : entries.filter(({ w }) => owned(w) && (w.type === 'File' || w.type === 'Directory'));
  await eachLimited(reused, ioParallelism, async ({ w, abs }) => {
    await withNoFollow(abs, async (fh) => {
      const st = await fh.stat();
      if (owned(w) && (st.uid !== w.uid || st.gid !== w.gid)) await fh.chown(w.uid, w.gid);
    });
  });
  await exact.apply();
  for (const { w, abs } of entries) if (owned(w) && w.type === 'SymbolicLink') await fsp.lchown(abs, w.uid, w.gid);
  await settle(dir, entries, null, signal);
  return counter.digest();
}

/** The entries a stream wrote that are reached through real directories only (a symlink planted on the way could lead anywhere). */
async function reachable(dir: string, written: Map<string, Written>): Promise<{ w: Written; abs: string }[]> {
  const dirs = new Map<string, Promise<boolean>>();
  /** True if `rel` (a directory below `dir`) and each of its parents is a real directory; asked once per directory. */
  const realDir = (rel: string): Promise<boolean> => {
    let known = dirs.get(rel);
    if (!known) {
      const parent = path.dirname(rel);
      known = (parent === '.' ? Promise.resolve(true) : realDir(parent)).then(async (ok) => ok && ((await lstatPlain(path.join(dir, rel)))?.isDirectory() ?? false));
      dirs.set(rel, known);
    }
    return known;
  };
  const all = [...written.values()];
  const inside = new Array<boolean>(all.length).fill(false);
  await eachLimited([...all.keys()], ioParallelism, async (i) => {
    const rel = (all[i] as Written).rel;
    const parent = rel === '.' ? '.' : path.dirname(rel);
    inside[i] = parent === '.' || (await realDir(parent));
  });
  return all.filter((_, i) => inside[i]).map((w) => ({ w, abs: w.rel === '.' ? dir : path.join(dir, w.rel) }));
}

/**
 * Trees of at least this many entries are made durable with one sync of their file system (syncfs) rather
 * than an fsync of every file and directory: 10,000 small files took 1.6 s one by one and 0.6 s at once on
 * this machine kind. A small tree keeps the fsyncs, which do not wait for unrelated writes on the pool.
 */
const syncWholeFromEntries = 256;

/**
 * Make what a stream wrote durable (every file and directory fsynced, or a large tree's whole file system
 * synced), then, given the digests of the files' bytes (`contents`), read each entry back (kind, mode,
 * owner as root, size) with its digest: a write that fell short shows as a size that is not the one sent.
 * A `signal` (the move discarded) ends it at once, even while a sync waits for the disk: a loaded disk can
 * hold a syncfs for tens of seconds, and the discard that removes the staging must not wait for it.
 */
async function settle(dir: string, entries: { w: Written; abs: string }[], contents: Map<string, string> | null, signal?: AbortSignal): Promise<{ landed: TreeEntry[] | null; syncMs: number }> {
  const landedWanted = contents !== null;
  const asRoot = process.getuid?.() === 0;
  const t0 = Date.now();
  const stats = new Map<string, Stats>();
  signal?.throwIfAborted();
  if (entries.length >= syncWholeFromEntries) {
    await unlessAborted(syncFileSystem(dir), signal);
  } else {
    const parents = new Set(entries.filter(({ w }) => w.rel !== '.').map(({ abs }) => path.dirname(abs)));
    const files = entries.filter(({ w }) => w.type !== 'SymbolicLink');
    await unlessAborted(
      eachLimited(files, ioParallelism, ({ w, abs }) => {
        signal?.throwIfAborted();
        return withNoFollow(abs, async (fh) => {
          await fh.sync();
          if (landedWanted) stats.set(w.rel, await fh.stat());
        }).catch((err: unknown) => {
          // A hard link or file that is not there (or not a file) is simply missing from what landed.
          if (!landedWanted || !(isGone(err) || errorCode(err) === 'ELOOP')) throw err;
        });
      }).then(() => eachLimited([...parents], ioParallelism, (dirPath) => {
        signal?.throwIfAborted();
        return syncPath(dirPath);
      })),
      signal,
    );
  }
  const syncMs = Date.now() - t0;
  if (!landedWanted) return { landed: null, syncMs };
  const landed: (TreeEntry | null)[] = new Array<TreeEntry | null>(entries.length).fill(null);
  await eachLimited([...entries.keys()], ioParallelism, async (i) => {
    signal?.throwIfAborted();
    const { w, abs } = entries[i] as { w: Written; abs: string };
    // lstat: what is there now, a symbolic link as itself (a link where a file was sent is a difference).
    const st = stats.get(w.rel) ?? (await lstatPlain(abs));
    if (!st) return;
    const kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'link' : null;
    if (!kind) return;
    const content = kind === 'link' ? await fsp.readlink(abs) : kind === 'dir' ? '' : (contents?.get(w.linkTo ?? w.rel) ?? '');
    landed[i] = { path: w.rel, kind, mode: st.mode & 0o7777, ...(asRoot ? { owner: `${st.uid}:${st.gid}` } : {}), size: kind === 'file' ? st.size : 0, content };
  });
  return { landed: landed.filter((e): e is TreeEntry => e !== null), syncMs };
}

/**
 * syncfs(2) of the file system holding `dir`, through coreutils' `sync -f` (Node has no binding): it writes
 * back every dirty page and inode of that file system and reports a write-back error not yet reported.
 */
/**
 * `work`, unless `signal` fires first: then the reason is thrown at once and `work` goes on alone, unheeded
 * (an fsync or a syncfs cannot be called back; it only flushes, so the caller may remove the files meanwhile).
 */
async function unlessAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  signal.throwIfAborted();
  let onAbort: (() => void) | null = null;
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  work.catch(() => undefined); // a failure after the abort has nobody left to tell
  try {
    return await Promise.race([work, aborted]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

async function syncFileSystem(dir: string): Promise<void> {
  const child = spawn('sync', ['-f', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let complaint = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (complaint.length < complaintLimit) complaint += chunk;
  });
  const { code, failed } = await new Promise<{ code: number | null; failed: Error | null }>((resolve) => {
    child.once('error', (err) => resolve({ code: null, failed: err }));
    child.once('close', (c) => resolve({ code: c, failed: null }));
  });
  if (failed) throw new UnpackError(`could not run sync: ${failed.message}`, errorCode(failed));
  if (code !== 0) throw new UnpackError(`sync -f failed (exit ${String(code)}): ${complaint.trim()}`, complaint.includes('Input/output error') ? 'EIO' : undefined);
}

/**
 * Target: apply one pre-copy pass to `dir` (see `unpack`), so that the commit after the stop finds the copy
 * already on disk. Returns the stream's digest. `signal`: the move was discarded (see `settle`).
 */
export async function applyPass(dir: string, body: Readable, fresh: boolean, signal?: AbortSignal): Promise<StreamDigest> {
  return unpack(dir, body, fresh, signal);
}

/**
 * Target: receive a cold copy of a volume into a fresh staging directory `dir` and answer what landed,
 * entry by entry, once it is durable, and how long making it durable took. The stream is written by GNU
 * tar (node-tar makes each file several trips to the thread pool, one after another: five times slower
 * with many small files) while node-tar's parser reads the same bytes, to list the entries and hash each
 * file's bytes as they go to tar; every entry is then read back from the disk after the fsync (see `settle`,
 * which `signal`, the move discarded, ends at once).
 */
export async function receiveCopy(dir: string, body: Readable, signal?: AbortSignal): Promise<{ landed: TreeEntry[]; syncMs: number }> {
  stagingDigests.delete(dir); // a new staging directory (a retried move reuses the path)
  const { written, contents } = await extractNative(dir, body);
  const { landed, syncMs } = await settle(dir, await reachable(dir, written), contents, signal);
  return { landed: landed ?? [], syncMs };
}

/** Bytes of a command's complaint kept for an error message. */
const complaintLimit = 64 * 1024;

/** The errno code behind GNU tar's complaint, when it names one a caller acts on (a full pool). */
function tarErrno(complaint: string): string | undefined {
  if (complaint.includes('No space left on device')) return 'ENOSPC';
  if (complaint.includes('Disk quota exceeded')) return 'EDQUOT';
  return undefined;
}

/**
 * Extract a tar stream into `dir` with GNU tar (`tar -x`: modes exactly, and as root owners, numeric),
 * listing what it holds (node-tar's parser on the same bytes) with the sha256 of each file's bytes. Any
 * complaint of tar (a write error, a full pool: UnpackError with its errno code) stops it at once and fails
 * the copy, as does a failure of the parser or an entry that would land outside `dir`; tar has ended
 * (killed if need be) before this settles.
 */
async function extractNative(dir: string, body: Readable): Promise<{ written: Map<string, Written>; contents: Map<string, string> }> {
  const asRoot = process.getuid?.() === 0;
  const written = new Map<string, Written>();
  const contents = new Map<string, string>();
  let refused: string | null = null;
  const parser = new tar.Parser({
    strict: true,
    onReadEntry: (entry) => {
      const rel = relativePath(entry.path);
      if (rel === null) {
        refused ??= entry.path;
        entry.resume();
        return;
      }
      const linkTo = entry.type === 'Link' && typeof entry.linkpath === 'string' ? (relativePath(entry.linkpath) ?? undefined) : undefined;
      written.set(rel, { rel, type: entry.type, uid: entry.uid, gid: entry.gid, linkTo });
      if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'ContiguousFile') {
        entry.resume();
        return;
      }
      const hash = createHash('sha256');
      entry.on('data', (chunk: Buffer) => hash.update(chunk));
      entry.on('end', () => contents.set(rel, hash.digest('hex')));
    },
  });
  let parsing: Error | null = null;
  const parsed = new Promise<void>((resolve) => {
    parser.on('error', (err: Error) => {
      parsing ??= err;
      resolve();
    });
    parser.on('end', () => resolve());
    parser.on('close', () => resolve());
  });
  // Timestamps in the future (another member's clock) are not worth a warning; every other word of tar is a
  // failure (it goes on after a write error and only says so at the end).
  const args = ['-x', '-f', '-', '-C', dir, '--numeric-owner', '--same-permissions', asRoot ? '--same-owner' : '--no-same-owner', '--warning=no-timestamp'];
  const child = spawn('tar', args, { stdio: ['pipe', 'ignore', 'pipe'] });
  let complaint = '';
  let tarEnded = false;
  let tarFailed = false;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (complaint.length < complaintLimit) complaint += chunk;
    if (!tarFailed) {
      tarFailed = true; // the first complaint (a write that failed, a full pool) stops the copy at once
      child.kill('SIGKILL');
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; failed: Error | null }>((resolve) => {
    child.once('error', (err) => resolve({ code: null, signal: null, failed: err }));
    child.once('close', (code, signal) => resolve({ code, signal, failed: null }));
  });
  const tee = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      parser.write(chunk);
      cb(null, chunk);
    },
    flush(cb) {
      parser.end();
      cb();
    },
  });
  // tar exits once it has read the archive's end, maybe before the last bytes of the stream are written to
  // it: what follows then goes nowhere, and its closed stdin is not an error (its exit status tells).
  // A tar that failed (a full pool) stops the stream at once, rather than after the rest of it went nowhere.
  child.once('exit', (code) => {
    tarEnded = true;
    if (code !== 0) tarFailed = true;
  });
  child.stdin.on('error', () => undefined);
  const stopped = (): Error | null => (tarFailed ? new Error('tar -x ended early') : null);
  const toTar = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (tarEnded || child.stdin.destroyed || child.stdin.write(chunk)) {
        cb(stopped());
        return;
      }
      const go = (): void => {
        child.stdin.off('drain', go);
        child.off('exit', go);
        cb(stopped());
      };
      child.stdin.once('drain', go);
      child.once('exit', go);
    },
    final(cb) {
      if (!tarEnded && !child.stdin.destroyed) child.stdin.end();
      cb();
    },
  });
  let fed: unknown = null;
  try {
    await pipeline(body, tee, toTar);
  } catch (err) {
    fed = err;
    child.kill('SIGKILL'); // the stream broke (or was discarded): nothing more may be written into dir
  }
  const { code, signal, failed } = await exited;
  if (failed) throw new UnpackError(`could not run tar: ${failed.message}`, errorCode(failed));
  // tar's own failure (a full pool, say) says more than the broken pipe it caused.
  if (code !== 0 || complaint !== '') {
    const why = complaint.trim() || (fed instanceof Error ? fed.message : '');
    throw new UnpackError(`tar -x failed (${signal ?? `exit ${String(code)}`}): ${why}`, tarErrno(complaint) ?? errorCode(fed));
  }
  if (fed) throw fed;
  await parsed;
  if (parsing) throw new UnpackError(`the stream is not a valid tar archive: ${(parsing as Error).message}`, undefined);
  if (refused !== null) throw errors.badRequest(`entry "${refused}" would land outside the staging directory`);
  return { written, contents };
}

/** A file's bytes on their way from the tar stream to the disk, gathered into pieces of up to `readChunk` (the network hands them over 16 KiB at a time). */
class FileChunks extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  constructor() {
    super({ highWaterMark: readChunk });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= readChunk) this.release();
    cb();
  }
  override _flush(cb: TransformCallback): void {
    this.release();
    cb();
  }
  private release(): void {
    if (this.pending.length === 0) return;
    this.push(this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes));
    this.pending = [];
    this.pendingBytes = 0;
  }
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

/** Hashes and counts what flows through it: both ends of a streamed pass compare its digest. */
export class HashCounter extends Transform {
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
