// Instance devices: validation, the root disk, and which custom volumes an instance carries. One definition
// here, below every engine, serves the API, the drivers, storage, placement and moves, so the planner and
// the mover can never disagree about what moves. Devices reach these functions expanded (expand.ts).

import { errors } from '../errors/index.js';

/** Device types Roost accepts in config. */
export const deviceTypes = ['disk', 'nic', 'unix-char', 'unix-block', 'usb', 'gpu', 'none', 'proxy'] as const;

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
      if (d.pool === '') throw errors.badRequest(`Invalid device "${name}": empty storage pool name`);
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

/** Whether expanded devices have a root disk (a pool disk at `/`): every instance keeps its data on one. */
export function hasRootDisk(expanded: Record<string, Record<string, string>>): boolean {
  return Object.values(expanded).some((d) => d.type === 'disk' && d.path === '/' && d.pool !== undefined);
}

/** Refuse (400, LXD's words) expanded devices without a root disk. */
export function checkRootDisk(expanded: Record<string, Record<string, string>>): void {
  if (!hasRootDisk(expanded)) throw errors.badRequest('Invalid devices: Failed detecting root disk device: No root device could be found');
}

/** The pool of the root disk (the data of the instance lives there), or undefined without a root disk. */
export function rootPool(expanded: Record<string, Record<string, string>>): string | undefined {
  for (const device of Object.keys(expanded).sort()) {
    const d = expanded[device];
    if (d?.type === 'disk' && d.path === '/' && d.pool !== undefined) return d.pool;
  }
  return undefined;
}

/** Every pool an instance keeps data on (its root disk's, its custom volumes'), each once, in name order. */
export function instancePools(expanded: Record<string, Record<string, string>>): string[] {
  const pools = new Set<string>(attachedVolumes(expanded).map((v) => v.pool));
  const root = rootPool(expanded);
  if (root !== undefined) pools.add(root);
  return [...pools].sort();
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
