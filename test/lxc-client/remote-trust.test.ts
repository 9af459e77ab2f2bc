// The real `lxc` client (Debian lxd-client 5.0.2) as a remote user over HTTPS: an administrator on a member
// prints a trust token (`lxc config trust add`), another client configuration (its own LXD_CONF, its own
// client certificate) adds the cluster with it (`lxc remote add prod <token>`) and then lists, launches,
// execs, stops, starts, evacuates and restores through `prod:`. An untrusted client sees `auth: untrusted`
// and LXD's error; revoked and used tokens admit nobody; a removed client is refused at its next request.
// Output shapes are compared with what LXD 5.0.2 prints (captured in the project's wire reference).

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import selfsigned from 'selfsigned';
import { hasCommand, requireCommand } from '../helpers/prereq.js';
import { syncMetadata } from '../helpers/envelope.js';
import type { TestCluster } from '../helpers/cluster.js';
import { type BuiltImage, type CommandResult, containersPossible, importImage, requireContainers, run, startWithImage, teardown } from '../containers/support.js';

let c: TestCluster;
let image: BuiltImage | undefined;
let m01Address = '';

/** The header LXD 5.0.2 prints for `lxc cluster list` (wire reference: cluster-list.txt). */
const lxdClusterListHeader = '| NAME | URL | ROLES | ARCHITECTURE | FAILURE DOMAIN | DESCRIPTION | STATE | MESSAGE |';

/** `lxc <args>` with its own configuration directory `conf` (its client certificate and remotes). */
function lxcWith(conf: string, args: string[], extraEnv: Record<string, string> = {}): Promise<CommandResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, LXD_CONF: path.join(c.dir, conf), ...extraEnv };
  if (!('LXD_DIR' in extraEnv)) delete env.LXD_DIR;
  return run('lxc', args, 60_000, env);
}

/** `lxc` as the administrator on m01's unix socket. */
function admin(...args: string[]): Promise<CommandResult> {
  return lxcWith('conf-admin', args, { LXD_DIR: c.memberDir('m01') });
}

