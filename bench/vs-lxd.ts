// Roost against the real LXD 5.0.2, same client, same steps, same run: a 3-member LXD cluster (Debian's
// `lxd`, installed if missing, daemons on 127.0.0.2-4 with their own LXD_DIRs) and a 3-member Roost
// cluster, both given the same locally built busybox image and driven by the same real `lxc` client:
// launch N running containers on m01, `lxc cluster evacuate m01 --force` (timed), check where they are,
// `lxc cluster restore m01 --force` (timed), check they are all home and running. For N = 6 and 24, and
// 6 again with `cluster.evacuate=stop` on every instance; beside them the floor F of the same run (all
// clean stops at once + the bytes at `tar | tar` speed + all starts at once, with LXC's own tools).
// Run (root): npm run bench -- vs-lxd     (ROOST_BENCH_SIZES=6,24; ROOST_BENCH_VS_LXD_STOP=0 skips the stop case)

import Table from 'cli-table3';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalCluster } from '../src/daemon/local-cluster.js';
import { lxcContainerName } from '../src/instances/drivers/lxc.js';
import { killStrayContainers } from '../test/containers/support.js';
import { since } from './lib.js';
import { runToolOk } from './vs-lxd/command.js';
import { measureFloor, type Floor } from './vs-lxd/floor.js';
import { ensureLxdInstalled, LxdCluster } from './vs-lxd/lxd.js';

if (process.getuid?.() !== 0) {
  console.error('vs-lxd needs root: it installs lxd if it is missing and runs LXD and LXC system containers. Run it as root.');
  process.exit(2);
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const memberNames = ['m01', 'm02', 'm03'];
const lxdAddresses = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
const source = 'm01';
/** Containers launched at the same time while a case is set up (the launches are not timed). */
const launchBatch = 3;
/** Deadline of one evacuate or restore through `lxc` (LXD needs about 5 s per container here). */
const commandTimeoutMs = 20 * 60_000;

const sizes = [...new Set((process.env.ROOST_BENCH_SIZES ?? '6,24').split(',').map((s) => Number(s.trim())))];
if (sizes.some((n) => !Number.isInteger(n) || n < 1)) {
  console.error(`ROOST_BENCH_SIZES must be a comma-separated list of positive integers, not "${process.env.ROOST_BENCH_SIZES}"`);
  process.exit(2);
}
type Mode = 'auto' | 'stop';
const cases: { n: number; mode: Mode }[] = sizes.map((n) => ({ n, mode: 'auto' as Mode }));
// The stop case uses the smallest size asked for (6 by default).
if (process.env.ROOST_BENCH_VS_LXD_STOP !== '0') cases.push({ n: Math.min(...sizes), mode: 'stop' });

/** One of the two clusters as the `lxc` client reaches it. */
interface Side {
  label: 'LXD' | 'Roost';
  /** The environment pointing `lxc` at a member. */
  env(member: string): NodeJS.ProcessEnv;
}

/** What one side did in one case. */
interface Timing {
  evacuate: number;
  restore: number;
  /** Anything the checks had to wait for after a command returned. */
  notes: string[];
}

const log = (line: string): void => console.log(`[vs-lxd] ${line}`);

// Everything made is undone in reverse order, once, whether the run succeeds, fails or is interrupted.
const undo: { what: string; run: () => Promise<void> }[] = [];
let cleaning: Promise<void> | null = null;
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    for (const step of undo.reverse()) {
      try {
        await step.run();
      } catch (err) {
        console.error(`[vs-lxd] cleanup: ${step.what} failed: ${err instanceof Error ? err.message : String(err)}`);
        process.exitCode = 1;
      }
    }
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`[vs-lxd] ${signal}: cleaning up`);
    void cleanUp().finally(() => process.exit(130));
  });
}

/** `lxc <args>` against `member` of `side`; must exit 0. */
function lxc(side: Side, member: string, args: string[], timeoutMs = 120_000): Promise<string> {
  return runToolOk('lxc', args, { env: side.env(member), timeoutMs });
}

/** Status and location of every instance, as `lxc list` shows them. */
async function listing(side: Side): Promise<Map<string, { status: string; location: string }>> {
  const out = await lxc(side, source, ['list', '--format', 'csv', '-c', 'nsL']);
  const rows = new Map<string, { status: string; location: string }>();
  for (const line of out.split('\n').filter((l) => l.trim() !== '')) {
    const [name = '', status = '', location = ''] = line.split(',');
    rows.set(name, { status, location });
  }
  return rows;
}

/**
 * Check that every instance of `names` is `status` and placed as `where` says. A state that is not there
 * yet when the command returned is waited for (60 s at most) and noted: the timed command claimed too early.
 */
