// Settings of one roostd process, read from its environment: timings that tests shorten and operators
// rarely need to touch. They are not cluster configuration (`keys.ts`), which every member shares.
//
//   ROOST_PEER_TIMEOUT_MS         how long a member waits for another to start answering an ordinary
//                                 request (default 30000); calls that wait on slow work wait longer
//   ROOST_MOVE_SWEEP_INTERVAL_MS  how often a member removes what moves that no longer exist left on it
//                                 (default 60000)
//   ROOST_UI_DIR                  the built web UI that `/ui/` serves (default: `dist/ui` of this checkout)

import { fileURLToPath } from 'node:url';

/** Milliseconds from environment variable `name`, or `fallback` when it is unset or not a positive number. */
function millisecondsFrom(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text.trim() === '') return fallback;
  const value = Number(text);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

/** How long a member waits for another member to start answering an ordinary request (ms). */
export function peerTimeoutMs(): number {
  return millisecondsFrom('ROOST_PEER_TIMEOUT_MS', 30_000);
}

/** How often a member sweeps away the copies and staging that moves no longer journaled left on it (ms). */
export function moveSweepIntervalMs(): number {
  return millisecondsFrom('ROOST_MOVE_SWEEP_INTERVAL_MS', 60_000);
}

/** The folder of the built web UI that `/ui/` serves: `ROOST_UI_DIR`, else `dist/ui` beside the sources. */
export function uiDir(): string {
  const dir = process.env.ROOST_UI_DIR;
  if (dir !== undefined && dir.trim() !== '') return dir;
  // Two levels below the package root both as sources (src/config) and compiled (dist/config).
  return fileURLToPath(new URL('../../dist/ui/', import.meta.url));
}
