// The live view of an evacuation or restore: an overall bar (instances, bytes, rate, ETA) and one row per
// instance as it stops, copies (bytes, rate, ETA) and starts on its new member, failures with their reason.

import { formatBytes, formatEta } from '../../../src/util/units.js';
import { isInFlight, type EvacuationProgress, type InstanceProgress } from '../../../src/wire/evacuation.js';
import { isFinalStatus, type Operation } from '../api.js';
import { copyRate, overall, type RunView } from '../run.js';
import { StatusText } from './StatusText.js';

/** `default/c1` → `c1`; other projects keep their prefix. */
function instanceLabel(key: string): string {
  return key.startsWith('default/') ? key.slice('default/'.length) : key;
}

/** Order of rows: in flight first, then pending, then finished, each by name. */
function rank(step: InstanceProgress): number {
  if (isInFlight(step.state)) return 0;
  if (step.state === 'pending') return 1;
  return 2;
}

/** The copy figures of one instance's row. */
function CopyCell({ step, rate }: { step: InstanceProgress; rate: number | null }) {
  if (step.bytes <= 0) return <span className="muted">-</span>;
  const eta = step.state === 'copying' && rate !== null && rate > 0 ? formatEta((step.bytes - step.bytesDone) / rate) : null;
  return (
    <span className="meter">
      <progress max={step.bytes} value={Math.min(step.bytesDone, step.bytes)} />
      {formatBytes(step.bytesDone)} / {formatBytes(step.bytes)}
      {step.state === 'copying' && rate !== null && <span className="muted"> {formatBytes(Math.round(rate))}/s</span>}
      {eta !== null && <span className="muted"> ETA {eta}</span>}
    </span>
  );
}

/** The live view; `onCancel` is offered while the operation runs and may be cancelled. */
export function LiveRun({ run, progress, onCancel, cancelling }: { run: RunView; progress: EvacuationProgress; onCancel: () => void; cancelling: boolean }) {
  const operation: Operation | null = run.operation;
  const { finished, total, etaSeconds } = overall(progress);
  const entries = Object.entries(progress.instances).sort(([a, x], [b, y]) => rank(x) - rank(y) || (a < b ? -1 : a > b ? 1 : 0));
  const running = operation !== null && !isFinalStatus(operation.status);
  const title = progress.action === 'restore' ? 'Restore' : 'Evacuation';
  return (
    <section className="panel" data-testid="live-run">
      <h2>
        {title} of {progress.member}: <StatusText status={progress.status} />
      </h2>
      <div className="overall" data-testid="overall">
        <span data-testid="overall-count">
          {finished}/{total} instances{progress.failed > 0 ? ` (${progress.failed} failed)` : ''}
        </span>
        <progress max={Math.max(total, 1)} value={finished} />
        <span data-testid="overall-bytes">
          {formatBytes(progress.bytesDone)} / {formatBytes(progress.bytesTotal)}
        </span>
        <progress max={Math.max(progress.bytesTotal, 1)} value={Math.min(progress.bytesDone, progress.bytesTotal)} />
        <span>
          {formatBytes(Math.round(progress.rate))}/s, ETA {etaSeconds === null ? '-' : formatEta(etaSeconds)}
        </span>
        <span />
      </div>
      {operation && operation.err && <p className="error" data-testid="run-error">{operation.err}</p>}
      {running && (
        <div className="actions">
          <button type="button" className="danger" onClick={onCancel} disabled={cancelling || !operation.may_cancel}>
            {cancelling ? 'Cancelling…' : 'Cancel'}
          </button>
          <span className="muted">Operation {operation.id}: {operation.status}</span>
        </div>
      )}
      <table data-testid="run-instances">
        <thead>
          <tr>
            <th>Instance</th>
            <th>Action</th>
            <th>Target</th>
            <th>State</th>
            <th>Copy</th>
            <th>Error</th>
          </tr>
        </thead>
        <tbody>
          {entries.map(([key, step]) => (
            <tr key={key} data-instance={instanceLabel(key)} data-state={step.state}>
              <td>{instanceLabel(key)}</td>
              <td>{step.action}</td>
              <td data-testid="target">{step.target ?? ''}</td>
              <td data-testid="state"><StatusText status={step.state} /></td>
              <td><CopyCell step={step} rate={copyRate(run, key)} /></td>
              <td className="error-cell">{step.error ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
