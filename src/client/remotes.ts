// Remotes as `lxc remote` has them: which endpoint a remote name means, and adding one, either from a
// trust token (`roost config trust add` on a member prints it: the addresses to try, the fingerprint of
// the certificate the members present, and a one-time secret) or from an address whose certificate the
// user accepts (for a client that is trusted already). The command layer prints; this module decides.

import { X509Certificate } from 'node:crypto';
import { connect } from 'node:tls';
import { decodeTrustToken } from '../cluster/token.js';
import { ApiClientError, RoostClient, type Endpoint } from './client.js';
import { type CliEnv, type RemoteConfig, localRemote, readCliConfig, resolveSocketPath, updateCliConfig } from './config.js';
import { ensureClientIdentity, readClientIdentity } from './identity.js';
import { str } from './json.js';

/** LXD's default HTTPS port, for addresses given without one. */
const defaultPort = 8443;

/** How long to wait for a remote's TLS handshake when fetching its certificate. */
const handshakeTimeoutMs = 10_000;

/** The endpoint a remote name means: `local` is the member on this host, others are HTTPS remotes. */
export function endpointOf(remote: string, env: CliEnv = process.env): Endpoint {
  if (remote === localRemote) return { kind: 'unix', socketPath: resolveSocketPath(env) };
  const config = readCliConfig(env)?.remotes[remote];
  if (!config) throw new Error(`The remote "${remote}" doesn't exist`);
  const identity = readClientIdentity(env);
  if (!identity) throw new Error(`No client certificate (it is made when a remote is added); remove "${remote}" and add it again`);
  return { kind: 'https', address: hostPort(config.addr), identity, serverCertificate: config.certificate };
}

/** `host:port` of `https://host:port` (or of `host[:port]`, the port defaulting to LXD's). */
export function hostPort(addr: string): string {
  const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(addr) ? addr : `https://${addr}`);
  if (url.protocol !== 'https:') throw new Error(`Invalid URL scheme "${url.protocol.replace(/:$/, '')}" in "${addr}"`);
  return `${url.hostname}:${url.port || defaultPort}`;
}

/** The certificate a TLS server presents (whatever it is), PEM, and its SHA-256 fingerprint (LXD's form). */
export function fetchServerCertificate(address: string): Promise<{ pem: string; fingerprint: string }> {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(i + 1));
  return new Promise((resolve, reject) => {
    // Nothing is sent over this connection: it only shows the certificate, which the caller then pins.
    const socket = connect({ host, port, rejectUnauthorized: false, servername: /^[\d.]+$|:/.test(host) ? undefined : host });
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS answer from ${address} within ${handshakeTimeoutMs / 1000} s`)), handshakeTimeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const raw = socket.getPeerCertificate().raw;
      socket.end();
      if (!Buffer.isBuffer(raw)) {
        reject(new Error(`${address} presented no certificate`));
        return;
      }
      const cert = new X509Certificate(raw);
      resolve({ pem: cert.toString(), fingerprint: cert.fingerprint256.replaceAll(':', '').toLowerCase() });
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** What adding a remote did, for the command to report. */
export interface AddedRemote {
  name: string;
  addr: string;
  /** The client certificate was created by this call. */
  createdIdentity: boolean;
  /** The cluster trusted this client's certificate because of the token (false: it was trusted already). */
  addedToTrustStore: boolean;
}

/** How adding a remote from an address asks the user to accept the server's certificate. */
export type AcceptCertificate = (fingerprint: string) => Promise<boolean>;

function checkNewRemoteName(name: string, env: CliEnv): void {
  if (name.includes(':')) throw new Error('Remote names may not contain colons');
  if (name === '' || name.includes('/')) throw new Error(`Invalid remote name "${name}"`);
  if (name === localRemote) throw new Error(`Remote ${localRemote} exists as <unix socket of the local member>`);
  const existing = readCliConfig(env)?.remotes[name];
  if (existing) throw new Error(`Remote ${name} exists as <${existing.addr}>`);
}

/** Is this client trusted by the server at `endpoint`? (`GET /1.0`'s `auth`.) */
async function isTrusted(endpoint: Endpoint): Promise<boolean> {
  const client = new RoostClient(endpoint);
  try {
    return str(await client.get('/1.0'), 'auth') === 'trusted';
  } finally {
    await client.close();
  }
}

function saveRemote(name: string, remote: RemoteConfig, env: CliEnv): void {
  updateCliConfig((config) => ({ ...config, remotes: { ...config.remotes, [name]: remote } }), env);
}

/** Errors that mean "try the next address" (nothing answered there). */
function unreachable(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' && ['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN'].includes(code);
}

/**
 * Add remote `name` from a trust token: the first of its addresses that answers and presents the
 * certificate the token names gets this client's certificate trusted (the token is used up), then the
 * remote is saved, pinned to that certificate.
 */
export async function addRemoteFromToken(name: string, token: string, env: CliEnv = process.env): Promise<AddedRemote> {
  checkNewRemoteName(name, env);
  const decoded = decodeTrustToken(token);
  if (!decoded) throw new Error('This is not a trust token (roost config trust add prints one)');
  const { identity, created } = await ensureClientIdentity(env);
  const failures: string[] = [];
  for (const address of decoded.addresses) {
    let server: { pem: string; fingerprint: string };
    try {
      server = await fetchServerCertificate(address);
    } catch (err) {
      if (!unreachable(err) && !(err instanceof Error && /no TLS answer/.test(err.message))) throw err;
      failures.push(`${address}: ${err instanceof Error ? err.message : String(err)}`);
      continue;
    }
    if (server.fingerprint !== decoded.fingerprint.toLowerCase()) {
      throw new Error(`Certificate fingerprint mismatch between certificate token and server "https://${address}"`);
    }
    const endpoint: Endpoint = { kind: 'https', address, identity, serverCertificate: server.pem };
    await presentToken(endpoint, token);
    if (!(await isTrusted(endpoint))) throw new Error("Server doesn't trust us after authentication");
    const addr = `https://${address}`;
    saveRemote(name, { addr, certificate: server.pem }, env);
    return { name, addr, createdIdentity: created, addedToTrustStore: true };
  }
  throw new Error(`All server addresses are unavailable (${failures.join('; ')})`);
}

