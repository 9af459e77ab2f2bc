// `/1.0/cluster/groups...`: LXD's cluster groups (`lxc cluster group create|list|show|edit|rename|delete`).
// Assigning a member to groups goes through the member itself (PUT /1.0/cluster/members/<m>, in cluster.ts).

import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { param, parseBody, recursion } from '../request.js';
import { GroupService, type GroupView } from '../../cluster/groups.js';

const groupCreate = z.object({
  name: z.string(),
  description: z.string().optional(),
  members: z.array(z.string()).nullable().optional(),
}).passthrough();

const groupUpdate = z.object({
  description: z.string().optional(),
  members: z.array(z.string()).nullable().optional(),
}).passthrough();

const groupRename = z.object({ name: z.string() }).passthrough();

/** A group as LXD's API shows it. */
export function groupToApi(view: GroupView): Record<string, unknown> {
  return { name: view.name, description: view.description, members: view.members, used_by: view.usedBy };
}

/** Register the cluster group routes. */
export function registerGroupRoutes(r: Router): void {
  const m = r.member;
  const groups = new GroupService(m.store);
  const path = (name: string): string => `/1.0/cluster/groups/${name}`;

  r.on('GET', '/1.0/cluster/groups', async (req, reply) => {
    const all = await groups.list();
    return sync(reply, recursion(req) > 0 ? all.map(groupToApi) : all.map((g) => path(g.name)));
  });

  r.on('POST', '/1.0/cluster/groups', async (req, reply) => {
    const body = parseBody(req, groupCreate);
    await groups.create(body.name, body.description ?? '', body.members ?? []);
    m.events.lifecycle('cluster-group-created', path(body.name));
    return sync(reply.header('Location', path(body.name)), null);
  });

  r.on('GET', '/1.0/cluster/groups/:name', async (req, reply) => sync(reply, groupToApi(await groups.get(param(req, 'name')))));

  const update = (replace: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    const name = param(req, 'name');
    const body = parseBody(req, groupUpdate);
    await groups.update(name, { description: body.description, members: body.members ?? undefined }, replace);
    m.events.lifecycle('cluster-group-updated', path(name));
    return sync(reply, {});
  };
  r.on('PUT', '/1.0/cluster/groups/:name', update(true));
  r.on('PATCH', '/1.0/cluster/groups/:name', update(false));

  r.on('POST', '/1.0/cluster/groups/:name', async (req, reply) => {
    const name = param(req, 'name');
    const body = parseBody(req, groupRename);
    await groups.rename(name, body.name);
    m.events.lifecycle('cluster-group-renamed', path(body.name), { old_name: name });
    return sync(reply.header('Location', path(body.name)), null);
  });

  r.on('DELETE', '/1.0/cluster/groups/:name', async (req, reply) => {
    const name = param(req, 'name');
    await groups.remove(name);
    m.events.lifecycle('cluster-group-deleted', path(name));
    return sync(reply, {});
  });
}
