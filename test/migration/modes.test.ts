// Moves keep every entry's mode (and, as root, owner) exactly, cold and live (pre-copy): a 0555 directory
// with files created in it before it was made read-only (as a root file system's /proc and /sys are), a
// 0500 directory, a 1777 directory, a 0644 file, a 0444 file, a setuid file and a setgid directory owned by
// another user, and a symlink owned by another user.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, chown, lchown, lstat, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { isRoot } from '../helpers/prereq.js';

let c: TestCluster;

/** Every entry below `root` (and `root` itself) with its kind, mode, owner, size and content, in order. */
async function describeTree(root: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (rel: string): Promise<void> => {
    const abs = rel === '.' ? root : path.join(root, rel);
    const st = await lstat(abs);
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    const owner = `${st.uid}:${st.gid}`;
    if (st.isDirectory()) {
      out.push(`d ${rel} ${mode} ${owner}`);
      for (const name of (await readdir(abs)).sort()) await visit(rel === '.' ? name : `${rel}/${name}`);
    } else if (st.isSymbolicLink()) {
      out.push(`l ${rel} ${owner} -> ${await readlink(abs)}`);
    } else {
      out.push(`f ${rel} ${mode} ${owner} ${st.size} ${createHash('sha256').update(await readFile(abs)).digest('hex')}`);
    }
  };
  await visit('.');
  return out;
}

/** The tree of modes under `root`; owners other than root's only when running as root. */
async function seedModes(root: string): Promise<void> {
  const other = isRoot();
  // Read-only directories with content made before the chmod, as /proc and /sys in a root file system.
  await mkdir(path.join(root, 'proc', 'sys'), { recursive: true });
  await writeFile(path.join(root, 'proc', 'version'), 'Linux\n');
  await writeFile(path.join(root, 'proc', 'sys', 'kernel'), 'x\n');
  await chmod(path.join(root, 'proc', 'sys'), 0o555);
  await chmod(path.join(root, 'proc'), 0o555);
  await mkdir(path.join(root, 'secret'));
  await writeFile(path.join(root, 'secret', 'key'), 'k\n');
  await chmod(path.join(root, 'secret', 'key'), 0o400);
  await chmod(path.join(root, 'secret'), 0o500);
  await mkdir(path.join(root, 'tmp'));
  await chmod(path.join(root, 'tmp'), 0o1777);
  await writeFile(path.join(root, 'plain.txt'), 'plain\n');
  await chmod(path.join(root, 'plain.txt'), 0o644);
  await writeFile(path.join(root, 'readonly.txt'), 'ro\n');
  await chmod(path.join(root, 'readonly.txt'), 0o444);
  await writeFile(path.join(root, 'suid'), '#!/bin/sh\n');
  await mkdir(path.join(root, 'shared'));
  await symlink('plain.txt', path.join(root, 'link'));
  if (other) {
    await chown(path.join(root, 'suid'), 1000, 1000);
    await chown(path.join(root, 'shared'), 1000, 1000);
    await lchown(path.join(root, 'link'), 1000, 1000);
  }
  // After the chown, which clears set-id bits.
  await chmod(path.join(root, 'suid'), 0o4755);
  await chmod(path.join(root, 'shared'), 0o2775);
}

describe('moves keep modes and owners exactly', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  it('a cold move', { timeout: 60_000 }, async () => {
    await c.launch('modal', { target: 'm01', start: false });
    await seedModes(c.instanceDir('m01', 'modal'));
    const before = await describeTree(c.instanceDir('m01', 'modal'));
    await c.client('m01').runAsync('POST', '/1.0/instances/modal?target=m02', { name: 'modal', migration: true });
    assert.equal((await c.instance('modal')).location, 'm02');
    assert.deepEqual(await describeTree(c.instanceDir('m02', 'modal')), before);
  });

  it('a live move (pre-copy) of a running instance', { timeout: 60_000 }, async () => {
    await c.launch('lively', { target: 'm01', start: false });
    await seedModes(c.instanceDir('m01', 'lively'));
    const before = await describeTree(c.instanceDir('m01', 'lively'));
    await c.client('m01').runAsync('PUT', '/1.0/instances/lively/state', { action: 'start' });
    await c.client('m01').runAsync('POST', '/1.0/instances/lively?target=m03', { name: 'lively', migration: true, live: true });
    const moved = await c.instance('lively');
    assert.equal(moved.location, 'm03');
    assert.equal(moved.status, 'Running');
    assert.deepEqual(await describeTree(c.instanceDir('m03', 'lively')), before);
  });
});
