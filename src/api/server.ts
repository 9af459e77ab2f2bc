// The API server of one member: the same routes on the unix socket (trusted local clients, like
// LXD's) and on HTTPS (members, authenticated by the cluster certificate with mutual TLS), and the web UI
// (`/ui/`) on both.

import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type HTTPMethods, type RouteShorthandOptions } from 'fastify';
import websocket from '@fastify/websocket';
import fastifyStatic from '@fastify/static';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { ApiError, errorBody, errors } from '../errors/index.js';
import { PeerError, PeerUnreachableError } from '../cluster/peers.js';
import { StoreError } from '../store/store.js';
import type { Member } from '../daemon/context.js';
import { registerServerRoutes } from './routes/server.js';
import { registerClusterRoutes } from './routes/cluster.js';
import { registerInstanceRoutes } from './routes/instances.js';
import { registerStorageRoutes } from './routes/storage.js';
import { registerOperationRoutes } from './routes/operations.js';
import { registerEventRoutes } from './routes/events.js';
import { registerInternalRoutes } from './routes/internal.js';
import { registerImageRoutes } from './routes/images.js';
import { registerFileRoutes } from './routes/files.js';
import { registerUiRoutes } from './routes/ui.js';
import { uiDir } from '../config/env.js';
import { forwardTo } from './request.js';

/** Where a request came from. */
export type Origin = 'unix' | 'peer';

/** Which member owns the object a request is about, or null when this member serves it. */
export type OwnerOf = (req: FastifyRequest) => Promise<string | null>;

/** A route handler. Returning nothing means the handler sent the reply itself. */
export type Handler = (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/** Registers routes and remembers which methods each path has, so the others answer 405. */
export class Router {
  private readonly methods = new Map<string, Set<string>>();

  constructor(
    readonly app: FastifyInstance,
    readonly member: Member,
    readonly origin: Origin,
  ) {}

  /** Add a route (`options`: route hooks, e.g. to take a body raw). */
  on(method: HTTPMethods, url: string, handler: Handler, options: RouteShorthandOptions = {}): void {
    const set = this.methods.get(url) ?? new Set<string>();
    set.add(method);
    this.methods.set(url, set);
    this.app.route({ ...options, method, url, handler });
  }

  /**
   * Add a route served by the member that owns the object a request names (`owner`; null: this member
   * serves it): one hook forwards the request there before any handler runs, instead of a check in each.
   */
  owned(method: HTTPMethods, url: string, owner: OwnerOf, handler: Handler, options: RouteShorthandOptions = {}): void {
    this.on(method, url, handler, {
      ...options,
      preHandler: async (req, reply) => {
        const member = await owner(req);
        if (member !== null && (await forwardTo(this, req, reply, member))) return reply;
      },
    });
  }

  /** Add 405 answers for the methods each path lacks. */
  finish(): void {
    const all: HTTPMethods[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];
    for (const [url, set] of this.methods) {
      const missing = all.filter((m) => !set.has(m));
      if (missing.length > 0) {
        this.app.route({ method: missing, url, handler: async () => { throw errors.methodNotAllowed(); } });
      }
    }
  }
}

/** Build the app for one origin. */
export async function buildApi(member: Member, origin: Origin, https?: { key: string; cert: string }): Promise<FastifyInstance> {
  // One app type for both origins: the HTTPS variant differs only in how its server is created.
  const app = (
    https
      ? Fastify({
          https: { key: https.key, cert: https.cert, ca: https.cert, requestCert: true, rejectUnauthorized: true },
          bodyLimit: 16 * 1024 * 1024,
          logger: false,
        })
      : Fastify({ bodyLimit: 16 * 1024 * 1024, logger: false })
  ) as unknown as FastifyInstance;

  // LXD clients send `Content-Type: application/json` with empty bodies; treat those as no body.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text) as unknown);
    } catch {
      done(errors.badRequest('Invalid JSON in request body'), undefined);
    }
  });
  // Volume streams between members, and file pushes, arrive raw.
  app.addContentTypeParser('application/octet-stream', (_req, payload: Readable, done) => done(null, payload));
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: unknown, req, reply) => {
    const { status, message } = describeError(err);
    if (status >= 500) member.log.error({ err, url: req.url, method: req.method }, 'request failed');
    void reply.code(status).send(errorBody(status, message));
  });
  app.setNotFoundHandler((_req, reply) => {
    void reply.code(404).send(errorBody(404, 'not found'));
  });

  await app.register(websocket, { options: { maxPayload: 1024 * 1024 } });
  // Only `reply.sendFile` (the UI's routes decide what to serve); a UI not built yet is answered per request.
  const ui = path.resolve(uiDir());
  await app.register(fastifyStatic, { root: ui, serve: false });
  const router = new Router(app, member, origin);
  registerServerRoutes(router);
  registerClusterRoutes(router);
  registerInstanceRoutes(router);
  registerFileRoutes(router);
  registerStorageRoutes(router);
  registerImageRoutes(router);
  registerOperationRoutes(router);
  registerEventRoutes(router);
  registerUiRoutes(router, ui);
  if (origin === 'peer') registerInternalRoutes(router);
  router.finish();
  return app;
}

/** Status and message for any error thrown by a handler. */
export function describeError(err: unknown): { status: number; message: string } {
  if (err instanceof ApiError) return { status: err.status, message: err.message };
  if (err instanceof PeerError) return { status: err.status, message: err.message };
  if (err instanceof PeerUnreachableError) return { status: 503, message: err.message };
  // The cluster store cannot be reached: nothing was changed, the client may retry.
  if (err instanceof StoreError) return { status: 503, message: `Cluster database unavailable: ${err.message}` };
  if (err && typeof err === 'object' && 'statusCode' in err && typeof (err as { statusCode: unknown }).statusCode === 'number') {
    const status = (err as { statusCode: number }).statusCode;
    const message = err instanceof Error ? err.message : 'bad request';
    if (status >= 400 && status < 500) return { status, message };
  }
  return { status: 500, message: err instanceof Error ? err.message : String(err) };
}
