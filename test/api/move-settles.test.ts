// A move never leaves an instance stuck. A step after the commit that fails for a while (the source copy
// cannot be deleted: `chattr +i`, as root) is retried until it succeeds, and the instance stops answering
// 409 by itself. Heartbeats that land while a move commits do not abort it, however often they come. A
// commit that takes longer than a member request may wait for an answer (the target stalls in the middle
// of it, as a long fsync would) still goes through: it is not held to that timeout.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { keys } from '../../src/store/schema.js';
import { sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { asyncOperation, syncMetadata } from '../helpers/envelope.js';
import { assertSoleCopy, catchMoment, writeFiles } from '../helpers/copies.js';
import { requireCommand, requireRoot } from '../helpers/prereq.js';

/** Move `name` through member `via` and wait for the operation; returns its final status and error. */
async function move(c: TestCluster, name: string, target: string, via = 'm01'): Promise<{ status: string; err: string }> {
  const url = asyncOperation(await c.raw(via, 'POST', `/1.0/instances/${name}?target=${target}`, { json: { name, migration: true } }));
  return syncMetadata(await c.raw(via, 'GET', `${url}/wait?timeout=120`)) as { status: string; err: string };
}

function chattr(flag: '+i' | '-i', target: string): void {
  const r = spawnSync('chattr', [flag, target], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`chattr ${flag} ${target}: ${r.stderr}`);
}

describe('moves that cannot get stuck', () => {
  let c: TestCluster;
  before(async () => {
    c = await startCluster({ members: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  it('a source copy that cannot be deleted for a while is deleted once it can, and the instance stops answering 409 by itself', { timeout: 90_000 }, async (t) => {
    if (!requireRoot(t, 'chattr') || !requireCommand(t, 'chattr', 'apt-get install e2fsprogs')) return;
    await c.launch('sticky', { target: 'm01', start: false });
    const root = c.instanceDir('m01', 'sticky');
    await writeFile(path.join(root, 'data.bin'), randomBytes(256 * 1024));
    await c.client('m01').runAsync('PUT', '/1.0/instances/sticky/state', { action: 'start' });
    const sum = await sha256Tree(root);
    const note = (value: string): Promise<number> => c.raw('m02', 'PATCH', '/1.0/instances/sticky', { json: { config: { 'user.note': value } } }).then((r) => r.status);

    chattr('+i', root); // the source copy cannot be renamed away, so the step after the commit fails
    try {
      await move(c, 'sticky', 'm02');
      const moved = await c.instance('sticky');
      assert.equal(moved.location, 'm02', 'the move committed');
      assert.equal(moved.status, 'Running', 'and started on the target');
      assert.equal(await note('while stuck'), 409, 'the move is not finished while its source copy stays');
    } finally {
      chattr('-i', root);
    }
    await waitFor('the instance stops answering 409 by itself', async () => (await note('after')) === 200, 20_000);
    await assertSoleCopy(c, 'sticky', { location: 'm02', sum, running: true });
    await waitFor('nothing of the source copy is left on m01', async () => (await readdir(path.join(c.memberDir('m01'), 'storage-pools', 'default', '.deleting'))).length === 0);
    assert.ok(!existsSync(root));
  });

  it('heartbeats, however frequent, do not abort moves that are committing', { timeout: 240_000 }, async () => {
    // Heartbeats every 200 ms (a fifth of the threshold), and between them this test beats for the two
    // members every few milliseconds: each beat is a new revision of the member's heartbeat key, written
    // under the member's own lease, as the member itself writes it. (As fast as the store takes it would
    // starve the members' own writes of the store's write lock, durable commits being slow.)
    const store = await c.store();
    const leasesBefore = await Promise.all(['m01', 'm02'].map(async (m) => (await store.get(keys.heartbeat(m)))?.lease));
    await c.client('m01').request('PATCH', '/1.0', { config: { 'cluster.offline_threshold': '1' } });
    // Each member moves its heartbeat to a lease of the new length, then revokes the old one: a beat of this
    // test's written under the old lease in between would vanish with it. Start once both have moved.
    await waitFor('both members beat on leases of the new length', async () => {
      const now = await Promise.all(['m01', 'm02'].map(async (m) => (await store.get(keys.heartbeat(m)))?.lease));
      return now.every((lease, i) => lease && lease !== leasesBefore[i]);
    });
    let beating = true;
    let beats = 0;
    const beater = (async () => {
      while (beating) {
        for (const m of ['m01', 'm02']) {
          const kv = await store.get(keys.heartbeat(m));
          // A lease the member has just replaced (the threshold changed) is gone; its next beat has the new one.
          if (kv?.lease) await store.put(kv.key, JSON.stringify({ at: new Date().toISOString() }), kv.lease).then(() => beats++, () => undefined);
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    try {
      // Eight instances hop between m01 and m02, all at once, for eight rounds: their commits meet the beats.
      const names = Array.from({ length: 8 }, (_, i) => `hopper-${i}`);
      const sums = new Map<string, string>();
      for (const name of names) {
        await c.launch(name, { target: 'm01', start: false });
        await writeFile(path.join(c.instanceDir('m01', name), 'data.bin'), randomBytes(64 * 1024));
        sums.set(name, await sha256Tree(c.instanceDir('m01', name)));
      }
      const at = new Map(names.map((n) => [n, 'm01']));
      const failures: string[] = [];
      for (let round = 1; round <= 8; round++) {
        await Promise.all(
          names.map(async (name) => {
            const from = at.get(name) ?? 'm01';
            const to = from === 'm01' ? 'm02' : 'm01';
            const op = await move(c, name, to, from);
            if (op.status === 'Success') at.set(name, to);
            else failures.push(`round ${round}, ${name} ${from} → ${to}: ${op.err}`);
          }),
        );
      }
      assert.ok(beats > 100, `the heartbeats were frequent (${beats})`);
      assert.deepEqual(failures, [], 'no move aborted');
      for (const name of names) await assertSoleCopy(c, name, { location: at.get(name) ?? '', sum: sums.get(name) ?? '', running: false });
    } finally {
      beating = false;
      await beater;
      await c.client('m01').request('PATCH', '/1.0', { config: { 'cluster.offline_threshold': '20' } });
    }
  });
});

describe('a commit that takes longer than a member request may wait', () => {
  let c: TestCluster | undefined;
  /** The member request timeout (ROOST_PEER_TIMEOUT_MS) the cluster runs with. */
  const timeoutMs = 1000;

  before(async () => {
    c = await startCluster({ members: 2, env: { ROOST_PEER_TIMEOUT_MS: String(timeoutMs) } });
  });
  after(async () => {
    await c?.stop();
  });

  it('moves whole when the target stalls in the middle of its commit for longer than that', { timeout: 120_000 }, async () => {
    assert.ok(c);
    const cluster = c;
    // A root volume, then a custom volume of many files: the target commits them one after the other, and
    // making the second durable (an fsync per file) keeps the commit busy after the first is in place.
    await cluster.client('m01').request('POST', '/1.0/storage-pools/default/volumes/custom?target=m01', { name: 'bulky-data' });
    await writeFiles(cluster.volumeDir('m01', 'bulky-data'), 'many', 3000, 100);
    await cluster.launch('bulky', { target: 'm01', start: false, devices: { data: { type: 'disk', pool: 'default', source: 'bulky-data', path: 'data' } } });
    await writeFile(path.join(cluster.instanceDir('m01', 'bulky'), 'data.bin'), randomBytes(4 * 1024 * 1024));
    const rootSum = await sha256Tree(cluster.instanceDir('m01', 'bulky'), (p) => p === 'data');
    const volumeSum = await sha256Tree(cluster.volumeDir('m01', 'bulky-data'));

    const url = asyncOperation(await cluster.raw('m01', 'POST', '/1.0/instances/bulky?target=m02', { json: { name: 'bulky', migration: true } }));
    const target = cluster.pid('m02');
    assert.ok(target);
    await catchMoment('the target to have put the root volume in place', () => (existsSync(cluster.instanceDir('m02', 'bulky')) ? true : null), 60_000);
    process.kill(target, 'SIGSTOP');
    try {
      assert.ok(!existsSync(cluster.volumeDir('m02', 'bulky-data')), 'the target stalls in the middle of its commit');
      // The length of the stall (a slow fsync), not a wait for something to happen: three request timeouts.
      await new Promise((r) => setTimeout(r, 3 * timeoutMs));
    } finally {
      process.kill(target, 'SIGCONT');
    }
    const op = syncMetadata(await cluster.raw('m01', 'GET', `${url}/wait?timeout=60`)) as { status: string; err: string };
    assert.equal(op.status, 'Success', op.err);
    await assertSoleCopy(cluster, 'bulky', { location: 'm02', sum: await sha256Tree(cluster.instanceDir('m02', 'bulky')), running: false });
    assert.equal(await sha256Tree(cluster.instanceDir('m02', 'bulky'), (p) => p === 'data'), rootSum, 'root volume bytes');
    assert.equal(await sha256Tree(cluster.volumeDir('m02', 'bulky-data')), volumeSum, 'custom volume bytes');
    assert.ok(!existsSync(cluster.volumeDir('m01', 'bulky-data')), 'the source copy of the custom volume is gone');
  });
});
