// `/1.0/storage-pools...`: the `default` pool of each member and its custom volumes.

import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { forwardTo, param, parseBody, projectOf, queryParam, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import type { VolumeRecord } from '../../store/schema.js';
import type { Member } from '../../daemon/context.js';

const createBody = z.object({
  name: z.string(),
  type: z.string().optional(),
  config: z.record(z.string(), z.unknown()).optional(),
  description: z.string().optional(),
  content_type: z.string().optional(),
}).passthrough();

function checkPool(name: string): void {
  if (name !== 'default') throw errors.poolNotFound();
}

async function volumeToApi(m: Member, v: VolumeRecord): Promise<Record<string, unknown>> {
  return {
    config: v.config,
    description: v.description,
    name: v.name,
    type: 'custom',
    used_by: await m.volumes.usedBy(v.project, v.name),
    location: v.location,
    content_type: v.contentType,
    project: v.project,
    created_at: v.createdAt,
  };
}

/** Register the storage routes. */
export function registerStorageRoutes(r: Router): void {
  const m = r.member;
  // Requests about one custom volume are served by the member that holds its data.
  const volumeOwner = async (req: FastifyRequest): Promise<string> => (await m.volumes.get(projectOf(req), 'default', param(req, 'vol'))).location;
  const poolApi = () => ({ name: 'default', driver: 'dir', description: '', status: 'Created', locations: [], used_by: [], config: {} });

  r.on('GET', '/1.0/storage-pools', async (req, reply) => sync(reply, recursion(req) > 0 ? [poolApi()] : ['/1.0/storage-pools/default']));
  r.on('GET', '/1.0/storage-pools/:pool', async (req, reply) => {
    checkPool(param(req, 'pool'));
    return sync(reply, poolApi());
  });

  const list = async (req: FastifyRequest) => {
    checkPool(param(req, 'pool'));
    const vols = await m.volumes.list(projectOf(req), 'default');
    if (recursion(req) === 0) return vols.map((v) => `/1.0/storage-pools/default/volumes/custom/${v.name}`);
    return Promise.all(vols.map((v) => volumeToApi(m, v)));
  };
  r.on('GET', '/1.0/storage-pools/:pool/volumes', async (req, reply) => sync(reply, await list(req)));
  r.on('GET', '/1.0/storage-pools/:pool/volumes/custom', async (req, reply) => sync(reply, await list(req)));

  const create = async (req: FastifyRequest, reply: FastifyReply) => {
    checkPool(param(req, 'pool'));
    const project = projectOf(req);
    const body = parseBody(req, createBody);
    if (body.type !== undefined && body.type !== 'custom') throw errors.badRequest(`Unsupported volume type "${body.type}"`);
    m.volumes.validate(body.name, body.config ?? {});
    const target = queryParam(req, 'target') ?? m.name;
    const view = await m.cluster.member(target);
    if (view.status === 'Offline') throw errors.memberOffline(target);
    if (await forwardTo(r, req, reply, target)) return;
    await m.volumes.create(project, 'default', body.name, (body.config ?? {}) as Record<string, string>, body.description ?? '');
    return sync(reply, {});
  };
  r.on('POST', '/1.0/storage-pools/:pool/volumes', create);
  r.on('POST', '/1.0/storage-pools/:pool/volumes/custom', create);

  r.on('GET', '/1.0/storage-pools/:pool/volumes/custom/:vol', async (req, reply) => {
    checkPool(param(req, 'pool'));
    const v = await m.volumes.get(projectOf(req), 'default', param(req, 'vol'));
    return sync(reply, await volumeToApi(m, v));
  });

  r.owned('DELETE', '/1.0/storage-pools/:pool/volumes/custom/:vol', volumeOwner, async (req, reply) => {
    checkPool(param(req, 'pool'));
    const project = projectOf(req);
    const v = await m.volumes.get(project, 'default', param(req, 'vol'));
    await m.volumes.delete(project, 'default', v.name);
    return sync(reply, {});
  });

  r.owned('GET', '/1.0/storage-pools/:pool/volumes/custom/:vol/state', volumeOwner, async (req, reply) => {
    checkPool(param(req, 'pool'));
    const project = projectOf(req);
    const v = await m.volumes.get(project, 'default', param(req, 'vol'));
    return sync(reply, { usage: { used: await m.volumes.usage(project, v.name), total: -1 } });
  });
}
