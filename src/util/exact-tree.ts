// Exact trees from node-tar extractions. node-tar (1) creates files and directories with the entry's mode
// filtered through the process umask (a rootfs's /tmp 1777 arrives as 1755, a 0666 file as 0644), gives
// every directory owner rwx (it rewrites the entry's mode to `mode | 0700` so that it can write into it:
// a rootfs's 0555 /proc arrives as 0755), and the chown it does afterwards as root clears setuid/setgid
// bits; (2) rewrites absolute symlink targets as relative ones (`/lib/x` becomes `lib/x`, which resolves
// elsewhere, so a rootfs's absolute links break). A rootfs unpacked from an image, or a volume received in
// a move, must be exactly what was sent, so both are put right once the extraction has ended: modes as
// the archive gave them (read before node-tar rewrites them), deepest entries first, so that a directory
// loses its write or search permission only once everything below it is in place.

import { chmod, lchown, lstat, lutimes, readlink, realpath, symlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { ReadEntry } from 'tar';

/** Collects what an extraction changes; `record` is the extraction's `onReadEntry`. */
export interface ExactTree {
  record: (entry: ReadEntry) => void;
  /** Set modes exactly and restore absolute symlink targets; call once the extraction has finished. */
  apply: () => Promise<void>;
}

/** Put right what node-tar changes while extracting into `cwd`. */
export function exactTree(cwd: string): ExactTree {
  const modes: { entry: ReadEntry; mode: number }[] = [];
  const links: { entry: ReadEntry; target: string }[] = [];
  return {
    // Runs before node-tar's own handling of the entry (which strips the link target and widens a
    // directory's mode), so both are read as the archive has them.
    record: (entry) => {
      if (entry.type === 'SymbolicLink' && typeof entry.linkpath === 'string' && entry.linkpath.startsWith('/')) {
        links.push({ entry, target: entry.linkpath });
      }
      if (typeof entry.mode !== 'number') return;
      if (entry.type === 'File' || entry.type === 'OldFile' || entry.type === 'ContiguousFile' || entry.type === 'Directory') {
        modes.push({ entry, mode: entry.mode & 0o7777 });
      }
    },
    apply: async () => {
      const root = path.resolve(cwd);
      const realRoot = await realpath(root);
      /** The entry's path if node-tar extracted it inside `cwd`, reached through no symlink. */
      const extracted = async (entry: ReadEntry): Promise<string | null> => {
        const abs = entry.absolute;
        if (!abs) return null; // refused or filtered
        const rel = path.relative(root, abs);
        if (rel.startsWith('..') || path.isAbsolute(rel)) return null;
        // node-tar refuses to write through a symlink; never change anything through one either (a link
        // planted by an earlier entry could point anywhere on the host): the parent must resolve to itself.
        if (rel !== '') {
          const parent = await realpath(path.dirname(abs)).catch(() => null);
          if (parent !== path.join(realRoot, path.dirname(rel))) return null;
        }
        return abs;
      };
      // The tree is private while it is extracted (a staging directory, a new root volume): nothing swaps a
      // checked entry for something else before it is changed.
      // Links first, while every directory is still writable to the owner.
      for (const { entry, target } of links) {
        const abs = await extracted(entry);
        if (!abs) continue;
        const st = await lstat(abs).catch(() => null);
        if (!st?.isSymbolicLink() || (await readlink(abs)) === target) continue;
        await unlink(abs);
        await symlink(target, abs);
        await lchown(abs, st.uid, st.gid).catch(() => undefined);
        await lutimes(abs, st.atime, st.mtime).catch(() => undefined);
      }
      // Deepest first: as a non-root owner, a 0500 or 0000 directory would keep the chmod from reaching
      // what is below it. The sort is stable, so entries of one depth keep the archive's order.
      const depth = (e: ReadEntry): number => (typeof e.absolute === 'string' ? e.absolute.split('/').length : 0);
      const deepestFirst = modes.map((m, i) => ({ ...m, i, depth: depth(m.entry) })).sort((a, b) => b.depth - a.depth || a.i - b.i);
      for (const { entry, mode } of deepestFirst) {
        const abs = await extracted(entry);
        if (!abs) continue;
        const st = await lstat(abs).catch(() => null);
        if (!st || st.isSymbolicLink() || (st.mode & 0o7777) === mode) continue;
        await chmod(abs, mode);
      }
    },
  };
}
