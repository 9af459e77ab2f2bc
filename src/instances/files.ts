// An instance's files as `lxc file push|pull` sees them, read and written from the host without ever leaving
// the instance's root. A path is walked one component at a time from an open directory, each component opened
// with O_NOFOLLOW through /proc/self/fd (openat semantics), so nothing the workload swaps in can redirect a
// lookup. Symlinks are followed as the instance would follow them: an absolute target starts again at the
// instance's root, `..` never climbs above it. The request path itself may not contain `..`.

import { constants, promises as fsp, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ApiError, errors } from '../errors/index.js';
import type { FilesRoot } from './driver.js';

/** As Linux (and so LXD's sftp server) limits symlinks followed in one lookup. */
const maxSymlinks = 40;
/** Mode of a new file when the client gives none (as LXD's sftp server creates them). */
const defaultFileMode = 0o644;
/** Mode of a new directory when the client gives none (LXD's default for directories). */
const defaultDirectoryMode = 0o750;

/** LXD's three file types (`X-LXD-type`). */
export type FileType = 'file' | 'directory' | 'symlink';

/** What LXD's file API tells about an entry: type, permission bits, owner, size and modification time. */
export interface FileInfo {
  type: FileType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  modified: Date;
}

/** The answer to a read: a file's content, a directory's entry names, or a symlink's target. */
export type FileContent =
  | { info: FileInfo; kind: 'file'; content: Readable }
  | { info: FileInfo; kind: 'directory'; entries: string[] }
  | { info: FileInfo; kind: 'symlink'; target: string };

/** Owner and permission bits for a new entry; -1 (or absent) leaves the default. */
export interface NewEntry {
  mode?: number;
  uid?: number;
  gid?: number;
}

/** A directory held open during a walk, and its path inside the instance. */
interface OpenDir {
  handle: FileHandle;
  path: string;
}

/** Where a walk ended: the open directory holding the last component (its name), or a directory itself. */
type Walked = { parent: OpenDir; name: string } | { self: OpenDir };

/** Files of one instance, confined to its root. */
export class InstanceFiles {
  constructor(private readonly files: FilesRoot) {}

