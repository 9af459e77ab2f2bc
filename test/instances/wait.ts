// Waiting on a condition with a deadline: tests poll for what they expect instead of sleeping.

import type { ChildProcess } from 'node:child_process';
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

/** The first line a child prints, with a deadline. */
export async function firstLine(child: ChildProcess, timeoutMs: number): Promise<string> {
  let buffered = '';
  const stdout = child.stdout;
  if (!stdout) throw new Error('child has no stdout pipe');
  const line = new Promise<string>((resolve, reject) => {
    stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const end = buffered.indexOf('\n');
      if (end >= 0) resolve(buffered.slice(0, end));
    });
    child.once('exit', (code, sig) => reject(new Error(`child exited (${sig ?? code}) before printing a line`)));
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no line from child within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([line, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
