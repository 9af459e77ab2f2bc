// The dry-run plan of an evacuation or restore, as the API answers it, shown before the user confirms.

import { formatBytes } from '../../../src/util/units.js';

/** One row of the plan. */
interface PlanRow {
  instance: string;
  action: string;
  target: string;
  bytes: number;
  reason: string;
}

/** A plan read from the API: rows, and the refusals a real run would meet (each as one line). */
export interface Plan {
  rows: PlanRow[];
  refusals: string[];
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : value === null || value === undefined ? '' : String(value);
}

function record(value: unknown): Record<string, unknown> {
  return value !== null && typeof value === 'object' ? (value as Record<string, unknown>) : {};
}

function label(entry: Record<string, unknown>): string {
  const name = text(entry.name) || text(entry.instance);
  const project = text(entry.project);
  return project && project !== 'default' ? `${project}/${name}` : name;
}

function list(value: unknown): Record<string, unknown>[] {
  return Array.isArray(value) ? value.map(record) : [];
}

/** Read the evacuation plan (`instances`, `refusals`) or the restore plan (`moves`, `start`). */
export function readPlan(member: string, metadata: unknown): Plan {
  const plan = record(metadata);
  const rows: PlanRow[] = list(plan.instances).map((e) => ({
    instance: label(e),
    action: text(e.action),
    target: text(e.target),
    bytes: typeof e.bytes === 'number' ? e.bytes : 0,
    reason: text(e.reason),
  }));
  for (const e of list(plan.moves)) {
    rows.push({ instance: label(e), action: 'migrate', target: member, bytes: typeof e.bytes === 'number' ? e.bytes : 0, reason: `back from ${text(e.from)}` });
  }
  for (const e of list(plan.start)) rows.push({ instance: label(e), action: 'start', target: member, bytes: 0, reason: 'was running before the evacuation' });
  const refusals = Array.isArray(plan.refusals)
    ? plan.refusals.map((r) => (typeof r === 'string' ? r : `${label(record(r))}: ${text(record(r).reason) || text(record(r).error)}`))
    : [];
  return { rows, refusals };
}

/** The plan as a table, then its refusals. */
export function PlanTable({ plan }: { plan: Plan }) {
  return (
    <>
      <table data-testid="plan">
        <thead>
          <tr>
            <th>Instance</th>
            <th>Action</th>
            <th>Target</th>
            <th className="num">Size</th>
            <th>Reason</th>
          </tr>
        </thead>
        <tbody>
          {plan.rows.length === 0 && (
            <tr>
              <td colSpan={5} className="muted">Nothing to do.</td>
            </tr>
          )}
          {plan.rows.map((row) => (
            <tr key={row.instance} data-instance={row.instance}>
              <td>{row.instance}</td>
              <td>{row.action}</td>
              <td>{row.target}</td>
              <td className="num">{row.bytes > 0 ? formatBytes(row.bytes) : ''}</td>
              <td>{row.reason}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {plan.refusals.length > 0 && (
        <div className="error" data-testid="refusals">
          A real run would be refused:
          <ul className="refusals">
            {plan.refusals.map((r) => <li key={r}>{r}</li>)}
          </ul>
        </div>
      )}
    </>
  );
}
