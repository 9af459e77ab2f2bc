// `roost storage list|show|info|create|set|unset|delete` (pools, as `lxc storage`, `--target` as in a cluster)
// and `roost storage volume create|list|delete|attach`: custom volumes, in `lxc storage volume` argument order.

import type { Command } from 'commander';
import { ApiClientError } from '../../client/client.js';
import { asArray, asObject, str } from '../../client/json.js';
import type { CliContext } from '../context.js';
import { formatBytes } from '../../util/units.js';
import { parseFormat, renderList, renderYaml } from '../format.js';
import { parseConfigPairs, seg, volumeAttachDevice, volumeCreateBody, withTarget } from '../requests.js';

/** Header of `roost storage volume list` (as `lxc storage volume list` in a cluster). */
export const volumeHeader = ['TYPE', 'NAME', 'DESCRIPTION', 'CONTENT-TYPE', 'USED BY', 'LOCATION'];

/** The rows of `roost storage volume list`. */
export function volumeRows(volumes: unknown[]): string[][] {
  return volumes.map((v) => [
    str(v, 'type'),
    str(v, 'name'),
    str(v, 'description'),
    str(v, 'content_type') || 'filesystem',
    String(asArray(asObject(v).used_by).length),
    str(v, 'location'),
  ]);
}

/** Header of `roost storage list` (as `lxc storage list` in a cluster). */
export const poolHeader = ['NAME', 'DRIVER', 'DESCRIPTION', 'USED BY', 'STATE'];

/** The rows of `roost storage list`. */
export function poolRows(pools: unknown[]): string[][] {
  return pools.map((p) => [str(p, 'name'), str(p, 'driver'), str(p, 'description'), String(asArray(asObject(p).used_by).length), str(p, 'status').toUpperCase()]);
}

/** A string map from a JSON object (a pool's config). */
function stringMap(value: unknown): Record<string, string> {
  return Object.fromEntries(Object.entries(asObject(value)).map(([k, v]) => [k, String(v)]));
}

