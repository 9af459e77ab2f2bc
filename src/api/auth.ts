// Who sent a request, and what they may do: LXD's trust model, in one hook for every route. The unix socket
// is trusted (as LXD's). On HTTPS the TLS handshake accepts any client certificate; the certificate's
// fingerprint then decides: the cluster certificate is a member (everything, `/internal/` included), a
// certificate in the trust store is a client (the API, never `/internal/`), anything else is untrusted
// (`GET /1.0` with LXD's reduced answer and `POST /1.0/certificates` to present a token; 403 otherwise).
// The trust store is read on every request, so a removed client is refused at its next request on every
// member; its open connections (event streams, exec channels) are cut when the removal's event arrives.

import { posix } from 'node:path';
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Member } from '../daemon/context.js';
import type { CertificateRecord } from '../store/schema.js';
import { TrustStore, derFingerprint, derToPem } from '../cluster/trust.js';
import { errorBody } from '../errors/index.js';
import { forwardedHeader } from './request.js';

/** Who sent a request. */
export type Identity =
  /** The unix socket: as trusted as root, like LXD's. */
  | { kind: 'unix' }
  /** Another member: it presented the cluster certificate. */
  | { kind: 'peer' }
  /** A client whose certificate is in the trust store. */
  | { kind: 'client'; certificate: CertificateRecord }
  /** Anyone else; `certificate` is what it presented (PEM), if anything. */
  | { kind: 'untrusted'; fingerprint: string | null; certificate: string | null };

/** What the policy decides for one request. */
export type Access = { allow: true } | { allow: false; status: number; message: string };

/** LXD's answer to anything an identity may not do (`response.Forbidden(nil)`). */
const refused: Access = { allow: false, status: 403, message: 'not authorized' };

/** What an untrusted client may do, as in LXD: learn about the server and present a token. */
const untrustedAllowed = new Set(['GET /', 'GET /1.0', 'POST /1.0/certificates']);

/** Paths of project-scoped objects a restricted client may change in the projects it is given. */
const projectScoped = [/^\/1\.0\/instances(\/|$)/, /^\/1\.0\/operations(\/|$)/, /^\/1\.0\/images(\/|$)/, /^\/1\.0\/storage-pools\/[^/]+\/volumes(\/|$)/];

/**
 * The path of a request URL at its most reachable: no query, `%xx` decoded, repeated slashes and dot
 * segments resolved, so no spelling of `/internal/...` slips past the policy.
 */
export function requestPath(url: string): string {
  const raw = url.split('?')[0] ?? '';
  let decoded = raw;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    // A malformed escape: judge the raw path (the router will not match it either).
  }
  return posix.normalize(`/${decoded}`);
}

/** The project a request names (`?project=`), `default` when it names none. */
function projectOfUrl(url: string): string {
  const query = url.includes('?') ? url.slice(url.indexOf('?') + 1) : '';
  return new URLSearchParams(query).get('project') || 'default';
}

/**
 * The trust policy, pure: may `identity` send `method` to `url`? Members and the unix socket may do
 * everything; clients never reach `/internal/`; a restricted client reads what is in its projects (and the
 * server, the cluster and the trust store), changes only project-scoped objects, and nothing cluster-wide
 * (server config, members, evacuations, the trust store: LXD asks an administrator for those).
 */
export function decideAccess(identity: Identity, method: string, url: string): Access {
  if (identity.kind === 'unix' || identity.kind === 'peer') return { allow: true };
  const path = requestPath(url);
  if (path === '/internal' || path.startsWith('/internal/')) return refused;
  if (identity.kind === 'untrusted') return untrustedAllowed.has(`${method} ${path}`) ? { allow: true } : refused;
  const cert = identity.certificate;
  // A metrics certificate (Prometheus' scraper) reads the metrics and nothing else, as in LXD.
  if (cert.type === 'metrics') return method === 'GET' && path === '/1.0/metrics' ? { allow: true } : refused;
  if (!cert.restricted) return { allow: true };
  if (method === 'GET' && (path === '/' || path === '/1.0' || path.startsWith('/1.0/certificates'))) return { allow: true };
  // Only the certificate of its own entry (the route checks that nothing else changes).
  if ((method === 'PUT' || method === 'PATCH') && path.startsWith('/1.0/certificates/')) return { allow: true };
  const project = projectOfUrl(url);
  if (!cert.projects.includes(project)) return refused;
  if (method === 'GET') return { allow: true };
  return projectScoped.some((re) => re.test(path)) ? { allow: true } : refused;
}

