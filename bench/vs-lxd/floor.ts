// The floor F of an evacuation, measured on this machine in the same run as the evacuations it judges:
// every container stopped cleanly at once, the bytes of all their root filesystems copied by a plain
// `tar | tar` (then synced), and every container started at once, with LXC's own tools and no daemon in
// between. Nothing can evacuate a member faster than that.

import { spawnSync } from 'node:child_process';
import { tarFloor, since } from '../lib.js';
import { runTool } from './command.js';

/** One LXC container the floor stops, copies and starts. */
export interface FloorContainer {
  /** LXC's name for it. */
  lxcName: string;
  /** Its root filesystem (the directory copied). */
  rootfs: string;
}

/** Seconds per part of the floor, and the bytes copied. */
export interface Floor {
  stop: number;
  /** Null when nothing has to be copied (instances that stay where they are). */
  copy: number | null;
  start: number;
  bytes: number;
  total: number;
}

/** State of a container as `lxc-info -s -H` reports it (RUNNING, STOPPED, ...). */
async function lxcState(lxcPath: string, name: string): Promise<string> {
  const r = await runTool('lxc-info', ['-P', lxcPath, '-n', name, '-s', '-H'], { timeoutMs: 15_000 });
  return r.stdout.trim();
}

/** Apparent bytes of the files under `dirs` (`du -sb`). */
function bytesUnder(dirs: string[]): number {
  if (dirs.length === 0) return 0;
  const r = spawnSync('du', ['-s', '-b', '-c', ...dirs], { encoding: 'utf8' });
  const total = /^(\d+)\s+total$/m.exec(r.stdout ?? '');
  return total ? Number(total[1]) : 0;
}

/**
 * Measure the floor on running containers of one lxcpath: stop them all at once (clean, up to
 * `stopTimeoutSeconds` each), copy their root filesystems unless `copy` is false, start them all at once
 * and wait until each runs. They are running again afterwards.
 */
export async function measureFloor(lxcPath: string, containers: FloorContainer[], copy: boolean, stopTimeoutSeconds = 30): Promise<Floor> {
  for (const c of containers) {
    const state = await lxcState(lxcPath, c.lxcName);
    if (state !== 'RUNNING') throw new Error(`floor: container ${c.lxcName} is ${state || 'unknown to LXC'}, not RUNNING`);
  }
  const t0 = process.hrtime.bigint();
  const stops = await Promise.all(containers.map((c) => runTool('lxc-stop', ['-P', lxcPath, '-n', c.lxcName, '-t', String(stopTimeoutSeconds)], { timeoutMs: (stopTimeoutSeconds + 30) * 1000 })));
  const stop = since(t0);
  stops.forEach((r, i) => {
    if (r.code !== 0) throw new Error(`floor: lxc-stop ${containers[i]?.lxcName} exited ${r.code}: ${r.stderr.trim()}`);
  });

  const dirs = containers.map((c) => c.rootfs);
  const bytes = copy ? bytesUnder(dirs) : 0;
  const copied = copy ? await tarFloor(dirs) : null;

  const t1 = process.hrtime.bigint();
  const starts = await Promise.all(
    containers.map(async (c) => {
      // As Roost's driver starts a container: a booted system's umask, detached, then wait until it runs.
      const started = await runTool('sh', ['-c', 'umask 022 && exec lxc-start -P "$1" -n "$2" -d', 'floor', lxcPath, c.lxcName], { timeoutMs: 60_000 });
      if (started.code !== 0) return started;
      return runTool('lxc-wait', ['-P', lxcPath, '-n', c.lxcName, '-s', 'RUNNING', '-t', '30'], { timeoutMs: 40_000 });
    }),
  );
  const start = since(t1);
  starts.forEach((r, i) => {
    if (r.code !== 0) throw new Error(`floor: starting ${containers[i]?.lxcName} failed (${r.code}): ${r.stderr.trim()}`);
  });
  return { stop, copy: copied, start, bytes, total: stop + (copied ?? 0) + start };
}
