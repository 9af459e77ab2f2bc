// What another local user can get from a running cluster started as root: nothing. The store (with the
// cluster's private key), logs, pid files, volumes and instance data are the daemon user's alone, and the
// unix socket (through which anyone may run any command as the daemon) is open to its group only. Checked as
// user `nobody` and as a user in a temporary group given to the members with `--group`, then again after a
// member restarted on a tree an older install left world-readable. Needs root (runuser, setpriv, groupadd).

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdir, stat, writeFile, lstat } from 'node:fs/promises';
import path from 'node:path';
import { idleCommand, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { isRoot, requireCommand } from '../helpers/prereq.js';

let c: TestCluster | null = null;
let group = '';
let groupId = -1;
/** A uid no account has: the group member is `setpriv`'d to it, so no user needs creating. */
const memberUid = 64123;

/** Skips (by hand) or fails (under CI) unless root and the tools that switch users are there. */
function requireRootTools(t: TestContext): boolean {
  if (!isRoot()) {
    const reason = 'checking what other users can read needs root (run the tests as root)';
    if (process.env.CI === 'true') throw new Error(`missing prerequisite under CI: ${reason}`);
    t.skip(reason);
    return false;
  }
  return requireCommand(t, 'runuser', 'apt-get install -y util-linux') &&
    requireCommand(t, 'setpriv', 'apt-get install -y util-linux') &&
    requireCommand(t, 'groupadd', 'apt-get install -y passwd');
}

/** Every path under `dir` (itself included) with its kind, as root sees them. */
async function everyPath(dir: string): Promise<{ path: string; kind: 'dir' | 'file' | 'socket' | 'other' }[]> {
  const out: { path: string; kind: 'dir' | 'file' | 'socket' | 'other' }[] = [{ path: dir, kind: 'dir' }];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await everyPath(p)));
    else out.push({ path: p, kind: e.isFile() ? 'file' : e.isSocket() ? 'socket' : 'other' });
  }
  return out;
}

/**
 * Runs a short Node program as another user (`runuser`/`setpriv` arguments before `--`), with `input` on
 * stdin; resolves with what it printed. The working directory is `/`, which every user may enter.
 */
