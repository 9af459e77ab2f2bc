// The `roostd` command: run one member in the foreground until SIGTERM/SIGINT.

import { Command } from 'commander';
import { startDaemon } from './daemon.js';
import { decodeJoinToken } from '../cluster/token.js';
import { daemonUmask, resolveGroup } from './permissions.js';

// First of all: nothing the daemon creates may be readable by other users (its store holds the cluster key).
process.umask(daemonUmask);

const program = new Command()
  .name('roostd')
  .description('Run one Roost cluster member')
  .requiredOption('--name <name>', 'member name')
  .requiredOption('--dir <dir>', 'member data directory (its unix socket is <dir>/unix.socket)')
  .option('--address <host:port>', 'HTTPS address for members (the one they dial, so not 0.0.0.0)', '127.0.0.1:8443')
  .option('--store <url>', 'cluster store URL: sqlite:<path> (one host) or etcd://host:port,...[?cacert=&cert=&key=]; a join token carries it')
  .option('--bootstrap', 'create a new cluster if it does not exist yet')
  .option('--join <token>', 'join the cluster with a token from "roost cluster add"')
  .option('--group <group>', 'group whose members may use the unix socket (default: the daemon user\'s primary group)')
  .showHelpAfterError();

program.parse();
const opts = program.opts<{ name: string; dir: string; address: string; store?: string; bootstrap?: boolean; join?: string; group?: string }>();

async function main(): Promise<void> {
  const storeUrl = opts.store ?? (opts.join ? decodeJoinToken(opts.join).store : '');
  if (!storeUrl) throw new Error('no store URL: pass --store sqlite:<path> or --store etcd://host:port,... (or a join token that carries one)');
  const daemon = await startDaemon({
    name: opts.name,
    dir: opts.dir,
    address: opts.address,
    storeUrl,
    bootstrap: opts.bootstrap,
    joinToken: opts.join,
    socketGroup: opts.group === undefined ? undefined : await resolveGroup(opts.group),
  });
  let stopping = false;
  const end = (how: () => Promise<void>): void => {
    if (stopping) return;
    stopping = true;
    void how().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  // SIGTERM is the host shutting down (what an init system sends): `core.shutdown_action` applies.
  // SIGINT (Ctrl-C, `roost down`) only stops the daemon.
  process.on('SIGTERM', () => end(daemon.shutdown));
  process.on('SIGINT', () => end(daemon.stop));
  void daemon.removed.then(() => end(daemon.stop));
}

main().catch((err: unknown) => {
  process.stderr.write(`Error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
