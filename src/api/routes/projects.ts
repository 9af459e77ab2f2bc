// `/1.0/projects`: Roost has one project, `default`, shown as LXD shows its default project. The real `lxc`
// client asks for the project list when a remote is added (`lxc remote add` picks the only project).

import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { param, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import { keys, type InstanceRecord } from '../../store/schema.js';

/** Register the project routes. */
export function registerProjectRoutes(r: Router): void {
  const m = r.member;
  const defaultProject = async (): Promise<Record<string, unknown>> => {
    const { kvs } = await m.store.range(keys.instances('default'));
    return {
      config: {
        'features.images': 'true',
        'features.networks': 'true',
        'features.profiles': 'true',
        'features.storage.volumes': 'true',
      },
      description: 'Default LXD project',
      name: 'default',
      used_by: kvs.map((kv) => `/1.0/instances/${(JSON.parse(kv.value) as InstanceRecord).name}`),
    };
  };
  r.on('GET', '/1.0/projects', async (req, reply) => sync(reply, recursion(req) > 0 ? [await defaultProject()] : ['/1.0/projects/default']));
  r.on('GET', '/1.0/projects/:name', async (req, reply) => {
    if (param(req, 'name') !== 'default') throw errors.projectNotFound();
    return sync(reply, await defaultProject());
  });
}
