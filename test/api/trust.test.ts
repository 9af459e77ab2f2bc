// The API on the members' HTTPS addresses with LXD's trust model: an untrusted client learns only what it
// needs to present a token, a trust token admits one certificate once (on any member), a trusted client
// reaches the API (requests for another member's objects forwarded) but never the member-to-member routes,
// and a removed certificate is refused at its next request on every member (its open event streams cut).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Client } from 'undici';
import WebSocket from 'ws';
import selfsigned from 'selfsigned';
import { startCluster, waitFor, type RawResponse, type TestCluster, type Envelope } from '../helpers/cluster.js';
import { assertError, syncMetadata } from '../helpers/envelope.js';
import { trustTokenOf } from '../../src/cli/commands/trust.js';
import { fetchServerCertificate } from '../../src/client/remotes.js';
import { pinnedTls } from '../../src/client/client.js';
import type { ClientIdentity } from '../../src/client/identity.js';

let c: TestCluster;
const addresses = new Map<string, string>();
let serverCertificate = '';

/** A fresh client certificate, as `lxc` or `roost` makes one. */
async function newIdentity(name: string): Promise<ClientIdentity> {
  const pems = await selfsigned.generate([{ name: 'commonName', value: name }], { keyType: 'ec', curve: 'P-384' });
  return { cert: pems.cert, key: pems.private };
}