const identities = new WeakMap<FastifyRequest, Identity>();

/** The identity the authentication hook gave `req` (the unix socket's when the hook did not run). */
export function identityOf(req: FastifyRequest): Identity {
  return identities.get(req) ?? { kind: 'unix' };
}

/** True for identities LXD calls trusted (`auth: trusted` in `GET /1.0`). */
export function isTrusted(identity: Identity): boolean {
  return identity.kind !== 'untrusted';
}

/** The certificate a TLS connection presented: fingerprint and PEM, or null. Computed once per connection. */
const presented = new WeakMap<TLSSocket, { fingerprint: string; pem: string } | null>();
function presentedCertificate(socket: TLSSocket): { fingerprint: string; pem: string } | null {
  if (presented.has(socket)) return presented.get(socket) ?? null;
  const peer = typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate() : null;
  const raw = peer && 'raw' in peer && Buffer.isBuffer(peer.raw) ? peer.raw : null;
  const found = raw ? { fingerprint: derFingerprint(raw), pem: derToPem(raw) } : null;
  presented.set(socket, found);
  return found;
}

/**
 * Authenticate every request of `app` (one hook, before routing decides anything) and refuse what the
 * policy refuses with LXD's error. `origin` says which listener the app serves.
 */
export function registerAuthentication(app: FastifyInstance, member: Member, origin: 'unix' | 'https'): void {
  if (origin === 'unix') {
    app.addHook('onRequest', async (req) => {
      identities.set(req, { kind: 'unix' });
    });
    return;
  }
  const trust = new TrustStore(member.store);
  const connections = new ClientConnections();
  // A removed (or re-keyed) certificate's open connections end as soon as any member's removal is seen here.
  const unsubscribe = member.events.subscribe((event) => {
    const meta = event.metadata as { action?: unknown; source?: unknown } | null;
    if (event.type !== 'lifecycle' || typeof meta?.action !== 'string' || !meta.action.startsWith('certificate-')) return;
    if (typeof meta.source !== 'string') return;
    const fingerprint = meta.source.slice(meta.source.lastIndexOf('/') + 1);
    void connections.recheck(fingerprint, trust).catch((err: unknown) => member.log.warn({ err }, 'could not recheck a client certificate'));
  });
  app.addHook('onClose', async () => unsubscribe());

  app.addHook('onRequest', async (req, reply) => {
    const socket = req.raw.socket as TLSSocket;
    const cert = presentedCertificate(socket);
    let identity: Identity;
    if (cert && cert.fingerprint === member.cert.fingerprint) {
      identity = { kind: 'peer' };
    } else {
      // Only members forward requests between them; a client's claim to be one is dropped.
      delete req.headers[forwardedHeader];
      const record = cert ? await trust.get(cert.fingerprint) : null;
      if (record && record.type === 'client' && cert) {
        identity = { kind: 'client', certificate: record };
        connections.track(cert.fingerprint, socket);
      } else {
        identity = { kind: 'untrusted', fingerprint: cert?.fingerprint ?? null, certificate: cert?.pem ?? null };
      }
    }
    identities.set(req, identity);
    const access = decideAccess(identity, req.method, req.url);
    if (!access.allow) {
      if (identity.kind === 'client') member.log.warn({ url: req.url, method: req.method, client: identity.certificate.name }, 'refused a request of a restricted client');
      return reply.code(access.status).send(errorBody(access.status, access.message));
    }
  });
}

/** The open connections of trusted clients, by certificate fingerprint, so a removal can end them. */
class ClientConnections {
  private readonly byFingerprint = new Map<string, Set<TLSSocket>>();

  track(fingerprint: string, socket: TLSSocket): void {
    let set = this.byFingerprint.get(fingerprint);
    if (!set) {
      set = new Set();
      this.byFingerprint.set(fingerprint, set);
    }
    if (set.has(socket)) return;
    set.add(socket);
    socket.once('close', () => {
      set.delete(socket);
      if (set.size === 0 && this.byFingerprint.get(fingerprint) === set) this.byFingerprint.delete(fingerprint);
    });
  }

  /** End the connections of `fingerprint` if the trust store no longer holds it. */
  async recheck(fingerprint: string, trust: TrustStore): Promise<void> {
    const set = this.byFingerprint.get(fingerprint);
    if (!set || set.size === 0) return;
    if (await trust.get(fingerprint)) return;
    for (const socket of set) socket.destroy();
  }
}
