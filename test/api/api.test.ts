// The LXD-shaped API of a real three-member cluster: happy paths, every refused input with LXD's error
// envelope (and proof that a refused request changed nothing), forwarding between members, operations,
// the cluster-wide event stream, custom volumes and the power state an instance remembers.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import type { RoostEvent } from '../../src/client/client.js';
import { maxUnreadEventBytes, tooSlowCloseCode } from '../../src/api/routes/events.js';
import { processAlive, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { assertError, asyncOperation, syncMetadata } from '../helpers/envelope.js';

let c: TestCluster;

const logFloodFixture = fileURLToPath(new URL('./fixtures/log-flood.ts', import.meta.url));

/** The log-flood fixture on the cluster's store, in a process of its own, answering one request at a time. */
function startLogFlood(bytesPerEvent: number): { ask(request: string): Promise<void>; end(): Promise<void> } {
  const child = spawn(process.execPath, ['--import', 'tsx', logFloodFixture, path.join(c.dir, 'cluster.db'), String(bytesPerEvent)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const answers = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = once(child, 'exit');
  return {
    async ask(request) {
      child.stdin.write(`${request}\n`);
      const answer = await answers.next();
      assert.ok(!answer.done, `log-flood ended without answering "${request}"`);
    },
    async end() {
      child.stdin.end();
      const [code] = (await exited) as [number | null];
      assert.equal(code, 0, 'log-flood failed');
    },
  };
}

/** Runs a request that must be refused and asserts that nothing changed. */
async function refused(member: string, method: string, url: string, json: unknown, status: number, message: string | RegExp): Promise<void> {
  const before = await c.world();
  assertError(await c.raw(member, method, url, json === undefined ? {} : { json }), status, message);
  assert.equal(await c.world(), before, `${method} ${url} was refused but changed the cluster`);
}

async function memberConfig(name: string): Promise<Record<string, string>> {
  return ((await c.client('m01').get(`/1.0/cluster/members/${name}`)) as { config: Record<string, string> }).config;
}

describe('API of a three-member cluster', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  describe('server and cluster', () => {
    it('GET /1.0 describes a trusted clustered server with the clustering extensions', async () => {
      const info = syncMetadata(await c.raw('m02', 'GET', '/1.0')) as {
        api_extensions: string[];
        auth: string;
        api_version: string;
        environment: { server_clustered: boolean; server_name: string };
      };
      assert.ok(info.api_extensions.includes('clustering'));
      assert.ok(info.api_extensions.includes('clustering_evacuation'));
      assert.equal(info.environment.server_clustered, true);
      assert.equal(info.environment.server_name, 'm02');
      assert.equal(info.auth, 'trusted');
      assert.equal(info.api_version, '1.0');
    });

    it('GET /1.0/cluster says clustering is enabled and names the member asked', async () => {
      const cluster = syncMetadata(await c.raw('m03', 'GET', '/1.0/cluster')) as { enabled: boolean; server_name: string };
      assert.equal(cluster.enabled, true);
      assert.equal(cluster.server_name, 'm03');
    });

    it('lists members as URLs, and as objects with recursion', async () => {
      assert.deepEqual(syncMetadata(await c.raw('m01', 'GET', '/1.0/cluster/members')), [
        '/1.0/cluster/members/m01',
        '/1.0/cluster/members/m02',
        '/1.0/cluster/members/m03',
      ]);
      const full = syncMetadata(await c.raw('m02', 'GET', '/1.0/cluster/members?recursion=1')) as {
        server_name: string;
        status: string;
        message: string;
        url: string;
      }[];
      assert.deepEqual(full.map((m) => m.server_name), ['m01', 'm02', 'm03']);
      for (const m of full) {
        assert.equal(m.status, 'Online');
        assert.equal(m.message, 'Fully operational');
        assert.match(m.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      }
    });

    it('shows one member, and 404 for an unknown one', async () => {
      const m = syncMetadata(await c.raw('m01', 'GET', '/1.0/cluster/members/m03')) as { server_name: string; status: string };
      assert.equal(m.server_name, 'm03');
      assert.equal(m.status, 'Online');
      assertError(await c.raw('m01', 'GET', '/1.0/cluster/members/m09'), 404, 'Cluster member "m09" not found');
    });

    it('PATCH of a member sets valid config and refuses invalid values and unknown keys', async () => {
      syncMetadata(await c.raw('m01', 'PATCH', '/1.0/cluster/members/m02', { json: { config: { 'user.rack': 'r7' } } }));
      assert.equal((await memberConfig('m02'))['user.rack'], 'r7');

      await refused('m01', 'PATCH', '/1.0/cluster/members/m02', { config: { 'scheduler.instance': 'never' } }, 400, /scheduler\.instance/);
      await refused('m03', 'PATCH', '/1.0/cluster/members/m02', { config: { 'no.such.key': 'x' } }, 400, /Unknown configuration key: no\.such\.key/);
      await refused('m01', 'PATCH', '/1.0/cluster/members/m09', { config: { 'user.rack': 'r1' } }, 404, 'Cluster member "m09" not found');
      assert.equal((await memberConfig('m02'))['scheduler.instance'], undefined);

      syncMetadata(await c.raw('m01', 'PATCH', '/1.0/cluster/members/m02', { json: { config: { 'user.rack': '' } } }));
      assert.equal((await memberConfig('m02'))['user.rack'], undefined);
    });

    it('PATCH /1.0 sets server config and refuses a non-numeric cluster.offline_threshold', async () => {
      syncMetadata(await c.raw('m02', 'PATCH', '/1.0', { json: { config: { 'user.owner': 'ops' } } }));
      const info = (await c.client('m03').get('/1.0')) as { config: Record<string, string> };
      assert.equal(info.config['user.owner'], 'ops', 'server config is cluster-wide');

      await refused('m01', 'PATCH', '/1.0', { config: { 'cluster.offline_threshold': 'abc' } }, 400, /cluster\.offline_threshold/);
      const after = (await c.client('m01').get('/1.0')) as { config: Record<string, string> };
      assert.equal(after.config['cluster.offline_threshold'], undefined);
      syncMetadata(await c.raw('m02', 'PATCH', '/1.0', { json: { config: { 'user.owner': '' } } }));
    });

    it('answers 404 for an unknown path, 405 for a wrong method, 400 for a body that is not JSON', async () => {
      assertError(await c.raw('m01', 'GET', '/1.0/no-such-thing'), 404, 'not found');
      assertError(await c.raw('m01', 'DELETE', '/1.0/cluster'), 405, 'method not allowed');
      assertError(await c.raw('m01', 'POST', '/1.0'), 405, 'method not allowed');
      const before = await c.world();
      assertError(await c.raw('m01', 'POST', '/1.0/instances', { text: '{"name": "broken", ' }), 400, 'Invalid JSON in request body');
      assertError(await c.raw('m02', 'PATCH', '/1.0', { text: 'config=1' }), 400, 'Invalid JSON in request body');
      assert.equal(await c.world(), before);
    });

    it('answers 404 Project not found for another project', async () => {
      assertError(await c.raw('m01', 'GET', '/1.0/instances?project=other'), 404, 'Project not found');
      await refused('m01', 'POST', '/1.0/instances?project=other&target=m01', { name: 'p1', source: { type: 'none' } }, 404, 'Project not found');
    });
  });

  describe('creating instances', () => {
    it('creates on the member named by ?target=, with its root volume only there', async () => {
      const res = await c.raw('m01', 'POST', '/1.0/instances?target=m02', { json: { name: 'targeted', source: { type: 'none' }, config: { 'process.command': 'sleep 1000' } } });
      await c.client('m01').waitOperation(asyncOperation(res));
      const inst = await c.instance('targeted', 'm03');
      assert.equal(inst.location, 'm02');
      assert.equal(inst.status, 'Stopped');
      assert.ok(existsSync(c.instanceDir('m02', 'targeted')));
      assert.ok(!existsSync(c.instanceDir('m01', 'targeted')));
      assert.ok(!existsSync(c.instanceDir('m03', 'targeted')));
    });

    it('without a target, placement picks an Online member that takes automatic placement', async () => {
      for (const m of ['m01', 'm02']) await c.client('m01').request('PATCH', `/1.0/cluster/members/${m}`, { config: { 'scheduler.instance': 'manual' } });
      try {
        await c.client('m01').runAsync('POST', '/1.0/instances', { name: 'placed', source: { type: 'none' }, config: { 'process.command': 'sleep 1000' } });
        const inst = await c.instance('placed');
        assert.equal(inst.location, 'm03', 'm01 and m02 are manual-only, so only m03 may be chosen');
        assert.ok(existsSync(c.instanceDir('m03', 'placed')));
      } finally {
        for (const m of ['m01', 'm02']) await c.client('m01').request('PATCH', `/1.0/cluster/members/${m}`, { config: { 'scheduler.instance': '' } });
      }
    });

    it('refuses a duplicate name with 409, whichever member is asked', async () => {
      await refused('m01', 'POST', '/1.0/instances?target=m01', { name: 'targeted', source: { type: 'none' } }, 409, 'Instance "targeted" already exists');
      await refused('m03', 'POST', '/1.0/instances', { name: 'targeted', source: { type: 'none' } }, 409, 'Instance "targeted" already exists');
    });

    it('refuses bad instance names with 400', async () => {
      for (const name of ['../x', 'a b', '-x', '123', '', 'x'.repeat(64)]) {
        await refused('m01', 'POST', '/1.0/instances?target=m01', { name, source: { type: 'none' } }, 400, /^Invalid instance name/);
      }
    });

    it('refuses unknown config keys, a bad cluster.evacuate and unknown device types with 400', async () => {
      await refused('m01', 'POST', '/1.0/instances?target=m01', { name: 'bad1', config: { 'no.such': 'x' } }, 400, 'Unknown configuration key: no.such');
      await refused('m02', 'POST', '/1.0/instances', { name: 'bad2', config: { 'cluster.evacuate': 'teleport' } }, 400, /cluster\.evacuate/);
      await refused('m01', 'POST', '/1.0/instances?target=m01', { name: 'bad3', devices: { x: { type: 'warp-drive' } } }, 400, /unknown device type "warp-drive"/);
      await refused('m01', 'POST', '/1.0/instances?target=m01', { name: 'bad4', devices: { d: { type: 'disk', pool: 'default', source: 'novol', path: 'data' } } }, 400, /Storage volume "novol"/);
      await refused('m01', 'POST', '/1.0/instances?target=m09', { name: 'bad5' }, 404, 'Cluster member "m09" not found');
    });

    it('accepts host-path disks, unix-char, usb, gpu and physical nic devices', async () => {
      const devices = {
        hostdir: { type: 'disk', source: '/tmp', path: '/mnt/host' },
        null: { type: 'unix-char', path: '/dev/null' },
        key: { type: 'usb', vendorid: '046d' },
        gpu: { type: 'gpu' },
        eth1: { type: 'nic', nictype: 'physical', parent: 'eth9' },
      };
      await c.client('m02').runAsync('POST', '/1.0/instances?target=m01', { name: 'devices', source: { type: 'none' }, config: { 'process.command': 'sleep 1000' }, devices });
      const inst = await c.instance('devices', 'm02');
      assert.deepEqual(inst.devices, devices);
      assert.equal(inst.location, 'm01');
    });
  });

  describe('one instance', () => {
    before(async () => {
      await c.launch('web', { target: 'm01', command: 'trap "exit 0" TERM; echo hello-from-web; while true; do sleep 0.2; done' });
    });

    it('404 for an unknown instance, on every route', async () => {
      assertError(await c.raw('m01', 'GET', '/1.0/instances/nosuch'), 404, 'Instance not found');
      assertError(await c.raw('m02', 'GET', '/1.0/instances/nosuch/state'), 404, 'Instance not found');
      await refused('m03', 'PUT', '/1.0/instances/nosuch/state', { action: 'start' }, 404, 'Instance not found');
      await refused('m01', 'DELETE', '/1.0/instances/nosuch', undefined, 404, 'Instance not found');
      await refused('m01', 'PATCH', '/1.0/instances/nosuch', { config: { 'user.a': 'b' } }, 404, 'Instance not found');
    });

    it('another member answers through the one that holds it (its pid, its logs)', async () => {
      const local = syncMetadata(await c.raw('m01', 'GET', '/1.0/instances/web?recursion=1')) as { state: { pid: number; status: string } };
      const remote = syncMetadata(await c.raw('m02', 'GET', '/1.0/instances/web?recursion=1')) as { state: { pid: number; status: string }; location: string };
      assert.equal(remote.location, 'm01');
      assert.equal(remote.state.status, 'Running');
      assert.equal(remote.state.pid, local.state.pid, 'only m01 knows the pid, so m02 must have asked it');
      assert.ok(processAlive(remote.state.pid));
      const st = syncMetadata(await c.raw('m03', 'GET', '/1.0/instances/web/state')) as { status: string; pid: number };
      assert.equal(st.pid, local.state.pid);
    });

    it('lists its logs and serves output.log, also through another member', async () => {
      const logs = syncMetadata(await c.raw('m02', 'GET', '/1.0/instances/web/logs')) as string[];
      assert.ok(logs.includes('/1.0/instances/web/logs/output.log'), logs.join(', '));
      await waitFor('output.log holds what the instance printed', async () => {
        const res = await c.raw('m03', 'GET', '/1.0/instances/web/logs/output.log');
        return res.status === 200 && res.text.includes('hello-from-web');
      });
      assertError(await c.raw('m01', 'GET', '/1.0/instances/web/logs/nosuch.log'), 404, 'not found');
    });

    it('GET gives an ETag; PUT with it replaces, a stale one is refused with 412', async () => {
      const first = await c.raw('m01', 'GET', '/1.0/instances/web');
      const etag = first.headers.etag;
      assert.match(etag ?? '', /^"[0-9a-f]{64}"$/);
      const current = syncMetadata(first) as { config: Record<string, string>; devices: Record<string, unknown> };

      const put = await c.raw('m02', 'PUT', '/1.0/instances/web', {
        json: { config: { ...current.config, 'user.version': '1' }, devices: current.devices },
        headers: { 'if-match': etag ?? '' },
      });
      await c.client('m02').waitOperation(asyncOperation(put));
      assert.equal((await c.instance('web')).config['user.version'], '1');

      const stale = await c.raw('m01', 'PUT', '/1.0/instances/web', {
        json: { config: { ...current.config, 'user.version': '2' }, devices: current.devices },
        headers: { 'if-match': etag ?? '' },
      });
      assertError(stale, 412, "ETag doesn't match");
      assert.equal((await c.instance('web')).config['user.version'], '1');
    });

    it('PATCH merges config and refuses invalid values', async () => {
      syncMetadata(await c.raw('m03', 'PATCH', '/1.0/instances/web', { json: { config: { 'user.team': 'blue' } } }));
      const inst = await c.instance('web');
      assert.equal(inst.config['user.team'], 'blue');
      assert.equal(inst.config['user.version'], '1', 'PATCH keeps the other keys');
      assert.equal(inst.config['volatile.last_state.power'], 'RUNNING');
      await refused('m01', 'PATCH', '/1.0/instances/web', { config: { 'cluster.evacuate': 'sometimes' } }, 400, /cluster\.evacuate/);
      await refused('m01', 'PATCH', '/1.0/instances/web', { config: { 'limits.cpu': 'lots' } }, 400, /limits\.cpu/);
      await refused('m02', 'PATCH', '/1.0/instances/web', { devices: { x: { type: 'teleporter' } } }, 400, /unknown device type/);
    });

    it('refuses user changes to volatile keys (as LXD: "Volatile keys are read-only"), but takes them sent back unchanged', async () => {
      const readOnly = /^Volatile keys are read-only: volatile\./;
      // A restore pulls home every instance whose origin names the member: a user must not be able to plant one.
      await refused('m01', 'PATCH', '/1.0/instances/web', { config: { 'volatile.evacuate.origin': 'm02' } }, 400, readOnly);
      await refused('m02', 'PATCH', '/1.0/instances/web', { config: { 'volatile.last_state.power': 'STOPPED' } }, 400, readOnly);
      await refused('m03', 'PATCH', '/1.0/instances/web', { config: { 'volatile.last_state.power': '' } }, 400, readOnly);
      await refused('m01', 'PATCH', '/1.0/instances/web', { config: { 'volatile.anything.else': 'x' } }, 400, readOnly);

      // `lxc config edit` sends the whole config back, volatile keys included: unchanged, they are no change.
      const current = syncMetadata(await c.raw('m01', 'GET', '/1.0/instances/web')) as { config: Record<string, string>; devices: Record<string, unknown> };
      assert.equal(current.config['volatile.last_state.power'], 'RUNNING');
      const put = await c.raw('m02', 'PUT', '/1.0/instances/web', { json: { config: { ...current.config, 'user.edited': 'yes' }, devices: current.devices } });
      await c.client('m02').waitOperation(asyncOperation(put));
      const edited = await c.instance('web');
      assert.equal(edited.config['user.edited'], 'yes');
      assert.equal(edited.config['volatile.last_state.power'], 'RUNNING');
      assert.equal(edited.config['volatile.evacuate.origin'], undefined);

      const full = { ...current.config, 'user.edited': 'yes' };
      await refused('m01', 'PUT', '/1.0/instances/web', { config: { ...full, 'volatile.last_state.power': 'STOPPED' }, devices: current.devices }, 400, readOnly);
      await refused('m03', 'PUT', '/1.0/instances/web', { config: { ...full, 'volatile.evacuate.origin': 'm02' }, devices: current.devices }, 400, readOnly);
      await refused('m01', 'POST', '/1.0/instances?target=m01', { name: 'planted', source: { type: 'none' }, config: { 'process.command': 'sleep 1000', 'volatile.evacuate.origin': 'm02' } }, 400, readOnly);
      await refused('m02', 'POST', '/1.0/instances', { name: 'planted', source: { type: 'none' }, config: { 'volatile.last_state.power': 'RUNNING' } }, 400, readOnly);
    });

    it('refuses to delete a running instance and an unknown state action', async () => {
      await refused('m02', 'DELETE', '/1.0/instances/web', undefined, 400, 'The instance is currently running, stop it first');
      await refused('m02', 'PUT', '/1.0/instances/web/state', { action: 'explode' }, 400, 'Unknown action "explode"');
      assert.equal((await c.instance('web')).status, 'Running');
    });

    it('stop, start and restart through the state endpoint, recording volatile.last_state.power', async () => {
      const pid0 = (await c.instance('web')).state?.pid ?? 0;
      await c.client('m02').runAsync('PUT', '/1.0/instances/web/state', { action: 'stop', timeout: 10 });
      let inst = await c.instance('web');
      assert.equal(inst.status, 'Stopped');
      assert.equal(inst.config['volatile.last_state.power'], 'STOPPED');
      assert.ok(!processAlive(pid0), 'the process is gone after stop');

      await c.client('m03').runAsync('PUT', '/1.0/instances/web/state', { action: 'start' });
      inst = await c.instance('web');
      assert.equal(inst.status, 'Running');
      assert.equal(inst.config['volatile.last_state.power'], 'RUNNING');
      const pid1 = inst.state?.pid ?? 0;
      assert.ok(processAlive(pid1));

      await c.client('m01').runAsync('PUT', '/1.0/instances/web/state', { action: 'restart' });
      inst = await c.instance('web');
      assert.equal(inst.status, 'Running');
      assert.notEqual(inst.state?.pid, pid1, 'restart runs a new process');
      assert.ok(!processAlive(pid1));
    });

    it('deletes a stopped instance with its root volume', async () => {
      await c.launch('doomed', { target: 'm02' });
      await c.client('m01').runAsync('PUT', '/1.0/instances/doomed/state', { action: 'stop' });
      assert.ok(existsSync(c.instanceDir('m02', 'doomed')));
      await c.client('m01').runAsync('DELETE', '/1.0/instances/doomed');
      assertError(await c.raw('m03', 'GET', '/1.0/instances/doomed'), 404, 'Instance not found');
      assert.ok(!existsSync(c.instanceDir('m02', 'doomed')));
      assert.ok(!existsSync(path.join(c.memberDir('m02'), 'instances', 'default_doomed')));
    });
  });

  describe('operations and events', () => {
    it('lists, shows and waits on operations; 404 for an unknown one', async () => {
      await c.launch('opsy', { target: 'm02', start: false });
      const res = await c.raw('m03', 'PUT', '/1.0/instances/opsy/state', { json: { action: 'start' } });
      const url = asyncOperation(res);
      const id = url.split('/').pop() ?? '';
      const waited = syncMetadata(await c.raw('m01', 'GET', `${url}/wait?timeout=20`)) as { id: string; status: string; status_code: number; location: string };
      assert.equal(waited.id, id);
      assert.equal(waited.status, 'Success');
      assert.equal(waited.status_code, 200);
      assert.equal(waited.location, 'm02', 'the operation ran on the member holding the instance');
      const shown = syncMetadata(await c.raw('m01', 'GET', url)) as { status: string; description: string };
      assert.equal(shown.status, 'Success');
      assert.equal(shown.description, 'Starting instance');
      const listed = syncMetadata(await c.raw('m01', 'GET', '/1.0/operations')) as Record<string, string[]>;
      assert.ok((listed.success ?? []).includes(`/1.0/operations/${id}`), JSON.stringify(listed));
      const full = syncMetadata(await c.raw('m02', 'GET', '/1.0/operations?recursion=1')) as Record<string, { id: string }[]>;
      assert.ok((full.success ?? []).some((o) => o.id === id));
      assertError(await c.raw('m01', 'GET', '/1.0/operations/00000000-0000-0000-0000-000000000000'), 404, 'Operation not found');
      assert.equal((await c.instance('opsy')).status, 'Running');
    });

    it('a member\'s event stream carries lifecycle events of another member, with its location', async () => {
      await c.launch('evt', { target: 'm01', start: false });
      const seen: RoostEvent[] = [];
      const sub = await c.client('m02').events(['lifecycle'], (e) => seen.push(e));
      try {
        await c.client('m01').runAsync('PUT', '/1.0/instances/evt/state', { action: 'start' });
        await waitFor('m02 relays instance-started of evt from m01', () =>
          seen.some((e) => {
            const meta = e.metadata as { action?: string; source?: string };
            return meta.action === 'instance-started' && meta.source === '/1.0/instances/evt';
          }),
        );
        const started = seen.find((e) => (e.metadata as { action?: string; source?: string }).source === '/1.0/instances/evt');
        assert.equal(started?.type, 'lifecycle');
        assert.equal(started?.location, 'm01');
        assert.equal(started?.project, 'default');
        assert.ok(seen.every((e) => e.type === 'lifecycle'), 'the type filter holds');
      } finally {
        sub.close();
      }
    });

    it('drops an event subscriber that stops reading, with a close code and reason, while a reading one gets everything', async () => {
      const slow = new WebSocket(`ws+unix://${path.join(c.memberDir('m01'), 'unix.socket')}:/1.0/events`);
      const slowMessages: string[] = [];
      let slowClosed: { code: number; reason: string } | null = null;
      slow.on('message', (data: Buffer) => slowMessages.push(data.length < 65536 ? data.toString() : '(flood)'));
      slow.on('close', (code, reason) => (slowClosed = { code, reason: reason.toString() }));
      await new Promise((resolve, reject) => slow.once('open', resolve).once('error', reject));
      // The handshake is done; from now on this client takes nothing off the socket.
      slow.pause();
      const seen = new Set<string>();
      const reading = await c.client('m01').events(['logging', 'lifecycle'], (e) => {
        const meta = e.metadata as { context?: { flood?: string }; action?: string; source?: string };
        if (meta.context?.flood) seen.add(meta.context.flood);
        if (meta.action === 'instance-created') seen.add(meta.source ?? '');
      });
      // Log lines of another member, travelling to m01 through the store as every member's events do:
      // 512 KiB each, up to three times the bound in all, each published once the reader has the one before
      // (so a starved test process never lags by more than one event), until m01 says it dropped the other.
      const bytesPerEvent = 512 * 1024;
      const count = Math.ceil((3 * maxUnreadEventBytes) / bytesPerEvent);
      const dropped = (): boolean => c.logTail('m01', 400).includes('dropped an events subscriber that stopped reading');
      const flood = startLogFlood(bytesPerEvent);
      try {
        for (let i = 0; i < count && !dropped(); i++) {
          await flood.ask(`publish ${i}`);
          await waitFor(`the reading subscriber received event ${i} of ${count}`, () => seen.has(String(i)), 30_000);
        }
        await waitFor('m01 dropped the subscriber that stopped reading', dropped, 15_000);
        assert.ok(seen.size > maxUnreadEventBytes / bytesPerEvent, `the reader got every one of the ${seen.size} events, more than the bound`);

        // The daemon still answers, and still delivers to the reader; the dropped subscriber gets no more.
        syncMetadata(await c.raw('m01', 'GET', '/1.0'));
        await c.launch('after-flood', { target: 'm01', start: false });
        await waitFor('the reader sees after-flood created', () => seen.has('/1.0/instances/after-flood'));

        slow.resume();
        await waitFor('the dropped subscriber sees the close once it reads again', () => slowClosed !== null, 20_000);
        assert.deepEqual(slowClosed, { code: tooSlowCloseCode, reason: `Too slow: more than ${maxUnreadEventBytes / 1024 / 1024} MiB of events unread` });
        assert.ok(!slowMessages.some((text) => text.includes('after-flood')), 'nothing published after the drop reached the dropped subscriber');
      } finally {
        reading.close();
        slow.terminate();
        await flood.ask('remove');
        await flood.end();
      }
    });
  });

  describe('custom volumes', () => {
    const volUrl = '/1.0/storage-pools/default/volumes/custom';

    it('create, list, show; refuse a bad name, a duplicate and an unknown pool', async () => {
      syncMetadata(await c.raw('m02', 'POST', `/1.0/storage-pools/default/volumes/custom?target=m01`, { json: { name: 'vol1', config: { size: '10MiB' } } }));
      assert.ok(existsSync(c.volumeDir('m01', 'vol1')));
      assert.ok(!existsSync(c.volumeDir('m02', 'vol1')));
      const names = syncMetadata(await c.raw('m03', 'GET', volUrl)) as string[];
      assert.ok(names.includes(`${volUrl}/vol1`), names.join(', '));
      const full = syncMetadata(await c.raw('m03', 'GET', `/1.0/storage-pools/default/volumes?recursion=1`)) as { name: string; location: string }[];
      assert.equal(full.find((v) => v.name === 'vol1')?.location, 'm01');
      const one = syncMetadata(await c.raw('m02', 'GET', `${volUrl}/vol1`)) as { name: string; location: string; used_by: string[]; config: Record<string, string> };
      assert.equal(one.location, 'm01');
      assert.deepEqual(one.used_by, []);
      assert.equal(one.config.size, '10MiB');

      await refused('m01', 'POST', `${volUrl}?target=m01`, { name: '../evil' }, 400, /Invalid storage volume name/);
      await refused('m01', 'POST', `${volUrl}?target=m01`, { name: 'vol1' }, 409, 'Storage volume "vol1" already exists');
      await refused('m01', 'POST', `${volUrl}?target=m01`, { name: 'vol9', config: { size: 'big' } }, 400, /size/);
      await refused('m01', 'POST', '/1.0/storage-pools/nopool/volumes/custom', { name: 'vol9' }, 404, 'Storage pool not found');
      assertError(await c.raw('m01', 'GET', `${volUrl}/nosuch`), 404, 'Storage volume not found');
    });

    it('attached volumes cannot be deleted; a volume cannot be attached to an instance on another member', async () => {
      await c.launch('user1', { target: 'm01', start: false, devices: { data: { type: 'disk', pool: 'default', source: 'vol1', path: 'data' } } });
      const one = syncMetadata(await c.raw('m02', 'GET', `${volUrl}/vol1`)) as { used_by: string[] };
      assert.deepEqual(one.used_by, ['/1.0/instances/user1']);
      await refused('m03', 'DELETE', `${volUrl}/vol1`, undefined, 400, /still in use by \/1\.0\/instances\/user1/);

      await c.launch('far', { target: 'm02', start: false });
      await refused('m01', 'PATCH', '/1.0/instances/far', { devices: { data: { type: 'disk', pool: 'default', source: 'vol1', path: 'data' } } }, 400, /Storage volume "vol1" is on member "m01"/);
      await refused('m01', 'POST', '/1.0/instances?target=m02', { name: 'far2', source: { type: 'none' }, devices: { data: { type: 'disk', pool: 'default', source: 'vol1', path: 'data' } } }, 400, /Storage volume "vol1" is on member "m01"/);
      assertError(await c.raw('m01', 'GET', '/1.0/instances/far2'), 404, 'Instance not found');
      assert.ok(!existsSync(c.instanceDir('m02', 'far2')));

      syncMetadata(await c.raw('m02', 'PATCH', '/1.0/instances/user1', { json: { devices: { data: {} } } }));
      syncMetadata(await c.raw('m03', 'DELETE', `${volUrl}/vol1`));
      assertError(await c.raw('m01', 'GET', `${volUrl}/vol1`), 404, 'Storage volume not found');
      assert.ok(!existsSync(c.volumeDir('m01', 'vol1')));
    });
  });
});
