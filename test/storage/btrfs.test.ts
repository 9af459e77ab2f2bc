// The btrfs pool, on a btrfs file system on a loop file each fixture makes and removes: the shared storage
// suite, then what btrfs adds (subvolumes, read-only snapshots, send and receive between pools).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { BtrfsPool, isOnBtrfs } from '../../src/storage/drivers/btrfs.js';
import { snapshotRef, type SendPoint, type StorageDriver, type VolumeRef, type VolumeStreams } from '../../src/storage/driver.js';
import { btrfsMissing, makeLoopBtrfs, requireBtrfs, type LoopBtrfs } from '../helpers/btrfs.js';
import { storageSuite, type StorageFixture } from './storage-suite.js';

async function btrfsFixture(): Promise<StorageFixture & { root: string; fs: LoopBtrfs }> {
  const fs = await makeLoopBtrfs();
  try {
    const root = path.join(fs.mount, 'pool');
    const pool = new BtrfsPool('default', root);
    await pool.init();
    return {
      root,
      fs,
      pool,
      async reopen() {
        const again = new BtrfsPool('default', root);
        await again.init();
        return again;
      },
      cleanup: () => fs.remove(),
    };
  } catch (err) {
    await fs.remove();
    throw err;
  }
}

// Run by hand without root or btrfs-progs, the suite is skipped with the reason; under CI it fails.
if (btrfsMissing() === null || process.env.CI === 'true') {
  storageSuite('btrfs', btrfsFixture);
} else {
  it('storage driver: btrfs', (t) => {
    requireBtrfs(t);
  });
}

/** `btrfs subvolume show`'s answer for `p`, or null if it is not a subvolume. */
function subvolumeInfo(p: string): string | null {
  const r = spawnSync('btrfs', ['subvolume', 'show', p], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout : null;
}

function readOnly(p: string): boolean {
  const r = spawnSync('btrfs', ['property', 'get', '-ts', p, 'ro'], { encoding: 'utf8' });
  return r.stdout.trim() === 'ro=true';
}

/** Every entry with kind, mode, owner and content hash (or link target): what must be identical after a move. */
async function treeOf(dir: string, prefix = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await fsp.readdir(dir)).sort()) {
    const p = path.join(dir, name);
    const rel = prefix + name;
    const st = await fsp.lstat(p);
    const meta = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
    if (st.isDirectory()) {
      out[rel] = `dir ${meta}`;
      Object.assign(out, await treeOf(p, `${rel}/`));
    } else if (st.isSymbolicLink()) out[rel] = `link ${await fsp.readlink(p)}`;
    else out[rel] = `file ${meta} ${createHash('sha256').update(await fsp.readFile(p)).digest('hex')}`;
  }
  return out;
}

/** Sends `point` (against `parent`) from `from` into `to`'s staging for `moveId`; answers the staging path and the bytes streamed. */
async function streamBetween(from: VolumeStreams, to: VolumeStreams, ref: VolumeRef, moveId: string, point: SendPoint, parent: SendPoint | undefined, fresh: boolean): Promise<{ staging: string; bytes: number }> {
  let bytes = 0;
  const body = from.send(point, parent);
  body.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
  });
  body.pause();
  const staging = await to.receive(ref, moveId, body as Readable, fresh);
  return { staging, bytes };
}

