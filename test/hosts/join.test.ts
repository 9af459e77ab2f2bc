// Members on four hosts join one cluster the way an operator does it: m1 bootstraps on etcd, then for each
// new host `roost cluster add <name>` on m1 prints a token and `roostd --join <token>` on the new host uses it
// (the token carries the store URL). `roost cluster list` then shows every member Online at its own address.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { processAlive, waitFor } from '../helpers/cluster.js';
import { decodeJoinToken, encodeJoinToken } from '../../src/cluster/token.js';
import { linkNames, netnsNames, startHosts, type HostsCluster } from '../helpers/hosts.js';

let h: HostsCluster;

describe('members on separate hosts join with tokens', () => {
  before(async () => {
    // Nothing here waits on the threshold; a long one keeps a loaded machine from showing a member Offline for a moment.
    h = await startHosts({ members: 1, offlineThreshold: 15 });
  });
  after(async () => {
    await h?.stop();
  });

  it('roost cluster add prints a token that roostd --join takes on another host', { timeout: 300_000 }, async () => {
    for (const name of ['m2', 'm3', 'm4']) {
      const added = await h.cli('m1', ['cluster', 'add', name]);
      assert.equal(added.code, 0, added.stderr);
      const [title, token, ...rest] = added.stdout.split('\n');
      assert.equal(title, `Member ${name} join token:`);
      assert.deepEqual(rest, ['']);
      const decoded = decodeJoinToken(token ?? '');
      assert.equal(decoded.server_name, name);
      assert.equal(decoded.store, h.storeUrl, 'the token carries the store URL');
      assert.deepEqual(decoded.addresses, [h.address('m1')]);
      await h.join(name, token ?? '');
    }

    await waitFor('every member is Online', async () => {
      const list = (await h.client('m4').get('/1.0/cluster/members?recursion=1')) as { status: string }[];
      return list.length === 4 && list.every((m) => m.status === 'Online');
    }, 20_000);
    const listed = await h.cli('m3', ['cluster', 'list', '--format', 'csv']);
    assert.equal(listed.code, 0, listed.stderr);
    const rows = listed.stdout.trim().split('\n').map((l) => l.split(','));
    assert.deepEqual(rows.map((r) => r[0]), ['m1', 'm2', 'm3', 'm4']);
    for (const r of rows) {
      assert.equal(r[1], `https://${h.address(r[0] ?? '')}`, `${r[0]} is at its own address`);
      assert.equal(r[6], 'ONLINE', `${r[0]}: ${r.join(',')}`);
    }
    const table = await h.cli('m2', ['cluster', 'list']);
    assert.match(table.stdout, /\| m4 +\| https:\/\/[0-9.]+:8443 /);
  });

  it('a token whose secret does not match is refused, and the host does not join', { timeout: 180_000 }, async () => {
    const token = decodeJoinToken(await h.token('m1', 'm5'));
    const forged = encodeJoinToken({ ...token, secret: '0'.repeat(64) });
    await assert.rejects(h.join('m5', forged), /the join token is not valid \(unknown, used or revoked\)/);
    const list = (await h.client('m1').get('/1.0/cluster/members')) as string[];
    assert.ok(!list.includes('/1.0/cluster/members/m5'), list.join(', '));
  });

  it('each member sees only its own data directory', async () => {
    const running = h.names.filter((n) => h.pid(n) !== null);
    assert.deepEqual(running, ['m1', 'm2', 'm3', 'm4']);
    for (const m of running) {
      // The member's own view (its mount namespace): its data at the common path, no other member's directory.
      const own = h.memberDir(m);
      assert.ok(existsSync(path.join(own, 'unix.socket')), `${m} has its socket at the common path`);
      const hidden = path.join(`/proc/${h.pid(m) ?? 0}/root`, h.root, 'private');
      for (const other of h.names) assert.ok(!existsSync(path.join(hidden, other)), `${m} cannot see ${other}'s directory`);
    }
  });
});

// Time limits are generous: on a loaded machine starting one member alone took over a minute.
describe('the harness', () => {
  it('leaves no namespace, link, claim or process behind', { timeout: 180_000 }, async () => {
    const c = await startHosts({ members: 1 });
    const netns = c.netns('m1');
    const daemon = c.pid('m1') ?? 0;
    await c.stop();
    assert.ok(!netnsNames().includes(netns), `${netns} is gone`);
    assert.ok(!existsSync(c.root), 'the harness directory is gone');
    assert.ok(!existsSync(c.etcd.dir), 'etcd\'s directory is gone');
    assert.ok(!processAlive(daemon), 'the daemon is gone');
    const ours = new RegExp(`^rh${c.subnet.split('.')[2] ?? ''}(br|h\\d+|n\\d+)$`);
    assert.deepEqual(linkNames().filter((l) => ours.test(l)), []);
  });

  it('removes what a test process killed with SIGKILL left behind, at the next start', { timeout: 360_000 }, async () => {
    const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./fixtures/crashed-run.ts', import.meta.url))], { encoding: 'utf8', timeout: 180_000 });
    assert.equal(child.signal, 'SIGKILL', `the crashed run ended with status ${String(child.status)}, signal ${String(child.signal)}:\n${child.stderr}`);
    const left = JSON.parse(child.stdout.trim()) as { netns: string; root: string; etcdDir: string; daemon: number; etcd: number[] };
    assert.ok(netnsNames().includes(left.netns), 'the crashed run left its namespace');
    assert.ok(processAlive(left.daemon), 'the crashed run left its daemon running');
    const c = await startHosts({ members: 1 });
    try {
      // The number the crashed run claimed is free again, so the new run may reuse its names.
      assert.ok(!netnsNames().includes(left.netns) || c.netns('m1') === left.netns, `${left.netns} was removed`);
      for (const pid of left.etcd) assert.ok(!processAlive(pid), `the leftover etcd ${pid} was killed`);
      assert.ok(!processAlive(left.daemon), 'the leftover daemon was killed');
      assert.ok(!existsSync(left.root) && !existsSync(left.etcdDir), 'the leftover directories were removed');
    } finally {
      await c.stop();
    }
  });
});
