// A btrfs file system on a loop file, for tests and benchmarks of the btrfs pool: made in a fresh temporary
// directory, removed whole (unmounted, loop device released, files gone) by `remove`.

import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { hasCommand, isRoot } from './prereq.js';

/** A mounted btrfs file system on a loop file. */
export interface LoopBtrfs {
  /** Where it is mounted. */
  mount: string;
  /** Unmount it, release its loop device and remove its files; safe to call twice. */
  remove(): Promise<void>;
}

/** Why btrfs on a loop file cannot be made here, or null if it can. */
export function btrfsMissing(): string | null {
  if (!isRoot()) return 'needs root (mounting a loop file)';
  if (!hasCommand('mkfs.btrfs') || !hasCommand('btrfs')) return 'mkfs.btrfs and btrfs are not installed (install them with: apt-get install btrfs-progs)';
  if (!hasCommand('losetup')) return 'losetup is not installed (install it with: apt-get install mount)';
  return null;
}

/**
 * Returns true if the test can go on. Otherwise skips it (by hand) or throws (under CI=true), naming what is
 * missing and how to install it.
 */
export function requireBtrfs(t: TestContext): boolean {
  const missing = btrfsMissing();
  if (missing === null) return true;
  if (process.env.CI === 'true') throw new Error(`missing prerequisite under CI: ${missing}`);
  t.skip(missing);
  return false;
}

function run(command: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}`.trim() };
}

/** Make a btrfs file system of `size` (`truncate` syntax, e.g. `300M`) on a loop file and mount it. */
export async function makeLoopBtrfs(size = '300M'): Promise<LoopBtrfs> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'roost-btrfs-'));
  const image = path.join(dir, 'pool.img');
  const mount = path.join(dir, 'mnt');
  let loop: string | null = null;
  let mounted = false;
  const remove = async (): Promise<void> => {
    if (mounted) {
      // A process that still has a file open there (a test that failed half way) keeps it busy for a moment.
      let out = '';
      for (let attempt = 0; attempt < 50; attempt++) {
        const r = run('umount', [mount]);
        if (r.ok) break;
        out = r.out;
        if (attempt === 49) run('umount', ['-l', mount]);
        else await new Promise((resolve) => setTimeout(resolve, 100));
      }
      if (out !== '') console.error(`umount ${mount}: ${out}`);
      mounted = false;
    }
    if (loop !== null) {
      run('losetup', ['-d', loop]); // already released by the unmount (autoclear) unless that failed
      loop = null;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const steps: [string, string[]][] = [
      ['truncate', ['-s', size, image]],
      ['mkfs.btrfs', ['-q', image]],
      ['mkdir', [mount]],
    ];
    for (const [command, args] of steps) {
      const r = run(command, args);
      if (!r.ok) throw new Error(`${command} failed: ${r.out}`);
    }
    const attach = run('losetup', ['--find', '--show', image]);
    if (!attach.ok) throw new Error(`losetup failed (no loop device support?): ${attach.out}`);
    loop = attach.out.split('\n')[0] ?? null;
    const m = run('mount', ['-t', 'btrfs', loop ?? image, mount]);
    if (!m.ok) throw new Error(`mount of a btrfs loop file failed: ${m.out}`);
    mounted = true;
    return { mount, remove };
  } catch (err) {
    await remove();
    throw err;
  }
}
