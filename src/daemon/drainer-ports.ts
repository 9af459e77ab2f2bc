// The drainer's ports and the request handler's, implemented with one member's services: the store, the
// membership view, and the typed internal client to the members holding instances.

import type { Member } from './context.js';
import { keys, type EvacuationRecord, type InstanceRecord, type MaintenanceRecord, type MemberRecord, type MoveJournal, type OperationRecord, type VolumeRecord } from '../store/schema.js';
import { attachedVolumes } from '../config/devices.js';
import { planHealing, type HealRelink } from '../evacuation/healing.js';
import type { Compare, Op } from '../store/store.js';
import { readSnapshot } from '../cluster/snapshot.js';
import { RemoteMoveError } from '../cluster/internal.js';
import { PeerError, PeerUnreachableError } from '../cluster/peers.js';
import { configValue } from '../config/keys.js';
import { operationToApi } from '../operations/operations.js';
import { withReservations } from '../evacuation/snapshot.js';
import {
  PortError,
  type ClusterPorts,
  type Fence,
  type HealResult,
  type MaintenanceBook,
  type MaintenancePorts,
  type MemberInfo,
  type MoveOrder,
  type MoveProgress,
  type RecordBook,
  type RequestBook,
  type Stored,
} from '../evacuation/ports.js';
import { requestStateChange } from '../evacuation/requests.js';
import { maintenanceActive, type MaintenanceRequestPorts } from '../evacuation/maintenance-request.js';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { RequestPorts } from '../evacuation/requests.js';
import type { ClusterSnapshot } from '../placement/index.js';

/** A snapshot to plan on: the cluster plus the reservations of every active run but `exceptRun`. */
async function planningSnapshot(m: Member, planned: { run: string | null; member: string | null }): Promise<ClusterSnapshot> {
  const [snapshot, { kvs }] = await Promise.all([readSnapshot(m), m.store.range(keys.evacuations())]);
  return withReservations(snapshot, kvs.map((kv) => JSON.parse(kv.value) as EvacuationRecord), planned);
}

/** Turn what a call to another member threw into the drainer's classification. */
function portError(err: unknown): unknown {
  if (err instanceof RemoteMoveError) return new PortError(err.failure, err.message);
  if (err instanceof PeerUnreachableError) return new PortError('unreachable', err.message);
  if (err instanceof PeerError) return new PortError(err.status === 409 ? 'busy' : 'failed', err.message);
  return err;
}

/** Records of one kind under `prefix`, `key` naming each, with their operations, in this member's store. */
function recordBook<T>(m: Member, prefix: string, key: (name: string) => string, nameOf: (record: T) => string): RecordBook<T> {
  const parse = (kv: { value: string; modRevision: number }): Stored<T> => ({ record: JSON.parse(kv.value) as T, modRevision: kv.modRevision });
  return {
    async get(name) {
      const kv = await m.store.get(key(name));
      return kv ? parse(kv) : null;
    },
    async list() {
      return (await m.store.range(prefix)).kvs.map(parse);
    },
    async watch(onChange) {
      const { revision } = await m.store.range(prefix);
      return m.store.watch(prefix, revision, () => onChange());
    },
    async write(record, operation, fence, modRevision) {
      const compares: Compare[] = [fence];
      if (modRevision !== null) compares.push({ key: key(nameOf(record)), modRevision });
      const ops: Op[] = [{ type: 'put', key: key(nameOf(record)), value: JSON.stringify(record) }];
      if (operation) ops.push({ type: 'put', key: keys.operation(operation.id), value: JSON.stringify(operation) });
      const r = await m.store.txn(compares, ops);
      return { ok: r.succeeded, modRevision: r.revision };
    },
    async operation(id) {
      const kv = await m.store.get(keys.operation(id));
      return kv ? (JSON.parse(kv.value) as OperationRecord) : null;
    },
    publishOperation(op) {
      m.events.publish('operation', operationToApi(op), 'default', op.location);
    },
  };
}

/** The request records (`evacuations/<member>`) and their operations. */
export function requestBook(m: Member): RequestBook {
  return recordBook<EvacuationRecord>(m, keys.evacuations(), keys.evacuation, (r) => r.member);
}

/** The rolling maintenances (`maintenance/<id>`) and their operations. */
export function maintenanceBook(m: Member): MaintenanceBook {
  return recordBook<MaintenanceRecord>(m, keys.maintenances(), keys.maintenance, (r) => r.id);
}

