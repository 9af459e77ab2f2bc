// What a metrics scrape reads of the cluster, from this member's store and membership view.

import type { ClusterFacts } from '../metrics/metrics.js';
import type { ClusterService } from '../cluster/members.js';
import { keys, type InstanceRecord } from '../store/schema.js';
import type { Store } from '../store/store.js';

/** The cluster facts of the scrape-time gauges (instances per member and state, heartbeat ages). */
export function clusterFacts(store: Store, cluster: ClusterService): ClusterFacts {
  return {
    async instances() {
      const { kvs } = await store.range(keys.instances());
      return kvs.map((kv) => {
        const r = JSON.parse(kv.value) as InstanceRecord;
        return { location: r.location, power: r.config['volatile.last_state.power'] ?? 'STOPPED' };
      });
    },
    async heartbeats() {
      return (await cluster.members()).map((v) => ({ member: v.record.name, lastSeen: v.lastSeen }));
    },
  };
}
