// `roost up` / `roost down`: a local multi-member cluster on this host, on the embedded store or a local etcd.

import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { rmSync } from 'node:fs';
import { LocalCluster } from '../daemon/local-cluster.js';
import { cliConfigPath, readCliConfig, updateCliConfig, writeCliConfig } from '../client/config.js';
import { resolveGroup } from '../daemon/permissions.js';

/** Options of `roost up`. */
export interface UpOptions {
  members: number;
  dir?: string;
  /** The store of a new cluster: `sqlite` (default) or `etcd` (a local 3-node etcd under `<dir>/etcd`). */
  store?: string;
  /** Group allowed to use the members' sockets (roostd's `--group`); default: the one recorded, else the user's. */
  group?: string;
}

/** Options of `roost down`. */
export interface DownOptions {
  dir?: string;
  purge: boolean;
}

/** Where local clusters live unless --dir says otherwise. */
export function defaultClusterDir(env: Record<string, string | undefined> = process.env): string {
  return join(env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local', 'share'), 'roost');
}

/** The cluster `roost down` means without --dir: the one the CLI talks to, else the default. */
function currentClusterDir(): string {
  try {
    const config = readCliConfig();
    if (config?.member) return dirname(config.member);
  } catch {
    // A broken CLI config must not stop `down`.
  }
  return defaultClusterDir();
}

/** Start (or complete) a local cluster; prints one line per member. */
export async function upCommand(options: UpOptions, out: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<void> {
  if (!Number.isInteger(options.members) || options.members < 1 || options.members > 64) {
    throw new Error('--members must be a whole number from 1 to 64');
  }
  if (options.store !== undefined && options.store !== 'sqlite' && options.store !== 'etcd') {
    throw new Error(`--store must be sqlite or etcd, not "${options.store}"`);
  }
  if (options.group !== undefined) await resolveGroup(options.group); // an unknown group fails here, not in every member's log
  const cluster = new LocalCluster(resolve(options.dir ?? defaultClusterDir()), { store: options.store, group: options.group });
  const results = await cluster.up(options.members);
  for (const r of results) {
    const words = { joined: 'added and started', started: 'started', running: 'already running', removed: 'no longer a member (removed); forgotten' }[r.action];
    out(`Member ${r.name}: ${words} (${join(cluster.dir, r.name)})`);
  }
  const first = results[0];
  if (first) {
    // Other settings (remotes, the default remote) stay as they are.
    updateCliConfig((config) => ({ ...config, member: join(cluster.dir, first.name) }));
    const { store } = await cluster.state();
    if (LocalCluster.storeKind(store) === 'etcd') out(`Store: local etcd in ${cluster.etcd.dir} (${store})`);
    out(`Cluster ready in ${cluster.dir}; roost commands talk to ${first.name} (set ROOST_DIR=<member dir> for another).`);
  }
}

/** Stop a local cluster's members and instances; with purge, remove its directory. */
export async function downCommand(options: DownOptions, out: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<void> {
  const cluster = new LocalCluster(resolve(options.dir ?? currentClusterDir()));
  const stopped = await cluster.down(options.purge);
  out(stopped.length === 0 ? `No members in ${cluster.dir}` : `Stopped ${stopped.join(', ')}`);
  if (options.purge) {
    out(`Removed ${cluster.dir}`);
    const config = readCliConfig();
    if (config?.member && dirname(config.member) === cluster.dir) {
      // The local remote is gone; the remotes stay (without any, the file goes as before).
      const rest = { ...config };
      delete rest.member;
      if (Object.keys(rest.remotes).length === 0 && rest.defaultRemote === undefined) rmSync(cliConfigPath(), { force: true });
      else writeCliConfig(rest);
    }
  }
}
