// A move cancelled while its target waits for a slow disk. The target makes a copy durable before it answers
// (a tree of 256 entries or more with one `sync -f` of its pool); on a loaded disk that sync can take tens of
// seconds. A cancel then must not wait for it: the discard that the rollback sends stops the target's wait,
// removes the staging, and the instance is running again at its source at once.
//
// The slow disk is a `sync` earlier in the daemons' PATH that holds while a file of this test exists (and says
// when it was called), then runs the real one: the moment is the same on every run, unlike a disk loaded on
// purpose.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sha256Tree, startCluster, type TestCluster } from '../helpers/cluster.js';
import { asyncOperation, syncMetadata } from '../helpers/envelope.js';
import { assertSoleCopy, catchMoment, writeFiles } from '../helpers/copies.js';
import { requireCommand } from '../helpers/prereq.js';

let c: TestCluster;
let shim: string;
const hold = (): string => path.join(shim, 'hold');
const called = (): string => path.join(shim, 'called');

describe('a move cancelled while its target syncs the copy to a slow disk', () => {
  before(async () => {
    shim = await mkdtemp(path.join(os.tmpdir(), 'roost-slow-sync-'));
    const script = [
      '#!/bin/sh',
      `if [ -e '${hold()}' ]; then`,
      `  touch '${called()}'`,
      `  while [ -e '${hold()}' ]; do sleep 0.1; done`,
      'fi',
      'exec /bin/sync "$@"',
      '',
    ].join('\n');
    await writeFile(path.join(shim, 'sync'), script);
    await chmod(path.join(shim, 'sync'), 0o755);
    c = await startCluster({ members: 2, env: { PATH: `${shim}:${process.env.PATH ?? '/usr/bin:/bin'}` } });
  });
  after(async () => {
    await rm(hold(), { force: true });
    await c?.stop();
    await rm(shim, { recursive: true, force: true });
  });

  it('ends at once: the instance runs again at its source, whole, and the target keeps nothing', { timeout: 90_000 }, async (t) => {
    if (!requireCommand(t, 'sync', 'apt-get install coreutils')) return;
    assert.ok(existsSync('/bin/sync'), 'the real sync is /bin/sync');
    await c.launch('patient', { target: 'm01', start: false });
    const root = c.instanceDir('m01', 'patient');
    await writeFiles(root, 'many', 400, 4096); // 400 entries: the target syncs the whole pool
    await c.client('m01').runAsync('PUT', '/1.0/instances/patient/state', { action: 'start' });
    const sum = await sha256Tree(root);

    await writeFile(hold(), '');
    const url = asyncOperation(await c.raw('m01', 'POST', '/1.0/instances/patient?target=m02', { json: { name: 'patient', migration: true } }));
    await catchMoment('m02 to sync the copy it received', () => (existsSync(called()) ? true : null), 60_000);

    const cancelledAt = Date.now();
    const cancel = await c.raw('m01', 'DELETE', url);
    assert.equal(cancel.status, 200, cancel.text);
    // The disk stays slow all along: an end within the wait can only come from a discard that did not wait for it.
    const op = syncMetadata(await c.raw('m01', 'GET', `${url}/wait?timeout=20`)) as { status: string; err: string };
    const tookMs = Date.now() - cancelledAt;
    assert.equal(op.status, 'Cancelled', `after ${tookMs} ms: ${op.status} ${op.err}\n--- m01 ---\n${c.logTail('m01', 30)}\n--- m02 ---\n${c.logTail('m02', 30)}`);
    assert.ok(existsSync(hold()), 'the sync was still held when the move ended');

    const inst = await c.instance('patient');
    assert.equal(inst.location, 'm01');
    assert.equal(inst.status, 'Running', 'running again at its source');
    await assertSoleCopy(c, 'patient', { location: 'm01', sum, running: true }, 10_000);
  });
});
