// The drainer's ports and the request handler's, implemented with one member's services: the store, the
// membership view, and the typed internal client to the members holding instances.

import type { Member } from './context.js';
import { keys, type EvacuationRecord, type InstanceRecord, type MemberRecord, type MoveJournal, type OperationRecord } from '../store/schema.js';
import type { Compare, Op } from '../store/store.js';
import { readSnapshot } from '../cluster/snapshot.js';
import { RemoteMoveError } from '../cluster/internal.js';
import { PeerError, PeerUnreachableError } from '../cluster/peers.js';
import { configValue } from '../config/keys.js';
import { operationToApi } from '../operations/operations.js';
import { withReservations } from '../evacuation/snapshot.js';
import { PortError, type ClusterPorts, type Fence, type MemberInfo, type MoveOrder, type MoveProgress, type RequestBook, type StoredRequest } from '../evacuation/ports.js';
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

/** The request records and their operations, in this member's store. */
export function requestBook(m: Member): RequestBook {
  const parse = (kv: { value: string; modRevision: number }): StoredRequest => ({ record: JSON.parse(kv.value) as EvacuationRecord, modRevision: kv.modRevision });
  return {
    async get(member) {
      const kv = await m.store.get(keys.evacuation(member));
      return kv ? parse(kv) : null;
    },
    async list() {
      return (await m.store.range(keys.evacuations())).kvs.map(parse);
    },
    async watch(onChange) {
      const { revision } = await m.store.range(keys.evacuations());
      return m.store.watch(keys.evacuations(), revision, () => onChange());
    },
    async write(record, operation, fence, modRevision) {
      const compares: Compare[] = [fence];
      if (modRevision !== null) compares.push({ key: keys.evacuation(record.member), modRevision });
      const ops: Op[] = [{ type: 'put', key: keys.evacuation(record.member), value: JSON.stringify(record) }];
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

/** The cluster as the drainer acts on it, from member `m`. */
export function clusterPorts(m: Member): ClusterPorts {
  const address = async (member: string): Promise<string> => (await m.cluster.member(member)).record.address;
  return {
    self: m.name,
    log: m.log,
    snapshot: (planned) => planningSnapshot(m, planned),
    async members(): Promise<MemberInfo[]> {
      return (await m.cluster.members()).map((v) => ({ name: v.record.name, status: v.status, address: v.record.address }));
    },
    async transition(member, from, to, fence) {
      for (;;) {
        const kv = await m.store.get(keys.member(member));
        if (!kv) return false;
        const record = JSON.parse(kv.value) as MemberRecord;
        if (!from.includes(record.state)) return false;
        const r = await m.store.txn([fence, { key: kv.key, modRevision: kv.modRevision }], [{ type: 'put', key: kv.key, value: JSON.stringify({ ...record, state: to }) }]);
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
      return Number(configValue('server', await m.cluster.serverConfig(), 'cluster.evacuation_parallelism'));
    },
    current: (member) => book.get(member),
    async begin(member, to, memberRevision, record, requestRevision, op) {
      const kv = await m.store.get(keys.member(member));
      if (!kv || kv.modRevision !== memberRevision) return false;
      const next = { ...(JSON.parse(kv.value) as MemberRecord), state: to };
      const r = await m.store.txn(
        [{ key: kv.key, modRevision: memberRevision }, { key: keys.evacuation(member), modRevision: requestRevision }],
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
  };
}
