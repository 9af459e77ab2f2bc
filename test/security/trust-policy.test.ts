// The trust policy on its own (pure): who may send which request on HTTPS. Members and the unix socket may
// do everything; clients never reach the member-to-member routes however the path is spelled; untrusted
// clients may only learn about the server and present a token; restricted clients stay in their projects.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decideAccess, type Identity } from '../../src/api/auth.js';
import type { CertificateRecord } from '../../src/store/schema.js';

function client(restricted: boolean, projects: string[] = []): Identity {
  const certificate: CertificateRecord = { fingerprint: 'ab'.repeat(32), type: 'client', name: 'laptop', certificate: '', restricted, projects, createdAt: '' };
  return { kind: 'client', certificate };
}
const untrusted: Identity = { kind: 'untrusted', fingerprint: null, certificate: null };
const allowed = (identity: Identity, method: string, url: string): boolean => decideAccess(identity, method, url).allow;

describe('the trust policy', () => {
  it('members and the unix socket reach everything, /internal included', () => {
    for (const identity of [{ kind: 'peer' }, { kind: 'unix' }] as Identity[]) {
      assert.ok(allowed(identity, 'POST', '/internal/moves/run'));
      assert.ok(allowed(identity, 'PATCH', '/1.0'));
    }
  });

  it('a trusted client never reaches /internal, however the path is spelled', () => {
    for (const url of ['/internal/capacity', '/internal', '//internal/capacity', '/%69nternal/capacity', '/1.0/../internal/capacity', '/./internal/moves/x/commit?x=1']) {
      assert.deepEqual(decideAccess(client(false), 'GET', url), { allow: false, status: 403, message: 'not authorized' }, url);
    }
    assert.ok(allowed(client(false), 'POST', '/1.0/cluster/members/m02/state'));
  });

  it('an untrusted client may only read / and /1.0 and present a token', () => {
    assert.ok(allowed(untrusted, 'GET', '/'));
    assert.ok(allowed(untrusted, 'GET', '/1.0'));
    assert.ok(allowed(untrusted, 'POST', '/1.0/certificates'));
    for (const [method, url] of [['GET', '/1.0/instances'], ['GET', '/1.0/certificates'], ['PATCH', '/1.0'], ['GET', '/1.0/events'], ['DELETE', '/1.0/certificates/ab']]) {
      assert.equal(allowed(untrusted, method ?? '', url ?? ''), false, `${method} ${url}`);
    }
  });

  it('a restricted client uses its projects and changes nothing cluster-wide', () => {
    const r = client(true, ['default']);
    assert.ok(allowed(r, 'GET', '/1.0/instances'));
    assert.ok(allowed(r, 'POST', '/1.0/instances?project=default'));
    assert.equal(allowed(r, 'GET', '/1.0/instances?project=other'), false);
    assert.equal(allowed(r, 'PATCH', '/1.0'), false);
    assert.equal(allowed(r, 'POST', '/1.0/cluster/members/m02/state'), false);
    assert.equal(allowed(r, 'DELETE', '/1.0/certificates/ab'), false);
    assert.equal(allowed(client(true, ['other']), 'GET', '/1.0/instances'), false);
  });

  it('the metrics are for trusted clients; a metrics certificate reads them and nothing else', () => {
    const metrics: Identity = { kind: 'client', certificate: { fingerprint: 'cd'.repeat(32), type: 'metrics', name: 'prometheus', certificate: '', restricted: false, projects: [], createdAt: '' } };
    assert.ok(allowed(client(false), 'GET', '/1.0/metrics'));
    assert.ok(allowed(metrics, 'GET', '/1.0/metrics'));
    assert.equal(allowed(untrusted, 'GET', '/1.0/metrics'), false);
    for (const [method, url] of [['GET', '/1.0/instances'], ['GET', '/1.0'], ['POST', '/1.0/metrics'], ['PATCH', '/1.0']]) {
      assert.equal(allowed(metrics, method ?? '', url ?? ''), false, `${method} ${url}`);
    }
  });
});
