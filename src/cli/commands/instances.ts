// Instance commands: list, init, launch, start/stop/restart, delete (of snapshots too), move, info.

import type { Command } from 'commander';
import { asArray, asObject, bool, num, str } from '../../client/json.js';
import { formatBytes } from '../../util/units.js';
import type { CliContext } from '../context.js';
import { parseRemoteName } from '../../client/config.js';
import { renderSnapshots, splitSnapshotName } from './profiles.js';
import { formatTime, parseFormat, renderList, upperState } from '../format.js';
import {
  instanceCreateBody,
  instanceStateBody,
  moveRequest,
  parseConfigPairs,
  parseInteger,
  parseLaunchArgs,
  seg,
  withTarget,
} from '../requests.js';

/** Header of `roost list` (the columns `lxc list` shows in a cluster). */
export const instanceHeader = ['NAME', 'STATE', 'IPV4', 'IPV6', 'TYPE', 'SNAPSHOTS', 'LOCATION'];

function addresses(state: unknown, family: 'inet' | 'inet6'): string {
  const out: string[] = [];
  for (const [iface, net] of Object.entries(asObject(asObject(state).network))) {
    if (iface === 'lo' || str(net, 'type') === 'loopback') continue;
    for (const addr of asArray(asObject(net).addresses)) {
      if (str(addr, 'family') === family && str(addr, 'scope') === 'global') out.push(`${str(addr, 'address')} (${iface})`);
    }
  }
  return out.sort().join('\n');
}

/** The TYPE column: `container` → `CONTAINER`, Roost's `process` → `PROCESS`, ephemeral marked. */
export function instanceType(instance: unknown): string {
  const type = (str(instance, 'type') || 'container').toUpperCase();
  return bool(instance, 'ephemeral') ? `${type} (EPHEMERAL)` : type;
}

/** The rows of `roost list`, sorted by name as `lxc list` does. */
export function instanceRows(instances: unknown[]): string[][] {
  return [...instances]
    .sort((a, b) => str(a, 'name').localeCompare(str(b, 'name')))
    .map((inst) => {
      const state = asObject(inst).state;
      return [
        str(inst, 'name'),
        upperState(str(inst, 'status')),
        addresses(state, 'inet'),
        addresses(state, 'inet6'),
        instanceType(inst),
        String(asArray(asObject(inst).snapshots).length),
        str(inst, 'location'),
      ];
    });
}

/** `roost info <name>` in `lxc info`'s layout. */
export function renderInstanceInfo(instance: unknown, state: unknown): string {
  const lines = [
    `Name: ${str(instance, 'name')}`,
    `Status: ${upperState(str(state, 'status') || str(instance, 'status'))}`,
    `Type: ${str(instance, 'type') || 'container'}${bool(instance, 'ephemeral') ? ' (ephemeral)' : ''}`,
  ];
  if (str(instance, 'architecture')) lines.push(`Architecture: ${str(instance, 'architecture')}`);
  if (str(instance, 'location')) lines.push(`Location: ${str(instance, 'location')}`);
  if (num(state, 'pid') > 0) lines.push(`PID: ${num(state, 'pid')}`);
  lines.push(`Created: ${formatTime(str(instance, 'created_at'))}`);
  lines.push(`Last Used: ${formatTime(str(instance, 'last_used_at'))}`);
  lines.push('', 'Resources:', `  Processes: ${num(state, 'processes')}`);
  const cpu = num(asObject(state).cpu, 'usage');
  if (cpu > 0) lines.push('  CPU usage:', `    CPU usage (in seconds): ${Math.floor(cpu / 1e9)}`);
  const memory = asObject(asObject(state).memory);
  if (num(memory, 'usage') > 0 || num(memory, 'usage_peak') > 0) {
    lines.push('  Memory usage:', `    Memory (current): ${formatBytes(num(memory, 'usage'))}`);
    if (num(memory, 'usage_peak') > 0) lines.push(`    Memory (peak): ${formatBytes(num(memory, 'usage_peak'))}`);
  }
  return `${lines.join('\n')}\n`;
}

interface CreateFlags {
  type?: string;
  target?: string;
  config: string[];
  empty?: boolean;
  profile: string[];
  storage?: string;
}

async function createInstance(ctx: CliContext, first: string | undefined, second: string | undefined, flags: CreateFlags, start: boolean): Promise<void> {
  const args = parseLaunchArgs(first, second);
  const { client, remote, name } = ctx.target(args.name);
  if (name === '') throw new Error('Instance name is required; usage: roost launch [<image>] [<remote>:]<name>');
  const image = args.image === undefined ? undefined : imageOn(ctx, args.image, remote);
  const body = instanceCreateBody({ name, image, type: flags.type, config: parseConfigPairs(flags.config), empty: flags.empty, profiles: flags.profile, storage: flags.storage });
  ctx.print(`Creating ${name}`);
  await client.runAsync('POST', withTarget('/1.0/instances', flags.target), body);
  if (!start) return;
  ctx.print(`Starting ${name}`);
  await client.runAsync('PUT', `/1.0/instances/${seg(name)}/state`, instanceStateBody('start'));
}

/**
 * The image name for an instance created on `remote`: a plain name is an image of that remote; a
 * `<remote>:` prefix must name the same remote (images are not copied between clusters).
 */
function imageOn(ctx: CliContext, image: string, remote: string): string {
  if (!image.includes(':')) return image;
  const parsed = ctx.target(image);
  if (parsed.remote !== remote) throw new Error(`The image is on remote "${parsed.remote}" and the instance on "${remote}"; copying images between remotes is not supported`);
  return parsed.name;
}

