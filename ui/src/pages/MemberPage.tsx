// One member: its state, Evacuate and Restore (options as the CLI's, the dry-run plan shown before the
// confirmation), and the live view of its running or last evacuation or restore.

import { useCallback, useEffect, useState } from 'react';
import { useParams } from 'react-router';
import { parseEvacuationProgress } from '../../../src/wire/evacuation.js';
import { errorText, get, isFinalStatus, isRunOf, request, type Member, type Operation } from '../api.js';
import { useEvents } from '../events.js';
import { useLiveData } from '../live.js';
import { applyOperation, emptyRun, withProgress, type RunView } from '../run.js';
import { PlanTable, readPlan, type Plan } from '../components/PlanTable.js';
import { LiveRun } from '../components/LiveRun.js';
import { StatusText } from '../components/StatusText.js';

/** What the Evacuate and Restore forms offer, as `roost cluster evacuate|restore --action`. */
const modes: Record<'evacuate' | 'restore', string[]> = {
  evacuate: ['', 'auto', 'migrate', 'live-migrate', 'stop', 'force-stop'],
  restore: ['', 'skip'],
};

/** The choices of a request being prepared. */
interface Choices {
  action: 'evacuate' | 'restore';
  mode: string;
  /** As typed; empty: the cluster's `cluster.evacuation_parallelism`. */
  parallel: string;
}

/** The request body, as the CLI builds it (absent options are left to the server). */
function requestBody(choices: Choices, dryRun: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = { action: choices.action };
  if (choices.mode !== '') body.mode = choices.mode;
  if (choices.parallel.trim() !== '') body.parallel = Number(choices.parallel);
  if (dryRun) body.dry_run = true;
  return body;
}

/** The state of a member the page shows (`GET .../state`, only the part read here). */
interface MemberState {
  roost_evacuation?: unknown;
}

/** The member page of the member the address names (a fresh page per member). */
export function MemberRoute() {
  const name = useParams().name ?? '';
  return <MemberPage key={name} name={name} />;
}

