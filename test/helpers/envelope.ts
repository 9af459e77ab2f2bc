// Assertions on LXD's response envelopes, shared by the API suites.

import assert from 'node:assert/strict';
import type { Envelope, RawResponse } from './cluster.js';

/** Asserts an LXD error envelope: HTTP status = error_code, and the message (exact or matching). */
export function assertError(res: RawResponse, status: number, message: string | RegExp): void {
  assert.equal(res.status, status, `HTTP status of ${res.text}`);
  const body = res.body;
  assert.ok(body, `an envelope, not ${res.text}`);
  assert.equal(body.type, 'error');
  assert.equal(body.error_code, status);
  assert.equal(body.status_code, 0);
  assert.equal(body.metadata, null);
  if (typeof message === 'string') assert.equal(body.error, message);
  else assert.match(body.error, message);
}

/** Asserts a sync success envelope and returns its metadata. */
export function syncMetadata(res: RawResponse): unknown {
  assert.equal(res.status, 200, res.text);
  const body = res.body as Envelope;
  assert.equal(body.type, 'sync');
  assert.equal(body.status, 'Success');
  assert.equal(body.status_code, 200);
  assert.equal(body.error_code, 0);
  assert.equal(body.error, '');
  return body.metadata;
}

/** Asserts an async envelope (HTTP 202, Location header) and returns the operation URL. */
export function asyncOperation(res: RawResponse): string {
  assert.equal(res.status, 202, res.text);
  const body = res.body as Envelope;
  assert.equal(body.type, 'async');
  assert.equal(body.status_code, 100);
  assert.match(body.operation, /^\/1\.0\/operations\/[0-9a-f-]+$/);
  assert.equal(res.headers.location, body.operation);
  return body.operation;
}
