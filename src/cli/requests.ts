// Flags and arguments → API requests. Pure functions, so the mapping is tested without a server and the
// command files only send what these build and print what comes back.

import type { JsonObject } from '../client/json.js';

/** Append `?target=<member>` (or `&target=`) when a member is named, as `lxc --target` does. */
export function withTarget(path: string, target: string | undefined): string {
  if (target === undefined || target === '') return path;
  return `${path}${path.includes('?') ? '&' : '?'}target=${encodeURIComponent(target)}`;
}

/** One path segment of a resource name, escaped. */
export function seg(name: string): string {
  return encodeURIComponent(name);
}

/** Parse a flag value that must be a whole number ≥ 1, naming the flag when it is not. */
export function parsePositiveInt(value: string, flag: string): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1) {
    throw new Error(`Invalid value for ${flag}: "${value}" (expected a whole number of at least 1)`);
  }
  return Number(value);
}

/** Parse `--parallel`: `auto`, or a whole number of at least 1. */
export function parseParallel(value: string): number | 'auto' {
  if (value.trim() === 'auto') return 'auto';
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1) {
    throw new Error(`Invalid value for --parallel: "${value}" (expected "auto" or a whole number of at least 1)`);
  }
  return Number(value);
}

/** Parse a flag value that must be an integer (negative allowed, e.g. `--timeout -1`). */
export function parseInteger(value: string, flag: string): number {
  if (!/^-?\d+$/.test(value.trim())) throw new Error(`Invalid value for ${flag}: "${value}" (expected an integer)`);
  return Number(value);
}

/** Split `key=value` (the value may itself contain `=`). */
export function parseKeyValue(text: string): [string, string] {
  const i = text.indexOf('=');
  if (i <= 0) throw new Error(`Bad key=value pair: "${text}"`);
  return [text.slice(0, i), text.slice(i + 1)];
}

/** Collect repeated `-c key=value` flags into a config map. */
export function parseConfigPairs(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const [k, v] = parseKeyValue(pair);
    out[k] = v;
  }
  return out;
}

/** The options of `roost cluster evacuate|restore`. */
export interface MemberStateOptions {
  action: 'evacuate' | 'restore';
  mode?: string;
  dryRun?: boolean;
  parallel?: number | 'auto';
}

/** Body of `POST /1.0/cluster/members/<m>/state`; flags not given are left out so the server defaults apply. */
export function evacuateRequestBody(opts: MemberStateOptions): JsonObject {
  const body: JsonObject = { action: opts.action };
  if (opts.mode !== undefined && opts.mode !== '') body.mode = opts.mode;
  if (opts.dryRun) body.dry_run = true;
  if (opts.parallel !== undefined) body.parallel = opts.parallel;
  return body;
}

/** Where `roost config` reads or writes: the server (`/1.0`) or one instance. */
export type ConfigTarget = { kind: 'server' } | { kind: 'instance'; name: string };

/** Parsed `roost config get|set|unset` arguments; `values` is what a PATCH sends (unset: the key → ""). */
export interface ConfigArgs {
  target: ConfigTarget;
  key: string;
  values: Record<string, string>;
}

const configUsage = {
  get: 'roost config get [<instance>] <key>',
  unset: 'roost config unset [<instance>] <key>',
  set: 'roost config set [<instance>] <key> <value> (or <key>=<value>...)',
};

/**
 * Tell the server form from the instance form the way `lxc config` does: by argument count, and for
 * `set` by whether the arguments are `key=value` pairs.
 */
export function parseConfigArgs(verb: 'get' | 'set' | 'unset', args: string[]): ConfigArgs {
  const usage = (): Error => new Error(`Invalid arguments; usage: ${configUsage[verb]}`);
  if (verb === 'get' || verb === 'unset') {
    const [a, b] = args;
    if (a === undefined || args.length > 2) throw usage();
    const target: ConfigTarget = b === undefined ? { kind: 'server' } : { kind: 'instance', name: a };
    const key = b ?? a;
    return { target, key, values: verb === 'unset' ? { [key]: '' } : {} };
  }
  const [first, second, third] = args;
  if (first === undefined) throw usage();
  let target: ConfigTarget;
  let values: Record<string, string>;
  if (first.includes('=')) {
    target = { kind: 'server' };
    values = parseConfigPairs(args);
  } else if (second === undefined) {
    throw usage();
  } else if (args.length === 2 && !second.includes('=')) {
    target = { kind: 'server' };
    values = { [first]: second };
  } else if (args.length === 3 && third !== undefined && !second.includes('=')) {
    target = { kind: 'instance', name: first };
    values = { [second]: third };
  } else if (args.slice(1).every((a) => a.includes('='))) {
    target = { kind: 'instance', name: first };
    values = parseConfigPairs(args.slice(1));
  } else {
    throw usage();
  }
  return { target, key: Object.keys(values)[0] ?? '', values };
}

