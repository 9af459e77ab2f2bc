// The cluster-wide drainer, as Nomad's: it runs on whichever member holds the leader lease, watches the
// request records (a store watch, not polling), runs each request, and is the only writer of evacuation
// state; every write it makes is fenced by its term. When the term ends it stops; the next leader rebuilds
// everything from the records and the move journals and carries on. It also settles the journals of moves
// whose source member is gone (the decision is in the store: committed moves finish, others roll back).

import type { Term } from '../cluster/leader.js';
import type { MoveJournal } from '../store/schema.js';
import { Run, type RunOptions } from './run.js';
import { MaintenanceRun } from './maintenance.js';
import type { ClusterPorts, MaintenanceBook, MaintenancePorts, RequestBook } from './ports.js';

/** Settings of the drainer. */
export interface DrainerOptions {
  /** How often progress reaches the store (ms). */
  progressIntervalMs: number;
  /** How long a holder may stay unreachable before its instance's move fails (ms). */
  unreachableMs: number;
  /** How often journals of gone members are looked for (ms). */
  settleIntervalMs: number;
}

/** Runs requests while this member leads. */
export class Drainer {
  private readonly runs = new Map<string, Run>();
  private readonly maintenances = new Map<string, MaintenanceRun>();
  private planningTail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly ports: ClusterPorts & MaintenancePorts,
    private readonly book: RequestBook,
    private readonly maintenanceBook: MaintenanceBook,
  ) {}

  /** Lead for one term; resolves once the term has ended and every run of it has stopped. */
  async lead(term: Term, options: DrainerOptions): Promise<void> {
    const { ports } = this;
    const runOptions: RunOptions = {
      progressIntervalMs: options.progressIntervalMs,
      unreachableMs: options.unreachableMs,
      planning: (fn) => this.planning(fn),
    };
    let reconciling: Promise<void> = Promise.resolve();
    let again = false;
    const reconcile = (): void => {
      if (term.signal.aborted) return;
      again = true;
      reconciling = reconciling.then(async () => {
        while (again && !term.signal.aborted) {
          again = false;
          await this.reconcileMaintenance(term, reconcile, Math.min(500, options.settleIntervalMs)).catch((err: unknown) => ports.log.warn({ err }, 'drainer: could not read the maintenances; retrying'));
          await this.reconcile(term, runOptions, reconcile).catch((err: unknown) => ports.log.warn({ err }, 'drainer: could not read the requests; retrying'));
        }
      });
    };
    const watches = await Promise.all(
      [this.book, this.maintenanceBook].map((b) =>
        b.watch(reconcile).catch((err: unknown) => {
          ports.log.warn({ err }, 'drainer: could not watch the requests; looking at them periodically');
          return null;
        }),
      ),
    );
    // A watch delivers changes after it starts; what was recorded before is read once here.
    reconcile();
    const settle = setInterval(() => {
      void this.settleGone(term).catch((err: unknown) => ports.log.warn({ err }, 'drainer: could not settle moves of gone members'));
      void this.healGone(term).catch((err: unknown) => ports.log.warn({ err }, 'drainer: could not heal offline members'));
    }, options.settleIntervalMs);
    settle.unref();
    // Reads can fail for a while (the store unreachable); look again now and then as long as the term lasts.
    const retry = setInterval(reconcile, Math.max(1000, options.settleIntervalMs));
    retry.unref();
    await new Promise<void>((resolve) => {
      if (term.signal.aborted) resolve();
      else term.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    for (const w of watches) w?.close();
    clearInterval(settle);
    clearInterval(retry);
    await reconciling;
    await Promise.all([...this.runs.values(), ...this.maintenances.values()].map((r) => r.done));
    this.runs.clear();
    this.maintenances.clear();
  }

  /** Start a run for every pending or running request that has none; pass cancel requests on. */
  private async reconcile(term: Term, runOptions: RunOptions, kick: () => void): Promise<void> {
    for (const stored of await this.book.list()) {
      const { record } = stored;
      const live = this.runs.get(record.member);
      if (live && live.id === record.id) {
        if (record.cancelRequested) live.requestCancel();
        continue;
      }
      if (record.status !== 'pending' && record.status !== 'running') continue;
      if (live) continue; // the previous run of this member is still stopping
      const run = new Run(this.ports, this.book, stored, term, runOptions);
      this.runs.set(record.member, run);
      this.ports.log.info({ member: record.member, action: record.action, operation: record.operation, resumed: record.status === 'running' }, 'drainer: running a request');
      void run.done.then(() => {
        if (this.runs.get(record.member) === run) this.runs.delete(record.member);
        // A request recorded while this run ended (a resume) starts now.
        kick();
      });
    }
  }

  /** Start a run for every pending or running maintenance that has none; pass cancel requests on. */
  private async reconcileMaintenance(term: Term, kick: () => void, pollMs: number): Promise<void> {
    for (const stored of await this.maintenanceBook.list()) {
      const { record } = stored;
      const live = this.maintenances.get(record.id);
      if (live) {
        if (record.cancelRequested) live.requestCancel();
        continue;
      }
      if (record.status !== 'pending' && record.status !== 'running') continue;
      const run = new MaintenanceRun(this.ports, this.maintenanceBook, this.book, stored, term, { pollMs });
      this.maintenances.set(record.id, run);
      this.ports.log.info({ maintenance: record.id, members: record.members.map((m) => m.name), resumed: record.status === 'running' }, 'drainer: running a maintenance');
      void run.done.then(() => {
        if (this.maintenances.get(record.id) === run) this.maintenances.delete(record.id);
        kick();
      });
    }
  }

  /** Finish or roll back the moves whose source member is Offline (their journals would block those instances). */
  private async settleGone(term: Term): Promise<void> {
    if (term.signal.aborted) return;
    const offline = new Set((await this.ports.members()).filter((m) => m.status === 'Offline').map((m) => m.name));
    if (offline.size === 0) return;
    const byId = new Map<string, MoveJournal[]>();
    for (const j of await this.ports.journals()) {
      if (offline.has(j.source)) byId.set(j.id, [...(byId.get(j.id) ?? []), j]);
    }
    for (const group of byId.values()) {
      if (term.signal.aborted) return;
      await this.ports.settleJournals(group, term.fence).catch((err: unknown) =>
        this.ports.log.warn({ err, move: group[0]?.id }, 'drainer: could not settle a move of a gone member yet'),
      );
    }
  }

  /**
   * Heal the members whose last heartbeat is older than `cluster.healing_threshold` (LXD's key; 0: off) and
   * that the store still has Online: they are set Evacuated, so nothing is placed on them and a restore
   * brings them back; what they hold on shared pools runs elsewhere, what they hold on local pools is reported.
   */
  private async healGone(term: Term): Promise<void> {
    if (term.signal.aborted) return;
    const threshold = await this.ports.healingThreshold();
    if (threshold <= 0) return;
    const now = Date.now();
    for (const m of await this.ports.members()) {
      if (term.signal.aborted) return;
      if (m.status !== 'Offline' || m.state !== 'Online' || m.lastSeen === null || now - m.lastSeen < threshold * 1000) continue;
      const r = await this.ports.heal(m.name, term.fence);
      if (r.healed) this.ports.log.info({ member: m.name, offlineSeconds: Math.round((now - m.lastSeen) / 1000), unreachable: r.unreachable, relinked: r.relinked }, 'drainer: healed an offline member');
    }
  }

  /** Serialise planning across runs. */
  private planning<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.planningTail.then(fn, fn);
    this.planningTail = result.catch(() => undefined);
    return result;
  }
}
