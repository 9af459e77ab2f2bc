// `roost cluster ...`: members (list, show, get/set/unset), evacuate/restore, rolling maintenance, and groups
// (cluster-groups.ts).

import type { Command } from 'commander';
import { ApiClientError, type Operation, type RoostClient } from '../../client/client.js';
import { type JsonObject, asArray, asObject, isObject, str, stringList, stringMap } from '../../client/json.js';
import { formatBytes } from '../../util/units.js';
import { joinTokenOf } from '../../cluster/token.js';
import type { CliContext } from '../context.js';
import {
  type MemberAction,
  PlainProgressLog,
  ProgressFollower,
  summaryLine,
} from '../evacuation-progress.js';
import { parseFormat, renderList, renderTable, renderYaml, upperState } from '../format.js';
import { LiveProgressView } from '../live-progress.js';
import { askBool } from '../prompt.js';
import { evacuateRequestBody, parseParallel, parsePositiveInt, seg } from '../requests.js';
import { registerClusterGroupCommands } from './cluster-groups.js';

/** The API extension that tells a server understands `dry_run` (an older one would really evacuate). */
export const planExtension = 'roost_evacuation_plan';

/** The rows of `roost cluster list`: LXD's columns plus each member's instance count. */
export function memberRows(members: unknown[], instances: unknown[]): string[][] {
  const counts = new Map<string, number>();
  for (const inst of instances) {
    const location = str(inst, 'location');
    counts.set(location, (counts.get(location) ?? 0) + 1);
  }
  return members.map((m) => {
    const name = str(m, 'server_name');
    return [
      name,
      str(m, 'url'),
      stringList(asObject(m).roles).join('\n'),
      str(m, 'architecture'),
      str(m, 'failure_domain'),
      str(m, 'description'),
      upperState(str(m, 'status')),
      str(m, 'message'),
      String(counts.get(name) ?? 0),
    ];
  });
}

/** Header of `roost cluster list`. */
export const memberHeader = ['NAME', 'URL', 'ROLES', 'ARCHITECTURE', 'FAILURE DOMAIN', 'DESCRIPTION', 'STATE', 'MESSAGE', 'INSTANCES'];

function planName(entry: unknown): string {
  const name = str(entry, 'name') || str(entry, 'instance');
  const project = str(entry, 'project');
  return project && project !== 'default' ? `${project}/${name}` : name;
}

/** The dry-run plan as text: a table of the moves, then the refusals a real run would meet. */
export function renderPlan(metadata: unknown): string {
  const plan = asObject(metadata);
  const rows = asArray(plan.instances).map((entry) => {
    const bytes = asObject(entry).bytes;
    return [
      planName(entry),
      str(entry, 'action'),
      str(entry, 'target'),
      typeof bytes === 'number' && bytes > 0 ? formatBytes(bytes) : '',
      str(entry, 'reason'),
    ];
  });
  let out = renderTable(['INSTANCE', 'ACTION', 'TARGET', 'SIZE', 'REASON'], rows);
  const refusals = asArray(plan.refusals);
  if (refusals.length > 0) {
    out += '\nRefusals:\n';
    for (const r of refusals) {
      out += typeof r === 'string' ? `- ${r}\n` : `- ${planName(r)}: ${str(r, 'reason') || str(r, 'error')}\n`;
    }
  }
  return out;
}

async function requireExtension(client: RoostClient, extension: string, feature: string): Promise<void> {
  const server = await client.get('/1.0');
  if (!stringList(asObject(server).api_extensions).includes(extension)) {
    throw new Error(`The server does not support ${feature} (missing API extension "${extension}")`);
  }
}

interface MemberStateFlags {
  force?: boolean;
  action?: string;
  dryRun?: boolean;
  parallel?: string;
}

