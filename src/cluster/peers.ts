// Member-to-member HTTPS with mutual TLS on the cluster certificate: request forwarding and data streams.

import type { Readable } from 'node:stream';
import type { ConnectionOptions } from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import WebSocket from 'ws';
import type { ClusterCertificateRecord } from '../store/schema.js';
import { peerTimeoutMs } from '../config/env.js';
import { fingerprintOf } from './certificate.js';

/** A peer's answer, body parsed as JSON when it is JSON. */
export interface PeerResponse {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/** Options of one peer request. */
export interface PeerRequestOptions {
  json?: unknown;
  body?: Readable;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Milliseconds without response headers before giving up (default `ROOST_PEER_TIMEOUT_MS`, 30 s). */
  timeoutMs?: number;
}

/** Thrown when a peer cannot be reached at all (as opposed to answering with an error). */
export class PeerUnreachableError extends Error {
  constructor(address: string, cause: unknown) {
    super(`member at ${address} is unreachable: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'PeerUnreachableError';
  }
}

/** The HTTPS client members use to talk to each other. */
export class PeerClient {
  private readonly agent: Agent;
  private readonly tls: ConnectionOptions;

  constructor(cert: ClusterCertificateRecord) {
    this.tls = {
      cert: cert.cert,
      key: cert.key,
      ca: cert.cert,
      servername: 'roost',
      // Members are pinned by the shared certificate, not by host names (members may move addresses).
      checkServerIdentity: (_host, peer) =>
        fingerprintOf(`-----BEGIN CERTIFICATE-----\n${peer.raw.toString('base64')}\n-----END CERTIFICATE-----`) ===
        cert.fingerprint
          ? undefined
          : new Error('peer does not present the cluster certificate'),
    };
    this.agent = new Agent({ connect: this.tls, keepAliveTimeout: 10_000, connections: 64 });
  }

  /**
   * Open a websocket on the member at `address` (an exec channel relayed for a client of this member).
   * A refused upgrade throws PeerError with the peer's status and error text.
   */
  websocket(address: string, path: string, headers: Record<string, string> = {}): Promise<WebSocket> {
    const ws = new WebSocket(`wss://${address}${path}`, { ...this.tls, headers, handshakeTimeout: 10_000, maxPayload: 16 * 1024 * 1024 });
    return new Promise((resolve, reject) => {
      ws.on('error', (err) => reject(new PeerUnreachableError(address, err)));
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (req, res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          let message = `HTTP ${res.statusCode ?? 0} from ${address}`;
          try {
            message = errorText(JSON.parse(text) as unknown) ?? message;
          } catch {
            // not JSON: keep the status line
          }
          reject(new PeerError(res.statusCode ?? 502, message));
          req.destroy();
        });
      });
    });
  }

  /** Send one request to the member at `address` (`host:port`). */
  async request(address: string, method: Dispatcher.HttpMethod, path: string, options: PeerRequestOptions = {}): Promise<PeerResponse> {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    let body: string | Readable | undefined;
    if (options.json !== undefined) {
      body = JSON.stringify(options.json);
      headers['content-type'] = 'application/json';
    } else if (options.body) {
      body = options.body;
      headers['content-type'] = 'application/octet-stream';
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`https://${address}${path}`, {
        method,
        headers,
        body,
        dispatcher: this.agent,
        signal: options.signal,
        headersTimeout: options.timeoutMs ?? peerTimeoutMs(),
        bodyTimeout: 0,
      });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      throw new PeerUnreachableError(address, err);
    }
    const text = await res.body.text();
    const flat: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(', ') : v;
    let parsed: unknown = text;
    if ((flat['content-type'] ?? '').includes('json') && text !== '') parsed = JSON.parse(text) as unknown;
    return { status: res.statusCode, headers: flat, body: parsed };
  }

  /**
   * Send one request and hand back the answer's body unread, whatever its status: a client's request
   * relayed as it is (file transfers), the answer relayed the same way.
   */
  async relay(
    address: string,
    method: Dispatcher.HttpMethod,
    path: string,
    options: { headers: Record<string, string>; body?: Readable },
  ): Promise<{ status: number; headers: Record<string, string>; body: Readable }> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`https://${address}${path}`, { method, headers: options.headers, body: options.body, dispatcher: this.agent, bodyTimeout: 0 });
    } catch (err) {
      throw new PeerUnreachableError(address, err);
    }
    const flat: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(', ') : v;
    return { status: res.statusCode, headers: flat, body: res.body };
  }

  /** Like request, but a non-2xx answer throws with the peer's error text. Returns the envelope's metadata. */
  async call(address: string, method: Dispatcher.HttpMethod, path: string, options: PeerRequestOptions = {}): Promise<unknown> {
    const res = await this.request(address, method, path, options);
    if (res.status >= 300) throw new PeerError(res.status, errorText(res.body) ?? `HTTP ${res.status} from ${address}`);
    if (res.body && typeof res.body === 'object' && 'metadata' in res.body) return (res.body as { metadata: unknown }).metadata;
    return res.body;
  }

  /**
   * Send a request (GET, or POST with a JSON body) and answer its body as a stream (image copies, progress
   * lines of a long move); a non-2xx answer throws with the peer's error.
   */
  async stream(address: string, path: string, options: { method?: 'GET' | 'POST'; json?: unknown; signal?: AbortSignal; timeoutMs?: number } = {}): Promise<Readable> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`https://${address}${path}`, {
        method: options.method ?? 'GET',
        dispatcher: this.agent,
        signal: options.signal,
        headers: options.json !== undefined ? { 'content-type': 'application/json' } : {},
        body: options.json !== undefined ? JSON.stringify(options.json) : undefined,
        headersTimeout: options.timeoutMs ?? 30_000,
        bodyTimeout: 0,
      });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      throw new PeerUnreachableError(address, err);
    }
    if (res.statusCode >= 300) {
      const text = await res.body.text();
      let message = `HTTP ${res.statusCode} from ${address}`;
      try {
        message = errorText(JSON.parse(text) as unknown) ?? message;
      } catch {
        // not JSON: keep the status line
      }
      throw new PeerError(res.statusCode, message);
    }
    return res.body;
  }

  /** Release connections. */
  async close(): Promise<void> {
    await this.agent.close();
  }
}

/** A peer answered with an error status. */
export class PeerError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'PeerError';
  }
}

function errorText(body: unknown): string | undefined {
  if (body && typeof body === 'object' && 'error' in body && typeof (body as { error: unknown }).error === 'string') {
    return (body as { error: string }).error;
  }
  return typeof body === 'string' && body !== '' ? body : undefined;
}
