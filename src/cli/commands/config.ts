// `roost config get|set|unset|show`: an instance's config, or the server's (`/1.0`) when no instance is
// named; which one is decided by the argument count as `lxc config` does (see parseConfigArgs).

import type { Command } from 'commander';
import { asObject, stringMap } from '../../client/json.js';
import type { CliContext } from '../context.js';
import { renderYaml } from '../format.js';
import { configPath, parseConfigArgs, seg } from '../requests.js';

/** What `lxc config show` prints: the writable part of an instance, or `config:` of the server. */
export function configShowObject(kind: 'server' | 'instance', metadata: unknown, expanded = false): Record<string, unknown> {
  const m = asObject(metadata);
  if (kind === 'server') return { config: m.config ?? {} };
  return {
    architecture: m.architecture ?? '',
    config: (expanded ? m.expanded_config : m.config) ?? {},
    devices: (expanded ? m.expanded_devices : m.devices) ?? {},
    ephemeral: m.ephemeral ?? false,
    profiles: m.profiles ?? [],
    stateful: m.stateful ?? false,
    description: m.description ?? '',
  };
}

/** Register `roost config`. */
export function registerConfigCommands(program: Command, ctx: CliContext): void {
  const config = program.command('config').description('Manage instance and server configuration');

  config
    .command('get')
    .description('Get a configuration key (of an instance, or of the server without one)')
    .argument('<args...>', '[<instance>] <key>')
    .action(async (args: string[]) => {
      const { target, key } = parseConfigArgs('get', args);
      const metadata = await ctx.client().get(configPath(target));
      ctx.print(stringMap(asObject(metadata).config)[key] ?? '');
    });

  config
    .command('set')
    .description('Set configuration keys (of an instance, or of the server without one)')
    .argument('<args...>', '[<instance>] <key> <value>, or [<instance>] <key>=<value>...')
    .action(async (args: string[]) => {
      const { target, values } = parseConfigArgs('set', args);
      await ctx.client().runAsync('PATCH', configPath(target), { config: values });
    });

  config
    .command('unset')
    .description('Unset a configuration key (of an instance, or of the server without one)')
    .argument('<args...>', '[<instance>] <key>')
    .action(async (args: string[]) => {
      const { target, values } = parseConfigArgs('unset', args);
      await ctx.client().runAsync('PATCH', configPath(target), { config: values });
    });

  config
    .command('show')
    .description('Show the configuration of an instance, or of the server without one')
    .argument('[instance]')
    .option('-e, --expanded', 'Show the expanded configuration (profiles applied)')
    .action(async (instance: string | undefined, flags: { expanded?: boolean }) => {
      const path = instance === undefined ? '/1.0' : `/1.0/instances/${seg(instance)}`;
      const metadata = await ctx.client().get(path);
      ctx.write(renderYaml(configShowObject(instance === undefined ? 'server' : 'instance', metadata, flags.expanded)));
    });
}
