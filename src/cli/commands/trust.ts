// `roost config trust ...`: the cluster's trust store, as `lxc config trust` shows and changes it. `add`
// without a certificate prints a trust token (its operation stays pending until a client uses it, it is
// revoked or it expires); `list-tokens` and `revoke-token` handle those tokens.

import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { X509Certificate } from 'node:crypto';
import type { Command } from 'commander';
import { asArray, asObject, bool, str, stringList } from '../../client/json.js';
import { encodeTrustToken } from '../../cluster/token.js';
import type { CliContext } from '../context.js';
import { formatTime, parseFormat, renderList, renderYaml } from '../format.js';
import { seg } from '../requests.js';
import { flattenOperations } from './operations.js';

/** Header of `roost config trust list` (as `lxc config trust list`). */
export const trustHeader = ['TYPE', 'NAME', 'COMMON NAME', 'FINGERPRINT', 'ISSUE DATE', 'EXPIRY DATE'];

/** Header of `roost config trust list-tokens`. */
export const trustTokenHeader = ['NAME', 'TOKEN', 'EXPIRES AT'];

const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** A date as `lxc config trust list` prints it (Go's `Jan 2, 2006 at 3:04pm (MST)`, in UTC). */
export function trustDate(date: Date): string {
  const h = date.getUTCHours();
  const hour12 = h % 12 === 0 ? 12 : h % 12;
  const minutes = String(date.getUTCMinutes()).padStart(2, '0');
  return `${months[date.getUTCMonth()]} ${date.getUTCDate()}, ${date.getUTCFullYear()} at ${hour12}:${minutes}${h < 12 ? 'am' : 'pm'} (UTC)`;
}

/** The rows of `roost config trust list`, sorted as `lxc` sorts them. */
export function trustRows(certificates: unknown[]): string[][] {
  return certificates
    .map((c) => {
      let commonName = '';
      let issued = '';
      let expires = '';
      try {
        const x509 = new X509Certificate(str(c, 'certificate'));
        commonName = /(?:^|\n)CN=([^\n]*)/.exec(x509.subject)?.[1] ?? '';
        issued = trustDate(new Date(x509.validFrom));
        expires = trustDate(new Date(x509.validTo));
      } catch {
        // An unreadable certificate still gets its row.
      }
      return [str(c, 'type'), str(c, 'name'), commonName, str(c, 'fingerprint').slice(0, 12), issued, expires];
    })
    .sort((a, b) => a.join('\u0000').localeCompare(b.join('\u0000')));
}

/** A pending trust token, rebuilt from its operation as `lxc` does (`ToCertificateAddToken`); null if it is not one. */
export function trustTokenOf(operation: unknown): { name: string; token: string; expiresAt: string; id: string } | null {
  const meta = asObject(asObject(operation).metadata);
  const request = asObject(meta.request);
  const name = str(request, 'name');
  const secret = str(meta, 'secret');
  const fingerprint = str(meta, 'fingerprint');
  if (str(operation, 'class') !== 'token' || str(operation, 'status') !== 'Running') return null;
  if (name === '' || secret === '' || fingerprint === '') return null;
  const expiresAt = str(meta, 'expiresAt');
  const token = encodeTrustToken({ client_name: name, fingerprint, addresses: stringList(meta.addresses), secret, expires_at: expiresAt });
  return { name, token, expiresAt, id: str(operation, 'id') };
}

interface AddFlags {
  name?: string;
  restricted?: boolean;
  projects?: string;
  type: string;
}

/** Register `roost config trust`. */
export function registerTrustCommands(config: Command, ctx: CliContext): void {
  const trust = config.command('trust').description('Manage trusted clients');

  trust
    .command('add')
    .description('Add a trusted client: print a one-time token for it, or trust a certificate file')
    .argument('[args...]', '[<remote>:] [<certificate file>]')
    .option('--name <name>', 'Name of the client (required for a token; default for a file: its name)')
    .option('--restricted', 'Restrict the client to the projects given with --projects')
    .option('--projects <list>', 'Projects the client may use, comma-separated')
    .option('--type <type>', 'Certificate type (client, metrics)', 'client')
    .action(async (args: string[], flags: AddFlags) => {
      if (args.length > 2) throw new Error('Invalid arguments; usage: roost config trust add [<remote>:] [<certificate file>]');
      if (flags.type !== 'client' && flags.type !== 'metrics') throw new Error(`Unknown certificate type "${flags.type}"`);
      // A first argument ending in a colon names the remote (`lxc` 5.0.2 took it for a file).
      const remoteArg = args[0]?.endsWith(':') ? args[0] : undefined;
      const file = remoteArg === undefined ? args[0] : args[1];
      const client = ctx.remoteOnly(remoteArg, 'roost config trust add [<remote>:] [<certificate file>]');
      const projects = flags.projects ? flags.projects.split(',').map((p) => p.trim()).filter((p) => p !== '') : [];
      if (file === undefined) {
        if (flags.type !== 'client') throw new Error('Cannot use metrics type certificate when using a token');
        if (!flags.name) throw new Error('A client name is required for a token (--name <name>)');
        const res = await client.request('POST', '/1.0/certificates', {
          name: flags.name,
          type: 'client',
          restricted: flags.restricted ?? false,
          projects,
          token: true,
        });
        const token = trustTokenOf(res.metadata);
        if (!token) throw new Error('The server answered a token request without a token');
        ctx.print(`Client ${flags.name} certificate add token:`);
        ctx.print(token.token);
        return;
      }
      let pem: string;
      try {
        pem = readFileSync(file, 'utf8');
      } catch (err) {
        throw new Error(`Cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`);
      }
      let der: Buffer;
      try {
        der = new X509Certificate(pem).raw;
      } catch {
        throw new Error(`${file} is not a PEM certificate`);
      }
      await client.request('POST', '/1.0/certificates', {
        name: flags.name ?? basename(file),
        type: flags.type,
        restricted: flags.restricted ?? false,
        projects,
        certificate: der.toString('base64'),
      });
    });

  trust
    .command('list')
    .alias('ls')
    .description('List trusted clients')
    .argument('[remote]', '[<remote>:]')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (remote: string | undefined, flags: { format: string }) => {
      const format = parseFormat(flags.format);
      const certificates = asArray(await ctx.remoteOnly(remote, 'roost config trust list [<remote>:]').get('/1.0/certificates?recursion=1'));
      ctx.write(renderList(format, { header: trustHeader, rows: trustRows(certificates), data: certificates }));
    });

  trust
    .command('show')
    .description('Show a trusted client')
    .argument('<fingerprint>', '[<remote>:]<fingerprint>')
    .action(async (raw: string) => {
      const { client, name } = ctx.target(raw, 'certificate fingerprint');
      const cert = asObject(await client.get(`/1.0/certificates/${seg(name)}`));
      ctx.write(renderYaml({
        name: str(cert, 'name'),
        type: str(cert, 'type'),
        restricted: bool(cert, 'restricted'),
        projects: stringList(cert.projects),
        certificate: str(cert, 'certificate'),
        fingerprint: str(cert, 'fingerprint'),
      }));
    });

  trust
    .command('remove')
    .alias('rm')
    .description('Remove a trusted client (it is refused from its next request on)')
    .argument('<fingerprint>', '[<remote>:]<fingerprint> (a unique prefix is enough)')
    .action(async (raw: string) => {
      const { client, name } = ctx.target(raw, 'certificate fingerprint');
      await client.request('DELETE', `/1.0/certificates/${seg(name)}`);
    });

  trust
    .command('list-tokens')
    .description('List the trust tokens not used yet')
    .argument('[remote]', '[<remote>:]')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (remote: string | undefined, flags: { format: string }) => {
      const format = parseFormat(flags.format);
      const client = ctx.remoteOnly(remote, 'roost config trust list-tokens [<remote>:]');
      const tokens = flattenOperations(await client.get('/1.0/operations?recursion=1&project=default'))
        .map(trustTokenOf)
        .filter((t): t is NonNullable<typeof t> => t !== null)
        .sort((a, b) => a.name.localeCompare(b.name));
      const rows = tokens.map((t) => [t.name, t.token, formatTime(t.expiresAt)]);
      const data = tokens.map((t) => ({ ClientName: t.name, Token: t.token, ExpiresAt: t.expiresAt }));
      ctx.write(renderList(format, { header: trustTokenHeader, rows, data }));
    });

  trust
    .command('revoke-token')
    .description('Revoke a trust token')
    .argument('<name>', '[<remote>:]<client name>')
    .action(async (raw: string) => {
      const { client, remote, name } = ctx.target(raw, 'client');
      const tokens = flattenOperations(await client.get('/1.0/operations?recursion=1&project=default')).map(trustTokenOf);
      const token = tokens.find((t) => t?.name === name);
      if (!token) throw new Error(`No certificate add token for member ${name} on remote: ${remote}`);
      await client.request('DELETE', `/1.0/operations/${seg(token.id)}`);
      ctx.print(`Certificate add token for ${name} deleted`);
    });
}
