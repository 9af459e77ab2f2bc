// Moving instances between members of a real cluster: a running writer with an attached custom volume
// arrives byte for byte, keeps running (and writing) on the target, and leaves nothing at the source;
// moves that must be refused (unknown, same or non-Online member, a volume shared with an instance
// left behind) are refused with LXD's errors and change nothing.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { keys, type MemberRecord } from '../../src/store/schema.js';
import { processAlive, sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { assertError, asyncOperation, syncMetadata } from '../helpers/envelope.js';

let c: TestCluster;

/**
 * Appends a counter to a file on the custom volume and one in the root volume, resuming after the last
 * line written, so after any number of stops and starts both files must read exactly 1..N.
 */
// TERM only raises a flag, checked between iterations: a stop landing between the two appends must not
// leave one file a line behind the other.
const writer = [
  'stop=',
  'trap "stop=1" TERM',
  'i=$(tail -n 1 data/log.txt 2>/dev/null)',
  '[ -n "$i" ] || i=0',
  'while [ -z "$stop" ]; do i=$((i+1)); echo $i >> data/log.txt; echo $i >> counter.txt; sleep 0.02; done',
].join('; ');

/** Asserts that a counter file holds exactly 1..N (nothing lost, nothing written twice); returns N. */
async function assertContiguous(file: string): Promise<number> {
  const lines = (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '');
  lines.forEach((l, i) => assert.equal(l, String(i + 1), `${file} line ${i + 1} is "${l}"`));
  return lines.length;
}

async function lastCount(file: string): Promise<number> {
  const lines = (await readFile(file, 'utf8').catch(() => '')).split('\n').filter((l) => l !== '');
  return Number(lines.at(-1) ?? 0);
}

async function setMemberState(name: string, state: MemberRecord['state']): Promise<void> {
  const store = await c.store();
  for (;;) {
    const kv = await store.get(keys.member(name));
    assert.ok(kv, `member ${name} is in the store`);
    const record = { ...(JSON.parse(kv.value) as MemberRecord), state };
    const r = await store.txn([{ key: kv.key, modRevision: kv.modRevision }], [{ type: 'put', key: kv.key, value: JSON.stringify(record) }]);
    if (r.succeeded) return;
  }
}

const rootExclude = (p: string): boolean => p === 'counter.txt' || p === 'data';
const volumeExclude = (p: string): boolean => p === 'log.txt';

describe('moving instances between members', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  it('a running instance with a custom volume moves whole, keeps running on the target and leaves nothing behind', { timeout: 60_000 }, async () => {
    await c.client('m01').request('POST', '/1.0/storage-pools/default/volumes/custom?target=m01', { name: 'vol1' });
    const vol = c.volumeDir('m01', 'vol1');
    await mkdir(path.join(vol, 'static', 'nested', 'empty'), { recursive: true });
    await writeFile(path.join(vol, 'static', 'blob.bin'), randomBytes(3 * 1024 * 1024));
    await writeFile(path.join(vol, 'static', 'nested', 'script.sh'), '#!/bin/sh\necho hi\n');
    await chmod(path.join(vol, 'static', 'nested', 'script.sh'), 0o750);
    await symlink('static/nested/script.sh', path.join(vol, 'run'));

    await c.launch('mover', {
      target: 'm01',
      command: writer,
      start: false,
      devices: { data: { type: 'disk', pool: 'default', source: 'vol1', path: 'data' } },
    });
    const root = c.instanceDir('m01', 'mover');
    await mkdir(path.join(root, 'app'), { recursive: true });
    await writeFile(path.join(root, 'app', 'bin.dat'), randomBytes(1024 * 1024));
    await writeFile(path.join(root, 'app', 'conf.txt'), 'answer=42\n');
    await c.client('m01').runAsync('PUT', '/1.0/instances/mover/state', { action: 'start' });
    await waitFor('the writer has written a few lines at the source', async () => (await lastCount(path.join(vol, 'log.txt'))) >= 5);

    const rootSum = await sha256Tree(root, rootExclude);
    const volSum = await sha256Tree(vol, volumeExclude);
    const pidBefore = (await c.instance('mover')).state?.pid ?? 0;
    assert.ok(processAlive(pidBefore));

    // Asked through a third member: the request is forwarded to the source, which runs the move.
    const progress: string[] = [];
    const { operation } = await c.client('m03').runAsync('POST', '/1.0/instances/mover?target=m02', { name: 'mover', migration: true }, (op) => {
      const p = op.metadata?.migration_progress;
      if (typeof p === 'string') progress.push(p);
    });
    assert.equal(operation?.status, 'Success');
    assert.equal(operation?.location, 'm01', 'the source ran the move');
    assert.ok(progress.length > 0, 'the operation reported copy progress');

    const moved = await c.instance('mover', 'm03');
    assert.equal(moved.location, 'm02');
    assert.equal(moved.status, 'Running');
    assert.ok(processAlive(moved.state?.pid ?? 0), 'runs on the target');
    assert.ok(!processAlive(pidBefore), 'the source process is gone');
    assert.equal(moved.config['volatile.last_state.power'], 'RUNNING');
    const volRecord = syncMetadata(await c.raw('m01', 'GET', '/1.0/storage-pools/default/volumes/custom/vol1')) as { location: string };
    assert.equal(volRecord.location, 'm02', 'the custom volume moved with it');

    // Nothing left at the source, nothing half-done anywhere.
    assert.ok(!existsSync(root), 'source root volume removed');
    assert.ok(!existsSync(vol), 'source custom volume removed');
    assert.ok(!existsSync(path.join(c.memberDir('m01'), 'instances', 'default_mover')), 'source runtime dir removed');
    const { kvs } = await (await c.store()).range(keys.moves());
    assert.deepEqual(kvs.map((kv) => kv.key), [], 'no move journal left');
    for (const m of c.names) assert.deepEqual(await readdir(c.stagingDir(m)), [], `no staging left on ${m}`);

    // The same bytes on the target, and the mount now points at the target's copy.
    const newRoot = c.instanceDir('m02', 'mover');
    const newVol = c.volumeDir('m02', 'vol1');
    assert.equal(await sha256Tree(newRoot, rootExclude), rootSum, 'root volume bytes');
    assert.equal(await sha256Tree(newVol, volumeExclude), volSum, 'custom volume bytes');
    assert.equal(await readlink(path.join(newRoot, 'data')), newVol);

    // It keeps writing on the target, continuing the sequence.
    const atArrival = await lastCount(path.join(newVol, 'log.txt'));
    await waitFor('the writer goes on writing on the target', async () => (await lastCount(path.join(newVol, 'log.txt'))) >= atArrival + 5);
    await c.client('m01').runAsync('PUT', '/1.0/instances/mover/state', { action: 'stop' });
    const n = await assertContiguous(path.join(newVol, 'log.txt'));
    assert.equal(await assertContiguous(path.join(newRoot, 'counter.txt')), n, 'root and volume counters agree');
  });

  it('refuses a move to an unknown member (404) and to the member it is on (400)', async () => {
    await c.launch('stay', { target: 'm01' });
    const before = await c.world();
    assertError(await c.raw('m02', 'POST', '/1.0/instances/stay?target=m09', { json: { name: 'stay', migration: true } }), 404, 'Cluster member "m09" not found');
    assertError(await c.raw('m02', 'POST', '/1.0/instances/stay?target=m01', { json: { name: 'stay', migration: true } }), 400, /already on member "m01"/);
    assertError(await c.raw('m01', 'POST', '/1.0/instances/nosuch?target=m02', { json: { migration: true } }), 404, 'Instance not found');
    assert.equal(await c.world(), before);
    assert.equal((await c.instance('stay')).status, 'Running');
  });

  it('a member that is not Online takes no moved, created or started instance (403)', async () => {
    await c.launch('parked', { target: 'm03', start: false });
    await setMemberState('m03', 'Evacuated');
    try {
      await waitFor('m03 shows Evacuated', async () => ((await c.client('m01').get('/1.0/cluster/members/m03')) as { status: string }).status === 'Evacuated');
      const before = await c.world();
      assertError(await c.raw('m02', 'POST', '/1.0/instances/stay?target=m03', { json: { name: 'stay', migration: true } }), 403, 'Cluster member is evacuated');
      assertError(await c.raw('m01', 'POST', '/1.0/instances?target=m03', { json: { name: 'newbie', source: { type: 'none' } } }), 403, 'Cluster member is evacuated');
      assertError(await c.raw('m01', 'PUT', '/1.0/instances/parked/state', { json: { action: 'start' } }), 403, 'Cluster member is evacuated');
      assert.equal(await c.world(), before);
      assert.equal((await c.instance('parked')).status, 'Stopped');
      assert.equal((await c.instance('stay')).location, 'm01');
    } finally {
      await setMemberState('m03', 'Online');
    }
  });

  it('refuses to move an instance whose custom volume is shared with one that stays (400)', async () => {
    await c.client('m01').request('POST', '/1.0/storage-pools/default/volumes/custom?target=m01', { name: 'shared' });
    const dev = { shared: { type: 'disk', pool: 'default', source: 'shared', path: 'shared' } };
    await c.launch('twin-a', { target: 'm01', devices: dev });
    await c.launch('twin-b', { target: 'm01', devices: dev, start: false });
    const pid = (await c.instance('twin-a')).state?.pid ?? 0;
    const before = await c.world();
    assertError(
      await c.raw('m02', 'POST', '/1.0/instances/twin-a?target=m02', { json: { name: 'twin-a', migration: true } }),
      400,
      'Storage volume "shared" is also attached to instance "twin-b"; move them together',
    );
    assert.equal(await c.world(), before);
    const a = await c.instance('twin-a');
    assert.equal(a.status, 'Running');
    assert.equal(a.state?.pid, pid, 'not even stopped');
  });

  it('a target that stops taking instances during the move: the move fails and the instance runs on at the source', { timeout: 30_000 }, async () => {
    await c.launch('bounce', { target: 'm01', command: 'trap "sleep 0.5; exit 0" TERM; while true; do sleep 0.2; done' });
    await writeFile(path.join(c.instanceDir('m01', 'bounce'), 'data.bin'), randomBytes(1024 * 1024));
    const sum = await sha256Tree(c.instanceDir('m01', 'bounce'));
    const moving = c.client('m01').runAsync('POST', '/1.0/instances/bounce?target=m02', { name: 'bounce', migration: true });
    moving.catch(() => undefined);
    try {
      await waitFor('the move is journaled', async () => (await (await c.store()).get(keys.move('default', 'bounce'))) !== null);
      await setMemberState('m02', 'Evacuated');
      await assert.rejects(moving, /stopped taking instances/);
    } finally {
      await setMemberState('m02', 'Online');
    }
    const inst = await c.instance('bounce');
    assert.equal(inst.location, 'm01');
    assert.equal(inst.status, 'Running', 'restarted at the source');
    assert.equal(await sha256Tree(c.instanceDir('m01', 'bounce')), sum);
    assert.ok(!existsSync(c.instanceDir('m02', 'bounce')), 'the target dropped its copy');
    for (const m of c.names) assert.deepEqual(await readdir(c.stagingDir(m)), [], `no staging left on ${m}`);
    assert.equal(await (await c.store()).get(keys.move('default', 'bounce')), null, 'no journal left');
  });

  it('a move cancelled while its data streams leaves the instance whole and running at its source, and nothing elsewhere', { timeout: 90_000 }, async () => {
    await c.launch('halfway', { target: 'm01', command: 'trap "exit 0" TERM; while true; do sleep 0.2; done' });
    // Many files, so the target is still writing some of them when the cancel arrives.
    const root = c.instanceDir('m01', 'halfway');
    for (let d = 0; d < 20; d++) {
      await mkdir(path.join(root, 'tree', String(d)), { recursive: true });
      for (let f = 0; f < 50; f++) await writeFile(path.join(root, 'tree', String(d), `${f}.bin`), randomBytes(96 * 1024));
    }
    const sum = await sha256Tree(root);
    for (let round = 1; round <= 3; round++) {
      const url = asyncOperation(await c.raw('m01', 'POST', '/1.0/instances/halfway?target=m02', { json: { name: 'halfway', migration: true } }));
      await waitFor(`round ${round}: the copy is under way`, async () => {
        const op = syncMetadata(await c.raw('m01', 'GET', url)) as { metadata: { migration_progress?: string } | null };
        const m = /^(\d+)%/.exec(op.metadata?.migration_progress ?? '');
        return m !== null && Number(m[1]) >= 5;
      }, 30_000);
      const cancel = await c.raw('m01', 'DELETE', url);
      assert.equal(cancel.status, 200, cancel.text);
      const op = syncMetadata(await c.raw('m01', 'GET', `${url}/wait?timeout=30`)) as { status: string; err: string };
      assert.ok(op.status === 'Cancelled', `round ${round}: ${op.status} ${op.err}\n--- m01 ---\n${c.logTail('m01', 40)}\n--- m02 ---\n${c.logTail('m02', 40)}`);
      // Once the operation has ended, nothing of the move is left anywhere.
      assert.equal(await (await c.store()).get(keys.move('default', 'halfway')), null, `round ${round}: no journal left`);
      for (const m of c.names) assert.deepEqual(await readdir(c.stagingDir(m)), [], `round ${round}: no staging left on ${m}`);
      assert.ok(!existsSync(c.instanceDir('m02', 'halfway')), `round ${round}: no copy on the target`);
      const inst = await c.instance('halfway');
      assert.equal(inst.location, 'm01');
      assert.equal(inst.status, 'Running', `round ${round}: running again at the source`);
      assert.equal(await sha256Tree(root), sum, `round ${round}: bytes intact`);
    }
  });

  it('a move answers with an operation on the source that any member can show', async () => {
    await c.launch('quick', { target: 'm02', start: false });
    const url = asyncOperation(await c.raw('m01', 'POST', '/1.0/instances/quick?target=m03', { json: { name: 'quick', migration: true } }));
    const op = syncMetadata(await c.raw('m03', 'GET', `${url}/wait?timeout=30`)) as { status: string; location: string; description: string };
    assert.equal(op.status, 'Success');
    assert.equal(op.location, 'm02');
    assert.equal(op.description, 'Migrating instance');
    const moved = await c.instance('quick');
    assert.equal(moved.location, 'm03');
    assert.equal(moved.status, 'Stopped', 'a stopped instance stays stopped');
    assert.ok(existsSync(c.instanceDir('m03', 'quick')));
    assert.ok(!existsSync(c.instanceDir('m02', 'quick')));
  });
});
