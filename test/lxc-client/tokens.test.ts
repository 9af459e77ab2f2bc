// Join tokens as the real `lxc` client uses them: `lxc cluster add` prints a token whose operation stays
// pending, `lxc cluster list-tokens` lists it from any member, `lxc cluster revoke-token` ends it, and a
// revoked or used token admits nobody. The secret is in the operation, never in an event.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { hasCommand, requireCommand } from '../helpers/prereq.js';
import { keys } from '../../src/store/schema.js';
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { lxc } from '../helpers/lxc-client.js';
import { recordEvents, type EventLog } from '../evacuation/world.js';
import { decodeJoinToken } from '../../src/cluster/token.js';
import path from 'node:path';

let c: TestCluster;
let events: EventLog;

/** The names `lxc cluster list-tokens` shows on `member`. */
async function listedTokens(member: string): Promise<string[]> {
  const r = await lxc(c, member, ['cluster', 'list-tokens', '--format', 'csv']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim().split('\n').filter((l) => l !== '').map((l) => l.split(',')[0] ?? '').sort();
}

/** The status of an operation, asked on `via`. */
async function operationStatus(via: string, id: string): Promise<string> {
  return ((await c.client(via).get(`/1.0/operations/${id}`)) as { status: string }).status;
}

/** The id of the pending token operation for `name`. */
async function tokenOperation(via: string, name: string): Promise<string> {
  const ops = (await c.client(via).get('/1.0/operations?recursion=1')) as Record<string, { id: string; class: string; metadata: { serverName?: string } }[]>;
  const op = (ops.running ?? []).find((o) => o.class === 'token' && o.metadata.serverName === name);
  assert.ok(op, `a running token operation for ${name}`);
  return op.id;
}

describe('join tokens with the real lxc client', () => {
  before(async () => {
    if (!hasCommand('lxc')) return; // each test skips (or fails under CI) through requireCommand
    c = await startCluster({ members: 2 });
    events = await recordEvents(c, 'm02');
  });
  after(async () => {
    events?.close();
    await c?.stop();
  });

  it('lxc cluster add prints a token that every member lists until it is revoked, and the secret never travels in an event', async (t) => {
    if (!requireCommand(t, 'lxc', 'apt-get install lxd-client')) return;
    const add = await lxc(c, 'm01', ['cluster', 'add', 'm09']);
    assert.equal(add.code, 0, add.stderr);
    const printed = add.stdout.trim().split('\n').pop() ?? '';
    const token = decodeJoinToken(printed);
    assert.equal(token.server_name, 'm09');
    assert.match(token.secret, /^[0-9a-f]{64}$/);

    assert.deepEqual(await listedTokens('m01'), ['m09']);
    assert.deepEqual(await listedTokens('m02'), ['m09'], 'another member lists it too');
    const id = await tokenOperation('m02', 'm09');
    assert.equal(await operationStatus('m01', id), 'Running');

    const revoke = await lxc(c, 'm02', ['cluster', 'revoke-token', 'm09']);
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.deepEqual(await listedTokens('m01'), []);
    assert.equal(await operationStatus('m01', id), 'Cancelled');

    await waitFor('the revoke reached the event stream', () => events.events.some((e) => e.type === 'operation' && (e.metadata as { id?: string; status?: string }).id === id && (e.metadata as { status?: string }).status === 'Cancelled'));
    const published = JSON.stringify(events.events);
    assert.ok(published.includes(id), 'the token operation was published');
    assert.ok(!published.includes(token.secret), 'no event carries the secret');

    // A revoked token admits nobody.
    await assert.rejects(c.local.startMember({ name: 'm09', dir: path.join(c.dir, 'm09') }, { join: printed }), /not valid/);
  });

  it('a token used to join ends its operation in success and cannot be used twice', async (t) => {
    if (!requireCommand(t, 'lxc', 'apt-get install lxd-client')) return;
    const add = await lxc(c, 'm01', ['cluster', 'add', 'm03']);
    assert.equal(add.code, 0, add.stderr);
    const printed = add.stdout.trim().split('\n').pop() ?? '';
    const id = await tokenOperation('m01', 'm03');
    await c.local.startMember({ name: 'm03', dir: path.join(c.dir, 'm03') }, { join: printed });
    try {
      await waitFor('m03 is a member', async () => ((await c.client('m01').get('/1.0/cluster/members')) as string[]).includes('/1.0/cluster/members/m03'));
      assert.equal(await operationStatus('m02', id), 'Success');
      assert.deepEqual(await listedTokens('m02'), []);
      assert.equal(await (await c.store()).get(keys.token('join', 'm03')), null, 'the used token is gone');
    } finally {
      await c.local.killMember('m03', 'SIGTERM');
    }
  });
});
