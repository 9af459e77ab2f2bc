// Instances: state, type and location of every instance, filtered by text, member and state.

import { useState } from 'react';
import { Link } from 'react-router';
import { get, type Instance, type Member } from '../api.js';
import { useLiveData } from '../live.js';
import { StatusText } from '../components/StatusText.js';

async function loadInstances(): Promise<{ instances: Instance[]; members: string[] }> {
  const [instances, members] = await Promise.all([get<Instance[]>('/1.0/instances?recursion=1'), get<Member[]>('/1.0/cluster/members?recursion=1')]);
  return { instances, members: members.map((m) => m.server_name) };
}

/** The instances page. */
export function InstancesPage() {
  const { data, error } = useLiveData(loadInstances);
  const [text, setText] = useState('');
  const [member, setMember] = useState('');
  const [status, setStatus] = useState('');
  const all = data?.instances ?? [];
  const members = [...new Set([...(data?.members ?? []), ...all.map((i) => i.location)])].sort();
  const statuses = [...new Set(all.map((i) => i.status))].sort();
  const needle = text.trim().toLowerCase();
  const shown = all.filter(
    (i) =>
      (needle === '' || [i.name, i.type, i.location, i.status].some((f) => f.toLowerCase().includes(needle))) &&
      (member === '' || i.location === member) &&
      (status === '' || i.status === status),
  );
  return (
    <>
      <h1>Instances</h1>
      {error && <p className="error">{error}</p>}
      <div className="filters">
        <input type="search" placeholder="Filter by text" aria-label="Filter by text" value={text} onChange={(e) => setText(e.target.value)} />
        <select aria-label="Member" value={member} onChange={(e) => setMember(e.target.value)}>
          <option value="">All members</option>
          {members.map((m) => <option key={m} value={m}>{m}</option>)}
        </select>
        <select aria-label="State" value={status} onChange={(e) => setStatus(e.target.value)}>
          <option value="">All states</option>
          {statuses.map((s) => <option key={s} value={s}>{s}</option>)}
        </select>
        <span className="muted">{data ? `${shown.length} of ${all.length}` : 'Loading…'}</span>
      </div>
      <table data-testid="instances">
        <thead>
          <tr>
            <th>Name</th>
            <th>State</th>
            <th>Type</th>
            <th>Location</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((i) => (
            <tr key={`${i.project ?? 'default'}/${i.name}`} data-instance={i.name}>
              <td>{i.name}</td>
              <td><StatusText status={i.status} /></td>
              <td>{i.type}</td>
              <td><Link to={`/members/${encodeURIComponent(i.location)}`}>{i.location}</Link></td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
