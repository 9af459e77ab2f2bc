// Members: state, message, reserved load against capacity, and instance count of each member.

import { Link } from 'react-router';
import { formatBytes } from '../../../src/util/units.js';
import { get, type Instance, type Member } from '../api.js';
import { useLiveData } from '../live.js';
import { memberLoads, percentOf } from '../load.js';
import { StatusText } from '../components/StatusText.js';

async function loadMembers(): Promise<{ members: Member[]; instances: Instance[] }> {
  const [members, instances] = await Promise.all([get<Member[]>('/1.0/cluster/members?recursion=1'), get<Instance[]>('/1.0/instances?recursion=1')]);
  return { members, instances };
}

/** One resource as `used / capacity` with a meter, or `used` alone when the member offers the host's. */
function Load({ used, capacity, format }: { used: number; capacity: number | null; format: (n: number) => string }) {
  const percent = percentOf(used, capacity);
  if (capacity === null || percent === null) {
    return <span title="capacity not set: the host's">{format(used)} <span className="muted">/ host</span></span>;
  }
  return (
    <span className="meter" title={`${percent}% of capacity`}>
      <progress max={100} value={Math.min(percent, 100)} />
      {format(used)} / {format(capacity)}
    </span>
  );
}

/** The members page. */
export function MembersPage() {
  const { data, error } = useLiveData(loadMembers);
  const loads = data ? memberLoads(data.members, data.instances) : null;
  return (
    <>
      <h1>Cluster members</h1>
      {error && <p className="error">{error}</p>}
      {data && loads && (
        <table data-testid="members">
          <thead>
            <tr>
              <th>Name</th>
              <th>State</th>
              <th>Message</th>
              <th>CPU (limits / capacity)</th>
              <th>Memory (limits / capacity)</th>
              <th className="num">Instances</th>
            </tr>
          </thead>
          <tbody>
            {data.members.map((m) => {
              const load = loads.get(m.server_name);
              return (
                <tr key={m.server_name} data-member={m.server_name}>
                  <td>
                    <Link to={`/members/${encodeURIComponent(m.server_name)}`}>{m.server_name}</Link>
                  </td>
                  <td><StatusText status={m.status} /></td>
                  <td>{m.message}</td>
                  <td>{load && <Load used={load.cpu} capacity={load.cpuCapacity} format={(n) => String(n)} />}</td>
                  <td>{load && <Load used={load.memoryBytes} capacity={load.memoryCapacity} format={formatBytes} />}</td>
                  <td className="num">{load?.instances ?? 0}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {!data && !error && <p className="muted">Loading…</p>}
    </>
  );
}
