// `/1.0/certificates...`: the trust store, as LXD 5.0.2 serves it. `lxc config trust add` (a token:
// `POST` with `token: true`, whose operation stays Running until the token is used, revoked or expires),
// `lxc remote add <name> <token>` (an untrusted client's `POST` with the whole token as `password`; newer
// clients send it as `trust_token`), `lxc config trust list|show|edit|remove`.

import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Router } from '../server.js';
import { async as asyncReply, created, sync } from '../envelope.js';
import { param, parseBody, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import { identityOf, isTrusted, type Identity } from '../auth.js';
import { TrustStore, certificateEtag, certificateToApi, parseCertificate, type ParsedCertificate } from '../../cluster/trust.js';
import { issueToken, consumeToken, TokenRefused } from '../../cluster/tokens.js';
import { decodeTrustToken } from '../../cluster/token.js';
import type { CertificateRecord } from '../../store/schema.js';
import type { Member } from '../../daemon/context.js';

const certificateTypes = ['client', 'metrics'] as const;

const postBody = z.object({
  name: z.string().optional(),
  type: z.string().optional(),
  restricted: z.boolean().optional(),
  projects: z.array(z.string()).nullable().optional(),
  certificate: z.string().optional(),
  password: z.string().optional(),
  token: z.boolean().optional(),
  trust_token: z.string().optional(),
}).passthrough();

const putBody = z.object({
  name: z.string().optional(),
  type: z.string().optional(),
  restricted: z.boolean().optional(),
  projects: z.array(z.string()).nullable().optional(),
  certificate: z.string().optional(),
}).passthrough();

/** What a trust token grants, as its operation keeps it (LXD's `metadata.request`). */
const grantedRequest = z.object({
  name: z.string(),
  restricted: z.boolean().optional(),
  projects: z.array(z.string()).nullable().optional(),
}).passthrough();

/** LXD's certificate types; anything else is refused with LXD's words. */
function certificateType(type: string | undefined): CertificateRecord['type'] {
  const found = certificateTypes.find((t) => t === type);
  if (!found) throw errors.badRequest(`Invalid certificate type "${type ?? ''}"`);
  return found;
}

/** True for identities that may administer the trust store (LXD's admin: everything but restricted clients). */
function isAdmin(identity: Identity): boolean {
  return identity.kind === 'unix' || identity.kind === 'peer' || (identity.kind === 'client' && !identity.certificate.restricted);
}

/** A name a token can carry: it is also part of the token's key in the store. */
function checkTokenName(name: string): void {
  if (name.trim() === '' || name.includes('/') || /\p{Cc}/u.test(name) || name.length > 255) {
    throw errors.badRequest('A trust token needs a client name (no "/", at most 255 characters)');
  }
}

/** Every member's address a client may reach the cluster at, this member first (LXD puts its own there). */
async function clusterAddresses(m: Member): Promise<string[]> {
  const others = (await m.cluster.members())
    .filter((v) => v.record.name !== m.name && v.status === 'Online')
    .map((v) => v.record.address)
    .sort();
  return [m.address, ...others.filter((a) => a !== m.address)];
}

/** Register the trust store routes. */
export function registerCertificateRoutes(r: Router): void {
  const m = r.member;
  const trust = new TrustStore(m.store);

  r.on('GET', '/1.0/certificates', async (req, reply) => {
    const all = await trust.list();
    return sync(reply, recursion(req) > 0 ? all.map(certificateToApi) : all.map((c) => `/1.0/certificates/${c.fingerprint}`));
  });

  r.on('POST', '/1.0/certificates', async (req, reply) => {
    const identity = identityOf(req);
    const body = parseBody(req, postBody);
    if (body.token && body.certificate) throw errors.badRequest("Can't use certificate if token is requested");
    if (body.token && body.type !== 'client') throw errors.badRequest('Tokens can only be issued for client certificates');
    if (isTrusted(identity) && !body.certificate && !body.token) throw errors.badRequest('Client is already trusted');

    let request: { name: string; type: CertificateRecord['type']; restricted: boolean; projects: string[] };
    if (isAdmin(identity)) {
      request = {
        name: body.name ?? '',
        type: certificateType(body.type),
        restricted: body.restricted ?? false,
        projects: body.projects ?? [],
      };
    } else {
      if (body.token) throw errors.forbidden('not authorized');
      const presented = body.trust_token ?? body.password ?? '';
      if (presented === '') throw errors.forbidden('not authorized');
      // Roost has no trust password: only a trust token admits a client.
      const token = decodeTrustToken(presented);
      if (!token) throw errors.forbidden('not authorized');
      // The certificate to trust comes from the connection; without one the token is kept for a later try.
      if (identity.kind !== 'untrusted' || !identity.certificate) throw errors.badRequest('No client certificate provided');
      let op;
      try {
        op = await consumeToken(m.store, m.events, 'trust', token.client_name, token.secret);
      } catch (err) {
        if (err instanceof TokenRefused && err.reason === 'expired') throw errors.forbidden('Token has expired');
        if (err instanceof TokenRefused) throw errors.forbidden('No matching certificate add operation found');
        throw err;
      }
      const granted = grantedRequest.safeParse(op?.metadata?.request);
      if (!granted.success) throw errors.internal('Bad certificate add operation data');
      // What the token grants, not what the client asks for.
      request = { name: granted.data.name, type: 'client', restricted: granted.data.restricted ?? false, projects: granted.data.projects ?? [] };
    }

    if (body.token) return issueTrustToken(m, reply, request);

    let cert: ParsedCertificate;
    if (body.certificate) cert = parseCertificate(body.certificate);
    else if (identity.kind === 'untrusted' && identity.certificate) cert = parseCertificate(identity.certificate);
    else if (identity.kind === 'unix') throw errors.badRequest("Can't use TLS data on non-TLS link");
    else throw errors.badRequest('No client certificate provided');

    const record: CertificateRecord = {
      fingerprint: cert.fingerprint,
      type: request.type,
      name: request.name || cert.commonName || req.ip,
      certificate: cert.pem,
      restricted: request.restricted,
      projects: request.projects,
      createdAt: new Date().toISOString(),
    };
    await trust.add(record);
    const url = `/1.0/certificates/${record.fingerprint}`;
    m.events.lifecycle('certificate-created', url, { name: record.name });
    return created(reply, url);
  });

  r.on('GET', '/1.0/certificates/:fingerprint', async (req, reply) => {
    const record = await trust.find(param(req, 'fingerprint'));
    return sync(reply, certificateToApi(record), certificateEtag(record));
  });

  const update = (replace: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    const identity = identityOf(req);
    const current = await trust.find(param(req, 'fingerprint'));
    const ifMatch = req.headers['if-match'];
    const etag = typeof ifMatch === 'string' && ifMatch !== '' ? ifMatch.replace(/^"|"$/g, '') : undefined;
    if (etag !== undefined && etag !== certificateEtag(current)) throw errors.preconditionFailed();
    const body = parseBody(req, putBody);
    const wanted = {
      name: body.name ?? (replace ? '' : current.name),
      type: certificateType(body.type ?? (replace ? undefined : current.type)),
      restricted: body.restricted ?? (replace ? false : current.restricted),
      projects: body.projects ?? (replace ? [] : current.projects),
    };
    const newPem = body.certificate !== undefined && body.certificate !== '' ? body.certificate : null;
    const certificate = newPem !== null && newPem.trim() !== current.certificate.trim() ? parseCertificate(newPem) : undefined;
    if (!isAdmin(identity)) {
      // A restricted client may only renew its own certificate, as in LXD.
      if (identity.kind !== 'client' || identity.certificate.fingerprint !== current.fingerprint) throw errors.forbidden('not authorized');
      const same = wanted.name === current.name && wanted.restricted === current.restricted && wanted.projects.join('\n') === current.projects.join('\n');
      if (!same) throw errors.forbidden('Only the certificate can be changed');
      wanted.type = current.type;
    }
    await trust.update(current.fingerprint, { ...wanted, certificate }, etag);
    m.events.lifecycle('certificate-updated', `/1.0/certificates/${current.fingerprint}`);
    return sync(reply, {});
  };
  r.on('PUT', '/1.0/certificates/:fingerprint', update(true));
  r.on('PATCH', '/1.0/certificates/:fingerprint', update(false));

  r.on('DELETE', '/1.0/certificates/:fingerprint', async (req, reply) => {
    if (!isAdmin(identityOf(req))) throw errors.forbidden('not authorized');
    const record = await trust.find(param(req, 'fingerprint'));
    await trust.remove(record.fingerprint);
    // Every member's authentication hook ends the removed client's open connections when this arrives.
    m.events.lifecycle('certificate-deleted', `/1.0/certificates/${record.fingerprint}`, { name: record.name });
    return sync(reply, {});
  });
}

/**
 * `lxc config trust add --name <client>`: a trust token behind a Running operation, whose metadata the
 * client prints the token from (`secret`, `fingerprint`, `addresses`, `request.name`, `expiresAt`).
 */
async function issueTrustToken(
  m: Member,
  reply: FastifyReply,
  request: { name: string; restricted: boolean; projects: string[] },
): Promise<FastifyReply> {
  checkTokenName(request.name);
  const addresses = await clusterAddresses(m);
  const op = await issueToken(m.store, m.events, {
    kind: 'trust',
    name: request.name,
    description: 'Executing operation',
    location: m.name,
    metadata: (secret, expiresAt) => ({
      secret,
      fingerprint: m.cert.fingerprint,
      addresses,
      request: { name: request.name, type: 'client', restricted: request.restricted, projects: request.projects, certificate: '', password: '', token: true },
      expiresAt,
    }),
  });
  return asyncReply(reply, op);
}