/** One request to `member`'s HTTPS address presenting `identity` (null: no client certificate). */
async function https(member: string, identity: ClientIdentity | null, method: string, path: string, json?: unknown, headers: Record<string, string> = {}): Promise<RawResponse> {
  const address = addresses.get(member);
  assert.ok(address, `the address of ${member}`);
  const tls = identity ? pinnedTls(identity, serverCertificate) : { ca: serverCertificate, checkServerIdentity: () => undefined };
  const client = new Client(`https://${address}`, { connect: tls });
  try {
    const res = await client.request({
      method: method as 'GET',
      path,
      headers: { ...headers, ...(json === undefined ? {} : { 'content-type': 'application/json' }) },
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    const text = await res.body.text();
    let body: Envelope | null = null;
    try {
      body = JSON.parse(text) as Envelope;
    } catch {
      body = null;
    }
    const flat: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') flat[k] = v;
    return { status: res.statusCode, headers: flat, text, body };
  } finally {
    await client.close();
  }
}

/** A trust token issued on `member`'s socket, and its operation id. */
async function issueTrustToken(member: string, name: string): Promise<{ token: string; operation: string }> {
  const res = await c.raw(member, 'POST', '/1.0/certificates', { json: { name, type: 'client', token: true } });
  assert.equal(res.status, 202, res.text);
  const token = trustTokenOf(res.body?.metadata);
  assert.ok(token, 'the operation carries a trust token');
  return { token: token.token, operation: token.id };
}

/** `identity` presents `token` to `member`, as `lxc remote add <name> <token>` does. */
function presentToken(member: string, identity: ClientIdentity | null, token: string): Promise<RawResponse> {
  return https(member, identity, 'POST', '/1.0/certificates', { type: 'client', password: token });
}

/** SHA-256 fingerprint of a PEM certificate, as the trust store keys it. */
async function fingerprintOf(identity: ClientIdentity): Promise<string> {
  const { X509Certificate } = await import('node:crypto');
  return new X509Certificate(identity.cert).fingerprint256.replaceAll(':', '').toLowerCase();
}

async function trustedFingerprints(): Promise<string[]> {
  return (syncMetadata(await c.raw('m01', 'GET', '/1.0/certificates')) as string[]).map((u) => u.split('/').pop() ?? '').sort();
}

describe('remote clients on HTTPS with the trust store', () => {
  before(async () => {
    c = await startCluster({ members: 2 });
    for (const m of syncMetadata(await c.raw('m01', 'GET', '/1.0/cluster/members?recursion=1')) as { server_name: string; url: string }[]) {
      addresses.set(m.server_name, m.url.replace(/^https:\/\//, ''));
    }
    serverCertificate = (await fetchServerCertificate(addresses.get('m01') ?? '')).pem;
  });
  after(async () => {
    await c?.stop();
  });

  it('an untrusted client gets LXD\'s reduced GET /1.0 and 403 "not authorized" for everything else, changing nothing', async () => {
    const stranger = await newIdentity('stranger');
    for (const identity of [stranger, null]) {
      const info = syncMetadata(await https('m01', identity, 'GET', '/1.0')) as Record<string, unknown>;
      assert.deepEqual(Object.keys(info).sort(), ['api_extensions', 'api_status', 'api_version', 'auth', 'auth_methods', 'public']);
      assert.equal(info.auth, 'untrusted');
      assert.deepEqual(info.auth_methods, ['tls']);
      assert.equal(info.public, false);
    }
    const before = await c.world();
    assertError(await https('m01', stranger, 'GET', '/1.0/instances'), 403, 'not authorized');
    assertError(await https('m02', stranger, 'GET', '/1.0/cluster/members'), 403, 'not authorized');
    assertError(await https('m01', stranger, 'PATCH', '/1.0', { config: { 'cluster.offline_threshold': '99' } }), 403, 'not authorized');
    assertError(await https('m01', stranger, 'GET', '/internal/capacity'), 403, 'not authorized');
    assertError(await https('m01', stranger, 'POST', '/1.0/certificates', { type: 'client', password: 'not-a-token' }), 403, 'not authorized');
    assert.equal(await c.world(), before);
    assert.deepEqual(await trustedFingerprints(), []);
  });

  it('a trust token issued on one member admits the certificate presenting it on another, once', async () => {
    const { token, operation } = await issueTrustToken('m01', 'laptop');
    assert.equal((syncMetadata(await c.raw('m02', 'GET', `/1.0/operations/${operation}`)) as { status: string }).status, 'Running');
    const laptop = await newIdentity('laptop');
    const added = await presentToken('m02', laptop, token);
    assert.equal(added.status, 201, added.text);
    const fp = await fingerprintOf(laptop);
    assert.equal(added.headers.location, `/1.0/certificates/${fp}`);
    assert.equal((syncMetadata(await https('m01', laptop, 'GET', '/1.0')) as { auth: string }).auth, 'trusted');
    const entry = syncMetadata(await c.raw('m01', 'GET', `/1.0/certificates/${fp}`)) as Record<string, unknown>;
    assert.deepEqual({ name: entry.name, type: entry.type, restricted: entry.restricted, fingerprint: entry.fingerprint }, { name: 'laptop', type: 'client', restricted: false, fingerprint: fp });
    assert.equal((syncMetadata(await c.raw('m01', 'GET', `/1.0/operations/${operation}`)) as { status: string }).status, 'Success');

    // Used: it admits nobody else.
    const thief = await newIdentity('thief');
    assertError(await presentToken('m01', thief, token), 403, 'No matching certificate add operation found');
    assert.equal((syncMetadata(await https('m01', thief, 'GET', '/1.0')) as { auth: string }).auth, 'untrusted');
    assert.deepEqual(await trustedFingerprints(), [fp]);
    await c.raw('m01', 'DELETE', `/1.0/certificates/${fp}`);
  });

  it('a revoked trust token admits nobody and its operation ends cancelled', async () => {
    const { token, operation } = await issueTrustToken('m02', 'tablet');
    const revoked = await c.raw('m01', 'DELETE', `/1.0/operations/${operation}`);
    assert.equal(revoked.status, 200, revoked.text);
    assert.equal((syncMetadata(await c.raw('m02', 'GET', `/1.0/operations/${operation}`)) as { status: string }).status, 'Cancelled');
    assertError(await presentToken('m02', await newIdentity('tablet'), token), 403, 'No matching certificate add operation found');
    assert.deepEqual(await trustedFingerprints(), []);
  });

  it('a trusted client\'s request for another member\'s instance is forwarded, a forged forwarding header is ignored, and /internal stays closed', async () => {
    const client = await newIdentity('ops');
    const { token } = await issueTrustToken('m01', 'ops');
    assert.equal((await presentToken('m01', client, token)).status, 201);
    await c.launch('p1', { target: 'm02' });

    // m01 forwards to m02 (which trusts m01 as a member); a client claiming to be a member is not believed.
    const stop = await https('m01', client, 'PUT', '/1.0/instances/p1/state', { action: 'stop', timeout: 10 }, { 'x-roost-forwarded': 'm01' });
    assert.equal(stop.status, 202, stop.text);
    // Stopped, and the stop recorded (the record is written once the process is gone).
    await waitFor('p1 stopped', async () => {
      const v = await c.instance('p1');
      return v.status === 'Stopped' && v.config['volatile.last_state.power'] === 'STOPPED';
    });
    const listed = syncMetadata(await https('m01', client, 'GET', '/1.0/instances?recursion=1')) as { name: string; location: string }[];
    assert.deepEqual(listed.map((i) => [i.name, i.location]), [['p1', 'm02']]);

    const before = await c.world();
    assertError(await https('m02', client, 'GET', '/internal/capacity'), 403, 'not authorized');
    assertError(await https('m02', client, 'GET', '/internal/instances/state'), 403, 'not authorized');
    assertError(await https('m02', client, 'POST', '/internal/instances/start', { name: 'p1' }), 403, 'not authorized');
    assertError(await https('m02', client, 'GET', '//internal//capacity'), 403, 'not authorized');
    assertError(await https('m02', client, 'GET', '/%69nternal/capacity'), 403, 'not authorized');
    assert.equal(await c.world(), before);
    assert.equal((await c.instance('p1')).status, 'Stopped');
    await c.raw('m01', 'DELETE', `/1.0/certificates/${await fingerprintOf(client)}`);
  });

  it('a removed certificate is refused at its next request on every member', async () => {
    const laptop = await newIdentity('laptop2');
    const { token } = await issueTrustToken('m01', 'laptop2');
    assert.equal((await presentToken('m01', laptop, token)).status, 201);
    for (const m of ['m01', 'm02']) syncMetadata(await https(m, laptop, 'GET', '/1.0/instances'));
    // An open event stream of the client, on the member that does not handle the removal.
    const events = new WebSocket(`wss://${addresses.get('m01') ?? ''}/1.0/events`, pinnedTls(laptop, serverCertificate));
    await once(events, 'open');
    let closed = false;
    events.once('close', () => {
      closed = true;
    });
    const fp = await fingerprintOf(laptop);
    const removed = await c.raw('m02', 'DELETE', `/1.0/certificates/${fp.slice(0, 12)}`);
    assert.equal(removed.status, 200, removed.text);
    for (const m of ['m01', 'm02']) {
      assertError(await https(m, laptop, 'GET', '/1.0/instances'), 403, 'not authorized');
      assert.equal((syncMetadata(await https(m, laptop, 'GET', '/1.0')) as { auth: string }).auth, 'untrusted');
    }
    assertError(await c.raw('m01', 'DELETE', `/1.0/certificates/${fp}`), 404, 'Certificate not found');
    await waitFor('the removed client\'s event stream is closed', () => closed);
  });

  it('bad requests to /1.0/certificates get LXD\'s errors and change nothing', async () => {
    const before = await trustedFingerprints();
    assertError(await c.raw('m01', 'POST', '/1.0/certificates', { json: { name: 'x', type: 'bogus', certificate: 'AAAA' } }), 400, 'Invalid certificate type "bogus"');
    assertError(await c.raw('m01', 'POST', '/1.0/certificates', { json: { name: 'x', type: 'client', certificate: 'AAAA' } }), 400, /^Invalid certificate material/);
    assertError(await c.raw('m01', 'POST', '/1.0/certificates', { json: { name: 'a/b', type: 'client', token: true } }), 400, /client name/);
    assertError(await c.raw('m01', 'POST', '/1.0/certificates', { json: { type: 'client' } }), 400, 'Client is already trusted');
    assertError(await c.raw('m01', 'POST', '/1.0/certificates', { text: '{' }), 400, /./);
    assert.deepEqual(await trustedFingerprints(), before);
    const ops = syncMetadata(await c.raw('m01', 'GET', '/1.0/operations?recursion=1')) as Record<string, { class: string; status: string }[]>;
    assert.deepEqual(Object.values(ops).flat().filter((o) => o.class === 'token' && o.status === 'Running'), [], 'no token was issued');
  });
});
