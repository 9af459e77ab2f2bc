// The world the evacuation suites build and check: workloads that keep writing into their root
// volume, seeded volume data, checksums that prove bytes survived a move, "exactly one place" checks
// (records, volume directories and processes), leftovers of moves, member states, operations and
// events. Everything waits by polling with a deadline, never by sleeping.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RoostEvent } from '../../src/client/client.js';
import { keys, type EvacuationRecord, type MoveJournal } from '../../src/store/schema.js';
import { processAlive, sha256Tree, waitFor, type InstanceView, type RawResponse, type ClusterView } from '../helpers/cluster.js';
import type { EvacuationProgress } from '../../src/wire/evacuation.js';

/** The file every workload appends its counter to, in its root volume. */
export const dataFile = 'data.log';

/**
 * A workload that appends a counter line to `data.log` in its root volume 20 times a second, going on
 * from the last line after a restart (so the file stays 1..N with no gap or repeat if no byte is lost).
 * On SIGTERM it waits `termSleep` seconds before exiting: a slow clean shutdown.
 */
export function writerCommand(termSleep = 0): string {
  const onTerm = termSleep > 0 ? `sleep ${termSleep}; exit 0` : 'exit 0';
  return `trap '${onTerm}' TERM; n=$(tail -n 1 ${dataFile} 2>/dev/null); n=\${n:-0}; while true; do n=$((n+1)); echo $n >> ${dataFile}; sleep 0.05; done`;
}

/** Fill a volume directory with data to move: a random payload, a small tree and a symlink. */
export async function seedVolume(dir: string, payloadBytes: number, label: string): Promise<void> {
  await mkdir(path.join(dir, 'etc', 'deep'), { recursive: true });
  await writeFile(path.join(dir, 'payload.bin'), randomBytes(payloadBytes));
  await writeFile(path.join(dir, 'etc', 'hostname'), `${label}\n`);
  await writeFile(path.join(dir, 'etc', 'deep', 'empty'), '');
  await symlink('etc/hostname', path.join(dir, 'hostname.link'));
}

/** How to create a test instance. */
export interface WorkloadOptions {
  target: string;
  /** Start it (default true). */
  start?: boolean;
  /** Seconds its clean shutdown takes. */
  termSleep?: number;
  /** Bytes of random payload in its root volume (default 64 KiB). */
  payloadBytes?: number;
  config?: Record<string, string>;
  devices?: Record<string, Record<string, string>>;
}

/** Create an instance running `writerCommand`, seed its root volume, and start it unless told not to. */
export async function launchWorkload(c: ClusterView, name: string, o: WorkloadOptions): Promise<void> {
  await c.launch(name, { target: o.target, start: false, command: writerCommand(o.termSleep ?? 0), config: o.config, devices: o.devices });
  await seedVolume(c.instanceDir(o.target, name), o.payloadBytes ?? 64 * 1024, name);
  if (o.start !== false) await setPower(c, name, 'start');
}

/** Start or stop an instance through the API and wait for it. */
export async function setPower(c: ClusterView, name: string, action: 'start' | 'stop', via?: string): Promise<void> {
  const member = via ?? (await c.instance(name, firstUp(c))).location;
  await c.client(member).runAsync('PUT', `/1.0/instances/${name}/state`, { action, timeout: 10 });
}

/** Create a custom volume on `member` and seed it. */
export async function createVolume(c: ClusterView, member: string, name: string, payloadBytes = 128 * 1024): Promise<void> {
  await c.client(member).request('POST', `/1.0/storage-pools/default/volumes/custom?target=${member}`, { name });
  await seedVolume(c.volumeDir(member, name), payloadBytes, name);
}

/** The first member whose daemon runs (to ask questions through). */
export function firstUp(c: ClusterView): string {
  const up = c.names.find((m) => c.pid(m) !== null);
  if (!up) throw new Error('no member daemon is running');
  return up;
}

/** What an instance's root volume held at one moment: a checksum of everything but the log, and the log. */
export interface InstanceData {
  name: string;
  fixed: string;
  log: string;
}

/** Where the suites attach custom volumes in an instance: a link the driver points at this member's copy. */
export const volumeMount = 'mnt';

/** A disk device attaching custom volume `volume` at `volumeMount`. */
export function volumeDisk(volume: string): Record<string, string> {
  return { type: 'disk', pool: 'default', source: volume, path: volumeMount };
}

/** The log grows while the instance runs, and the mount link names the member's own path: both are left out. */
const notLog = (p: string): boolean => p === dataFile || p === volumeMount;