interface StateFlags {
  force?: boolean;
  timeout?: string;
}

async function changeState(ctx: CliContext, action: 'start' | 'stop' | 'restart', names: string[], flags: StateFlags): Promise<void> {
  const body = instanceStateBody(action, {
    force: flags.force,
    timeout: flags.timeout === undefined ? undefined : parseInteger(flags.timeout, '--timeout'),
  });
  let failed = 0;
  for (const raw of names) {
    const { client, name } = ctx.target(raw, 'instance');
    try {
      await client.runAsync('PUT', `/1.0/instances/${seg(name)}/state`, body);
    } catch (err) {
      if (names.length === 1) throw err;
      failed++;
      ctx.warn(`Error: ${name}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (failed > 0) throw new Error(`Some instances failed to ${action}`);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Register the instance commands. */
export function registerInstanceCommands(program: Command, ctx: CliContext): void {
  program
    .command('list')
    .alias('ls')
    .description('List instances')
    .argument('[remote]', '[<remote>:]')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (remote: string | undefined, opts: { format: string }) => {
      const format = parseFormat(opts.format);
      const client = ctx.remoteOnly(remote, 'roost list [<remote>:]');
      const instances = asArray(await client.get('/1.0/instances?recursion=2'));
      ctx.write(renderList(format, { header: instanceHeader, rows: instanceRows(instances), data: instances }));
    });

  const creator = (name: string, description: string, start: boolean): void => {
    program
      .command(name)
      .description(description)
      .argument('[image-or-name]', 'Image alias, or the instance name ([<remote>:]<name>) when it is the only argument')
      .argument('[name]', 'Instance name, [<remote>:]<name>')
      .option('--type <type>', 'Instance type (process, container, sim)')
      .option('--target <member>', 'Cluster member to create the instance on, or @<group> for any member of a cluster group')
      .option('-c, --config <key=value>', 'Config key/value to apply (repeatable)', collect, [])
      .option('--empty', 'Create the instance without an image')
      .option('-p, --profile <profile>', 'Profile to apply, in order (repeatable; default: default)', collect, [])
      .option('-s, --storage <pool>', 'Storage pool the instance\'s root disk goes on')
      .action((first: string | undefined, second: string | undefined, flags: CreateFlags) =>
        createInstance(ctx, first, second, flags, start),
      );
  };
  creator('init', 'Create an instance', false);
  creator('launch', 'Create and start an instance', true);

  for (const action of ['start', 'stop', 'restart'] as const) {
    program
      .command(action)
      .description(`${action[0]?.toUpperCase()}${action.slice(1)} instances`)
      .argument('<names...>', '[<remote>:]<name>...')
      .option('-f, --force', 'Force the action (stop: kill instead of a clean shutdown)')
      .option('--timeout <seconds>', 'Time to wait for a clean shutdown (-1: wait forever)')
      .action((names: string[], flags: StateFlags) => changeState(ctx, action, names, flags));
  }

  program
    .command('delete')
    .alias('rm')
    .description('Delete instances')
    .argument('<names...>', '[<remote>:]<name>...')
    .option('-f, --force', 'Stop running instances first')
    .action(async (names: string[], flags: { force?: boolean }) => {
      for (const raw of names) {
        const { client, name } = ctx.target(raw, 'instance');
        const snapshot = splitSnapshotName(name);
        if (snapshot) {
          await client.runAsync('DELETE', `/1.0/instances/${seg(snapshot.instance)}/snapshots/${seg(snapshot.snapshot)}`);
          continue;
        }
        const path = `/1.0/instances/${seg(name)}`;
        const status = str(await client.get(path), 'status');
        if (status === 'Running' || status === 'Frozen') {
          if (!flags.force) throw new Error('The instance is currently running, stop it first or use --force');
          await client.runAsync('PUT', `${path}/state`, instanceStateBody('stop', { force: true }));
        }
        await client.runAsync('DELETE', path);
      }
    });

  program
    .command('move')
    .alias('mv')
    .description('Move an instance to another cluster member (or rename it)')
    .argument('<name>', '[<remote>:]<name>')
    .argument('[new-name]', '[<remote>:]<new-name>')
    .option('--target <member>', 'Cluster member to move the instance to, or @<group> for any other member of a cluster group')
    .action(async (rawName: string, rawNewName: string | undefined, flags: { target?: string }) => {
      const source = ctx.target(rawName, 'instance');
      const dest = rawNewName === undefined ? undefined : parseRemoteName(rawNewName, ctx.env);
      if (dest && dest.remote !== source.remote) throw new Error('Moving instances between remotes is not supported');
      const newName = dest && dest.name !== '' ? dest.name : undefined;
      const { path, body } = moveRequest(source.name, { newName, target: flags.target });
      await source.client.runAsync('POST', path, body);
    });

  program
    .command('info')
    .description('Show an instance\'s state and resources')
    .argument('<name>', '[<remote>:]<name>')
    .option('--show-log', 'Show the instance\'s output log')
    .action(async (raw: string, flags: { showLog?: boolean }) => {
      const { client, name } = ctx.target(raw, 'instance');
      const path = `/1.0/instances/${seg(name)}`;
      const instance = await client.get(path);
      const state = await client.get(`${path}/state`);
      ctx.write(renderInstanceInfo(instance, state));
      ctx.write(renderSnapshots(asArray(await client.get(`${path}/snapshots?recursion=1`))));
      if (flags.showLog) {
        const log = await client.requestRaw('GET', `${path}/logs/output.log`);
        ctx.write(`\nLog:\n\n${log.text}`);
      }
    });
}
