// Writes too large for one transaction. etcd refuses a transaction of more than 128 operations by default
// (`--max-txn-ops`), so writes that need no atomicity across all their keys (sweeps, event batches) go in
// chunks well under that.

import type { Op, Store, TxnOptions } from './store.js';

/** Most operations Roost puts in one transaction that does not need to be atomic as a whole. */
export const maxOpsPerTxn = 100;

/** Apply `ops` unconditionally, in as many transactions as the size limit asks. */
export async function applyInChunks(store: Store, ops: Op[], options?: TxnOptions): Promise<void> {
  for (let i = 0; i < ops.length; i += maxOpsPerTxn) await store.txn([], ops.slice(i, i + maxOpsPerTxn), [], options);
}

/** Delete `keys`, in as many transactions as the size limit asks. */
export async function deleteKeys(store: Store, keys: string[]): Promise<void> {
  await applyInChunks(store, keys.map((key) => ({ type: 'delete' as const, key })));
}
