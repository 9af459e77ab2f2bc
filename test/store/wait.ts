// Polling with a deadline, so store tests wait for what they need instead of sleeping and hoping.

import { setTimeout as sleep } from 'node:timers/promises';

/** Resolves once `check` returns true; rejects naming `what` if it has not after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 8000,
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
