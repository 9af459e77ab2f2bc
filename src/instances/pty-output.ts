// node-pty (1.1) ends a terminal's output early on a busy machine. When the command exits before the end of
// its output (EIO on the terminal's master side) has been read, node-pty destroys its reading side 200 ms
// later, whatever is still waiting in the terminal (microsoft/node-pty#72). A timer that is due runs before
// the event loop polls for input, so an event loop held up for 200 ms around the exit drops the command's
// last output: `exec -t` printed everything but its last line now and then under load.
// `readPtyToEnd` makes that destroy wait until a poll of the event loop has read what was waiting and the
// output has then been quiet for a while (and is not paused by a slow reader).

import { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { IPty } from 'node-pty';

/** Output quiet this long after the command's exit is taken as its end (node-pty's own wait: 200 ms). */
const quietMs = 200;
/** A terminal still being written to (a background command holds it) is closed this long after the exit. */
const capMs = 5_000;

/** Keep `term`'s output open after its command's exit until what was waiting has been read. */
export function readPtyToEnd(term: IPty): void {
  // The reading side is node-pty's own (not in its typings); without it as expected, node-pty behaves as is.
  const socket = (term as unknown as { _socket?: unknown })._socket;
  if (!(socket instanceof Socket)) return;
  const destroy = socket.destroy.bind(socket);
  let lastData = performance.now();
  socket.on('data', () => {
    lastData = performance.now();
  });
  let waiting = false;
  socket.destroy = (error?: Error): Socket => {
    // Only node-pty's destroy after the exit waits: not one for an error (EIO ends the output) or an end read.
    if (waiting || socket.destroyed || error !== undefined || socket.readableEnded) return destroy(error);
    waiting = true;
    const asked = performance.now();
    let polls = 0;
    const judge = (): void => {
      // setImmediate runs after the poll phase: what the terminal held when the timer fired has been read.
      setImmediate(() => {
        if (socket.destroyed) return;
        polls += 1;
        const now = performance.now();
        const quiet = !socket.isPaused() && now - lastData >= quietMs && polls >= 2;
        if (quiet || (!socket.isPaused() && now - asked >= capMs)) destroy(error);
        else setTimeout(judge, socket.isPaused() ? 20 : quietMs);
      });
    };
    judge();
    return socket;
  };
}
