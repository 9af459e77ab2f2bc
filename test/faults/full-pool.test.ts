// Moves into pools without room lose nothing (as root: members' pools on small tmpfs mounts). A move whose
// bytes do not fit is refused before anything is copied, naming the member, the bytes needed and the bytes
// free; a pool without inodes enough likewise. Placement counts what a copy really takes on disk (whole
// blocks, not file sizes), so an evacuation picks the member with room and a dry-run refuses what fits
// nowhere. Space that runs out while the copy is written (something else filled the pool) fails the move
// too: the instance stays whole and running at its source, and nothing is left on the target.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, statfsSync, statSync, writeSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { asyncOperation, syncMetadata } from '../helpers/envelope.js';
import { assertSoleCopy, catchMoment, rootHolders, writeFiles } from '../helpers/copies.js';
import { isRoot, requireRoot } from '../helpers/prereq.js';

let c: TestCluster;

/** Move `name` to `target` through the API and wait for the operation; returns its final status and error. */
async function move(name: string, target: string): Promise<{ status: string; err: string }> {
  const url = asyncOperation(await c.raw('m01', 'POST', `/1.0/instances/${name}?target=${target}`, { json: { name, migration: true } }));
  return syncMetadata(await c.raw('m01', 'GET', `${url}/wait?timeout=120`)) as { status: string; err: string };
}

/** Bytes free in a member's pool. */
function poolFree(member: string): number {
  const s = statfsSync(path.join(c.memberDir(member), 'storage-pools', 'default'));
  return s.bavail * s.bsize;
}

/** Every byte a member's pool has left, filled by a file of this process ("something else writes"). */
function fillPool(member: string): string {
  const file = path.join(c.memberDir(member), 'storage-pools', 'default', 'filler.bin');
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(64 * 1024, 7);
  try {
    for (;;) {
      try {
        if (writeSync(fd, chunk) < chunk.length) break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
        throw err;
      }
    }
  } finally {
    closeSync(fd);
  }
  return file;
}

