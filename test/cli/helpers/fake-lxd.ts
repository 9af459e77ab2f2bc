// A tiny stand-in for a Roost/LXD member on a unix socket: scripted routes answering LXD envelopes, an
// `/1.0/events` websocket, and operations whose later states are sent as events once the client has
// caught up with `GET /1.0/operations/<id>` (as the real client does), so tests need no sleeps.

import { mkdtempSync, rmSync } from 'node:fs';
import { type IncomingHttpHeaders, type Server, createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';

type Json = Record<string, unknown>;

/** One request the fake received. */
export interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: unknown;
}

/** What a route answers: a JSON body (an envelope, usually) or raw text. */
export interface Reply {
  status?: number;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
}

/** A state an operation goes through: its status and optionally metadata and error. */
export interface OperationStep {
  status: 'Pending' | 'Running' | 'Success' | 'Failure' | 'Cancelled';
  metadata?: Json | null;
  err?: string;
}

const statusCodes: Record<OperationStep['status'], number> = { Pending: 105, Running: 103, Success: 200, Failure: 400, Cancelled: 401 };

/** A sync envelope. */
export function sync(metadata: unknown, etag?: string): Reply {
  return {
    status: 200,
    body: { type: 'sync', status: 'Success', status_code: 200, operation: '', error_code: 0, error: '', metadata },
    headers: etag ? { ETag: etag } : {},
  };
}

/** An error envelope with its HTTP status. */
export function errorReply(code: number, message: string): Reply {
  return { status: code, body: { type: 'error', status: '', status_code: 0, operation: '', error_code: code, error: message, metadata: null } };
}

/** The fake member. */
export class FakeLxd {
  readonly requests: Recorded[] = [];
  /** Order of arrivals: `ws <url>` for websocket connections, `<METHOD> <url>` for requests. */
  readonly arrivals: string[] = [];
  private readonly routes = new Map<string, (req: Recorded) => Reply>();
  private readonly clients = new Map<WebSocket, string[]>();
  private readonly operations = new Map<string, Json>();
  private nextId = 1;

  private constructor(
    readonly dir: string,
    readonly socketPath: string,
    private readonly server: Server,
    private readonly wss: WebSocketServer,
  ) {}

  /** Start a fake member on `<temp dir>/unix.socket`. */
  static async start(): Promise<FakeLxd> {
    const dir = mkdtempSync(join(tmpdir(), 'roost-cli-'));
    const socketPath = join(dir, 'unix.socket');
    const wss = new WebSocketServer({ noServer: true });
    let fake: FakeLxd | null = null;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        const rec: Recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: text ? JSON.parse(text) : undefined };
        const reply = fake?.handle(rec) ?? errorReply(404, 'not found');
        res.writeHead(reply.status ?? 200, { 'Content-Type': reply.raw === undefined ? 'application/json' : 'text/plain', ...reply.headers });
        res.end(reply.raw ?? JSON.stringify(reply.body));
      });
    });
    server.on('upgrade', (req, socket, head) => {
      const url = req.url ?? '';
      if (!url.startsWith('/1.0/events')) {
        socket.destroy();
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        const types = new URL(url, 'http://x').searchParams.get('type');
        fake?.arrivals.push(`ws ${url}`);
        fake?.clients.set(ws, types ? types.split(',') : []);
        ws.on('close', () => fake?.clients.delete(ws));
      });
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    fake = new FakeLxd(dir, socketPath, server, wss);
    return fake;
  }

  /** Answer `METHOD url` (url with its query, exactly) with `reply`. */
  on(method: string, url: string, reply: Reply | ((req: Recorded) => Reply)): void {
    this.routes.set(`${method} ${url}`, typeof reply === 'function' ? reply : () => reply);
  }

  /** Requests other than the operation catch-up GETs, as `METHOD url`. */
  calls(): string[] {
    return this.requests.map((r) => `${r.method} ${r.url}`);
  }

  /** The first recorded request to `METHOD url`. */
  find(method: string, url: string): Recorded | undefined {
    return this.requests.find((r) => r.method === method && r.url === url);
  }

  /** Send an event to every websocket client subscribed to its type. */
  emit(event: Json): void {
    const type = String(event.type);
    for (const [ws, types] of this.clients) {
      if (types.length === 0 || types.includes(type)) ws.send(JSON.stringify(event));
    }
  }

  /** Open websocket clients (for tests that wait until a subscriber is there). */
  get subscriberCount(): number {
    return this.clients.size;
  }

  /**
   * Make `METHOD url` create an operation: answer 202 with it Running, call `onCreated` and send `early`
   * states as events right away (before the client's catch-up GET), and the `later` ones after that GET.
   */
  operation(method: string, url: string, later: OperationStep[], options: { early?: OperationStep[]; description?: string; onCreated?: () => void } = {}): void {
    this.on(method, url, () => {
      const id = `00000000-0000-4000-8000-${String(this.nextId++).padStart(12, '0')}`;
      const now = new Date().toISOString();
      const op: Json = {
        id, class: 'task', description: options.description ?? 'Doing things', created_at: now, updated_at: now,
        status: 'Running', status_code: 103, resources: null, metadata: null, may_cancel: false, err: '', location: 'm1',
      };
      this.operations.set(id, op);
      this.on('GET', `/1.0/operations/${id}`, () => {
        const reply = sync({ ...op });
        setImmediate(() => later.forEach((step) => this.advance(id, step)));
        return reply;
      });
      setImmediate(() => {
        options.onCreated?.();
        (options.early ?? []).forEach((step) => this.advance(id, step));
      });
      return {
        status: 202,
        headers: { Location: `/1.0/operations/${id}` },
        body: { type: 'async', status: 'Operation created', status_code: 100, operation: `/1.0/operations/${id}`, error_code: 0, error: '', metadata: op },
      };
    });
  }

  /** Stop the server and remove its directory. */
  async close(): Promise<void> {
    for (const ws of this.clients.keys()) ws.terminate();
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }

  private advance(id: string, step: OperationStep): void {
    const op = this.operations.get(id);
    if (!op) return;
    op.status = step.status;
    op.status_code = statusCodes[step.status];
    if (step.metadata !== undefined) op.metadata = step.metadata;
    if (step.err !== undefined) op.err = step.err;
    op.updated_at = new Date().toISOString();
    this.emit({ type: 'operation', timestamp: op.updated_at, metadata: { ...op }, location: 'm1', project: 'default' });
  }

  private handle(rec: Recorded): Reply {
    this.requests.push(rec);
    this.arrivals.push(`${rec.method} ${rec.url}`);
    const route = this.routes.get(`${rec.method} ${rec.url}`);
    return route ? route(rec) : errorReply(404, `not found: ${rec.method} ${rec.url}`);
  }
}

/** A stream that keeps what a command writes; `isTTY` can be set to exercise terminal output. */
export class Capture extends Writable {
  text = '';
  isTTY = false;

  constructor() {
    super({ decodeStrings: false });
  }

  override _write(chunk: unknown, _encoding: BufferEncoding, callback: () => void): void {
    this.text += typeof chunk === 'string' ? chunk : String(chunk);
    callback();
  }
}

/** Resolve once `check` holds, polling each turn of the event loop; fail after a deadline. */
export async function waitFor(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
