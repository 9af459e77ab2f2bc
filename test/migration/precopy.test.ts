// Pre-copy moves on a real three-member cluster: a running instance that keeps appending, rewriting,
// creating and deleting files moves with `live: true` and arrives exactly as it stopped (every line once,
// in order; deleted files gone, files created during the copy there); an evacuation with
// `cluster.evacuate=live-migrate` pre-copies, with a downtime well below the same instance's cold move;
// the check after the stop repairs a copy that differs; and a source daemon or a target that dies during the pre-copy leaves the instance whole and running at
// its source.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chmod, link, mkdir, open, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { keys } from '../../src/store/schema.js';
import { processAlive, sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { dataFile, lifecycle, recordEvents, runState, writerCommand, type EventLog } from '../evacuation/world.js';
import { expectedState } from './fixtures/churn-writer.js';

let c: TestCluster;

const churnWindow = 300;
const fixture = fileURLToPath(new URL('./fixtures/churn-writer.ts', import.meta.url));
/** The churn workload, through tsx, from wherever the instance's root volume is. */
const churnCommand = `exec '${process.execPath}' --import '${import.meta.resolve('tsx')}' '${fixture}' ${churnWindow}`;

/** Files the churn workload changes; everything else in the volume must not change at all. */
const moving = (p: string): boolean => ['log.txt', 'state.txt', 'mode.txt', 'churn', 'flip', 'renamed.txt'].includes(p);

/** Fill a root volume with data that does not change: random files, a tree, symlinks (one absolute), a hard link, modes. */
async function seedStatic(root: string, mib: number): Promise<void> {
  await mkdir(path.join(root, 'static', 'deep', 'empty'), { recursive: true });
  for (let i = 0; i < mib; i++) await writeFile(path.join(root, 'static', `blob-${i}.bin`), randomBytes(1024 * 1024));
  await writeFile(path.join(root, 'static', 'deep', 'run.sh'), '#!/bin/sh\necho hi\n');
  await chmod(path.join(root, 'static', 'deep', 'run.sh'), 0o750);
  await writeFile(path.join(root, 'static', 'shared.txt'), 'twice\n');
  await link(path.join(root, 'static', 'shared.txt'), path.join(root, 'static', 'deep', 'shared-too.txt'));
  await symlink('static/deep/run.sh', path.join(root, 'run'));
  await symlink('/etc/hostname', path.join(root, 'static', 'absolute-link'));
}

/** Numbers in the churn log: asserts 1..M in order with a `start` before each run; returns M and the last number of each run. */
function readChurnLog(text: string): { last: number; runs: number[] } {
  const lines = text.split('\n').filter((l) => l !== '');
  assert.equal(lines[0], 'start', 'the log begins with the first run');
  const runs: number[] = [];
  let n = 0;
  for (const [i, l] of lines.entries()) {
    if (l === 'start') {
      if (i > 0) runs.push(n);
      continue;
    }
    n++;
    assert.equal(l, String(n), `log line ${i + 1} is "${l}", expected ${n}: a write was lost or duplicated`);
  }
  runs.push(n);
  return { last: n, runs };
}

/** The `pre-copy pass` log records of a member's daemon about `instance`, after byte `from` of its log. */
function precopyPasses(member: string, instance: string, from = 0): { pass: number; running: boolean; files: number; deleted: number; bytes: number }[] {
  const text = readFileSync(path.join(c.memberDir(member), 'roostd.log')).subarray(from).toString('utf8');
  const out: { pass: number; running: boolean; files: number; deleted: number; bytes: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('"pre-copy pass"')) continue;
    const rec = JSON.parse(line) as { instances: string[]; pass: number; running: boolean; files: number; deleted: number; bytes: number };
    if (rec.instances.includes(instance)) out.push(rec);
  }
  return out;
}

function logSize(member: string): number {
  return statSync(path.join(c.memberDir(member), 'roostd.log')).size;
}

