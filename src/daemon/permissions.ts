// Who may read what a member keeps on disk. The store holds the cluster's private key, volumes hold users'
// data, and the unix socket is trusted like root (through it, an instance runs any command): so everything
// is the daemon user's alone, except that the socket's group may reach and use the socket (LXD's
// `--group`). The daemon runs with umask 077, sets these modes on what it creates, and at every start
// tightens what an older install left looser.

import { execFile } from 'node:child_process';
import { chmod, chown, mkdir } from 'node:fs/promises';
import { promisify } from 'node:util';

/** The mask the daemon runs with: whatever it creates without an explicit mode is its user's alone. */
export const daemonUmask = 0o077;

/**
 * A member's directory: its owner, plus traversal (not listing) for the socket's group, which must reach
 * `unix.socket` inside; everything else inside is private by its own mode.
 */
export const memberDirMode = 0o710;

/** Directories only the daemon reads: instance runtime dirs (logs, pid files), images, LXC's path. */
export const privateDirMode = 0o700;

/** Files only the daemon reads: pid file, daemon log, store files (the cluster's key lives in the store). */
export const privateFileMode = 0o600;

/** The unix socket: read-write for the daemon user and the socket's group (connecting needs write). */
export const socketMode = 0o660;

/**
 * Directories that others may pass through but not list, as LXD's `/var/lib/lxd` and `storage-pools`: the
 * directory of a local cluster (`roost up`), so that group members reach the member sockets, and a member's
 * `storage-pools`. What they hold is private by its own mode.
 */
export const traversableDirMode = 0o711;

const run = promisify(execFile);

/**
 * The group id for `--group`: a number as is, else a name looked up through the system's name service
 * (`getent`, which also sees LDAP and other NSS sources, unlike reading /etc/group).
 */
export async function resolveGroup(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  try {
    const { stdout } = await run('getent', ['group', group]);
    const gid = Number(stdout.split(':')[2]);
    if (Number.isInteger(gid) && gid >= 0) return gid;
  } catch {
    // getent exits 2 for an unknown group; reported below.
  }
  throw new Error(`unknown group "${group}" (--group takes a group name or id)`);
}

/** Creates a directory with `mode` if missing, and sets `mode` (and the group, if given) on it either way. */
export async function ensureDir(path: string, mode: number, gid?: number): Promise<void> {
  await mkdir(path, { recursive: true, mode });
  await restrict(path, mode, gid);
}

/** Sets `mode` (and the group, if given) on a path if it exists: tightening what an older install left. */
export async function restrict(path: string, mode: number, gid?: number): Promise<void> {
  try {
    if (gid !== undefined) await chown(path, -1, gid);
    await chmod(path, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
