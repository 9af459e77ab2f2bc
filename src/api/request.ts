// Request helpers shared by route handlers: project check, typed bodies, forwarding to the member
// that owns an object.

import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { errors } from '../errors/index.js';
import type { Router } from './server.js';

/** The request's project; only `default` exists (404 for others, as LXD answers). */
export function projectOf(req: FastifyRequest): string {
  const q = req.query as Record<string, string | undefined>;
  const project = q.project ?? 'default';
  if (project !== '' && project !== 'default') throw errors.projectNotFound();
  return 'default';
}

/** A query parameter as a string, if present. */
export function queryParam(req: FastifyRequest, name: string): string | undefined {
  const v = (req.query as Record<string, unknown>)[name];
  return typeof v === 'string' ? v : undefined;
}

/** A path parameter. */
export function param(req: FastifyRequest, name: string): string {
  const v = (req.params as Record<string, unknown>)[name];
  if (typeof v !== 'string' || v === '') throw errors.badRequest(`missing ${name}`);
  return v;
}

/** Parse the body with a zod schema; 400 with the first problem otherwise. */
export function parseBody<T extends z.ZodType>(req: FastifyRequest, schema: T): z.infer<T> {
  const r = schema.safeParse(req.body ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue && issue.path.length > 0 ? ` (field "${issue.path.join('.')}")` : '';
    throw errors.badRequest(`Invalid request${where}: ${issue?.message ?? 'malformed body'}`);
  }
  return r.data;
}

/** The recursion level requested (0, 1 or 2). */
export function recursion(req: FastifyRequest): number {
  const v = Number(queryParam(req, 'recursion') ?? '0');
  return Number.isFinite(v) ? Math.max(0, Math.min(2, Math.trunc(v))) : 0;
}

/** Header marking a request one member forwarded to another (never forwarded again). */
export const forwardedHeader = 'x-roost-forwarded';

/**
 * If `owner` is another member, send the request there and relay its answer; returns true then.
 * Returns false if this member is the owner (the caller handles the request itself).
 */
export async function forwardTo(router: Router, req: FastifyRequest, reply: FastifyReply, owner: string, url = req.url): Promise<boolean> {
  const { member } = router;
  if (owner === member.name) return false;
  if (req.headers[forwardedHeader]) {
    throw errors.conflict(`Request reached member "${member.name}" but "${owner}" owns it now; try again`);
  }
  const view = await member.cluster.member(owner);
  if (view.status === 'Offline') throw errors.memberOffline(owner);
  const res = await member.peers.request(view.record.address, req.method as 'GET', url, {
    json: req.body === undefined || typeof req.body === 'string' ? undefined : req.body,
    headers: { [forwardedHeader]: member.name, ...(req.headers['if-match'] ? { 'if-match': String(req.headers['if-match']) } : {}) },
    timeoutMs: 600_000,
  });
  for (const h of ['location', 'etag']) if (res.headers[h]) void reply.header(h, res.headers[h]);
  void reply.code(res.status).send(res.body);
  return true;
}

/**
 * Like forwardTo, for requests whose bodies are raw bytes both ways (file transfers): the request body and
 * the headers named in `headers` go to the owner as they are, and its answer (status, those headers,
 * body) comes back as a stream.
 */
export async function forwardRaw(router: Router, req: FastifyRequest, reply: FastifyReply, owner: string, headers: string[]): Promise<boolean> {
  const { member } = router;
  if (owner === member.name) return false;
  if (req.headers[forwardedHeader]) {
    throw errors.conflict(`Request reached member "${member.name}" but "${owner}" owns it now; try again`);
  }
  const view = await member.cluster.member(owner);
  if (view.status === 'Offline') throw errors.memberOffline(owner);
  const sent: Record<string, string> = { [forwardedHeader]: member.name };
  for (const h of headers) {
    const v = req.headers[h];
    if (typeof v === 'string') sent[h] = v;
  }
  const body = req.body && typeof req.body === 'object' && 'pipe' in req.body ? (req.body as Readable) : undefined;
  const res = await member.peers.relay(view.record.address, req.method as 'GET', req.url, { headers: sent, body });
  for (const h of headers) if (res.headers[h] !== undefined) void reply.header(h, res.headers[h]);
  void reply.code(res.status).send(res.body);
  return true;
}
