// The CLI's configuration, as `lxc` keeps its own: remotes (clusters reached over HTTPS, each pinned to
// the certificate its members present), which one is the default, and the `local` remote, which is the
// member on this host (`ROOST_DIR`, else the member `roost up` recorded). Kept in
// `~/.config/roost/config.json` (XDG), readable by the user only, next to the client's own certificate.

import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { z } from 'zod';

/** Environment variables as the CLI sees them (process.env, or a test's own map). */
export type CliEnv = Record<string, string | undefined>;

/** The remote every CLI run has: the member on this host, through its unix socket. */
export const localRemote = 'local';

/** A cluster reached over HTTPS. */
export interface RemoteConfig {
  /** `https://host:port`. */
  addr: string;
  /** The certificate (PEM) its members present; connections are pinned to it, whatever the host name. */
  certificate: string;
}

/** The CLI config file's content. */
export interface CliConfig {
  /** The member directory of the `local` remote (written by `roost up`). */
  member?: string;
  /** The remote commands use when a name has no `<remote>:` (default `local`). */
  defaultRemote?: string;
  remotes: Record<string, RemoteConfig>;
}

const remoteSchema = z.object({ addr: z.string().regex(/^https:\/\/\S+$/, 'must be https://host:port'), certificate: z.string().min(1) });
const fileSchema = z.object({
  member: z.string().min(1).optional(),
  default_remote: z.string().min(1).optional(),
  remotes: z.record(z.string(), remoteSchema).optional(),
});

/** The message users see when no member can be found, naming both ways to fix it. */
export const noMemberMessage = 'no Roost member configured; run "roost up" or set ROOST_DIR';

/** The directory of the CLI's files, following XDG so tests and users can relocate it. */
export function cliConfigDir(env: CliEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'roost');
}

/** Path of the CLI config file. */
export function cliConfigPath(env: CliEnv = process.env): string {
  return join(cliConfigDir(env), 'config.json');
}

/** The CLI config, or null when none was written yet; a corrupt file is an error naming it. */
export function readCliConfig(env: CliEnv = process.env): CliConfig | null {
  const path = cliConfigPath(env);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`${path} is not valid JSON; fix it or run "roost up" again`);
  }
  const r = fileSchema.safeParse(parsed);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new Error(`${path} is not a Roost CLI config (${issue ? `${issue.path.join('.')}: ${issue.message}` : 'unreadable'}); fix it or remove it`);
  }
  return {
    ...(r.data.member ? { member: r.data.member } : {}),
    ...(r.data.default_remote ? { defaultRemote: r.data.default_remote } : {}),
    remotes: r.data.remotes ?? {},
  };
}

/**
 * Write the CLI config whole (readable by the user only: it names the clusters this user may administer).
 * Written to a temporary file and renamed, so a reader never sees half of it.
 */
export function writeCliConfig(config: Omit<CliConfig, 'remotes'> & { remotes?: CliConfig['remotes'] }, env: CliEnv = process.env): void {
  const remotes = config.remotes ?? {};
  const path = cliConfigPath(env);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const file = {
    ...(config.member ? { member: config.member } : {}),
    ...(config.defaultRemote && config.defaultRemote !== localRemote ? { default_remote: config.defaultRemote } : {}),
    ...(Object.keys(remotes).length > 0 ? { remotes } : {}),
  };
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  chmodSync(temp, 0o600);
  renameSync(temp, path);
}

/** Change the CLI config with `change` (read, changed, written back), keeping whatever else it holds. */
export function updateCliConfig(change: (config: CliConfig) => CliConfig, env: CliEnv = process.env): CliConfig {
  const next = change(readCliConfig(env) ?? { remotes: {} });
  writeCliConfig(next, env);
  return next;
}

/** The unix socket of the local member; `ROOST_DIR` wins so one shell can address any member. */
export function resolveSocketPath(env: CliEnv = process.env): string {
  if (env.ROOST_DIR) return join(env.ROOST_DIR, 'unix.socket');
  const config = readCliConfig(env);
  if (config?.member) return join(config.member, 'unix.socket');
  throw new Error(noMemberMessage);
}

/** The remote a name without `<remote>:` goes to. */
export function defaultRemote(env: CliEnv = process.env): string {
  return readCliConfig(env)?.defaultRemote ?? localRemote;
}

/** A name as `lxc` reads it: `[<remote>:]<name>`, the remote known (or `local`), the name possibly empty. */
export interface RemoteName {
  remote: string;
  name: string;
}

/**
 * Split `[<remote>:]<name>` as `lxc` does: text before the first colon names a remote, which must exist;
 * without a colon the whole text is the name, on the default remote.
 */
export function parseRemoteName(raw: string, env: CliEnv = process.env): RemoteName {
  const config = readCliConfig(env);
  const i = raw.indexOf(':');
  if (i < 0) return { remote: config?.defaultRemote ?? localRemote, name: raw };
  const remote = raw.slice(0, i);
  if (remote !== localRemote && !(config && remote in config.remotes)) throw new Error(`The remote "${remote}" doesn't exist`);
  return { remote, name: raw.slice(i + 1) };
}
