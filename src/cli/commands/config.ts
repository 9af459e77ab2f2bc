// `roost config get|set|unset|show`: an instance's config, or the server's (`/1.0`) when no instance is
// named; which one is decided by the argument count as `lxc config` does (see parseConfigArgs). And
// `roost config trust ...` (./trust.ts).

import type { Command } from 'commander';
import { asObject, stringMap } from '../../client/json.js';
import type { CliContext } from '../context.js';
import { renderYaml } from '../format.js';
import { type ConfigTarget, configPath, parseConfigArgs } from '../requests.js';
import type { RoostClient } from '../../client/client.js';
import { registerTrustCommands } from './trust.js';

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

/**
 * Where `roost config` reads and writes, with the client that reaches it: the instance form's name may
 * carry a remote, and a remote alone (`prod:`) means that remote's server config, as in `lxc config`.
 */
function configTarget(ctx: CliContext, target: ConfigTarget): { client: RoostClient; path: string; kind: 'server' | 'instance' } {
  if (target.kind === 'server') return { client: ctx.client(), path: configPath(target), kind: 'server' };
  const { client, name } = ctx.target(target.name);
  if (name === '') return { client, path: configPath({ kind: 'server' }), kind: 'server' };
  return { client, path: configPath({ kind: 'instance', name }), kind: 'instance' };
}

/** Register `roost config`. */
export function registerConfigCommands(program: Command, ctx: CliContext): void {
  const config = program.command('config').description('Manage instance and server configuration');

  config
    .command('get')
    .description('Get a configuration key (of an instance, or of the server without one)')
    .argument('<args...>', '[<remote>:][<instance>] <key>')
    .action(async (args: string[]) => {
      const { target, key } = parseConfigArgs('get', args);
      const { client, path } = configTarget(ctx, target);
      const metadata = await client.get(path);
      ctx.print(stringMap(asObject(metadata).config)[key] ?? '');
    });

  config
    .command('set')
    .description('Set configuration keys (of an instance, or of the server without one)')
    .argument('<args...>', '[<remote>:][<instance>] <key> <value>, or [<remote>:][<instance>] <key>=<value>...')
    .action(async (args: string[]) => {
      const { target, values } = parseConfigArgs('set', args);
      const { client, path } = configTarget(ctx, target);
      await client.runAsync('PATCH', path, { config: values });
    });

  config
    .command('unset')
    .description('Unset a configuration key (of an instance, or of the server without one)')
    .argument('<args...>', '[<remote>:][<instance>] <key>')
    .action(async (args: string[]) => {
      const { target, values } = parseConfigArgs('unset', args);
      const { client, path } = configTarget(ctx, target);
      await client.runAsync('PATCH', path, { config: values });
    });

  config
    .command('show')
    .description('Show the configuration of an instance, or of the server without one')
    .argument('[instance]', '[<remote>:][<instance>]')
    .option('-e, --expanded', 'Show the expanded configuration (profiles applied)')
    .action(async (instance: string | undefined, flags: { expanded?: boolean }) => {
      const { client, path, kind } = configTarget(ctx, instance === undefined ? { kind: 'server' } : { kind: 'instance', name: instance });
      const metadata = await client.get(path);
      ctx.write(renderYaml(configShowObject(kind, metadata, flags.expanded)));
    });

  registerTrustCommands(config, ctx);
}
