// Rolling maintenance (`roost cluster maintain`): the drainer takes each member in turn (never more than
// `concurrency` at once), evacuates it, reboots it (the operator's command with `{member}` replaced, run on
// the drainer's host; or, without one, waits for the member to go offline and come back), restores it, and
// checks that it is Online and its instances run; then the next. It stops at the first member that does not
// come back healthy and says why. Every step is recorded (fenced by the drainer's term), so a new leader
// carries on where the last one stopped, even when the member being rebooted is the drainer's own.

import type { Term } from '../cluster/leader.js';
import type { MaintenanceRecord, MaintenanceStep, OperationRecord } from '../store/schema.js';
import type { RunStatus } from '../wire/evacuation.js';
import type { ClusterPorts, MaintenanceBook, MaintenancePorts, RequestBook, Stored } from './ports.js';
import { errorText, sleep } from './executor.js';
import { writeFenced } from './fenced.js';

/** Settings of a maintenance run. */
export interface MaintenanceOptions {
  /** How often it looks again at what it waits for (ms). */
  pollMs: number;
}

type Entry = MaintenanceRecord['members'][number];

/** Why a member's cycle stopped short. */
class StepFailed extends Error {}

/** One rolling maintenance during one leader term. */
export class MaintenanceRun {
  readonly id: string;
  private record: MaintenanceRecord;
  private modRevision: number;
  private op: OperationRecord | null = null;
  private readonly cancel = new AbortController();
  private readonly signal: AbortSignal;
  private writing: Promise<void> = Promise.resolve();
  private termLost = false;
  private text = '';
  /** Resolves when the run has stopped (finished, or given up because its term ended). */
  readonly done: Promise<void>;

  constructor(
    private readonly ports: ClusterPorts & MaintenancePorts,
    private readonly book: MaintenanceBook,
    private readonly requests: RequestBook,
    stored: Stored<MaintenanceRecord>,
    private readonly term: Term,
    private readonly options: MaintenanceOptions,
  ) {
    this.record = structuredClone(stored.record);
    this.modRevision = stored.modRevision;
    this.id = stored.record.id;
    this.signal = AbortSignal.any([term.signal, this.cancel.signal]);
    this.done = this.execute().catch((err: unknown) => {
      this.ports.log.error({ err, maintenance: this.id }, 'maintenance run failed unexpectedly');
    });
  }

  /** A user asked to cancel: the member in progress stops where it is (and is reported), no other begins. */
  requestCancel(): void {
    this.cancel.abort(new Error('cancelled'));
  }

  private async execute(): Promise<void> {
    this.op = await this.book.operation(this.record.operation);
    this.record.status = 'running';
    this.record.term = this.term.fence.createRevision;
    if (this.record.cancelRequested) this.requestCancel();
    await this.persist();
    let failure: string | null = null;
    for (;;) {
      if (this.signal.aborted) break;
      const open = this.record.members.filter((e) => e.step !== 'done' && e.step !== 'failed');
      if (open.length === 0) break;
      // The members already under way (a run taken over), then the next ones, up to `concurrency` at once.
      const batch = [...open.filter((e) => e.step !== 'pending'), ...open.filter((e) => e.step === 'pending')].slice(0, this.record.concurrency);
      const results = await Promise.all(batch.map((e) => this.cycle(e).then(() => null, (err: unknown) => ({ e, err }))));
      const failed = results.find((r) => r !== null);
      if (failed && !this.signal.aborted) {
        failed.e.step = 'failed';
        failed.e.error = errorText(failed.err);
        failure = `member "${failed.e.name}" did not come back healthy: ${failed.e.error}`;
        await this.persist();
        break;
      }
    }
    if (this.term.signal.aborted) return; // the next leader carries on
    const outcome: RunStatus = this.cancel.signal.aborted ? 'cancelled' : failure ? 'failed' : 'done';
    const unfinished = this.record.members.filter((e) => e.step !== 'done' && e.step !== 'pending' && e.step !== 'failed');
    const detail = unfinished.map((e) => `member "${e.name}" stopped at ${e.step}${e.step === 'rebooting' || e.step === 'restoring' ? ' (restore it with `roost cluster restore`)' : ''}`);
    this.record.status = outcome;
    this.record.finishedAt = new Date().toISOString();
    this.record.error = [failure ?? '', ...detail].filter((x) => x !== '').join('\n');
    this.text = outcome === 'done' ? 'Maintenance complete' : outcome === 'cancelled' ? 'Maintenance cancelled' : 'Maintenance stopped';
    if (this.op) {
      this.op.status = outcome === 'done' ? 'Success' : outcome === 'cancelled' ? 'Cancelled' : 'Failure';
      this.op.err = outcome === 'failed' ? this.record.error : '';
    }
    await this.persist();
    this.ports.log.info({ maintenance: this.id, outcome, error: this.record.error }, 'rolling maintenance ended');
  }