/** Read an instance's data where the store says it lives. */
export async function readData(c: ClusterView, name: string, via = firstUp(c)): Promise<InstanceData> {
  const { location } = await c.instance(name, via);
  const dir = c.instanceDir(location, name);
  return { name, fixed: await sha256Tree(dir, notLog), log: await readFile(path.join(dir, dataFile), 'utf8').catch(() => '') };
}

/** Read the data of several instances, keyed by name. */
export async function readAll(c: ClusterView, names: string[], via = firstUp(c)): Promise<Map<string, InstanceData>> {
  const out = new Map<string, InstanceData>();
  for (const n of names) out.set(n, await readData(c, n, via));
  return out;
}

/**
 * Assert that no byte of `before` was lost: everything but the log is identical, the log still starts
 * with what it held and counts 1..N without a gap or a repeat. With `exact` (an instance that did not
 * run since), the log is identical too.
 */
export function assertDataIntact(before: InstanceData, after: InstanceData, exact: boolean): void {
  assert.equal(after.fixed, before.fixed, `the bytes of "${before.name}" changed`);
  if (exact) assert.equal(after.log, before.log, `the log of "${before.name}" changed although it did not run`);
  else assert.ok(after.log.startsWith(before.log), `the log of "${before.name}" lost lines it had before`);
  const lines = after.log.split('\n').filter((l) => l !== '');
  lines.forEach((line, i) => assert.equal(line, String(i + 1), `line ${i + 1} of the log of "${before.name}" is "${line}"`));
}

/** Check every instance of `before` against its current data. `ran` names those that may have written since. */
export async function assertAllIntact(c: ClusterView, before: Map<string, InstanceData>, ran: Set<string>, via = firstUp(c)): Promise<void> {
  for (const [name, data] of before) assertDataIntact(data, await readData(c, name, via), !ran.has(name));
}

/** Members whose pool holds a root volume directory of `name`. */
export function volumeHolders(c: ClusterView, name: string): string[] {
  return c.names.filter((m) => existsSync(c.instanceDir(m, name)));
}

/** Members on which a process of `name` runs (by the pid file its driver keeps there). */
export function runningOn(c: ClusterView, name: string): string[] {
  return c.names.filter((m) => {
    try {
      const { pid } = JSON.parse(readFileSync(path.join(c.memberDir(m), 'instances', `default_${name}`, 'pid.json'), 'utf8')) as { pid: number };
      return processAlive(pid);
    } catch {
      return false;
    }
  });
}

/**
 * Assert an instance is in exactly one place: the member its record names is the only one with its
 * volume directory, and it runs there (or nowhere) as `running` says. Returns its view.
 */
export async function assertOnePlace(c: ClusterView, name: string, expect: { running?: boolean; location?: string } = {}, via = firstUp(c)): Promise<InstanceView> {
  const view = await c.instance(name, via);
  assert.deepEqual(volumeHolders(c, name), [view.location], `volume directories of "${name}" (record says ${view.location})`);
  const running = runningOn(c, name);
  assert.ok(running.length <= 1, `"${name}" runs on ${running.join(' and ')}`);
  if (running.length === 1) assert.deepEqual(running, [view.location], `"${name}" runs away from its location`);
  if (expect.location !== undefined) assert.equal(view.location, expect.location, `location of "${name}"`);
  if (expect.running !== undefined) {
    assert.equal(view.status, expect.running ? 'Running' : 'Stopped', `status of "${name}"`);
    assert.equal(running.length, expect.running ? 1 : 0, `processes of "${name}"`);
  }
  return view;
}

/** Assert no move is journaled and no member has staging directories left. */
export async function assertNoLeftovers(c: ClusterView): Promise<void> {
  const store = await c.store();
  const { kvs } = await store.range(keys.moves());
  assert.deepEqual(kvs.map((kv) => kv.key), [], 'move journal entries left');
  for (const m of c.names) {
    const left = await readdir(c.stagingDir(m)).catch(() => []);
    assert.deepEqual(left, [], `staging directories left on ${m}`);
  }
}

/** Journal entries of moves in flight. */
export async function journaledMoves(c: ClusterView): Promise<MoveJournal[]> {
  const { kvs } = await (await c.store()).range(keys.moves());
  return kvs.map((kv) => JSON.parse(kv.value) as MoveJournal);
}

/** The durable record `evacuations/<member>`, if any. */
export async function evacuationRecord(c: ClusterView, member: string): Promise<EvacuationRecord | null> {
  const kv = await (await c.store()).get(keys.evacuation(member));
  return kv ? (JSON.parse(kv.value) as EvacuationRecord) : null;
}

/** A member as `GET /1.0/cluster/members/<m>` shows it. */
export interface MemberInfo {
  server_name: string;
  status: string;
  message: string;
  config: Record<string, string>;
}

