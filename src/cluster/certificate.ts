// The cluster certificate: one TLS identity shared by all members, as LXD's cluster.crt. Members serve
// HTTPS with it and present it as client certificate; a peer is trusted iff it presents the same one.

import { X509Certificate, createHash } from 'node:crypto';
import selfsigned from 'selfsigned';
import type { Store } from '../store/store.js';
import { keys, type ClusterCertificateRecord } from '../store/schema.js';

/** SHA-256 fingerprint of a PEM certificate, lower-case hex without colons (LXD's form). */
export function fingerprintOf(certPem: string): string {
  const der = new X509Certificate(certPem).raw;
  return createHash('sha256').update(der).digest('hex');
}

/** Generate a new cluster certificate (EC P-384, ten years, server and client auth). */
export async function generateClusterCertificate(): Promise<ClusterCertificateRecord> {
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'roost' }, { name: 'organizationName', value: 'Roost' }], {
    keyType: 'ec',
    curve: 'P-384',
    notAfterDate: new Date(Date.now() + 10 * 365 * 24 * 3600 * 1000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: 'roost' }, { type: 7, ip: '127.0.0.1' }] },
    ],
  });
  return { cert: pems.cert, key: pems.private, fingerprint: fingerprintOf(pems.cert) };
}

/**
 * The cluster's certificate: created by the first member that finds none (a compare-on-absence
 * transaction, so two bootstrapping members cannot both create one), else read.
 */
export async function ensureClusterCertificate(store: Store): Promise<ClusterCertificateRecord> {
  const existing = await store.get(keys.clusterCertificate());
  if (existing) return JSON.parse(existing.value) as ClusterCertificateRecord;
  const fresh = await generateClusterCertificate();
  const r = await store.txn([{ key: keys.clusterCertificate(), modRevision: 0 }], [
    { type: 'put', key: keys.clusterCertificate(), value: JSON.stringify(fresh) },
  ]);
  if (r.succeeded) return fresh;
  const winner = await store.get(keys.clusterCertificate());
  if (!winner) throw new Error('cluster certificate vanished while bootstrapping');
  return JSON.parse(winner.value) as ClusterCertificateRecord;
}
