// `roost cluster group ...`: LXD's cluster groups (create, assign, list, show, delete), thin over the API.

import type { Command } from 'commander';
import { asArray, asObject, str, stringList } from '../../client/json.js';
import type { CliContext } from '../context.js';
import { parseFormat, renderList, renderYaml } from '../format.js';
import { seg } from '../requests.js';

/** Header of `roost cluster group list`, as lxc prints it. */
export const groupHeader = ['NAME', 'DESCRIPTION', 'MEMBERS'];

/** The rows of `roost cluster group list`: name, description and how many members, in name order. */
export function groupRows(groups: unknown[]): string[][] {
  return groups
    .map((g) => [str(g, 'name'), str(g, 'description'), String(stringList(asObject(g).members).length)])
    .sort((a, b) => ((a[0] ?? '') < (b[0] ?? '') ? -1 : 1));
}

/** Register `roost cluster group` under `roost cluster`. */
export function registerClusterGroupCommands(cluster: Command, ctx: CliContext): void {
  const group = cluster.command('group').description('Manage cluster groups');

  group
    .command('create')
    .description('Create a cluster group')
    .argument('<group>')
    .option('--description <text>', 'Description of the group', '')
    .action(async (name: string, opts: { description: string }) => {
      await ctx.client().request('POST', '/1.0/cluster/groups', { name, description: opts.description });
      ctx.print(`Cluster group ${name} created`);
    });

  group
    .command('assign')
    .alias('apply')
    .description('Put a member in exactly these cluster groups (comma-separated), leaving the others')
    .argument('<member>')
    .argument('<groups>')
    .action(async (member: string, groups: string) => {
      const list = groups.split(',').map((g) => g.trim()).filter((g) => g !== '');
      await ctx.client().request('PATCH', `/1.0/cluster/members/${seg(member)}`, { groups: list });
      ctx.print(`Cluster member ${member} added to cluster groups ${list.join(',')}`);
    });

  group
    .command('list')
    .alias('ls')
    .description('List cluster groups')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (opts: { format: string }) => {
      const format = parseFormat(opts.format);
      const groups = asArray(await ctx.client().get('/1.0/cluster/groups?recursion=1'));
      ctx.write(renderList(format, { header: groupHeader, rows: groupRows(groups), data: groups }));
    });

  group
    .command('show')
    .description('Show a cluster group')
    .argument('<group>')
    .action(async (name: string) => {
      ctx.write(renderYaml(await ctx.client().get(`/1.0/cluster/groups/${seg(name)}`)));
    });

  group
    .command('delete')
    .alias('rm')
    .description('Delete a cluster group (it must have no members)')
    .argument('<group>')
    .action(async (name: string) => {
      await ctx.client().request('DELETE', `/1.0/cluster/groups/${seg(name)}`);
      ctx.print(`Cluster group ${name} deleted`);
    });
}
