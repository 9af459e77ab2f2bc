// Instances on a `shared` pool (one host directory every member opens as its source, as an NFS mount would
// be): a move, an evacuation and a restore relink them (the same inode afterwards, no staging, the dry-run
// says "shared: no copy"); a member whose host dies is healed after `cluster.healing_threshold`: its shared
// instances run elsewhere with their bytes, its local ones are reported and untouched; back, it starts
// nothing that moved away (and kills a copy that still ran: fencing), and its restore brings them home.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { keys, type InstanceRecord, type MoveJournal } from '../../src/store/schema.js';
import type { Op } from '../../src/store/store.js';
import { processAlive, sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import {
  dataFile,
  lifecycle,
  memberInfo,
  postState,
  recordEvents,
  runningOn,
  runState,
  seedVolume,
  setPower,
  waitStatus,
  writerCommand,
  type InstanceData,
  assertDataIntact,
} from './world.js';

let c: TestCluster;
let source: string;
const onShared = { root: { type: 'disk', path: '/', pool: 'nfs' } };

/** The root volume of `name` in the shared pool: the same directory for every member. */
const sharedDir = (name: string): string => path.join(source, 'containers', `default_${name}`);

/** An instance's data in the shared pool (everything but its log, and its log). */
async function readShared(name: string): Promise<InstanceData> {
  const dir = sharedDir(name);
  return { name, fixed: await sha256Tree(dir, (p) => p === dataFile), log: await readFile(path.join(dir, dataFile), 'utf8').catch(() => '') };
}

/** The inode of an instance's payload: a relink keeps it, a copy would not. */
async function payloadInode(name: string): Promise<number> {
  return (await stat(path.join(sharedDir(name), 'payload.bin'))).ino;
}

/** Every member's staging directories, in the shared pool and in `default`: a relink makes none. */
async function stagingLeft(): Promise<string[]> {
  const out: string[] = [];
  for (const m of c.names) {
    for (const dir of [path.join(source, '.members', m, '.staging'), c.stagingDir(m)]) out.push(...(await readdir(dir).catch(() => [])).map((e) => `${dir}/${e}`));
  }
  return out;
}

/** Create a writer instance on the shared pool on `target`, seed it, start it. */
async function launchShared(name: string, target: string, command = writerCommand()): Promise<void> {
  await c.launch(name, { target, start: false, command, devices: onShared });
  await seedVolume(sharedDir(name), 256 * 1024, name);
  await setPower(c, name, 'start', target);
}

/** Where the store places `name` (also while its member is down). */
async function storedLocation(name: string): Promise<string> {
  const kv = await (await c.store()).get(keys.instance('default', name));
  return (JSON.parse(kv?.value ?? '{}') as InstanceRecord).location;
}

/** The pid of `name`'s process on `member`, from its driver's pid file there (0: none). */
async function pidOn(member: string, name: string): Promise<number> {
  const text = await readFile(path.join(c.memberDir(member), 'instances', `default_${name}`, 'pid.json'), 'utf8').catch(() => '{"pid":0}');
  return (JSON.parse(text) as { pid: number }).pid;
}

describe('shared storage: relinking moves, healing and fencing', () => {
  before(async () => {
    source = await mkdtemp(path.join(os.tmpdir(), 'roost-nfs-'));
    c = await startCluster({ members: 3, offlineThreshold: 2 });
    for (const m of c.names) {
      await c.client('m01').request('POST', `/1.0/storage-pools?target=${m}`, { name: 'nfs', driver: 'shared', config: { source } });
    }
    await c.client('m01').request('POST', '/1.0/storage-pools', { name: 'nfs', driver: 'shared', config: {} });
  });
  after(async () => {
    await c?.stop();
    if (source) await rm(source, { recursive: true, force: true });
  });

  it('offers the shared driver as remote', async () => {
    const server = (await c.raw('m02', 'GET', '/1.0')).body?.metadata as { environment: { storage_supported_drivers: { name: string; remote: boolean }[] } };
    assert.deepEqual(server.environment.storage_supported_drivers.find((d) => d.name === 'shared'), { name: 'shared', version: '1', remote: true });
  });

  it('a move, an evacuation and a restore relink: same inode, no staging, bytes intact; the dry-run says so', async () => {
    await launchShared('s1', 'm01');
    const inode = await payloadInode('s1');
    const before = await readShared('s1');

    await c.client('m01').runAsync('POST', '/1.0/instances/s1?target=m02', { name: 's1', migration: true });
    assert.equal((await c.instance('s1', 'm03')).location, 'm02');
    assert.equal((await c.instance('s1', 'm03')).status, 'Running');
    assert.deepEqual(runningOn(c, 's1'), ['m02']);
    assert.equal(await payloadInode('s1'), inode, 'the move copied the volume');
    assert.deepEqual(await stagingLeft(), []);

    const dry = (await postState(c, 'm02', { action: 'evacuate', dry_run: true })).body?.metadata as { instances: { name: string; reason: string; bytes: number }[] };
    const planned = dry.instances.find((i) => i.name === 's1');
    assert.match(planned?.reason ?? '', /shared: no copy/);
    assert.equal(planned?.bytes, 0);

    await runState(c, 'm02', { action: 'evacuate' }, 'm01');
    const away = (await c.instance('s1', 'm01')).location;
    assert.notEqual(away, 'm02');
    assert.equal((await c.instance('s1', 'm01')).config['volatile.evacuate.origin'], 'm02');
    assert.deepEqual(runningOn(c, 's1'), [away]);
    await runState(c, 'm02', { action: 'restore' }, 'm01');
    assert.equal((await c.instance('s1', 'm01')).location, 'm02');
    assert.deepEqual(runningOn(c, 's1'), ['m02']);
    assert.equal(await payloadInode('s1'), inode, 'evacuation or restore copied the volume');
    assert.deepEqual(await stagingLeft(), []);
    await waitFor('s1 writes on after its moves', async () => (await readShared('s1')).log.length > before.log.length);
    assertDataIntact(before, await readShared('s1'), false);
    await setPower(c, 's1', 'stop');
  });

  it('a relink cut short by a crash of its source is rolled back before its commit and finished after it, deleting no data', async () => {
    // s1 is on m02, stopped. Its member dies with a relink to m01 journaled (as after the stop), then comes back.
    const inode = await payloadInode('s1');
    const store = await c.store();
    const journal = (committed: boolean): MoveJournal => ({
      id: `crash-${String(committed)}`, project: 'default', instance: 's1', source: 'm02', target: 'm01', phase: committed ? 'committed' : 'copied',
      wasRunning: true, volumes: [], pool: 'nfs', origin: null, clearOrigin: false, evacuation: null, startedAt: new Date().toISOString(), relink: true,
    });
    const settled = async (): Promise<boolean> => (await store.get(keys.move('default', 's1'))) === null;

    // As a move's stop leaves it: recorded RUNNING, so that whichever repairs the move starts it again.
    const running = async (location: string): Promise<Op> => {
      const record = JSON.parse((await store.get(keys.instance('default', 's1')))?.value ?? '{}') as InstanceRecord;
      const config = { ...record.config, 'volatile.last_state.power': 'RUNNING' };
      return { type: 'put', key: keys.instance('default', 's1'), value: JSON.stringify({ ...record, location, config }) };
    };
    await c.kill('m02', 'SIGKILL');
    await store.txn([], [await running('m02'), { type: 'put', key: keys.move('default', 's1'), value: JSON.stringify(journal(false)) }]);
    await c.restart('m02');
    await waitFor('the uncommitted relink is rolled back', settled, 20_000);
    await waitFor('s1 runs again at its source', () => runningOn(c, 's1').includes('m02'), 20_000);
    assert.equal(await storedLocation('s1'), 'm02');
    assert.equal(await payloadInode('s1'), inode, 'the rollback removed the shared volume');

    await setPower(c, 's1', 'stop');
    await c.kill('m02', 'SIGKILL');
    await store.txn([], [await running('m01'), { type: 'put', key: keys.move('default', 's1'), value: JSON.stringify(journal(true)) }]);
    await c.restart('m02');
    await waitFor('the committed relink is finished', settled, 20_000);
    await waitFor('s1 runs on its target', () => runningOn(c, 's1').includes('m01'), 20_000);
    assert.deepEqual(runningOn(c, 's1'), ['m01']);
    assert.equal(await payloadInode('s1'), inode, 'finishing the relink removed the shared volume');
    await setPower(c, 's1', 'stop');
  });

  it('heals a dead member: shared instances run elsewhere, local ones are reported; back, it runs nothing that moved away; restore brings them home', async (t) => {
    await launchShared('h1', 'm03');
    // A second one that idles, whose process stays alive below as a host that was only cut off would keep it.
    await launchShared('h2', 'm03', 'trap "exit 0" TERM; while true; do sleep 0.2; done');
    await c.launch('loc1', { target: 'm03' });
    const inode = await payloadInode('h1');
    const h1Pid = await pidOn('m03', 'h1');
    const h2Pid = await pidOn('m03', 'h2');
    await c.client('m01').request('PATCH', '/1.0', { config: { 'cluster.healing_threshold': '4' } });
    const events = await recordEvents(c, 'm01', ['lifecycle']);
    t.after(() => events.close());

    // The host dies: its daemon, and the writer with it (two writers would share one file).
    await c.kill('m03', 'SIGKILL');
    process.kill(h1Pid, 'SIGKILL');
    await waitFor('h1 is gone', () => !processAlive(h1Pid));
    const before = await readShared('h1');
    await waitFor('m03 is healed', () => lifecycle(events, 'cluster-member-healed', '/1.0/cluster/members/m03').length > 0, 40_000);
    const healed = lifecycle(events, 'cluster-member-healed')[0]?.metadata as { context: { unreachable: string[]; relinked: { name: string; target: string }[] } };
    assert.deepEqual(healed.context.unreachable, ['loc1']);
    assert.deepEqual(healed.context.relinked.map((r) => r.name).sort(), ['h1', 'h2']);
    for (const n of ['h1', 'h2']) {
      const view = await c.instance(n, 'm01');
      assert.notEqual(view.location, 'm03');
      assert.equal(view.config['volatile.evacuate.origin'], 'm03');
      await waitFor(`${n} runs on ${view.location}`, () => runningOn(c, n).includes(view.location));
    }
    assert.equal(await storedLocation('loc1'), 'm03', 'the local instance stays where its data is');
    assert.equal(await payloadInode('h1'), inode);
    await waitFor('h1 writes on where it was healed', async () => (await readShared('h1')).log.length > before.log.length);
    assertDataIntact(before, await readShared('h1'), false);

    // Back: fencing kills the copy of h2 it still ran, starts nothing that moved away, deletes no shared data.
    await c.restart('m03');
    await waitStatus(c, 'm03', 'Evacuated', 20_000, 'm01');
    await waitFor('the old copy of h2 is stopped', () => !processAlive(h2Pid));
    for (const n of ['h1', 'h2']) assert.deepEqual(runningOn(c, n), [(await c.instance(n, 'm01')).location], `${n} runs once`);
    assert.equal(await payloadInode('h1'), inode, 'the boot sweep left the shared volume alone');
    assert.ok(lifecycle(events, 'instance-fenced', '/1.0/instances/h2').length > 0, 'fencing says what it stopped');

    await runState(c, 'm03', { action: 'restore' }, 'm01');
    for (const n of ['h1', 'h2', 'loc1']) {
      const view = await c.instance(n, 'm01');
      assert.equal(view.location, 'm03', `${n} is home`);
      assert.equal(view.status, 'Running', `${n} runs at home`);
      assert.equal(view.config['volatile.evacuate.origin'], undefined);
    }
    assert.deepEqual(runningOn(c, 'h1'), ['m03']);
    assert.equal(await payloadInode('h1'), inode);
    assert.deepEqual(await stagingLeft(), []);
    const home = await readShared('h1');
    assertDataIntact(before, home, false);
    assert.equal((await memberInfo(c, 'm03', 'm01')).status, 'Online');
  });
});
