// `roost remote` against a real two-member cluster: a member's administrator prints a trust token
// (`roost config trust add --name laptop`), a client with its own configuration directory adds the cluster
// with it (`roost remote add prod <token>`), its files private, and then every command takes `prod:` names
// over HTTPS; a token naming another certificate is refused before it is used; a removed client is refused.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { runCli } from '../../src/cli/run.js';
import { decodeTrustToken, encodeTrustToken } from '../../src/cluster/token.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { syncMetadata } from '../helpers/envelope.js';

let c: TestCluster;
let home = '';
let m01Address = '';

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    cb();
  }
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function roostWith(env: Record<string, string>, argv: string[]): Promise<Result> {
  const stdout = new Sink();
  const stderr = new Sink();
  const code = await runCli(argv, { stdout, stderr, env });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** `roost` as the administrator on m01's socket. */
const admin = (...argv: string[]): Promise<Result> => roostWith({ ROOST_DIR: c.memberDir('m01'), XDG_CONFIG_HOME: path.join(home, 'admin') }, argv);
/** `roost` on the laptop: no local member, its own configuration directory. */
const laptop = (...argv: string[]): Promise<Result> => roostWith({ XDG_CONFIG_HOME: path.join(home, 'laptop'), HOME: home }, argv);

function ok(r: Result, what: string): string {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

function csv(out: string): string[][] {
  return out.trim().split('\n').filter((l) => l !== '').map((l) => l.split(','));
}

async function trustToken(name: string): Promise<string> {
  const out = ok(await admin('config', 'trust', 'add', '--name', name), 'roost config trust add');
  const lines = out.trim().split('\n');
  assert.equal(lines[0], `Client ${name} certificate add token:`);
  return lines[1] ?? '';
}

describe('roost remote with a real cluster', () => {
  before(async () => {
    home = mkdtempSync(path.join(os.tmpdir(), 'roost-remote-'));
    c = await startCluster({ members: 2 });
    m01Address = (syncMetadata(await c.raw('m01', 'GET', '/1.0/cluster/members/m01')) as { url: string }).url;
  });
  after(async () => {
    await c?.stop();
    rmSync(home, { recursive: true, force: true });
  });

  it('roost remote add with a trust token makes this client trusted, and keeps its key and config readable by the user only', async () => {
    const token = await trustToken('laptop');
    assert.deepEqual(csv(ok(await admin('config', 'trust', 'list-tokens', '--format', 'csv'), 'list-tokens')).map((r) => r.slice(0, 2)), [['laptop', token]]);

    const added = ok(await laptop('remote', 'add', 'prod', token), 'roost remote add');
    assert.match(added, /^Client certificate now trusted by server: prod$/m);
    const dir = path.join(home, 'laptop', 'roost');
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(path.join(dir, 'config.json')).mode & 0o777, 0o600);
    assert.equal(statSync(path.join(dir, 'client.key')).mode & 0o777, 0o600);

    assert.deepEqual(csv(ok(await laptop('remote', 'list', '--format', 'csv'), 'remote list')).map((r) => r.slice(0, 4)), [
      ['local (current)', 'unix://', 'lxd', 'file access'],
      ['prod', m01Address, 'lxd', 'tls'],
    ]);
    assert.deepEqual(csv(ok(await admin('config', 'trust', 'list', '--format', 'csv'), 'trust list')).map((r) => r.slice(0, 2)), [['client', 'laptop']]);
    assert.deepEqual(csv(ok(await admin('config', 'trust', 'list-tokens', '--format', 'csv'), 'list-tokens')), [], 'the token is used up');
  });

  it('every command takes <remote>: names: list, cluster list, launch, exec, stop; switch makes prod the default', async () => {
    assert.deepEqual(csv(ok(await laptop('cluster', 'list', 'prod:', '--format', 'csv'), 'cluster list prod:')).map((r) => r[0]), ['m01', 'm02']);
    ok(await laptop('launch', 'prod:p1', '--type', 'process', '--target', 'm02', '-c', 'process.command=trap "exit 0" TERM; while true; do sleep 0.2; done'), 'launch prod:p1');
    const p1 = await c.instance('p1');
    assert.deepEqual([p1.status, p1.location], ['Running', 'm02']);
    assert.equal(ok(await laptop('exec', 'prod:p1', '--', 'sh', '-c', 'echo hello'), 'exec prod:p1'), 'hello\n');
    ok(await laptop('stop', 'prod:p1'), 'stop prod:p1');
    assert.equal((await c.instance('p1')).status, 'Stopped');

    const noRemote = await laptop('list');
    assert.equal(noRemote.code, 1, 'without a local member, a bare name has nowhere to go');
    ok(await laptop('remote', 'switch', 'prod'), 'remote switch prod');
    assert.equal(ok(await laptop('remote', 'get-default'), 'get-default'), 'prod\n');
    assert.deepEqual(csv(ok(await laptop('list', '--format', 'csv'), 'list')).map((r) => r[0]), ['p1']);
    const refused = await laptop('remote', 'remove', 'prod');
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr, "Error: Can't remove the default remote\n");
    ok(await laptop('remote', 'switch', 'local'), 'remote switch local');

    const unknown = await laptop('list', 'nosuch:');
    assert.equal(unknown.stderr, 'Error: The remote "nosuch" doesn\'t exist\n');
  });

  it('a token naming another server certificate is refused before it is used', async () => {
    const token = await trustToken('tampered');
    const decoded = decodeTrustToken(token);
    assert.ok(decoded);
    const forged = encodeTrustToken({ ...decoded, fingerprint: 'ab'.repeat(32) });
    const r = await roostWith({ XDG_CONFIG_HOME: path.join(home, 'other') }, ['remote', 'add', 'prod', forged]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Certificate fingerprint mismatch between certificate token and server "https:\/\/127\.0\.0\.1:\d+"/);
    assert.deepEqual(csv(ok(await admin('config', 'trust', 'list-tokens', '--format', 'csv'), 'list-tokens')).map((r2) => r2[0]), ['tampered'], 'the token is still unused');
    ok(await admin('config', 'trust', 'revoke-token', 'tampered'), 'revoke-token');
  });

  it('roost config trust remove refuses the client at its next request; roost remote remove forgets the remote', async () => {
    const fingerprint = csv(ok(await admin('config', 'trust', 'list', '--format', 'csv'), 'trust list')).find((r) => r[1] === 'laptop')?.[3];
    assert.ok(fingerprint);
    ok(await admin('config', 'trust', 'remove', fingerprint), 'trust remove');
    const refused = await laptop('list', 'prod:');
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr, 'Error: not authorized\n');
    ok(await laptop('remote', 'remove', 'prod'), 'remote remove');
    assert.deepEqual(csv(ok(await laptop('remote', 'list', '--format', 'csv'), 'remote list')).map((r) => r[0]), ['local (current)']);
  });
});
