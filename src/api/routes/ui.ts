// `/ui/`: the web UI, as static files built by `npm run build` (Vite, from `ui/`). Every member serves it,
// on the unix socket and on HTTPS, behind the same hooks as the API. Paths that name no file are the UI's
// own client-side routes, so they get `index.html`; a missing asset is a 404, never the page.

import { statSync } from 'node:fs';
import path from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Router } from '../server.js';
import { errorBody } from '../../errors/index.js';

/** Where the built UI's hashed bundles live (content-addressed, so cached for good). */
const assetsFolder = 'assets/';

/**
 * Sent with every UI file: the page runs only its own bundled code, talks only to this origin (HTTP and the
 * events websocket), and cannot be framed by another site.
 */
const securityHeaders: Record<string, string> = {
  'content-security-policy': "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** The message of a member whose UI was never built (the daemon serves files, it does not build them). */
export function uiNotBuiltMessage(member: string): string {
  return `The web UI is not built on member "${member}": run "npm run build" in Roost's folder, then reload`;
}

/** The API's own 404 (LXD's envelope). */
function notFound(reply: FastifyReply): FastifyReply {
  reply.callNotFound();
  return reply;
}

function isFile(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Register `/ui` and `/ui/*`, serving the UI built into `dir`. */
export function registerUiRoutes(r: Router, dir: string): void {
  const root = path.resolve(dir);

  const notBuilt = (req: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const message = uiNotBuiltMessage(r.member.name);
    // A browser gets a page it can show; API clients get LXD's error envelope.
    if ((req.headers.accept ?? '').includes('text/html')) {
      const page = `<!doctype html><meta charset="utf-8"><title>Roost: web UI not built</title><h1>Web UI not built</h1><p>${message.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('"', '&quot;')}</p>\n`;
      return reply.code(404).type('text/html; charset=utf-8').send(page);
    }
    return reply.code(404).send(errorBody(404, message));
  };

  const serve = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    if (!isFile(path.join(root, 'index.html'))) return notBuilt(req, reply);
    const rel = (req.params as Record<string, string | undefined>)['*'] ?? '';
    const file = path.resolve(root, rel);
    // `..` cannot leave the UI's folder (the file sender refuses it too; this keeps the answer a 404).
    if (file !== root && !file.startsWith(`${root}${path.sep}`)) return notFound(reply);
    void reply.headers(securityHeaders);
    if (rel !== '' && isFile(file)) {
      const asset = rel.startsWith(assetsFolder);
      if (!asset) void reply.header('cache-control', 'no-cache');
      return reply.sendFile(path.relative(root, file), root, asset ? { maxAge: '365d', immutable: true } : { cacheControl: false });
    }
    if (rel.startsWith(assetsFolder)) return notFound(reply);
    void reply.header('cache-control', 'no-cache');
    return reply.sendFile('index.html', root, { cacheControl: false });
  };

  r.on('GET', '/ui', async (_req, reply) => reply.redirect('/ui/', 301));
  r.on('GET', '/ui/*', serve);
}
