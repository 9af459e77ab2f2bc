// LXD's response envelopes.

import type { FastifyReply } from 'fastify';
import type { OperationRecord } from '../store/schema.js';
import { operationToApi } from '../operations/operations.js';

/** Send a sync response (`code` 201 with a Location header for LXD's `SyncResponseLocation`). */
export function sync(reply: FastifyReply, metadata: unknown, etag?: string, code = 200): FastifyReply {
  if (etag) void reply.header('ETag', `"${etag}"`);
  return reply.code(code).send({ type: 'sync', status: 'Success', status_code: 200, operation: '', error_code: 0, error: '', metadata });
}

/** Send an async response for an operation (HTTP 202 with Location). */
export function async(reply: FastifyReply, op: OperationRecord): FastifyReply {
  const url = `/1.0/operations/${op.id}`;
  return reply
    .code(202)
    .header('Location', url)
    .send({ type: 'async', status: 'Operation created', status_code: 100, operation: url, error_code: 0, error: '', metadata: operationToApi(op) });
}

/** A sync response for a created object: HTTP 201 with its `Location` (LXD's `SyncResponseLocation`). */
export function created(reply: FastifyReply, location: string): FastifyReply {
  return reply
    .code(201)
    .header('Location', location)
    .send({ type: 'sync', status: 'Success', status_code: 200, operation: '', error_code: 0, error: '', metadata: null });
}