  /** One member's cycle, from wherever its recorded step says. */
  private async cycle(e: Entry): Promise<void> {
    const { ports } = this;
    if (e.step === 'pending' || e.step === 'evacuating') {
      await this.step(e, 'evacuating', `Evacuating "${e.name}"`);
      const t0 = Date.now();
      await this.runOn(e.name, 'evacuate');
      e.evacuateSeconds = (Date.now() - t0) / 1000;
      e.bootBefore = (await ports.members()).find((x) => x.name === e.name)?.startedAt ?? '';
      await this.step(e, 'rebooting', `Rebooting "${e.name}"`);
      if (this.record.exec) {
        const command = this.record.exec.replaceAll('{member}', e.name);
        ports.log.info({ member: e.name, command }, 'maintenance: running the operator\'s command');
        const r = await ports.runCommand(command, this.record.waitOnlineSeconds * 1000, this.signal);
        this.throwIfAborted();
        if (r.code !== 0) throw new StepFailed(`the command exited with ${r.code}: ${r.output.trim().split('\n').slice(-3).join(' / ')}`);
        e.commandDone = true;
        await this.persist();
      }
    }
    if (e.step === 'rebooting') {
      await this.waitBack(e);
      await this.step(e, 'restoring', `Restoring "${e.name}"`);
    }
    if (e.step === 'restoring') {
      const t0 = Date.now();
      await this.runOn(e.name, 'restore');
      e.restoreSeconds = (Date.now() - t0) / 1000;
      await this.step(e, 'verifying', `Checking "${e.name}"`);
    }
    if (e.step === 'verifying') {
      await this.until(`"${e.name}" Online with its instances running`, async () => {
        const info = (await ports.members()).find((x) => x.name === e.name);
        if (info?.status !== 'Online') return false;
        return (await ports.instancesDown(e.name)).length === 0;
      });
      await this.step(e, 'done', `"${e.name}" is back in service`);
    }
  }

  /**
   * Wait until the member is back after its reboot: Online, and either its daemon started again since the
   * reboot began, or the operator's command ended well (a command need not restart the daemon: it decides).
   * A drainer that took over while the command ran cannot know how it ended, so it waits for a new start.
   */
  private async waitBack(e: Entry): Promise<void> {
    await this.until(`"${e.name}" back after its reboot`, async () => {
      const info = (await this.ports.members()).find((x) => x.name === e.name);
      if (!info) throw new StepFailed('it is no longer a member of the cluster');
      if (info.status === 'Offline') return false;
      return e.commandDone === true || (info.startedAt !== '' && info.startedAt !== e.bootBefore);
    });
  }

  /**
   * Evacuate or restore `member` and wait for the run; a run of it already under way (this maintenance asked
   * for it in an earlier term) is waited for rather than asked again.
   */
  private async runOn(member: string, action: 'evacuate' | 'restore'): Promise<void> {
    const what = action === 'evacuate' ? 'evacuation' : 'restore';
    const current = await this.requests.get(member);
    if (current && (current.record.status === 'pending' || current.record.status === 'running')) {
      if (current.record.action !== action) throw new StepFailed(`a ${current.record.action} of it is running`);
      await this.waitRun(member, current.record.operation, what);
      return;
    }
    const op = await this.ports.request(member, action, this.term.fence);
    if (op) await this.waitRun(member, op, what);
  }

  /** Wait for an evacuation or restore run to end; a run that did not succeed fails the member. */
  private async waitRun(member: string, operation: string, what: string): Promise<void> {
    let outcome: { status: RunStatus; error: string } | null = null;
    await this.until(`the ${what} of "${member}"`, async () => {
      const run = await this.requests.get(member);
      if (!run || run.record.operation !== operation) throw new StepFailed(`its ${what} record was replaced`);
      if (run.record.status === 'pending' || run.record.status === 'running') return false;
      outcome = { status: run.record.status, error: run.record.error };
      return true;
    }, 0);
    const o = outcome as { status: RunStatus; error: string } | null;
    if (o && o.status !== 'done') throw new StepFailed(`its ${what} ${o.status === 'cancelled' ? 'was cancelled' : `failed: ${o.error}`}`);
  }

  /** Poll `check` until it holds, within `waitOnlineSeconds` (0: no deadline), or the run is stopped. */
  private async until(what: string, check: () => Promise<boolean>, deadlineSeconds = this.record.waitOnlineSeconds): Promise<void> {
    const deadline = deadlineSeconds > 0 ? Date.now() + deadlineSeconds * 1000 : Infinity;
    for (;;) {
      this.throwIfAborted();
      try {
        if (await check()) return;
      } catch (err) {
        if (err instanceof StepFailed) throw err;
        // A store or member hiccup: look again.
      }
      if (Date.now() > deadline) throw new StepFailed(`timed out after ${deadlineSeconds} s waiting for ${what}`);
      await sleep(this.options.pollMs, this.signal);
    }
  }

  private async step(e: Entry, step: MaintenanceStep, text: string): Promise<void> {
    this.throwIfAborted();
    e.step = step;
    e.stepAt = new Date().toISOString();
    this.text = text;
    await this.persist();
  }

  private throwIfAborted(): void {
    if (this.signal.aborted) throw new StepFailed(this.cancel.signal.aborted ? 'cancelled' : 'the drainer changed hands');
  }

  /** Write the record and its operation (fenced); pick up a cancel request made meanwhile. */
  private persist(): Promise<void> {
    const next = this.writing.then(() => this.persistNow()).catch((err: unknown) => {
      this.ports.log.warn({ err, maintenance: this.id }, 'could not store maintenance progress; retrying with the next update');
    });
    this.writing = next;
    return next;
  }

  private async persistNow(): Promise<void> {
    if (this.termLost) return;
    if (this.op) {
      const done = this.record.members.filter((e) => e.step === 'done').length;
      this.op.metadata = {
        ...(this.op.metadata ?? {}),
        // A string, as the lxc client expects of every `*_progress` key.
        maintenance_progress: this.text === '' ? '' : `${this.text} (${done}/${this.record.members.length} done)`,
        roost_maintenance: { status: this.record.status, members: this.record.members, error: this.record.error },
      };
      this.op.updatedAt = new Date().toISOString();
    }
    const outcome = await writeFenced(
      { book: this.book, key: this.id, record: this.record, op: this.op, fence: this.term.fence, modRevision: this.modRevision },
      () => this.requestCancel(),
    );
    if (outcome.kind === 'written' || outcome.kind === 'deferred') this.modRevision = outcome.modRevision;
    else this.termLost = true;
  }
}
