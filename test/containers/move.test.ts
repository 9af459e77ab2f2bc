// Containers moving between the members of a real three-member cluster: a running container moved with
// `roost move` keeps every file (content, mode, owner) and runs on its target, with nothing left in the
// source's lxcpath; evacuating a member that runs two containers (one pinned `cluster.evacuate=stop`) and
// two process instances moves the others with their data and stops the pinned one; restore brings all
// four home, running.
//
// What "its files" means for a running system: the root volume's tree, except the contents of
// `volatileDirs` (support.ts) — mount points of kernel filesystems and the directories a boot or a clean
// shutdown writes (run, var/run, tmp, var/log). The move stops the container cleanly before copying and
// boots it on the target, so those may legitimately differ; everything else must be identical, and the
// test reports whether the volatile part changed too.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { processAlive, type TestCluster } from '../helpers/cluster.js';
import { syncMetadata } from '../helpers/envelope.js';
import {
  containersPossible,
  execOk,
  importImage,
  isVolatile,
  launchContainer,
  lxcLs,
  lxcNameOf,
  manifestDiff,
  requireContainers,
  roostOk,
  teardown,
  timed,
  startWithImage,
  treeManifest,
  type BuiltImage,
} from './support.js';

let c: TestCluster | undefined;
let image: BuiltImage | undefined;

interface Instance {
  name: string;
  status: string;
  type: string;
  location: string;
  config: Record<string, string>;
  state: { status: string; pid: number };
}

async function show(name: string): Promise<Instance> {
  assert.ok(c);
  return syncMetadata(await c.raw('m01', 'GET', `/1.0/instances/${name}?recursion=1`)) as Instance;
}

/**
 * Data written from inside a container: a random blob, a world-writable file, a sticky world-writable
 * directory owned by nobody, a setuid file, a relative and an absolute symlink.
 */
const writeData = [
  'sh',
  '-c',
  'set -e; mkdir -p /srv/data; head -c 1048576 /dev/urandom > /srv/data/blob; echo "hello from $(hostname)" > /srv/data/hello; ' +
    'chmod 0666 /srv/data/hello; mkdir -m 1777 /srv/shared; chown 65534:65534 /srv/shared; ' +
    'cp /bin/busybox /srv/suid; chown 65534 /srv/suid; chmod 4755 /srv/suid; ln -s data/blob /srv/link; ln -s /srv/data/hello /srv/abslink; sync',
];

/** The stable part of a container's root volume on `member`. */
function stableTree(member: string, name: string): Promise<Record<string, string>> {
  assert.ok(c);
  return treeManifest(c.instanceDir(member, name), isVolatile);
}

function fullTree(member: string, name: string): Promise<Record<string, string>> {
  assert.ok(c);
  return treeManifest(c.instanceDir(member, name));
}

