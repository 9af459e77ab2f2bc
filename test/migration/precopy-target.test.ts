// The receiving side of pre-copy passes, on scratch directories: deletions and tar entries that would land
// outside the staging directory (by `..`, absolute paths or a symlinked parent) are refused and touch
// nothing outside it; every entry ends up with exactly its mode, whatever the umask and whatever was there;
// and the staging digest reads again a file that changed, even at the same size. A source-side pass leaves out
// an entry whose kind changed after it was listed (the target could not accept it over the old kind).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readlink, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import * as tar from 'tar';
import { ApiError } from '../../src/errors/index.js';
import { applyPass, deletePaths, digestStaging, packEntries, scanTree } from '../../src/migration/tree.js';

/** One entry of a hand-made tar stream. */
interface Entry {
  path: string;
  type: 'File' | 'Directory' | 'SymbolicLink';
  mode?: number;
  content?: string;
  linkpath?: string;
}

/** A tar stream of `entries`, as a pass would send them. */
function tarOf(entries: Entry[]): Readable {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.content ?? '');
    const header = new tar.Header({ path: e.path, type: e.type, mode: e.mode ?? 0o644, size: body.length, linkpath: e.linkpath, mtime: new Date() });
    header.encode();
    if (!header.block) throw new Error('header did not encode');
    blocks.push(header.block, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Readable.from([Buffer.concat(blocks)]);
}

const refused = (err: unknown): boolean => err instanceof ApiError && err.status === 400;

let scratch: string;
let staging: string;
let outside: string;

describe('pre-copy target side', () => {
  before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), 'roost-precopy-'));
  });
  after(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  const fresh = async (name: string): Promise<void> => {
    staging = path.join(scratch, name, 'staging');
    outside = path.join(scratch, name, 'outside');
    await mkdir(staging, { recursive: true });
    await mkdir(outside, { recursive: true });
    await writeFile(path.join(outside, 'victim'), 'keep me\n');
  };

  it('refuses deletions that leave the staging directory and never deletes through a symlinked parent', async () => {
    await fresh('delete');
    await symlink(outside, path.join(staging, 'out'));
    await mkdir(path.join(staging, 'keep', 'deep'), { recursive: true });
    await writeFile(path.join(staging, 'keep', 'deep', 'file'), 'x');
    for (const bad of ['../outside/victim', '/etc/passwd', 'keep/../../outside/victim', '.', '']) {
      await assert.rejects(deletePaths(staging, [bad]), refused, `"${bad}" is refused`);
    }
    await deletePaths(staging, ['out/victim']);
    assert.ok(existsSync(path.join(outside, 'victim')), 'nothing deleted through the symlink');
    await deletePaths(staging, ['out', 'keep']);
    assert.ok(!existsSync(path.join(staging, 'out')) && !existsSync(path.join(staging, 'keep')), 'the link and the tree are gone');
    assert.ok(existsSync(path.join(outside, 'victim')), 'the link went, not what it pointed at');
  });

  it('refuses a pass whose entries would land outside the staging directory', async () => {
    await fresh('escape');
    await assert.rejects(applyPass(staging, tarOf([{ path: '../outside/planted', type: 'File', content: 'bad' }]), true));
    assert.ok(!existsSync(path.join(outside, 'planted')));
    await assert.rejects(
      applyPass(staging, tarOf([{ path: 'ln', type: 'SymbolicLink', linkpath: outside }, { path: 'ln/planted', type: 'File', content: 'bad' }]), false),
    );
    assert.ok(!existsSync(path.join(outside, 'planted')), 'nothing written through a symlink');
    assert.equal(await readFile(path.join(outside, 'victim'), 'utf8'), 'keep me\n');
  });

  it('gives every entry exactly its mode, new or already there, and digests what changed again', async () => {
    await fresh('modes');
    await applyPass(
      staging,
      tarOf([
        { path: './', type: 'Directory', mode: 0o700 },
        { path: 'd/', type: 'Directory', mode: 0o775 },
        { path: 'd/f', type: 'File', mode: 0o664, content: 'one\n' },
        { path: 'd/abs', type: 'SymbolicLink', linkpath: '/etc/hostname' },
      ]),
      true,
    );
    assert.equal(await readlink(path.join(staging, 'd', 'abs')), '/etc/hostname', 'an absolute link keeps its target');
    const mode = (p: string): number => statSync(path.join(staging, p)).mode & 0o7777;
    assert.deepEqual([mode('.'), mode('d'), mode('d/f')], [0o700, 0o775, 0o664], 'the umask does not mask them');
    const first = await digestStaging(staging);

    await applyPass(staging, tarOf([{ path: 'd/', type: 'Directory', mode: 0o750 }, { path: 'd/f', type: 'File', mode: 0o600, content: 'two\n' }]), false);
    assert.deepEqual([mode('d'), mode('d/f')], [0o750, 0o600], 'existing entries take the new modes');
    assert.equal(await readFile(path.join(staging, 'd', 'f'), 'utf8'), 'two\n');
    const second = await digestStaging(staging);
    const file = (tree: typeof first): string => tree.find((e) => e.path === 'd/f')?.content ?? '';
    assert.notEqual(file(second), file(first), 'a same-size rewrite is read again');
    assert.equal(second.find((e) => e.path === 'd/f')?.mode, 0o600);
  });

  it('a pass leaves out an entry whose kind changed after it was listed, so the target keeps a copy it can accept', async () => {
    await fresh('kinds');
    const source = path.join(scratch, 'kinds', 'source');
    await mkdir(source);
    await writeFile(path.join(source, 'flip'), 'a file\n');
    await writeFile(path.join(source, 'keep'), 'kept\n');
    const pack = (paths: string[], listed?: Awaited<ReturnType<typeof scanTree>>): Readable =>
      Readable.from(packEntries(source, paths, { onBytes: () => undefined, ...(listed ? { listed } : {}) }), { objectMode: false });
    await applyPass(staging, pack(['.', 'flip', 'keep']), true);

    // Listed as a file; by the time the pass reads it, the workload made it a directory.
    await writeFile(path.join(source, 'keep'), 'changed\n');
    const listed = await scanTree(source);
    await unlink(path.join(source, 'flip'));
    await mkdir(path.join(source, 'flip'));
    await writeFile(path.join(source, 'flip', 'inner'), 'inside\n');
    await applyPass(staging, pack(['flip', 'keep'], listed), false);
    assert.equal(await readFile(path.join(staging, 'flip'), 'utf8'), 'a file\n', 'the old kind stays until a later pass deletes it');
    assert.equal(await readFile(path.join(staging, 'keep'), 'utf8'), 'changed\n', 'the rest of the pass landed');

    // The next pass sees the new kind: it deletes the old entry and sends the directory.
    await deletePaths(staging, ['flip']);
    await applyPass(staging, pack(['flip', 'flip/inner'], await scanTree(source)), false);
    assert.equal(await readFile(path.join(staging, 'flip', 'inner'), 'utf8'), 'inside\n');
  });
});