describe('btrfs pool', () => {
  let fx: Awaited<ReturnType<typeof btrfsFixture>>;
  let other: Awaited<ReturnType<typeof btrfsFixture>>;
  before(async () => {
    if (btrfsMissing() !== null && process.env.CI !== 'true') return;
    fx = await btrfsFixture();
    other = await btrfsFixture();
  });
  after(async () => {
    await fx?.cleanup();
    await other?.cleanup();
  });

  it('refuses a source that is not on btrfs, creating nothing', async (t) => {
    if (!requireBtrfs(t)) return;
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-not-btrfs-'));
    try {
      assert.equal(await isOnBtrfs(tmp), false);
      assert.equal(await isOnBtrfs(fx.fs.mount), true);
      await assert.rejects(new BtrfsPool('p1', path.join(tmp, 'pool')).init(), /is not on a btrfs file system/);
      assert.deepEqual(await fsp.readdir(tmp), [], 'nothing was created');
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  });

  it('a volume is a subvolume; a snapshot is a read-only subvolume that shares its extents', async (t) => {
    if (!requireBtrfs(t)) return;
    const ref: VolumeRef = { type: 'container', project: 'default', name: 'sub' };
    await fx.pool.createVolume(ref);
    const dir = fx.pool.volumePath(ref);
    assert.ok(subvolumeInfo(dir), 'the volume is a subvolume');
    assert.equal(readOnly(dir), false);
    assert.equal((await fsp.stat(dir)).mode & 0o777, 0o700, 'a new volume is private, as in dir');
    await fsp.writeFile(path.join(dir, 'data'), randomBytes(20 << 20));
    spawnSync('btrfs', ['filesystem', 'sync', fx.fs.mount]); // the data's extents allocated before counting
    const used = (await fx.pool.poolUsage()).usedBytes;
    const snap = snapshotRef(ref, 's0');
    await fx.pool.createSnapshot(snap);
    assert.ok(subvolumeInfo(fx.pool.volumePath(snap)), 'the snapshot is a subvolume');
    assert.equal(readOnly(fx.pool.volumePath(snap)), true, 'and read-only');
    await assert.rejects(fsp.writeFile(path.join(fx.pool.volumePath(snap), 'data'), 'x'), /EROFS|read-only/i);
    const grew = (await fx.pool.poolUsage()).usedBytes - used;
    assert.ok(grew < 5 << 20, `a snapshot of 20 MiB took ${grew} bytes: it shares the volume's extents`);
    await fx.pool.deleteVolume(snap);
    await fx.pool.deleteVolume(ref);
    assert.equal(subvolumeInfo(dir), null);
  });

  it('restore replaces the volume by a writable snapshot of the snapshot', async (t) => {
    if (!requireBtrfs(t)) return;
    const ref: VolumeRef = { type: 'container', project: 'default', name: 'restored' };
    await fx.pool.createVolume(ref);
    const dir = fx.pool.volumePath(ref);
    await fsp.writeFile(path.join(dir, 'state'), 'before');
    const snap = snapshotRef(ref, 'good');
    await fx.pool.createSnapshot(snap);
    await fsp.writeFile(path.join(dir, 'state'), 'broken');
    await fsp.writeFile(path.join(dir, 'junk'), 'junk');
    await fx.pool.restoreSnapshot(snap);
    assert.deepEqual(await fsp.readdir(dir), ['state']);
    assert.equal(await fsp.readFile(path.join(dir, 'state'), 'utf8'), 'before');
    assert.equal(readOnly(dir), false, 'the restored volume is writable');
    assert.ok(subvolumeInfo(dir));
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.restoring')), []);
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.deleting')), []);
    await fx.pool.deleteVolume(snap);
    await fx.pool.deleteVolume(ref);
  });

  it('deletes a volume with subvolumes nested in it, and a restore cut short is finished at the next start', async (t) => {
    if (!requireBtrfs(t)) return;
    const ref: VolumeRef = { type: 'custom', project: 'default', name: 'nest' };
    await fx.pool.createVolume(ref);
    const dir = fx.pool.volumePath(ref);
    spawnSync('btrfs', ['subvolume', 'create', path.join(dir, 'inner')]);
    spawnSync('btrfs', ['subvolume', 'create', path.join(dir, 'inner', 'deeper')]);
    await fsp.writeFile(path.join(dir, 'inner', 'deeper', 'f'), 'x');
    await fx.pool.deleteVolume(ref);
    assert.equal(await fx.pool.volumeExists(ref), false);
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.deleting')), []);

    const root: VolumeRef = { type: 'container', project: 'default', name: 'cut' };
    await fx.pool.createVolume(root);
    await fsp.writeFile(path.join(fx.pool.volumePath(root), 'state'), 'old');
    await fx.pool.createSnapshot(snapshotRef(root, 's'));
    // What restoreSnapshot leaves if the daemon dies after the volume went to the trash.
    spawnSync('btrfs', ['subvolume', 'snapshot', fx.pool.volumePath(snapshotRef(root, 's')), path.join(fx.root, '.restoring', 'container_default_cut')]);
    await fsp.writeFile(path.join(fx.root, '.restoring', 'container_default_cut', 'state'), 'restored');
    await fsp.rename(fx.pool.volumePath(root), path.join(fx.root, '.deleting', 'old'));
    const again = await fx.reopen();
    assert.equal(await fsp.readFile(path.join(again.volumePath(root), 'state'), 'utf8'), 'restored');
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.deleting')), []);
    await again.deleteVolume(snapshotRef(root, 's'));
    await again.deleteVolume(root);
  });

  it('send and receive between two pools: bytes, modes, owners and links identical; snapshots arrive read-only', async (t) => {
    if (!requireBtrfs(t)) return;
    const from = fx.pool as StorageDriver & { streams: VolumeStreams };
    const to = other.pool as StorageDriver & { streams: VolumeStreams };
    const ref: VolumeRef = { type: 'container', project: 'default', name: 'roundtrip' };
    await from.createVolume(ref);
    const dir = from.volumePath(ref);
    await fsp.chmod(dir, 0o755);
    await fsp.mkdir(path.join(dir, 'etc/conf.d'), { recursive: true, mode: 0o750 });
    await fsp.writeFile(path.join(dir, 'etc/conf.d/app.conf'), 'key = value\n', { mode: 0o640 });
    await fsp.writeFile(path.join(dir, 'blob.bin'), randomBytes(3 << 20));
    await fsp.writeFile(path.join(dir, 'setuid'), '#!/bin/sh\n', { mode: 0o4755 });
    await fsp.chown(path.join(dir, 'etc/conf.d/app.conf'), 1234, 5678);
    await fsp.symlink('/etc/hostname', path.join(dir, 'abs-link'));
    await fsp.link(path.join(dir, 'blob.bin'), path.join(dir, 'hard'));
    await from.createSnapshot(snapshotRef(ref, 'snap0'));
    const expected = await treeOf(dir);
    const expectedSnap = await treeOf(from.volumePath(snapshotRef(ref, 'snap0')));

    for (const r of [snapshotRef(ref, 'snap0'), ref]) {
      const point = await from.streams.sendPoint(r, 'move-rt');
      assert.equal(readOnly(point.path), true, 'a send point is read-only');
      const { staging } = await streamBetween(from.streams, to.streams, r, 'move-rt', point, undefined, true);
      assert.equal(readOnly(staging), false, 'the staging copy is writable');
      await to.commitStaging(r, staging);
      await from.streams.releaseSendPoint(point);
    }
    assert.deepEqual(await treeOf(to.volumePath(ref)), expected);
    assert.deepEqual(await treeOf(to.volumePath(snapshotRef(ref, 'snap0'))), expectedSnap);
    assert.equal(readOnly(to.volumePath(snapshotRef(ref, 'snap0'))), true, 'a received snapshot is read-only in its pool');
    assert.equal((await fsp.lstat(path.join(to.volumePath(ref), 'hard'))).ino, (await fsp.lstat(path.join(to.volumePath(ref), 'blob.bin'))).ino, 'hard links stay links');
    assert.deepEqual(await to.listStaging(), [], 'nothing staged or received is left');
    assert.deepEqual(await fsp.readdir(path.join(other.root, '.receiving')), []);
    assert.deepEqual(await fsp.readdir(path.join(fx.root, '.sending')), [], 'send points are released');
    assert.equal(await from.volumeExists(snapshotRef(ref, 'snap0')), true, "a volume's own snapshot is not released with its send");
  });

  it('an incremental send carries only what changed since the parent', async (t) => {
    if (!requireBtrfs(t)) return;
    const from = fx.pool as StorageDriver & { streams: VolumeStreams };
    const to = other.pool as StorageDriver & { streams: VolumeStreams };
    const ref: VolumeRef = { type: 'container', project: 'default', name: 'incremental' };
    await from.createVolume(ref);
    const dir = from.volumePath(ref);
    for (let i = 0; i < 8; i++) await fsp.writeFile(path.join(dir, `big${i}`), randomBytes(2 << 20));
    const first = await from.streams.sendPoint(ref, 'move-inc');
    const full = await streamBetween(from.streams, to.streams, ref, 'move-inc', first, undefined, true);
    assert.ok(full.bytes > 16 << 20, `the first pass carries everything (${full.bytes} bytes)`);

    await fsp.writeFile(path.join(dir, 'new'), randomBytes(100_000));
    await fsp.rm(path.join(dir, 'big3'));
    const fh = await fsp.open(path.join(dir, 'big5'), 'r+');
    await fh.write(Buffer.alloc(4096, 9), 0, 4096, 1 << 20);
    await fh.close();
    const second = await from.streams.sendPoint(ref, 'move-inc');
    const delta = await streamBetween(from.streams, to.streams, ref, 'move-inc', second, first, false);
    assert.ok(delta.bytes < 300_000, `the incremental pass carries the changes only (${delta.bytes} bytes)`);
    assert.equal(await fsp.readdir(path.join(other.root, '.receiving', 'move-inc', 'container_default_incremental')).then((d) => d.length), 1, 'only the last received stream is kept');
    await from.streams.releaseSendPoint(first);

    const expected = await treeOf(dir);
    assert.deepEqual(await treeOf(delta.staging), expected, 'the staging copy is the volume as it is now');
    await to.commitStaging(ref, delta.staging);
    assert.deepEqual(await treeOf(to.volumePath(ref)), expected);
    await from.streams.releaseSendPoint(second);
    assert.deepEqual(await to.listStaging(), []);
  });

  it('a broken stream fails the receive and leaves nothing but what discardStaging removes', async (t) => {
    if (!requireBtrfs(t)) return;
    const from = fx.pool as StorageDriver & { streams: VolumeStreams };
    const to = other.pool as StorageDriver & { streams: VolumeStreams };
    const ref: VolumeRef = { type: 'container', project: 'default', name: 'broken' };
    await from.createVolume(ref);
    await fsp.writeFile(path.join(from.volumePath(ref), 'data'), randomBytes(1 << 20));
    const point = await from.streams.sendPoint(ref, 'move-broken');
    const chunks: Buffer[] = [];
    for await (const chunk of from.streams.send(point)) chunks.push(chunk as Buffer);
    const whole = Buffer.concat(chunks);
    await assert.rejects(to.streams.receive(ref, 'move-broken', Readable.from([whole.subarray(0, whole.length >> 1)]), true), /btrfs receive failed/);
    assert.equal(await to.volumeExists(ref), false);
    for (const s of await to.listStaging()) await to.discardStaging(s.path);
    assert.deepEqual(await to.listStaging(), []);
    assert.deepEqual(await fsp.readdir(path.join(other.root, '.receiving')), []);
    await from.streams.releaseSendPoint(point);
  });
});