/** Register `roost storage`. */
export function registerStorageCommands(program: Command, ctx: CliContext): void {
  const storage = program.command('storage').description('Manage storage pools and volumes');

  storage
    .command('list')
    .alias('ls')
    .description('List the storage pools')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (flags: { format: string }) => {
      const pools = asArray(await ctx.client().get('/1.0/storage-pools?recursion=1'));
      ctx.write(renderList(parseFormat(flags.format), { header: poolHeader, rows: poolRows(pools), data: pools }));
    });

  storage
    .command('show')
    .description('Show a storage pool (with --target: that member\'s config and state)')
    .argument('<pool>', '[<remote>:]<pool>')
    .option('--target <member>', 'Cluster member whose part of the pool to show')
    .action(async (rawPool: string, flags: { target?: string }) => {
      const { client, name } = ctx.target(rawPool, 'storage pool');
      const p = asObject(await client.get(withTarget(`/1.0/storage-pools/${seg(name)}`, flags.target)));
      ctx.write(renderYaml({
        config: p.config ?? {}, description: p.description ?? '', name: p.name, driver: p.driver,
        used_by: p.used_by ?? [], status: p.status, locations: p.locations ?? [],
      }));
    });

  storage
    .command('info')
    .description('Show the space a storage pool has on a member, and what uses it')
    .argument('<pool>', '[<remote>:]<pool>')
    .option('--target <member>', 'Cluster member whose space to show')
    .action(async (rawPool: string, flags: { target?: string }) => {
      const { client, name } = ctx.target(rawPool, 'storage pool');
      const p = asObject(await client.get(withTarget(`/1.0/storage-pools/${seg(name)}`, flags.target)));
      const res = asObject(await client.get(withTarget(`/1.0/storage-pools/${seg(name)}/resources`, flags.target)));
      const space = asObject(res.space);
      ctx.write(renderYaml({
        info: {
          description: p.description ?? '', driver: p.driver, name: p.name,
          'space used': formatBytes(Number(space.used ?? 0)), 'total space': formatBytes(Number(space.total ?? 0)),
        },
        'used by': p.used_by ?? [],
      }, { sortKeys: false }));
    });

  storage
    .command('create')
    .description('Define a storage pool on a member (--target), or create it on every member')
    .argument('<pool>', '[<remote>:]<pool>')
    .argument('<driver>', 'Storage driver (dir, shared)')
    .argument('[config...]', 'key=value pairs (with --target: member-specific keys such as source)')
    .option('--target <member>', 'Cluster member to define the pool on')
    .option('--description <text>', 'Description of the pool')
    .action(async (rawPool: string, driver: string, config: string[], flags: { target?: string; description?: string }) => {
      const { client, name } = ctx.target(rawPool, 'storage pool');
      const body = { name, driver, config: parseConfigPairs(config), description: flags.description ?? '' };
      await client.runAsync('POST', withTarget('/1.0/storage-pools', flags.target), body);
      ctx.print(flags.target === undefined ? `Storage pool ${name} created` : `Storage pool ${name} pending on member ${flags.target}`);
    });

  /** Read the pool (that member's part with `target`), change its config, PUT it back. */
  const editConfig = async (rawPool: string, target: string | undefined, change: (config: Record<string, string>) => void): Promise<void> => {
    const { client, name } = ctx.target(rawPool, 'storage pool');
    const path = withTarget(`/1.0/storage-pools/${seg(name)}`, target);
    const p = asObject(await client.get(path));
    const config = stringMap(p.config);
    change(config);
    await client.request('PUT', path, { config, description: p.description ?? '' });
  };

  storage
    .command('set')
    .description('Set storage pool config keys')
    .argument('<pool>', '[<remote>:]<pool>')
    .argument('<config...>', 'key=value pairs')
    .option('--target <member>', 'Cluster member whose (member-specific) config to set')
    .action(async (rawPool: string, pairs: string[], flags: { target?: string }) => {
      const values = parseConfigPairs(pairs);
      await editConfig(rawPool, flags.target, (config) => Object.assign(config, values));
    });

  storage
    .command('unset')
    .description('Unset a storage pool config key')
    .argument('<pool>', '[<remote>:]<pool>')
    .argument('<key>')
    .option('--target <member>', 'Cluster member whose (member-specific) config to unset')
    .action(async (rawPool: string, key: string, flags: { target?: string }) => {
      await editConfig(rawPool, flags.target, (config) => {
        delete config[key];
      });
    });

  storage
    .command('delete')
    .alias('rm')
    .description('Delete a storage pool nothing uses, on every member')
    .argument('<pool>', '[<remote>:]<pool>')
    .action(async (rawPool: string) => {
      const { client, name } = ctx.target(rawPool, 'storage pool');
      await client.runAsync('DELETE', `/1.0/storage-pools/${seg(name)}`);
      ctx.print(`Storage pool ${name} deleted`);
    });

  const volume = storage.command('volume').description('Manage storage volumes');

  volume
    .command('create')
    .description('Create a custom volume')
    .argument('<pool>', '[<remote>:]<pool>')
    .argument('<volume>')
    .argument('[config...]', 'key=value pairs')
    .option('--target <member>', 'Cluster member to create the volume on')
    .action(async (rawPool: string, name: string, config: string[], flags: { target?: string }) => {
      const { client, name: pool } = ctx.target(rawPool, 'storage pool');
      const path = withTarget(`/1.0/storage-pools/${seg(pool)}/volumes/custom`, flags.target);
      await client.runAsync('POST', path, volumeCreateBody(name, parseConfigPairs(config)));
      ctx.print(`Storage volume ${name} created`);
    });

  volume
    .command('list')
    .alias('ls')
    .description('List the volumes of a pool')
    .argument('<pool>', '[<remote>:]<pool>')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (rawPool: string, flags: { format: string }) => {
      const format = parseFormat(flags.format);
      const { client, name: pool } = ctx.target(rawPool, 'storage pool');
      const volumes = asArray(await client.get(`/1.0/storage-pools/${seg(pool)}/volumes?recursion=1`));
      ctx.write(renderList(format, { header: volumeHeader, rows: volumeRows(volumes), data: volumes }));
    });

  volume
    .command('delete')
    .alias('rm')
    .description('Delete a custom volume')
    .argument('<pool>', '[<remote>:]<pool>')
    .argument('<volume>')
    .option('--target <member>', 'Cluster member the volume is on')
    .action(async (rawPool: string, name: string, flags: { target?: string }) => {
      const { client, name: pool } = ctx.target(rawPool, 'storage pool');
      const path = withTarget(`/1.0/storage-pools/${seg(pool)}/volumes/custom/${seg(name)}`, flags.target);
      await client.runAsync('DELETE', path);
      ctx.print(`Storage volume ${name} deleted`);
    });

  volume
    .command('attach')
    .description('Attach a custom volume to an instance')
    .argument('<pool>', '[<remote>:]<pool>')
    .argument('<volume>')
    .argument('<instance>', 'an instance of the same remote')
    .argument('<device-or-path...>', '[<device name>] <path>')
    .action(async (rawPool: string, name: string, instance: string, rest: string[]) => {
      const { client, name: pool } = ctx.target(rawPool, 'storage pool');
      const { device, config } = volumeAttachDevice(pool, name, rest);
      const path = `/1.0/instances/${seg(instance)}`;
      const current = await client.request('GET', path);
      if (device in asObject(asObject(current.metadata).devices)) throw new Error('The device already exists');
      try {
        await client.runAsync('PATCH', path, { devices: { [device]: config } });
      } catch (err) {
        if (err instanceof ApiClientError && err.status === 412) throw new Error(`${instance} changed meanwhile; try again`);
        throw err;
      }
    });
}
