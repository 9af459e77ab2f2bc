// The HTTP client of the Roost API (LXD's API): over a member's unix socket, or over HTTPS to a remote
// cluster with the CLI's client certificate, the server pinned to the certificate recorded for the remote.
// Long actions are followed the way the real `lxc` client does: the events websocket is opened before the
// request that creates the operation, one GET catches up, then operation events carry it to the end
// (never `/wait`).

import { createReadStream } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { ConnectionOptions } from 'node:tls';
import { Client, type Dispatcher } from 'undici';
import WebSocket from 'ws';
import { type CliEnv, resolveSocketPath } from './config.js';
import type { ClientIdentity } from './identity.js';
import { type JsonObject, asObject, bool, isObject, num, str } from './json.js';

/** Member resolution and the CLI config, re-exported so callers need one import. */
export { type CliConfig, type CliEnv, cliConfigPath, readCliConfig, resolveSocketPath, writeCliConfig } from './config.js';

/** An LXD error envelope (or failed operation) as an exception, so callers print `Error: <message>`. */
export class ApiClientError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly operation?: Operation,
  ) {
    super(message);
    this.name = 'ApiClientError';
  }
}

/** A parsed success envelope; `metadata` is whatever the endpoint returns (narrowed by the caller). */
export type ApiResponse<T = unknown> =
  | { type: 'sync'; status: number; metadata: T; etag: string | undefined }
  | { type: 'async'; status: number; operation: string; metadata: T; etag: string | undefined };

/** Options of one request: `etag` becomes `If-Match`, so a concurrent change is refused (412). */
export interface RequestOptions {
  etag?: string;
}

/** An LXD operation (`/1.0/operations/<id>`). */
export interface Operation {
  id: string;
  class: string;
  description: string;
  status: string;
  status_code: number;
  created_at: string;
  updated_at: string;
  may_cancel: boolean;
  err: string;
  location: string;
  metadata: JsonObject | null;
  resources: JsonObject | null;
}

/** One message of `/1.0/events`; `raw` keeps every field for `roost monitor`. */
export interface RoostEvent {
  type: string;
  timestamp: string;
  location: string;
  project: string;
  metadata: unknown;
  raw: JsonObject;
}

/** A live events subscription; `done` settles when it ends (rejects if the server went away). */
export interface EventSubscription {
  close(): void;
  readonly done: Promise<void>;
}

/** The outcome of `runAsync`: the first answer, and the finished operation when there was one. */
export interface AsyncResult {
  response: ApiResponse;
  operation: Operation | null;
}

/** Called with every new state of a followed operation (progress display). */
export type OperationListener = (operation: Operation) => void;

const terminalStatuses = new Set(['Success', 'Failure', 'Cancelled']);

/** True once an operation can no longer change. */
export function isTerminalStatus(status: string): boolean {
  return terminalStatuses.has(status);
}

/** Narrow an operation object; throws if it lacks an id or status (then it is not an operation). */
export function parseOperation(value: unknown): Operation {
  const id = str(value, 'id');
  const status = str(value, 'status');
  if (id === '' || status === '') throw new Error('The server sent an operation without id or status');
  const o = asObject(value);
  return {
    id,
    class: str(o, 'class'),
    description: str(o, 'description'),
    status,
    status_code: num(o, 'status_code'),
    created_at: str(o, 'created_at'),
    updated_at: str(o, 'updated_at'),
    may_cancel: bool(o, 'may_cancel'),
    err: str(o, 'err'),
    location: str(o, 'location'),
    metadata: isObject(o.metadata) ? o.metadata : null,
    resources: isObject(o.resources) ? o.resources : null,
  };
}

/** The id in an operation URL such as `/1.0/operations/<id>?project=default`. */
export function operationId(operationUrl: string): string {
  const m = /\/operations\/([^/?#]+)/.exec(operationUrl);
  if (m?.[1]) return decodeURIComponent(m[1]);
  if (/^[^/?#]+$/.test(operationUrl)) return operationUrl;
  throw new Error(`Not an operation URL: "${operationUrl}"`);
}

function operationFailure(op: Operation): ApiClientError {
  const fallback = op.status === 'Cancelled' ? 'Operation cancelled' : 'Operation failed';
  return new ApiClientError(op.err || fallback, op.status_code, op);
}

function parseEvent(data: WebSocket.RawData): RoostEvent | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data.toString());
  } catch {
    return null;
  }
  if (!isObject(parsed)) return null;
  return {
    type: str(parsed, 'type'),
    timestamp: str(parsed, 'timestamp'),
    location: str(parsed, 'location'),
    project: str(parsed, 'project'),
    metadata: parsed.metadata,
    raw: parsed,
  };
}

function errnoCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && isObject(e); depth++) {
    if (typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code)) return e.code;
    e = e.cause;
  }
  return undefined;
}

