// Every config key Roost knows, declared once: name, scope, validator, default and a one-line doc.
// API validation, defaults and docs all read this registry.

import { parseBytes, parseSeconds } from '../util/units.js';

/** Where a key may be set. */
export type ConfigScope = 'server' | 'member' | 'instance' | 'volume' | 'pool';

/** One declared key (or, with `prefix`, a family of keys such as `user.*`). */
export interface ConfigKey {
  name: string;
  scope: ConfigScope;
  /** True for a family: `name` is a prefix ending in a dot. */
  prefix?: boolean;
  default: string;
  doc: string;
  /** Returns null if the value is acceptable, else the reason. */
  validate(value: string): string | null;
  /**
   * Set by Roost only: a user request may send the current value back (as `lxc config edit` does) but
   * never change, add or remove it, because Roost acts on it (restore pulls home what names it as origin).
   */
  readOnly?: true;
  /**
   * A storage pool key that differs per member (LXD's `NodeSpecificStorageConfig`): set only with `--target`
   * while the pool is defined, never in the cluster-wide create or config.
   */
  memberSpecific?: true;
}

const any = (): string | null => null;
const oneOf =
  (...choices: string[]) =>
  (v: string): string | null =>
    choices.includes(v) ? null : `must be one of ${choices.map((c) => `"${c}"`).join(', ')}`;
const positiveInt = (v: string): string | null =>
  /^\d+$/.test(v) && Number(v) > 0 ? null : 'must be a positive integer';
const nonNegativeInt = (v: string): string | null => (/^\d+$/.test(v) ? null : 'must be a non-negative integer');
const seconds = (v: string): string | null => {
  const s = parseSeconds(v);
  return s !== null && s > 0 ? null : 'must be a duration in seconds greater than 0';
};
const bytes = (v: string): string | null => (parseBytes(v) !== null ? null : 'must be a size such as 512MiB or 2GB');
const bool = oneOf('true', 'false');

/** The registry. */
export const configKeys: readonly ConfigKey[] = [
  // Server (cluster-wide)
  { name: 'cluster.offline_threshold', scope: 'server', default: '20', validate: seconds,
    doc: 'Seconds without a heartbeat after which a member is considered Offline.' },
  { name: 'cluster.healing_threshold', scope: 'server', default: '0', validate: nonNegativeInt,
    doc: 'Seconds without a heartbeat after which the drainer heals a member (evacuates it while it is offline); 0 turns healing off (as LXD).' },
  { name: 'cluster.evacuation_parallelism', scope: 'server', default: 'auto', validate: (v) => (v === 'auto' ? null : positiveInt(v)),
    doc: 'How many data copies an evacuation or restore runs at once unless the request says otherwise: a number, or `auto` (from 2, following the throughput the copies get, up to 16).' },
  { name: 'core.shutdown_action', scope: 'server', default: 'shutdown', validate: oneOf('shutdown', 'evacuate'),
    doc: 'What a member does when its daemon gets SIGTERM (the host shutting down): stop (`shutdown`), or first evacuate itself through the drainer (`evacuate`, as Incus).' },
  { name: 'core.shutdown_timeout', scope: 'server', default: '5', validate: positiveInt,
    doc: 'Minutes a member shutting down waits for its own evacuation before it stops anyway (as LXD\'s key of that name).' },
  { name: 'user.', prefix: true, scope: 'server', default: '', validate: any, doc: 'Free-form user key.' },

  // Member
  { name: 'scheduler.instance', scope: 'member', default: 'all', validate: oneOf('all', 'manual'),
    doc: 'all: the member may receive automatically placed instances; manual: only with --target.' },
  { name: 'capacity.cpu', scope: 'member', default: '', validate: positiveInt,
    doc: 'CPUs this member offers to instances (default: the host CPU count).' },
  { name: 'capacity.memory', scope: 'member', default: '', validate: bytes,
    doc: 'Memory this member offers to instances (default: the host memory).' },
  { name: 'capacity.disk', scope: 'member', default: '', validate: bytes,
    doc: 'Disk this member offers in its pool (default: the pool free space).' },
  { name: 'user.', prefix: true, scope: 'member', default: '', validate: any, doc: 'Free-form user key.' },

  // Instance
  { name: 'process.command', scope: 'instance', default: '', validate: any,
    doc: 'Command line run by /bin/sh for a process instance, in its root volume.' },
  { name: 'environment.', prefix: true, scope: 'instance', default: '', validate: any,
    doc: 'Environment variable passed to the instance.' },
  { name: 'sim.start_delay', scope: 'instance', default: '10', validate: nonNegativeInt,
    doc: 'Milliseconds a simulated (type sim) instance takes to start.' },
  { name: 'sim.stop_delay', scope: 'instance', default: '10', validate: nonNegativeInt,
    doc: 'Milliseconds a simulated (type sim) instance takes to stop cleanly; longer than the stop timeout: it is killed then.' },
  { name: 'limits.cpu', scope: 'instance', default: '', validate: positiveInt,
    doc: 'CPUs reserved for the instance (placement counts it against capacity.cpu).' },
  { name: 'limits.memory', scope: 'instance', default: '', validate: bytes,
    doc: 'Memory reserved for the instance (placement counts it against capacity.memory).' },
  { name: 'cluster.evacuate', scope: 'instance', default: 'auto',
    validate: oneOf('auto', 'migrate', 'live-migrate', 'stop', 'force-stop'),
    doc: 'What evacuation does with the instance: auto, migrate, live-migrate, stop or force-stop.' },
  { name: 'boot.host_shutdown_timeout', scope: 'instance', default: '30', validate: nonNegativeInt,
    doc: 'Seconds to wait for a clean shutdown before the instance is killed.' },
  { name: 'boot.autostart', scope: 'instance', default: '', validate: bool,
    doc: 'Accepted for LXD compatibility; Roost restarts what was running.' },
  { name: 'placement.group', scope: 'instance', default: '', validate: any,
    doc: 'Instances of one group are spread over distinct members where possible.' },
  { name: 'security.privileged', scope: 'instance', default: 'false', validate: bool,
    doc: 'Accepted for LXD compatibility.' },
  { name: 'volatile.evacuate.origin', scope: 'instance', default: '', validate: any, readOnly: true,
    doc: 'The member an evacuation moved the instance from (set by Roost).' },
  { name: 'volatile.cluster.group', scope: 'instance', default: '', validate: any, readOnly: true,
    doc: 'The cluster group `--target=@<group>` placed the instance into; evacuation keeps it there when it can (set by Roost).' },
  { name: 'volatile.last_state.power', scope: 'instance', default: '', validate: oneOf('RUNNING', 'STOPPED'), readOnly: true,
    doc: 'Power state recorded at the last start or stop (set by Roost).' },
  { name: 'volatile.', prefix: true, scope: 'instance', default: '', validate: any, readOnly: true,
    doc: 'Internal state kept by Roost.' },
  { name: 'image.', prefix: true, scope: 'instance', default: '', validate: any,
    doc: 'Facts about the image the instance was created from.' },
  { name: 'user.', prefix: true, scope: 'instance', default: '', validate: any, doc: 'Free-form user key.' },

  // Storage pool (LXD's keys; the driver decides what it does with them)
  { name: 'source', scope: 'pool', default: '', validate: (v) => (v.startsWith('/') ? null : 'must be an absolute path'), memberSpecific: true,
    doc: 'Where the pool keeps its data on the member (dir: a directory; default: `storage-pools/<pool>` in the member directory).' },
  { name: 'size', scope: 'pool', default: '', validate: bytes, memberSpecific: true,
    doc: 'Size of a loop-file backed pool on the member (drivers that make one; dir ignores it).' },
  { name: 'user.', prefix: true, scope: 'pool', default: '', validate: any, doc: 'Free-form user key.' },

  // Volume
  { name: 'size', scope: 'volume', default: '', validate: bytes, doc: 'Size quota of the volume (informational on dir).' },
  { name: 'user.', prefix: true, scope: 'volume', default: '', validate: any, doc: 'Free-form user key.' },
];

