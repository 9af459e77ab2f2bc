// One "host" of the scale simulation: several cluster members in one Node process, each a real `startDaemon`
// (its own name, data directory, HTTPS listener on 127.0.0.1:0 and unix socket), so that a hundred members fit
// on a small machine. Members of one process share one store object unless `--store-per-member` is given
// (the SQLite backend polls its change log per store object, so sharing makes one poll serve them all).
//
//   node --import tsx bench/scale/host.ts --store <url> --dir <dir> --members m001,m002 [--bootstrap] [--join-via <socket>]
//
// `--bootstrap` creates the cluster with the first member; otherwise every member joins with a token asked of
// the member whose unix socket is `--join-via`. Prints one JSON line `{"ready":[...]}` once every member answers,
// or `{"error":"..."}` and exits 1; runs until SIGTERM, then stops its members and exits.

import { join } from 'node:path';
import { Command } from 'commander';
import { pino } from 'pino';
import { startDaemon, type RunningDaemon } from '../../src/daemon/daemon.js';
import { daemonUmask } from '../../src/daemon/permissions.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/store.js';
import { RoostClient } from '../../src/client/client.js';
import { encodeJoinToken } from '../../src/cluster/token.js';

process.umask(daemonUmask);

const opts = new Command()
  .requiredOption('--store <url>', 'cluster store URL')
  .requiredOption('--dir <dir>', 'directory holding one data directory per member')
  .requiredOption('--members <names>', 'comma-separated member names')
  .option('--bootstrap', 'the first member creates the cluster')
  .option('--join-via <socket>', 'unix socket of a member that hands out join tokens')
  .option('--store-per-member', 'give every member its own store object (as separate processes have)')
  .parse()
  .opts<{ store: string; dir: string; members: string; bootstrap?: boolean; joinVia?: string; storePerMember?: boolean }>();

const names = opts.members.split(',').filter((n) => n !== '');
const log = pino({ level: process.env.ROOST_LOG_LEVEL ?? 'info' }, pino.destination(2));
const daemons: RunningDaemon[] = [];
let shared: Store | null = null;

/** A join token for `name`, asked of the member listening on `socket` (as `roost cluster add` does). */
async function joinToken(socket: string, name: string): Promise<string> {
  const client = new RoostClient(socket);
  try {
    const res = await client.request('POST', '/1.0/cluster/members', { server_name: name });
    const t = (res.metadata as { metadata: { serverName: string; secret: string; fingerprint: string; addresses: string[]; expiresAt: string; store: string } }).metadata;
    return encodeJoinToken({ server_name: t.serverName, secret: t.secret, fingerprint: t.fingerprint, addresses: t.addresses, expires_at: t.expiresAt, store: t.store });
  } finally {
    await client.close();
  }
}

async function startMember(name: string, bootstrap: boolean, joinVia: string | undefined): Promise<RunningDaemon> {
  // Setup, not a measurement: a SQLite store locked past its busy timeout by the other processes' writes (on a
  // loaded machine) fails a join; a member whose start failed is started again, a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startMemberOnce(name, bootstrap, joinVia);
    } catch (err) {
      if (attempt >= 4 || !(err instanceof Error && /database is locked|Cluster database unavailable/.test(err.message))) throw err;
      log.warn({ err, member: name, attempt }, 'member start failed on a busy store; starting it again');
      await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
}

async function startMemberOnce(name: string, bootstrap: boolean, joinVia: string | undefined): Promise<RunningDaemon> {
  const token = bootstrap ? undefined : await joinToken(joinVia ?? '', name);
  return startDaemon({
    name,
    dir: join(opts.dir, name),
    address: '127.0.0.1:0',
    storeUrl: opts.store,
    store: shared ?? undefined,
    bootstrap,
    joinToken: token,
    log: log.child({ name: `roostd:${name}` }),
  });
}

async function main(): Promise<void> {
  if (!opts.storePerMember) shared = await openStore(opts.store);
  const [first, ...rest] = names;
  if (first === undefined) throw new Error('no members given');
  if (opts.bootstrap) daemons.push(await startMember(first, true, undefined));
  else rest.unshift(first);
  const via = opts.bootstrap ? join(opts.dir, first, 'unix.socket') : opts.joinVia;
  if (via === undefined) throw new Error('--join-via is needed without --bootstrap');
  // A few joins at once: each is a token operation on the inviting member, then a daemon start here.
  const queue = [...rest];
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let name = queue.shift(); name !== undefined; name = queue.shift()) daemons.push(await startMember(name, false, via));
    }),
  );
  process.stdout.write(`${JSON.stringify({ ready: daemons.map((d) => d.member.name) })}\n`);
}

let stopping = false;
async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  await Promise.all(daemons.map((d) => d.stop().catch(() => undefined)));
  await shared?.close().catch(() => undefined);
  process.exit(code);
}
process.on('SIGTERM', () => void stop(0));
process.on('SIGINT', () => void stop(0));

main().catch((err: unknown) => {
  process.stdout.write(`${JSON.stringify({ error: err instanceof Error ? err.message : String(err) })}\n`);
  void stop(1);
});
