// A cluster-wide lock held through a store lease: if its holder dies, the lease expires and the
// lock frees itself; while held, a timer keeps the lease alive.

import type { Store } from '../store/store.js';

/** Seconds a dead holder keeps the lock. */
const ttlSeconds = 5;

/** One named lock. */
export class LeaseLock {
  private lease: string | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: Store,
    private readonly key: string,
    private readonly owner: string,
  ) {}

  /** Take the lock; wait up to `waitMs` for a holder to release it or die. Returns false if not taken. */
  async acquire(waitMs = 0): Promise<boolean> {
    if (this.lease) return false;
    const deadline = Date.now() + waitMs;
    for (;;) {
      const lease = await this.store.grantLease(ttlSeconds);
      const r = await this.store.txn([{ key: this.key, modRevision: 0 }], [
        { type: 'put', key: this.key, value: JSON.stringify({ owner: this.owner, pid: process.pid, at: new Date().toISOString() }), lease },
      ]);
      if (r.succeeded) {
        this.lease = lease;
        this.timer = setInterval(() => {
          if (this.lease) void this.store.keepAlive(this.lease).catch(() => false);
        }, (ttlSeconds * 1000) / 3);
        this.timer.unref();
        return true;
      }
      await this.store.revokeLease(lease);
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  /** Release the lock if held. */
  async release(): Promise<void> {
    this.stopKeepAlive();
    const lease = this.lease;
    this.lease = null;
    if (lease) await this.store.revokeLease(lease).catch(() => undefined);
  }

  /** Stop refreshing (the lock then expires by itself). */
  stopKeepAlive(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
