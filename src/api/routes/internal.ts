// `/internal/...`: member-to-member calls (HTTPS with the cluster certificate only): instance states,
// capacity, and the receiving side of moves.

import { z } from 'zod';
import type { Readable } from 'node:stream';
import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { param, parseBody, queryParam } from '../request.js';
import { errors } from '../errors.js';
import { localCapacity } from '../../cluster/snapshot.js';
import type { VolumeRef } from '../../storage/driver.js';
import { applyPass, deletePaths, digestStaging } from '../../migration/precopy.js';

const refSchema = z.object({ type: z.enum(['container', 'custom']), project: z.string(), name: z.string() });

/** Register the internal routes (peer origin only). */
export function registerInternalRoutes(r: Router): void {
  const m = r.member;

  r.on('GET', '/internal/instances/state', async (_req, reply) => sync(reply, Object.fromEntries(await m.instances.localStates())));
  r.on('GET', '/internal/images/:fp', async (req, reply) => reply.type('application/octet-stream').send(await m.images.open(param(req, 'fp'))));
  r.on('GET', '/internal/capacity', async (_req, reply) => sync(reply, await localCapacity(m)));

  r.on('POST', '/internal/instances/start', async (req, reply) => {
    const body = parseBody(req, z.object({ project: z.string(), name: z.string(), allowRestoring: z.boolean().optional(), moveId: z.string().optional() }));
    await m.instances.start(body.project, body.name, { allowRestoring: body.allowRestoring === true, moveId: body.moveId });
    return sync(reply, {});
  });

  // A restore stops an instance on its holder ahead of its copy; the power state stays RUNNING.
  r.on('POST', '/internal/instances/stop', async (req, reply) => {
    const body = parseBody(req, z.object({ project: z.string(), name: z.string() }));
    await m.instances.stop(body.project, body.name, { keepLastState: true });
    return sync(reply, {});
  });

  // A restore asks the holder of an instance to move it home; the holder runs the move.
  r.on('POST', '/internal/moves/run', async (req, reply) => {
    const body = parseBody(req, z.object({
      instances: z.array(z.object({ project: z.string(), name: z.string() })).min(1),
      target: z.string(),
      clearOrigin: z.boolean().optional(),
      allowRestoringTarget: z.boolean().optional(),
      honourLastState: z.boolean().optional(),
      evacuation: z.string().nullable().optional(),
    }));
    const abort = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });
    await m.migrator.move({ ...body, signal: abort.signal });
    return sync(reply, {});
  });

  r.on('POST', '/internal/moves/:id/prepare', async (req, reply) => {
    const body = parseBody(req, z.object({ refs: z.array(refSchema) }));
    await m.migrator.prepareIncoming(param(req, 'id'), body.refs);
    return sync(reply, {});
  });

  r.on('PUT', '/internal/moves/:id/volume', async (req, reply) => {
    const ref = refSchema.safeParse({ type: queryParam(req, 'type'), project: queryParam(req, 'project'), name: queryParam(req, 'name') });
    if (!ref.success) throw errors.badRequest('bad volume reference');
    if (!req.body || typeof (req.body as Readable).pipe !== 'function') throw errors.badRequest('expected a volume stream');
    const digest = await m.migrator.receiveVolume(param(req, 'id'), ref.data as VolumeRef, req.body as Readable);
    return sync(reply, digest);
  });

  // Pre-copy passes (migration/precopy.ts) write again and again into one staging directory per volume.
  r.on('PUT', '/internal/moves/:id/delta', async (req, reply) => {
    const ref = refSchema.safeParse({ type: queryParam(req, 'type'), project: queryParam(req, 'project'), name: queryParam(req, 'name') });
    if (!ref.success) throw errors.badRequest('bad volume reference');
    if (!req.body || typeof (req.body as Readable).pipe !== 'function') throw errors.badRequest('expected a tar stream');
    const fresh = queryParam(req, 'fresh') === '1';
    const id = param(req, 'id');
    const body = req.body as Readable;
    const applied = await m.migrator.writing(id, body, async () => applyPass(await m.migrator.stagingFor(id, ref.data as VolumeRef, fresh), body, fresh));
    return sync(reply, applied);
  });

  r.on('POST', '/internal/moves/:id/delete', async (req, reply) => {
    const body = parseBody(req, z.object({ ref: refSchema, paths: z.array(z.string()) }));
    await deletePaths(await m.migrator.stagingFor(param(req, 'id'), body.ref as VolumeRef, false), body.paths);
    return sync(reply, {});
  });

  // `warm`: digest now (while the instance runs) and answer nothing, so the digest after the stop is quick.
  r.on('POST', '/internal/moves/:id/digest', async (req, reply) => {
    const body = parseBody(req, z.object({ ref: refSchema, warm: z.boolean().optional() }));
    const tree = await digestStaging(await m.migrator.stagingFor(param(req, 'id'), body.ref as VolumeRef, false));
    return sync(reply, body.warm === true ? {} : tree);
  });

  r.on('POST', '/internal/moves/:id/commit', async (req, reply) => {
    await m.migrator.commitIncoming(param(req, 'id'));
    return sync(reply, {});
  });

  r.on('POST', '/internal/moves/:id/discard', async (req, reply) => {
    const body = parseBody(req, z.object({ project: z.string(), instances: z.array(z.string()), volumes: z.array(z.string()) }));
    await m.migrator.discardIncoming(param(req, 'id'), body.project, body.instances, body.volumes);
    return sync(reply, {});
  });
}
