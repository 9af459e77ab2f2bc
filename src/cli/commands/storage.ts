// `roost storage volume create|list|delete|attach`: custom volumes, in `lxc storage volume` argument order.

import type { Command } from 'commander';
import { ApiClientError } from '../../client/client.js';
import { asArray, asObject, str } from '../../client/json.js';
import type { CliContext } from '../context.js';
import { parseFormat, renderList } from '../format.js';
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

/** Register `roost storage`. */
export function registerStorageCommands(program: Command, ctx: CliContext): void {
  const volume = program.command('storage').description('Manage storage').command('volume').description('Manage storage volumes');

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