/** A member's view, asked through `via`. */
export async function memberInfo(c: ClusterView, member: string, via = firstUp(c)): Promise<MemberInfo> {
  return (await c.client(via).get(`/1.0/cluster/members/${member}`)) as MemberInfo;
}

/** Wait until a member shows `status`. */
export async function waitStatus(c: ClusterView, member: string, status: string, timeoutMs = 20_000, via?: string): Promise<void> {
  await waitFor(`${member} is ${status}`, async () => (await memberInfo(c, member, via ?? firstUp(c))).status === status, timeoutMs);
}

/** Set member config keys (empty values unset). */
export async function setMemberConfig(c: ClusterView, member: string, config: Record<string, string>): Promise<void> {
  await c.client(firstUp(c)).request('PATCH', `/1.0/cluster/members/${member}`, { config });
}

/** Samples a member's status until stopped, keeping each change (to prove the order of states). */
export class StatusRecorder {
  readonly seen: string[] = [];
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();

  private constructor(
    private readonly c: ClusterView,
    private readonly member: string,
    private readonly via: string,
  ) {}

  /** Start sampling; resolves once the state before anything else happens is recorded. */
  static async start(c: ClusterView, member: string, via: string): Promise<StatusRecorder> {
    const r = new StatusRecorder(c, member, via);
    await r.sample();
    r.loop = r.run();
    return r;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      await this.sample();
      // Unreferenced: a test that failed before calling stop() must not keep its process alive forever.
      await new Promise((r) => setTimeout(r, 15).unref());
    }
  }

  private async sample(): Promise<void> {
    try {
      const { status } = await memberInfo(this.c, this.member, this.via);
      if (this.seen[this.seen.length - 1] !== status) this.seen.push(status);
    } catch {
      // The member asked may be restarting; keep sampling.
    }
  }

  /** Stop sampling (after one last sample) and return the states seen, in order. */
  async stop(): Promise<string[]> {
    if (!this.stopped) {
      this.stopped = true;
      await this.loop;
      await this.sample();
    }
    return this.seen;
  }
}

/** An operation as the API shows it. */
export interface OperationView {
  id: string;
  class: string;
  description: string;
  status: string;
  status_code: number;
  err: string;
  location: string;
  may_cancel: boolean;
  metadata: Record<string, unknown> | null;
  resources: Record<string, string[]> | null;
}

/** `POST /1.0/cluster/members/<member>/state` through `via`, answered as is. */
export function postState(c: ClusterView, member: string, body: Record<string, unknown>, via = member): Promise<RawResponse> {
  return c.raw(via, 'POST', `/1.0/cluster/members/${member}/state`, { json: body });
}

/** Start an evacuate or restore and return its operation id (asserting LXD's async envelope). */
export async function beginState(c: ClusterView, member: string, body: Record<string, unknown>, via = member): Promise<string> {
  const res = await postState(c, member, body, via);
  assert.equal(res.status, 202, `${String(body.action)} of ${member}: ${res.text}`);
  assert.equal(res.body?.type, 'async');
  assert.equal(res.body?.status_code, 100);
  const url = res.body?.operation ?? '';
  assert.match(url, /^\/1\.0\/operations\/[0-9a-f-]+$/);
  assert.equal(res.headers.location, url);
  return url.split('/').pop() ?? '';
}

/** One operation, or null if unknown. */
export async function getOperation(c: ClusterView, id: string, via = firstUp(c)): Promise<OperationView | null> {
  const res = await c.raw(via, 'GET', `/1.0/operations/${id}`);
  return res.status === 200 ? (res.body?.metadata as OperationView) : null;
}

/** Wait until an operation is final and return it (asked through any running member, so a restart is no problem). */
export async function waitOperation(c: ClusterView, id: string, timeoutMs = 30_000): Promise<OperationView> {
  let last: OperationView | null = null;
  try {
    await waitFor(`operation ${id} ends`, async () => {
      last = await getOperation(c, id);
      return last !== null && ['Success', 'Failure', 'Cancelled'].includes(last.status);
    }, timeoutMs);
  } catch (err) {
    // What each member was doing meanwhile (an operation stuck in Cancelling waits on something it logs).
    const logs = c.names.map((m) => `--- ${m} ---\n${c.logTail(m, 25).split('\n').map((l) => (l.length > 400 ? `${l.slice(0, 400)}…` : l)).join('\n')}`).join('\n');
    throw new Error(`${err instanceof Error ? err.message : String(err)}; last seen: ${JSON.stringify(last)}\n${logs}`);
  }
  if (last === null) throw new Error(`operation ${id} vanished`);
  return last;
}