/**
 * Follows operations on one open `/1.0/events?type=operation` socket; events that arrive before `follow`
 * (between the request and its answer) are kept so none is missed.
 */
class OperationFollower {
  private buffered: Operation[] = [];
  private listener: OperationListener | null = null;
  private onClose: (() => void) | null = null;
  private closed = false;
  private ws: WebSocket | null = null;

  constructor(private readonly client: RoostClient) {}

  /** Attach to the socket once open (its messages already flow to `receive`). */
  attach(ws: WebSocket): void {
    this.ws = ws;
    this.closed = ws.readyState === WebSocket.CLOSING || ws.readyState === WebSocket.CLOSED;
    ws.on('close', () => {
      this.closed = true;
      this.onClose?.();
    });
    ws.on('error', () => {
      // A broken socket also emits 'close'; the follower reacts there.
    });
  }

  /** Handle one raw events message (called from the moment the socket exists). */
  receive(data: WebSocket.RawData): void {
    const event = parseEvent(data);
    if (event?.type !== 'operation') return;
    let op: Operation;
    try {
      op = parseOperation(event.metadata);
    } catch {
      return;
    }
    if (this.listener) this.listener(op);
    else this.buffered.push(op);
  }

  follow(id: string, onUpdate?: OperationListener): Promise<Operation> {
    return new Promise<Operation>((resolve, reject) => {
      let finished = false;
      const finish = (outcome: Operation | Error): void => {
        if (finished) return;
        finished = true;
        this.listener = null;
        this.onClose = null;
        if (outcome instanceof Error) reject(outcome);
        else if (outcome.status === 'Success') resolve(outcome);
        else reject(operationFailure(outcome));
      };
      const handle = (op: Operation): void => {
        if (finished || op.id !== id) return;
        try {
          onUpdate?.(op);
        } catch (err) {
          finish(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        if (isTerminalStatus(op.status)) finish(op);
      };
      const catchUp = (): Promise<void> =>
        this.client.getOperation(id).then(handle, (err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));

      for (const op of this.buffered.splice(0)) handle(op);
      if (finished) return;
      this.listener = handle;
      const lost = (): void => {
        void catchUp().then(() => {
          finish(new Error(`Lost the events connection while waiting for operation ${id}; follow it with "roost operation show ${id}"`));
        });
      };
      if (this.closed) lost();
      else this.onClose = lost;
      void catchUp();
    });
  }

  close(): void {
    this.onClose = null;
    if (!this.ws) return;
    this.ws.removeAllListeners('message');
    this.ws.on('error', () => undefined);
    this.ws.close();
  }
}

/** Where a client sends its requests. */
export type Endpoint =
  /** A member's unix socket (trusted, as LXD's). */
  | { kind: 'unix'; socketPath: string }
  /** A member's HTTPS address (`host:port`): `identity` is presented, `serverCertificate` (PEM) is pinned. */
  | { kind: 'https'; address: string; identity: ClientIdentity; serverCertificate: string };

/**
 * TLS options that present `identity` and accept only a server presenting exactly `serverCertificate`,
 * whatever name or address it is reached by (as `lxc` pins a remote to the certificate it accepted).
 */
export function pinnedTls(identity: ClientIdentity, serverCertificate: string): ConnectionOptions {
  const pinned = new X509Certificate(serverCertificate).fingerprint256;
  return {
    cert: identity.cert,
    key: identity.key,
    ca: serverCertificate,
    checkServerIdentity: (_host, peer) =>
      new X509Certificate(peer.raw).fingerprint256 === pinned ? undefined : new Error('the server does not present the certificate recorded for this remote'),
  };
}

/** The API client every CLI command uses; one per command run, closed at the end. */
export class RoostClient {
  private readonly http: Client;
  readonly endpoint: Endpoint;
  /** Where requests go, for messages: the socket path or `https://host:port`. */
  readonly where: string;

  /** A client of `target`: an endpoint, or the path of a member's unix socket. */
  constructor(target: string | Endpoint) {
    this.endpoint = typeof target === 'string' ? { kind: 'unix', socketPath: target } : target;
    if (this.endpoint.kind === 'unix') {
      this.where = this.endpoint.socketPath;
      this.http = new Client('http://unix.socket', { socketPath: this.endpoint.socketPath });
    } else {
      this.where = `https://${this.endpoint.address}`;
      this.http = new Client(this.where, { connect: pinnedTls(this.endpoint.identity, this.endpoint.serverCertificate) });
    }
  }

  /** A websocket to `path` on this client's member (events, exec channels). */
  private websocket(path: string): WebSocket {
    const e = this.endpoint;
    if (e.kind === 'unix') return new WebSocket(`ws+unix://${e.socketPath}:${path}`);
    return new WebSocket(`wss://${e.address}${path}`, pinnedTls(e.identity, e.serverCertificate));
  }

  /** A client for the member that `env` designates (see `resolveSocketPath`). */
  static fromEnv(env: CliEnv = process.env): RoostClient {
    return new RoostClient(resolveSocketPath(env));
  }

  /** Send one request and return the raw answer; for endpoints that are not JSON (instance logs). */
  async requestRaw(
    method: string,
    path: string,
    body?: unknown,
    options: RequestOptions = {},
  ): Promise<{ status: number; text: string; etag: string | undefined }> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (options.etag !== undefined) headers['if-match'] = options.etag;
    let res;
    try {
      res = await this.http.request({
        method: method.toUpperCase() as Dispatcher.HttpMethod,
        path,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw this.connectionError(err);
    }
    const text = await res.body.text();
    const etagHeader = res.headers.etag;
    const etag = Array.isArray(etagHeader) ? etagHeader[0] : etagHeader;
    if (res.statusCode >= 400) throw errorFromBody(text, res.statusCode, method, path);
    return { status: res.statusCode, text, etag };
  }

  /** Send one request and parse LXD's envelope; error envelopes throw ApiClientError. */
  request(method: string, path: string, body?: unknown, options?: RequestOptions): Promise<ApiResponse<unknown>>;
  /** The same, with `parse` narrowing the metadata to the type the caller needs. */
  request<T>(
    method: string,
    path: string,
    body: unknown,
    options: RequestOptions & { parse: (metadata: unknown) => T },
  ): Promise<ApiResponse<T>>;
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    options: RequestOptions & { parse?: (metadata: unknown) => T } = {},
  ): Promise<ApiResponse<unknown>> {
    const raw = await this.requestRaw(method, path, body, options);
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.text);
    } catch {
      throw new Error(`${method} ${path} did not answer JSON (HTTP ${raw.status})`);
    }
    const type = str(parsed, 'type');
    if (type === 'error') throw errorFromBody(raw.text, raw.status, method, path);
    const meta = asObject(parsed).metadata;
    const metadata = options.parse ? options.parse(meta) : meta;
    if (type === 'async') {
      return { type, status: raw.status, operation: str(parsed, 'operation'), metadata, etag: raw.etag };
    }
    if (type === 'sync') return { type, status: raw.status, metadata, etag: raw.etag };
    throw new Error(`${method} ${path} answered an unknown envelope type "${type}"`);
  }

