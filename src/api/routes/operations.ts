// `/1.0/operations...`: list, show, wait, cancel (forwarded to the member running the operation).

import type { FastifyRequest } from 'fastify';
import type WebSocket from 'ws';
import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { forwardTo, forwardedHeader, param, queryParam, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import { isFinal, operationToApi } from '../../operations/operations.js';
import type { ExecSession } from '../exec-session.js';
import { relayWebsockets } from '../websocket-relay.js';

/** Where an accepted websocket goes: a channel of an exec running here, or the member running it. */
type WebsocketTarget = { session: ExecSession; channel: string } | { upstream: WebSocket };

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

  // The websockets of an exec operation (`?secret=` names the channel). The secret is checked before the
  // upgrade, so a refusal is an LXD error answer. An operation another member runs is relayed there:
  // the websocket to that member is opened first, so its refusal is this answer too.
  const targets = new WeakMap<FastifyRequest, WebsocketTarget>();
  r.app.get('/1.0/operations/:id/websocket', {
    websocket: true,
    preValidation: async (req) => {
      if (!req.ws) throw errors.badRequest('This endpoint takes a websocket upgrade');
      const id = param(req, 'id');
      const secret = queryParam(req, 'secret') ?? '';
      const session = m.execSessions.get(id);
      if (session) {
        const channel = session.channelOf(secret);
        if (channel === null) throw errors.forbidden('Forbidden');
        if (session.isConnected(channel)) throw errors.badRequest('Websocket number already connected');
        targets.set(req, { session, channel });
        return;
      }
      if (secret === '') throw errors.badRequest('missing secret');
      const op = await m.operations.get(id);
      if (!op) throw errors.operationNotFound();
      if (op.location === m.name || req.headers[forwardedHeader] || isFinal(op.status)) {
        throw errors.badRequest('Operation has no websocket to connect (only a running exec has)');
      }
      const view = await m.cluster.member(op.location);
      if (view.status === 'Offline') throw errors.memberOffline(op.location);
      const upstream = await m.peers.websocket(view.record.address, req.url, { [forwardedHeader]: m.name });
      // Held until the client's side is upgraded too; dropped if the client leaves before that.
      upstream.pause();
      req.raw.socket.once('close', () => {
        if (targets.has(req)) upstream.terminate();
      });
      targets.set(req, { upstream });
    },
  }, (socket, req) => {
    const target = targets.get(req);
    targets.delete(req);
    if (!target) {
      socket.close();
      return;
    }
    if ('upstream' in target) relayWebsockets(socket, target.upstream);
    else target.session.attach(target.channel, socket);
  });
}