/** Seconds each instance was down: its instance-shutdown event to its next instance-started event. */
function downtimes(log: EventLog, name: string): number[] {
  const source = `/1.0/instances/${name}`;
  const downs = lifecycle(log, 'instance-shutdown', source).map((e) => Date.parse(e.timestamp));
  const ups = lifecycle(log, 'instance-started', source).map((e) => Date.parse(e.timestamp));
  return downs.flatMap((d) => {
    const up = ups.find((u) => u >= d);
    return up === undefined ? [] : [(up - d) / 1000];
  });
}

async function lastLine(file: string): Promise<number> {
  const lines = (await readFile(file, 'utf8').catch(() => '')).split('\n').filter((l) => /^\d+$/.test(l));
  return Number(lines.at(-1) ?? 0);
}

async function assertNoMoveLeft(): Promise<void> {
  const { kvs } = await (await c.store()).range(keys.moves());
  assert.deepEqual(kvs.map((kv) => kv.key), [], 'no move journal left');
  for (const m of c.names) assert.deepEqual(await readdir(c.stagingDir(m)).catch(() => []), [], `no staging left on ${m}`);
}

describe('pre-copy moves', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  it('a live move of a busy instance arrives exactly as it stopped: every line once, deletions and creations applied', async () => {
    await c.launch('churny', { target: 'm01', command: churnCommand, start: false });
    const root = c.instanceDir('m01', 'churny');
    await seedStatic(root, 40);
    await c.client('m01').runAsync('PUT', '/1.0/instances/churny/state', { action: 'start' });
    // Past one window, so that files are deleted as well as created all through the move.
    await waitFor('the workload has churned for a while', async () => (await lastLine(path.join(root, 'log.txt'))) >= churnWindow + 60, 30_000);
    const staticSum = await sha256Tree(root, moving);
    const pidBefore = (await c.instance('churny')).state?.pid ?? 0;
    assert.ok(processAlive(pidBefore));
    const logFrom = logSize('m01');

    const { operation } = await c.client('m03').runAsync('POST', '/1.0/instances/churny?target=m02', { name: 'churny', migration: true, live: true });
    assert.equal(operation?.status, 'Success');
    // Stop soon after it resumed on the target, so that most of what the churn left was created on the source.
    const there = c.instanceDir('m02', 'churny');
    await waitFor('it resumed on the target', async () => (await readFile(path.join(there, 'log.txt'), 'utf8')).split('start').length === 3 && (await lastLine(path.join(there, 'log.txt'))) > 0, 20_000);
    const resumedAt = await lastLine(path.join(there, 'log.txt'));
    await waitFor('it wrote on the target', async () => (await lastLine(path.join(there, 'log.txt'))) >= resumedAt + 3);
    await c.client('m01').runAsync('PUT', '/1.0/instances/churny/state', { action: 'stop' });

    const moved = await c.instance('churny');
    assert.equal(moved.location, 'm02');
    assert.ok(!processAlive(pidBefore), 'the source process is gone');
    assert.ok(!existsSync(root), 'source root volume removed');
    await assertNoMoveLeft();

    // The copy went in passes: a full one while running, then only changes, the last after the stop.
    const passes = precopyPasses('m01', 'churny', logFrom);
    assert.ok(passes.length >= 2, `at least two passes (got ${JSON.stringify(passes)})`);
    assert.equal(passes[0]?.running, true, 'the first pass ran while the instance ran');
    assert.equal(passes.at(-1)?.running, false, 'the last pass ran after the stop');
    const later = passes.slice(1);
    assert.ok(later.reduce((n, p) => n + p.deleted, 0) > 0, 'later passes carried deletions');
    assert.ok(later.reduce((n, p) => n + p.files, 0) > 0, 'later passes carried new and changed files');
    assert.ok((passes.at(-1)?.bytes ?? Infinity) < 4 * 1024 * 1024, 'the pass after the stop sent only changes, not the 40 MiB');

    // What never changed is byte for byte the same.
    assert.equal(await sha256Tree(there, moving), staticSum, 'static data, modes, links');
    assert.equal(statSync(path.join(there, 'static', 'shared.txt')).ino, statSync(path.join(there, 'static', 'deep', 'shared-too.txt')).ino, 'hard link kept');

    // Every number once and in order: the source's last write is followed by the target's first.
    const { last, runs } = readChurnLog(await readFile(path.join(there, 'log.txt'), 'utf8'));
    assert.equal(runs.length, 2, 'one run at the source, one at the target');
    const atStop = runs[0] ?? 0;
    assert.ok(atStop > churnWindow, 'the source ran past one churn window');
    // state.txt is rewritten at the same size every 10 ms: only its times told each pass it changed.
    assert.equal(await readFile(path.join(there, 'state.txt'), 'utf8'), `${String(last).padStart(12, '0')}\n`);

    // Everything else the workload touched is exactly what the sequence implies: nothing deleted came back,
    // nothing created was lost, and changes only a ctime or an inode showed arrived too (the workload
    // leaves mode.txt, flip and renamed.txt alone after its first run, so they show what the copy got).
    const expected = expectedState(atStop, last, churnWindow);
    const present = (await readdir(path.join(there, 'churn'))).sort();
    assert.deepEqual(present, [...expected.churn.keys()].sort(), 'churn files');
    for (const [f, content] of expected.churn) assert.equal(await readFile(path.join(there, 'churn', f), 'utf8'), content);
    assert.ok([...expected.churn.keys()].some((f) => Number(f.slice(2)) <= atStop && Number(f.slice(2)) > atStop - 50), 'files created just before the stop arrived');
    assert.equal(statSync(path.join(there, 'mode.txt')).mode & 0o7777, expected.mode, 'mode.txt has the mode of the last step at the source');
    assert.ok(expected.flip && expected.renamed, 'the workload flipped and renamed');
    const flip = path.join(there, 'flip');
    assert.equal(statSync(flip).isDirectory(), expected.flip.dir, 'flip is a directory exactly when the last flip at the source made one');
    assert.equal(await readFile(expected.flip.dir ? path.join(flip, 'inner') : flip, 'utf8'), expected.flip.content);
    assert.equal(await readFile(path.join(there, 'renamed.txt'), 'utf8'), expected.renamed);
  });

  it('evacuation with cluster.evacuate=live-migrate pre-copies: downtime far below the cold move of the same instance', async () => {
    await c.launch('bulky', { target: 'm01', command: writerCommand(), start: false, config: { 'cluster.evacuate': 'live-migrate' } });
    const root = c.instanceDir('m01', 'bulky');
    await seedStatic(root, 120);
    await c.client('m01').runAsync('PUT', '/1.0/instances/bulky/state', { action: 'start' });
    await waitFor('the writer has written', async () => (await lastLine(path.join(root, dataFile))) >= 5);
    const staticSum = await sha256Tree(root, (p) => p === dataFile);
    const events = await recordEvents(c, 'm01', ['lifecycle']);
    try {
      // Cold: a plain move stops it first and copies all 120 MiB while it is down.
      await c.client('m01').runAsync('POST', '/1.0/instances/bulky?target=m02', { name: 'bulky', migration: true });
      await waitFor('the cold move restarted it', () => downtimes(events, 'bulky').length >= 1);
      const logFrom = logSize('m02');

      await runState(c, 'm02', { action: 'evacuate' }, 'm01', 60_000);
      await waitFor('the evacuation restarted it', () => downtimes(events, 'bulky').length >= 2);
      const [cold = 0, warm = 0] = downtimes(events, 'bulky');
      const holder = (await c.instance('bulky')).location;
      assert.notEqual(holder, 'm02');
      const passes = precopyPasses('m02', 'bulky', logFrom);
      assert.ok(passes.length >= 2 && passes[0]?.running === true, `the evacuation pre-copied (${JSON.stringify(passes)})`);
      assert.ok(warm < 0.7 * cold, `pre-copy downtime ${warm.toFixed(2)} s should be well below the cold move's ${cold.toFixed(2)} s`);
      assert.equal(await sha256Tree(c.instanceDir(holder, 'bulky'), (p) => p === dataFile), staticSum, 'static data');

      const restoreLogFrom = logSize(holder);
      await runState(c, 'm02', { action: 'restore' }, 'm01', 60_000);
      await waitFor('the restore restarted it', () => downtimes(events, 'bulky').length >= 3);
      const home = precopyPasses(holder, 'bulky', restoreLogFrom);
      assert.ok(home.length >= 2 && home[0]?.running === true, `the restore pre-copied too (${JSON.stringify(home)})`);
      assert.ok((downtimes(events, 'bulky')[2] ?? Infinity) < 0.7 * cold, 'with a downtime well below the cold move');
      await c.client('m01').runAsync('PUT', '/1.0/instances/bulky/state', { action: 'stop' });
      const lines = (await readFile(path.join(c.instanceDir('m02', 'bulky'), dataFile), 'utf8')).split('\n').filter((l) => l !== '');
      lines.forEach((l, i) => assert.equal(l, String(i + 1), `${dataFile} line ${i + 1}`));
      await assertNoMoveLeft();
    } finally {
      events.close();
    }
  });

  it('the check after the stop finds a copy that differs from the source and sends those files again', async () => {
    await c.launch('checked', { target: 'm01', command: writerCommand(), start: false });
    const root = c.instanceDir('m01', 'checked');
    await seedStatic(root, 60);
    await c.client('m01').runAsync('PUT', '/1.0/instances/checked/state', { action: 'start' });
    await waitFor('the writer has written', async () => (await lastLine(path.join(root, dataFile))) >= 5);
    const staticSum = await sha256Tree(root, (p) => p === dataFile);
    const logFrom = logSize('m01');

    const move = c.client('m01').runAsync('POST', '/1.0/instances/checked?target=m02', { name: 'checked', migration: true, live: true });
    // Damage the target's copy of a file the first pass already wrote, as a change no timestamp showed would.
    let damaged = '';
    await waitFor('the first pass wrote a few files on the target', async () => {
      for (const id of await readdir(c.stagingDir('m02'))) {
        const dir = path.join(c.stagingDir('m02'), id, 'container_default_checked', 'static');
        if (existsSync(path.join(dir, 'blob-5.bin'))) damaged = path.join(dir, 'blob-0.bin');
      }
      return damaged !== '';
    }, 20_000);
    const fh = await open(damaged, 'r+');
    await fh.write(Buffer.from('not what the source has'), 0, undefined, 4096);
    await fh.close();
    assert.equal((await move).operation?.status, 'Success');

    const log = readFileSync(path.join(c.memberDir('m01'), 'roostd.log')).subarray(logFrom).toString('utf8');
    assert.match(log, /target copy differs; sending those entries again/);
    assert.match(log, /"example":"static\/blob-0.bin"/);
    const last = precopyPasses('m01', 'checked', logFrom).at(-1);
    assert.ok(last && !last.running && last.bytes < 4 * 1024 * 1024, `the pass after the stop sent only changes, even for data written just before the move (${JSON.stringify(last)})`);
    assert.equal(await sha256Tree(c.instanceDir('m02', 'checked'), (p) => p === dataFile), staticSum, 'the copy equals the source after the repair');
    await c.client('m01').runAsync('PUT', '/1.0/instances/checked/state', { action: 'stop' });
    const lines = (await readFile(path.join(c.instanceDir('m02', 'checked'), dataFile), 'utf8')).split('\n').filter((l) => l !== '');
    lines.forEach((l, i) => assert.equal(l, String(i + 1), `${dataFile} line ${i + 1}`));
  });

  it('a source daemon killed during the pre-copy: at restart the move is rolled back, the instance never stopped', async () => {
    await c.launch('crashy', { target: 'm01', command: writerCommand(), start: false });
    const root = c.instanceDir('m01', 'crashy');
    await seedStatic(root, 80);
    await c.client('m01').runAsync('PUT', '/1.0/instances/crashy/state', { action: 'start' });
    await waitFor('the writer has written', async () => (await lastLine(path.join(root, dataFile))) >= 5);
    const staticSum = await sha256Tree(root, (p) => p === dataFile);
    const pidBefore = (await c.instance('crashy')).state?.pid ?? 0;

    const move = c.client('m01').runAsync('POST', '/1.0/instances/crashy?target=m02', { name: 'crashy', migration: true, live: true });
    const outcome = move.then(
      () => null,
      (err: unknown) => err,
    );
    await waitFor('the first pass reached the target', async () => (await readdir(c.stagingDir('m02')).catch(() => [])).length > 0, 20_000);
    await c.kill('m01', 'SIGKILL');
    assert.ok((await outcome) instanceof Error, 'the move did not finish');
    assert.ok(processAlive(pidBefore), 'the instance outlives its daemon');

    await c.restart('m01');
    await waitFor('the interrupted move is rolled back', async () => {
      const { kvs } = await (await c.store()).range(keys.moves());
      return kvs.length === 0 && (await readdir(c.stagingDir('m02')).catch(() => ['?'])).length === 0;
    }, 20_000);
    const inst = await c.instance('crashy');
    assert.equal(inst.location, 'm01');
    assert.equal(inst.status, 'Running');
    assert.equal(inst.state?.pid, pidBefore, 'never stopped');
    assert.ok(!existsSync(c.instanceDir('m02', 'crashy')), 'no copy on the target');
    assert.equal(await sha256Tree(root, (p) => p === dataFile), staticSum, 'source data intact');
    await c.client('m01').runAsync('PUT', '/1.0/instances/crashy/state', { action: 'stop' });
    const lines = (await readFile(path.join(root, dataFile), 'utf8')).split('\n').filter((l) => l !== '');
    lines.forEach((l, i) => assert.equal(l, String(i + 1), `${dataFile} line ${i + 1}`));
  });

  it('a pre-copy whose target dies mid-way leaves the instance whole and still running at its source', async () => {
    await c.launch('fragile', { target: 'm01', command: writerCommand(), start: false });
    const root = c.instanceDir('m01', 'fragile');
    await seedStatic(root, 80);
    await c.client('m01').runAsync('PUT', '/1.0/instances/fragile/state', { action: 'start' });
    await waitFor('the writer has written', async () => (await lastLine(path.join(root, dataFile))) >= 5);
    const staticSum = await sha256Tree(root, (p) => p === dataFile);
    const pidBefore = (await c.instance('fragile')).state?.pid ?? 0;

    const move = c.client('m01').runAsync('POST', '/1.0/instances/fragile?target=m03', { name: 'fragile', migration: true, live: true });
    const outcome = move.then(
      () => null,
      (err: unknown) => err,
    );
    // Pass 1 has begun once the target has a staging directory; the instance still runs then.
    await waitFor('the first pass reached the target', async () => (await readdir(c.stagingDir('m03')).catch(() => [])).length > 0, 20_000);
    await c.kill('m03', 'SIGKILL');
    const err = await outcome;
    assert.ok(err instanceof Error, 'the move failed');

    const inst = await c.instance('fragile');
    assert.equal(inst.location, 'm01');
    assert.equal(inst.status, 'Running');
    assert.equal(inst.state?.pid, pidBefore, 'never stopped: the failure came during the pre-copy');
    assert.equal(await sha256Tree(root, (p) => p === dataFile), staticSum, 'source data intact');
    const { kvs } = await (await c.store()).range(keys.moves());
    assert.deepEqual(kvs.map((kv) => kv.key), [], 'no move journal left');

    // The target's partial copy is garbage its own recovery removes.
    await c.restart('m03');
    await waitFor('m03 dropped its partial copy', async () => (await readdir(c.stagingDir('m03')).catch(() => ['?'])).length === 0, 20_000);
    assert.ok(!existsSync(c.instanceDir('m03', 'fragile')));

    const before = await lastLine(path.join(root, dataFile));
    await waitFor('it keeps writing at the source', async () => (await lastLine(path.join(root, dataFile))) >= before + 5);
    await c.client('m01').runAsync('PUT', '/1.0/instances/fragile/state', { action: 'stop' });
    const lines = (await readFile(path.join(root, dataFile), 'utf8')).split('\n').filter((l) => l !== '');
    lines.forEach((l, i) => assert.equal(l, String(i + 1), `${dataFile} line ${i + 1}`));
  });
});
