import { receiveCopy, packEntries, scanTree } from '../src/migration/tree.ts';
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { Readable } from 'node:stream';
import path from 'node:path';
const base = mkdtempSync('/var/tmp/recv-');
const src = path.join(base, 'src'); mkdirSync(src);
const buf = Buffer.alloc(10 << 20);
for (let i = 0; i < 20; i++) { randomFillSync(buf); writeFileSync(path.join(src, `f${i}`), buf); }
const paths = [...(await scanTree(src)).keys()];
const chunks: Buffer[] = [];
for await (const c of Readable.from(packEntries(src, paths, { onBytes: () => undefined, onEntry: () => undefined }), { objectMode: false })) chunks.push(c as Buffer);
const all = Buffer.concat(chunks);
console.log('archive', all.length);
function* pieces(size: number) { for (let o = 0; o < all.length; o += size) yield all.subarray(o, Math.min(all.length, o + size)); }
let n = 0;
for (let round = 0; round < 3; round++) for (const size of [16384, 262144]) {
  const dir = path.join(base, `t${n++}`); mkdirSync(dir);
  const t0 = performance.now();
  const r = await receiveCopy(dir, Readable.from(pieces(size), { objectMode: false }));
  console.log(size, (performance.now() - t0).toFixed(0), 'ms sync', r.syncMs);
  rmSync(dir, { recursive: true });
}
rmSync(base, { recursive: true });
