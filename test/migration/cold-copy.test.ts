// Both ends of a cold copy on scratch directories, without members: the source packs a tree (files read ahead
// of their turn), the target writes it with GNU tar while hashing every file's bytes, and answers what landed.
// A tree with everything a root file system holds (read-only directories, set-id files, absolute and relative
// links, hard links, empty, large and many small files, long names) lands exactly, also when tar exits before
// the stream ends (an archive that ends on a tar record). Entries that would land outside the staging
// directory, a stream cut short, a stream that breaks, and the first complaint of tar fail the copy at once,
// and tar is gone (writes nothing more) once the copy has failed.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, link, mkdir, mkdtemp, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import * as tar from 'tar';
import type { TreeEntry } from '../../src/cluster/internal.js';
import { waitFor } from '../helpers/cluster.js';
import { firstDifference, packEntries, receiveCopy, scanTree, UnpackError } from '../../src/migration/tree.js';

const asRoot = process.getuid?.() === 0;

/** A tar stream of hand-made entries (what a broken or hostile peer could send). */
function tarOf(entries: { path: string; type: 'File' | 'SymbolicLink'; content?: string; linkpath?: string }[], end = true): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.content ?? '');
    const header = new tar.Header({ path: e.path, type: e.type, mode: 0o644, size: body.length, linkpath: e.linkpath, mtime: new Date() });
    header.encode();
    if (!header.block) throw new Error('header did not encode');
    blocks.push(header.block, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  if (end) blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** Pack `root` as a cold copy does; `packed` receives every entry as it was read. */
async function pack(root: string, packed: TreeEntry[]): Promise<Readable> {
  const paths = [...(await scanTree(root)).keys()];
  return Readable.from(packEntries(root, paths, { onBytes: () => undefined, onEntry: (e) => packed.push(e) }), { objectMode: false });
}

/** sha256 of every regular file's bytes under `root`, by relative path. */
function contentOf(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, d.name);
      if (d.isDirectory()) walk(p);
      else if (d.isFile()) out.set(path.relative(root, p), createHash('sha256').update(readFileSync(p)).digest('hex'));
    }
  };
  walk(root);
  return out;
}

/** Processes running `tar -x` into `dir`. */
function tarsInto(dir: string): string[] {
  const out = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.startsWith('tar -x') && l.includes(dir));
}

let scratch: string;

