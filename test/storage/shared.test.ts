// The shared pool: the storage suite, then what follows from every member opening the same directory.

import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SharedPool } from '../../src/storage/drivers/shared.js';
import { MemberPools, remotePoolDriver, supportedPoolDrivers } from '../../src/storage/pools.js';
import type { VolumeRef } from '../../src/storage/driver.js';
import { storageSuite, type StorageFixture } from './storage-suite.js';

async function sharedFixture(): Promise<StorageFixture> {
  const source = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-shared-'));
  const pool = new SharedPool('pool1', source, 'm1');
  await pool.init();
  return {
    pool,
    async reopen() {
      const again = new SharedPool('pool1', source, 'm1');
      await again.init();
      return again;
    },
    async cleanup() {
      await fsp.rm(source, { recursive: true, force: true });
    },
  };
}

storageSuite('shared', sharedFixture);

describe('shared pool opened by two members', () => {
  let source: string;
  let m1: SharedPool;
  let m2: SharedPool;
  before(async () => {
    source = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-shared-two-'));
    m1 = new SharedPool('pool1', source, 'm1');
    m2 = new SharedPool('pool1', source, 'm2');
    await m1.init();
    await m2.init();
  });
  after(async () => {
    await fsp.rm(source, { recursive: true, force: true });
  });

  it('is a remote driver the factory offers', () => {
    assert.ok(supportedPoolDrivers().includes('shared'));
    assert.equal(remotePoolDriver('shared'), true);
    assert.equal(remotePoolDriver('dir'), false);
  });

  it('shows every volume at the same path to both members', async () => {
    const ref: VolumeRef = { type: 'container', project: 'default', name: 'c1' };
    await m1.createVolume(ref);
    await fsp.writeFile(path.join(m1.volumePath(ref), 'data'), 'written by m1');
    assert.equal(m2.volumePath(ref), m1.volumePath(ref));
    assert.equal(await m2.volumeExists(ref), true);
    assert.equal(await fsp.readFile(path.join(m2.volumePath(ref), 'data'), 'utf8'), 'written by m1');
    await m1.deleteVolume(ref);
  });

  it('never lets one member\'s start or cleanup remove the other\'s staging, trash or copies in progress', async () => {
    const incoming: VolumeRef = { type: 'container', project: 'default', name: 'arriving' };
    const staging = await m1.createStaging(incoming, 'move-1');
    await fsp.writeFile(path.join(staging, 'half'), 'half a copy');
    // What m1 had half deleted, and a snapshot copy it is making, as a crash or a running operation leaves them.
    const trash = path.join(source, '.members', 'm1', '.deleting', 'stuck');
    const copying = path.join(source, '.members', 'm1', '.copying', 'in-progress');
    await fsp.mkdir(trash, { recursive: true });
    await fsp.mkdir(copying, { recursive: true });
    const volume: VolumeRef = { type: 'custom', project: 'default', name: 'data' };
    await m1.createVolume(volume);

    // m2 restarts (its init empties its own scratch), sweeps its trash, and lists its staging.
    const restarted = new SharedPool('pool1', source, 'm2');
    await restarted.init();
    await restarted.emptyTrash();
    assert.deepEqual(await restarted.listStaging(), [], 'm2 sees no staging of its own');

    assert.deepEqual((await m1.listStaging()).map((s) => s.moveId), ['move-1']);
    assert.equal(await fsp.readFile(path.join(staging, 'half'), 'utf8'), 'half a copy');
    await fsp.access(trash);
    await fsp.access(copying);
    assert.equal(await m1.volumeExists(volume), true);
    await assert.rejects(restarted.discardStaging(staging), /not a staging directory/, 'm2 may not discard m1\'s staging');
    await m1.discardStaging(staging);
    await m1.deleteVolume(volume);
    await fsp.rm(trash, { recursive: true });
    await fsp.rm(copying, { recursive: true });
  });

  it('a member leaving the pool takes only its own directory; the volumes of the other stay', async () => {
    const ref: VolumeRef = { type: 'container', project: 'default', name: 'stays' };
    await m1.createVolume(ref);
    await fsp.writeFile(path.join(m1.volumePath(ref), 'data'), 'keep');
    const leaving = new SharedPool('pool1', source, 'm3');
    await leaving.init();
    await leaving.destroy();
    await assert.rejects(fsp.access(path.join(source, '.members', 'm3')));
    assert.equal(await fsp.readFile(path.join(m1.volumePath(ref), 'data'), 'utf8'), 'keep');
    await fsp.access(path.join(source, '.members', 'm1', '.staging'));
    await m1.deleteVolume(ref);
  });

  it('refuses a source that is not there (an unmounted share) and a pool without a source', async () => {
    await assert.rejects(new SharedPool('pool1', path.join(source, 'missing'), 'm1').init(), /mount it first/);
    const memberDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-member-'));
    try {
      await assert.rejects(new MemberPools(memberDir, 'm1').open('pool2', 'shared', {}), /needs a source/);
      const pools = new MemberPools(memberDir, 'm1');
      const opened = await pools.open('pool2', 'shared', { source });
      assert.equal(opened.driver, 'shared');
    } finally {
      await fsp.rm(memberDir, { recursive: true, force: true });
    }
  });
});
