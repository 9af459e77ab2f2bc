// The trust store: the client certificates the cluster trusts, kept in the cluster store under
// `certificates/<fingerprint>` so every member authenticates the same clients and a removal takes effect on
// every member at the next request (members read the record per request; nothing caches it).

import { X509Certificate, createHash } from 'node:crypto';
import type { Store } from '../store/store.js';
import { keys, type CertificateRecord } from '../store/schema.js';
import { errors } from '../errors/index.js';

/** A parsed certificate as the trust store needs it. */
export interface ParsedCertificate {
  pem: string;
  fingerprint: string;
  commonName: string;
}

/** SHA-256 of a DER certificate, lower-case hex without colons (LXD's fingerprint form). */
export function derFingerprint(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

/** Wrap DER bytes as PEM. */
export function derToPem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

/**
 * Parse a certificate given as PEM or as base64 DER (the form of LXD's `certificate` field in
 * `POST /1.0/certificates`) and check it as LXD does (valid now, RSA keys of 2048 bits at least).
 * Throws a 400 ApiError with LXD's words otherwise.
 */
export function parseCertificate(input: string | Buffer): ParsedCertificate {
  let cert: X509Certificate;
  try {
    if (Buffer.isBuffer(input)) cert = new X509Certificate(input);
    else if (input.includes('-----BEGIN CERTIFICATE-----')) cert = new X509Certificate(input);
    else cert = new X509Certificate(Buffer.from(input.trim(), 'base64'));
  } catch (err) {
    throw errors.badRequest(`Invalid certificate material: ${err instanceof Error ? err.message : String(err)}`);
  }
  const now = Date.now();
  if (now < Date.parse(cert.validFrom)) throw errors.badRequest("The provided certificate isn't valid yet");
  if (now > Date.parse(cert.validTo)) throw errors.badRequest('The provided certificate is expired');
  const key = cert.publicKey;
  if (key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
    throw errors.badRequest('RSA key is too weak (minimum of 2048bit)');
  }
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1] ?? '';
  return { pem: derToPem(cert.raw), fingerprint: derFingerprint(cert.raw), commonName: cn };
}

/** A trust store entry as LXD's API shows it (`api.Certificate`). */
export function certificateToApi(record: CertificateRecord): Record<string, unknown> {
  return {
    name: record.name,
    type: record.type,
    restricted: record.restricted,
    projects: record.projects,
    certificate: record.certificate,
    fingerprint: record.fingerprint,
  };
}

/** The ETag of an entry: a hash of what `lxc config trust edit` can change. */
export function certificateEtag(record: CertificateRecord): string {
  return createHash('sha256').update(JSON.stringify([record.name, record.type, record.restricted, record.projects, record.certificate])).digest('hex');
}

/** The fields of an entry a PUT or PATCH may change. */
export interface CertificateChange {
  name: string;
  type: CertificateRecord['type'];
  restricted: boolean;
  projects: string[];
  /** A new certificate (PEM) replaces the old one, and with it the fingerprint. */
  certificate?: ParsedCertificate;
}

/** Reads and writes the trust store. */
export class TrustStore {
  constructor(private readonly store: Store) {}

  /** The entry for exactly this fingerprint, or null: what authentication asks on every request. */
  async get(fingerprint: string): Promise<CertificateRecord | null> {
    const kv = await this.store.get(keys.certificate(fingerprint));
    return kv ? (JSON.parse(kv.value) as CertificateRecord) : null;
  }

  /** Every entry, by fingerprint. */
  async list(): Promise<CertificateRecord[]> {
    const { kvs } = await this.store.range(keys.certificates());
    return kvs.map((kv) => JSON.parse(kv.value) as CertificateRecord).sort((a, b) => a.fingerprint.localeCompare(b.fingerprint));
  }

  /** The one entry whose fingerprint starts with `prefix` (LXD accepts the 12 characters `list` shows). */
  async find(prefix: string): Promise<CertificateRecord> {
    const wanted = prefix.toLowerCase();
    const matches = wanted === '' ? [] : (await this.list()).filter((r) => r.fingerprint.startsWith(wanted));
    if (matches.length > 1) throw errors.badRequest('More than one certificate matches');
    const [match] = matches;
    if (!match) throw errors.notFound('Certificate not found');
    return match;
  }

  /** Add an entry; 409 if the certificate is trusted already (one transaction, so two adds cannot both win). */
  async add(record: CertificateRecord): Promise<void> {
    const key = keys.certificate(record.fingerprint);
    const r = await this.store.txn([{ key, modRevision: 0 }], [{ type: 'put', key, value: JSON.stringify(record) }]);
    if (!r.succeeded) throw errors.conflict('Certificate already in trust store');
  }

  /** Apply a change to the entry `fingerprint`; `etag`, when given, must be the entry's current one (else 412). */
  async update(fingerprint: string, change: CertificateChange, etag?: string): Promise<CertificateRecord> {
    const key = keys.certificate(fingerprint);
    const kv = await this.store.get(key);
    if (!kv) throw errors.notFound('Certificate not found');
    const current = JSON.parse(kv.value) as CertificateRecord;
    if (etag !== undefined && etag !== certificateEtag(current)) throw errors.preconditionFailed();
    const next: CertificateRecord = {
      ...current,
      name: change.name,
      type: change.type,
      restricted: change.restricted,
      projects: change.projects,
      ...(change.certificate ? { certificate: change.certificate.pem, fingerprint: change.certificate.fingerprint } : {}),
    };
    if (next.fingerprint === current.fingerprint) {
      const r = await this.store.txn([{ key, modRevision: kv.modRevision }], [{ type: 'put', key, value: JSON.stringify(next) }]);
      if (!r.succeeded) throw errors.conflict('The certificate changed meanwhile; try again');
      return next;
    }
    // A new certificate moves the entry to its new fingerprint; the old one stops being trusted at once.
    const newKey = keys.certificate(next.fingerprint);
    const r = await this.store.txn(
      [{ key, modRevision: kv.modRevision }, { key: newKey, modRevision: 0 }],
      [{ type: 'delete', key }, { type: 'put', key: newKey, value: JSON.stringify(next) }],
    );
    if (!r.succeeded) {
      if (await this.store.get(newKey)) throw errors.conflict('Certificate already in trust store');
      throw errors.conflict('The certificate changed meanwhile; try again');
    }
    return next;
  }

  /** Remove the entry; the client it named is refused from its next request on, on every member. */
  async remove(fingerprint: string): Promise<void> {
    const key = keys.certificate(fingerprint);
    const kv = await this.store.get(key);
    if (!kv) throw errors.notFound('Certificate not found');
    const r = await this.store.txn([{ key, modRevision: kv.modRevision }], [{ type: 'delete', key }]);
    if (!r.succeeded) throw errors.conflict('The certificate changed meanwhile; try again');
  }
}
