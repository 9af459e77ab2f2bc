// `/1.0/events`: the websocket of events from every member (the real lxc client waits on it).

import type { Router } from '../server.js';
import { queryParam } from '../request.js';

/** Seconds between keepalive pings (LXD pings every 10 s). */
const pingIntervalMs = 10_000;

/** Register the events websocket. */
export function registerEventRoutes(r: Router): void {
  const m = r.member;
  r.app.get('/1.0/events', { websocket: true }, (socket, req) => {
    const typeParam = queryParam(req, 'type');
    const types = typeParam ? new Set(typeParam.split(',').filter((t) => t !== '')) : null;
    const unsubscribe = m.events.subscribe((event) => {
      if (types && !types.has(event.type)) return;
      if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(event));
    });
    socket.ping();
    const ping = setInterval(() => {
      if (socket.readyState === socket.OPEN) socket.ping();
    }, pingIntervalMs);
    const close = (): void => {
      clearInterval(ping);
      unsubscribe();
    };
    socket.on('close', close);
    socket.on('error', close);
  });
}
