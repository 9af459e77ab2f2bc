// What a member does when its host shuts down (SIGTERM): with `core.shutdown_action=evacuate` (Incus's key),
// it first evacuates itself through the drainer like any other request, waits for the run (at most
// `core.shutdown_timeout` minutes), then stops. An evacuation that cannot happen or does not finish never
// keeps the host from shutting down: the member stops anyway and its log says why. It comes back Evacuated:
// a host that boots into trouble should not pull its instances back by itself; `roost cluster restore` (or
// `roost cluster maintain`) brings them home.

import type { Member } from './context.js';
import { configValue } from '../config/keys.js';
import { requestStateChange } from '../evacuation/requests.js';
import { requestPorts } from './drainer-ports.js';

/** Evacuate `m` before it stops, if the cluster asks for that; never throws. */
export async function evacuateOnShutdown(m: Member): Promise<void> {
  try {
    const config = await m.cluster.serverConfig();
    if (configValue('server', config, 'core.shutdown_action') !== 'evacuate') return;
    const minutes = Number(configValue('server', config, 'core.shutdown_timeout'));
    m.log.info('shutting down: evacuating this member first (core.shutdown_action=evacuate)');
    const result = await requestStateChange(requestPorts(m), m.name, { action: 'evacuate' });
    if (!('operation' in result)) return;
    const op = await m.operations.wait(result.operation.id, minutes * 60_000);
    if (op?.status === 'Success') m.log.info({ operation: op.id }, 'evacuated; shutting down');
    else {
      m.log.warn(
        { operation: result.operation.id, status: op?.status, err: op?.err },
        `the evacuation before shutdown ${op && op.status !== 'Running' ? 'did not succeed' : `did not finish within ${minutes} min`}; shutting down anyway`,
      );
    }
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    if (reason === 'Cluster member is already evacuated') m.log.info('already evacuated; shutting down');
    else m.log.warn({ err }, `could not evacuate before shutting down (${reason}); shutting down normally`);
  }
}
