// Leadership of the cluster-wide drainer. One member at a time holds a key under a store lease; the key's
// createRevision is the holder's term. Every write the drainer makes compares it (the fence), so a leader
// cut off by a partition can commit nothing once its lease is gone, however late its writes arrive. The
// holder also deposes itself when it has not renewed the lease for a TTL, without waiting to hear so from a
// store it may not reach, so it stops acting at about the moment another member may take over.

import type { Compare, Store, Watch } from '../store/store.js';
import type { Logger } from '../util/log.js';

/** One term of leadership. */
export interface Term {
  /** The member holding it. */
  member: string;
  /** The compare that holds only while this term lasts: put it in every transaction the leader makes. */
  fence: Compare & { createRevision: number };
  /** Aborted when the term ends (lease lost or not renewed in time, or the member stops). */
  signal: AbortSignal;
}

/** Who leads now, as any member can read it. */
export interface LeaderRecord {
  member: string;
  pid: number;
  since: string;
  /** The length of the term's lease (s): a term under an older length is given up for a new one. */
  leaseSeconds?: number;
}

/** How the election is run. */
export interface ElectionOptions {
  store: Store;
  /** The store key the leader holds. */
  key: string;
  member: string;
  /** Seconds a lease lives without renewal (read at every campaign, so a config change applies next term). */
  ttlSeconds: () => Promise<number>;
  log: Logger;
  /** Called when this member becomes leader; the term's signal says when it ends. */
  onTerm: (term: Term) => void;
}

/** Campaigns for the key until stopped; holds it while it can. */
export class LeaderElection {
  private stopped = false;
  private term: (Term & { lease: string; abort: AbortController }) | null = null;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;

  constructor(private readonly o: ElectionOptions) {}

  /** Begin campaigning (in the background). */
  start(): void {
    this.loop ??= this.campaign();
  }

  /** The current term if this member leads. */
  current(): Term | null {
    return this.term && !this.term.signal.aborted ? this.term : null;
  }

  /** Stop campaigning and give up leadership now (the lease is revoked, so another member takes over at once). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    const term = this.term;
    this.endTerm('the member is stopping');
    if (term) await this.o.store.revokeLease(term.lease).catch(() => undefined);
    await this.loop;
  }

  /** Who leads now, if anyone. */
  static async read(store: Store, key: string): Promise<LeaderRecord | null> {
    const kv = await store.get(key);
    return kv ? (JSON.parse(kv.value) as LeaderRecord) : null;
  }

  private async campaign(): Promise<void> {
    const { store, key, member, log } = this.o;
    while (!this.stopped) {
      try {
        const ttl = await this.o.ttlSeconds();
        const lease = await store.grantLease(ttl);
        const record: LeaderRecord = { member, pid: process.pid, since: new Date().toISOString(), leaseSeconds: ttl };
        const r = await store.txn([{ key, modRevision: 0 }], [{ type: 'put', key, value: JSON.stringify(record), lease }]);
        if (r.succeeded && !this.stopped) {
          await this.lead(lease, r.revision, ttl);
        } else {
          await store.revokeLease(lease).catch(() => undefined);
          if (!this.stopped && !(await this.clearOwnStaleTerm())) await this.untilVacant(r.revision, ttl);
        }
      } catch (err) {
        if (this.stopped) break;
        log.warn({ err }, 'drainer election: store unavailable; campaigning again shortly');
        await this.pause(500);
      }
    }
  }

  /** Hold the term: renew the lease every third of its TTL; end the term when a renewal fails or comes too late. */
  private async lead(lease: string, createRevision: number, ttl: number): Promise<void> {
    const abort = new AbortController();
    const term = { member: this.o.member, fence: { key: this.o.key, createRevision }, signal: abort.signal, lease, abort };
    this.term = term;
    this.o.log.info({ term: createRevision }, 'this member now runs the drainer');
    this.o.onTerm({ member: term.member, fence: term.fence, signal: term.signal });
    const ttlMs = ttl * 1000;
    // Give up a little before the lease can expire in the store, so two leaders never act at once.
    const margin = Math.min(1000, ttlMs / 4);
    let renewedAt = Date.now();
    let deadline: NodeJS.Timeout | null = null;
    const arm = (): void => {
      if (deadline) clearTimeout(deadline);
      deadline = setTimeout(() => this.endTerm('the drainer lease was not renewed in time'), Math.max(0, renewedAt + ttlMs - margin - Date.now()));
      deadline.unref();
    };
    arm();
    try {
      while (!abort.signal.aborted && !this.stopped) {
        // At most 2 s apart, so a shorter lease length (the offline threshold lowered) takes over within 2 s: a
        // leader that died on the old length would keep the cluster waiting that long for a new one.
        await this.pause(Math.min(ttlMs / 3, 2000));
        if (abort.signal.aborted || this.stopped) break;
        const asked = Date.now();
        const alive = await this.o.store.keepAlive(lease).catch(() => null);
        if (alive === false) {
          this.endTerm('the drainer lease expired');
          break;
        }
        if (alive === true) {
          renewedAt = asked;
          arm();
        }
        // A new lease length (the offline threshold changed) takes a new term: give this one up and campaign
        // again at once, rather than let a dead leader keep the cluster waiting for the old length.
        const wanted = await this.o.ttlSeconds().catch(() => ttl);
        if (wanted !== ttl) {
          this.endTerm(`the drainer lease length changed from ${ttl} s to ${wanted} s`);
          await this.o.store.revokeLease(lease).catch(() => undefined);
          break;
        }
      }
    } finally {
      if (deadline) clearTimeout(deadline);
      this.endTerm('the term ended');
    }
  }

  private endTerm(reason: string): void {
    const term = this.term;
    if (!term || term.abort.signal.aborted) return;
    this.o.log.info({ term: term.fence.createRevision, reason }, 'this member no longer runs the drainer');
    term.abort.abort(new Error(reason));
  }

  /**
   * A term this member held in an earlier process (it crashed and restarted) would block the election until
   * its lease runs out; that process is gone, so end the term now. Deleting the key changes the term (the
   * next one has another createRevision), so even a process that were somehow still alive would be fenced.
   */
  private async clearOwnStaleTerm(): Promise<boolean> {
    const kv = await this.o.store.get(this.o.key);
    if (!kv) return true;
    const holder = JSON.parse(kv.value) as LeaderRecord;
    if (holder.member !== this.o.member || holder.pid === process.pid) return false;
    const r = await this.o.store.txn([{ key: this.o.key, modRevision: kv.modRevision }], [{ type: 'delete', key: this.o.key }]);
    if (r.succeeded) this.o.log.info({ term: kv.createRevision }, 'ended the drainer term of this member\'s previous process');
    return true;
  }

  /** Wait until the key is gone (watched), or a TTL passes (in case a watch event is missed). */
  private async untilVacant(fromRevision: number, ttl: number): Promise<void> {
    let watch: Watch | null = null;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(done, ttl * 1000);
      timer.unref();
      this.wake = done;
      try {
        watch = this.o.store.watch(this.o.key, fromRevision, (events) => {
          if (events.some((e) => e.type === 'delete')) done();
        });
      } catch {
        // the timer still ends the wait
      }
    });
    this.wake = null;
    (watch as Watch | null)?.close();
  }

  private async pause(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      t.unref();
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wake = null;
  }
}
