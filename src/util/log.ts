// The daemon's structured logger (pino), one per process.

import { pino, type Logger } from 'pino';

export type { Logger };

/** Create the process logger; writes JSON lines to stderr, level from ROOST_LOG_LEVEL (default info). */
export function createLogger(name: string): Logger {
  return pino({ name, level: process.env.ROOST_LOG_LEVEL ?? 'info' }, pino.destination(2));
}
