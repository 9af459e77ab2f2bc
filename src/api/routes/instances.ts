// `/1.0/instances...`: list, create (with placement), show, update, delete, move, state, logs.
// Requests about an instance are forwarded to the member that holds it.

import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Router } from '../server.js';
import { sync, async as asyncReply } from '../envelope.js';
import { forwardTo, param, parseBody, projectOf, queryParam, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import type { InstanceRecord } from '../../store/schema.js';
import { keys } from '../../store/schema.js';
import type { InstanceRuntimeState } from '../../instances/driver.js';
import { instanceEtag, type CreateInstance } from '../../instances/service.js';
import { attachedVolumes, expandDevices } from '../../config/devices.js';
import { placeNewInstance } from '../../placement/index.js';
import { readSnapshot } from '../../cluster/snapshot.js';
import { parseBytes } from '../../util/units.js';
import { checkUserChange } from '../../config/keys.js';
import type { Member } from '../../daemon/context.js';
import type { RunContext } from '../../operations/operations.js';
import { commandNotExecutable, commandNotFound, startExec } from '../../instances/exec.js';
import { ExecSession } from '../exec-session.js';

const statusCodes: Record<string, number> = { Running: 103, Stopped: 102, Frozen: 110, Error: 112 };

const stringMap = z.record(z.string(), z.string());
const createBody = z.object({
  name: z.string(),
  type: z.string().optional(),
  source: z.object({ type: z.string().optional(), alias: z.string().optional() }).passthrough().optional(),
  config: z.record(z.string(), z.unknown()).optional(),
  devices: z.record(z.string(), stringMap).optional(),
  profiles: z.array(z.string()).nullable().optional(),
  description: z.string().optional(),
  ephemeral: z.boolean().optional(),
}).passthrough();

const updateBody = z.object({
  config: z.record(z.string(), z.unknown()).optional(),
  devices: z.record(z.string(), stringMap).optional(),
  profiles: z.array(z.string()).nullable().optional(),
  description: z.string().optional(),
}).passthrough();

const stateBody = z.object({
  action: z.string(),
  timeout: z.number().int().optional(),
  force: z.boolean().optional(),
  stateful: z.boolean().optional(),
}).passthrough();

const execBody = z.object({
  command: z.array(z.string()).min(1),
  environment: z.record(z.string(), z.string()).nullish(),
  cwd: z.string().optional(),
  'wait-for-websocket': z.boolean().optional(),
  'record-output': z.boolean().optional(),
  interactive: z.boolean().optional(),
  width: z.number().int().optional(),
  height: z.number().int().optional(),
  user: z.number().int().optional(),
  group: z.number().int().optional(),
}).passthrough();

const postBody = z.object({
  name: z.string().optional(),
  migration: z.boolean().optional(),
  live: z.boolean().optional(),
}).passthrough();

/** The runtime part of an instance as LXD shows it under `state`. */
export function stateToApi(st: InstanceRuntimeState | null): Record<string, unknown> {
  const status = st?.status ?? 'Error';
  return {
    status,
    status_code: statusCodes[status] ?? 112,
    disk: {},
    memory: { usage: st?.memoryBytes ?? 0, usage_peak: 0, swap_usage: 0, swap_usage_peak: 0 },
    network: {},
    pid: st?.pid ?? 0,
    processes: st?.processes ?? 0,
    cpu: { usage: 0 },
  };
}

/** An instance as LXD's API shows it (recursion 1; `state` added for recursion 2). */
export function instanceToApi(r: InstanceRecord, st: InstanceRuntimeState | null, withState: boolean): Record<string, unknown> {
  const status = st?.status ?? 'Error';
  const out: Record<string, unknown> = {
    architecture: r.architecture,
    config: r.config,
    devices: r.devices,
    ephemeral: r.ephemeral,
    profiles: r.profiles,
    stateful: false,
    description: r.description,
    created_at: r.createdAt,
    expanded_config: r.config,
    expanded_devices: expandDevices(r.devices),
    name: r.name,
    status,
    status_code: statusCodes[status] ?? 112,
    last_used_at: r.lastUsedAt,
    location: r.location,
    type: r.type,
    project: r.project,
  };
  if (withState) {
    out.state = stateToApi(st);
    out.snapshots = null;
    out.backups = null;
  }
  return out;
}

/** Runtime states of all instances, asking each Online member for its own (in parallel). */
async function clusterStates(m: Member, records: InstanceRecord[]): Promise<Map<string, InstanceRuntimeState | null>> {
  const out = new Map<string, InstanceRuntimeState | null>();
  const locations = new Set(records.map((r) => r.location));
  const views = await m.cluster.members();
  await Promise.all(
    [...locations].map(async (loc) => {
      const view = views.find((v) => v.record.name === loc);
      try {
        if (loc === m.name) {
          for (const [k, v] of await m.instances.localStates()) out.set(k, v);
        } else if (view && view.status !== 'Offline') {
          const states = await m.internal.instanceStates(view.record.address);
          for (const [k, v] of Object.entries(states)) out.set(k, v);
        }
      } catch {
        // Instances of an unreachable member show as Error, as LXD shows them.
      }
    }),
  );
  return out;
}

/** Register the instance routes. */
export function registerInstanceRoutes(r: Router): void {
  const m = r.member;
  // Requests about one instance are served by the member that holds it.
  const instanceOwner = async (req: FastifyRequest): Promise<string> => (await m.instances.load(projectOf(req), param(req, 'name'))).record.location;

  r.on('GET', '/1.0/instances', async (req, reply) => {
    const project = projectOf(req);
    const { kvs } = await m.store.range(keys.instances(project));
    const records = kvs.map((kv) => JSON.parse(kv.value) as InstanceRecord);
    const level = recursion(req);
    if (level === 0) return sync(reply, records.map((x) => `/1.0/instances/${x.name}`));
    const states = await clusterStates(m, records);
    return sync(reply, records.map((x) => instanceToApi(x, states.get(`${x.project}/${x.name}`) ?? null, level > 1)));
  });

  r.on('POST', '/1.0/instances', async (req, reply) => {
    const project = projectOf(req);
    const body = parseBody(req, createBody);
    // Before the image's own keys are added: only what the user sent must leave volatile keys alone.
    const readOnly = checkUserChange('instance', {}, body.config ?? {});
    if (readOnly) throw errors.badRequest(readOnly);
    const sourceType = body.source?.type ?? 'none';
    if (sourceType !== 'none' && sourceType !== 'image') throw errors.badRequest(`Unsupported instance source "${sourceType}" (use "none" or "image")`);
    const image = sourceType === 'image'
      ? await m.images.resolve({ alias: body.source?.alias, fingerprint: typeof body.source?.fingerprint === 'string' ? body.source.fingerprint : undefined })
      : null;
    const imageConfig: Record<string, string> = image
      ? { ...Object.fromEntries(Object.entries(image.properties).map(([k, v]) => [`image.${k}`, v])), 'volatile.base_image': image.fingerprint }
      : {};
    const create: CreateInstance = {
      name: body.name,
      project,
      type: body.type && body.type !== '' ? body.type : image ? 'container' : 'process',
      config: { ...imageConfig, ...((body.config ?? {}) as Record<string, string>) },
      devices: body.devices ?? {},
      profiles: body.profiles ?? ['default'],
      description: body.description ?? '',
      ephemeral: body.ephemeral ?? false,
    };
    await m.instances.validateCreate(create);
    if (await m.store.get(keys.instance(project, create.name))) throw errors.instanceExists(create.name);
    const target = queryParam(req, 'target') ?? (await chooseMember(m, create));
    const view = await m.cluster.member(target);
    if (view.status === 'Offline') throw errors.memberOffline(target);
    if (view.status !== 'Online') throw errors.memberEvacuated();
    await m.instances.checkVolumesOn(create, target); // 400 before any operation, as for other bad input
    const q = new URLSearchParams(req.query as Record<string, string>);
    q.set('target', target);
    if (await forwardTo(r, req, reply, target, `/1.0/instances?${q.toString()}`)) return;
    const op = await m.operations.begin({
      description: 'Creating instance',
      resources: { instances: [`/1.0/instances/${create.name}`] },
      project,
      run: async () => {
        await m.instances.create({ ...create, prepareRoot: image ? (root) => m.images.unpackRootfs(image, root) : undefined });
      },
    });
    return asyncReply(reply, op);
  });

  r.owned('GET', '/1.0/instances/:name', instanceOwner, async (req, reply) => {
    const { record } = await m.instances.load(projectOf(req), param(req, 'name'));
    const st = await m.instances.state(record);
    return sync(reply, instanceToApi(record, st, recursion(req) > 0), instanceEtag(record));
  });

  const update = (replace: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const body = parseBody(req, updateBody);
    const ifMatch = req.headers['if-match'];
    const etag = typeof ifMatch === 'string' && ifMatch !== '' ? ifMatch.replace(/^"|"$/g, '') : undefined;
    await m.instances.update(project, name, {
      config: body.config,
      devices: body.devices,
      description: body.description,
      profiles: body.profiles ?? undefined,
    }, replace, etag);
    if (!replace) return sync(reply, {});
    const op = await m.operations.begin({
      description: 'Updating instance',
      resources: { instances: [`/1.0/instances/${name}`] },
      project,
      run: async () => undefined,
    });
    return asyncReply(reply, op);
  };
  r.on('PUT', '/1.0/instances/:name', update(true));
  r.on('PATCH', '/1.0/instances/:name', update(false));

  r.owned('DELETE', '/1.0/instances/:name', instanceOwner, async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const { record } = await m.instances.load(project, name);
    if ((await m.instances.state(record)).status === 'Running') throw errors.badRequest('The instance is currently running, stop it first');
    const op = await m.operations.begin({
      description: 'Deleting instance',
      resources: { instances: [`/1.0/instances/${name}`] },
      project,
      run: async () => {
        await m.instances.delete(project, name);
      },
    });
    return asyncReply(reply, op);
  });

  // Move to another member (LXD's migration request with ?target=).
  r.owned('POST', '/1.0/instances/:name', instanceOwner, async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const body = parseBody(req, postBody);
    const { record } = await m.instances.load(project, name);
    const target = queryParam(req, 'target');
    if (!target) {
      if (body.name && body.name !== name) throw errors.badRequest('Renaming instances is not supported yet');
      throw errors.badRequest('A move needs a target member (?target=<member>)');
    }
    const view = await m.cluster.member(target);
    if (target === record.location) throw errors.badRequest(`Instance "${name}" is already on member "${target}"`);
    if (view.status === 'Offline') throw errors.memberOffline(target);
    if (view.status !== 'Online') throw errors.memberEvacuated();
    await m.migrator.checkMovable(project, [name]); // a refusal is synchronous, before any operation
    const op = await m.operations.begin({
      description: 'Migrating instance',
      resources: { instances: [`/1.0/instances/${name}`] },
      project,
      mayCancel: true, // until the new location commits; after that the move finishes
      run: async (ctx) => {
        await m.migrator.move({
          instances: [{ project, name }],
          target,
          precopy: body.live === true, // LXD's live migration; here a pre-copy (copy while running, then the changes)
          signal: ctx.signal,
          onProgress: (done, total) => ctx.update({ migration_progress: `${Math.round((100 * done) / Math.max(1, total))}% (${done}/${total} bytes)` }),
        });
      },
    });
    return asyncReply(reply, op);
  });

  r.owned('GET', '/1.0/instances/:name/state', instanceOwner, async (req, reply) => {
    const { record } = await m.instances.load(projectOf(req), param(req, 'name'));
    return sync(reply, stateToApi(await m.instances.state(record)));
  });

  r.owned('PUT', '/1.0/instances/:name/state', instanceOwner, async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const body = parseBody(req, stateBody);
    if (!['start', 'stop', 'restart', 'freeze', 'unfreeze'].includes(body.action)) throw errors.badRequest(`Unknown action "${body.action}"`);
    if (body.action === 'freeze' || body.action === 'unfreeze') throw errors.badRequest('Freezing is not supported by this instance type');
    if (body.action === 'start' || body.action === 'restart') await m.instances.memberGuard(false); // 403 before any operation
    if (await m.store.get(keys.move(project, name))) throw errors.instanceBusy(name);
    const timeout = body.timeout !== undefined && body.timeout >= 0 ? body.timeout : undefined;
    const descriptions: Record<string, string> = { start: 'Starting instance', stop: 'Stopping instance', restart: 'Restarting instance' };
    const op = await m.operations.begin({
      description: descriptions[body.action] ?? 'Changing instance state',
      resources: { instances: [`/1.0/instances/${name}`] },
      project,
      run: async () => {
        if (body.action !== 'start') await m.instances.stop(project, name, { force: body.force === true, timeoutSeconds: timeout });
        if (body.action !== 'stop') await m.instances.start(project, name);
      },
    });
    return asyncReply(reply, op);
  });

  r.owned('GET', '/1.0/instances/:name/logs', instanceOwner, async (req, reply) => {
    const { record } = await m.instances.load(projectOf(req), param(req, 'name'));
    return sync(reply, (await m.instances.logFiles(record)).map((f) => `/1.0/instances/${record.name}/logs/${f}`));
  });

  r.owned('GET', '/1.0/instances/:name/logs/:file', instanceOwner, async (req, reply) => {
    const { record } = await m.instances.load(projectOf(req), param(req, 'name'));
    return reply.type('application/octet-stream').send(await m.instances.readLog(record, param(req, 'file')));
  });

  r.owned('DELETE', '/1.0/instances/:name/logs/:file', instanceOwner, async (req, reply) => {
    const { record } = await m.instances.load(projectOf(req), param(req, 'name'));
    await m.instances.deleteLog(record, param(req, 'file'));
    return sync(reply, {});
  });

  // LXD's exec. With `wait-for-websocket` the command's streams travel over the operation's websockets
  // (see ExecSession), with a terminal when `interactive`; otherwise its output is recorded as two log
  // files. Either way the operation's metadata gives the exit code as `return`.
  r.owned('POST', '/1.0/instances/:name/exec', instanceOwner, async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const body = parseBody(req, execBody);
    if ((body.user ?? 0) !== 0 || (body.group ?? 0) !== 0) throw errors.badRequest('Running a command as another user or group is not supported');
    const { record } = await m.instances.load(project, name);
    if ((await m.instances.state(record)).status !== 'Running') throw errors.badRequest('Instance is not running');
    const options = { environment: body.environment ?? undefined, cwd: body.cwd || undefined };
    const resources = { instances: [`/1.0/instances/${name}`] };
    if (body['wait-for-websocket'] === true) {
      const invocation = await m.instances.execInvocation(record, body.command, options);
      const terminal = body.interactive === true ? { cols: body.width ?? 0, rows: body.height ?? 0 } : null;
      const session = new ExecSession(terminal);
      const op = await m.operations.begin({
        class: 'websocket',
        description: 'Executing command',
        resources,
        project,
        metadata: { fds: session.secrets, command: body.command, environment: body.environment ?? {}, interactive: terminal !== null },
        run: async (ctx) => execResult(ctx, await session.run(() => startExec(invocation, terminal ?? undefined))),
      });
      m.execSessions.add(op.id, session, m.operations.settled(op.id));
      return asyncReply(reply, op);
    }
    const op = await m.operations.begin({
      description: 'Executing command',
      resources,
      project,
      run: async (ctx) => {
        const out = await m.instances.execRecorded(record, body.command, options);
        ctx.update({ output: { '1': `/1.0/instances/${name}/logs/${out.stdout}`, '2': `/1.0/instances/${name}/logs/${out.stderr}` } });
        return execResult(ctx, out.code);
      },
    });
    return asyncReply(reply, op);
  });
}