/** Find the declaration of `name` in `scope`, exact names first, then families. */
export function findKey(scope: ConfigScope, name: string): ConfigKey | undefined {
  const inScope = configKeys.filter((k) => k.scope === scope);
  return (
    inScope.find((k) => !k.prefix && k.name === name) ??
    inScope.find((k) => k.prefix === true && name.startsWith(k.name) && name.length > k.name.length)
  );
}

/** Returns the first problem with `config` in `scope`, worded for the user, or null if it is valid. */
export function checkConfig(scope: ConfigScope, config: Record<string, unknown>): string | null {
  for (const [name, value] of Object.entries(config)) {
    if (typeof value !== 'string') return `Invalid value for config key "${name}": must be a string`;
    const key = findKey(scope, name);
    if (!key) return `Unknown configuration key: ${name}`;
    if (value === '') continue; // an empty value unsets the key
    const problem = key.validate(value);
    if (problem) return `Invalid value "${value}" for config key "${name}": ${problem}`;
  }
  return null;
}

/**
 * Returns the first read-only (volatile) key a user request would change, in LXD's words, or null. `current` is
 * the stored config (empty for a new instance), `requested` the keys the request sends; a key sent with its
 * current value is no change (an edited copy of the whole config sends every key back), and an empty value
 * means unset, which is a change only if the key is set.
 */
export function checkUserChange(scope: ConfigScope, current: Record<string, string>, requested: Record<string, unknown>): string | null {
  for (const [name, value] of Object.entries(requested)) {
    if (!findKey(scope, name)?.readOnly) continue;
    if ((current[name] ?? '') === value) continue;
    return `Volatile keys are read-only: ${name} is set by Roost`;
  }
  return null;
}

/** The effective value of `name`: the configured one, else the declared default. */
export function configValue(scope: ConfigScope, config: Record<string, string>, name: string): string {
  const v = config[name];
  if (v !== undefined && v !== '') return v;
  return findKey(scope, name)?.default ?? '';
}
