// Rolling maintenance (`POST /1.0/cluster/maintenance`, `roost cluster maintain`), on the several-hosts harness
// (each member in its own network and mount namespaces, the store on etcd): the drainer takes each member in
// turn, evacuates it, runs the operator's command on its own host (here: kill -9 the member's daemon, whose
// pid the test publishes in the directory every host mounts, as ssh to the host would reach it; the test then
// restarts it, as a reboot would), restores it and checks it, then the next. Every instance ends where it
// started, running, bytes intact, and is down only while it moves: never while its member is down, even when
// the member rebooted is the drainer's own. Bad requests are refused and change nothing.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { waitFor } from '../helpers/cluster.js';
import { startHosts, type HostsCluster } from '../helpers/hosts.js';
import { assertError, seedVolume, waitOperation } from '../evacuation/world.js';
import { loud } from './support.js';

let h: HostsCluster | undefined;
let c: HostsCluster;

/** A writer that logs `<n> <epoch ms>` 10 times a second, going on after a restart. */
const timedWriter =
  "trap 'exit 0' TERM; n=$(tail -n 1 beat.log 2>/dev/null | cut -d' ' -f1); n=${n:-0}; " +
  'while true; do n=$((n+1)); echo "$n $(date +%s%3N)" >> beat.log; sleep 0.1; done';

interface Beat {
  n: number;
  at: number;
}

async function beats(c: HostsCluster, member: string, name: string): Promise<Beat[]> {
  const text = await readFile(path.join(c.instanceDir(member, name), 'beat.log'), 'utf8');
  return text.split('\n').filter((l) => l !== '').map((l) => {
    const [n, at] = l.split(' ');
    return { n: Number(n), at: Number(at) };
  });
}

