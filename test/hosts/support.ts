// Checks the multi-host suites share: an instance's processes, as the member namespaces hold them, and the
// timings the drainer's takeover suites report.

import assert from 'node:assert/strict';
import { waitFor } from '../helpers/cluster.js';
import type { HostsCluster } from '../helpers/hosts.js';
import { getOperation, type OperationView } from '../evacuation/world.js';

/** Assert an instance has exactly one main process on all hosts together, and that it runs on `member`'s host. */
export function assertOneProcess(h: HostsCluster, name: string, member: string): void {
  const found = h.instanceProcesses(name);
  assert.deepEqual(found.map((p) => p.member), [member], `processes of "${name}": ${JSON.stringify(found)}`);
}

/**
 * Wrap a test body (or hook) so that a failure carries the tail of every member's and etcd node's log: a
 * multi-host failure is rarely understood from the assertion alone.
 */
export function loud(cluster: () => HostsCluster | undefined, body: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await body();
    } catch (err) {
      const h = cluster();
      if (!h || !(err instanceof Error)) throw err;
      // The stack too: an AssertionError is printed from its stack, made before the message changed.
      const report = h.report();
      err.message = `${err.message}\n${report}`;
      err.stack = `${err.stack ?? ''}\n${report}`;
      throw err;
    }
  };
}

/** One line of a member's daemon log (pino JSON). */
export interface LogLine {
  member: string;
  time: number;
  msg: string;
  [field: string]: unknown;
}

/** Every JSON line of a member's log (lines that are not JSON, such as a crash's stack, are skipped). */
export function logLines(h: HostsCluster, member: string): LogLine[] {
  const out: LogLine[] = [];
  for (const text of h.log(member).split('\n')) {
    if (!text.startsWith('{')) continue;
    try {
      const line = JSON.parse(text) as { time?: unknown; msg?: unknown };
      if (typeof line.time === 'number' && typeof line.msg === 'string') out.push({ ...line, member, time: line.time, msg: line.msg });
    } catch {
      // a partly written line
    }
  }
  return out;
}

/** The first log line of any of `members` with message `msg`, logged at or after `since` (epoch ms). */
export function firstLogged(h: HostsCluster, members: string[], msg: string, since: number): LogLine | null {
  const found = members.flatMap((m) => logLines(h, m)).filter((l) => l.msg === msg && l.time >= since);
  return found.sort((a, b) => a.time - b.time)[0] ?? null;
}

/** Seconds with one decimal, for timing reports. */
export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** Wait until operation `id` is final, asking member `via` only (another member may be cut off), and return it. */
export async function waitOperationVia(h: HostsCluster, id: string, via: string, timeoutMs: number): Promise<OperationView> {
  let last: OperationView | null = null;
  await waitFor(`operation ${id} ends (asked through ${via})`, async () => {
    last = await getOperation(h, id, via);
    return last !== null && ['Success', 'Failure', 'Cancelled'].includes(last.status);
  }, timeoutMs).catch((err: unknown) => {
    throw new Error(`${err instanceof Error ? err.message : String(err)}; last seen: ${JSON.stringify(last)}`);
  });
  if (last === null) throw new Error(`operation ${id} vanished`);
  return last;
}
