// The etcd backend on a real 3-member etcd cluster: the shared conformance suite first.

import { after } from 'node:test';
import { Etcd3 } from 'etcd3';
import { openStore } from '../../src/store/index.js';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd.js';
import { storeConformance } from './conformance.js';

let shared: EtcdCluster | null = null;

/** One cluster for the conformance tests; each test starts from an empty key space and no leases. */
async function sharedCluster(): Promise<EtcdCluster> {
  shared ??= await startEtcdCluster();
  return shared;
}

after(async () => {
  await shared?.stopAll();
});

/** Deletes every key and revokes every lease, so a test sees nothing left by the one before. */
async function wipe(cluster: EtcdCluster): Promise<void> {
  const admin = new Etcd3({ hosts: cluster.endpoints.map((e) => `http://${e}`) });
  try {
    await admin.delete().all();
    const { leases } = await admin.leaseClient.leaseLeases();
    await Promise.all(leases.map((l) => admin.leaseClient.leaseRevoke({ ID: l.ID })));
  } finally {
    admin.close();
  }
}

storeConformance('etcd store on 3 members', async () => {
  const cluster = await sharedCluster();
  await wipe(cluster);
  const store = await openStore(cluster.url);
  return { store, cleanup: () => store.close() };
});
