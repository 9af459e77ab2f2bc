// `roost ui`'s proxy: a browser on this host reaches a member's unix socket through 127.0.0.1:<port>, for
// the web UI (`/ui/`), the API it calls and the events websocket. The socket is only for its owner and
// group, while any local user can connect to a loopback port, so the proxy admits only requests that carry
// its random token (in the printed address once, then in a cookie), only under its own host name (no DNS
// rebinding), and changes (and websockets) only from its own origin (no cross-site requests from pages
// served on other local ports).

import { randomBytes, timingSafeEqual } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { AddressInfo } from 'node:net';
import { Pool, type Dispatcher } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';
import { relayWebsockets } from '../api/websocket-relay.js';

/** Where the proxy listens and what it forwards to. */
export interface UiProxyOptions {
  /** The member's unix socket. */
  socketPath: string;
  /** Port on 127.0.0.1; 0 or absent: a free one. */
  port?: number;
}

/** A running proxy. */
export interface UiProxy {
  /** `http://127.0.0.1:<port>`. */
  readonly origin: string;
  /** The address to open: the UI, with the access token (exchanged for a cookie on first use). */
  readonly url: string;
  /** Stop listening and end every connection, websockets included. */
  close(): Promise<void>;
}

/** The cookie a browser keeps the token in. */
export const uiTokenCookie = 'roost_ui_token';

/** Request headers that describe one hop, or carry the proxy's own secret, and so are not forwarded. */
const hopHeaders = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host', 'cookie',
  'expect', 'http2-settings',
]);

const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The LXD error envelope, so the UI shows refusals of the proxy as it shows the API's. */
function errorJson(status: number, message: string): string {
  return JSON.stringify({ type: 'error', status: '', status_code: 0, operation: '', error_code: status, error: message, metadata: null });
}

function sameSecret(given: string | undefined | null, token: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function forwardedHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !hopHeaders.has(name)) out[name] = value;
  }
  return out;
}

/** What to do with one request before it is forwarded. */
type Admission = { kind: 'forward' } | { kind: 'redirect'; location: string } | { kind: 'refuse'; status: number; message: string };

/** Start the proxy on 127.0.0.1 (only loopback, whatever the caller wants). */
export async function startUiProxy(options: UiProxyOptions): Promise<UiProxy> {
  const token = randomBytes(24).toString('base64url');
  const upstream = new Pool('http://roost.socket', { socketPath: options.socketPath, connections: 16 });
  const sockets = new WebSocketServer({ noServer: true });
  let port = 0;
  const origin = (): string => `http://127.0.0.1:${port}`;

  const admit = (req: http.IncomingMessage): Admission => {
    const host = req.headers.host ?? '';
    if (host !== `127.0.0.1:${port}` && host !== `localhost:${port}`) {
      return { kind: 'refuse', status: 403, message: `This proxy answers only at ${origin()}` };
    }
    const url = new URL(req.url ?? '/', origin());
    const given = url.searchParams.get('token');
    if (given !== null && sameSecret(given, token) && req.method === 'GET') {
      url.searchParams.delete('token');
      return { kind: 'redirect', location: `${url.pathname}${url.search}` };
    }
    if (!sameSecret(cookieValue(req.headers.cookie, uiTokenCookie), token)) {
      return { kind: 'refuse', status: 403, message: 'Open the address "roost ui" printed: it carries the access token' };
    }
    const from = req.headers.origin;
    const upgrade = (req.headers.upgrade ?? '').toLowerCase() === 'websocket';
    if ((upgrade || !safeMethods.has(req.method ?? 'GET')) && from !== undefined && from !== origin() && from !== `http://localhost:${port}`) {
      return { kind: 'refuse', status: 403, message: `Requests from ${from} are not accepted` };
    }
    return { kind: 'forward' };
  };

  const forward = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const method = (req.method ?? 'GET') as Dispatcher.HttpMethod;
    let answer: Dispatcher.ResponseData;
    try {
      answer = await upstream.request({
        method,
        path: req.url ?? '/',
        headers: forwardedHeaders(req.headers),
        body: method === 'GET' || method === 'HEAD' ? undefined : req,
      });
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' }).end(errorJson(502, `Cannot reach the member at ${options.socketPath}: ${why}`));
      else res.destroy();
      return;
    }
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value !== undefined && !['connection', 'keep-alive', 'transfer-encoding'].includes(name)) headers[name] = value;
    }
    res.writeHead(answer.statusCode, headers);
    await pipeline(answer.body, res).catch(() => res.destroy());
  };

  const server = http.createServer((req, res) => {
    const verdict = admit(req);
    if (verdict.kind === 'refuse') {
      res.writeHead(verdict.status, { 'content-type': 'application/json' }).end(errorJson(verdict.status, verdict.message));
      return;
    }
    if (verdict.kind === 'redirect') {
      res.writeHead(303, {
        location: verdict.location,
        'set-cookie': `${uiTokenCookie}=${token}; HttpOnly; SameSite=Strict; Path=/`,
        'cache-control': 'no-store',
      }).end();
      return;
    }
    void forward(req, res);
  });

  const refuseUpgrade = (socket: Duplex, status: number, message: string): void => {
    const body = errorJson(status, message);
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  };

  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const verdict = admit(req);
    if (verdict.kind !== 'forward') {
      refuseUpgrade(socket, verdict.kind === 'refuse' ? verdict.status : 403, verdict.kind === 'refuse' ? verdict.message : 'No token');
      return;
    }
    // The member's websocket opens first, so its refusal (a bad path, a 400) is this answer too.
    const member = new WebSocket(`ws+unix://${options.socketPath}:${req.url ?? '/'}`);
    let settled = false;
    const abandon = (): void => {
      if (!settled) member.terminate();
    };
    socket.once('close', abandon);
    member.once('open', () => {
      settled = true;
      socket.off('close', abandon);
      member.pause();
      sockets.handleUpgrade(req, socket, head, (browser) => relayWebsockets(browser, member));
    });
    member.once('unexpected-response', (_request, response) => {
      settled = true;
      refuseUpgrade(socket, response.statusCode ?? 502, `The member refused the websocket (HTTP ${response.statusCode ?? '?'})`);
      response.resume();
      member.terminate();
    });
    member.on('error', (err) => {
      if (settled) return;
      settled = true;
      refuseUpgrade(socket, 502, `Cannot reach the member at ${options.socketPath}: ${err.message}`);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  port = (server.address() as AddressInfo).port;

  return {
    origin: origin(),
    url: `${origin()}/ui/?token=${token}`,
    async close() {
      for (const ws of sockets.clients) ws.terminate();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      sockets.close();
      await upstream.close();
    },
  };
}