async function expectInstances(side: Side, names: string[], status: string, where: (location: string) => boolean, what: string, notes: string[]): Promise<void> {
  const t0 = process.hrtime.bigint();
  const deadline = Date.now() + 60_000;
  for (let polls = 0; ; polls++) {
    const rows = await listing(side);
    const wrong = names.filter((n) => {
      const r = rows.get(n);
      return !r || r.status !== status || !where(r.location);
    });
    if (wrong.length === 0) {
      // Only a listing that showed otherwise counts: the time of one `lxc list` itself is no waiting.
      if (polls > 0) notes.push(`${side.label}: ${what} only ${since(t0).toFixed(1)} s after lxc returned`);
      return;
    }
    if (Date.now() > deadline) {
      const shown = wrong.map((n) => `${n} ${rows.get(n)?.status ?? 'missing'} on ${rows.get(n)?.location ?? '-'}`).join(', ');
      throw new Error(`${side.label}: not ${what}: ${shown}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Launch, evacuate (timed), check, restore (timed), check: the same steps on either side. */
async function runCase(side: Side, names: string[], mode: Mode): Promise<Timing> {
  const notes: string[] = [];
  for (let i = 0; i < names.length; i += launchBatch) {
    await Promise.all(names.slice(i, i + launchBatch).map((name) => lxc(side, source, ['launch', 'busybox', name, '--target', source], 300_000)));
  }
  if (mode === 'stop') {
    for (const name of names) await lxc(side, source, ['config', 'set', name, 'cluster.evacuate', 'stop']);
  }
  await expectInstances(side, names, 'RUNNING', (l) => l === source, `all running on ${source} before the evacuation`, notes);

  const t0 = process.hrtime.bigint();
  await lxc(side, source, ['cluster', 'evacuate', source, '--force'], commandTimeoutMs);
  const evacuate = since(t0);
  if (mode === 'auto') await expectInstances(side, names, 'RUNNING', (l) => l !== source && memberNames.includes(l), 'all running elsewhere', notes);
  else await expectInstances(side, names, 'STOPPED', (l) => l === source, `all stopped on ${source}`, notes);

  const t1 = process.hrtime.bigint();
  await lxc(side, source, ['cluster', 'restore', source, '--force'], commandTimeoutMs);
  const restore = since(t1);
  await expectInstances(side, names, 'RUNNING', (l) => l === source, `all running on ${source} again`, notes);
  return { evacuate, restore, notes };
}

/** Remove the case's instances so the next case starts from an empty cluster. */
async function deleteAll(side: Side, names: string[]): Promise<void> {
  await lxc(side, source, ['delete', '--force', ...names], 600_000);
}

const seconds = (s: number): string => s.toFixed(1);
const ratio = (lxd: number, roost: number): string => `${(lxd / roost).toFixed(1)}x`;
const floorText = (f: Floor): string => `${f.total.toFixed(1)} (${f.stop.toFixed(1)} + ${f.copy === null ? '-' : f.copy.toFixed(1)} + ${f.start.toFixed(1)})`;

const started = new Date();
const loadAtStart = os.loadavg()[0] ?? 0;
const table = new Table({
  head: ['N', 'mode', 'LXD evacuate s', 'Roost evacuate s', 'LXD/Roost', 'LXD restore s', 'Roost restore s', 'LXD/Roost', 'F s (stop + copy + start)', 'Roost / floor: evacuate, restore'],
  style: { head: [], border: [] },
});
const notes: string[] = [];
/** What to show when a step fails: the end of each daemon's log (they are removed by the cleanup). */
const failureLogs: (() => string)[] = [];

/** The last lines of a file, headed by a title. */
function tailOf(title: string, file: string, lines = 20): string {
  try {
    return `--- ${title} (last ${lines} lines)\n${readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n')}`;
  } catch {
    return `--- ${title}: no log`;
  }
}

try {
  await ensureLxdInstalled(log);
  const lxdVersion = (await runToolOk('lxd', ['--version'], { timeoutMs: 30_000 })).trim();
  const work = await mkdtemp(path.join(os.tmpdir(), 'roost-vs-lxd-'));
  undo.push({ what: `removing ${work}`, run: () => rm(work, { recursive: true, force: true }) });
  const lxcConf = path.join(work, 'lxc-conf');
  const tarball = path.join(work, 'busybox.tar.gz');

  const lxd = new LxdCluster(await mkdtemp(path.join(os.tmpdir(), 'roost-vs-lxd-daemons-')));
  undo.push({
    what: 'taking the LXD cluster down',
    run: async () => {
      for (const note of await lxd.down()) log(`LXD cleanup: ${note}`);
    },
  });
  const roostDir = await mkdtemp(path.join(os.tmpdir(), 'roost-vs-lxd-roost-'));
  const roost = new LocalCluster(roostDir);
  for (const m of memberNames) {
    failureLogs.push(() => tailOf(`LXD ${m}`, path.join(lxd.root, `${m}.log`)));
    failureLogs.push(() => tailOf(`Roost ${m}`, path.join(roostDir, m, 'roostd.log')));
  }
  undo.push({
    what: 'taking the Roost cluster down',
    run: async () => {
      try {
        await roost.down(true);
      } finally {
        killStrayContainers(roostDir);
        await rm(roostDir, { recursive: true, force: true });
      }
    },
  });

  const t0 = process.hrtime.bigint();
  const setup = await Promise.allSettled([
    runToolOk('sh', [path.join(repoRoot, 'scripts', 'build-busybox-image.sh'), tarball], { timeoutMs: 120_000 }),
    lxd.up(memberNames, lxdAddresses),
    roost.up(memberNames.length),
  ]);
  for (const r of setup) if (r.status === 'rejected') throw r.reason;
  log(`${lxdVersion} cluster on ${lxdAddresses.join(', ')}, Roost cluster, busybox image: ${seconds(since(t0))} s`);

  const lxdSide: Side = { label: 'LXD', env: (m) => ({ ...lxd.env(m), LXD_CONF: lxcConf }) };
  const roostSide: Side = { label: 'Roost', env: (m) => ({ ...process.env, LXD_DIR: path.join(roostDir, m), LXD_CONF: lxcConf }) };
  const roostMembers = (await roost.state()).members.map((m) => m.name);
  if (roostMembers.join(',') !== memberNames.join(',')) throw new Error(`Roost members are ${roostMembers.join(', ')}, expected ${memberNames.join(', ')}`);
  for (const side of [lxdSide, roostSide]) await lxc(side, source, ['image', 'import', tarball, '--alias', 'busybox'], 300_000);

  for (const { n, mode } of cases) {
    // Names are not reused from one case to the next: Roost's move service may still remove, up to
    // ROOST_MOVE_SWEEP_INTERVAL_MS after a restore, a volume a restore put on m01 whose record is gone, and
    // so catch a new instance of the same name between its volume and its record (seen as ENOENT on launch).
    const names = Array.from({ length: n }, (_, i) => `${mode}${n}-${i + 1}`);
    log(`N=${n} ${mode}: LXD`);
    const onLxd = await runCase(lxdSide, names, mode);
    await deleteAll(lxdSide, names);
    log(`N=${n} ${mode}: LXD ${seconds(onLxd.evacuate)} / ${seconds(onLxd.restore)} s; Roost`);
    const onRoost = await runCase(roostSide, names, mode);
    log(`N=${n} ${mode}: Roost ${seconds(onRoost.evacuate)} / ${seconds(onRoost.restore)} s; floor`);
    // The floor on Roost's containers (home on m01 again, running): LXC's config of each is in m01's lxcpath.
    const floor = await measureFloor(
      path.join(roostDir, source, 'lxc'),
      names.map((name) => ({
        lxcName: lxcContainerName(source, 'default', name),
        rootfs: path.join(roostDir, source, 'storage-pools', 'default', 'containers', `default_${name}`),
      })),
      mode === 'auto',
    );
    await deleteAll(roostSide, names);
    notes.push(...onLxd.notes.map((x) => `N=${n} ${mode}, ${x}`), ...onRoost.notes.map((x) => `N=${n} ${mode}, ${x}`));
    if (mode === 'auto') notes.push(`N=${n} ${mode}: the floor copied ${(floor.bytes / 1e6).toFixed(1)} MB`);
    table.push([
      String(n),
      mode,
      seconds(onLxd.evacuate),
      seconds(onRoost.evacuate),
      ratio(onLxd.evacuate, onRoost.evacuate),
      seconds(onLxd.restore),
      seconds(onRoost.restore),
      ratio(onLxd.restore, onRoost.restore),
      floorText(floor),
      // Pinned instances stay: their evacuation can be no faster than the stops, their restore than the starts.
      mode === 'auto'
        ? `${(onRoost.evacuate / floor.total).toFixed(1)}x, ${(onRoost.restore / floor.total).toFixed(1)}x`
        : `${(onRoost.evacuate / floor.stop).toFixed(1)}x, ${(onRoost.restore / floor.start).toFixed(1)}x`,
    ]);
  }

  console.log(`Roost against ${lxdVersion}: same lxc ${(await runToolOk('lxc', ['--version'], { timeoutMs: 30_000 })).trim()} client, same steps, busybox containers launched on m01 of 3 members — ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus().length} cores, load ${loadAtStart.toFixed(1)} at start`);
  console.log(table.toString());
  console.log(`Evacuate = lxc cluster evacuate m01 --force; restore = lxc cluster restore m01 --force (wall time of the lxc command).`);
  console.log(`F = all N containers stopped at once (lxc-stop, clean) + their rootfs bytes copied by tar | tar + all N started at once (lxc-start -d, lxc-wait RUNNING), measured on Roost's containers on m01 right after its restore.`);
  console.log(`Mode auto: N running containers moved away and back; mode stop: the same with cluster.evacuate=stop on each (they stay, stopped), compared with the stops alone (evacuate) and the starts alone (restore).`);
  for (const note of notes) console.log(`- ${note}`);
} catch (err) {
  console.error(`[vs-lxd] failed: ${err instanceof Error ? err.message : String(err)}`);
  for (const tail of failureLogs) console.error(tail());
  process.exitCode = 1;
} finally {
  await cleanUp();
}