  /**
   * Upload a file as the raw request body (`lxc image import` does this for unified tarballs) and follow
   * the operation it creates, if any, to its end.
   */
  async upload(path: string, filePath: string, headers: Record<string, string> = {}): Promise<AsyncResult> {
    const follower = await this.openFollower();
    try {
      let res;
      try {
        res = await this.http.request({
          method: 'POST',
          path,
          headers: { 'content-type': 'application/octet-stream', ...headers },
          body: createReadStream(filePath),
        });
      } catch (err) {
        throw this.connectionError(err);
      }
      const text = await res.body.text();
      if (res.statusCode >= 400) throw errorFromBody(text, res.statusCode, 'POST', path);
      const parsed = JSON.parse(text) as unknown;
      const type = str(parsed, 'type');
      const metadata = asObject(parsed).metadata;
      if (type !== 'async') return { response: { type: 'sync', status: res.statusCode, metadata, etag: undefined }, operation: null };
      const operationUrl = str(parsed, 'operation');
      const operation = await follower.follow(operationId(operationUrl));
      return { response: { type: 'async', status: res.statusCode, operation: operationUrl, metadata, etag: undefined }, operation };
    } finally {
      follower.close();
    }
  }

  /** GET a resource and return its metadata (the common read). */
  async get(path: string): Promise<unknown> {
    return (await this.request('GET', path)).metadata;
  }

  /** One operation's current state. */
  async getOperation(id: string): Promise<Operation> {
    return parseOperation(await this.get(`/1.0/operations/${encodeURIComponent(id)}`));
  }

  /**
   * Send a request that may create an operation and follow it to the end, as `lxc` does: the events
   * socket opens first, so no update is lost. A Failure or Cancelled operation throws ApiClientError.
   */
  async runAsync(method: string, path: string, body?: unknown, onUpdate?: OperationListener): Promise<AsyncResult> {
    const follower = await this.openFollower();
    try {
      const response = await this.request(method, path, body);
      if (response.type !== 'async') return { response, operation: null };
      const operation = await follower.follow(operationId(response.operation), onUpdate);
      return { response, operation };
    } finally {
      follower.close();
    }
  }

