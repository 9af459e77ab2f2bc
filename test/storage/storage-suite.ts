// The behaviour every storage driver must show (dir today, shared later), run against a factory.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { StorageDriver, VolumeRef } from '../../src/storage/driver.js';

/** What a storage driver's test file provides to run the shared suite. */
export interface StorageFixture {
  /** An initialised, empty pool. */
  pool: StorageDriver;
  /** A new driver object on the same pool, as a restarted daemon would build it. */
  reopen(): Promise<StorageDriver>;
  /** Removes the pool and everything in it. */
  cleanup(): Promise<void>;
}

/** Registers the shared storage-driver tests under `name`, each fixture built by `factory`. */
export function storageSuite(name: string, factory: () => Promise<StorageFixture>): void {
  describe(`storage driver: ${name}`, () => {
    let fx: StorageFixture;
    before(async () => {
      fx = await factory();
    });
    after(async () => {
      await fx?.cleanup();
    });
    let counter = 0;
    /** A volume name no other test uses, so tests share one pool without interfering. */
    const fresh = (type: VolumeRef['type'] = 'container', project = 'default'): VolumeRef => ({
      type,
      project,
      name: `v${++counter}`,
    });

    it('creates a volume, reports its usage, and deletes it', async () => {
      const ref = fresh();
      assert.equal(await fx.pool.volumeExists(ref), false);
      await fx.pool.createVolume(ref);
      assert.equal(await fx.pool.volumeExists(ref), true);
      assert.equal(await fx.pool.volumeUsage(ref), 0);
      const dir = fx.pool.volumePath(ref);
      assert.ok((await fsp.stat(dir)).isDirectory());
      await fsp.writeFile(path.join(dir, 'a.bin'), Buffer.alloc(1000, 1));
      await fsp.mkdir(path.join(dir, 'sub/deeper'), { recursive: true });
      await fsp.writeFile(path.join(dir, 'sub/deeper/b.bin'), Buffer.alloc(234, 2));
      assert.equal(await fx.pool.volumeUsage(ref), 1234);
      await fx.pool.deleteVolume(ref);
      assert.equal(await fx.pool.volumeExists(ref), false);
      await fx.pool.deleteVolume(ref);
    });

    it('reports what a copy of a volume takes on a pool: whole blocks and an inode per entry', async () => {
      const ref = fresh();
      await fx.pool.createVolume(ref);
      const dir = fx.pool.volumePath(ref);
      await fsp.writeFile(path.join(dir, 'one-byte'), 'x');
      await fsp.writeFile(path.join(dir, 'a-block-and-a-bit'), Buffer.alloc(4097));
      await fsp.mkdir(path.join(dir, 'sub'));
      await fsp.symlink('one-byte', path.join(dir, 'short-link'));
      await fsp.symlink(`${'long/'.repeat(20)}target`, path.join(dir, 'long-link'));
      // Files: 1 + 2 blocks; directories (the volume and sub): 1 block each; the long link: 1 block.
      assert.deepEqual(await fx.pool.volumeFootprint(ref), { bytes: 6 * 4096, inodes: 6 });
      assert.ok((await fx.pool.volumeUsage(ref)) < 6 * 4096, 'usage counts bytes, not blocks');
      await fx.pool.deleteVolume(ref);
    });

    it('usage does not follow symlinks out of the volume', async () => {
      const ref = fresh();
      await fx.pool.createVolume(ref);
      const outside = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-outside-'));
      try {
        await fsp.writeFile(path.join(outside, 'big.bin'), Buffer.alloc(1 << 20));
        const dir = fx.pool.volumePath(ref);
        await fsp.writeFile(path.join(dir, 'small.bin'), Buffer.alloc(10));
        await fsp.symlink(path.join(outside, 'big.bin'), path.join(dir, 'file-link'));
        await fsp.symlink(outside, path.join(dir, 'dir-link'));
        const usage = await fx.pool.volumeUsage(ref);
        assert.ok(usage >= 10 && usage < 1000, `usage ${usage}`);
        await fx.pool.deleteVolume(ref);
        assert.deepEqual(await fsp.readdir(outside), ['big.bin'], 'deleting the volume left link targets alone');
      } finally {
        await fsp.rm(outside, { recursive: true, force: true });
      }
    });

    it('a committed staging directory becomes the volume with identical bytes', async () => {
      const ref = fresh();
      const staging = await fx.pool.createStaging(ref, 'move-commit');
      assert.deepEqual(await fsp.readdir(staging), []);
      await writeSampleTree(staging);
      const expected = await snapshotTree(staging);
      await fx.pool.commitStaging(ref, staging);
      assert.equal(await fx.pool.volumeExists(ref), true);
      assert.deepEqual(await snapshotTree(fx.pool.volumePath(ref)), expected);
      assert.equal(await exists(staging), false, 'the staging directory is consumed');
      assert.deepEqual(await fx.pool.listStaging(), []);
    });

    it('staging again under the same move id starts empty', async () => {
      const ref = fresh();
      const first = await fx.pool.createStaging(ref, 'move-retry');
      await fsp.writeFile(path.join(first, 'partial'), 'half');
      const second = await fx.pool.createStaging(ref, 'move-retry');
      assert.deepEqual(await fsp.readdir(second), []);
      await fx.pool.discardStaging(second);
    });

    it('committing onto an existing volume fails and leaves both copies intact', async () => {
      const ref = fresh('custom');
      await fx.pool.createVolume(ref);
      await fsp.writeFile(path.join(fx.pool.volumePath(ref), 'data'), 'original');
      const staging = await fx.pool.createStaging(ref, 'move-clash');
      await fsp.writeFile(path.join(staging, 'data'), 'incoming');
      await assert.rejects(fx.pool.commitStaging(ref, staging), /already exists/);
      assert.equal(await fsp.readFile(path.join(fx.pool.volumePath(ref), 'data'), 'utf8'), 'original');
      assert.equal(await fsp.readFile(path.join(staging, 'data'), 'utf8'), 'incoming');
      await fx.pool.discardStaging(staging);
    });

    it('committing onto an existing empty volume fails too', async () => {
      const ref = fresh();
      await fx.pool.createVolume(ref);
      const staging = await fx.pool.createStaging(ref, 'move-empty');
      await fsp.writeFile(path.join(staging, 'data'), 'incoming');
      await assert.rejects(fx.pool.commitStaging(ref, staging), /already exists/);
      assert.deepEqual(await fsp.readdir(fx.pool.volumePath(ref)), []);
      await fx.pool.discardStaging(staging);
    });

    it('leftover staging directories are listed after a restart and can be discarded', async () => {
      const a = fresh();
      const b = fresh('custom');
      const stagingA = await fx.pool.createStaging(a, 'move-a');
      const stagingB = await fx.pool.createStaging(b, 'move-b');
      await fsp.writeFile(path.join(stagingA, 'x'), 'x');
      const reopened = await fx.reopen();
      const listed = await reopened.listStaging();
      assert.deepEqual(
        listed.map((s) => ({ moveId: s.moveId, path: path.resolve(s.path) })).sort((x, y) => x.moveId.localeCompare(y.moveId)),
        [
          { moveId: 'move-a', path: path.resolve(stagingA) },
          { moveId: 'move-b', path: path.resolve(stagingB) },
        ],
      );
      for (const s of listed) await reopened.discardStaging(s.path);
      assert.deepEqual(await reopened.listStaging(), []);
      assert.equal(await exists(stagingA), false);
      assert.equal(await reopened.volumeExists(a), false, 'discarding never makes a volume');
    });

    it('lists every volume in the pool', async () => {
      const made = [fresh(), fresh('custom'), fresh('container', 'other'), { ...fresh('custom'), name: 'with_underscore' }];
      for (const ref of made) await fx.pool.createVolume(ref);
      const staged = fresh();
      const staging = await fx.pool.createStaging(staged, 'move-list');
      const key = (r: VolumeRef): string => `${r.type}/${r.project}/${r.name}`;
      const listed = (await (await fx.reopen()).listVolumes()).map(key);
      for (const ref of made) assert.ok(listed.includes(key(ref)), `${key(ref)} listed`);
      assert.ok(!listed.includes(key(staged)), 'a staging directory is not a volume');
      for (const ref of made) await fx.pool.deleteVolume(ref);
      const after = (await fx.pool.listVolumes()).map(key);
      for (const ref of made) assert.ok(!after.includes(key(ref)), `${key(ref)} no longer listed`);
      await fx.pool.discardStaging(staging);
    });

    it('reports sane pool usage', async () => {
      const usage = await fx.pool.poolUsage();
      assert.ok(usage.totalBytes > 0);
      assert.ok(usage.usedBytes >= 0 && usage.freeBytes >= 0);
      assert.ok(usage.usedBytes + usage.freeBytes <= usage.totalBytes);
      assert.ok(usage.freeInodes === null || usage.freeInodes > 0, `free inodes ${usage.freeInodes}`);
    });

    it('rejects names that could escape the pool', async () => {
      const bad: VolumeRef[] = [];
      for (const name of ['', '.', '..', 'a/b', '../x', '../../etc', 'nul\0byte']) {
        bad.push({ type: 'container', project: 'default', name });
        bad.push({ type: 'custom', project: name, name: 'ok' });
      }
      bad.push({ type: 'nonsense' as VolumeRef['type'], project: 'default', name: 'ok' });
      for (const ref of bad) {
        const label = JSON.stringify(ref);
        assert.throws(() => fx.pool.volumePath(ref), Error, label);
        await assert.rejects(fx.pool.createVolume(ref), Error, label);
        await assert.rejects(fx.pool.volumeExists(ref), Error, label);
        await assert.rejects(fx.pool.deleteVolume(ref), Error, label);
        await assert.rejects(fx.pool.createStaging(ref, 'move-bad'), Error, label);
      }
      for (const moveId of ['', '.', '..', 'a/b', '../x']) {
        await assert.rejects(fx.pool.createStaging(fresh(), moveId), Error, `move id ${JSON.stringify(moveId)}`);
      }
    });

    it('refuses to commit or discard a path that is not one of its staging directories', async () => {
      const outside = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-outside-'));
      try {
        await fsp.writeFile(path.join(outside, 'keep'), 'keep');
        const ref = fresh();
        await assert.rejects(fx.pool.commitStaging(ref, outside));
        await assert.rejects(fx.pool.discardStaging(outside));
        assert.equal(await fx.pool.volumeExists(ref), false);
        assert.deepEqual(await fsp.readdir(outside), ['keep']);
      } finally {
        await fsp.rm(outside, { recursive: true, force: true });
      }
    });
  });
}

