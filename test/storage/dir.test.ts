// The dir pool: the shared storage suite, then its on-disk layout and what follows from it.

import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DirPool } from '../../src/storage/drivers/dir.js';
import { storageSuite } from './storage-suite.js';
import type { StorageFixture } from './storage-suite.js';

async function dirFixture(): Promise<StorageFixture & { root: string }> {
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-dir-'));
  const root = path.join(tmp, 'pool');
  const pool = new DirPool('default', root);
  await pool.init();
  return {
    root,
    pool,
    async reopen() {
      const again = new DirPool('default', root);
      await again.init();
      return again;
    },
    async cleanup() {
      await fsp.rm(tmp, { recursive: true, force: true });
    },
  };
}

storageSuite('dir', dirFixture);

describe('dir pool', () => {
  let fx: Awaited<ReturnType<typeof dirFixture>>;
  before(async () => {
    fx = await dirFixture();
  });
  after(async () => {
    await fx?.cleanup();
  });

  it('lays volumes and staging out as <project>_<name> under their type', async () => {
    const root = { type: 'container' as const, project: 'default', name: 'c1' };
    const custom = { type: 'custom' as const, project: 'proj', name: 'my_data' };
    await fx.pool.createVolume(root);
    await fx.pool.createVolume(custom);
    assert.equal(fx.pool.volumePath(root), path.join(fx.root, 'containers/default_c1'));
    assert.equal(fx.pool.volumePath(custom), path.join(fx.root, 'custom/proj_my_data'));
    const staged = { type: 'container' as const, project: 'default', name: 'c2' };
    const staging = await fx.pool.createStaging(staged, 'm1');
    assert.equal(staging, path.join(fx.root, '.staging/m1/container_default_c2'));
    assert.deepEqual(
      (await fx.pool.listVolumes()).sort((a, b) => a.name.localeCompare(b.name)),
      [root, custom],
      'a name with an underscore splits back on the first one',
    );
    await fx.pool.commitStaging(staged, staging);
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.staging')), [], 'the emptied move directory is removed');
  });

  it('rejects project names with an underscore, which would make directory names ambiguous', async () => {
    await assert.rejects(fx.pool.createVolume({ type: 'custom', project: 'a_b', name: 'c' }), /underscore/);
  });

  it('init removes a move directory that a crash left empty after its copy was renamed into place', async () => {
    const ref = { type: 'container' as const, project: 'default', name: 'landed' };
    const staging = await fx.pool.createStaging(ref, 'crashed-move');
    // What commitStaging leaves if the daemon dies right after its rename.
    await fsp.rename(staging, fx.pool.volumePath(ref));
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.staging')), ['crashed-move']);
    const again = await fx.reopen();
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.staging')), [], 'the empty move directory is gone');
    assert.equal(await again.volumeExists(ref), true, 'the volume itself is left to the store to judge');
    await again.deleteVolume(ref);
  });

  it('refuses to create a volume that exists', async () => {
    const ref = { type: 'custom' as const, project: 'default', name: 'twice' };
    await fx.pool.createVolume(ref);
    await fsp.writeFile(path.join(fx.pool.volumePath(ref), 'keep'), 'keep');
    await assert.rejects(fx.pool.createVolume(ref), /already exists/);
    assert.deepEqual(await fsp.readdir(fx.pool.volumePath(ref)), ['keep']);
  });

  it('refuses to commit a staging directory made for another volume', async () => {
    const staging = await fx.pool.createStaging({ type: 'container', project: 'default', name: 'mine' }, 'm2');
    const other = { type: 'container' as const, project: 'default', name: 'theirs' };
    await assert.rejects(fx.pool.commitStaging(other, staging), /does not belong/);
    assert.equal(await fx.pool.volumeExists(other), false);
    await fx.pool.discardStaging(staging);
  });

  it('a volume half-way through deletion is already gone, and init clears the remains', async () => {
    const ref = { type: 'container' as const, project: 'default', name: 'doomed' };
    await fx.pool.createVolume(ref);
    // Simulate a crash after the rename that starts a delete: the remains sit in .deleting.
    const remains = path.join(fx.root, '.deleting', 'crashed');
    await fsp.rename(fx.pool.volumePath(ref), remains);
    assert.equal(await fx.pool.volumeExists(ref), false);
    await fx.reopen();
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.deleting')), []);
  });

  it('emptyTrash finishes a deletion that failed half way', async () => {
    const stuck = path.join(fx.root, '.deleting', 'stuck');
    await fsp.mkdir(path.join(stuck, 'deep'), { recursive: true });
    await fsp.writeFile(path.join(stuck, 'deep', 'file'), 'x');
    await fx.pool.emptyTrash();
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.deleting')), []);
    await fx.pool.emptyTrash(); // nothing there: nothing to do
  });

  it('counts a symlink as its own size', async () => {
    const ref = { type: 'container' as const, project: 'default', name: 'links' };
    await fx.pool.createVolume(ref);
    const dir = fx.pool.volumePath(ref);
    await fsp.writeFile(path.join(dir, 'f'), Buffer.alloc(100));
    await fsp.symlink('/etc/passwd', path.join(dir, 'l'));
    assert.equal(await fx.pool.volumeUsage(ref), 100 + '/etc/passwd'.length);
  });
});
