// Joins two websockets message for message (binary stays binary, text stays text) and closes each when the
// other closes: how a member hands a client's exec channel to the member that runs the command.

import type WebSocket from 'ws';

/** Output waiting in one websocket beyond which the other side stops being read. */
const maxBufferedBytes = 1 << 20;

/** Relay `a` and `b` both ways until either closes. `b` may be paused; it is resumed once relaying. */
export function relayWebsockets(a: WebSocket, b: WebSocket): void {
  const forward = (from: WebSocket, to: WebSocket): void => {
    from.on('message', (data, isBinary) => {
      if (to.readyState !== to.OPEN) return;
      to.send(data, { binary: isBinary }, () => {
        if (to.bufferedAmount < maxBufferedBytes && from.isPaused) from.resume();
      });
      if (to.bufferedAmount >= maxBufferedBytes) from.pause();
    });
    from.on('close', (code, reason) => {
      if (to.readyState === to.CLOSED || to.readyState === to.CLOSING) return;
      // 1005 (no code) and 1006 (abnormal) describe a close; they cannot be sent in one.
      if (code === 1005 || code === 1006) to.close();
      else to.close(code, reason);
    });
    from.on('error', () => undefined);
  };
  forward(a, b);
  forward(b, a);
  if (b.isPaused) b.resume();
}