  /**
   * Send a request that creates an operation and return its first answer at once, with `finished` to
   * follow it to the end (the events socket opens first, as in runAsync). Used when the client must act
   * while the operation runs (exec connects its websockets). `finished` must be called to release it.
   */
  async beginAsync(method: string, path: string, body?: unknown): Promise<{ response: ApiResponse; finished: () => Promise<Operation | null> }> {
    const follower = await this.openFollower();
    let response: ApiResponse;
    try {
      response = await this.request(method, path, body);
    } catch (err) {
      follower.close();
      throw err;
    }
    const finished = async (): Promise<Operation | null> => {
      try {
        return response.type === 'async' ? await follower.follow(operationId(response.operation)) : null;
      } finally {
        follower.close();
      }
    };
    return { response, finished };
  }

  /** Connect one websocket of an operation (an exec channel), resolving once it is open. */
  operationWebsocket(id: string, secret: string): Promise<WebSocket> {
    const ws = this.websocket(`/1.0/operations/${encodeURIComponent(id)}/websocket?secret=${encodeURIComponent(secret)}`);
    return new Promise<WebSocket>((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      // Kept for the socket's life: an error after the open is followed by 'close', which callers watch.
      ws.on('error', (err) => reject(this.connectionError(err)));
    });
  }

  /** Follow an existing operation (URL or id) to the end; Failure or Cancelled throws ApiClientError. */
  async waitOperation(operationUrl: string, onUpdate?: OperationListener): Promise<Operation> {
    const follower = await this.openFollower();
    try {
      return await follower.follow(operationId(operationUrl), onUpdate);
    } finally {
      follower.close();
    }
  }

  /** Subscribe to `/1.0/events` (all types when `types` is empty), resolving once the socket is open. */
  async events(types: string[], onEvent: (event: RoostEvent) => void): Promise<EventSubscription> {
    const ws = await this.openEvents(types, (data) => {
      const event = parseEvent(data);
      if (event) onEvent(event);
    });
    let closedByUs = false;
    const done = new Promise<void>((resolve, reject) => {
      const lost = (): void => reject(new Error(`The events connection to ${this.where} was closed by the server`));
      if (ws.readyState === WebSocket.CLOSING || ws.readyState === WebSocket.CLOSED) lost();
      ws.on('close', () => (closedByUs ? resolve() : lost()));
    });
    ws.on('error', () => {
      // Followed by 'close', which settles `done`.
    });
    return {
      close: () => {
        closedByUs = true;
        ws.close();
      },
      done,
    };
  }

  /** Release the HTTP connection so the process can exit. */
  async close(): Promise<void> {
    await this.http.close();
  }

  private async openFollower(): Promise<OperationFollower> {
    const follower = new OperationFollower(this);
    follower.attach(await this.openEvents(['operation'], (data) => follower.receive(data)));
    return follower;
  }

  /** Open the events socket; `onMessage` is attached at once, as frames may follow the handshake directly. */
  private openEvents(types: string[], onMessage: (data: WebSocket.RawData) => void): Promise<WebSocket> {
    const query = types.length > 0 ? `?type=${types.map(encodeURIComponent).join(',')}` : '';
    const ws = this.websocket(`/1.0/events${query}`);
    ws.on('message', onMessage);
    return new Promise<WebSocket>((resolve, reject) => {
      const onError = (err: Error): void => {
        ws.removeListener('open', onOpen);
        reject(this.connectionError(err));
      };
      const onOpen = (): void => {
        ws.removeListener('error', onError);
        resolve(ws);
      };
      ws.once('open', onOpen);
      ws.once('error', onError);
    });
  }

  private connectionError(err: unknown): Error {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ECONNREFUSED') {
      if (this.endpoint.kind === 'https') return new Error(`Cannot reach the Roost member at ${this.where} (${code})`);
      return new Error(`Cannot reach the Roost member at ${this.where} (${code}); is roostd running? ("roost up" starts a local cluster)`);
    }
    return err instanceof Error ? err : new Error(String(err));
  }
}

function errorFromBody(text: string, status: number, method: string, path: string): ApiClientError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  if (str(parsed, 'type') === 'error' || str(parsed, 'error') !== '') {
    return new ApiClientError(str(parsed, 'error') || `${method} ${path} failed`, num(parsed, 'error_code', status) || status);
  }
  const detail = text.trim() === '' ? '' : `: ${text.trim().slice(0, 200)}`;
  return new ApiClientError(`${method} ${path} failed with HTTP ${status}${detail}`, status);
}
