// A move whose target dies or cannot be reached loses nothing and leaves nothing. A target killed in the
// middle of the copy: the instance is whole and running at its source, and once the target is back no
// staging or orphan copy is left there. A network partition that cuts the target off while it writes the
// copy (as root, with nftables): the move fails, its rollback cannot tell the target, the instance is
// whole and running at its source, and the target, which never heard of the rollback, removes what the
// move left by itself once the move is no longer journaled, without a restart, so the name can be created
// there again.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { asyncOperation, syncMetadata } from '../helpers/envelope.js';
import { assertSoleCopy, catchMoment } from '../helpers/copies.js';
import { partition } from '../helpers/network.js';
import { requireCommand, requireRoot } from '../helpers/prereq.js';
import { keys, type MemberRecord } from '../../src/store/schema.js';

let c: TestCluster;

/** A running instance on m01 with `mib` MiB of random data in 4 MiB files: a copy that takes a moment. */
async function launchWithData(name: string, mib: number): Promise<string> {
  await c.launch(name, { target: 'm01', start: false });
  const root = c.instanceDir('m01', name);
  for (let i = 0; i < mib / 4; i++) await writeFile(path.join(root, `part-${i}.bin`), randomBytes(4 * 1024 * 1024));
  await c.client('m01').runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
  return sha256Tree(root);
}

/** A member's HTTPS address (`host:port`), as its record has it. */
async function memberAddress(member: string): Promise<string> {
  const kv = await (await c.store()).get(keys.member(member));
  assert.ok(kv);
  return (JSON.parse(kv.value) as MemberRecord).address;
}

/** Start moving `name` from m01 to m02 and return once m02 has begun writing its copy. */
async function moveUntilCopying(name: string): Promise<string> {
  const url = asyncOperation(await c.raw('m01', 'POST', `/1.0/instances/${name}?target=m02`, { json: { name, migration: true } }));
  await catchMoment('m02 to begin writing the copy', async () => ((await readdir(c.stagingDir('m02')).catch(() => [])).length > 0 ? true : null));
  return url;
}

describe('a move whose target dies or cannot be reached', () => {
  before(async () => {
    // Sweeps every half second and member calls that give up after 3 s, so that this suite is quick.
    c = await startCluster({ members: 3, env: { ROOST_MOVE_SWEEP_INTERVAL_MS: '500', ROOST_PEER_TIMEOUT_MS: '3000' } });
  });
  after(async () => {
    await c?.stop();
  });

  it('a target killed mid-copy: the instance is whole and running at its source; the target, back, keeps nothing of it', { timeout: 120_000 }, async () => {
    const sum = await launchWithData('struck', 64);
    const url = await moveUntilCopying('struck');
    await c.kill('m02', 'SIGKILL');
    const op = syncMetadata(await c.raw('m01', 'GET', `${url}/wait?timeout=60`)) as { status: string; err: string };
    assert.equal(op.status, 'Failure', op.err);
    assert.equal((await c.instance('struck')).location, 'm01');
    assert.equal((await c.instance('struck')).status, 'Running', 'running again at its source at once');

    await c.restart('m02');
    await assertSoleCopy(c, 'struck', { location: 'm01', sum, running: true });
  });

  it('a rollback that cannot reach its target: whole and running at the source; the leftover goes by itself and the name is free there', { timeout: 120_000 }, async (t) => {
    if (!requireRoot(t, 'a network partition with nftables') || !requireCommand(t, 'nft', 'apt-get install nftables')) return;
    const sum = await launchWithData('stranded', 64);
    const url = await moveUntilCopying('stranded');
    const target = c.pid('m02');
    // The link to m02 breaks while it writes the copy: the stream fails, and so does the discard of the rollback.
    const heal = partition(await memberAddress('m02'));
    try {
      const op = syncMetadata(await c.raw('m01', 'GET', `${url}/wait?timeout=90`)) as { status: string; err: string };
      assert.equal(op.status, 'Failure', op.err);
      const inst = await c.instance('stranded');
      assert.equal(inst.location, 'm01');
      assert.equal(inst.status, 'Running', 'running again at its source while the target is unreachable');
      assert.equal(await sha256Tree(c.instanceDir('m01', 'stranded')), sum);
    } finally {
      heal();
    }

    // m02 never heard of the rollback; with no journal for that move any more, it drops what it left by itself.
    await assertSoleCopy(c, 'stranded', { location: 'm01', sum, running: true }, 20_000);
    assert.equal(c.pid('m02'), target, 'm02 was not restarted');

    // A new instance of that name on the target finds its place free.
    await c.client('m01').runAsync('PUT', '/1.0/instances/stranded/state', { action: 'stop', force: true });
    await c.client('m01').runAsync('DELETE', '/1.0/instances/stranded');
    await c.launch('stranded', { target: 'm02' });
    await waitFor('the new instance runs on m02', async () => (await c.instance('stranded')).status === 'Running');
    assert.deepEqual(await readdir(c.instanceDir('m02', 'stranded')), [], 'a fresh, empty root volume, not the leftover');
  });
});
