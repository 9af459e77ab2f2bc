// The quick start: bring up a local 3-member cluster, launch a dozen process instances on m01 that
// keep writing to files in their volumes, move one between members, then evacuate m01 with live
// progress, show where everything went with every byte intact, restore it, and show everything home.
// Usage: npm run demo [-- --dir DIR]   (DIR defaults to the same folder `roost up` uses)

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defaultClusterDir } from '../src/cli/local-cluster.js';

const root = resolve(import.meta.dirname, '..');
const dirArg = process.argv.indexOf('--dir');
const clusterDir = resolve(dirArg > 0 ? (process.argv[dirArg + 1] ?? '') : defaultClusterDir());
const dirFlag = ['--dir', clusterDir];
const env = { ...process.env, ROOST_DIR: join(clusterDir, 'm01') };

const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
function step(text: string): void {
  process.stdout.write(`\n${bold(`==> ${text}`)}\n`);
}

/** Run `roost ...`, showing its output; returns stdout when captured. */
function roost(args: string[], options: { capture?: boolean; allowFail?: boolean } = {}): string {
  if (!options.capture) process.stdout.write(`$ roost ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, [join(root, 'bin', 'roost.js'), ...args], {
    env,
    stdio: options.capture ? ['ignore', 'pipe', options.allowFail ? 'ignore' : 'inherit'] : 'inherit',
    encoding: 'utf8',
  });
  if (r.status !== 0 && !options.allowFail) {
    process.stderr.write(`demo: "roost ${args.join(' ')}" failed (exit ${String(r.status)})\n`);
    process.exit(1);
  }
  return r.stdout ?? '';
}

interface Listed {
  name: string;
  status: string;
  location: string;
}

function list(): Listed[] {
  return (JSON.parse(roost(['list', '--format', 'json'], { capture: true })) as Listed[]).filter((i) => i.name.startsWith('demo-'));
}

function volumeDir(member: string, kind: 'containers' | 'custom', name: string): string {
  return join(clusterDir, member, 'storage-pools', 'default', kind, `default_${name}`);
}

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Fingerprints of what must survive: each instance's fixed blob and the first lines it wrote. */
function fingerprint(instances: Listed[]): Map<string, { blob: string; head: string }> {
  const out = new Map<string, { blob: string; head: string }>();
  for (const i of instances) {
    const dir = volumeDir(i.location, 'containers', i.name);
    const lines = existsSync(join(dir, 'data.txt')) ? readFileSync(join(dir, 'data.txt'), 'utf8').split('\n') : [];
    out.set(i.name, { blob: sha(join(dir, 'blob.bin')), head: lines.slice(0, 3).join('\n') });
  }
  return out;
}

function verify(before: Map<string, { blob: string; head: string }>, label: string): void {
  let ok = 0;
  for (const i of list()) {
    const was = before.get(i.name);
    if (!was) continue;
    const now = fingerprint([i]).get(i.name);
    if (!now || now.blob !== was.blob || !now.head.startsWith(was.head)) {
      process.stderr.write(`demo: data of ${i.name} differs ${label}!\n`);
      process.exit(1);
    }
    ok++;
  }
  const vol = list().find((x) => x.name === 'demo-05');
  const shared = vol ? join(volumeDir(vol.location, 'custom', 'demo-vol'), 'log.txt') : '';
  const volLines = shared && existsSync(shared) ? readFileSync(shared, 'utf8').split('\n').length - 1 : 0;
  process.stdout.write(`Data check ${label}: ${ok} instances, every blob identical and every log intact; demo-vol holds ${volLines} lines written by demo-05.\n`);
}

// 1. A local cluster.
step('Start a local 3-member cluster (roost up)');
roost(['up', '--members', '3', ...dirFlag]);

// Clean up a previous demo run so the demo can be repeated.
for (const i of list()) {
  roost(['stop', i.name, '--force'], { capture: true, allowFail: true });
  roost(['delete', i.name], { capture: true, allowFail: true });
}
roost(['storage', 'volume', 'delete', 'default', 'demo-vol'], { capture: true, allowFail: true });
roost(['cluster', 'restore', 'm01', '--force'], { capture: true, allowFail: true });

// 2. Instances on m01.
step('Launch 12 process instances on m01, each writing to files in its volume');
const workload =
  '[ -f blob.bin ] || head -c 2097152 /dev/urandom > blob.bin; trap "echo stopping >> data.txt; sleep 0.5; exit 0" TERM; ' +
  'n=0; while true; do n=$((n+1)); echo "$n $(date +%T.%N)" >> data.txt; [ -d shared ] && echo "$n" >> shared/log.txt; sleep 0.2; done';
roost(['storage', 'volume', 'create', 'default', 'demo-vol', '--target', 'm01']);
for (let n = 1; n <= 12; n++) {
  const name = `demo-${String(n).padStart(2, '0')}`;
  const extra = n >= 11 ? ['-c', 'cluster.evacuate=stop'] : [];
  roost(['init', name, '--target', 'm01', '-c', `process.command=${workload}`, ...extra], { capture: true });
  if (n === 5) roost(['storage', 'volume', 'attach', 'default', 'demo-vol', name, 'shared', 'shared'], { capture: true });
  if (n !== 10) roost(['start', name], { capture: true });
}
// Let every instance write its blob and a few lines.
const deadline = Date.now() + 15_000;
while (list().some((i) => i.status === 'Running' && !existsSync(join(volumeDir(i.location, 'containers', i.name), 'data.txt')))) {
  if (Date.now() > deadline) break;
  spawnSync('sleep', ['0.2']);
}
// demo-10 never ran: give it data of its own so its bytes can be checked too.
spawnSync('sh', ['-c', 'head -c 1048576 /dev/urandom > blob.bin; echo "never started" > data.txt'], { cwd: volumeDir('m01', 'containers', 'demo-10') });
roost(['list']);

// 3. A single move.
step('Move demo-01 to m02 (stop, copy over mutual TLS, verify, commit, start)');
const beforeMove = fingerprint(list());
roost(['move', 'demo-01', '--target', 'm02']);
roost(['info', 'demo-01']);
verify(beforeMove, 'after the move');

// 4. Evacuate.
step('Evacuate m01 for maintenance (demo-11 and demo-12 are pinned with cluster.evacuate=stop)');
roost(['cluster', 'evacuate', 'm01', '--dry-run']);
const beforeEvacuation = fingerprint(list());
roost(['cluster', 'evacuate', 'm01', '--force']);
roost(['cluster', 'list']);
roost(['list']);
verify(beforeEvacuation, 'after the evacuation');

// 5. Restore.
step('Restore m01: start what was stopped there, bring every moved instance home');
roost(['cluster', 'restore', 'm01', '--force']);
roost(['cluster', 'list']);
roost(['list']);
verify(beforeEvacuation, 'after the restore');

step('Done');
process.stdout.write(
  `The cluster keeps running in ${clusterDir}. Try "npx roost list", "npx roost cluster evacuate m02",\n` +
    `"npx roost monitor --pretty"; "npx roost down --purge" stops it and removes its data.\n`,
);
