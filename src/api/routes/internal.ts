// `/internal/...`: member-to-member calls (HTTPS with the cluster certificate only). The protocol (paths,
// bodies, answers) is owned by `cluster/internal.ts`; this file only wires each route to the member's services.

import { PassThrough, type Readable } from 'node:stream';
import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { param, parseBody, queryParam } from '../request.js';
import { errors } from '../../errors/index.js';
import { localCapacity } from '../../cluster/snapshot.js';
import {
  deletePathsBody,
  digestBody,
  discardBody,
  instanceKeysBody,
  internalRoutes as routes,
  openPoolBody,
  removePoolBody,
  prepareBody,
  runMoveBody,
  type RunMoveLine,
  startInstanceBody,
  stopInstanceBody,
  streamRef,
} from '../../cluster/internal.js';
import { deletePaths, digestStaging } from '../../migration/tree.js';
import { moveFailureKind } from '../../migration/move.js';
import { driverConfig } from '../../storage/pool-service.js';
import { defaultPool } from '../../storage/driver.js';

/** The body of a stream request, or 400. */
function streamBody(req: { body: unknown }): Readable {
  const body = req.body as Readable | undefined;
  if (!body || typeof body.pipe !== 'function') throw errors.badRequest('expected a stream body');
  return body;
}

/** Register the internal routes (peer origin only). */
export function registerInternalRoutes(r: Router): void {
  const m = r.member;

  r.on('POST', routes.instanceStates, async (req, reply) => sync(reply, Object.fromEntries(await m.instances.statesOf(parseBody(req, instanceKeysBody).instances))));
  r.on('GET', routes.image, async (req, reply) => reply.type('application/octet-stream').send(await m.images.open(param(req, 'fp'))));
  r.on('POST', routes.capacity, async (req, reply) => sync(reply, await localCapacity(m, parseBody(req, instanceKeysBody).instances)));

  r.on('POST', routes.openPool, async (req, reply) => {
    const body = parseBody(req, openPoolBody);
    await m.pools.open(body.name, body.driver, driverConfig(body.config));
    return sync(reply, {});
  });

  r.on('POST', routes.removePool, async (req, reply) => {
    const body = parseBody(req, removePoolBody);
    await m.pools.remove(body.name, body.source);
    return sync(reply, {});
  });

  r.on('POST', routes.startInstance, async (req, reply) => {
    const body = parseBody(req, startInstanceBody);
    await m.instances.start(body.project, body.name, { allowRestoring: body.allowRestoring === true, moveId: body.moveId });
    return sync(reply, {});
  });

  r.on('POST', routes.stopInstance, async (req, reply) => {
    const body = parseBody(req, stopInstanceBody);
    await m.instances.stop(body.project, body.name, { keepLastState: true, force: body.force === true });
    return sync(reply, {});
  });

  // The holder of instances runs their move and streams its progress, then its outcome, as lines; the
  // caller cancels it (until its commit) by name, or by hanging up.
  const runs = new Map<string, AbortController>();
  r.on('POST', routes.cancelMove, async (req, reply) => {
    const run = runs.get(param(req, 'run'));
    if (!run) throw errors.notFound('No such move run on this member');
    run.abort();
    return sync(reply, {});
  });

  r.on('POST', routes.runMove, async (req, reply) => {
    const body = parseBody(req, runMoveBody);
    const abort = new AbortController();
    const run = body.run;
    if (run !== undefined) runs.set(run, abort);
    const out = new PassThrough();
    const send = (line: RunMoveLine): void => {
      if (!out.writableEnded) out.write(`${JSON.stringify(line)}\n`);
    };
    reply.raw.on('close', () => {
      if (!out.writableEnded) abort.abort();
    });
    let lastBytes = 0;
    void m.migrator
      .move({
        ...body,
        signal: abort.signal,
        onPhase: (phase) => send({ phase }),
        onProgress: (bytesDone, bytesTotal) => {
          // A line per chunk would flood the link; four a second is plenty for a progress bar.
          const now = Date.now();
          if (now - lastBytes < 250 && bytesDone < bytesTotal) return;
          lastBytes = now;
          send({ bytesDone, bytesTotal });
        },
      })
      .then(
        () => send({ ok: true }),
        (err: unknown) => send({ ok: false, failure: moveFailureKind(err), error: err instanceof Error ? err.message : String(err) }),
      )
      .finally(() => {
        if (run !== undefined) runs.delete(run);
        out.end();
      });
    return reply.type('application/x-ndjson').send(out);
  });

  r.on('POST', routes.prepare, async (req, reply) => {
    const body = parseBody(req, prepareBody);
    // A source that does not say per pool (an older member) sends into `default`.
    return sync(reply, await m.migrator.prepareIncoming(param(req, 'id'), body.refs, body.pools ?? { [defaultPool]: body.need }, body.stream));
  });

  r.on('PUT', routes.volume, async (req, reply) => {
    const ref = streamRef(req.query as Record<string, unknown>);
    if (!ref) throw errors.badRequest('bad volume reference');
    return sync(reply, await m.migrator.receiveVolume(param(req, 'id'), ref, streamBody(req)));
  });

  // Pre-copy passes (migration/precopy.ts) write again and again into one staging directory per volume.
  r.on('PUT', routes.delta, async (req, reply) => {
    const ref = streamRef(req.query as Record<string, unknown>);
    if (!ref) throw errors.badRequest('bad volume reference');
    const fresh = queryParam(req, 'fresh') === '1';
    return sync(reply, await m.migrator.receiveDelta(param(req, 'id'), ref, streamBody(req), fresh));
  });

  // A volume in the stream format of both ends' pools (btrfs send), received by the pool itself.
  r.on('PUT', routes.stream, async (req, reply) => {
    const ref = streamRef(req.query as Record<string, unknown>);
    if (!ref) throw errors.badRequest('bad volume reference');
    const fresh = queryParam(req, 'fresh') === '1';
    return sync(reply, await m.migrator.receiveStream(param(req, 'id'), ref, streamBody(req), fresh));
  });

  r.on('POST', routes.deletePaths, async (req, reply) => {
    const body = parseBody(req, deletePathsBody);
    await deletePaths(await m.migrator.stagingFor(param(req, 'id'), body.ref, false), body.paths);
    return sync(reply, {});
  });

  r.on('POST', routes.digest, async (req, reply) => {
    const body = parseBody(req, digestBody);
    const tree = await digestStaging(await m.migrator.stagingFor(param(req, 'id'), body.ref, false));
    return sync(reply, body.warm === true ? {} : tree);
  });

  r.on('POST', routes.commit, async (req, reply) => {
    await m.migrator.commitIncoming(param(req, 'id'));
    return sync(reply, {});
  });

  r.on('POST', routes.discard, async (req, reply) => {
    const body = parseBody(req, discardBody);
    await m.migrator.discardIncoming(param(req, 'id'), body.project, body.instances, body.volumes);
    return sync(reply, {});
  });
}
