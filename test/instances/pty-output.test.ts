// A terminal's output reaches its reader whole, even when the reader is held up past the command's exit
// (node-pty alone drops what was not read 200 ms after the exit: microsoft/node-pty#72).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { spawn, type IPty } from 'node-pty';
import { readPtyToEnd } from '../../src/instances/pty-output.js';
import { waitFor } from '../helpers/cluster.js';

/** Run `script` under a terminal whose reader is paused until the command has been gone for `heldMs`. */
async function runHeldUp(script: string, heldMs: number, keep: boolean): Promise<{ output: string; code: number }> {
  const term: IPty = spawn('sh', ['-c', script], { cols: 80, rows: 24, encoding: null });
  if (keep) readPtyToEnd(term);
  term.pause();
  const chunks: Buffer[] = [];
  term.onData((d: string | Buffer) => chunks.push(typeof d === 'string' ? Buffer.from(d) : d));
  const exited = new Promise<number>((resolve) => term.onExit((e) => resolve(e.exitCode)));
  await waitFor('the command has exited', () => !isAlive(term.pid), 10_000);
  // The reader is held up past node-pty's 200 ms wait after the exit: the point of this test.
  await delay(heldMs);
  term.resume();
  const code = await exited;
  return { output: Buffer.concat(chunks).toString('utf8'), code };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('a terminal\'s output', () => {
  it('is read to its end when its reader is held up past the command\'s exit', async () => {
    const { output, code } = await runHeldUp('echo first; echo last; exit 4', 600, true);
    assert.equal(code, 4);
    assert.equal(output, 'first\r\nlast\r\n');
  });

  it('is lost without readPtyToEnd in the same case (what the fix is for)', async () => {
    const { output, code } = await runHeldUp('echo first; echo last; exit 4', 600, false);
    assert.equal(code, 4);
    assert.equal(output, '');
  });

  it('ends after the exit when a command left in the background keeps the terminal open', async () => {
    // The background command ignores the hangup that the exit of the session leader sends (ignored signals
    // are inherited), and holds the terminal.
    const term: IPty = spawn('sh', ['-c', 'trap "" HUP; sleep 30 & echo "left $!"; exit 0'], { cols: 80, rows: 24 });
    readPtyToEnd(term);
    let output = '';
    term.onData((d) => (output += d));
    const code = await new Promise<number>((resolve) => term.onExit((e) => resolve(e.exitCode)));
    const left = Number(/left (\d+)/.exec(output)?.[1]);
    try {
      assert.equal(code, 0);
      assert.ok(isAlive(left), 'the background command still runs');
    } finally {
      if (left > 0) process.kill(left, 'SIGKILL');
    }
  });
});
