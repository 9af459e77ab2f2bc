// `roost up` / `roost down`: a local cluster on this host (the work is in ../local-cluster.ts).

import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { downCommand, upCommand } from '../local-cluster.js';
import { parsePositiveInt } from '../requests.js';

/** Register `roost up` and `roost down`. */
export function registerLocalClusterCommands(program: Command, ctx: CliContext): void {
  const out = (line: string): void => ctx.print(line);
  program
    .command('up')
    .description('Start (or complete) a local cluster on this host')
    .option('--members <n>', 'Number of members', '3')
    .option('--dir <dir>', 'Directory of the local cluster')
    .option('--store <store>', 'Store of a new cluster: sqlite (one file) or etcd (a local 3-node etcd, as on several hosts)')
    .option('--group <group>', 'Group whose members may use the members\' unix sockets (kept for later starts)')
    .action(async (flags: { members: string; dir?: string; store?: string; group?: string }) => {
      await upCommand({ members: parsePositiveInt(flags.members, '--members'), dir: flags.dir, store: flags.store, group: flags.group }, out);
    });

  program
    .command('down')
    .description('Stop the local cluster\'s members, instances and local etcd')
    .option('--dir <dir>', 'Directory of the local cluster')
    .option('--purge', 'Remove the cluster directory as well')
    .action(async (flags: { dir?: string; purge?: boolean }) => {
      await downCommand({ dir: flags.dir, purge: flags.purge ?? false }, out);
    });
}
