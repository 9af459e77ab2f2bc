// Prerequisites of tests that need software a fresh machine may lack (LXC, etcd, the lxc client).
// Run by hand, a missing prerequisite skips the test with the install command; under CI it fails.

import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

/** True if `command` is on PATH. */
export function hasCommand(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Returns true if the test can go on. Otherwise skips it (by hand) or throws (under CI=true), naming
 * what is missing and how to install it.
 */
export function requireCommand(t: TestContext, command: string, install: string): boolean {
  if (hasCommand(command)) return true;
  const reason = `${command} is not installed (install it with: ${install})`;
  if (process.env.CI === 'true') throw new Error(`missing prerequisite under CI: ${reason}`);
  t.skip(reason);
  return false;
}

/** True if running as root (LXC containers need it). */
export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * Returns true if the test runs as root (mounting a tmpfs, chattr). Otherwise skips it (by hand) or throws
 * (under CI=true), naming what is missing.
 */
export function requireRoot(t: TestContext, why: string): boolean {
  if (isRoot()) return true;
  const reason = `needs root (${why})`;
  if (process.env.CI === 'true') throw new Error(`missing prerequisite under CI: ${reason}`);
  t.skip(reason);
  return false;
}
