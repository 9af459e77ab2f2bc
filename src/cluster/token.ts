// Tokens as LXD prints them. A join token is base64 of a JSON object naming the member, the secret, the
// cluster certificate fingerprint and where to reach the cluster (Roost adds the store URL); a trust token
// names the client, the secret, the certificate the members present and their addresses.

import { z } from 'zod';

/** The decoded token. */
export interface JoinToken {
  server_name: string;
  secret: string;
  fingerprint: string;
  addresses: string[];
  expires_at: string;
  store: string;
}

/** Encode a token for printing. */
export function encodeJoinToken(token: JoinToken): string {
  return Buffer.from(JSON.stringify(token)).toString('base64');
}

/** Decode a printed token; throws a user-facing error if it is not one. */
export function decodeJoinToken(text: string): JoinToken {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(text.trim(), 'base64').toString('utf8')) as unknown;
  } catch {
    throw new Error('the join token is malformed');
  }
  const t = value as Partial<JoinToken>;
  if (!t || typeof t.server_name !== 'string' || typeof t.secret !== 'string') throw new Error('the join token is malformed');
  return {
    server_name: t.server_name,
    secret: t.secret,
    fingerprint: t.fingerprint ?? '',
    addresses: t.addresses ?? [],
    expires_at: t.expires_at ?? '',
    store: t.store ?? '',
  };
}

/** A trust token as LXD 5.0.2 prints it (`lxc config trust add`; `api.CertificateAddToken`). */
export interface TrustToken {
  client_name: string;
  fingerprint: string;
  addresses: string[];
  secret: string;
  expires_at: string;
}

/** Encode a trust token for printing. */
export function encodeTrustToken(token: TrustToken): string {
  return Buffer.from(JSON.stringify(token)).toString('base64');
}

/**
 * Decode a printed trust token, or null if `text` is not one (LXD's client tells a token from an address
 * this way, and the server a token from a trust password): every field LXD requires must be there.
 */
export function decodeTrustToken(text: string): TrustToken | null {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9+/]+=*$/.test(trimmed)) return null;
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(trimmed, 'base64').toString('utf8')) as unknown;
  } catch {
    return null;
  }
  if (!value || typeof value !== 'object') return null;
  const t = value as Partial<Record<keyof TrustToken, unknown>>;
  const addresses = Array.isArray(t.addresses) ? t.addresses.filter((a): a is string => typeof a === 'string') : [];
  if (typeof t.client_name !== 'string' || t.client_name === '') return null;
  if (typeof t.secret !== 'string' || t.secret === '') return null;
  if (typeof t.fingerprint !== 'string' || t.fingerprint === '' || addresses.length === 0) return null;
  return { client_name: t.client_name, fingerprint: t.fingerprint, addresses, secret: t.secret, expires_at: typeof t.expires_at === 'string' ? t.expires_at : '' };
}

/** The metadata of the operation `POST /1.0/cluster/members` answers (LXD's token operation, plus the store URL). */
const tokenOperation = z.object({
  metadata: z.object({
    serverName: z.string(),
    secret: z.string(),
    fingerprint: z.string(),
    addresses: z.array(z.string()),
    expiresAt: z.string(),
    store: z.string(),
  }),
});

/** The printable token of a join-token operation (what `roost cluster add` prints and `roostd --join` takes). */
export function joinTokenOf(operation: unknown): string {
  const parsed = tokenOperation.safeParse(operation);
  if (!parsed.success) throw new Error('the server answered no join token');
  const t = parsed.data.metadata;
  return encodeJoinToken({ server_name: t.serverName, secret: t.secret, fingerprint: t.fingerprint, addresses: t.addresses, expires_at: t.expiresAt, store: t.store });
}