describe('cold copies, both ends', () => {
  before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), 'roost-cold-'));
  });
  after(async () => {
    // A read-only directory may keep rm from its contents as a non-root user.
    execFileSync('chmod', ['-R', 'u+rwx', scratch]);
    await rm(scratch, { recursive: true, force: true });
  });

  it('a tree with everything a root file system holds lands exactly, every byte, mode, owner and link', async () => {
    const source = path.join(scratch, 'source');
    const staging = path.join(scratch, 'staging');
    await mkdir(staging);
    await mkdir(path.join(source, 'proc'), { recursive: true });
    await mkdir(path.join(source, 'bin'));
    await mkdir(path.join(source, 'many'));
    await mkdir(path.join(source, 'locked'));
    await writeFile(path.join(source, 'locked', 'inside'), 'under a read-only directory\n');
    await chmod(path.join(source, 'locked'), 0o555);
    await chmod(path.join(source, 'proc'), 0o555);
    await writeFile(path.join(source, 'bin', 'busybox'), Buffer.alloc(3 * 1024 * 1024 + 17, 0xab));
    await chmod(path.join(source, 'bin', 'busybox'), asRoot ? 0o4755 : 0o755);
    await symlink('busybox', path.join(source, 'bin', 'sh'));
    await symlink('/bin/busybox', path.join(source, 'bin', 'abs'));
    await link(path.join(source, 'bin', 'busybox'), path.join(source, 'bin', 'hard'));
    await writeFile(path.join(source, 'empty'), '');
    await writeFile(path.join(source, 'n'.repeat(120)), 'a name longer than ustar holds\n');
    for (let i = 0; i < 300; i++) await writeFile(path.join(source, 'many', `f${i}`), `small file ${i}\n`.repeat(i));
    await chmod(path.join(source, 'many', 'f7'), 0o600);
    if (asRoot) execFileSync('chown', ['1234:5678', path.join(source, 'many', 'f8')]);

    const packed: TreeEntry[] = [];
    const { landed } = await receiveCopy(staging, await pack(source, packed));
    assert.equal(firstDifference(packed, landed), null, 'what landed is what was packed, entry by entry');
    assert.equal(landed.length, packed.length);
    assert.deepEqual(contentOf(staging), contentOf(source), 'every file holds the same bytes');
    assert.equal(await readlink(path.join(staging, 'bin', 'abs')), '/bin/busybox', 'an absolute link keeps its target');
    const mode = (rel: string): number => (landed.find((e) => e.path === rel)?.mode ?? -1);
    assert.equal(mode('proc'), 0o555);
    assert.equal(mode('locked'), 0o555);
    assert.equal(mode('bin/busybox'), asRoot ? 0o4755 : 0o755);
    assert.equal(mode('many/f7'), 0o600);
    if (asRoot) assert.equal(landed.find((e) => e.path === 'many/f8')?.owner, '1234:5678');
  });

  it('refuses entries that would land outside the staging directory and writes nothing there', async () => {
    for (const [name, stream] of [
      ['dotdot', tarOf([{ path: '../outside/planted', type: 'File', content: 'bad' }])],
      ['through-link', tarOf([{ path: 'ln', type: 'SymbolicLink', linkpath: '../outside' }, { path: 'ln/planted', type: 'File', content: 'bad' }])],
    ] as const) {
      const staging = path.join(scratch, name, 'staging');
      const outside = path.join(scratch, name, 'outside');
      await mkdir(staging, { recursive: true });
      await mkdir(outside, { recursive: true });
      await assert.rejects(receiveCopy(staging, Readable.from([stream])), `${name} is refused`);
      assert.ok(!existsSync(path.join(outside, 'planted')), `${name}: nothing written outside`);
    }
  });

  it('fails a stream cut short, or one that is not tar, naming tar\'s complaint', async () => {
    const cut = path.join(scratch, 'cut');
    await mkdir(cut);
    const whole = tarOf([{ path: 'a', type: 'File', content: 'x'.repeat(5000) }], false);
    await assert.rejects(receiveCopy(cut, Readable.from([whole.subarray(0, 2048)])), (err: unknown) => err instanceof UnpackError && /tar -x failed/.test(err.message));
    const junk = path.join(scratch, 'junk');
    await mkdir(junk);
    await assert.rejects(receiveCopy(junk, Readable.from([Buffer.alloc(4096, 0x41)])), (err: unknown) => err instanceof Error);
  });

  it('a stream whose archive ends on a tar record boundary lands, even when tar exits before the stream ends', async () => {
    // GNU tar reads 10 KiB records: when the archive's end falls on one, it exits without waiting for the end
    // of the stream, and the writes after that find its stdin closed.
    const staging = path.join(scratch, 'aligned');
    await mkdir(staging);
    const archive = tarOf([{ path: 'a', type: 'File', content: 'whole record\n' }], false);
    const body = new Readable({ read() {} });
    const copy = receiveCopy(staging, body);
    body.push(Buffer.concat([archive, Buffer.alloc(10240 - archive.length)]));
    await waitFor('tar has read the archive and exited', () => existsSync(path.join(staging, 'a')) && tarsInto(staging).length === 0, 10_000);
    body.push(null);
    const { landed } = await copy;
    assert.deepEqual(landed.map((e) => e.path), ['a']);
  });

  it('the first complaint of tar stops the copy at once, however much of the stream is still to come', async () => {
    // tar goes on after a file it cannot write (it says so only at the end): here the stream never ends.
    const staging = path.join(scratch, 'complaint');
    await mkdir(staging);
    await writeFile(path.join(staging, 'd'), 'a file where the stream wants a directory\n');
    const entry = tarOf([{ path: 'd/x', type: 'File', content: 'x' }], false);
    const big = new tar.Header({ path: 'big', type: 'File', mode: 0o644, size: 2 ** 32, mtime: new Date() });
    big.encode();
    if (!big.block) throw new Error('header did not encode');
    const endless = big.block;
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent === 0) this.push(Buffer.concat([entry, endless]));
        else this.push(Buffer.alloc(64 * 1024));
        sent++;
      },
    });
    await assert.rejects(receiveCopy(staging, body), (err: unknown) => err instanceof UnpackError && /Not a directory/.test(err.message));
    assert.deepEqual(tarsInto(staging), [], 'tar was stopped');
  });

  it('a stream that breaks midway fails the copy, and tar has ended by then', async () => {
    const staging = path.join(scratch, 'broken');
    await mkdir(staging);
    const body = new Readable({ read() {} });
    const copy = receiveCopy(staging, body);
    body.push(tarOf([{ path: 'first', type: 'File', content: 'landed\n' }], false));
    body.push(tarOf([{ path: 'second', type: 'File', content: 'y'.repeat(100_000) }], false).subarray(0, 10_000));
    setImmediate(() => body.destroy(new Error('the peer went away')));
    await assert.rejects(copy, /the peer went away|tar -x failed/);
    assert.deepEqual(tarsInto(staging), [], 'no tar still writes into the staging directory');
  });
});
