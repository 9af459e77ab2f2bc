// Nothing is lost when daemons die: instances outlive a SIGKILLed roostd and are re-adopted, what should
// run is started again, and a move whose source or target is killed at any point ends with the instance
// in exactly one place, with its bytes intact, running again if it ran, and no staging or orphan copy left.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ApiClientError } from '../../src/client/client.js';
import { keys, type InstanceRecord, type MoveJournal, type OperationRecord, type VolumeRecord } from '../../src/store/schema.js';
import { processAlive, sha256Tree, startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { asyncOperation } from '../helpers/envelope.js';

let c: TestCluster;

/**
 * MiB of random data in the root volume and in the attached custom volume of instances whose moves are
 * interrupted: enough for a copy that takes a while. The custom volume is copied and made durable after
 * the root volume, which keeps the moment "root copy in place on the target, not yet committed" wide.
 */
const rootMiB = 48;
const volumeMiB = 32;

/** Ends only a second after SIGTERM, so the stop phase of a move is wide enough to be caught. */
const slowStopper = 'trap "sleep 1; exit 0" TERM; while true; do sleep 0.2; done';

/** Checksums of an instance's root volume (but its mount link) and of its custom volume. */
interface Sums {
  root: string;
  volume: string;
}

const volumeOf = (name: string): string => `${name}-data`;

async function record(name: string): Promise<InstanceRecord> {
  const kv = await (await c.store()).get(keys.instance('default', name));
  assert.ok(kv, `instance ${name} has a record`);
  return JSON.parse(kv.value) as InstanceRecord;
}

async function volumeLocation(volume: string): Promise<string> {
  const kv = await (await c.store()).get(keys.volume('default', 'default', volume));
  assert.ok(kv, `volume ${volume} has a record`);
  return (JSON.parse(kv.value) as VolumeRecord).location;
}

async function journal(name: string): Promise<MoveJournal | null> {
  const kv = await (await c.store()).get(keys.move('default', name));
  return kv ? (JSON.parse(kv.value) as MoveJournal) : null;
}

/** Polls faster than `waitFor`: move phases can be short. Returns the value `probe` produced. */
async function catchMoment<T>(what: string, probe: () => Promise<T | null>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(2);
  }
}

async function fill(dir: string, mib: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (let i = 0; i < mib / 8; i++) await writeFile(path.join(dir, `blob-${i}.bin`), randomBytes(8 * 1024 * 1024));
}

async function sums(member: string, name: string, volumeMember = member): Promise<Sums> {
  return {
    root: await sha256Tree(c.instanceDir(member, name), (p) => p === 'data'),
    volume: await sha256Tree(c.volumeDir(volumeMember, volumeOf(name))),
  };
}

/** A running instance on `member` with random data in its root volume and in an attached custom volume. */
async function launchHeavy(name: string, member: string): Promise<Sums> {
  await c.client(member).request('POST', `/1.0/storage-pools/default/volumes/custom?target=${member}`, { name: volumeOf(name) });
  await fill(path.join(c.volumeDir(member, volumeOf(name)), 'payload'), volumeMiB);
  await c.launch(name, {
    target: member,
    command: slowStopper,
    start: false,
    devices: { data: { type: 'disk', pool: 'default', source: volumeOf(name), path: 'data' } },
  });
  await fill(path.join(c.instanceDir(member, name), 'payload'), rootMiB);
  await writeFile(path.join(c.instanceDir(member, name), 'marker.txt'), `${name}\n`);
  await c.client(member).runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
  return sums(member, name);
}

/** Members (but `except`) holding a root volume directory of the instance. */
function holders(name: string, except?: string): string[] {
  return c.names.filter((m) => m !== except && existsSync(c.instanceDir(m, name)));
}

/** Members (but `except`) holding the directory of the instance's custom volume. */
function volumeHolders(name: string, except?: string): string[] {
  return c.names.filter((m) => m !== except && existsSync(c.volumeDir(m, volumeOf(name))));
}

async function stagingLeft(except?: string): Promise<string[]> {
  const out: string[] = [];
  for (const m of c.names.filter((x) => x !== except)) for (const e of await readdir(c.stagingDir(m)).catch(() => [] as string[])) out.push(`${m}/${e}`);
  return out;
}

/**
 * Waits until the instance is settled in one place and running, then checks the invariants: one copy
 * of each volume, both where the store says, bytes intact, run there. A member that is down (`down`)
 * keeps whatever partial or orphan copy it had until it restarts.
 */
