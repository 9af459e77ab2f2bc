// The move pipeline's copy slots, with steps that only record what happens: a unit holds its slot until its
// data is in place (it says `committed`), not while it starts; the next copy begins meanwhile; a unit that
// never says so holds its slot to the end; a failed copy frees its slot too.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { AdaptiveSlots, fixedSlots } from '../../src/evacuation/copy-slots.js';
import { runPipeline, type PipelineUnit } from '../../src/evacuation/pipeline.js';

interface Unit extends PipelineUnit {
  name: string;
}

/** A promise and the function that settles it. */
function gate(): { open: () => void; opened: Promise<void> } {
  let open = (): void => undefined;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

const units = (names: string[]): Unit[] => names.map((name) => ({ name, bytes: 0, running: false }));

describe('move pipeline', () => {
  it('frees a copy slot once the data is in place: the next copy runs while the first unit starts', async () => {
    const log: string[] = [];
    const started = gate();
    await runPipeline(units(['a', 'b']), fixedSlots(1), new AbortController().signal, {
      stop: async () => undefined,
      waiting: () => undefined,
      copy: async (u, committed) => {
        log.push(`copy ${u.name}`);
        committed();
        if (u.name === 'a') {
          await started.opened; // a's start waits until b has copied
          log.push('a started');
        } else {
          log.push('b copied');
          started.open();
        }
      },
      failed: (u, stage, err) => assert.fail(`${u.name} failed at ${stage}: ${String(err)}`),
    });
    assert.deepEqual(log, ['copy a', 'copy b', 'b copied', 'a started']);
  });

  it('a unit that never says its data is in place holds its slot to the end, and a failed one frees it', async () => {
    const log: string[] = [];
    const failures: string[] = [];
    await runPipeline(units(['a', 'b', 'c']), fixedSlots(1), new AbortController().signal, {
      stop: async () => undefined,
      waiting: () => undefined,
      copy: async (u) => {
        log.push(`begin ${u.name}`);
        await Promise.resolve();
        if (u.name === 'b') throw new Error('the target went away');
        log.push(`end ${u.name}`);
      },
      failed: (u, stage) => failures.push(`${u.name} ${stage}`),
    });
    assert.deepEqual(log, ['begin a', 'end a', 'begin b', 'begin c', 'end c']);
    assert.deepEqual(failures, ['b copy']);
  });

  it('copy slots that follow the throughput open more slots while copies that only wait (a long link) get through faster', async () => {
    // Each copy takes 20 ms however many run at once: every slot added adds its throughput.
    let running = 0;
    let most = 0;
    const slots = new AdaptiveSlots(8, { minRoundMs: 20 });
    await runPipeline(Array.from({ length: 80 }, (_, i) => ({ name: `u${i}`, bytes: 1_000_000, running: false })), slots, new AbortController().signal, {
      stop: async () => undefined,
      waiting: () => undefined,
      copy: async (_u, committed) => {
        running += 1;
        most = Math.max(most, running);
        await delay(20); // the copy's time on the link: what is measured, not a synchronisation
        running -= 1;
        committed();
      },
      failed: (u, stage, err) => assert.fail(`${u.name} failed at ${stage}: ${String(err)}`),
    });
    assert.ok(Math.max(...slots.history) >= 4, `the limit climbed from 2 while each slot paid (it took ${slots.history.join(", ")})`);
    assert.ok(most >= 4 && most <= 8, `up to ${most} copies ran at once`);
  });
});
