// `POST /1.0/cluster/maintenance` on any member: validate the request, then write the maintenance record and
// its operation in one transaction. The drainer, wherever it runs, carries it out (see maintenance.ts).

import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { errors } from '../errors/index.js';
import type { MaintenanceRecord, MemberStatus, OperationRecord } from '../store/schema.js';
import { parseSeconds } from '../util/units.js';
import type { Stored } from './ports.js';

/** How long a member may take to come back, when the request does not say (LXD users reboot hosts: minutes). */
export const defaultWaitOnlineSeconds = 300;

const requestSchema = z
  .object({
    members: z.array(z.string().min(1)).optional(),
    all: z.boolean().optional(),
    exec: z.string().optional(),
    wait_online: z.union([z.string(), z.number().positive()]).optional(),
    concurrency: z.number().int().min(1).max(64).optional(),
  })
  .strict();

/** What the request handler needs, and nothing more. */
export interface MaintenanceRequestPorts {
  /** The member answering the request (the operation's location). */
  readonly self: string;
  /** Every member with its status, in the cluster's order. */
  members(): Promise<{ name: string; status: MemberStatus }[]>;
  /** Every maintenance record. */
  list(): Promise<Stored<MaintenanceRecord>[]>;
  /** Write the record and its operation in one transaction, only if no other maintenance began meanwhile. */
  create(record: MaintenanceRecord, op: OperationRecord, seen: Stored<MaintenanceRecord>[]): Promise<boolean>;
  /** Set the cancel flag of a running maintenance (and its operation's status). */
  requestCancel(id: string): Promise<boolean>;
  /** Publish an operation as an `operation` event. */
  publishOperation(op: OperationRecord): void;
}

/** True while a maintenance is recorded and not over. */
export function maintenanceActive(stored: Stored<MaintenanceRecord>): boolean {
  return stored.record.status === 'pending' || stored.record.status === 'running';
}

/** Handle `POST /1.0/cluster/maintenance`: the operation of a newly recorded maintenance. */
export async function requestMaintenance(ports: MaintenanceRequestPorts, body: unknown): Promise<OperationRecord> {
  const parsed = requestSchema.safeParse(body ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw errors.badRequest(`Invalid request${issue && issue.path.length > 0 ? ` (field "${issue.path.join('.')}")` : ''}: ${issue?.message ?? 'malformed'}`);
  }
  const req = parsed.data;
  const listed = req.members !== undefined && req.members.length > 0;
  if (listed === (req.all === true)) throw errors.badRequest('Give either "members" (a list of member names) or "all": true');
  let waitOnlineSeconds = defaultWaitOnlineSeconds;
  if (req.wait_online !== undefined) {
    const s = typeof req.wait_online === 'number' ? req.wait_online : parseSeconds(req.wait_online);
    if (s === null || s <= 0) throw errors.badRequest(`Invalid wait_online "${String(req.wait_online)}" (a duration such as 300, 90s or 5m)`);
    waitOnlineSeconds = s;
  }
  const exec = req.exec?.trim() ?? '';

  const members = await ports.members();
  let names: string[];
  if (listed) {
    names = [];
    for (const name of req.members ?? []) {
      if (names.includes(name)) throw errors.badRequest(`Member "${name}" is listed twice`);
      if (!members.some((x) => x.name === name)) throw errors.notFound(`Cluster member "${name}" not found`);
      names.push(name);
    }
  } else {
    names = members.map((x) => x.name);
  }
  if (names.length === members.length && members.length < 2) throw errors.badRequest('A rolling maintenance needs another member to move the instances to');
  const offline = names.filter((n) => members.find((x) => x.name === n)?.status === 'Offline');
  if (offline.length > 0) throw errors.badRequest(`Cannot maintain offline cluster member${offline.length > 1 ? 's' : ''} ${offline.map((n) => `"${n}"`).join(', ')}`);
  const concurrency = req.concurrency ?? 1;
  if (concurrency >= members.length) throw errors.badRequest(`A concurrency of ${concurrency} would leave no member to move the instances to (the cluster has ${members.length})`);

  for (let attempt = 0; attempt < 5; attempt++) {
    const seen = await ports.list();
    const running = seen.find(maintenanceActive);
    if (running) throw errors.conflict(`A rolling maintenance is already running (operation ${running.record.operation})`);
    const record: MaintenanceRecord = {
      id: randomUUID(),
      operation: randomUUID(),
      status: 'pending',
      startedAt: new Date().toISOString(),
      finishedAt: null,
      cancelRequested: false,
      term: 0,
      exec: exec === '' ? null : exec,
      waitOnlineSeconds,
      concurrency,
      members: names.map((name) => ({ name, step: 'pending' })),
      error: '',
    };
    const op = newOperation(record, ports.self);
    if (await ports.create(record, op, seen)) {
      ports.publishOperation(op);
      return op;
    }
  }
  throw errors.conflict('The maintenances changed while this one was being recorded; try again');
}

/** The operation of a maintenance (`resources`: the members it takes in turn). */
function newOperation(record: MaintenanceRecord, location: string): OperationRecord {
  const now = new Date().toISOString();
  return {
    id: record.operation,
    class: 'task',
    description: 'Rolling maintenance of cluster members',
    createdAt: now,
    updatedAt: now,
    status: 'Running',
    resources: { cluster: record.members.map((e) => `/1.0/cluster/members/${e.name}`) },
    metadata: {
      maintenance_progress: '',
      roost_maintenance: { status: record.status, members: record.members, error: '' },
    },
    mayCancel: true,
    err: '',
    location,
    kind: 'maintenance',
  };
}
