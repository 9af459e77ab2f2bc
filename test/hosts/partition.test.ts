// A plain member (not the drainer's) loses its link: its daemon and instances keep running, but it reaches
// neither etcd nor the other members. The others show it Offline once `cluster.offline_threshold` passes
// without a heartbeat ("No heartbeat for ..."), never place anything on it while it is, and show it Online
// again once its link is back. Timings are reported as test diagnostics.

import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { waitFor } from '../helpers/cluster.js';
import { assertError } from '../helpers/envelope.js';
import { startHosts, type HostsCluster } from '../helpers/hosts.js';
import { assertAllIntact, assertNoLeftovers, assertOnePlace, beginState, launchWorkload, memberInfo, readAll, type InstanceData } from '../evacuation/world.js';
import { assertOneProcess, loud, seconds, waitOperationVia } from './support.js';

let h: HostsCluster | undefined;
const threshold = 3;
const moving = ['p1', 'p2', 'p3', 'p4'];
let data: Map<string, InstanceData>;

/** Root volumes in a member's pool, read in its own mount namespace. */
async function rootVolumes(c: HostsCluster, member: string): Promise<string[]> {
  return readdir(path.join(c.memberDir(member), 'storage-pools', 'default', 'containers')).catch(() => []);
}

describe('a plain member cut off from the others', () => {
  before(async () => {
    h = await startHosts({ members: 4, offlineThreshold: threshold });
    const c = h;
    await loud(() => h, async () => {
      for (const name of moving) await launchWorkload(c, name, { target: 'm2', payloadBytes: 512 * 1024 });
      await launchWorkload(c, 'resident', { target: 'm4' });
      data = await readAll(c, [...moving, 'resident'], 'm1');
    })();
  });
  after(async () => {
    await h?.stop();
  });

  it('is Offline after the threshold, takes nothing while it is, and is Online again when its link returns', { timeout: 300_000 }, async (t: TestContext) => {
    const c = h as HostsCluster;
    await loud(() => c, async () => {
      assert.notEqual(await c.leader(), 'm4', 'the member cut off is not the drainer\'s');
      const before = await rootVolumes(c, 'm4');
      const resident = h?.instanceProcesses('resident') ?? [];
      const cutAt = Date.now();
      await c.partition('m4');
      await waitFor('m4 is Offline', async () => (await memberInfo(c, 'm4', 'm1')).status === 'Offline', 30_000);
      const offlineAt = Date.now();
      const view = await memberInfo(c, 'm4', 'm3');
      assert.equal(view.status, 'Offline');
      assert.match(view.message, /^No heartbeat for \d+(\.\d+)?s$/);
      assert.ok(offlineAt - cutAt >= (threshold - 1) * 1000, `Offline ${offlineAt - cutAt} ms after the cut: not before the threshold`);

      // Nobody may place on it: not a user asking for it, not the plan of an evacuation, not the run.
      assertError(await c.raw('m1', 'POST', '/1.0/instances?target=m4', { json: { name: 'nope', source: { type: 'none' } } }), 503, 'Cluster member "m4" is offline');
      const plan = (await c.client('m3').request('POST', '/1.0/cluster/members/m2/state', { action: 'evacuate', dry_run: true })).metadata as { instances: { name: string; target: string }[] };
      assert.deepEqual(plan.instances.filter((p) => p.target === 'm4'), [], JSON.stringify(plan.instances));
      const id = await beginState(c, 'm2', { action: 'evacuate' }, 'm1');
      const op = await waitOperationVia(c, id, 'm1', 90_000);
      assert.equal(op.status, 'Success', op.err);
      for (const name of moving) {
        const v = await assertOnePlace(c, name, { running: true }, 'm1');
        assert.ok(['m1', 'm3'].includes(v.location), `${name} went to ${v.location}`);
        assertOneProcess(c, name, v.location);
      }
      assert.deepEqual(await rootVolumes(c, 'm4'), before, 'nothing landed on m4');
      // Its own instance kept running on its host all along.
      assert.deepEqual(c.instanceProcesses('resident'), resident);

      const healedAt = Date.now();
      await c.heal('m4');
      await waitFor('m4 is Online again', async () => (await memberInfo(c, 'm4', 'm1')).status === 'Online', 60_000);
      const onlineAt = Date.now();
      assert.equal((await memberInfo(c, 'm4', 'm4')).message, 'Fully operational');
      const back = await assertOnePlace(c, 'resident', { running: true, location: 'm4' }, 'm1');
      assert.equal(back.state?.pid, resident[0]?.pid, 'the resident instance was never restarted');
      await assertAllIntact(c, data, new Set([...moving, 'resident']), 'm1');
      await assertNoLeftovers(c);
      // A target again: a plan for m1 may use it.
      const again = (await c.client('m3').request('POST', '/1.0/cluster/members/m1/state', { action: 'evacuate', dry_run: true })).metadata as { instances: { target: string }[] };
      assert.ok(again.instances.some((p) => p.target === 'm4'), JSON.stringify(again.instances));

      const timing = `plain member: cut → Offline ${seconds(offlineAt - cutAt)} (threshold ${threshold} s), link back → Online ${seconds(onlineAt - healedAt)}`;
      t.diagnostic(timing);
      process.stderr.write(`${timing}\n`);
    })();
  });
});