async function assertWholeAndRunning(name: string, expected: Sums, via: string, down?: string): Promise<string> {
  await waitFor(
    `${name} is settled: no journal, one copy, no staging, running`,
    async () => {
      if (await journal(name)) return false;
      if (holders(name, down).length !== 1 || volumeHolders(name, down).length !== 1 || (await stagingLeft(down)).length > 0) return false;
      return (await c.instance(name, via)).status === 'Running';
    },
    30_000,
  );
  const location = (await record(name)).location;
  assert.deepEqual(holders(name, down), [location], 'the only root volume is where location says');
  assert.deepEqual(volumeHolders(name, down), [location], 'the only custom volume is with it');
  assert.equal(await volumeLocation(volumeOf(name)), location, 'the volume record agrees');
  assert.deepEqual(await sums(location, name), expected, 'bytes intact');
  assert.equal(await readlink(path.join(c.instanceDir(location, name), 'data')), c.volumeDir(location, volumeOf(name)), 'mounted from its member');
  const view = await c.instance(name, via);
  assert.equal(view.location, location);
  assert.ok(processAlive(view.state?.pid ?? 0), 'its process runs');
  assert.ok(existsSync(path.join(c.memberDir(location), 'instances', `default_${name}`, 'pid.json')), 'run by its location');
  return location;
}

