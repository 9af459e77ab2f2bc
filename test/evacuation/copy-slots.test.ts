// Copy slots that follow the throughput, against simulated links: each copy of the same size finishes when
// the link's aggregate throughput at the current limit has carried its bytes. The slots must find the limit
// where more copies stop paying, stay near it, step down when the link gets slower, and keep looking for
// bandwidth that comes back. Fixed slots never move. No clock: the simulation says what time it is.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AdaptiveSlots, fixedSlots, type CopySlots } from '../../src/evacuation/copy-slots.js';

const copyBytes = 4 * 2 ** 20;

/** Release `copies` copies through `slots`, the link carrying `rate(limit)` bytes per ms; returns the limit at each release. */
function drive(slots: CopySlots, copies: number, rate: (limit: number) => number, start = { now: 0 }): number[] {
  const seen: number[] = [];
  for (let i = 0; i < copies; i++) {
    // With `limit` copies sharing the link, one copy's worth of bytes is done every copyBytes / rate ms.
    start.now += copyBytes / rate(slots.limit);
    slots.released(copyBytes, start.now);
    seen.push(slots.limit);
  }
  return seen;
}

/** The limit most often seen in the last `n` releases. */
function settledAt(seen: number[], n = 100): number {
  const counts = new Map<number, number>();
  for (const l of seen.slice(-n)) counts.set(l, (counts.get(l) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 0;
}

describe('copy slots', () => {
  it('fixed slots never move', () => {
    const slots = fixedSlots(4);
    assert.deepEqual(new Set(drive(slots, 50, (l) => l * 1000)), new Set([4]));
    assert.equal(fixedSlots(0).limit, 1);
  });

  it('start at 2 and climb while each added copy adds throughput, up to the cap', () => {
    const slots = new AdaptiveSlots(16);
    assert.equal(slots.limit, 2);
    const seen = drive(slots, 400, (l) => l * 1000); // every copy adds its own bandwidth
    assert.equal(settledAt(seen), 16);
    assert.deepEqual(slots.history.slice(0, 4), [2, 3, 4, 5]);
  });

  it('settle where the link is full: more copies add nothing', () => {
    const slots = new AdaptiveSlots(16);
    const seen = drive(slots, 600, (l) => Math.min(l, 5) * 1000);
    assert.equal(settledAt(seen), 5);
    assert.ok(Math.max(...seen) <= 7, `it went no further than a probe or two above (went to ${Math.max(...seen)})`);
    assert.ok(seen.slice(-100).filter((l) => l === 5).length >= 70, 'it spends most of its time at 5, probing now and then');
  });

  it('settle below the point where more copies slow everything down (a disk that seeks)', () => {
    const slots = new AdaptiveSlots(16);
    const rates = [0, 1000, 1800, 1500, 1200, 1000, 900];
    const seen = drive(slots, 400, (l) => rates[Math.min(l, rates.length - 1)] ?? 900);
    assert.equal(settledAt(seen), 2);
  });

  it('step down when the link gets slower, and climb again when it comes back', () => {
    const slots = new AdaptiveSlots(16);
    const clock = { now: 0 };
    drive(slots, 400, (l) => Math.min(l, 8) * 1000, clock);
    assert.ok(slots.limit >= 8, `at first it uses the bandwidth of 8 copies (limit ${slots.limit})`);
    // Another tenant takes the link: beyond 2 copies each one more makes it worse.
    const busy = [0, 1000, 1600, 1300, 1000, 800, 700, 600, 500, 450, 400];
    const slow = drive(slots, 600, (l) => busy[Math.min(l, busy.length - 1)] ?? 400, clock);
    assert.equal(settledAt(slow), 2);
    const back = drive(slots, 800, (l) => Math.min(l, 8) * 1000, clock);
    assert.ok(settledAt(back) >= 7, `it found the bandwidth again (settled at ${settledAt(back)})`);
  });

  it('a round is not judged on copies quicker than its shortest length', () => {
    const slots = new AdaptiveSlots(16, { minRoundMs: 100 });
    // Ten copies released 1 ms apart: one round at most (the first release only opens it).
    let now = 0;
    for (let i = 0; i < 10; i++) slots.released(copyBytes, (now += 1));
    assert.equal(slots.limit, 2);
  });
});