/** What the API's maintenance handler needs, from member `m`. */
export function maintenanceRequestPorts(m: Member): MaintenanceRequestPorts {
  const book = maintenanceBook(m);
  const lock = keys.lock('maintenance');
  return {
    self: m.name,
    async members() {
      return (await m.cluster.members()).map((v) => ({ name: v.record.name, status: v.status }));
    },
    list: () => book.list(),
    async create(record, op, seen) {
      // Every new maintenance rewrites the lock key: two requests that both saw none running cannot both win.
      const lockKv = await m.store.get(lock);
      // One begun after the list was read: look again.
      if (lockKv && !seen.some((x) => x.record.id === lockKv.value)) return false;
      const r = await m.store.txn(
        [{ key: lock, modRevision: lockKv?.modRevision ?? 0 }, ...seen.filter(maintenanceActive).map((s) => ({ key: keys.maintenance(s.record.id), modRevision: s.modRevision }))],
        [
          { type: 'put', key: lock, value: record.id },
          { type: 'put', key: keys.maintenance(record.id), value: JSON.stringify(record) },
          { type: 'put', key: keys.operation(op.id), value: JSON.stringify(op) },
        ],
      );
      return r.succeeded;
    },
    async requestCancel(id) {
      for (let attempt = 0; attempt < 5; attempt++) {
        const stored = await book.get(id);
        if (!stored || !maintenanceActive(stored)) return false;
        const op = await book.operation(stored.record.operation);
        const record = { ...stored.record, cancelRequested: true };
        const ops: Op[] = [{ type: 'put', key: keys.maintenance(id), value: JSON.stringify(record) }];
        if (op && op.status === 'Running') {
          op.status = 'Cancelling';
          op.updatedAt = new Date().toISOString();
          ops.push({ type: 'put', key: keys.operation(op.id), value: JSON.stringify(op) });
        }
        const r = await m.store.txn([{ key: keys.maintenance(id), modRevision: stored.modRevision }], ops);
        if (r.succeeded) {
          if (op) book.publishOperation(op);
          return true;
        }
      }
      return false;
    },
    publishOperation: (op) => book.publishOperation(op),
  };
}

/** What a rolling maintenance needs, from member `m`. */
export function maintenancePorts(m: Member): MaintenancePorts {
  const requests = requestPorts(m);
  return {
    async request(member, action, fence) {
      try {
        const result = await requestStateChange(requests, member, { action }, fence);
        return 'operation' in result ? result.operation.id : null;
      } catch (err) {
        const text = err instanceof Error ? err.message : String(err);
        if (text === 'Cluster member is already evacuated' || text === 'Cluster member is already restored') return null;
        throw err;
      }
    },
    async runCommand(command, timeoutMs, signal) {
      return new Promise((resolve) => {
        const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'], signal, timeout: timeoutMs, killSignal: 'SIGKILL' });
        let output = '';
        const keep = (b: Buffer): void => {
          output = (output + b.toString('utf8')).slice(-4000);
        };
        child.stdout.on('data', keep);
        child.stderr.on('data', keep);
        child.on('error', (err) => resolve({ code: -1, output: `${output}${err.message}` }));
        child.on('close', (code, sig) => resolve({ code: code ?? -1, output: sig ? `${output}(killed by ${sig})` : output }));
      });
    },
    async instancesDown(member) {
      const view = await m.cluster.member(member);
      const { kvs } = await m.store.range(keys.instances());
      const should = kvs
        .map((kv) => JSON.parse(kv.value) as InstanceRecord)
        .filter((r) => r.location === member && r.config['volatile.last_state.power'] === 'RUNNING');
      if (should.length === 0) return [];
      const asked = should.map((r) => ({ project: r.project, name: r.name }));
      const states = member === m.name ? Object.fromEntries(await m.instances.statesOf(asked)) : await m.internal.instanceStates(view.record.address, asked);
      return should.filter((r) => states[`${r.project}/${r.name}`]?.status !== 'Running').map((r) => r.name);
    },
  };
}

/**
 * Heal `member` (see ClusterPorts.heal): in one transaction, only while its record is unchanged and Online and
 * its heartbeat key is absent (and `fence` holds, when the drainer heals), set it Evacuated with what was left
 * in place, relink each instance whose volumes are all on shared pools to the member placement chose (its
 * location and its custom volumes' records, `volatile.evacuate.origin` = the healed member, so its restore
 * brings them home; only while no move of it is journaled and its target still takes instances), and write a
 * finished operation that shows it. Then starts there what ran. Emits `cluster-member-healed`.
 */