describe('crashes lose nothing', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  it('instances outlive a SIGKILLed daemon and are re-adopted when it restarts; a stopped one stays stopped', { timeout: 60_000 }, async () => {
    await c.launch('keeper', { target: 'm01' });
    await c.launch('sleeper', { target: 'm01' });
    await c.client('m01').runAsync('PUT', '/1.0/instances/sleeper/state', { action: 'stop' });
    const pid = (await c.instance('keeper')).state?.pid ?? 0;
    assert.ok(processAlive(pid));

    await c.kill('m01', 'SIGKILL');
    assert.equal(c.pid('m01'), null, 'the daemon is gone');
    assert.ok(processAlive(pid), 'the instance still runs without its daemon');
    const seen = (await c.client('m02').get('/1.0/instances?recursion=1')) as { name: string; status: string }[];
    assert.equal(seen.find((i) => i.name === 'keeper')?.status, 'Error', 'its state is unknown while its member is down');

    await c.restart('m01');
    const keeper = await c.instance('keeper', 'm02');
    assert.equal(keeper.status, 'Running');
    assert.equal(keeper.state?.pid, pid, 'the same process, re-adopted');
    const list = (await c.client('m03').get('/1.0/instances?recursion=1')) as { name: string; status: string; location: string }[];
    const listed = list.find((i) => i.name === 'keeper');
    assert.equal(listed?.status, 'Running');
    assert.equal(listed?.location, 'm01');
    assert.equal(list.find((i) => i.name === 'sleeper')?.status, 'Stopped', 'a stopped instance stays stopped');
    // Re-adopted means managed: a stop through the API ends that very process.
    await c.client('m02').runAsync('PUT', '/1.0/instances/keeper/state', { action: 'stop' });
    assert.ok(!processAlive(pid));
  });

  it('an instance recorded RUNNING whose process died while its daemon was down is started again', { timeout: 60_000 }, async () => {
    await c.launch('phoenix', { target: 'm01' });
    const pid = (await c.instance('phoenix')).state?.pid ?? 0;
    await c.kill('m01', 'SIGKILL');
    process.kill(-pid, 'SIGKILL');
    await waitFor('the instance process is dead', () => !processAlive(pid));
    await c.restart('m01');
    await waitFor('the restarted member starts it again', async () => (await c.instance('phoenix', 'm02')).status === 'Running');
    const view = await c.instance('phoenix', 'm02');
    assert.notEqual(view.state?.pid, pid);
    assert.ok(processAlive(view.state?.pid ?? 0));
    assert.equal(view.location, 'm01');
  });

  describe('SIGKILL of the source daemon in the middle of a move', () => {
    const points: { label: string; probe: (name: string) => Promise<MoveJournal | null>; phases: MoveJournal['phase'][] }[] = [
      { label: 'right after the journal appears', phases: ['started'], probe: (name) => journal(name) },
      {
        label: 'during the copy',
        phases: ['stopped'],
        probe: async (name) => {
          const j = await journal(name);
          return j?.phase === 'stopped' && existsSync(path.join(c.stagingDir(j.target), j.id)) && !existsSync(c.instanceDir(j.target, name)) ? j : null;
        },
      },
      {
        label: 'with the copy in place on the target but not committed',
        phases: ['stopped', 'copied'],
        probe: async (name) => {
          const j = await journal(name);
          return j && j.phase !== 'committed' && existsSync(c.instanceDir(j.target, name)) ? j : null;
        },
      },
      {
        label: 'after the copy is complete',
        phases: ['copied', 'committed'],
        probe: async (name) => {
          const j = await journal(name);
          return j && (j.phase === 'copied' || j.phase === 'committed') ? j : null;
        },
      },
    ];

    for (const [i, point] of points.entries()) {
      it(`${point.label}: after a restart the instance is whole in one place and runs`, { timeout: 90_000 }, async (t: TestContext) => {
        const name = `crash${i}`;
        const before = await launchHeavy(name, 'm01');
        const url = asyncOperation(await c.raw('m03', 'POST', `/1.0/instances/${name}?target=m02`, { json: { name, migration: true } }));
        const opId = url.split('/').pop() ?? '';

        await catchMoment(`the move of ${name} ${point.label}`, () => point.probe(name));
        await c.kill('m01', 'SIGKILL');
        const frozen = await journal(name);
        assert.ok(frozen, 'the move was caught before it finished');
        assert.ok(point.phases.includes(frozen.phase), `killed in phase ${frozen.phase}, wanted ${point.phases.join('/')}`);
        const loc = (await record(name)).location;
        t.diagnostic(`killed in phase ${frozen.phase}, location then ${loc}`);
        // At the moment of the crash a complete copy exists where the store says.
        assert.deepEqual(await sums(loc, name, await volumeLocation(volumeOf(name))), before, 'a complete copy at the recorded location');

        await c.restart('m01');
        const location = await assertWholeAndRunning(name, before, 'm03');
        t.diagnostic(`settled on ${location}`);
        // A committed move is finished by the restarted source; one killed before its commit is undone.
        assert.equal(location, frozen.phase === 'committed' ? 'm02' : 'm01');
        await waitFor('the interrupted operation is no longer Running', async () => {
          const kv = await (await c.store()).get(keys.operation(opId));
          return kv !== null && (JSON.parse(kv.value) as OperationRecord).status !== 'Running';
        });
      });
    }
  });

  describe('SIGKILL of the target daemon in the middle of a move', () => {
    const points: { label: string; probe: (j: MoveJournal, name: string) => boolean }[] = [
      {
        label: 'during the copy',
        probe: (j, name) => existsSync(path.join(c.stagingDir('m02'), j.id)) && !existsSync(c.instanceDir('m02', name)),
      },
      { label: 'right after it put the copy in place', probe: (_j, name) => existsSync(c.instanceDir('m02', name)) },
    ];

    for (const [i, point] of points.entries()) {
      it(`${point.label}: the instance stays whole, and no orphan copy is left once the target restarts`, { timeout: 90_000 }, async (t: TestContext) => {
        const name = `target-crash${i}`;
        const before = await launchHeavy(name, 'm01');
        const moving = c.client('m01').runAsync('POST', `/1.0/instances/${name}?target=m02`, { name, migration: true });
        moving.catch(() => undefined);
        const j = await catchMoment(`the move of ${name} ${point.label}`, async () => {
          const x = await journal(name);
          return x?.phase === 'stopped' && point.probe(x, name) ? x : null;
        });
        await c.kill('m02', 'SIGKILL');
        const outcome = await moving.then(
          () => 'moved' as const,
          (err: unknown) => {
            assert.ok(err instanceof ApiClientError, String(err));
            assert.equal(err.operation?.status, 'Failure');
            return 'failed' as const;
          },
        );
        t.diagnostic(`the move ${outcome}`);
        if (i === 0) assert.equal(outcome, 'failed', 'a copy cut short cannot be committed');
        if (outcome === 'failed') {
          // The source alone decides: the instance runs on there while the target is still down.
          assert.equal(await assertWholeAndRunning(name, before, 'm03', 'm02'), 'm01');
          if (i === 0) assert.ok(existsSync(path.join(c.stagingDir('m02'), j.id)), 'the partial copy is still on the dead target');
        }

        await c.restart('m02');
        const location = await assertWholeAndRunning(name, before, 'm03');
        assert.equal(location, outcome === 'failed' ? 'm01' : 'm02');
        assert.deepEqual(await readdir(c.stagingDir('m02')), [], 'no staging left on the target');
      });
    }
  });
});
