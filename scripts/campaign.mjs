#!/usr/bin/env node
// Runs every test file (or those matching the filters) N times, one file per run, J files at a time, round
// after round, and prints how many runs each file passed. The log of every failed run is kept.
// Usage: node scripts/campaign.mjs [--rounds N] [--jobs J] [--out DIR] [--built] [filter...]
//   --rounds  runs of each file (default 20)    --jobs  files running at once (default 1, as `npm test`)
//   --out     where the results go (default a new directory under the system's temporary directory):
//             `runs.tsv` (one line per run: round, file, result, seconds) and `fail-<round>-<file>.log`
//   --built   test clusters start the daemon built in dist/ (run `npm run build` first), as `npm test` does
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';

const root = new URL('..', import.meta.url).pathname;
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rounds: { type: 'string', default: '20' },
    jobs: { type: 'string', default: '1' },
    out: { type: 'string' },
    built: { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const jobs = Number(values.jobs);
if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(jobs) || jobs < 1) {
  console.error('--rounds and --jobs take positive integers');
  process.exit(2);
}
const out = values.out ?? mkdtempSync(join(tmpdir(), 'roost-campaign-'));
mkdirSync(out, { recursive: true });

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return walk(p);
    return name.endsWith('.test.ts') ? [p] : [];
  });
}
const files = walk(join(root, 'test'))
  .map((f) => relative(root, f))
  .filter((f) => positionals.length === 0 || positionals.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}

const tasks = [];
for (let round = 1; round <= rounds; round += 1) for (const file of files) tasks.push({ round, file });
const results = new Map(files.map((f) => [f, { passed: 0, failed: 0, seconds: [] }]));
writeFileSync(join(out, 'runs.tsv'), 'round\tfile\tresult\tseconds\n');
console.log(`${files.length} files × ${rounds} rounds, ${jobs} at a time; results in ${out}`);

function runOne({ round, file }) {
  return new Promise((resolve) => {
    const started = Date.now();
    const args = ['scripts/run-tests.mjs', ...(values.built ? ['--built'] : []), file];
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks = [];
    child.stdout.on('data', (c) => chunks.push(c));
    child.stderr.on('data', (c) => chunks.push(c));
    child.on('close', (code) => {
      const seconds = (Date.now() - started) / 1000;
      const ok = code === 0;
      const r = results.get(file);
      if (ok) r.passed += 1;
      else {
        r.failed += 1;
        writeFileSync(join(out, `fail-${round}-${file.replaceAll('/', '_')}.log`), Buffer.concat(chunks));
      }
      r.seconds.push(seconds);
      appendFileSync(join(out, 'runs.tsv'), `${round}\t${file}\t${ok ? 'pass' : 'FAIL'}\t${seconds.toFixed(1)}\n`);
      if (!ok) console.log(`FAIL round ${round}: ${file} (${seconds.toFixed(1)} s)`);
      resolve();
    });
  });
}

let next = 0;
async function worker() {
  while (next < tasks.length) {
    const task = tasks[next];
    next += 1;
    await runOne(task);
  }
}
await Promise.all(Array.from({ length: jobs }, () => worker()));

const width = Math.max(...files.map((f) => f.length));
console.log(`\n${'file'.padEnd(width)}  passed  median s`);
for (const f of files) {
  const r = results.get(f);
  const sorted = [...r.seconds].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] ?? 0;
  console.log(`${f.padEnd(width)}  ${`${r.passed}/${r.passed + r.failed}`.padStart(6)}  ${median.toFixed(1).padStart(8)}`);
}
process.exit([...results.values()].some((r) => r.failed > 0) ? 1 : 0);
