// The events websocket (`/1.0/events`) as a React hook: one connection per subscribing component, opened
// on the page's own origin, reconnected after a drop so a long-open page keeps following the cluster.

import { useEffect, useRef, useState } from 'react';

/** One event as the server sends it (LXD's shape). */
export interface RoostEvent {
  type: string;
  timestamp?: string;
  location?: string;
  metadata: unknown;
}

/** Whether the page currently receives events. */
export type EventsState = 'connecting' | 'open' | 'closed';

/** Delay before reconnecting after a drop: short, since events missed meanwhile are made up by refetching. */
const reconnectMs = 1000;

/**
 * Receive events of `types` while the component is mounted. `onEvent` may change between renders; the
 * latest one is called. `onOpen` runs each time the connection (re)opens: the place to (re)load state
 * whose updates would otherwise have been missed.
 */
export function useEvents(types: string[], onEvent: (event: RoostEvent) => void, onOpen?: () => void): EventsState {
  const [state, setState] = useState<EventsState>('connecting');
  const handlers = useRef({ onEvent, onOpen });
  useEffect(() => {
    handlers.current = { onEvent, onOpen };
  });
  const query = types.join(',');

  useEffect(() => {
    let socket: WebSocket | null = null;
    let retry: number | undefined;
    let stopped = false;
    const connect = (): void => {
      const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
      socket = new WebSocket(`${scheme}://${window.location.host}/1.0/events?type=${encodeURIComponent(query)}`);
      socket.onopen = () => {
        setState('open');
        handlers.current.onOpen?.();
      };
      socket.onmessage = (message: MessageEvent) => {
        if (typeof message.data !== 'string') return;
        let event: RoostEvent;
        try {
          event = JSON.parse(message.data) as RoostEvent;
        } catch {
          return;
        }
        handlers.current.onEvent(event);
      };
      socket.onclose = () => {
        if (stopped) return;
        setState('closed');
        retry = window.setTimeout(connect, reconnectMs);
      };
    };
    connect();
    return () => {
      stopped = true;
      window.clearTimeout(retry);
      socket?.close();
    };
  }, [query]);

  return state;
}
