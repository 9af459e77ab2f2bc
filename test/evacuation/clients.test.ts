// Evacuate and restore driven by the two clients users have: the real `lxc` client of LXD 5.0 (through
// a member's unix socket, as `LXD_DIR` points it) and Roost's own `roost` CLI (`runCli`, output not a
// terminal, so plain lines). Both run against a real three-member cluster.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { runCli } from '../../src/cli/run.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { requireCommand } from '../helpers/prereq.js';
import {
  assertAllIntact,
  assertNoLeftovers,
  assertOnePlace,
  fingerprint,
  launchWorkload,
  memberInfo,
  readAll,
  setPower,
  waitStatus,
} from './world.js';

let c: TestCluster;
let home = '';

/** What a command printed and how it ended. */
interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the real `lxc` client against `member`'s socket, with no stdin. */
function lxc(member: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('lxc', args, {
      env: { ...process.env, LXD_DIR: c.memberDir(member), LXD_CONF: path.join(home, 'lxc'), HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A stream that keeps what is written to it. */
class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    cb();
  }
}

/** Run `roost <args>` in this process with `ROOST_DIR` naming `member`, no stdin, not a terminal. */
async function roost(member: string, args: string[]): Promise<Run> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runCli(args, { stdout, stderr, env: { ROOST_DIR: c.memberDir(member), HOME: home } });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

describe('evacuate and restore from the clients', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
    home = await mkdtemp(path.join(os.tmpdir(), 'roost-clients-'));
    await launchWorkload(c, 'w1', { target: 'm01', termSleep: 0.5 });
    await launchWorkload(c, 'w2', { target: 'm01' });
    await launchWorkload(c, 'w3', { target: 'm01', start: false });
    await launchWorkload(c, 'wstop', { target: 'm01', config: { 'cluster.evacuate': 'stop' } });
  });
  after(async () => {
    await c?.stop();
    if (home) await rm(home, { recursive: true, force: true });
  });

  it('the real lxc client evacuates with progress, restores, and reports a repeated evacuate as an error', async (t) => {
    if (!requireCommand(t, 'lxc', 'apt-get install -y lxd-client')) return;
    const data = await readAll(c, ['w1', 'w2', 'w3', 'wstop']);

    const evacuated = await lxc('m02', ['cluster', 'evacuate', 'm01', '--force']);
    assert.equal(evacuated.code, 0, `${evacuated.stdout}\n${evacuated.stderr}`);
    assert.match(evacuated.stdout, /Evacuating cluster member/);
    assert.match(evacuated.stdout, /Evacuating cluster member: (Stopping|Migrating|Starting) "w\d" in project "default"/);
    assert.equal((await memberInfo(c, 'm01')).status, 'Evacuated');
    for (const name of ['w1', 'w2', 'w3']) assert.notEqual((await assertOnePlace(c, name)).location, 'm01');

    const listed = await lxc('m03', ['cluster', 'list', '--format', 'csv']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^m01,https:\/\/[^,]+,database,x86_64,default,,EVACUATED,Unavailable due to maintenance$/m);

    const before = await fingerprint(c);
    const again = await lxc('m01', ['cluster', 'evacuate', 'm01', '--force']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^Error: .*Cluster member is already evacuated\n$/);
    assert.equal(await fingerprint(c), before);

    const restored = await lxc('m03', ['cluster', 'restore', 'm01', '--force']);
    assert.equal(restored.code, 0, `${restored.stdout}\n${restored.stderr}`);
    assert.match(restored.stdout, /Restoring cluster member/);
    assert.equal((await memberInfo(c, 'm01')).status, 'Online');
    await assertOnePlace(c, 'w1', { running: true, location: 'm01' });
    await assertOnePlace(c, 'w2', { running: true, location: 'm01' });
    await assertOnePlace(c, 'w3', { running: false, location: 'm01' });
    await assertOnePlace(c, 'wstop', { running: true, location: 'm01' });
    await assertAllIntact(c, data, new Set(['w1', 'w2', 'wstop']));
    await assertNoLeftovers(c);

    const restoreAgain = await lxc('m02', ['cluster', 'restore', 'm01', '--force']);
    assert.equal(restoreAgain.code, 1);
    assert.match(restoreAgain.stderr, /^Error: .*Cluster member is already restored\n$/);
  });

  it('roost cluster evacuate without --force and without stdin aborts and changes nothing', async () => {
    const before = await fingerprint(c);
    const res = await roost('m02', ['cluster', 'evacuate', 'm01']);
    assert.equal(res.code, 1);
    assert.equal(res.stdout, 'Are you sure you want to evacuate cluster member "m01"? (yes/no) [default=no]: \n');
    assert.equal(res.stderr, 'Error: User aborted\n');
    assert.equal(await fingerprint(c), before);
    const restore = await roost('m02', ['cluster', 'restore', 'm01']);
    assert.equal(restore.code, 1);
    assert.equal(restore.stderr, 'Error: User aborted\n');
    assert.equal(await fingerprint(c), before);
  });

  it('roost cluster evacuate --dry-run prints the plan table and changes nothing', async () => {
    const before = await fingerprint(c);
    const res = await roost('m03', ['cluster', 'evacuate', 'm01', '--dry-run']);
    assert.equal(res.code, 0, res.stderr);
    const lines = res.stdout.split('\n');
    const header = lines.find((l) => l.includes('INSTANCE'));
    assert.ok(header, res.stdout);
    for (const col of ['INSTANCE', 'ACTION', 'TARGET', 'SIZE', 'REASON']) assert.ok(header.includes(col), `${col} in ${header}`);
    const row = (name: string): string => lines.find((l) => new RegExp(`\\b${name}\\b`).test(l) && !l.includes('INSTANCE')) ?? '';
    assert.match(row('w1'), /migrate.*m0[23].*KiB.*every device can move/);
    assert.match(row('w3'), /migrate.*m0[23].*stays stopped/);
    assert.match(row('wstop'), /\bstop\b.*cluster\.evacuate=stop/);
    assert.equal(await fingerprint(c), before);
  });

  it('roost cluster evacuate --force prints a line per instance and the summary; list shows EVACUATED; restore --force', async () => {
    const data = await readAll(c, ['w1', 'w2', 'w3', 'wstop']);
    const res = await roost('m02', ['cluster', 'evacuate', 'm01', '--force']);
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
    assert.equal(res.stderr, '');
    const lines = res.stdout.trimEnd().split('\n');
    const targets = new Map<string, string>();
    for (const name of ['w1', 'w2', 'w3']) targets.set(name, (await c.instance(name)).location);
    assert.deepEqual(
      lines.slice(0, -1).sort(),
      [...['w1', 'w2', 'w3'].map((n) => `${n}: migrated to ${targets.get(n) ?? '?'}`), 'wstop: stopped'].sort(),
      res.stdout,
    );
    assert.equal(lines[lines.length - 1], 'Evacuated "m01": 3 moved, 1 stopped, 0 failed');
    await waitStatus(c, 'm01', 'Evacuated');

    const list = await roost('m03', ['cluster', 'list']);
    assert.equal(list.code, 0, list.stderr);
    const m01 = list.stdout.split('\n').find((l) => /\|\s*m01\s*\|/.test(l)) ?? '';
    assert.match(m01, /\|\s*EVACUATED\s*\|\s*Unavailable due to maintenance\s*\|\s*1\s*\|$/, list.stdout);
    const m02 = list.stdout.split('\n').find((l) => /\|\s*m02\s*\|/.test(l)) ?? '';
    assert.match(m02, /\|\s*ONLINE\s*\|\s*Fully operational\s*\|\s*\d+\s*\|$/);
    const counts = (await c.client('m01').get('/1.0/instances?recursion=1')) as { location: string }[];
    const onM02 = counts.filter((i) => i.location === 'm02').length;
    assert.match(m02, new RegExp(`\\|\\s*${onM02}\\s*\\|$`));

    const restored = await roost('m01', ['cluster', 'restore', 'm01', '--force']);
    assert.equal(restored.code, 0, `${restored.stdout}\n${restored.stderr}`);
    assert.match(restored.stdout.trimEnd().split('\n').pop() ?? '', /^Restored "m01": 3 moved, 1 started, 0 failed$/);
    assert.equal((await memberInfo(c, 'm01')).status, 'Online');
    for (const name of ['w1', 'w2', 'wstop']) await assertOnePlace(c, name, { running: true, location: 'm01' });
    await assertOnePlace(c, 'w3', { running: false, location: 'm01' });
    await assertAllIntact(c, data, new Set(['w1', 'w2', 'wstop']));
    await setPower(c, 'w2', 'stop');
  });
});