async function changeMemberState(ctx: CliContext, action: MemberAction, rawMember: string, flags: MemberStateFlags): Promise<void> {
  const { client, name: member } = ctx.target(rawMember, 'cluster member');
  const body = evacuateRequestBody({
    action,
    mode: flags.action,
    dryRun: flags.dryRun,
    parallel: flags.parallel === undefined ? undefined : parseParallel(flags.parallel),
  });
  const path = `/1.0/cluster/members/${seg(member)}/state`;

  if (flags.dryRun) {
    await requireExtension(client, planExtension, '--dry-run');
    const res = await client.request('POST', path, body);
    if (res.type !== 'sync') throw new Error('The server started an operation instead of returning a plan');
    ctx.write(renderPlan(res.metadata));
    return;
  }

  if (!flags.force) {
    const question = `Are you sure you want to ${action} cluster member "${member}"? (yes/no) [default=no]: `;
    if (!(await askBool(question, ctx.io))) throw new Error('User aborted');
  }

  // `--force` on a member that is gone heals it (what the drainer does after cluster.healing_threshold).
  if (action === 'evacuate' && flags.force) {
    const info = await client.get(`/1.0/cluster/members/${seg(member)}`).catch(() => null);
    if (info !== null && str(info, 'status') === 'Offline') {
      body.force = true;
      const result = await client.runAsync('POST', path, body);
      const healed = asObject(asObject(result.operation?.metadata).roost_healed);
      const left = stringList(healed.unreachable);
      const moved = Array.isArray(healed.relinked) ? healed.relinked.map((x) => asObject(x)).map((x) => `${str(x, 'name')} on ${str(x, 'target')}`) : [];
      ctx.print(
        `Healed "${member}" while offline: it is Evacuated, nothing new lands on it` +
          `${moved.length > 0 ? `; on shared storage, started elsewhere: ${moved.join(', ')}` : ''}` +
          `${left.length > 0 ? `; on its local storage, left in place until it is restored: ${left.join(', ')}` : ''}`,
      );
      return;
    }
  }

  const title = action === 'evacuate' ? 'Evacuating cluster member' : 'Restoring cluster member';
  const live = ctx.isTerminal ? new LiveProgressView(ctx.io.stdout, title) : null;
  const plain = new PlainProgressLog();
  const follower = new ProgressFollower();
  let last: Operation | null = null;
  const onUpdate = (op: Operation): void => {
    last = op;
    follower.update(op);
    if (live) live.update(op);
    else for (const line of plain.lines(op)) ctx.print(line);
  };
  try {
    const result = await client.runAsync('POST', path, body, onUpdate);
    live?.stop();
    const final = result.operation ?? last;
    ctx.print(summaryLine(action, member, 'Success', final ? follower.update(final) : null));
  } catch (err) {
    live?.stop();
    if (err instanceof ApiClientError && err.operation) {
      const progress = follower.update(err.operation);
      // The server's error (printed by the caller) already has one line per failed instance.
      ctx.print(summaryLine(action, member, err.operation.status, progress));
    }
    throw err;
  }
}

interface MaintainFlags {
  members?: string;
  all?: boolean;
  exec?: string;
  waitOnline?: string;
  concurrency?: string;
  force?: boolean;
}

/** One line per member whose step changed since the last update (`m02: evacuating`), for logs and terminals alike. */
export class MaintenanceLog {
  private readonly steps = new Map<string, string>();

  /** The lines an operation update adds. */
  lines(op: Operation): string[] {
    const progress = asObject(asObject(op.metadata).roost_maintenance);
    const out: string[] = [];
    for (const entry of asArray(progress.members)) {
      const name = str(entry, 'name');
      const step = str(entry, 'step');
      if (this.steps.get(name) === step) continue;
      this.steps.set(name, step);
      if (step === 'pending') continue;
      const error = str(entry, 'error');
      const times = [
        typeof asObject(entry).evacuateSeconds === 'number' ? `evacuated in ${(asObject(entry).evacuateSeconds as number).toFixed(1)}s` : '',
        typeof asObject(entry).restoreSeconds === 'number' ? `restored in ${(asObject(entry).restoreSeconds as number).toFixed(1)}s` : '',
      ].filter((t) => t !== '');
      out.push(`${name}: ${step}${step === 'done' && times.length > 0 ? ` (${times.join(', ')})` : ''}${error ? `: ${error}` : ''}`);
    }
    return out;
  }
}