async function runAs(switchUser: string[], program: string, input: string): Promise<string> {
  const child = spawn(switchUser[0] ?? 'runuser', [...switchUser.slice(1), '--', process.execPath, '-e', program], {
    cwd: '/',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  child.stdin.end(input);
  const [code] = (await once(child, 'close')) as [number | null];
  assert.equal(code, 0, `program as ${switchUser.join(' ')} failed: ${err}`);
  return out.trim();
}

const asNobody = ['runuser', '-u', 'nobody'];
const asGroupMember = (): string[] => ['setpriv', `--reuid=${memberUid}`, `--regid=${memberUid}`, `--groups=${groupId}`];

/** Reads the paths given on stdin (JSON) as far as it can; prints the ones it could read (a byte, or a listing). */
const readWhatYouCan = `
const fs = require('node:fs');
const paths = JSON.parse(fs.readFileSync(0, 'utf8'));
const readable = [];
for (const { path, kind } of paths) {
  try {
    if (kind === 'dir') fs.readdirSync(path);
    else { const fd = fs.openSync(path, 'r'); fs.readSync(fd, Buffer.alloc(1), 0, 1, 0); fs.closeSync(fd); }
    readable.push(path);
  } catch {}
}
console.log(JSON.stringify(readable));
`;

/** Connects to the socket named on stdin and asks GET /1.0; prints the HTTP status or the error code. */
const askTheSocket = `
const http = require('node:http');
const socketPath = require('node:fs').readFileSync(0, 'utf8');
http.get({ socketPath, path: '/1.0' }, (res) => { console.log(String(res.statusCode)); res.resume(); })
  .on('error', (err) => console.log(err.code));
`;

/** Paths under the cluster directory that `nobody` can read; must be none. */
async function readableByNobody(cluster: TestCluster): Promise<{ readable: string[]; checked: string[] }> {
  const paths = (await everyPath(cluster.dir)).filter((p) => p.kind !== 'socket');
  const readable = JSON.parse(await runAs(asNobody, readWhatYouCan, JSON.stringify(paths))) as string[];
  return { readable: readable.map((p) => p.slice(cluster.dir.length) || '/'), checked: paths.map((p) => p.path.slice(cluster.dir.length)) };
}

async function modeOf(p: string): Promise<string> {
  return ((await lstat(p)).mode & 0o7777).toString(8);
}

describe('what other local users get from a cluster run by root', () => {
  before(async () => {
    if (!isRoot()) return; // each test reports the missing prerequisite
    group = `roost-t${randomBytes(4).toString('hex')}`;
    execFileSync('groupadd', [group]);
    groupId = Number(execFileSync('getent', ['group', group]).toString().split(':')[2]);
    // The cluster directory as `roost up --dir /srv/roost` finds it on most hosts: world-readable.
    c = await startCluster({ members: 2, group, dirMode: 0o755 });
    await c.launch('secret', { target: 'm01', command: `echo top-secret > data.txt; echo started with a secret; ${idleCommand}` });
    await c.client('m01').request('POST', '/1.0/storage-pools/default/volumes/custom?target=m01', { name: 'vault' });
    await writeFile(path.join(c.volumeDir('m01', 'vault'), 'ledger.txt'), 'private\n');
    await waitFor('the instance wrote its data', async () => (await stat(path.join(c?.instanceDir('m01', 'secret') ?? '', 'data.txt')).catch(() => null)) !== null);
  });
  after(async () => {
    await c?.stop();
    if (group) execFileSync('groupdel', [group]);
  });

  it('nobody can read anything under the cluster directory: store, logs, pid files, volumes, instance data', async (t) => {
    if (!requireRootTools(t) || !c) return;
    const { readable, checked } = await readableByNobody(c);
    for (const must of ['/cluster.db', '/cluster.db-wal', '/cluster.db-shm', '/m01/roostd.log', '/m01/roostd.pid',
      '/m01/storage-pools/default/containers/default_secret/data.txt', '/m01/storage-pools/default/custom/default_vault/ledger.txt',
      '/m01/instances/default_secret/output.log', '/m01/instances/default_secret/pid.json']) {
      assert.ok(checked.includes(must), `${must} was among the paths tried (${checked.length} in all)`);
    }
    assert.deepEqual(readable, [], 'paths that user nobody could read');
  });

  it('nobody cannot connect to a member socket; a user in the --group can, and is answered', async (t) => {
    if (!requireRootTools(t) || !c) return;
    const socket = path.join(c.memberDir('m01'), 'unix.socket');
    assert.equal(await runAs(asNobody, askTheSocket, socket), 'EACCES');
    assert.equal(await runAs(asGroupMember(), askTheSocket, socket), '200');
    assert.equal(await runAs(asGroupMember(), askTheSocket, path.join(c.memberDir('m02'), 'unix.socket')), '200');
    // The group gets the socket and nothing else.
    const paths = (await everyPath(c.dir)).filter((p) => p.kind !== 'socket');
    assert.deepEqual(JSON.parse(await runAs(asGroupMember(), readWhatYouCan, JSON.stringify(paths))), []);
    const st = await stat(socket);
    assert.equal((st.mode & 0o777).toString(8), '660');
    assert.equal(st.gid, groupId);
  });

  it('a member restarting on a tree an older install left world-readable makes it private again', async (t) => {
    if (!requireRootTools(t) || !c) return;
    await c.kill('m01', 'SIGTERM');
    execFileSync('chmod', ['-R', 'go+rX', c.memberDir('m01')]);
    execFileSync('chmod', ['go+r', path.join(c.dir, 'cluster.db'), path.join(c.dir, 'cluster.db-wal'), path.join(c.dir, 'cluster.db-shm')]);
    execFileSync('chmod', ['0755', c.dir]);
    assert.notDeepEqual((await readableByNobody(c)).readable, [], 'the loosened tree is readable before the restart');

    await c.restart('m01');
    const m01 = c.memberDir('m01');
    const pool = path.join(m01, 'storage-pools', 'default');
    const modes: Record<string, string> = {};
    for (const p of [c.dir, path.join(c.dir, 'cluster.db'), path.join(c.dir, 'cluster.db-wal'), path.join(c.dir, 'cluster.db-shm'),
      m01, path.join(m01, 'roostd.log'), path.join(m01, 'roostd.pid'), path.join(m01, 'unix.socket'), path.join(m01, 'instances'),
      path.join(m01, 'storage-pools'), pool, path.join(pool, 'containers'), path.join(pool, 'custom')]) {
      modes[p.slice(c.dir.length) || '/'] = await modeOf(p);
    }
    assert.deepEqual(modes, {
      '/': '711', '/cluster.db': '600', '/cluster.db-wal': '600', '/cluster.db-shm': '600',
      '/m01': '710', '/m01/roostd.log': '600', '/m01/roostd.pid': '600', '/m01/unix.socket': '660', '/m01/instances': '700',
      '/m01/storage-pools': '711', '/m01/storage-pools/default': '711',
      '/m01/storage-pools/default/containers': '700', '/m01/storage-pools/default/custom': '700',
    });
    assert.deepEqual((await readableByNobody(c)).readable, [], 'paths that user nobody could read after the restart');
    assert.equal(await runAs(asGroupMember(), askTheSocket, path.join(m01, 'unix.socket')), '200');
    assert.equal((await c.instance('secret')).status, 'Running', 'the instance still runs in its private volume');
  });
});
