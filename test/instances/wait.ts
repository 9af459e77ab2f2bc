// Waiting on a condition with a deadline: tests poll for what they expect instead of sleeping.

import { setTimeout as delay } from 'node:timers/promises';

/** Polls `check` until it returns true; fails naming `what` if `timeoutMs` passes first. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await delay(20);
  }
}
