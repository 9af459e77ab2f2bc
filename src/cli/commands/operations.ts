// `roost operation list|show|cancel`.

import type { Command } from 'commander';
import { asArray, asObject, bool, str } from '../../client/json.js';
import type { CliContext } from '../context.js';
import { formatTime, parseFormat, renderList, renderYaml, upperState } from '../format.js';
import { seg } from '../requests.js';

/** Header of `roost operation list` (as `lxc operation list`). */
export const operationHeader = ['ID', 'TYPE', 'DESCRIPTION', 'STATUS', 'CANCELABLE', 'CREATED', 'LOCATION'];

/** `GET /1.0/operations?recursion=1` answers operations grouped by status; list them in one array. */
export function flattenOperations(metadata: unknown): unknown[] {
  return Object.values(asObject(metadata)).flatMap((group) => asArray(group));
}

/** The rows of `roost operation list`. */
export function operationRows(operations: unknown[]): string[][] {
  return operations.map((op) => [
    str(op, 'id'),
    str(op, 'class').toUpperCase(),
    str(op, 'description'),
    upperState(str(op, 'status')),
    bool(op, 'may_cancel') ? 'YES' : 'NO',
    formatTime(str(op, 'created_at')),
    str(op, 'location'),
  ]);
}

/** Register `roost operation`. */
export function registerOperationCommands(program: Command, ctx: CliContext): void {
  const operation = program.command('operation').description('Manage background operations');

  operation
    .command('list')
    .alias('ls')
    .description('List operations')
    .argument('[remote]', '[<remote>:]')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (remote: string | undefined, flags: { format: string }) => {
      const format = parseFormat(flags.format);
      const client = ctx.remoteOnly(remote, 'roost operation list [<remote>:]');
      const operations = flattenOperations(await client.get('/1.0/operations?recursion=1'));
      ctx.write(renderList(format, { header: operationHeader, rows: operationRows(operations), data: operations }));
    });

  operation
    .command('show')
    .description('Show an operation')
    .argument('<id>', '[<remote>:]<id>')
    .action(async (raw: string) => {
      const { client, name: id } = ctx.target(raw, 'operation');
      ctx.write(renderYaml(await client.get(`/1.0/operations/${seg(id)}`)));
    });

  operation
    .command('cancel')
    .aliases(['delete', 'rm'])
    .description('Cancel an operation')
    .argument('<id>', '[<remote>:]<id>')
    .action(async (raw: string) => {
      const { client, name: id } = ctx.target(raw, 'operation');
      await client.request('DELETE', `/1.0/operations/${seg(id)}`);
    });
}