/** Run an evacuate or restore to the end, asserting it succeeded; returns the operation. */
export async function runState(c: ClusterView, member: string, body: Record<string, unknown>, via = member, timeoutMs = 30_000): Promise<OperationView> {
  const id = await beginState(c, member, body, via);
  const op = await waitOperation(c, id, timeoutMs);
  assert.equal(op.status, 'Success', `${String(body.action)} of ${member} failed: ${op.err}\n${c.logTail(member)}`);
  return op;
}

/** Events collected from one member's `/1.0/events`. */
export interface EventLog {
  events: RoostEvent[];
  close(): void;
}

/** Subscribe to a member's event stream (all types) and keep everything. */
export async function recordEvents(c: ClusterView, via: string, types: string[] = []): Promise<EventLog> {
  const events: RoostEvent[] = [];
  const sub = await c.client(via).events(types, (e) => events.push(e));
  return { events, close: () => sub.close() };
}

/** Lifecycle events of `action` (optionally with `source`). */
export function lifecycle(log: EventLog, action: string, source?: string): RoostEvent[] {
  return log.events.filter((e) => {
    if (e.type !== 'lifecycle') return false;
    const meta = e.metadata as { action?: string; source?: string };
    return meta.action === action && (source === undefined || meta.source === source);
  });
}

/** Every metadata the event stream showed for operation `id`, in order. */
export function operationUpdates(log: EventLog, id: string): Record<string, unknown>[] {
  return log.events
    .filter((e) => e.type === 'operation' && (e.metadata as { id?: string }).id === id)
    .map((e) => ((e.metadata as { metadata?: Record<string, unknown> | null }).metadata ?? {}));
}

/** The structured progress of a run (`roost_evacuation`), as the server defines it. */
export type RunProgress = EvacuationProgress;

/** The `roost_evacuation` object of operation metadata (asserting it is one). */
export function runProgress(metadata: Record<string, unknown> | null): RunProgress {
  const p = metadata?.roost_evacuation;
  assert.ok(p !== null && typeof p === 'object' && !Array.isArray(p), `roost_evacuation is an object, not ${JSON.stringify(p)}`);
  return p as RunProgress;
}

/**
 * The whole progress of a member's running or last run, as any member answers it from the request record
 * (the operation's own updates list only what changed in each).
 */
export async function memberProgress(c: ClusterView, member: string, via = firstUp(c)): Promise<RunProgress | null> {
  const state = (await c.client(via).get(`/1.0/cluster/members/${member}/state`)) as { roost_evacuation?: RunProgress | null };
  return state.roost_evacuation ?? null;
}

/** Config of every instance named, from one listing. */
export async function instancesByName(c: ClusterView, via = firstUp(c)): Promise<Map<string, InstanceView>> {
  const list = (await c.client(via).get('/1.0/instances?recursion=1')) as InstanceView[];
  return new Map(list.map((i) => [i.name, i]));
}

/**
 * Everything a refused request must leave alone, as one string: instance, volume, member, move,
 * evacuation and operation records, the server config, every member's volume and staging
 * directories, and which instance processes run.
 */
export async function fingerprint(c: ClusterView): Promise<string> {
  const store = await c.store();
  const { kvs } = await store.rangeMany([keys.instances(), keys.volumes(), keys.members(), keys.serverConfig(), keys.moves(), keys.evacuations(), keys.operations()]);
  const records = kvs.map((kv) => `${kv.key}=${kv.value}`);
  const dirs: string[] = [];
  for (const m of c.names) {
    for (const sub of ['containers', 'custom', '.staging']) {
      for (const e of await readdir(path.join(c.memberDir(m), 'storage-pools', 'default', sub)).catch(() => [])) dirs.push(`${m}/${sub}/${e}`);
    }
    for (const e of await readdir(path.join(c.memberDir(m), 'instances')).catch(() => [])) {
      const name = e.slice(e.indexOf('_') + 1);
      if (runningOn(c, name).includes(m)) {
        const pid = (JSON.parse(readFileSync(path.join(c.memberDir(m), 'instances', e, 'pid.json'), 'utf8')) as { pid: number }).pid;
        dirs.push(`${m}/running/${name}/${pid}`);
      }
    }
  }
  return JSON.stringify({ records, dirs: dirs.sort() }, null, 1);
}

/** Assert an LXD error envelope with HTTP status = error_code and the message (exact or matching). */
export function assertError(res: RawResponse, status: number, message: string | RegExp): void {
  assert.equal(res.status, status, `HTTP status of ${res.text}`);
  assert.ok(res.body, `an envelope, not ${res.text}`);
  assert.equal(res.body.type, 'error');
  assert.equal(res.body.error_code, status);
  if (typeof message === 'string') assert.equal(res.body.error, message);
  else assert.match(res.body.error, message);
}
