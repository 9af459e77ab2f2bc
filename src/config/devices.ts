// Instance devices: validation, profile expansion (the default profile's root disk), and which custom
// volumes an instance carries. One definition here, below every engine, serves the API, the drivers,
// storage, placement and moves, so the planner and the mover can never disagree about what moves.

import { errors } from '../errors/index.js';

/** Device types Roost accepts in config. */
export const deviceTypes = ['disk', 'nic', 'unix-char', 'unix-block', 'usb', 'gpu', 'none', 'proxy'] as const;

/** The default profile's devices: a root disk on the `default` pool. */
export const defaultProfileDevices: Record<string, Record<string, string>> = {
  root: { type: 'disk', path: '/', pool: 'default' },
};

const volumeNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Refuse a volume name that could escape the pool or that LXD would refuse. */
export function checkVolumeName(name: string): void {
  if (!volumeNamePattern.test(name) || name.includes('..')) {
    throw errors.badRequest(`Invalid storage volume name "${name}": use letters, digits, dashes, dots and underscores`);
  }
}

/** Validate a device map; throws 400 naming the device. */
export function checkDevices(devices: Record<string, unknown>): void {
  for (const [name, dev] of Object.entries(devices)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw errors.badRequest(`Invalid device name "${name}"`);
    if (dev === null || typeof dev !== 'object' || Array.isArray(dev)) throw errors.badRequest(`Invalid device "${name}": must be an object`);
    const d = dev as Record<string, unknown>;
    if (Object.keys(d).length === 0) continue; // PATCH with an empty device removes it
    for (const [k, v] of Object.entries(d)) {
      if (typeof v !== 'string') throw errors.badRequest(`Invalid device "${name}": option "${k}" must be a string`);
    }
    const type = d.type;
    if (typeof type !== 'string' || !(deviceTypes as readonly string[]).includes(type)) {
      throw errors.badRequest(`Invalid device "${name}": unknown device type "${String(type)}"`);
    }
    if (type === 'disk') {
      if (typeof d.path !== 'string' || d.path === '') throw errors.badRequest(`Invalid device "${name}": a disk needs a "path"`);
      if (d.pool !== undefined && d.pool !== 'default') throw errors.badRequest(`Invalid device "${name}": storage pool "${String(d.pool)}" not found`);
      if (d.path !== '/' && typeof d.pool === 'string') {
        if (typeof d.source !== 'string') throw errors.badRequest(`Invalid device "${name}": a pool disk needs a "source" volume`);
        checkVolumeName(d.source);
        const rel = d.path.replace(/^\/+/, '');
        if (rel === '' || rel.split('/').some((p) => p === '..' || p === '.')) {
          throw errors.badRequest(`Invalid device "${name}": bad path "${d.path}"`);
        }
      }
      if (d.pool === undefined && d.path !== '/' && (typeof d.source !== 'string' || !d.source.startsWith('/'))) {
        throw errors.badRequest(`Invalid device "${name}": a disk needs a "pool" and volume "source", or a host path "source"`);
      }
    }
  }
}

/** Devices after applying the default profile (instance devices override profile ones by name). */
export function expandDevices(devices: Record<string, Record<string, string>>): Record<string, Record<string, string>> {
  return { ...defaultProfileDevices, ...devices };
}

/** Custom volumes attached to an instance as disk devices. */
export function attachedVolumes(expanded: Record<string, Record<string, string>>): { device: string; pool: string; volume: string; path: string }[] {
  const out: { device: string; pool: string; volume: string; path: string }[] = [];
  // Device-name order, so every plan and every move built from them is stable.
  for (const device of Object.keys(expanded).sort()) {
    const d = expanded[device];
    if (d?.type === 'disk' && d.pool && d.source && d.path && d.path !== '/') {
      out.push({ device, pool: d.pool, volume: d.source, path: d.path.replace(/^\/+/, '') });
    }
  }
  return out;
}