export async function healMember(m: Member, member: string, fence: Fence | null): Promise<HealResult> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const kv = await m.store.get(keys.member(member));
    if (!kv) return { healed: false };
    const record = JSON.parse(kv.value) as MemberRecord;
    if (record.state !== 'Online') return { healed: false };
    const plan = planHealing(await planningSnapshot(m, { run: null, member }), member);
    const { kvs } = await m.store.rangeMany([keys.instances(), keys.volumes()]);
    const instanceKvs = new Map<string, { key: string; modRevision: number; record: InstanceRecord }>();
    const volumeKvs: { key: string; record: VolumeRecord }[] = [];
    for (const x of kvs) {
      if (x.key.startsWith(keys.instances())) {
        const r = JSON.parse(x.value) as InstanceRecord;
        instanceKvs.set(`${r.project}/${r.name}`, { key: x.key, modRevision: x.modRevision, record: r });
      } else volumeKvs.push({ key: x.key, record: JSON.parse(x.value) as VolumeRecord });
    }
    const compares: Compare[] = [...(fence ? [fence] : []), { key: kv.key, modRevision: kv.modRevision }, { key: keys.heartbeat(member), modRevision: 0 }];
    const relinkOps: Op[] = [];
    const relinked: HealRelink[] = [];
    for (const r of plan.relinks) {
      const found = instanceKvs.get(`${r.project}/${r.name}`);
      if (!found || found.record.location !== member) continue;
      const config = { ...found.record.config };
      if (!config['volatile.evacuate.origin']) config['volatile.evacuate.origin'] = member;
      relinkOps.push({ type: 'put', key: found.key, value: JSON.stringify({ ...found.record, location: r.target, config }) });
      compares.push({ key: found.key, modRevision: found.modRevision }, { key: keys.move(r.project, r.name), modRevision: 0 });
      // Its custom volumes (all on shared pools, or it would not be relinked) follow it.
      const { devices } = await m.instances.expanded(found.record);
      for (const v of attachedVolumes(devices)) {
        const vol = volumeKvs.find((x) => x.record.project === r.project && x.record.pool === v.pool && x.record.name === v.volume && x.record.location === member);
        if (vol) relinkOps.push({ type: 'put', key: vol.key, value: JSON.stringify({ ...vol.record, location: r.target }) });
      }
      relinked.push(r);
    }
    // Each target as read, and alive on the same lease, at the commit (as a move's commit checks it).
    let targetGone = false;
    for (const target of new Set(relinked.map((r) => r.target))) {
      const [memberKv, heartbeat] = await Promise.all([m.store.get(keys.member(target)), m.store.get(keys.heartbeat(target))]);
      if (!memberKv || !heartbeat) targetGone = true;
      else compares.push({ key: memberKv.key, modRevision: memberKv.modRevision }, { key: heartbeat.key, createRevision: heartbeat.createRevision });
    }
    if (targetGone) continue; // planned on a member that just went away: plan again
    const unreachable = plan.unreachable;
    const moved = relinked.map((r) => ({ name: r.project === 'default' ? r.name : `${r.project}/${r.name}`, target: r.target }));
    const at = new Date().toISOString();
    const op: OperationRecord = {
      id: randomUUID(),
      class: 'task',
      description: 'Evacuating cluster member',
      createdAt: at,
      updatedAt: at,
      status: 'Success',
      resources: { cluster: [`/1.0/cluster/members/${member}`] },
      metadata: { evacuation_progress: 'Healed while offline', roost_healed: { member, unreachable, relinked: moved, stayed: plan.stays } },
      mayCancel: false,
      err: '',
      location: member,
      kind: 'evacuation',
    };
    const next: MemberRecord = { ...record, state: 'Evacuated', healed: { at, unreachable } };
    const r = await m.store.txn(compares, [
      { type: 'put', key: kv.key, value: JSON.stringify(next) },
      { type: 'put', key: keys.operation(op.id), value: JSON.stringify(op) },
      ...relinkOps,
    ]);
    if (r.succeeded) {
      m.events.publish('operation', operationToApi(op), 'default', member);
      m.events.lifecycle('cluster-member-healed', `/1.0/cluster/members/${member}`, { unreachable, relinked: moved }, 'default', member);
      m.log.warn({ member, unreachable, relinked: moved }, `member healed while offline${unreachable.length > 0 ? '; instances on its local storage cannot be reached and stay there until it is restored' : ''}`);
      await startRelinked(m, member, relinked);
      return { healed: true, unreachable, relinked: moved, operation: op.id };
    }
    const hb = await m.store.get(keys.heartbeat(member));
    if (hb) return { healed: false };
    if (fence) {
      const fenceKv = await m.store.get(fence.key);
      if (!fenceKv || ('createRevision' in fence && fenceKv.createRevision !== fence.createRevision)) return { healed: false };
    }
  }
  return { healed: false };
}

