// `/1.0/storage-pools...`: the cluster's storage pools (LXD's clustered pool API: define per member with
// `?target=`, then create everywhere) and the custom volumes in each.

import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { forwardTo, param, parseBody, projectOf, queryParam, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import type { VolumeRecord } from '../../store/schema.js';
import type { Member } from '../../daemon/context.js';
import type { PoolState } from '../../storage/pool-service.js';

const createBody = z.object({
  name: z.string(),
  type: z.string().optional(),
  config: z.record(z.string(), z.unknown()).optional(),
  description: z.string().optional(),
  content_type: z.string().optional(),
}).passthrough();

const poolCreateBody = z.object({
  name: z.string(),
  driver: z.string(),
  description: z.string().optional(),
  config: z.record(z.string(), z.string()).optional(),
}).passthrough();

const poolPutBody = z.object({
  description: z.string().optional(),
  config: z.record(z.string(), z.string()).optional(),
}).passthrough();

async function volumeToApi(m: Member, v: VolumeRecord): Promise<Record<string, unknown>> {
  return {
    config: v.config,
    description: v.description,
    name: v.name,
    type: 'custom',
    used_by: await m.volumes.usedBy(v.project, v.pool, v.name),
    location: v.location,
    content_type: v.contentType,
    project: v.project,
    created_at: v.createdAt,
  };
}

/**
 * A pool as LXD's API shows it: without `target` its cluster-wide config and status; with one, that member's
 * config merged in and the member's own status.
 */
async function poolToApi(m: Member, state: PoolState, target?: string): Promise<Record<string, unknown>> {
  const { record, members } = state;
  const part = target === undefined ? undefined : members.find((p) => p.member === target);
  if (target !== undefined && !part) throw errors.poolNotFound();
  return {
    name: record.name,
    driver: record.driver,
    description: record.description,
    config: part ? { ...record.config, ...part.config } : record.config,
    status: part ? part.status : record.status,
    locations: members.map((p) => p.member).sort(),
    used_by: await m.storagePools.usedBy(record.name, target),
  };
}

/** Register the storage routes. */
export function registerStorageRoutes(r: Router): void {
  const m = r.member;
  const target = (req: FastifyRequest): string | undefined => {
    const t = queryParam(req, 'target');
    return t === undefined || t === '' ? undefined : t;
  };
  // Requests about one custom volume are served by the member that holds its data.
  const volumeOwner = async (req: FastifyRequest): Promise<string> => (await m.volumes.get(projectOf(req), param(req, 'pool'), param(req, 'vol'))).location;
  /** The pool the request names; 404 (LXD's words) if the cluster has none of that name. */
  const poolOf = async (req: FastifyRequest): Promise<PoolState> => m.storagePools.get(param(req, 'pool'));

  r.on('GET', '/1.0/storage-pools', async (req, reply) => {
    const pools = await m.storagePools.list();
    if (recursion(req) === 0) return sync(reply, pools.map((p) => `/1.0/storage-pools/${p.record.name}`));
    return sync(reply, await Promise.all(pools.map((p) => poolToApi(m, p))));
  });

  r.on('POST', '/1.0/storage-pools', async (req, reply) => {
    const body = parseBody(req, poolCreateBody);
    const on = target(req);
    if (on !== undefined) await m.storagePools.define(body.name, body.driver, on, body.config ?? {}, body.description ?? '');
    else await m.storagePools.createEverywhere(body.name, body.driver, body.config ?? {}, body.description ?? '');
    return sync(reply, {});
  });

  r.on('GET', '/1.0/storage-pools/:pool', async (req, reply) => sync(reply, await poolToApi(m, await poolOf(req), target(req))));

  const update = (replace: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    const body = parseBody(req, poolPutBody);
    const on = target(req);
    if (on !== undefined) await m.cluster.member(on);
    const change: { config?: Record<string, string>; description?: string } = {};
    if (body.config !== undefined) change.config = body.config;
    if (body.description !== undefined) change.description = body.description;
    await m.storagePools.update(param(req, 'pool'), change, replace, on);
    return sync(reply, {});
  };
  r.on('PUT', '/1.0/storage-pools/:pool', update(true));
  r.on('PATCH', '/1.0/storage-pools/:pool', update(false));

  r.on('DELETE', '/1.0/storage-pools/:pool', async (req, reply) => {
    await m.storagePools.delete(param(req, 'pool'));
    return sync(reply, {});
  });

  // Space of the pool on one member (`?target=`, else the member asked).
  r.on('GET', '/1.0/storage-pools/:pool/resources', async (req, reply) => {
    const state = await poolOf(req);
    const on = target(req) ?? m.name;
    if (!state.members.some((p) => p.member === on)) throw errors.poolNotFound();
    if (await forwardTo(r, req, reply, on)) return;
    const usage = await m.pools.get(state.record.name).poolUsage();
    return sync(reply, {
      space: { used: usage.usedBytes, total: usage.totalBytes },
      inodes: { used: 0, total: usage.freeInodes === null ? 0 : usage.freeInodes },
    });
  });

  const list = async (req: FastifyRequest) => {
    const { record } = await poolOf(req);
    const vols = (await m.volumes.list(projectOf(req), record.name)).filter((v) => target(req) === undefined || v.location === target(req));
    if (recursion(req) === 0) return vols.map((v) => `/1.0/storage-pools/${record.name}/volumes/custom/${v.name}`);
    return Promise.all(vols.map((v) => volumeToApi(m, v)));
  };
  r.on('GET', '/1.0/storage-pools/:pool/volumes', async (req, reply) => sync(reply, await list(req)));
  r.on('GET', '/1.0/storage-pools/:pool/volumes/custom', async (req, reply) => sync(reply, await list(req)));

  const create = async (req: FastifyRequest, reply: FastifyReply) => {
    const { record } = await poolOf(req);
    const project = projectOf(req);
    const body = parseBody(req, createBody);
    if (body.type !== undefined && body.type !== 'custom') throw errors.badRequest(`Unsupported volume type "${body.type}"`);
    m.volumes.validate(body.name, body.config ?? {});
    if (record.status !== 'Created') throw errors.badRequest(`Storage pool "${record.name}" is not created yet (status ${record.status})`);
    const on = target(req) ?? m.name;
    const view = await m.cluster.member(on);
    if (view.status === 'Offline') throw errors.memberOffline(on);
    if (await forwardTo(r, req, reply, on)) return;
    await m.volumes.create(project, record.name, body.name, (body.config ?? {}) as Record<string, string>, body.description ?? '');
    return sync(reply, {});
  };
  r.on('POST', '/1.0/storage-pools/:pool/volumes', create);
  r.on('POST', '/1.0/storage-pools/:pool/volumes/custom', create);

  r.on('GET', '/1.0/storage-pools/:pool/volumes/custom/:vol', async (req, reply) => {
    const { record } = await poolOf(req);
    const v = await m.volumes.get(projectOf(req), record.name, param(req, 'vol'));
    return sync(reply, await volumeToApi(m, v));
  });

  r.owned('DELETE', '/1.0/storage-pools/:pool/volumes/custom/:vol', volumeOwner, async (req, reply) => {
    const project = projectOf(req);
    const v = await m.volumes.get(project, param(req, 'pool'), param(req, 'vol'));
    await m.volumes.delete(project, v.pool, v.name);
    return sync(reply, {});
  });

  r.owned('GET', '/1.0/storage-pools/:pool/volumes/custom/:vol/state', volumeOwner, async (req, reply) => {
    const project = projectOf(req);
    const v = await m.volumes.get(project, param(req, 'pool'), param(req, 'vol'));
    return sync(reply, { usage: { used: await m.volumes.usage(project, v.pool, v.name), total: -1 } });
  });
}
