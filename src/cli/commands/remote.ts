// `roost remote add|list|switch|remove|get-default`: the clusters this CLI reaches, as `lxc remote` has
// them. Adding one takes a trust token (printed by `roost config trust add --name <client>` on a member)
// or an address for a client the cluster trusts already; the work is in ../../client/remotes.ts.

import type { Command } from 'commander';
import { decodeTrustToken } from '../../cluster/token.js';
import { defaultRemote, localRemote, readCliConfig, resolveSocketPath } from '../../client/config.js';
import { addRemoteFromAddress, addRemoteFromToken, removeRemote, switchRemote } from '../../client/remotes.js';
import type { CliContext } from '../context.js';
import { parseFormat, renderList } from '../format.js';
import { askBool } from '../prompt.js';

/** Header of `roost remote list` (as `lxc remote list`, without the image-server columns' content). */
export const remoteHeader = ['NAME', 'URL', 'PROTOCOL', 'AUTH TYPE', 'PUBLIC', 'STATIC', 'GLOBAL'];

/** One remote as `roost remote list` shows it. */
export interface RemoteRow {
  name: string;
  url: string;
  authType: string;
  isStatic: boolean;
  current: boolean;
}

/** The rows of `roost remote list`: `local` and every configured remote, by name; the default one marked. */
export function remoteRows(remotes: RemoteRow[]): string[][] {
  return [...remotes]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((r) => [r.current ? `${r.name} (current)` : r.name, r.url, 'lxd', r.authType, 'NO', r.isStatic ? 'YES' : 'NO', 'NO']);
}

/** Register `roost remote`. */
export function registerRemoteCommands(program: Command, ctx: CliContext): void {
  const remote = program.command('remote').description('Manage the clusters this client reaches (remotes)');

  remote
    .command('add')
    .description('Add a remote from a trust token (roost config trust add --name <client> prints one), or from an address for a client trusted already')
    .argument('<name>')
    .argument('<token-or-address>', 'a trust token, or https://host[:port]')
    .option('--accept-certificate', 'Accept the server certificate without asking (address form)')
    .action(async (name: string, tokenOrAddress: string, flags: { acceptCertificate?: boolean }) => {
      const env = ctx.env;
      const added = decodeTrustToken(tokenOrAddress)
        ? await addRemoteFromToken(name, tokenOrAddress, env)
        : await addRemoteFromAddress(
            name,
            tokenOrAddress,
            async (fingerprint) => flags.acceptCertificate === true || askBool(`Certificate fingerprint: ${fingerprint}\nok (y/n)? `, ctx.io),
            env,
          );
      if (added.createdIdentity) ctx.warn('Generated a client certificate for this user (kept next to the CLI config, readable by you only)');
      if (added.addedToTrustStore) ctx.print(`Client certificate now trusted by server: ${name}`);
      ctx.print(`Remote ${name} added (${added.addr})`);
    });

  remote
    .command('list')
    .alias('ls')
    .description('List the remotes')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action((flags: { format: string }) => {
      const format = parseFormat(flags.format);
      const env = ctx.env;
      const current = defaultRemote(env);
      let socket = '';
      try {
        socket = resolveSocketPath(env);
      } catch {
        // No local member configured: `local` is still listed, without a socket.
      }
      const rows: RemoteRow[] = [
        { name: localRemote, url: `unix://${socket}`, authType: 'file access', isStatic: true, current: current === localRemote },
        ...Object.entries(readCliConfig(env)?.remotes ?? {}).map(([name, r]) => ({ name, url: r.addr, authType: 'tls', isStatic: false, current: current === name })),
      ];
      const data = rows.map((r) => ({ name: r.name, addr: r.url, protocol: 'lxd', auth_type: r.authType, public: false, static: r.isStatic, current: r.current }));
      ctx.write(renderList(format, { header: remoteHeader, rows: remoteRows(rows), data }));
    });

  remote
    .command('switch')
    .description('Set the default remote (names without <remote>: go to it)')
    .argument('<name>')
    .action((name: string) => switchRemote(name, ctx.env));

  remote
    .command('remove')
    .alias('rm')
    .description('Remove a remote (its cluster still trusts this client until "roost config trust remove" there)')
    .argument('<name>')
    .action((name: string) => removeRemote(name, ctx.env));

  remote
    .command('get-default')
    .description('Print the default remote')
    .action(() => ctx.print(defaultRemote(ctx.env)));
}
