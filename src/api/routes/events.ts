// `/1.0/events`: the websocket of events from every member (the real lxc client waits on it).

import type { Router } from '../server.js';
import { queryParam } from '../request.js';

/** Seconds between keepalive pings (LXD pings every 10 s). */
const pingIntervalMs = 10_000;

/**
 * Events a subscriber may leave unread before it is dropped. Everything sent and not yet taken by the
 * client waits in the daemon's memory, so a client that stops reading (hung, paused, or hostile) would
 * otherwise grow it without bound. A client that reads stays near zero; a busy evacuation produces a few
 * hundred KiB a minute, so 4 MiB is minutes of backlog for a client that is merely slow.
 */
export const maxUnreadEventBytes = 4 * 1024 * 1024;

/**
 * How long a subscriber may stay above the bound before it is dropped. The store delivers all events since
 * its last poll at once, and such a burst sits in the daemon until the client reads it (milliseconds for a
 * client that reads); only a subscriber still behind after this is dropped. The backlog is thus bounded by
 * `maxUnreadEventBytes` plus what the cluster publishes in this time.
 */
const unreadGraceMs = 1000;

/** Close code for a dropped subscriber: 1008 (policy violation, RFC 6455); the stream's one policy is: keep reading. */
export const tooSlowCloseCode = 1008;

/** Register the events websocket. */
export function registerEventRoutes(r: Router): void {
  const m = r.member;
  r.app.get('/1.0/events', { websocket: true }, (socket, req) => {
    const typeParam = queryParam(req, 'type');
    const types = typeParam ? new Set(typeParam.split(',').filter((t) => t !== '')) : null;
    const ping = setInterval(() => {
      if (socket.readyState === socket.OPEN) socket.ping();
    }, pingIntervalMs);
    let behind: NodeJS.Timeout | null = null;
    let unsubscribe = (): void => undefined;
    const stop = (): void => {
      clearInterval(ping);
      if (behind) clearTimeout(behind);
      unsubscribe();
    };
    const dropIfStillBehind = (): void => {
      behind = null;
      if (socket.readyState !== socket.OPEN || socket.bufferedAmount <= maxUnreadEventBytes) return;
      stop();
      m.log.warn({ unreadBytes: socket.bufferedAmount, origin: r.origin }, 'dropped an events subscriber that stopped reading');
      // The close frame queues behind what is unread; ws destroys the socket if the client never answers it.
      socket.close(tooSlowCloseCode, `Too slow: more than ${maxUnreadEventBytes / 1024 / 1024} MiB of events unread`);
    };
    unsubscribe = m.events.subscribe((event) => {
      if (types && !types.has(event.type)) return;
      if (socket.readyState !== socket.OPEN) return;
      socket.send(JSON.stringify(event));
      if (!behind && socket.bufferedAmount > maxUnreadEventBytes) behind = setTimeout(dropIfStillBehind, unreadGraceMs);
    });
    socket.ping();
    socket.on('close', stop);
    socket.on('error', stop);
  });
}
