// The CLI's own TLS identity, as `lxc` has `client.crt`/`client.key`: created the first time a remote is
// added, presented to every remote, and what a cluster's trust store records. The key never leaves this
// machine and is readable by the user only.

import { readFileSync, writeFileSync, mkdirSync, chmodSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import selfsigned from 'selfsigned';
import { type CliEnv, cliConfigDir } from './config.js';

/** A certificate and its private key, PEM. */
export interface ClientIdentity {
  cert: string;
  key: string;
}

/** Where the client certificate and key live. */
export function identityPaths(env: CliEnv = process.env): { cert: string; key: string } {
  const dir = cliConfigDir(env);
  return { cert: join(dir, 'client.crt'), key: join(dir, 'client.key') };
}

/** The client identity, or null if none was created yet. */
export function readClientIdentity(env: CliEnv = process.env): ClientIdentity | null {
  const paths = identityPaths(env);
  try {
    return { cert: readFileSync(paths.cert, 'utf8'), key: readFileSync(paths.key, 'utf8') };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * The client identity, created if missing: EC P-384, ten years, client authentication, named
 * `<user>@<host>` as `lxc` names its own. `created` says whether it was made now.
 */
export async function ensureClientIdentity(env: CliEnv = process.env): Promise<{ identity: ClientIdentity; created: boolean }> {
  const existing = readClientIdentity(env);
  if (existing) return { identity: existing, created: false };
  let user = 'roost';
  try {
    user = userInfo().username;
  } catch {
    // No passwd entry for this uid: keep the generic name.
  }
  const pems = await selfsigned.generate([{ name: 'commonName', value: `${user}@${hostname()}` }, { name: 'organizationName', value: 'Roost' }], {
    keyType: 'ec',
    curve: 'P-384',
    notAfterDate: new Date(Date.now() + 10 * 365 * 24 * 3600 * 1000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', clientAuth: true },
    ],
  });
  const paths = identityPaths(env);
  mkdirSync(cliConfigDir(env), { recursive: true, mode: 0o700 });
  // The key first and private from its creation; the certificate alone is of no use to anyone.
  writeFileSync(paths.key, pems.private, { mode: 0o600, flag: 'wx' });
  chmodSync(paths.key, 0o600);
  writeFileSync(paths.cert, pems.cert, { mode: 0o600 });
  chmodSync(paths.cert, 0o600);
  return { identity: { cert: pems.cert, key: pems.private }, created: true };
}