describe('moves into a pool without room', () => {
  before(async () => {
    if (!isRoot() && process.env.CI !== 'true') return;
    c = await startCluster({ members: 3 });
    await c.mountPool('m02', { size: '2m', inodes: 64 });
    await c.mountPool('m03', { size: '40m' });
  });
  after(async () => {
    await c?.stop();
  });

  it('a move whose bytes do not fit is refused at once, naming the member, the bytes needed and free', { timeout: 60_000 }, async (t) => {
    if (!requireRoot(t, 'tmpfs pools')) return;
    await c.launch('big', { target: 'm01', start: false });
    const root = c.instanceDir('m01', 'big');
    await writeFile(path.join(root, 'big.bin'), randomBytes(3_000_000));
    await writeFiles(root, 'etc', 5, 100);
    await c.client('m01').runAsync('PUT', '/1.0/instances/big/state', { action: 'start' });
    const sum = await sha256Tree(root);

    const op = await move('big', 'm02');
    const landed = statSync(path.join(c.instanceDir('m02', 'big'), 'big.bin'), { throwIfNoEntry: false })?.size;
    assert.equal(op.status, 'Failure', `the move must fail; big.bin on m02 has ${landed ?? 'no'} bytes of 3000000`);
    assert.match(op.err, /member "m02"/);
    const needed = /needs (\d+) bytes/.exec(op.err);
    const free = /(\d+) bytes are free/.exec(op.err);
    assert.ok(needed && free, `the error gives the bytes needed and free: ${op.err}`);
    assert.ok(Number(needed[1]) >= 3_000_000, `needed counts the whole file: ${op.err}`);
    assert.ok(Number(free[1]) < Number(needed[1]) && Number(free[1]) <= 2 * 1024 * 1024, `free is what m02 has: ${op.err}`);
    await assertSoleCopy(c, 'big', { location: 'm01', sum, running: true });
    assert.deepEqual(await readdir(path.join(c.memberDir('m02'), 'storage-pools', 'default', 'containers')), [], 'nothing was written on m02');
  });

  it('a move whose files outnumber the free inodes is refused at once', { timeout: 60_000 }, async (t) => {
    if (!requireRoot(t, 'tmpfs pools')) return;
    await c.launch('many', { target: 'm01', start: false });
    const root = c.instanceDir('m01', 'many');
    await writeFiles(root, 'files', 100, 10); // 400 KiB of blocks fit m02's 2 MiB; 100 inodes do not fit its 64
    const sum = await sha256Tree(root);

    const op = await move('many', 'm02');
    assert.equal(op.status, 'Failure', `the move must fail; m02 holds a copy: ${rootHolders(c, 'many').includes('m02')}`);
    assert.match(op.err, /member "m02"/);
    assert.match(op.err, /needs \d+ inodes, only \d+ are free/);
    await assertSoleCopy(c, 'many', { location: 'm01', sum, running: false });
  });

  it('placement counts whole blocks: an evacuation picks the member with room; a dry-run refuses what fits nowhere and says why', { timeout: 120_000 }, async (t) => {
    if (!requireRoot(t, 'tmpfs pools')) return;
    // 600 files of 1 KiB: 600 KiB of data, but 2.3 MiB of 4 KiB blocks (m02 has 2 MiB).
    await c.launch('blocks', { target: 'm01' });
    await writeFiles(c.instanceDir('m01', 'blocks'), 'small', 600, 1024);
    const sum = await sha256Tree(c.instanceDir('m01', 'blocks'));
    // 11,000 files of 1 KiB: 11 MB of data, which m03's 40 MiB would take, but 43 MiB of blocks, which no
    // member has.
    await c.launch('sprawl', { target: 'm01', start: false });
    await writeFiles(c.instanceDir('m01', 'sprawl'), 'small', 11_000, 1024);
    // The other instances of this suite that stayed on m01 go elsewhere first (they fit nowhere either).
    for (const name of ['big', 'many']) {
      await c.client('m01').runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'stop', force: true }).catch(() => undefined);
      await c.client('m01').runAsync('DELETE', `/1.0/instances/${name}`);
    }

    const plan = syncMetadata(await c.raw('m01', 'POST', '/1.0/cluster/members/m01/state', { json: { action: 'evacuate', dry_run: true } })) as {
      instances: { name: string; target: string | null }[];
      refusals: { name: string; reason: string }[];
    };
    assert.equal(plan.instances.find((i) => i.name === 'blocks')?.target, 'm03', `"blocks" goes where it fits: ${JSON.stringify(plan)}`);
    const refusal = plan.refusals.find((r) => r.name === 'sprawl');
    assert.ok(refusal, `"sprawl" fits nowhere and is refused: ${JSON.stringify(plan)}`);
    assert.match(refusal.reason, /no member has room/);
    assert.match(refusal.reason, /m02, m03: not enough disk/);

    await c.client('m01').runAsync('DELETE', '/1.0/instances/sprawl');
    await c.client('m01').runAsync('POST', '/1.0/cluster/members/m01/state', { action: 'evacuate' });
    await assertSoleCopy(c, 'blocks', { location: 'm03', sum, running: true });
    await c.client('m01').runAsync('POST', '/1.0/cluster/members/m01/state', { action: 'restore' });
    await assertSoleCopy(c, 'blocks', { location: 'm01', sum, running: true });
  });

  it('space that runs out while the copy is written fails the move; the instance stays whole and running at its source', { timeout: 120_000 }, async (t) => {
    if (!requireRoot(t, 'tmpfs pools')) return;
    await c.launch('squeezed', { target: 'm01', start: false });
    const root = c.instanceDir('m01', 'squeezed');
    for (let i = 0; i < 4; i++) await writeFile(path.join(root, `part-${i}.bin`), randomBytes(4 * 1024 * 1024));
    await writeFiles(root, 'etc', 3, 100);
    await c.client('m01').runAsync('PUT', '/1.0/instances/squeezed/state', { action: 'start' });
    const sum = await sha256Tree(root);
    assert.ok(poolFree('m03') > 20 * 1024 * 1024, 'm03 has room for the copy');

    // The target is paused as soon as its staging appears, its pool is filled by someone else, and it goes on.
    const url = asyncOperation(await c.raw('m01', 'POST', '/1.0/instances/squeezed?target=m03', { json: { name: 'squeezed', migration: true } }));
    const target = c.pid('m03');
    assert.ok(target);
    let filler = '';
    try {
      await catchMoment('the copy to begin on m03', async () => ((await readdir(c.stagingDir('m03')).catch(() => [])).length > 0 ? true : null));
      process.kill(target, 'SIGSTOP');
      filler = fillPool('m03');
    } finally {
      process.kill(target, 'SIGCONT');
    }
    const op = syncMetadata(await c.raw('m01', 'GET', `${url}/wait?timeout=120`)) as { status: string; err: string };
    assert.equal(op.status, 'Failure', `the move must fail; m03 holds a copy: ${rootHolders(c, 'squeezed').includes('m03')}`);
    // The write that failed stopped the copy (or, had it failed silently, the check of what landed did).
    assert.match(op.err, /"m03"/);
    assert.match(op.err, /ran out of space in pool "default"|is not what was sent/);
    await assertSoleCopy(c, 'squeezed', { location: 'm01', sum, running: true });

    // With the space back, the same move goes through whole.
    await rm(filler, { force: true });
    await waitFor('m03 has room again', () => poolFree('m03') > 20 * 1024 * 1024);
    assert.equal((await move('squeezed', 'm03')).status, 'Success');
    await assertSoleCopy(c, 'squeezed', { location: 'm03', sum, running: true });
  });
});