/**
 * Start on its new member each relinked instance that ran on the healed one. One that does not start now
 * is recorded RUNNING there (`volatile.last_state.power`), so its member starts it at its next boot.
 */
async function startRelinked(m: Member, healed: string, relinked: HealRelink[]): Promise<void> {
  await Promise.all(
    relinked.map(async (r) => {
      m.events.lifecycle('instance-migrated', `/1.0/instances/${r.name}`, { source: healed, target: r.target, relinked: true }, r.project);
      if (!r.running) return;
      try {
        const view = await m.cluster.member(r.target);
        await m.internal.startInstance(view.record.address, { project: r.project, name: r.name, allowRestoring: false });
      } catch (err) {
        m.log.warn({ err, instance: r.name, target: r.target }, 'a healed instance did not start on its new member');
      }
    }),
  );
}

/** The cluster as the drainer acts on it, from member `m`. */
export function clusterPorts(m: Member): ClusterPorts {
  const address = async (member: string): Promise<string> => (await m.cluster.member(member)).record.address;
  return {
    self: m.name,
    log: m.log,
    snapshot: (planned) => planningSnapshot(m, planned),
    async members(): Promise<MemberInfo[]> {
      return (await m.cluster.members()).map((v) => ({ name: v.record.name, status: v.status, state: v.record.state, lastSeen: v.lastSeen, address: v.record.address, startedAt: v.record.startedAt ?? '' }));
    },
    async transition(member, from, to, fence) {
      for (;;) {
        const kv = await m.store.get(keys.member(member));
        if (!kv) return false;
        const record = JSON.parse(kv.value) as MemberRecord;
        if (!from.includes(record.state)) return false;
        const r = await m.store.txn([fence, { key: kv.key, modRevision: kv.modRevision }], [{ type: 'put', key: kv.key, value: JSON.stringify({ ...record, state: to, healed: to === 'Online' ? undefined : record.healed }) }]);
        if (r.succeeded) return true;
        const fenceKv = await m.store.get(fence.key);
        if (!fenceKv || ('createRevision' in fence && fenceKv.createRevision !== fence.createRevision)) return false;
      }
    },
    async move(holder: string, order: MoveOrder, fence: Fence, signal: AbortSignal, onProgress: (p: MoveProgress) => void) {
      try {
        const fenceBody = 'createRevision' in fence ? { key: fence.key, createRevision: fence.createRevision } : undefined;
        await m.internal.runMove(await address(holder), { ...order, fence: fenceBody }, signal, onProgress);
      } catch (err) {
        throw portError(err);
      }
    },
    async stop(holder, instance, force, signal) {
      try {
        await m.internal.stopInstance(await address(holder), { project: instance.project, name: instance.name, force }, signal);
      } catch (err) {
        throw portError(err);
      }
    },
    async start(holder, instance, allowRestoring) {
      try {
        await m.internal.startInstance(await address(holder), { project: instance.project, name: instance.name, allowRestoring });
      } catch (err) {
        throw portError(err);
      }
    },
    async journals() {
      return (await m.store.range(keys.moves())).kvs.map((kv) => JSON.parse(kv.value) as MoveJournal);
    },
    async location(project, name) {
      const kv = await m.store.get(keys.instance(project, name));
      return kv ? (JSON.parse(kv.value) as InstanceRecord).location : null;
    },
    async settleJournals(journals, fence) {
      const first = journals[0];
      if (!first) return;
      const kvs = await Promise.all(journals.map((j) => m.store.get(keys.move(j.project, j.instance))));
      const live = kvs.filter((kv) => kv !== null && (JSON.parse(kv.value) as MoveJournal).id === first.id);
      if (live.length === 0) return;
      const locations = await Promise.all(journals.map(async (j) => {
        const kv = await m.store.get(keys.instance(j.project, j.instance));
        return kv ? (JSON.parse(kv.value) as InstanceRecord).location : null;
      }));
      const committed = locations.every((l) => l === first.target);
      const target = (await m.cluster.members()).find((v) => v.record.name === first.target);
      const reachable = target !== undefined && target.status !== 'Offline';
      if (committed && reachable) {
        for (const j of journals) {
          if (!j.wasRunning) continue;
          await m.internal.startInstance(target.record.address, { project: j.project, name: j.instance, allowRestoring: true, moveId: j.id });
        }
      } else if (!committed && reachable) {
        await m.internal.moveTarget(target.record.address, first.id).discard({ project: first.project, instances: journals.map((j) => j.instance), volumes: first.volumes });
      }
      // An unreachable target: a committed move's instance starts at the target's next boot (it is recorded
      // RUNNING); an uncommitted copy there is swept at its boot, since no journal names it any more.
      const r = await m.store.txn(
        [fence, ...live.map((kv): Compare => ({ key: (kv as { key: string }).key, modRevision: (kv as { modRevision: number }).modRevision }))],
        live.map((kv): Op => ({ type: 'delete', key: (kv as { key: string }).key })),
      );
      if (r.succeeded) {
        m.log.info({ move: first.id, source: first.source, target: first.target, committed }, 'drainer: settled a move whose source member is gone');
        if (committed) {
          for (const j of journals) m.events.lifecycle('instance-migrated', `/1.0/instances/${j.instance}`, { source: j.source, target: j.target }, j.project);
        }
      }
    },
    canPrecopy(type) {
      try {
        return m.instances.driver(type).capabilities.precopy;
      } catch {
        return false;
      }
    },
    lifecycle(action, source, location) {
      m.events.lifecycle(action, source, {}, 'default', location);
    },
    runFinished: (action, outcome, seconds) => m.metrics.runFinished(action, outcome, seconds),
    async healingThreshold() {
      return Number(configValue('server', await m.cluster.serverConfig(), 'cluster.healing_threshold'));
    },
    heal: (member, fence) => healMember(m, member, fence),
  };
}

