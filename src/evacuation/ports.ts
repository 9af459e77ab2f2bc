// What the drainer needs from the rest of Roost, and nothing more: the engine sees these small interfaces,
// never the daemon's service bag, the API or its errors. The daemon implements them (daemon/drainer-ports.ts);
// tests and the scale simulation can too.

import type { Compare, Watch } from '../store/store.js';
import type { EvacuationRecord, MaintenanceRecord, MemberStatus, MoveJournal, OperationRecord, StoredMemberState } from '../store/schema.js';
import type { ClusterSnapshot } from '../placement/index.js';
import type { Logger } from '../util/log.js';

/** The fence of the drainer's term: every write it makes carries this compare. */
export type Fence = Compare;

/** A record with the store revision it was read at. */
export interface Stored<T> {
  record: T;
  modRevision: number;
}

/** One kind of durable record the drainer carries out (requests, maintenances), and the operations that show them. */
export interface RecordBook<T> {
  /** One record by its key (a request: the member's name; a maintenance: its id). */
  get(key: string): Promise<Stored<T> | null>;
  /** Every record, in one read. */
  list(): Promise<Stored<T>[]>;
  /** Call `onChange` whenever a record changes (a store watch). */
  watch(onChange: () => void): Promise<Watch>;
  /**
   * Write a record and, in the same transaction, its operation's record, only while `fence` holds and the
   * record is still at `modRevision` (or any revision when null). False if a compare failed.
   */
  write(record: T, operation: OperationRecord | null, fence: Fence, modRevision: number | null): Promise<{ ok: boolean; modRevision: number }>;
  /** The operation record of a run. */
  operation(id: string): Promise<OperationRecord | null>;
  /** Publish an operation's current record as an `operation` event. */
  publishOperation(op: OperationRecord): void;
}

/** A request record with the store revision it was read at. */
export type StoredRequest = Stored<EvacuationRecord>;

/** The durable requests (`evacuations/<member>`), keyed by member. */
export type RequestBook = RecordBook<EvacuationRecord>;

/** The rolling maintenances (`maintenance/<id>`), keyed by id. */
export type MaintenanceBook = RecordBook<MaintenanceRecord>;

/** What a rolling maintenance needs besides the cluster ports. */
export interface MaintenancePorts {
  /**
   * Ask for an evacuation or restore of `member` as a user would (validated and planned), under `fence`;
   * resolves with its operation id, or null when there is nothing to do (already evacuated / restored).
   * Throws an Error carrying the refusal otherwise.
   */
  request(member: string, action: 'evacuate' | 'restore', fence: Fence): Promise<string | null>;
  /** Run the operator's command on this member's host; resolves with its exit code and the end of its output. */
  runCommand(command: string, timeoutMs: number, signal: AbortSignal): Promise<{ code: number; output: string }>;
  /** The instances held by `member` that should run (`volatile.last_state.power=RUNNING`) and do not. */
  instancesDown(member: string): Promise<string[]>;
}

/** What healing a member did: nothing (it answers again, or is not Online in the store), or what it left in place. */
export type HealResult = { healed: false } | { healed: true; unreachable: string[]; relinked: { name: string; target: string }[]; operation: string };

/** A member as the drainer sees it. */
export interface MemberInfo {
  name: string;
  status: MemberStatus;
  /** Its stored state (what it was told to be, whatever its heartbeat says). */
  state: StoredMemberState;
  /** When its last heartbeat was written (epoch ms), if known. */
  lastSeen: number | null;
  address: string;
  /** When its daemon last started ('' if unknown). */
  startedAt: string;
}

/** What the holder of some instances is asked to do with them (one move; a unit moves together). */
export interface MoveOrder {
  instances: { project: string; name: string }[];
  target: string;
  origin?: string | null;
  clearOrigin?: boolean;
  allowRestoringTarget?: boolean;
  honourLastState?: boolean;
  forceStop?: boolean;
  precopy?: boolean;
  evacuation: string;
}

/** What the holder reports while it moves: a phase beginning, or bytes copied so far. */
export type MoveProgress = { phase: 'stopping' | 'copying' | 'starting' } | { bytesDone: number; bytesTotal: number };

/** How a move asked of a holder ended when it did not succeed. */
export type MoveFailure =
  /** The holder could not be reached or went away mid-move: nothing committed; worth asking again. */
  | 'unreachable'
  /** Another move of the instance is still journaled (an earlier term's order): wait for it, then look again. */
  | 'busy'
  /** The target stopped taking instances: place it again. */
  | 'target-unavailable'
  /** Refused or failed for a reason a retry will not change. */
  | 'failed';

/** An error from a port, classified for the engine's retry decisions. */
export class PortError extends Error {
  constructor(
    readonly failure: MoveFailure,
    message: string,
  ) {
    super(message);
    this.name = 'PortError';
  }
}

/** The cluster as the drainer acts on it. */
export interface ClusterPorts {
  /** The member the drainer runs on (for logs). */
  readonly self: string;
  readonly log: Logger;
  /**
   * A snapshot to plan `member`'s run on: the cluster as it is plus the moves other active runs have planned
   * (counted as load where they go).
   */
  snapshot(planned: { run: string; member: string }): Promise<ClusterSnapshot>;
  members(): Promise<MemberInfo[]>;
  /** Change a member's stored state if it is one of `from`, under the fence. False if it was not. */
  transition(member: string, from: StoredMemberState[], to: StoredMemberState, fence: Fence): Promise<boolean>;
  /** Ask the holder to move instances; resolves once committed (and started on the target if they ran). */
  move(holder: string, order: MoveOrder, fence: Fence, signal: AbortSignal, onProgress: (p: MoveProgress) => void): Promise<void>;
  /** Stop an instance on its holder, keeping its power state (`force`: kill at once). */
  stop(holder: string, instance: { project: string; name: string }, force: boolean, signal: AbortSignal): Promise<void>;
  /** Start an instance on its holder (`allowRestoring`: the holder is being restored). */
  start(holder: string, instance: { project: string; name: string }, allowRestoring: boolean): Promise<void>;
  /** Every move journal. */
  journals(): Promise<MoveJournal[]>;
  /** Where an instance is now (its `location`), or null if it no longer exists. */
  location(project: string, name: string): Promise<string | null>;
  /**
   * Finish a move whose source member is gone (its location was committed: start it on the target if it ran)
   * or roll it back (not committed: the target drops its copy), and clear its journal under the fence. The
   * journals given are one move's (one id).
   */
  settleJournals(journals: MoveJournal[], fence: Fence): Promise<void>;
  /** Whether instances of a driver type can pre-copy (copy while running, then stop and send the changes). */
  canPrecopy(type: string): boolean;
  /** A run ended (for the metrics): its action, outcome and seconds since it was asked for. */
  runFinished(action: 'evacuate' | 'restore', outcome: string, seconds: number): void;
  /** `cluster.healing_threshold` in seconds (0: healing is off). */
  healingThreshold(): Promise<number>;
  /**
   * Heal an offline member under `fence`: only while it is still Online in the store with no heartbeat, set
   * it Evacuated (saying it was healed) with a finished operation. Instances whose volumes are all on shared
   * pools are relinked to other members (and started there if they ran); instances on local storage cannot be
   * reached and stay where they are (listed in the result); they start again when it is restored.
   */
  heal(member: string, fence: Fence | null): Promise<HealResult>;
  /** Emit a lifecycle event (`cluster-member-evacuated`, ...) as happening on `location` (the member it is about). */
  lifecycle(action: string, source: string, location: string): void;
}
