// `/1.0/operations...`: list, show, wait, cancel (forwarded to the member running the operation).

import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { forwardTo, param, queryParam, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import { isFinal, operationToApi } from '../../operations/operations.js';

/** Register the operation routes. */
export function registerOperationRoutes(r: Router): void {
  const m = r.member;

  r.on('GET', '/1.0/operations', async (req, reply) => {
    const ops = await m.operations.list();
    const byStatus: Record<string, unknown[]> = {};
    for (const op of ops) {
      const key = op.status.toLowerCase();
      (byStatus[key] ??= []).push(recursion(req) > 0 ? operationToApi(op) : `/1.0/operations/${op.id}`);
    }
    return sync(reply, byStatus);
  });

  r.on('GET', '/1.0/operations/:id', async (req, reply) => {
    const op = await m.operations.get(param(req, 'id'));
    if (!op) throw errors.operationNotFound();
    return sync(reply, operationToApi(op));
  });

  r.on('GET', '/1.0/operations/:id/wait', async (req, reply) => {
    const id = param(req, 'id');
    const t = Number(queryParam(req, 'timeout') ?? '-1');
    const timeoutMs = t < 0 ? 24 * 3600 * 1000 : t * 1000;
    const abort = new AbortController();
    req.raw.on('close', () => abort.abort());
    const op = await m.operations.wait(id, timeoutMs, abort.signal);
    if (!op) throw errors.operationNotFound();
    return sync(reply, operationToApi(op));
  });

  r.on('DELETE', '/1.0/operations/:id', async (req, reply) => {
    const id = param(req, 'id');
    const op = await m.operations.get(id);
    if (!op) throw errors.operationNotFound();
    if (isFinal(op.status)) throw errors.badRequest('Operation is already done');
    // A store-driven operation (an evacuation, a token) is cancelled here; others where they run.
    if (!op.kind && (await forwardTo(r, req, reply, op.location))) return;
    const result = await m.operations.cancel(id);
    if (result === 'unknown') throw errors.operationNotFound();
    if (result === 'not-cancellable') throw errors.badRequest("This operation can't be cancelled");
    return sync(reply, {});
  });
}
