// Removing a member, as `lxc cluster remove`: refused while it holds instances (nothing changes), done once it
// is empty (its daemon notices and stops by itself); a dead member that still holds instances goes with
// --force, and the instances it took with it are reported.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { processAlive, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { asyncOperation } from '../helpers/envelope.js';
import { hasCommand, requireCommand } from '../helpers/prereq.js';
import { lxc } from '../helpers/lxc-client.js';

let c: TestCluster;

async function memberNames(via: string): Promise<string[]> {
  return ((await c.client(via).get('/1.0/cluster/members')) as string[]).map((u) => u.split('/').pop() ?? '').sort();
}

describe('removing cluster members', () => {
  before(async () => {
    c = await startCluster({ members: 4, offlineThreshold: 3 });
    await c.launch('r1', { target: 'm03' });
    await c.launch('r2', { target: 'm04' });
  });
  after(async () => {
    await c?.stop();
  });

  it('a member holding instances is refused (400) and nothing changes; once empty it is removed and its daemon stops', async () => {
    const before = await c.world();
    const refused = await c.raw('m01', 'DELETE', '/1.0/cluster/members/m03');
    assert.equal(refused.status, 400);
    assert.equal(refused.body?.error, 'Cluster member "m03" still has the following instances: r1');
    assert.equal(await c.world(), before, 'a refusal changes nothing');
    assert.equal((await c.raw('m01', 'DELETE', '/1.0/cluster/members/m09')).status, 404);

    asyncOperation(await c.raw('m01', 'POST', '/1.0/instances/r1?target=m02', { json: { name: 'r1', migration: true } }));
    await waitFor('r1 moved to m02', async () => (await c.instance('r1')).location === 'm02');
    const pid = c.pid('m03');
    assert.ok(pid);
    if (hasCommand('lxc')) {
      // The real client, as a user removes an empty member.
      const r = await lxc(c, 'm01', ['cluster', 'remove', 'm03']);
      assert.equal(r.code, 0, r.stderr);
    } else {
      assert.equal((await c.raw('m01', 'DELETE', '/1.0/cluster/members/m03')).status, 200);
    }
    assert.deepEqual(await memberNames('m02'), ['m01', 'm02', 'm04']);
    await waitFor('the removed member\'s daemon stopped by itself', () => !processAlive(pid), 15_000);
    assert.equal((await c.instance('r1', 'm01')).status, 'Running', 'the moved instance runs on');
  });

  it('a dead member that holds instances is removed only with --force, which reports what was on it', async (t) => {
    if (!requireCommand(t, 'lxc', 'apt-get install lxd-client')) return;
    await c.kill('m04', 'SIGKILL');
    const plain = await lxc(c, 'm01', ['cluster', 'remove', 'm04']);
    assert.equal(plain.code, 1);
    assert.equal(plain.stderr.trim(), 'Error: Cluster member "m04" still has the following instances: r2');
    const forced = await c.raw('m01', 'DELETE', '/1.0/cluster/members/m04?force=1');
    assert.equal(forced.status, 200, forced.text);
    assert.deepEqual(forced.body?.metadata, { instances: ['r2'], volumes: [] });
    assert.deepEqual(await memberNames('m01'), ['m01', 'm02']);
    assert.equal((await c.raw('m01', 'GET', '/1.0/instances/r2')).status, 404);
  });
});