/** The API path that `roost config` reads and patches for `target`. */
export function configPath(target: ConfigTarget): string {
  return target.kind === 'server' ? '/1.0' : `/1.0/instances/${seg(target.name)}`;
}

/** Split `roost launch [<image>] <name>`: with one argument it is the name. */
export function parseLaunchArgs(first: string | undefined, second: string | undefined): { image?: string; name: string } {
  if (first === undefined) throw new Error('Instance name is required; usage: roost launch [<image>] <name>');
  return second === undefined ? { name: first } : { image: first, name: second };
}

/** The options of `roost init|launch`. */
export interface CreateInstanceOptions {
  name: string;
  image?: string;
  type?: string;
  config?: Record<string, string>;
  empty?: boolean;
  /** `-p` flags in order; none: the `default` profile. */
  profiles?: string[];
  /** `-s <pool>`: the root disk goes on this storage pool (LXD sets the instance's own `root` device). */
  storage?: string;
}

/** Body of `POST /1.0/instances`, as `lxc init` sends it; `type` is left to the server unless given. */
export function instanceCreateBody(opts: CreateInstanceOptions): JsonObject {
  if (opts.empty && opts.image !== undefined) throw new Error('--empty cannot be combined with an image name');
  const body: JsonObject = {
    name: opts.name,
    source: opts.image === undefined ? { type: 'none' } : { type: 'image', alias: opts.image },
    config: opts.config ?? {},
    devices: opts.storage === undefined ? {} : { root: { type: 'disk', path: '/', pool: opts.storage } },
    profiles: opts.profiles !== undefined && opts.profiles.length > 0 ? opts.profiles : ['default'],
  };
  if (opts.type !== undefined) body.type = opts.type;
  return body;
}

/** Body of `PUT /1.0/instances/<n>/state`; timeouts default as in `lxc` (start 0, stop/restart -1). */
export function instanceStateBody(
  action: 'start' | 'stop' | 'restart',
  opts: { force?: boolean; timeout?: number } = {},
): JsonObject {
  return { action, timeout: opts.timeout ?? (action === 'start' ? 0 : -1), force: opts.force ?? false, stateful: false };
}

/** `roost move <name> [<new-name>] [--target <m>]` as one `POST /1.0/instances/<name>`. */
export function moveRequest(name: string, opts: { newName?: string; target?: string }): { path: string; body: JsonObject } {
  if (opts.target === undefined && opts.newName === undefined) {
    throw new Error('Nothing to do: give --target <member> (or a new name)');
  }
  const path = withTarget(`/1.0/instances/${seg(name)}`, opts.target);
  const body: JsonObject = { name: opts.newName ?? name };
  if (opts.target !== undefined) body.migration = true;
  return { path, body };
}

/** Body of `POST /1.0/storage-pools/<pool>/volumes/custom`. */
export function volumeCreateBody(name: string, config: Record<string, string> = {}): JsonObject {
  return { name, type: 'custom', config };
}

/**
 * `roost storage volume attach <pool> <volume> <instance> [<device>] <path>` → the device to add; as in
 * `lxc`, the device is named after the volume when no name is given.
 */
export function volumeAttachDevice(
  pool: string,
  volume: string,
  rest: string[],
): { device: string; config: Record<string, string> } {
  const [a, b] = rest;
  if (a === undefined || rest.length > 2) {
    throw new Error('Invalid arguments; usage: roost storage volume attach <pool> <volume> <instance> [<device>] <path>');
  }
  const device = b === undefined ? volume : a;
  const path = b ?? a;
  return { device, config: { type: 'disk', pool, source: volume, path } };
}

/** The `?type=` list of `/1.0/events` for `roost monitor --type` flags (empty: every type). */
export function monitorTypes(types: string[]): string[] {
  return types.flatMap((t) => t.split(',')).map((t) => t.trim()).filter((t) => t !== '');
}