describe('moving containers', () => {
  before(async () => {
    if (!containersPossible()) return; // each test skips (or fails under CI) through requireContainers
    ({ c, image } = await startWithImage(3));
    await importImage(c, 'm01', image.tarball, 'busybox');
  });
  after(async () => {
    await teardown(c, [image?.dir]);
  });

  it('roost move takes a running container to another member with its files intact', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    await launchContainer(c, 'mv', { target: 'm01' });
    await execOk(c, 'm01', 'mv', writeData);
    const sum = await execOk(c, 'm01', 'mv', ['md5sum', '/srv/data/blob']);
    const stable = await stableTree('m01', 'mv');
    const full = await fullTree('m01', 'mv');
    const pid = (await show('mv')).state.pid;
    const sourceName = lxcNameOf(await lxcLs(c, 'm01', true), 'm01', 'mv');
    assert.ok(sourceName);

    // Asked through m02; m01 (the source) runs it: clean stop, copy, start on m03.
    const { ms } = await timed(() => roostOk(c!.memberDir('m02'), 'move', 'mv', '--target', 'm03'));
    t.diagnostic(`move of a running container (stop, copy ~${Math.round(Object.keys(full).length)} entries, start): ${ms} ms`);

    const moved = await show('mv');
    assert.equal(moved.location, 'm03');
    assert.equal(moved.status, 'Running');
    assert.ok(processAlive(moved.state.pid));
    assert.ok(!processAlive(pid), 'the source\'s init is gone');
    assert.ok(lxcNameOf(await lxcLs(c, 'm03', true), 'm03', 'mv'), 'LXC runs it on m03');
    assert.deepEqual(await lxcLs(c, 'm01'), [], 'lxc-ls on the source lxcpath no longer has it, running or not');
    assert.ok(!existsSync(c.instanceDir('m01', 'mv')), 'the source root volume is gone');
    assert.ok(!existsSync(path.join(c.memberDir('m01'), 'instances', 'default_mv')), 'the source runtime directory is gone');

    assert.deepEqual(manifestDiff(stable, await stableTree('m03', 'mv')), [], 'every stable entry is identical on the target');
    const volatile = manifestDiff(full, await fullTree('m03', 'mv'));
    t.diagnostic(`volatile entries that changed across the move: ${volatile.length === 0 ? 'none' : volatile.join(', ')}`);
    assert.ok(volatile.every(isVolatile), `only volatile entries may differ: ${volatile.join(', ')}`);

    assert.equal(await execOk(c, 'm02', 'mv', ['md5sum', '/srv/data/blob']), sum);
    assert.equal(await execOk(c, 'm02', 'mv', ['cat', '/srv/data/hello']), 'hello from mv\n');
    assert.equal(
      await execOk(c, 'm02', 'mv', ['stat', '-c', '%a %u %n', '/srv/data/hello', '/srv/shared', '/srv/suid', '/tmp']),
      '666 0 /srv/data/hello\n1777 65534 /srv/shared\n4755 65534 /srv/suid\n1777 0 /tmp\n',
    );
    assert.equal(await execOk(c, 'm02', 'mv', ['sh', '-c', 'readlink /srv/link; readlink /srv/abslink']), 'data/blob\n/srv/data/hello\n');
    assert.equal(await execOk(c, 'm02', 'mv', ['cat', '/srv/abslink']), 'hello from mv\n');
    assert.equal((await execOk(c, 'm02', 'mv', ['hostname'])).trim(), 'mv');
  });

  it('evacuating a member moves its containers and process instances with their data; the pinned one stops', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    await launchContainer(c, 'e1', { target: 'm02' });
    await launchContainer(c, 'e2', { target: 'm02', config: { 'cluster.evacuate': 'stop' } });
    await c.launch('p1', { target: 'm02' });
    await c.launch('p2', { target: 'm02' });
    await execOk(c, 'm01', 'e1', writeData);
    await execOk(c, 'm01', 'e2', writeData);
    for (const p of ['p1', 'p2']) await writeFile(path.join(c.instanceDir('m02', p), 'data.txt'), `data of ${p}\n`.repeat(1000));
    const trees = new Map<string, Record<string, string>>();
    for (const n of ['e1', 'e2']) trees.set(n, await stableTree('m02', n));
    for (const n of ['p1', 'p2']) trees.set(n, await fullTree('m02', n));
    const e2Name = lxcNameOf(await lxcLs(c, 'm02'), 'm02', 'e2');
    assert.ok(e2Name);

    const evacuation = await timed(() => c!.client('m01').runAsync('POST', '/1.0/cluster/members/m02/state', { action: 'evacuate' }));
    assert.equal(evacuation.value.operation?.status, 'Success', evacuation.value.operation?.err);
    t.diagnostic(`evacuation of 2 containers and 2 process instances: ${evacuation.ms} ms`);

    const member = syncMetadata(await c.raw('m01', 'GET', '/1.0/cluster/members/m02')) as { status: string };
    assert.equal(member.status, 'Evacuated');
    for (const n of ['e1', 'p1', 'p2']) {
      const inst = await show(n);
      assert.ok(['m01', 'm03'].includes(inst.location), `${n} moved off m02 (to ${inst.location})`);
      assert.equal(inst.status, 'Running', `${n} runs on ${inst.location}`);
      assert.ok(processAlive(inst.state.pid));
      assert.equal(inst.config['volatile.evacuate.origin'], 'm02');
      const now = n.startsWith('e') ? await stableTree(inst.location, n) : await fullTree(inst.location, n);
      assert.deepEqual(manifestDiff(trees.get(n) ?? {}, now), [], `${n}'s data is intact on ${inst.location}`);
      assert.ok(!existsSync(c.instanceDir('m02', n)), `${n} left no copy on m02`);
    }
    const e1 = await show('e1');
    assert.ok(lxcNameOf(await lxcLs(c, e1.location, true), e1.location, 'e1'), 'LXC runs e1 on its new member');
    assert.equal(await execOk(c, 'm01', 'e1', ['cat', '/srv/data/hello']), 'hello from e1\n');
    const e2 = await show('e2');
    assert.equal(e2.location, 'm02', 'the pinned container stays');
    assert.equal(e2.status, 'Stopped', 'and is stopped');
    assert.equal(e2.config['volatile.last_state.power'], 'RUNNING', 'remembering that it ran');
    assert.deepEqual(await lxcLs(c, 'm02', true), [], 'nothing runs on the evacuated member');
    assert.deepEqual(await lxcLs(c, 'm02'), [e2Name], 'only the pinned container is left in its lxcpath');

    const restore = await timed(() => c!.client('m03').runAsync('POST', '/1.0/cluster/members/m02/state', { action: 'restore' }));
    assert.equal(restore.value.operation?.status, 'Success', restore.value.operation?.err);
    t.diagnostic(`restore of 3 moved instances and 1 stopped one: ${restore.ms} ms`);

    assert.equal((syncMetadata(await c.raw('m01', 'GET', '/1.0/cluster/members/m02')) as { status: string }).status, 'Online');
    for (const n of ['e1', 'e2', 'p1', 'p2']) {
      const inst = await show(n);
      assert.equal(inst.location, 'm02', `${n} is home`);
      assert.equal(inst.status, 'Running', `${n} runs at home`);
      assert.ok(processAlive(inst.state.pid));
      assert.equal(inst.config['volatile.evacuate.origin'], undefined);
      const now = n.startsWith('e') ? await stableTree('m02', n) : await fullTree('m02', n);
      assert.deepEqual(manifestDiff(trees.get(n) ?? {}, now), [], `${n}'s data is intact at home`);
    }
    const home = await lxcLs(c, 'm02', true);
    assert.ok(lxcNameOf(home, 'm02', 'e1') && lxcNameOf(home, 'm02', 'e2'), `both containers run on m02: ${home.join(', ')}`);
    assert.deepEqual(await lxcLs(c, 'm01'), [], 'nothing left behind on m01');
    assert.deepEqual((await lxcLs(c, 'm03')).filter((n) => !lxcNameOf([n], 'm03', 'mv')), [], 'nothing but mv on m03');
    assert.equal(await execOk(c, 'm03', 'e2', ['cat', '/srv/data/hello']), 'hello from e2\n');
  });
});