/** The member page. */
function MemberPage({ name }: { name: string }) {
  const path = `/1.0/cluster/members/${encodeURIComponent(name)}`;
  const loadMember = useCallback(() => get<Member>(path), [path]);
  const member = useLiveData(loadMember);
  const [run, setRun] = useState<RunView>(emptyRun);
  const [runError, setRunError] = useState<string | null>(null);
  const [choices, setChoices] = useState<Choices | null>(null);
  const [planAnswer, setPlanAnswer] = useState<{ key: string; plan: Plan | null; error: string | null } | null>(null);
  const [submitting, setSubmitting] = useState(false);
  const [cancelling, setCancelling] = useState(false);

  // The run as the member knows it (the full progress), and its operation if it still runs.
  const loadRun = useCallback(() => {
    Promise.all([get<MemberState>(`${path}/state`), get<Record<string, Operation[]>>('/1.0/operations?recursion=1')]).then(
      ([state, ops]) => {
        const progress = parseEvacuationProgress(state.roost_evacuation);
        const running = (ops.running ?? []).find((op) => isRunOf(op, name)) ?? null;
        const now = Date.now();
        setRun((v) => {
          const sameRun = progress !== null && v.progress !== null && v.progress.startedAt === progress.startedAt;
          const next = withProgress(v, progress, sameRun ? v.operation : null, sameRun, now);
          return running ? applyOperation(next, running, name, now) : next;
        });
        setRunError(null);
      },
      (err: unknown) => setRunError(errorText(err)),
    );
  }, [path, name]);

  useEffect(() => {
    loadRun();
  }, [loadRun]);

  useEvents(
    ['operation'],
    (event) => {
      const op = event.metadata as Operation;
      if (!op || typeof op !== 'object' || !isRunOf(op, name)) return;
      setRun((v) => applyOperation(v, op, name, Date.now()));
      // At its end, the member's record holds the run's full and final progress.
      if (isFinalStatus(op.status)) {
        setCancelling(false);
        loadRun();
      }
    },
    loadRun,
  );

  // The dry-run plan of the choices, asked again whenever they change.
  const planKey = choices ? JSON.stringify(requestBody(choices, true)) : null;
  useEffect(() => {
    if (planKey === null) return;
    let current = true;
    request('POST', `${path}/state`, JSON.parse(planKey) as unknown).then(
      (answer) => {
        if (!current) return;
        if (answer.type !== 'sync') setPlanAnswer({ key: planKey, plan: null, error: 'The server started an operation instead of returning a plan' });
        else setPlanAnswer({ key: planKey, plan: readPlan(name, answer.metadata), error: null });
      },
      (err: unknown) => {
        if (current) setPlanAnswer({ key: planKey, plan: null, error: errorText(err) });
      },
    );
    return () => {
      current = false;
    };
  }, [planKey, path, name]);

  const open = (action: 'evacuate' | 'restore'): void => {
    setChoices({ action, mode: '', parallel: '' });
    setRunError(null);
  };

  const confirm = async (): Promise<void> => {
    if (!choices) return;
    setSubmitting(true);
    setRunError(null);
    try {
      const answer = await request('POST', `${path}/state`, requestBody(choices, false));
      const op = answer.metadata as Operation;
      setRun((v) => applyOperation(v.operation?.id === op.id ? v : emptyRun, op, name, Date.now()));
      setChoices(null);
      member.reload();
    } catch (err) {
      setRunError(errorText(err));
    } finally {
      setSubmitting(false);
    }
  };

  const cancel = async (): Promise<void> => {
    if (!run.operation) return;
    setCancelling(true);
    try {
      await request('DELETE', `/1.0/operations/${encodeURIComponent(run.operation.id)}`);
    } catch (err) {
      setCancelling(false);
      setRunError(errorText(err));
    }
  };

  const busy = run.operation !== null && !isFinalStatus(run.operation.status);
  // The answer for the current choices only; an older one is not shown while the new one is asked.
  const plan = planAnswer !== null && planAnswer.key === planKey ? { ...planAnswer, loading: false } : { plan: null, error: null, loading: planKey !== null };
  const planReady = plan.plan !== null && !plan.loading;
  const refused = (plan.plan?.refusals.length ?? 0) > 0;

  return (
    <>
      <h1>
        Member {name} {member.data && <StatusText status={member.data.status} />}
      </h1>
      {member.error && <p className="error">{member.error}</p>}
      {member.data && <p className="muted" data-testid="member-message">{member.data.message}</p>}
      <div className="actions">
        <button type="button" className="primary" onClick={() => open('evacuate')} disabled={busy || submitting}>
          Evacuate
        </button>
        <button type="button" onClick={() => open('restore')} disabled={busy || submitting}>
          Restore
        </button>
      </div>
      {runError && <p className="error" data-testid="run-request-error">{runError}</p>}

      {choices && (
        <section className="panel" data-testid="request-form">
          <h2>{choices.action === 'evacuate' ? 'Evacuate' : 'Restore'} {name}</h2>
          <form onSubmit={(e) => e.preventDefault()}>
            <label>
              Action
              <select aria-label="Action" value={choices.mode} onChange={(e) => setChoices({ ...choices, mode: e.target.value })}>
                {modes[choices.action].map((mode) => (
                  <option key={mode} value={mode}>
                    {mode === '' ? (choices.action === 'evacuate' ? "default (each instance's cluster.evacuate)" : 'default (move back and start)') : mode}
                  </option>
                ))}
              </select>
            </label>
            <label>
              Parallel copies
              <input aria-label="Parallel copies" type="number" min={1} max={64} placeholder="cluster default" value={choices.parallel} onChange={(e) => setChoices({ ...choices, parallel: e.target.value })} />
            </label>
          </form>
          <h2>Plan</h2>
          {plan.loading && <p className="muted">Planning…</p>}
          {plan.error && <p className="error" data-testid="plan-error">{plan.error}</p>}
          {plan.plan && !plan.loading && choices.action === 'restore' && choices.mode === 'skip' && (
            <p className="muted">skip: the member comes back online; its instances stay where they are and nothing is started.</p>
          )}
          {plan.plan && !plan.loading && !(choices.action === 'restore' && choices.mode === 'skip') && <PlanTable plan={plan.plan} />}
          <div className="actions">
            <button type="button" className="primary" onClick={() => void confirm()} disabled={!planReady || refused || submitting}>
              Confirm {choices.action === 'evacuate' ? 'evacuation' : 'restore'}
            </button>
            <button type="button" onClick={() => setChoices(null)} disabled={submitting}>
              Close
            </button>
            {refused && <span className="error">Not possible while there are refusals.</span>}
          </div>
        </section>
      )}

      {run.progress && <LiveRun run={run} progress={run.progress} onCancel={() => void cancel()} cancelling={cancelling} />}
      {!run.progress && !runError && <p className="muted">No evacuation or restore of {name} recorded.</p>}
    </>
  );
}
