// Moves between btrfs pools, at the module level (a member has one fixed dir pool until pools can be
// configured): the source side (precopy.ts, streamed.ts) drives the target side of a real Migrator
// (prepare, streams, tar repairs, digest, commit: what api/routes/internal.ts wires to the member link) on
// two btrfs file systems on loop files, with a real store holding the moves' journals. Checked: the offer is
// accepted between btrfs pools and refused by a dir pool (tar then), bytes, modes, owners and links arrive
// identical, pre-copy's last pass carries only what changed, and the entry-by-entry check still runs after
// a receive (and repairs, as tar, what btrfs send leaves out).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import type { MoveTarget } from '../../src/cluster/internal.js';
import { Precopy } from '../../src/migration/precopy.js';
import { poolFootprints, scanTree } from '../../src/migration/tree.js';
import { rootVolumeRefs, snapshotRef, type VolumeRef } from '../../src/storage/driver.js';
import { BtrfsPool } from '../../src/storage/drivers/btrfs.js';
import { DirPool } from '../../src/storage/drivers/dir.js';
import { openSqliteStore, type SqliteBackedStore } from '../../src/store/sqlite.js';
import { btrfsMissing, makeLoopBtrfs, requireBtrfs, type LoopBtrfs } from '../helpers/btrfs.js';
import { journalMove, linkTo, targetMigrator } from '../helpers/move-link.js';

/** What the moves logged, one record per line. */
interface LogRecord {
  msg: string;
  level: number;
  pass?: number;
  bytes?: number;
  running?: boolean;
  move?: string;
}

const records: LogRecord[] = [];
const log = pino({ level: 'info' }, { write: (line: string) => void records.push(JSON.parse(line) as LogRecord) });

let scratch: string;
let store: SqliteBackedStore;
let fsA: LoopBtrfs | undefined;
let fsB: LoopBtrfs | undefined;
let source: BtrfsPool;
let target: BtrfsPool;
let dirTarget: DirPool;

/** A pre-copy (or streamed cold copy) of `refs` from the source pool over `link`. */
function precopy(id: string, refs: VolumeRef[], link: MoveTarget): Precopy {
  return new Precopy({ moveId: id, refs, volumePath: (ref) => source.volumePath(ref), streams: source.streams, link, target: 'm2', instances: [refs[0]?.name ?? ''], log });
}

/** Every entry with kind, mode, owner and content hash (or link target). */
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

/** A root volume with what copies get wrong: modes, an owner, links (one absolute, one hard), `mib` MiB of data. */
async function seedVolume(name: string, mib: number): Promise<string> {
  const ref: VolumeRef = { type: 'container', project: 'default', name };
  await source.createVolume(ref);
  const dir = source.volumePath(ref);
  await fsp.chmod(dir, 0o755);
  await fsp.mkdir(path.join(dir, 'etc'), { mode: 0o750 });
  await fsp.writeFile(path.join(dir, 'etc', 'secret'), 'key\n', { mode: 0o600 });
  await fsp.chown(path.join(dir, 'etc', 'secret'), 1000, 1000);
  for (let i = 0; i < mib; i++) await fsp.writeFile(path.join(dir, `blob-${i}.bin`), randomBytes(1 << 20));
  await fsp.symlink('/etc/hostname', path.join(dir, 'abs-link'));
  await fsp.link(path.join(dir, 'blob-0.bin'), path.join(dir, 'hard'));
  await fsp.writeFile(path.join(dir, 'run.sh'), '#!/bin/sh\n', { mode: 0o4755 });
  return dir;
}

/** The file bytes of `refs` on the source, and what their copy takes (what a move scans before preparing). */
async function sizeOf(refs: VolumeRef[]): Promise<{ bytes: number; need: Record<string, { bytes: number; inodes: number }> }> {
  const scans = await Promise.all(refs.map((r) => scanTree(source.volumePath(r))));
  let bytes = 0;
  for (const s of scans) for (const e of s.values()) bytes += e.size;
  return { bytes, need: poolFootprints(refs, scans) };
}

