// Join tokens as LXD prints them: base64 of a JSON object naming the member, the secret, the
// cluster certificate fingerprint and where to reach the cluster (Roost adds the store URL).

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
