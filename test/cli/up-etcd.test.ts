// `roost up --store etcd`: the local cluster on a local 3-node etcd (Debian's etcd-server, started under
// <dir>/etcd), driven through the real CLI: up, launch, evacuate and restore with the bytes checked, then
// `roost down --purge`, which must leave no member, instance or etcd process and no directory behind.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { processAlive, sha256Tree } from '../helpers/cluster.js';
import { requireEtcd } from '../helpers/etcd.js';
import { seedVolume } from '../evacuation/world.js';
import { LocalCluster } from '../../src/daemon/local-cluster.js';

const cliMain = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
let home = '';
let dir = '';

/** Run the real `roost` CLI (through tsx) with its own HOME, against member m01 of the cluster. */
function roost(args: string[], timeoutMs = 240_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', cliMain, ...args], {
      env: { ...process.env, HOME: home, XDG_CONFIG_HOME: path.join(home, 'config'), XDG_DATA_HOME: path.join(home, 'data'), ROOST_DIR: path.join(dir, 'm01') },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function ok(args: string[]): Promise<string> {
  const r = await roost(args);
  assert.equal(r.code, 0, `roost ${args.join(' ')} failed:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Every process the cluster started: member daemons, etcd nodes, instances (read before `down`). */
function clusterPids(local: LocalCluster, members: string[]): number[] {
  const pids = [...members.map((m) => local.pidOf(m)), ...local.etcd.pids()].filter((p): p is number => p !== null);
  for (const m of members) {
    for (const name of ['e1', 'e2']) {
      try {
        pids.push((JSON.parse(readFileSync(path.join(dir, m, 'instances', `default_${name}`, 'pid.json'), 'utf8')) as { pid: number }).pid);
      } catch {
        // not running there
      }
    }
  }
  return pids;
}

interface Listed {
  name: string;
  status: string;
  location: string;
}

describe('roost up --store etcd', () => {
  before(async () => {
    requireEtcd();
    home = await mkdtemp(path.join(os.tmpdir(), 'roost-up-etcd-home-'));
    dir = path.join(home, 'cluster');
  });
  after(async () => {
    // Whatever happened, nothing may keep running.
    const local = new LocalCluster(dir);
    await local.down(true).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  });

  // Generous: every step is a new CLI process (node and tsx), and on a loaded machine `up` alone took 80 s.
  it('brings a cluster up on a local etcd, evacuates and restores, and roost down --purge leaves nothing', { timeout: 600_000 }, async () => {
    const up = await ok(['up', '--store', 'etcd', '--dir', dir]);
    assert.match(up, /^Member m01: added and started/m);
    assert.match(up, /^Member m03: added and started/m);
    assert.match(up, new RegExp(`^Store: local etcd in ${path.join(dir, 'etcd')} \\(etcd://127\\.0\\.0\\.1:\\d+,127\\.0\\.0\\.1:\\d+,127\\.0\\.0\\.1:\\d+\\)$`, 'm'));
    const local = new LocalCluster(dir);
    const state = await local.state();
    assert.match(state.store, /^etcd:\/\//);
    assert.equal(local.etcd.pids().length, 3, 'three etcd nodes run');
    assert.ok(!existsSync(path.join(dir, 'cluster.db')), 'no SQLite store was made');

    // Running it again keeps what runs; the store of an existing cluster cannot change.
    assert.match(await ok(['up', '--dir', dir]), /^Member m02: already running/m);
    const refused = await roost(['up', '--store', 'sqlite', '--dir', dir]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /runs on etcd; --store sqlite cannot change that/);

    await ok(['launch', 'e1', '--empty', '--target', 'm01', '-c', 'process.command=trap "exit 0" TERM; while true; do sleep 0.2; done']);
    await ok(['launch', 'e2', '--empty', '--target', 'm01', '-c', 'process.command=sleep 1000']);
    await ok(['stop', 'e2', '--force']);
    for (const name of ['e1', 'e2']) await seedVolume(path.join(dir, 'm01', 'storage-pools', 'default', 'containers', `default_${name}`), 256 * 1024, name);
    const sums = new Map<string, string>();
    for (const name of ['e1', 'e2']) sums.set(name, await sha256Tree(path.join(dir, 'm01', 'storage-pools', 'default', 'containers', `default_${name}`)));

    await ok(['cluster', 'evacuate', 'm01', '--force']);
    let listed = JSON.parse(await ok(['list', '--format', 'json'])) as Listed[];
    for (const i of listed) {
      assert.notEqual(i.location, 'm01', `${i.name} left m01`);
      assert.equal(await sha256Tree(path.join(dir, i.location, 'storage-pools', 'default', 'containers', `default_${i.name}`)), sums.get(i.name));
    }
    assert.deepEqual(listed.map((i) => `${i.name}=${i.status}`).sort(), ['e1=Running', 'e2=Stopped']);
    assert.match(await ok(['cluster', 'list', '--format', 'csv']), /^m01,.*,EVACUATED,/m);

    await ok(['cluster', 'restore', 'm01', '--force']);
    listed = JSON.parse(await ok(['list', '--format', 'json'])) as Listed[];
    assert.deepEqual(listed.map((i) => `${i.name}=${i.status}@${i.location}`).sort(), ['e1=Running@m01', 'e2=Stopped@m01']);
    for (const i of listed) {
      assert.equal(await sha256Tree(path.join(dir, 'm01', 'storage-pools', 'default', 'containers', `default_${i.name}`)), sums.get(i.name));
    }

    const pids = clusterPids(local, ['m01', 'm02', 'm03']);
    assert.ok(pids.length >= 7, `daemons, etcd nodes and e1: ${pids.join(', ')}`);
    const down = await ok(['down', '--purge', '--dir', dir]);
    assert.match(down, /^Stopped m01, m02, m03$/m);
    assert.deepEqual(pids.filter(processAlive), [], 'no process of the cluster is left');
    assert.ok(!existsSync(dir), 'the cluster directory is gone');
  });
});
