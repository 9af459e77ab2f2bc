// One-time tokens as LXD has them: a join token (`lxc cluster add`) or, later, a trust token (`lxc config
// trust add`) is a secret behind an operation of class `token` that stays Running until the token is used
// (Success), revoked (`lxc cluster revoke-token`: Cancelled) or expires (Failure). The operation and the
// token live in the store, so any member lists, revokes and honours them, and none of them forgets them when it
// restarts. The secret is in the operation (the client prints the token from it) but never in an event.

import { randomBytes, randomUUID } from 'node:crypto';
import type { Store } from '../store/store.js';
import { keys, type OperationRecord, type TokenRecord } from '../store/schema.js';
import type { EventBus } from '../operations/events.js';
import { operationToApi, type OperationKindHandler } from '../operations/operations.js';

/** How long a token is valid, as LXD's default (`cluster.join_token_expiry`, 3 hours). */
export const tokenLifetimeMs = 3 * 3600 * 1000;

/** What a new token's operation shows. */
export interface TokenSpec {
  kind: TokenRecord['kind'];
  /** The member (join) or client (trust) name the token is for. */
  name: string;
  description: string;
  /** The member issuing it (the operation's location). */
  location: string;
  /** What the client builds the printed token from, besides the secret and the expiry. */
  metadata: (secret: string, expiresAt: string) => Record<string, unknown>;
}

const operationKind = (kind: TokenRecord['kind']): NonNullable<OperationRecord['kind']> => (kind === 'join' ? 'join-token' : 'trust-token');

/** The operation as events carry it: without the secret. */
export function redactedOperation(op: OperationRecord): Record<string, unknown> {
  const metadata = op.metadata ? Object.fromEntries(Object.entries(op.metadata).filter(([k]) => k !== 'secret')) : null;
  return operationToApi({ ...op, metadata });
}

/** Issue a token: its record and its Running operation in one transaction. Throws if one for `name` is pending. */
export async function issueToken(store: Store, events: EventBus, spec: TokenSpec): Promise<OperationRecord> {
  const secret = randomBytes(32).toString('hex');
  const expiresAt = new Date(Date.now() + tokenLifetimeMs).toISOString();
  const now = new Date().toISOString();
  const op: OperationRecord = {
    id: randomUUID(),
    class: 'token',
    description: spec.description,
    createdAt: now,
    updatedAt: now,
    status: 'Running',
    resources: spec.kind === 'join' ? { cluster: [] } : { certificates: [] },
    metadata: spec.metadata(secret, expiresAt),
    mayCancel: true,
    err: '',
    location: spec.location,
    kind: operationKind(spec.kind),
  };
  const token: TokenRecord = { kind: spec.kind, name: spec.name, secret, expiresAt, operation: op.id };
  const key = keys.token(spec.kind, spec.name);
  // A pending token for the same name is replaced (its operation ends as revoked), as a new `lxc cluster add` does.
  const previous = await store.get(key);
  const ops = [
    { type: 'put' as const, key, value: JSON.stringify(token) },
    { type: 'put' as const, key: keys.operation(op.id), value: JSON.stringify(op) },
  ];
  let ended: OperationRecord | null = null;
  if (previous) {
    const old = JSON.parse(previous.value) as TokenRecord;
    const oldOp = await store.get(keys.operation(old.operation));
    if (oldOp) {
      ended = { ...(JSON.parse(oldOp.value) as OperationRecord), status: 'Cancelled', updatedAt: now };
      ops.push({ type: 'put', key: oldOp.key, value: JSON.stringify(ended) });
    }
  }
  const r = await store.txn([{ key, modRevision: previous?.modRevision ?? 0 }], ops);
  if (!r.succeeded) throw new Error(`another token for "${spec.name}" was issued at the same moment; try again`);
  if (ended) events.publish('operation', redactedOperation(ended), 'default', ended.location);
  events.publish('operation', redactedOperation(op), 'default', op.location);
  return op;
}

/**
 * Use a token: it must exist, match `secret` and not have expired; it is deleted and its operation ends in
 * Success in one transaction, so a token is used once. Throws an Error the user can read otherwise.
 */
export async function consumeToken(store: Store, events: EventBus | null, kind: TokenRecord['kind'], name: string, secret: string): Promise<void> {
  const kv = await store.get(keys.token(kind, name));
  const token = kv ? (JSON.parse(kv.value) as TokenRecord) : null;
  if (!kv || !token || token.secret !== secret) throw new Error(`the ${kind} token is not valid (unknown, used or revoked)`);
  if (Date.parse(token.expiresAt) < Date.now()) throw new Error(`the ${kind} token has expired`);
  const opKv = await store.get(keys.operation(token.operation));
  const op = opKv ? ({ ...(JSON.parse(opKv.value) as OperationRecord), status: 'Success', updatedAt: new Date().toISOString() } satisfies OperationRecord) : null;
  const r = await store.txn([{ key: kv.key, modRevision: kv.modRevision }], [
    { type: 'delete', key: kv.key },
    ...(op ? [{ type: 'put' as const, key: keys.operation(op.id), value: JSON.stringify(op) }] : []),
  ]);
  if (!r.succeeded) throw new Error(`the ${kind} token was used by someone else at the same moment`);
  if (op) events?.publish('operation', redactedOperation(op), 'default', op.location);
}

/** End a token's operation with `status` and delete the token, if it is still the token's. */
async function endToken(store: Store, events: EventBus, op: OperationRecord, status: 'Cancelled' | 'Failure', err: string): Promise<boolean> {
  const kind: TokenRecord['kind'] = op.kind === 'join-token' ? 'join' : 'trust';
  const { kvs } = await store.range(keys.tokens(kind));
  const kv = kvs.find((x) => (JSON.parse(x.value) as TokenRecord).operation === op.id);
  const ended: OperationRecord = { ...op, status, err, updatedAt: new Date().toISOString() };
  const opKv = await store.get(keys.operation(op.id));
  if (!opKv) return false;
  const r = await store.txn(
    [{ key: opKv.key, modRevision: opKv.modRevision }, ...(kv ? [{ key: kv.key, modRevision: kv.modRevision }] : [])],
    [{ type: 'put', key: opKv.key, value: JSON.stringify(ended) }, ...(kv ? [{ type: 'delete' as const, key: kv.key }] : [])],
  );
  if (r.succeeded) events.publish('operation', redactedOperation(ended), 'default', ended.location);
  return r.succeeded;
}

/** How token operations are revoked (cancelled) and expire. */
export function tokenOperations(store: Store, events: EventBus): OperationKindHandler {
  return {
    cancel: (op) => endToken(store, events, op, 'Cancelled', ''),
    async sweep(op) {
      const expiresAt = typeof op.metadata?.expiresAt === 'string' ? Date.parse(op.metadata.expiresAt) : NaN;
      if (Number.isFinite(expiresAt) && expiresAt < Date.now()) await endToken(store, events, op, 'Failure', 'Token expired');
    },
  };
}