/** `roost cluster maintain`: a rolling maintenance, followed member by member until it ends. */
async function maintain(ctx: CliContext, flags: MaintainFlags): Promise<void> {
  const members = flags.members?.split(',').map((x) => x.trim()).filter((x) => x !== '') ?? [];
  if ((members.length > 0) === (flags.all === true)) throw new Error('Give either --members a,b,... or --all');
  const body: JsonObject = members.length > 0 ? { members } : { all: true };
  if (flags.exec !== undefined) body.exec = flags.exec;
  if (flags.waitOnline !== undefined) body.wait_online = flags.waitOnline;
  if (flags.concurrency !== undefined) body.concurrency = parsePositiveInt(flags.concurrency, '--concurrency');
  await requireExtension(ctx.client(), 'roost_cluster_maintenance', 'cluster maintain');
  if (!flags.force) {
    const which = members.length > 0 ? members.map((x) => `"${x}"`).join(', ') : 'every member';
    const question = `Are you sure you want to evacuate, reboot and restore ${which}, one after another? (yes/no) [default=no]: `;
    if (!(await askBool(question, ctx.io))) throw new Error('User aborted');
  }
  const log = new MaintenanceLog();
  const started = Date.now();
  const onUpdate = (op: Operation): void => {
    for (const line of log.lines(op)) ctx.print(line);
  };
  try {
    const result = await ctx.client().runAsync('POST', '/1.0/cluster/maintenance', body, onUpdate);
    if (result.operation) onUpdate(result.operation);
    ctx.print(`Maintenance complete in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  } catch (err) {
    if (err instanceof ApiClientError && err.operation) onUpdate(err.operation);
    throw err;
  }
}

/** `roost cluster show`: the member, plus its evacuation progress when the server reports one. */
async function showMember(ctx: CliContext, rawMember: string): Promise<void> {
  const { client, name: member } = ctx.target(rawMember, 'cluster member');
  const info = asObject(await client.get(`/1.0/cluster/members/${seg(member)}`));
  let evacuation: unknown;
  try {
    evacuation = asObject(await client.get(`/1.0/cluster/members/${seg(member)}/state`)).roost_evacuation;
  } catch (err) {
    if (!(err instanceof ApiClientError)) throw err;
  }
  const out: JsonObject = { ...info };
  if (isObject(evacuation)) out.roost_evacuation = evacuation;
  ctx.write(renderYaml(out));
}

/** Register `roost cluster`. */
export function registerClusterCommands(program: Command, ctx: CliContext): void {
  const cluster = program.command('cluster').description('Manage cluster members');

  cluster
    .command('list')
    .alias('ls')
    .description('List cluster members')
    .argument('[remote]', '[<remote>:]')
    .option('-f, --format <format>', 'Format (table|json|yaml|csv)', 'table')
    .action(async (remote: string | undefined, opts: { format: string }) => {
      const format = parseFormat(opts.format);
      const client = ctx.remoteOnly(remote, 'roost cluster list [<remote>:]');
      const members = asArray(await client.get('/1.0/cluster/members?recursion=1'));
      const instances = asArray(await client.get('/1.0/instances?recursion=1'));
      ctx.write(renderList(format, { header: memberHeader, rows: memberRows(members, instances), data: members }));
    });

  cluster
    .command('add')
    .description('Request a join token for a new cluster member (give it to "roostd --join" on the new host)')
    .argument('<name>')
    .action(async (name: string) => {
      const res = await ctx.client().request('POST', '/1.0/cluster/members', { server_name: name });
      ctx.print(`Member ${name} join token:`);
      ctx.print(joinTokenOf(res.metadata));
    });

  cluster
    .command('remove')
    .alias('rm')
    .description('Remove a member from the cluster (refused while it holds instances; --force for a member that is gone)')
    .argument('<member>', '[<remote>:]<member>')
    .option('--force', 'remove a member that is gone for good; its instances and volumes are forgotten')
    .option('--yes', 'do not ask for confirmation of --force')
    .action(async (rawMember: string, flags: { force?: boolean; yes?: boolean }) => {
      const { client, name: member } = ctx.target(rawMember, 'cluster member');
      if (flags.force && !flags.yes) {
        // As lxc does, a forced removal asks first: it forgets whatever the member held.
        const question = `Forcing the removal of "${member}" forgets every instance and storage volume it holds, with their data.
Only do this for a member that is gone for good; otherwise move its instances away and remove it without --force.

Are you really sure you want to force removing ${member}? (yes/no): `;
        if (!(await askBool(question, ctx.io))) throw new Error('User aborted');
      }
      const lost = asObject(await client.request('DELETE', `/1.0/cluster/members/${seg(member)}${flags.force ? '?force=1' : ''}`).then((r) => r.metadata));
      ctx.print(`Member ${member} removed`);
      for (const name of stringList(lost.instances)) ctx.print(`  instance ${name} was on it and is gone from the cluster`);
      for (const name of stringList(lost.volumes)) ctx.print(`  storage volume ${name} was on it and is gone from the cluster`);
    });

  cluster
    .command('show')
    .description('Show a cluster member, with its running or last evacuation')
    .argument('<member>', '[<remote>:]<member>')
    .action((member: string) => showMember(ctx, member));

  cluster
    .command('get')
    .description('Get a cluster member configuration key')
    .argument('<member>', '[<remote>:]<member>')
    .argument('<key>')
    .action(async (rawMember: string, key: string) => {
      const { client, name: member } = ctx.target(rawMember, 'cluster member');
      const info = await client.get(`/1.0/cluster/members/${seg(member)}`);
      ctx.print(stringMap(asObject(info).config)[key] ?? '');
    });

  cluster
    .command('set')
    .description('Set a cluster member configuration key')
    .argument('<member>', '[<remote>:]<member>')
    .argument('<key>')
    .argument('<value>')
    .action(async (rawMember: string, key: string, value: string) => {
      const { client, name: member } = ctx.target(rawMember, 'cluster member');
      await client.runAsync('PATCH', `/1.0/cluster/members/${seg(member)}`, { config: { [key]: value } });
    });

  cluster
    .command('unset')
    .description('Unset a cluster member configuration key')
    .argument('<member>', '[<remote>:]<member>')
    .argument('<key>')
    .action(async (rawMember: string, key: string) => {
      const { client, name: member } = ctx.target(rawMember, 'cluster member');
      await client.runAsync('PATCH', `/1.0/cluster/members/${seg(member)}`, { config: { [key]: '' } });
    });

  const stateCommand = (name: MemberAction, description: string, modeHelp: string): Command =>
    cluster
      .command(name)
      .description(description)
      .argument('<member>', '[<remote>:]<member>')
      .option('--force', 'Do not ask for confirmation')
      .option('--action <mode>', modeHelp)
      .option('--dry-run', 'Print the plan without changing anything')
      .option('--parallel <n>', 'Copy at most N instances at a time, or "auto" (follow the throughput; the default unless cluster.evacuation_parallelism says otherwise)')
      .action((member: string, flags: MemberStateFlags) => changeMemberState(ctx, name, member, flags));

  cluster
    .command('maintain')
    .description('Evacuate, reboot and restore cluster members one after another (a rolling maintenance)')
    .option('--members <names>', 'The members to maintain, in this order (comma-separated)')
    .option('--all', 'Every member, in the cluster\'s order')
    .option('--exec <command>', 'Run this command for each member once it is evacuated ({member} is replaced by its name); without it, wait for the member to go offline and come back')
    .option('--wait-online <duration>', 'How long a member may take to come back (default 5m)')
    .option('--concurrency <n>', 'Members taken down at once (default 1)')
    .option('--force', 'Do not ask for confirmation')
    .action((flags: MaintainFlags) => maintain(ctx, flags));

  stateCommand('evacuate', 'Evacuate a cluster member', 'Force an action for every instance (auto, migrate, live-migrate, stop, force-stop)').alias('evac');
  stateCommand('restore', 'Restore an evacuated cluster member', 'Restore mode (skip: set the member online without moving anything)');

  registerClusterGroupCommands(cluster, ctx);
}
