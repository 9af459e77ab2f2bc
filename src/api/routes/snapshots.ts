// `/1.0/instances/<i>/snapshots...`: list, take, show, rename, delete (LXD's shapes). Taking, renaming and
// deleting run on the member holding the instance (its pool has the data); reads come from the record.
// Restoring is a `PUT /1.0/instances/<i>` with `restore` (instances.ts).

import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { createHash } from 'node:crypto';
import type { Router } from '../server.js';
import { sync, async as asyncReply } from '../envelope.js';
import { param, parseBody, projectOf, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import { snapshotToApi } from './instances.js';

const createBody = z.object({
  name: z.string().optional(),
  stateful: z.boolean().optional(),
  expires_at: z.string().nullish(),
}).passthrough();

const renameBody = z.object({
  name: z.string(),
  migration: z.boolean().optional(),
  live: z.boolean().optional(),
}).passthrough();

/** Go's zero time, which the client sends for "never expires" (`--no-expiry`). */
const goZeroTime = /^0001-01-01T00:00:00(?:\.0+)?Z$/;

/** Register the snapshot routes. */
export function registerSnapshotRoutes(r: Router): void {
  const m = r.member;
  const instanceOwner = async (req: FastifyRequest): Promise<string> => (await m.instances.load(projectOf(req), param(req, 'name'))).record.location;
  const url = (name: string, snapshot: string): string => `/1.0/instances/${name}/snapshots/${snapshot}`;

  r.on('GET', '/1.0/instances/:name/snapshots', async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const snapshots = await m.snapshots.list(project, name);
    if (recursion(req) === 0) return sync(reply, snapshots.map((s) => url(name, s.name)));
    const profiles = await m.profiles.set(project);
    return sync(reply, snapshots.map((s) => snapshotToApi(s, profiles)));
  });

  r.owned('POST', '/1.0/instances/:name/snapshots', instanceOwner, async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const body = parseBody(req, createBody);
    const expiresAt = body.expires_at && !goZeroTime.test(body.expires_at) ? body.expires_at : null;
    if (expiresAt !== null && Number.isNaN(Date.parse(expiresAt))) throw errors.badRequest(`Invalid expiry date "${expiresAt}"`);
    const request = { name: body.name ?? '', stateful: body.stateful === true, expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString() };
    const snapshot = await m.snapshots.validateCreate(project, name, request);
    const op = await m.operations.begin({
      description: 'Snapshotting instance',
      resources: { instances: [`/1.0/instances/${name}`], instances_snapshots: [url(name, snapshot)] },
      project,
      run: async () => {
        await m.snapshots.create(project, name, snapshot, request);
      },
    });
    return asyncReply(reply, op);
  });

  r.on('GET', '/1.0/instances/:name/snapshots/:snapshot', async (req, reply) => {
    const project = projectOf(req);
    const { snapshot } = await m.snapshots.get(project, param(req, 'name'), param(req, 'snapshot'));
    const etag = createHash('sha256').update(JSON.stringify([snapshot.expiresAt])).digest('hex');
    return sync(reply, snapshotToApi(snapshot, await m.profiles.set(project)), etag);
  });

  r.owned('POST', '/1.0/instances/:name/snapshots/:snapshot', instanceOwner, async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const snapshot = param(req, 'snapshot');
    const body = parseBody(req, renameBody);
    if (body.migration === true) throw errors.badRequest('Copying or moving a snapshot on its own is not supported; move its instance');
    await m.snapshots.get(project, name, snapshot); // 404 before any operation
    const op = await m.operations.begin({
      description: 'Renaming snapshot',
      resources: { instances: [`/1.0/instances/${name}`], instances_snapshots: [url(name, snapshot)] },
      project,
      run: async () => {
        await m.snapshots.rename(project, name, snapshot, body.name);
      },
    });
    return asyncReply(reply, op);
  });

  r.owned('DELETE', '/1.0/instances/:name/snapshots/:snapshot', instanceOwner, async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const snapshot = param(req, 'snapshot');
    await m.snapshots.get(project, name, snapshot);
    const op = await m.operations.begin({
      description: 'Deleting snapshot',
      resources: { instances: [`/1.0/instances/${name}`], instances_snapshots: [url(name, snapshot)] },
      project,
      run: async () => {
        await m.snapshots.delete(project, name, snapshot);
      },
    });
    return asyncReply(reply, op);
  });
}