/** What the API's request handler needs, from member `m`. */
export function requestPorts(m: Member): RequestPorts {
  const book = requestBook(m);
  return {
    snapshot: (member) => planningSnapshot(m, { run: null, member }),
    async member(name) {
      const view = await m.cluster.member(name);
      return { state: view.record.state, status: view.status, modRevision: view.modRevision };
    },
    async defaultParallel() {
      const value = configValue('server', await m.cluster.serverConfig(), 'cluster.evacuation_parallelism');
      return value === 'auto' ? 'auto' : Number(value);
    },
    current: (member) => book.get(member),
    async begin(member, to, memberRevision, record, requestRevision, op, fence) {
      const kv = await m.store.get(keys.member(member));
      if (!kv || kv.modRevision !== memberRevision) return false;
      const next = { ...(JSON.parse(kv.value) as MemberRecord), state: to };
      const r = await m.store.txn(
        [...(fence ? [fence] : []), { key: kv.key, modRevision: memberRevision }, { key: keys.evacuation(member), modRevision: requestRevision }],
        [
          { type: 'put', key: kv.key, value: JSON.stringify(next) },
          { type: 'put', key: keys.evacuation(member), value: JSON.stringify(record) },
          { type: 'put', key: keys.operation(op.id), value: JSON.stringify(op) },
        ],
      );
      return r.succeeded;
    },
    async requestCancel(member, operation) {
      for (let attempt = 0; attempt < 5; attempt++) {
        const stored = await book.get(member);
        if (!stored || stored.record.operation !== operation || (stored.record.status !== 'pending' && stored.record.status !== 'running')) return false;
        const op = await book.operation(operation);
        const record = { ...stored.record, cancelRequested: true };
        const ops: Op[] = [{ type: 'put', key: keys.evacuation(member), value: JSON.stringify(record) }];
        if (op && op.status === 'Running') {
          op.status = 'Cancelling';
          op.updatedAt = new Date().toISOString();
          ops.push({ type: 'put', key: keys.operation(op.id), value: JSON.stringify(op) });
        }
        const r = await m.store.txn([{ key: keys.evacuation(member), modRevision: stored.modRevision }], ops);
        if (r.succeeded) {
          if (op) book.publishOperation(op);
          return true;
        }
      }
      return false;
    },
    publishOperation: (op) => book.publishOperation(op),
    heal: (member) => healMember(m, member, null),
    operation: (id) => book.operation(id),
  };
}