/** A small tree with the things a copy can get wrong: nesting, an empty directory, binary data, a symlink. */
async function writeSampleTree(dir: string): Promise<void> {
  await fsp.mkdir(path.join(dir, 'etc/conf.d'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'empty'));
  await fsp.writeFile(path.join(dir, 'etc/conf.d/app.conf'), 'key = value\n');
  const binary = Buffer.alloc(70_000);
  for (let i = 0; i < binary.length; i++) binary[i] = (i * 7919) & 0xff;
  await fsp.writeFile(path.join(dir, 'blob.bin'), binary);
  await fsp.writeFile(path.join(dir, 'script.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  await fsp.symlink('etc/conf.d/app.conf', path.join(dir, 'link'));
}

/** Every entry of a tree with its kind, mode and content (or link target), for byte-for-byte comparison. */
async function snapshotTree(dir: string, prefix = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, entry.name);
    const rel = prefix + entry.name;
    const st = await fsp.lstat(p);
    const mode = (st.mode & 0o7777).toString(8);
    if (entry.isDirectory()) {
      out[rel] = `dir ${mode}`;
      Object.assign(out, await snapshotTree(p, `${rel}/`));
    } else if (entry.isSymbolicLink()) {
      out[rel] = `link ${await fsp.readlink(p)}`;
    } else {
      out[rel] = `file ${mode} ${(await fsp.readFile(p)).toString('base64')}`;
    }
  }
  return out;
}

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(
    () => true,
    () => false,
  );
}