const passes = (id: string, msg: string): LogRecord[] => records.filter((r) => r.move === id && r.msg === msg);

describe('moves between btrfs pools', () => {
  before(async () => {
    if (btrfsMissing() !== null && process.env.CI !== 'true') return;
    scratch = await fsp.mkdtemp(path.join(os.tmpdir(), 'roost-btrfs-move-'));
    store = await openSqliteStore(path.join(scratch, 'cluster.db'));
    fsA = await makeLoopBtrfs();
    fsB = await makeLoopBtrfs();
    source = new BtrfsPool('default', path.join(fsA.mount, 'pool'));
    target = new BtrfsPool('default', path.join(fsB.mount, 'pool'));
    dirTarget = new DirPool('default', path.join(scratch, 'dir-pool'));
    for (const pool of [source, target, dirTarget]) await pool.init();
  });
  after(async () => {
    await store?.close();
    await fsA?.remove();
    await fsB?.remove();
    if (scratch) await fsp.rm(scratch, { recursive: true, force: true });
  });

  it('a cold copy streams btrfs send | receive and lands identical, its snapshot read-only', async (t) => {
    if (!requireBtrfs(t)) return;
    const dir = await seedVolume('cold', 8);
    await source.createSnapshot(snapshotRef({ type: 'container', project: 'default', name: 'cold' }, 'snap0'));
    await fsp.writeFile(path.join(dir, 'after-snapshot'), 'new\n');
    const refs = rootVolumeRefs('default', 'cold', ['snap0']);
    await journalMove(store, 'move-cold', 'cold');
    const link = linkTo(targetMigrator(store, target, log), 'move-cold');
    const { bytes, need } = await sizeOf(refs);
    assert.deepEqual(await link.prepare(refs, need, undefined, 'btrfs'), { stream: 'btrfs' }, 'a btrfs target accepts the btrfs offer');
    const copy = precopy('move-cold', refs, link);
    try {
      await copy.copyStreamedCold(bytes);
    } finally {
      await copy.close();
    }
    await link.commit();

    for (const ref of refs) assert.deepEqual(await treeOf(target.volumePath(ref)), await treeOf(source.volumePath(ref)), `${ref.snapshot ?? ref.name} identical`);
    const ro = spawnSync('btrfs', ['property', 'get', '-ts', target.volumePath(refs[1] as VolumeRef), 'ro'], { encoding: 'utf8' }).stdout.trim();
    assert.equal(ro, 'ro=true', 'the snapshot is read-only on the target');
    const streamed = passes('move-cold', 'streamed pass');
    assert.equal(streamed.length, 1, 'one streamed pass');
    const sent = streamed[0]?.bytes ?? 0;
    assert.ok(sent > 8 << 20 && sent < 10 << 20, `it carried the 8 MiB the volume shares with its snapshot once (${sent} bytes)`);
    assert.equal(passes('move-cold', 'pre-copy pass').length, 0, 'no tar pass');
    assert.equal(passes('move-cold', 'pre-copy verified').length, 1, 'the copy was checked entry by entry');
    assert.deepEqual(await fsp.readdir(path.join(fsA?.mount ?? '', 'pool', '.sending')), [], 'the source released its send points');
    assert.deepEqual(await target.listStaging(), [], 'nothing staged or received is left on the target');
  });

  it('pre-copy sends incrementally: the pass after the stop carries only what changed', async (t) => {
    if (!requireBtrfs(t)) return;
    const dir = await seedVolume('warm', 16);
    const refs = rootVolumeRefs('default', 'warm', []);
    await journalMove(store, 'move-warm', 'warm');
    const link = linkTo(targetMigrator(store, target, log), 'move-warm');
    const copy = precopy('move-warm', refs, link);
    try {
      await copy.copyWhileRunning();
      // What the instance does before it is stopped.
      await fsp.appendFile(path.join(dir, 'blob-3.bin'), randomBytes(50_000));
      await fsp.writeFile(path.join(dir, 'new.txt'), 'written late\n');
      await fsp.rm(path.join(dir, 'blob-7.bin'));
      await fsp.chmod(path.join(dir, 'run.sh'), 0o700);
      await copy.finish();
    } finally {
      await copy.close();
    }
    await link.commit();

    assert.deepEqual(await treeOf(target.volumePath(refs[0] as VolumeRef)), await treeOf(dir));
    const streamed = passes('move-warm', 'streamed pass');
    const first = streamed[0];
    const last = streamed.at(-1);
    assert.ok(first && last && streamed.length >= 2, `${streamed.length} streamed passes`);
    assert.ok((first.bytes ?? 0) > 16 << 20, `the first pass carried everything (${first.bytes} bytes)`);
    assert.equal(last.running, false, 'the last pass ran after the stop');
    assert.ok((last.bytes ?? Infinity) < 200_000, `the last pass carried only the changes (${last.bytes} bytes of a 16 MiB volume)`);
    assert.equal(passes('move-warm', 'pre-copy pass').length, 0, 'no tar pass');
    assert.deepEqual(await target.listStaging(), []);
  });

  it('the entry-by-entry check runs after a receive: what btrfs send leaves out (a nested subvolume) is sent again as tar', async (t) => {
    if (!requireBtrfs(t)) return;
    const dir = await seedVolume('nested', 1);
    spawnSync('btrfs', ['subvolume', 'create', path.join(dir, 'inner')]);
    await fsp.writeFile(path.join(dir, 'inner', 'kept'), 'inside a nested subvolume\n');
    const refs = rootVolumeRefs('default', 'nested', []);
    await journalMove(store, 'move-nested', 'nested');
    const link = linkTo(targetMigrator(store, target, log), 'move-nested');
    const { bytes, need } = await sizeOf(refs);
    await link.prepare(refs, need, undefined, 'btrfs');
    const copy = precopy('move-nested', refs, link);
    try {
      await copy.copyStreamedCold(bytes);
    } finally {
      await copy.close();
    }
    await link.commit();
    assert.ok(records.some((r) => r.move === 'move-nested' && /target copy differs/.test(r.msg)), 'the check found the difference');
    assert.equal(await fsp.readFile(path.join(target.volumePath(refs[0] as VolumeRef), 'inner', 'kept'), 'utf8'), 'inside a nested subvolume\n');
    assert.deepEqual(await treeOf(target.volumePath(refs[0] as VolumeRef)), await treeOf(dir));
  });

  it('a target whose pool is dir declines the btrfs offer, and the pre-copy goes as tar', async (t) => {
    if (!requireBtrfs(t)) return;
    const dir = await seedVolume('to-dir', 2);
    const refs = rootVolumeRefs('default', 'to-dir', []);
    await journalMove(store, 'move-dir', 'to-dir');
    const migrator = targetMigrator(store, dirTarget, log);
    const link = linkTo(migrator, 'move-dir');
    const { need } = await sizeOf(refs);
    assert.deepEqual(await link.prepare(refs, need, undefined, 'btrfs'), { stream: null }, 'a dir pool receives no btrfs stream');
    await assert.rejects(migrator.receiveStream('move-dir', refs[0] as VolumeRef, Readable.from([Buffer.alloc(10)]), true), /receives no dir streams; send tar/);
    const copy = precopy('move-dir', refs, link);
    try {
      await copy.copyWhileRunning();
      await copy.finish();
    } finally {
      await copy.close();
    }
    await link.commit();
    assert.deepEqual(await treeOf(dirTarget.volumePath(refs[0] as VolumeRef)), await treeOf(dir));
    assert.ok(passes('move-dir', 'pre-copy pass').length >= 2, 'tar passes');
    assert.equal(passes('move-dir', 'streamed pass').length, 0, 'no streamed pass');
  });
});
