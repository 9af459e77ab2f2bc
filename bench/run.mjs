#!/usr/bin/env node
// Runs benchmarks: `npm run bench -- <name>...` runs bench/<name>.ts through tsx, one after the other;
// with no name it lists them. Each benchmark is its own process so one cannot warm up the next.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('.', import.meta.url));
const available = readdirSync(dir)
  .filter((f) => f.endsWith('.ts') && f !== 'lib.ts') // lib.ts is what the benchmarks share
  .map((f) => f.slice(0, -3))
  .sort();
const names = process.argv.slice(2);

if (names.length === 0) {
  console.log(`benchmarks: ${available.join(', ')}\nrun one with: npm run bench -- <name>`);
  process.exit(0);
}
const unknown = names.filter((n) => !available.includes(n));
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.map((n) => `"${n}"`).join(', ')} (available: ${available.join(', ')})`);
  process.exit(2);
}
let failed = false;
for (const name of names) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', `bench/${name}.ts`], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    console.error(`benchmark ${name} failed (exit ${r.status ?? r.signal})`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