  /** Read an entry without following a final symlink (LXD's GET answers the link itself). */
  async read(instancePath: string): Promise<FileContent> {
    return this.withWalk(instancePath, false, async (at) => {
      if ('self' in at) return this.readDirectory(at.self.handle, statInfo(await at.self.handle.stat()));
      const full = inDir(at.parent, at.name);
      const st = await fsp.lstat(full);
      const info = statInfo(st);
      if (info.type === 'symlink') {
        // LXD answers the absolute path the link points to (cleaned, not resolved further).
        const target = await fsp.readlink(full);
        return { info, kind: 'symlink', target: path.posix.resolve(path.posix.dirname(path.posix.join(at.parent.path, at.name)), target) };
      }
      if (info.type === 'directory') {
        const dir = await fsp.open(full, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
        try {
          return await this.readDirectory(dir, info);
        } finally {
          await dir.close();
        }
      }
      if (!st.isFile()) throw errors.badRequest(`"${instancePath}" is not a regular file, directory or symlink`);
      // O_NONBLOCK: should a FIFO have been swapped in since the lstat, opening it must not hang.
      const handle = await regularFile(full, constants.O_RDONLY);
      return { info, kind: 'file', content: handle.createReadStream() };
    });
  }

  /**
   * Write a regular file (following a final symlink inside the instance, as LXD does). A new file gets
   * `entry`'s mode and owner before any byte is written; an existing one keeps its own. `append` adds to
   * an existing file instead of replacing its content.
   */
  async writeFile(instancePath: string, content: Readable, entry: NewEntry, append: boolean): Promise<void> {
    await this.withWalk(instancePath, true, async (at) => {
      if ('self' in at) throw errors.badRequest(`"${instancePath}" is a directory`);
      const full = inDir(at.parent, at.name);
      let handle: FileHandle;
      if (append) {
        handle = await regularFile(full, constants.O_WRONLY | constants.O_APPEND);
      } else {
        const created = await fsp
          .open(full, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
          .catch((err: unknown) => (errnoOf(err) === 'EEXIST' ? null : Promise.reject(err)));
        if (created) {
          try {
            await created.chmod(entry.mode !== undefined && entry.mode >= 0 ? entry.mode : defaultFileMode);
            await setOwner(created, entry);
          } catch (err) {
            await created.close();
            await fsp.unlink(full).catch(() => undefined);
            throw err;
          }
          handle = created;
        } else {
          handle = await regularFile(full, constants.O_WRONLY | constants.O_TRUNC);
        }
      }
      await pipeline(content, handle.createWriteStream());
    });
  }

  /** Create a directory (nothing to do if the path exists, as LXD answers). */
  async mkdir(instancePath: string, entry: NewEntry): Promise<void> {
    await this.withWalk(instancePath, true, async (at) => {
      if ('self' in at) return;
      const full = inDir(at.parent, at.name);
      if (await fsp.lstat(full).then(() => true, () => false)) return;
      await fsp.mkdir(full, 0o700);
      const dir = await fsp.open(full, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        await dir.chmod(entry.mode !== undefined && entry.mode >= 0 ? entry.mode : defaultDirectoryMode);
        await setOwner(dir, entry);
      } finally {
        await dir.close();
      }
    });
  }

  /** Create a symlink to `target` (kept as given: it is resolved inside the instance when used). */
  async symlink(instancePath: string, target: string): Promise<void> {
    if (target === '' || target.includes('\0')) throw errors.badRequest('Invalid symlink target');
    await this.withWalk(instancePath, false, async (at) => {
      if ('self' in at) throw errors.conflict(`"${instancePath}" already exists`);
      const full = inDir(at.parent, at.name);
      if ((await fsp.readlink(full).catch(() => null)) === target) return;
      await fsp.symlink(target, full);
    });
  }

  /** Remove a file, symlink or empty directory. */
  async remove(instancePath: string): Promise<void> {
    await this.withWalk(instancePath, false, async (at) => {
      if ('self' in at) throw errors.badRequest(`"${instancePath}" cannot be removed`);
      const full = inDir(at.parent, at.name);
      if ((await fsp.lstat(full)).isDirectory()) await fsp.rmdir(full);
      else await fsp.unlink(full);
    });
  }

  private async readDirectory(dir: FileHandle, info: FileInfo): Promise<FileContent> {
    const entries = (await fsp.readdir(`/proc/self/fd/${dir.fd}`)).sort();
    return { info, kind: 'directory', entries };
  }

  /** Walk to `instancePath`, run `fn` there, close every directory opened; errno failures become LXD's answers. */
  private async withWalk<T>(instancePath: string, followFinal: boolean, fn: (at: Walked) => Promise<T>): Promise<T> {
    const opened: FileHandle[] = [];
    try {
      return await fn(await this.walk(instancePath, followFinal, opened));
    } catch (err) {
      throw apiErrorOf(err);
    } finally {
      await Promise.all(opened.map((h) => h.close().catch(() => undefined)));
    }
  }

  private async walk(instancePath: string, followFinal: boolean, opened: FileHandle[]): Promise<Walked> {
    const queue = requestComponents(instancePath);
    const openDir = async (hostPath: string, nofollow: boolean, at: string): Promise<OpenDir> => {
      const handle = await fsp.open(hostPath, constants.O_RDONLY | constants.O_DIRECTORY | (nofollow ? constants.O_NOFOLLOW : 0));
      opened.push(handle);
      return { handle, path: at };
    };
    const root = await openDir(this.files.root, false, '/');
    const stack: OpenDir[] = [root];
    let links = 0;
    for (;;) {
      const top = stack[stack.length - 1] as OpenDir;
      const name = queue.shift();
      if (name === undefined) return { self: top };
      if (name === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      const childPath = path.posix.join(top.path, name);
      const mount = this.files.mounts.find((m) => path.posix.resolve('/', m.path) === childPath);
      if (mount) {
        stack.push(await openDir(mount.source, false, childPath));
        continue;
      }
      const last = queue.length === 0;
      const full = inDir(top, name);
      if (last && !followFinal) return { parent: top, name };
      if (last) {
        const st = await fsp.lstat(full).catch((err: unknown) => (errnoOf(err) === 'ENOENT' ? null : Promise.reject(err)));
        if (!st?.isSymbolicLink()) return { parent: top, name };
      } else {
        try {
          stack.push(await openDir(full, true, childPath));
          continue;
        } catch (err) {
          const code = errnoOf(err);
          if (code !== 'ELOOP' && code !== 'ENOTDIR') throw err;
          if (!(await fsp.lstat(full)).isSymbolicLink()) throw err;
        }
      }
      // A symlink: its target replaces it, resolved inside the instance.
      if (++links > maxSymlinks) throw Object.assign(new Error('Too many levels of symbolic links'), { code: 'ELOOP' });
      const target = await fsp.readlink(full);
      if (target.startsWith('/')) stack.splice(1);
      queue.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
    }
  }
}

/** The components of a path from a request: `..` is refused outright, so a request names no way out. */
function requestComponents(instancePath: string): string[] {
  if (instancePath.includes('\0')) throw errors.badRequest('Invalid path: it contains a NUL byte');
  const parts = instancePath.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw errors.badRequest(`Invalid path "${instancePath}": ".." is not allowed`);
  return parts;
}

/** The host path of `name` inside an open directory (the kernel resolves it like openat). */
function inDir(dir: OpenDir, name: string): string {
  return `/proc/self/fd/${dir.handle.fd}/${name}`;
}

/** Open a regular file without following a final symlink and without blocking on a FIFO; refuses anything else. */
async function regularFile(hostPath: string, flags: number): Promise<FileHandle> {
  const handle = await fsp.open(hostPath, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  if (!(await handle.stat()).isFile()) {
    await handle.close();
    throw errors.badRequest('Only regular files, directories and symlinks can be transferred');
  }
  return handle;
}

async function setOwner(handle: FileHandle, entry: NewEntry): Promise<void> {
  const uid = entry.uid ?? -1;
  const gid = entry.gid ?? -1;
  if (uid >= 0 || gid >= 0) await handle.chown(uid, gid);
}

function statInfo(st: Stats): FileInfo {
  const type: FileType = st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'file';
  return { type, mode: type === 'symlink' ? 0o777 : st.mode & 0o777, uid: st.uid, gid: st.gid, size: st.size, modified: st.mtime };
}

function errnoOf(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** LXD's answers for filesystem errors (its SmartError: not found → 404 "Not Found", permission → 403). */
function apiErrorOf(err: unknown): unknown {
  if (err instanceof ApiError) return err;
  switch (errnoOf(err)) {
    case 'ENOENT':
    case 'ENOTDIR':
      return errors.notFound('Not Found');
    case 'EACCES':
    case 'EPERM':
      return errors.forbidden('Forbidden');
    case 'ELOOP':
      return errors.badRequest('Too many levels of symbolic links');
    case 'EEXIST':
      return errors.conflict('File exists');
    case 'EISDIR':
      return errors.badRequest('Is a directory');
    case 'ENOTEMPTY':
      return errors.badRequest('Directory not empty');
    default:
      return err;
  }
}