async function presentToken(endpoint: Endpoint, token: string): Promise<void> {
  const client = new RoostClient(endpoint);
  try {
    await client.request('POST', '/1.0/certificates', { type: 'client', trust_token: token });
  } catch (err) {
    if (err instanceof ApiClientError) throw new Error(`Failed to create certificate: ${err.message}`);
    throw err;
  } finally {
    await client.close();
  }
}

/**
 * Add remote `name` at `addr` for a client the cluster trusts already (its certificate was added with
 * `roost config trust add <cert>`): the server's certificate is shown to `accept` and pinned if accepted.
 */
export async function addRemoteFromAddress(name: string, addr: string, accept: AcceptCertificate, env: CliEnv = process.env): Promise<AddedRemote> {
  checkNewRemoteName(name, env);
  const address = hostPort(addr);
  const { identity, created } = await ensureClientIdentity(env);
  const server = await fetchServerCertificate(address);
  if (!(await accept(server.fingerprint))) throw new Error('Server certificate NACKed by user');
  const endpoint: Endpoint = { kind: 'https', address, identity, serverCertificate: server.pem };
  if (!(await isTrusted(endpoint))) {
    throw new Error(
      `The server does not trust this client; on one of its members run "roost config trust add --name <client>" and add the remote with the token it prints (roost remote add ${name} <token>)`,
    );
  }
  saveRemote(name, { addr: `https://${address}`, certificate: server.pem }, env);
  return { name, addr: `https://${address}`, createdIdentity: created, addedToTrustStore: false };
}

/** Remove remote `name` (not the default one, not `local`). */
export function removeRemote(name: string, env: CliEnv = process.env): void {
  const config = readCliConfig(env);
  if (name === localRemote) throw new Error(`Remote ${localRemote} is static and cannot be modified`);
  if (!config?.remotes[name]) throw new Error(`Remote ${name} doesn't exist`);
  if ((config.defaultRemote ?? localRemote) === name) throw new Error("Can't remove the default remote");
  updateCliConfig((c) => ({ ...c, remotes: Object.fromEntries(Object.entries(c.remotes).filter(([k]) => k !== name)) }), env);
}

/** Make `name` the remote names without `<remote>:` go to. */
export function switchRemote(name: string, env: CliEnv = process.env): void {
  if (name !== localRemote && !readCliConfig(env)?.remotes[name]) throw new Error(`Remote ${name} doesn't exist`);
  updateCliConfig((c) => ({ ...c, defaultRemote: name }), env);
}
