// Prometheus metrics (`GET /1.0/metrics`): scraped during a real evacuation, the source member's move
// counters, bytes and downtime histogram move, its moves in flight rise and fall, the drainer's member
// records the run's duration, and every member reports where instances are and each member's heartbeat age.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { beginState, getOperation, launchWorkload } from '../evacuation/world.js';

let c: TestCluster;

/** The samples of a scrape: `name{labels}` → value (labels as Prometheus prints them). */
async function scrape(member: string): Promise<{ contentType: string; samples: Map<string, number> }> {
  const res = await c.raw(member, 'GET', '/1.0/metrics');
  assert.equal(res.status, 200, res.text);
  const samples = new Map<string, number>();
  for (const line of res.text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return { contentType: res.headers['content-type'] ?? '', samples };
}

/** The sum of the samples of `name` whose labels include every `label="value"` given. */
function total(samples: Map<string, number>, name: string, ...labels: string[]): number {
  let sum = 0;
  for (const [key, value] of samples) {
    const bare = key.includes('{') ? key.slice(0, key.indexOf('{')) : key;
    if (bare === name && labels.every((l) => key.includes(l))) sum += value;
  }
  return sum;
}

describe('metrics', () => {
  before(async () => {
    c = await startCluster({ members: 3 });
  });
  after(async () => {
    await c?.stop();
  });

  it('counts the moves, bytes and downtime of an evacuation while it runs, and where instances are', async () => {
    const names = ['w1', 'w2', 'w3'];
    for (const name of names) await launchWorkload(c, name, { target: 'm01', termSleep: 1, payloadBytes: 2 * 1024 * 1024 });
    const before = await scrape('m01');
    assert.match(before.contentType, /^text\/plain; version=0\.0\.4/);
    assert.equal(total(before.samples, 'roost_moves_total'), 0);
    assert.equal(total(before.samples, 'roost_instances', 'location="m01"', 'state="running"'), 3);
    for (const m of c.names) assert.ok(before.samples.has(`roost_member_heartbeat_age_seconds{of="${m}",member="m01"}`), `heartbeat age of ${m}`);
    assert.ok(total(before.samples, 'roost_store_txn_duration_seconds_count') > 0, 'store transactions are timed');

    const id = await beginState(c, 'm01', { action: 'evacuate' });
    // Scrape the source while the evacuation runs: its moves are in flight at some point.
    let inFlight = 0;
    const deadline = Date.now() + 90_000;
    for (;;) {
      assert.ok(Date.now() < deadline, 'the evacuation ends within 90 s');
      const now = await scrape('m01');
      inFlight = Math.max(inFlight, total(now.samples, 'roost_moves_in_flight'));
      const op = await getOperation(c, id, 'm02');
      if (op && ['Success', 'Failure', 'Cancelled'].includes(op.status)) {
        assert.equal(op.status, 'Success', op.err);
        break;
      }
    }
    assert.ok(inFlight >= 1, 'moves were seen in flight during the evacuation');

    const after = await scrape('m01');
    assert.equal(total(after.samples, 'roost_moves_in_flight'), 0);
    assert.equal(total(after.samples, 'roost_moves_total', 'result="success"'), 3);
    assert.ok(total(after.samples, 'roost_moved_bytes_total') >= 3 * 2 * 1024 * 1024, 'the payloads were counted');
    assert.equal(total(after.samples, 'roost_instance_downtime_seconds_count'), 3);
    assert.ok(total(after.samples, 'roost_instance_downtime_seconds_sum') > 0);
    assert.equal(total(after.samples, 'roost_move_duration_seconds_count'), 3);
    assert.equal(total(after.samples, 'roost_instances', 'location="m01"'), 0);
    assert.equal(total(after.samples, 'roost_instances', 'state="running"'), 3);

    // The drainer's member (whichever leads) recorded the run.
    let runs = 0;
    for (const m of c.names) runs += total((await scrape(m)).samples, 'roost_evacuation_duration_seconds_count', 'action="evacuate"', 'outcome="done"');
    assert.equal(runs, 1);
  });
});