function ok(r: CommandResult, what: string): string {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Rows of an `lxc ... --format csv` listing. */
function csv(out: string): string[][] {
  return out.trim().split('\n').filter((l) => l !== '').map((l) => l.split(','));
}

/** A table's header row with the padding collapsed, to compare with LXD's. */
function headerOf(table: string): string {
  return (table.split('\n')[1] ?? '').replace(/ +/g, ' ').trim();
}

/** A new trust token for `name`, printed by `lxc config trust add` on m01. */
async function trustToken(name: string): Promise<string> {
  const out = ok(await admin('config', 'trust', 'add', '--name', name), 'lxc config trust add');
  assert.match(out, new RegExp(`^Client ${name} certificate add token:$`, 'm'));
  return out.trim().split('\n').pop() ?? '';
}

function prerequisites(t: TestContext): boolean {
  return requireContainers(t) && requireCommand(t, 'lxc', 'apt-get install -y lxd-client');
}

describe('the real lxc client as a remote client of a Roost cluster', () => {
  before(async () => {
    if (!containersPossible() || !hasCommand('lxc')) return; // each test skips (or fails under CI)
    ({ c, image } = await startWithImage(2));
    await importImage(c, 'm01', image.tarball, 'busybox');
    const members = syncMetadata(await c.raw('m01', 'GET', '/1.0/cluster/members/m01')) as { url: string };
    m01Address = members.url;
  });
  after(async () => {
    await teardown(c, [image?.dir]);
  });

  it('lxc config trust add prints a token that list-tokens shows, and lxc remote add with it makes the laptop trusted', async (t) => {
    if (!prerequisites(t)) return;
    const token = await trustToken('laptop');
    assert.deepEqual(csv(ok(await admin('config', 'trust', 'list-tokens', '--format', 'csv'), 'list-tokens')).map((r) => r.slice(0, 2)), [['laptop', token]]);

    ok(await lxcWith('conf-laptop', ['remote', 'add', 'prod', token]), 'lxc remote add prod <token>');
    const remotes = csv(ok(await lxcWith('conf-laptop', ['remote', 'list', '--format', 'csv']), 'lxc remote list'));
    assert.deepEqual(remotes.find((r) => r[0] === 'prod')?.slice(0, 4), ['prod', m01Address, 'lxd', 'tls']);
    const info = JSON.parse(ok(await lxcWith('conf-laptop', ['query', 'prod:/1.0']), 'lxc query prod:/1.0')) as { auth: string };
    assert.equal(info.auth, 'trusted');

    assert.deepEqual(csv(ok(await admin('config', 'trust', 'list-tokens', '--format', 'csv'), 'list-tokens')), [], 'the token is used up');
    const trusted = csv(ok(await admin('config', 'trust', 'list', '--format', 'csv'), 'lxc config trust list'));
    assert.deepEqual(trusted.map((r) => r.slice(0, 2)), [['client', 'laptop']]);
  });

  it('lxc list, cluster list, launch, exec, stop and start work through prod:', async (t) => {
    if (!prerequisites(t)) return;
    const table = ok(await lxcWith('conf-laptop', ['cluster', 'list', 'prod:']), 'lxc cluster list prod:');
    assert.equal(headerOf(table), lxdClusterListHeader);
    const members = csv(ok(await lxcWith('conf-laptop', ['cluster', 'list', 'prod:', '--format', 'csv']), 'cluster list csv'));
    assert.deepEqual(members.map((r) => [r[0], r[6]]), [['m01', 'ONLINE'], ['m02', 'ONLINE']]);

    ok(await lxcWith('conf-laptop', ['launch', 'prod:busybox', 'prod:web1', '--target', 'm02']), 'lxc launch');
    assert.deepEqual(csv(ok(await lxcWith('conf-laptop', ['list', 'prod:', '--format', 'csv', '-c', 'nstL']), 'lxc list prod:')), [['web1', 'RUNNING', 'CONTAINER', 'm02']]);
    assert.equal(ok(await lxcWith('conf-laptop', ['exec', 'prod:web1', '--', 'sh', '-c', 'echo hello from $(hostname)']), 'lxc exec'), 'hello from web1\n');

    ok(await lxcWith('conf-laptop', ['stop', 'prod:web1']), 'lxc stop');
    assert.equal((await c.instance('web1')).status, 'Stopped');
    ok(await lxcWith('conf-laptop', ['start', 'prod:web1']), 'lxc start');
    const started = await c.instance('web1');
    assert.deepEqual([started.status, started.location], ['Running', 'm02']);
  });

  it('lxc cluster evacuate --force and restore through prod: move the container away and back', async (t) => {
    if (!prerequisites(t)) return;
    const evacuate = ok(await lxcWith('conf-laptop', ['cluster', 'evacuate', 'prod:m02', '--force']), 'lxc cluster evacuate');
    // LXD 5.0.2's progress lines (wire reference: cluster-evacuate.txt); a copy this small may finish between
    // two progress updates, so any of its steps may be the one shown.
    assert.match(evacuate, /Evacuating cluster member: (Stopping|Migrating|Starting) "web1" in project "default"/);
    const evacuated = csv(ok(await lxcWith('conf-laptop', ['cluster', 'list', 'prod:', '--format', 'csv']), 'cluster list'));
    assert.deepEqual(evacuated.find((r) => r[0] === 'm02')?.slice(6), ['EVACUATED', 'Unavailable due to maintenance']);
    assert.deepEqual(csv(ok(await lxcWith('conf-laptop', ['list', 'prod:', '--format', 'csv', '-c', 'nsL']), 'list')), [['web1', 'RUNNING', 'm01']]);

    const restore = ok(await lxcWith('conf-laptop', ['cluster', 'restore', 'prod:m02', '--force']), 'lxc cluster restore');
    assert.match(restore, /Restoring cluster member: (Stopping|Migrating|Starting) "web1" in project "default"/);
    assert.deepEqual(csv(ok(await lxcWith('conf-laptop', ['list', 'prod:', '--format', 'csv', '-c', 'nsL']), 'list')), [['web1', 'RUNNING', 'm02']]);
  });

  it('an untrusted client sees auth: untrusted, and lxc list prints LXD\'s error', async (t) => {
    if (!prerequisites(t)) return;
    // A configuration that knows the remote (and pins its certificate) but whose certificate nobody trusted.
    const conf = path.join(c.dir, 'conf-stranger');
    mkdirSync(path.join(conf, 'servercerts'), { recursive: true, mode: 0o700 });
    writeFileSync(path.join(conf, 'servercerts', 'prod.crt'), readFileSync(path.join(c.dir, 'conf-laptop', 'servercerts', 'prod.crt')));
    writeFileSync(path.join(conf, 'config.yml'), `default-remote: local\nremotes:\n  prod:\n    addr: ${m01Address}\n    protocol: lxd\n    public: false\n`);
    const pems = await selfsigned.generate([{ name: 'commonName', value: 'stranger' }], { keyType: 'ec', curve: 'P-384' });
    writeFileSync(path.join(conf, 'client.crt'), pems.cert);
    writeFileSync(path.join(conf, 'client.key'), pems.private, { mode: 0o600 });

    const info = JSON.parse(ok(await lxcWith('conf-stranger', ['query', 'prod:/1.0']), 'lxc query prod:/1.0')) as Record<string, unknown>;
    assert.equal(info.auth, 'untrusted');
    assert.deepEqual(Object.keys(info).sort(), ['api_extensions', 'api_status', 'api_version', 'auth', 'auth_methods', 'public']);
    const list = await lxcWith('conf-stranger', ['list', 'prod:']);
    assert.equal(list.code, 1);
    assert.equal(list.stderr.trim(), 'Error: not authorized');
    assert.equal((await lxcWith('conf-stranger', ['cluster', 'evacuate', 'prod:m02', '--force'])).code, 1);
    assert.equal((await c.instance('web1')).location, 'm02', 'nothing moved');
  });

  it('a revoked or used trust token admits nobody', async (t) => {
    if (!prerequisites(t)) return;
    const token = await trustToken('tablet');
    assert.equal(ok(await admin('config', 'trust', 'revoke-token', 'tablet'), 'revoke-token').trim(), 'Certificate add token for tablet deleted');
    assert.deepEqual(csv(ok(await admin('config', 'trust', 'list-tokens', '--format', 'csv'), 'list-tokens')), []);
    const revoked = await lxcWith('conf-tablet', ['remote', 'add', 'prod', token]);
    assert.equal(revoked.code, 1);
    assert.match(revoked.stderr, /No matching certificate add operation found/);

    const used = await trustToken('phone');
    ok(await lxcWith('conf-phone', ['remote', 'add', 'prod', used]), 'remote add with a fresh token');
    const again = await lxcWith('conf-thief', ['remote', 'add', 'prod', used]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /No matching certificate add operation found/);
    const names = csv(ok(await admin('config', 'trust', 'list', '--format', 'csv'), 'trust list')).map((r) => r[1]).sort();
    assert.deepEqual(names, ['laptop', 'phone']);
  });

  it('lxc config trust remove refuses the removed client at its next request', async (t) => {
    if (!prerequisites(t)) return;
    const rows = csv(ok(await admin('config', 'trust', 'list', '--format', 'csv'), 'trust list'));
    const fingerprint = rows.find((r) => r[1] === 'laptop')?.[3];
    assert.ok(fingerprint, 'the laptop is listed with its fingerprint');
    ok(await lxcWith('conf-laptop', ['list', 'prod:']), 'the laptop still lists');
    ok(await admin('config', 'trust', 'remove', fingerprint), 'lxc config trust remove');
    const refused = await lxcWith('conf-laptop', ['list', 'prod:']);
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr.trim(), 'Error: not authorized');
    ok(await lxcWith('conf-phone', ['list', 'prod:']), 'another trusted client is not affected');
  });
});