describe('rolling maintenance', () => {
  before(async () => {
    h = await startHosts({ members: 4, offlineThreshold: 3 });
    c = h;
  });
  after(async () => {
    await h?.stop();
  });

  it('refuses bad requests with LXD-style errors and records nothing', async () => {
    const cases: [unknown, number, RegExp][] = [
      [{}, 400, /either "members".*or "all"/],
      [{ members: ['m1'], all: true }, 400, /either "members"/],
      [{ members: ['m9'] }, 404, /Cluster member "m9" not found/],
      [{ members: ['m1', 'm1'] }, 400, /listed twice/],
      [{ all: true, concurrency: 4 }, 400, /no member to move the instances to/],
      [{ all: true, wait_online: 'soon' }, 400, /Invalid wait_online "soon"/],
      [{ all: true, reboot: true }, 400, /Invalid request/],
    ];
    for (const [body, status, message] of cases) assertError(await c.raw('m2', 'POST', '/1.0/cluster/maintenance', { json: body }), status, message);
    const list = await c.raw('m1', 'GET', '/1.0/cluster/maintenance');
    assert.equal(list.status, 200);
    assert.deepEqual(list.body?.metadata, []);
  });

  it('takes every member down in turn (the command kills its daemon); every instance ends home, running, intact, down only while it moved', { timeout: 400_000 }, async (t) => {
    await loud(() => h, async () => {
      const names: string[] = [];
      for (const m of c.names) {
        for (const i of [1, 2]) {
          const name = `${m}-w${i}`;
          names.push(name);
          await c.launch(name, { target: m, start: false, command: timedWriter });
          await seedVolume(c.instanceDir(m, name), 256 * 1024, name);
          await c.client(m).runAsync('PUT', `/1.0/instances/${name}/state`, { action: 'start' });
        }
      }
      const home = new Map(names.map((n) => [n, n.split('-')[0] ?? '']));
      const payload = new Map<string, Buffer>();
      for (const n of names) payload.set(n, await readFile(path.join(c.instanceDir(home.get(n) ?? '', n), 'payload.bin')));

      // The "reboot": the command (run by the drainer, on its own host) kills the member's daemon and waits until
      // the test has started it again. The pids and flags live in the directory every host mounts.
      const flag = (m: string, what: string): string => path.join(c.sharedBacking, `${m}.${what}`);
      const publishPid = async (m: string): Promise<void> => writeFile(flag(m, 'pid'), String(c.pid(m) ?? ''));
      for (const m of c.names) await publishPid(m);
      const exec = `kill -9 $(cat ${c.sharedPath}/{member}.pid) && touch ${c.sharedPath}/{member}.down && while [ ! -e ${c.sharedPath}/{member}.up ]; do sleep 0.2; done`;
      const down = new Map<string, { from: number; to: number }>();
      let maintaining = true;
      const rebooter = (async () => {
        while (maintaining) {
          for (const m of c.names) {
            if (down.has(m) || !existsSync(flag(m, 'down'))) continue;
            const from = Date.now();
            await c.restart(m);
            await publishPid(m);
            down.set(m, { from, to: Date.now() });
            await writeFile(flag(m, 'up'), '');
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      })();

      const res = await c.raw('m2', 'POST', '/1.0/cluster/maintenance', { json: { all: true, exec, wait_online: '60s' } });
      assert.equal(res.status, 202, res.text);
      const id = (res.body?.metadata as { id: string }).id;
      const conflict = await c.raw('m3', 'POST', '/1.0/cluster/maintenance', { json: { members: ['m4'] } });
      assert.equal(conflict.status, 409, 'a second maintenance is refused while one runs');

      const started = Date.now();
      // A failed reboot fails the test at once, not when the wait for the operation times out.
      const op = await Promise.race([
        waitOperation(c, id, 240_000),
        rebooter.then(() => Promise.reject(new Error('the rebooter stopped before the maintenance ended'))),
      ]).finally(() => {
        maintaining = false;
      });
      const total = (Date.now() - started) / 1000;
      await rebooter;
      assert.equal(op.status, 'Success', `${op.err}\n${c.logTail('m1')}`);
      assert.deepEqual([...down.keys()].sort(), c.names, 'every member was rebooted once');

      const records = (await c.raw('m4', 'GET', '/1.0/cluster/maintenance')).body?.metadata as {
        status: string;
        members: { name: string; step: string; evacuateSeconds: number; restoreSeconds: number }[];
      }[];
      const record = records.at(-1);
      assert.equal(record?.status, 'done');
      assert.deepEqual(record?.members.map((e) => [e.name, e.step]), c.names.map((m) => [m, 'done']), 'the members were taken in the cluster\'s order');
      const moving = (record?.members ?? []).reduce((s, e) => s + e.evacuateSeconds + e.restoreSeconds, 0);
      t.diagnostic(`maintenance of 4 members: ${total.toFixed(1)} s in all; evacuations + restores ${moving.toFixed(1)} s; reboots ${[...down.values()].map((d) => ((d.to - d.from) / 1000).toFixed(1)).join(', ')} s`);

      // Members are all back Online.
      for (const m of c.names) {
        const info = (await c.raw('m1', 'GET', `/1.0/cluster/members/${m}`)).body?.metadata as { status: string };
        assert.equal(info.status, 'Online', `${m} is Online`);
      }
      // The instances: home, running, bytes intact, the beat sequence unbroken.
      for (const n of names) {
        const m = home.get(n) ?? '';
        const v = await c.instance(n, 'm1');
        assert.equal(v.location, m, `${n} is back on ${m}`);
        assert.equal(v.status, 'Running', `${n} runs`);
        assert.equal(v.config['volatile.evacuate.origin'] ?? '', '', `${n} has no origin left`);
        assert.ok((await readFile(path.join(c.instanceDir(m, n), 'payload.bin'))).equals(payload.get(n) ?? Buffer.alloc(0)), `${n} payload intact`);
        for (const other of c.names) if (other !== m) assert.ok(!existsSync(c.instanceDir(other, n)), `no copy of ${n} left on ${other}`);
      }
      await waitFor('every writer wrote again after the last restore', async () => {
        for (const n of names) if (((await beats(c, home.get(n) ?? '', n)).at(-1)?.at ?? 0) < Date.now() - 1000) return false;
        return true;
      });
      for (const n of names) {
        const log = await beats(c, home.get(n) ?? '', n);
        log.forEach((b, i) => assert.equal(b.n, i + 1, `${n}: beat ${i + 1} (nothing lost or repeated)`));
        // Down (no beat for over a second) at most twice: the move away and the move home...
        const gaps = log.slice(1).map((b, i) => ({ from: log[i]?.at ?? 0, to: b.at })).filter((g) => g.to - g.from > 1000);
        assert.ok(gaps.length <= 2, `${n} was down ${gaps.length} times: ${JSON.stringify(gaps)}`);
        // ...and never while its own member was down.
        const reboot = down.get(home.get(n) ?? '');
        assert.ok(reboot);
        const beatsWhileDown = log.filter((b) => b.at >= reboot.from && b.at <= reboot.to).length;
        assert.ok(beatsWhileDown > 0, `${n} ran elsewhere while ${home.get(n)} was down`);
      }
    })();
  });
});
