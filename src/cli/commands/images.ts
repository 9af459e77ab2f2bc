// `roost image import|list|delete`: local images in LXD's unified format.

import { basename } from 'node:path';
import type { Command } from 'commander';
import { asArray, asObject, str, num } from '../../client/json.js';
import { formatBytes } from '../../util/units.js';
import type { CliContext } from '../context.js';
import { formatTime, parseFormat, renderList } from '../format.js';
import { seg } from '../requests.js';

/** Header of `roost image list` (the columns `lxc image list` shows). */
export const imageHeader = ['ALIAS', 'FINGERPRINT', 'PUBLIC', 'DESCRIPTION', 'ARCHITECTURE', 'TYPE', 'SIZE', 'UPLOAD DATE'];

/** The rows of `roost image list`. */
export function imageRows(images: unknown[]): string[][] {
  return images.map((i) => [
    asArray(asObject(i).aliases).map((a) => str(a, 'name')).join('\n'),
    str(i, 'fingerprint').slice(0, 12),
    'no',
    str(asObject(i).properties, 'description'),
    str(i, 'architecture'),
    str(i, 'type').toUpperCase(),
    formatBytes(num(i, 'size')),
    formatTime(str(i, 'uploaded_at')),
  ]);
}

/** Register `roost image`. */
export function registerImageCommands(program: Command, ctx: CliContext): void {
  const image = program.command('image').description('Manage images');

  image
    .command('import')
    .description('Import a unified image tarball (metadata.yaml + rootfs/)')
    .argument('<tarball>')
    .argument('[remote]', '[<remote>:]')
    .option('--alias <name>', 'Alias for the new image')
    .action(async (file: string, remote: string | undefined, flags: { alias?: string }) => {
      const client = ctx.remoteOnly(remote, 'roost image import <tarball> [<remote>:]');
      const result = await client.upload('/1.0/images', file, { 'x-lxd-filename': basename(file) });
      const fingerprint = str(result.operation?.metadata ?? result.response.metadata, 'fingerprint');
      if (!fingerprint) throw new Error('The server did not report the image fingerprint');
      if (flags.alias) await client.request('POST', '/1.0/images/aliases', { name: flags.alias, target: fingerprint, description: '' });
      ctx.print(`Image imported with fingerprint: ${fingerprint}`);
    });

  image
    .command('list')
    .alias('ls')
    .description('List images')
    .argument('[remote]', '[<remote>:]')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (remote: string | undefined, flags: { format: string }) => {
      const images = asArray(await ctx.remoteOnly(remote, 'roost image list [<remote>:]').get('/1.0/images?recursion=1'));
      ctx.write(renderList(parseFormat(flags.format), { header: imageHeader, rows: imageRows(images), data: images }));
    });

  image
    .command('delete')
    .alias('rm')
    .description('Delete images (by alias or fingerprint)')
    .argument('<image...>', '[<remote>:]<alias or fingerprint>...')
    .action(async (names: string[]) => {
      for (const raw of names) {
        const { client, name } = ctx.target(raw, 'image');
        let fp = name;
        try {
          fp = str(await client.get(`/1.0/images/aliases/${seg(name)}`), 'target');
        } catch {
          // not an alias: a fingerprint (or its prefix)
        }
        await client.runAsync('DELETE', `/1.0/images/${seg(fp)}`);
      }
    });
}