/** The end of an exec operation: `return` in its metadata, and LXD's failures for exit codes 127 and 126. */
function execResult(ctx: RunContext, code: number): Record<string, unknown> {
  ctx.update({ return: code });
  if (code === commandNotFound) throw new Error('Command not found');
  if (code === commandNotExecutable) throw new Error('Command not executable');
  return { return: code };
}

/** Pick a member for a new instance without --target (placement over a fresh snapshot). */
async function chooseMember(m: Member, create: CreateInstance): Promise<string> {
  const snapshot = await readSnapshot(m);
  const volumes = attachedVolumes(expandDevices(create.devices));
  if (volumes.length > 0) {
    const vol = snapshot.volumes.find((v) => v.name === volumes[0]?.volume && v.project === create.project);
    if (vol) return vol.location;
  }
  const placed = placeNewInstance(snapshot, {
    project: create.project,
    architecture: snapshot.members.find((x) => x.name === m.name)?.architecture ?? 'x86_64',
    cpu: Number(create.config['limits.cpu'] ?? 0) || 0,
    memoryBytes: parseBytes(create.config['limits.memory'] ?? '') ?? 0,
    bytes: 0,
    group: create.config['placement.group'],
  });
  if (!placed.ok) throw errors.badRequest(`No suitable cluster member for the instance: ${placed.reason}`);
  return placed.member;
}
