// `roost profile list|show|create|delete|rename|set|unset|add|remove` and `roost snapshot|restore`, as the
// `lxc` commands of those names send them (profile edits read the profile and PUT it back with its ETag).

import type { Command } from 'commander';
import { asArray, asObject, str, stringMap } from '../../client/json.js';
import type { CliContext } from '../context.js';
import { formatTime, parseFormat, renderList, renderTable, renderYaml } from '../format.js';
import { seg } from '../requests.js';

/** Header of `roost profile list` (as `lxc profile list`). */
export const profileHeader = ['NAME', 'DESCRIPTION', 'USED BY'];

/** The `Snapshots:` part of `roost info` (as `lxc info`), or nothing when there are none. */
export function renderSnapshots(snapshots: unknown[]): string {
  if (snapshots.length === 0) return '';
  const rows = snapshots.map((s) => {
    const expires = str(s, 'expires_at');
    return [str(s, 'name'), formatTime(str(s, 'created_at')), expires.startsWith('0001-') ? '' : formatTime(expires), asObject(s).stateful === true ? 'YES' : 'NO'];
  });
  return `Snapshots:\n${renderTable(['NAME', 'TAKEN AT', 'EXPIRES AT', 'STATEFUL'], rows)}`;
}

/** `<instance>/<snapshot>` split in two, or null for a plain instance name. */
export function splitSnapshotName(name: string): { instance: string; snapshot: string } | null {
  const i = name.indexOf('/');
  return i < 0 ? null : { instance: name.slice(0, i), snapshot: name.slice(i + 1) };
}

/** Register the snapshot and profile commands. */
export function registerProfileCommands(program: Command, ctx: CliContext): void {
  program
    .command('snapshot')
    .description('Take a snapshot of an instance (its root volume, also while it runs)')
    .argument('<instance>')
    .argument('[snapshot]', 'Snapshot name (default: snap<N>)')
    .action(async (instance: string, snapshot: string | undefined) => {
      await ctx.client().runAsync('POST', `/1.0/instances/${seg(instance)}/snapshots`, { name: snapshot ?? '', stateful: false });
    });

  program
    .command('restore')
    .description('Restore an instance to one of its snapshots')
    .argument('<instance>')
    .argument('<snapshot>')
    .action(async (instance: string, snapshot: string) => {
      await ctx.client().runAsync('PUT', `/1.0/instances/${seg(instance)}`, { restore: `${instance}/${snapshot}`, stateful: false });
    });

  const profile = program.command('profile').description('Manage profiles');
  const path = (name: string): string => `/1.0/profiles/${seg(name)}`;

  profile
    .command('list')
    .alias('ls')
    .description('List profiles')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (opts: { format: string }) => {
      const profiles = asArray(await ctx.client().get('/1.0/profiles?recursion=1'));
      const rows = profiles.map((p) => [str(p, 'name'), str(p, 'description'), String(asArray(asObject(p).used_by).length)]);
      ctx.write(renderList(parseFormat(opts.format), { header: profileHeader, rows, data: profiles }));
    });

  profile
    .command('show')
    .description('Show a profile')
    .argument('<profile>')
    .action(async (name: string) => {
      const p = asObject(await ctx.client().get(path(name)));
      ctx.write(renderYaml({ config: p.config ?? {}, description: p.description ?? '', devices: p.devices ?? {}, name: p.name, used_by: p.used_by ?? [] }));
    });

  profile
    .command('create')
    .description('Create a profile')
    .argument('<profile>')
    .action(async (name: string) => {
      await ctx.client().request('POST', '/1.0/profiles', { name, config: {}, description: '', devices: {} });
      ctx.print(`Profile ${name} created`);
    });

  profile
    .command('delete')
    .alias('rm')
    .description('Delete a profile no instance uses')
    .argument('<profile>')
    .action(async (name: string) => {
      await ctx.client().request('DELETE', path(name));
      ctx.print(`Profile ${name} deleted`);
    });

  profile
    .command('rename')
    .description('Rename a profile (and every mention of it)')
    .argument('<profile>')
    .argument('<new-name>')
    .action(async (name: string, newName: string) => {
      await ctx.client().request('POST', path(name), { name: newName });
      ctx.print(`Profile ${name} renamed to ${newName}`);
    });

  /** Read the profile, change its config, PUT it back guarded by the ETag it was read with. */
  const editConfig = async (name: string, change: (config: Record<string, string>) => void): Promise<void> => {
    const client = ctx.client();
    const res = await client.requestRaw('GET', path(name));
    const p = asObject(asObject(JSON.parse(res.text)).metadata);
    const config = stringMap(p.config);
    change(config);
    await client.request('PUT', path(name), { config, description: p.description ?? '', devices: p.devices ?? {} }, { etag: res.etag });
  };

  profile
    .command('set')
    .description('Set a profile config key')
    .argument('<profile>')
    .argument('<key>')
    .argument('<value>')
    .action(async (name: string, key: string, value: string) => editConfig(name, (config) => void (config[key] = value)));

  profile
    .command('unset')
    .description('Unset a profile config key')
    .argument('<profile>')
    .argument('<key>')
    .action(async (name: string, key: string) => editConfig(name, (config) => void delete config[key]));

  /** Read the instance, change its profile list, PUT it back guarded by the ETag it was read with. */
  const editProfiles = async (instance: string, change: (profiles: string[]) => string[]): Promise<void> => {
    const client = ctx.client();
    const res = await client.requestRaw('GET', `/1.0/instances/${seg(instance)}`);
    const m = asObject(asObject(JSON.parse(res.text)).metadata);
    const profiles = change(asArray(m.profiles).map((p) => String(p)));
    const body = { config: m.config ?? {}, devices: m.devices ?? {}, description: m.description ?? '', ephemeral: m.ephemeral ?? false, profiles };
    const put = await client.request('PUT', `/1.0/instances/${seg(instance)}`, body, { etag: res.etag });
    if (put.type === 'async') await client.waitOperation(put.operation);
  };

  profile
    .command('add')
    .description('Add a profile to an instance (applied after those it has)')
    .argument('<instance>')
    .argument('<profile>')
    .action(async (instance: string, name: string) => {
      await editProfiles(instance, (profiles) => {
        if (profiles.includes(name)) throw new Error(`Profile ${name} is already applied to ${instance}`);
        return [...profiles, name];
      });
      ctx.print(`Profile ${name} added to ${instance}`);
    });

  profile
    .command('remove')
    .description('Remove a profile from an instance')
    .argument('<instance>')
    .argument('<profile>')
    .action(async (instance: string, name: string) => {
      await editProfiles(instance, (profiles) => {
        if (!profiles.includes(name)) throw new Error(`Profile ${name} isn't currently applied to ${instance}`);
        return profiles.filter((p) => p !== name);
      });
      ctx.print(`Profile ${name} removed from ${instance}`);
    });
}
