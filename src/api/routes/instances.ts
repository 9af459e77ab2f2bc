// `/1.0/instances...`: list, create (with placement), show, update, delete, move, state, logs.
// Requests about an instance are forwarded to the member that holds it.

import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Router } from '../server.js';
import { sync, async as asyncReply } from '../envelope.js';
import { forwardTo, forwardedHeader, param, parseBody, projectOf, queryParam, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import type { InstanceRecord, InstanceSnapshotRecord } from '../../store/schema.js';
import { keys } from '../../store/schema.js';
import type { InstanceRuntimeState } from '../../instances/driver.js';
import type { InstanceKeys } from '../../cluster/internal.js';
import { instanceEtag, type CreateInstance } from '../../instances/service.js';
import { attachedVolumes, instancePools } from '../../config/devices.js';
import { expandInstance, type ProfileSet } from '../../config/expand.js';
import { clusterGroupKey, groupMembers, pickTarget, LoadLedger, placeNewInstance, placementRequest } from '../../placement/index.js';
import { GroupService } from '../../cluster/groups.js';
import { readSnapshot } from '../../cluster/snapshot.js';
import { parseBytes } from '../../util/units.js';
import { checkUserChange } from '../../config/keys.js';
import type { Member } from '../../daemon/context.js';
import type { RunContext } from '../../operations/operations.js';
import { commandNotExecutable, commandNotFound, startExec } from '../../instances/exec.js';
import { ExecSession } from '../exec-session.js';

/**
 * Query parameter carrying the cluster group `--target=@<group>` chose, on a create forwarded to the chosen
 * member (honoured only from a peer), so the member that creates the instance records it.
 */
const placedGroupParam = 'roost_cluster_group';

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
  config: z.record(z.string(), z.unknown()).nullish(),
  devices: z.record(z.string(), stringMap).nullish(),
  profiles: z.array(z.string()).nullable().optional(),
  description: z.string().optional(),
  /** A snapshot to restore (`lxc restore`); the rest of the body is then ignored, as LXD does. */
  restore: z.string().optional(),
  stateful: z.boolean().optional(),
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

/** LXD's time for "never" (Go's zero time), which clients test with IsZero. */
const zeroTime = '0001-01-01T00:00:00Z';

/** A snapshot as LXD's API shows it (`InstanceSnapshot`), expanded with the profiles it lists. */
export function snapshotToApi(s: InstanceSnapshotRecord, profiles: ProfileSet): Record<string, unknown> {
  const expanded = expandInstance(s, profiles);
  return {
    architecture: s.architecture,
    config: s.config,
    devices: s.devices,
    ephemeral: s.ephemeral,
    profiles: s.profiles,
    expires_at: s.expiresAt ?? zeroTime,
    created_at: s.createdAt,
    expanded_config: expanded.config,
    expanded_devices: expanded.devices,
    last_used_at: zeroTime,
    name: s.name,
    stateful: s.stateful,
    description: s.description,
  };
}

/** An instance as LXD's API shows it (recursion 1; `state` and `snapshots` added for recursion 2), expanded with `profiles`. */
export function instanceToApi(r: InstanceRecord, st: InstanceRuntimeState | null, withState: boolean, profiles: ProfileSet): Record<string, unknown> {
  const status = st?.status ?? 'Error';
  const expanded = expandInstance(r, profiles);
  const out: Record<string, unknown> = {
    architecture: r.architecture,
    config: r.config,
    devices: r.devices,
    ephemeral: r.ephemeral,
    profiles: r.profiles,
    stateful: false,
    description: r.description,
    created_at: r.createdAt,
    expanded_config: expanded.config,
    expanded_devices: expanded.devices,
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
    // Null when there are none, as LXD answers; `lxc list` counts them for its SNAPSHOTS column.
    out.snapshots = (r.snapshots ?? []).length > 0 ? (r.snapshots ?? []).map((x) => snapshotToApi(x, profiles)) : null;
    out.backups = null;
  }
  return out;
}

/** Runtime states of `records`, asking each Online member about those it holds (in parallel). */
async function clusterStates(m: Member, records: InstanceRecord[]): Promise<Map<string, InstanceRuntimeState | null>> {
  const out = new Map<string, InstanceRuntimeState | null>();
  const byLocation = new Map<string, InstanceKeys>();
  for (const r of records) {
    const list = byLocation.get(r.location);
    if (list) list.push({ project: r.project, name: r.name });
    else byLocation.set(r.location, [{ project: r.project, name: r.name }]);
  }
  const views = new Map((await m.cluster.members()).map((v) => [v.record.name, v]));
  await Promise.all(
    [...byLocation].map(async ([loc, held]) => {
      const view = views.get(loc);
      try {
        if (loc === m.name) {
          for (const [k, v] of await m.instances.statesOf(held)) out.set(k, v);
        } else if (view && view.status !== 'Offline') {
          const states = await m.internal.instanceStates(view.record.address, held);
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
  const groups = new GroupService(m.store);
  // Requests about one instance are served by the member that holds it.
  const instanceOwner = async (req: FastifyRequest): Promise<string> => (await m.instances.load(projectOf(req), param(req, 'name'))).record.location;

  r.on('GET', '/1.0/instances', async (req, reply) => {
    const project = projectOf(req);
    const { kvs } = await m.store.range(keys.instances(project));
    const records = kvs.map((kv) => JSON.parse(kv.value) as InstanceRecord);
    const level = recursion(req);
    if (level === 0) return sync(reply, records.map((x) => `/1.0/instances/${x.name}`));
    const [states, profiles] = await Promise.all([clusterStates(m, records), m.profiles.set(project)]);
    return sync(reply, records.map((x) => instanceToApi(x, states.get(`${x.project}/${x.name}`) ?? null, level > 1, profiles)));
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
    const requested = queryParam(req, 'target');
    const fromPeer = r.origin === 'https' && req.headers[forwardedHeader] !== undefined;
    let group = fromPeer ? queryParam(req, placedGroupParam) : undefined;
    let target: string;
    if (requested !== undefined && requested.startsWith('@')) {
      group = requested.slice(1);
      await groups.get(group); // 404 for an unknown group
      target = await chooseMember(m, create, group);
    } else {
      target = requested ?? (await chooseMember(m, create));
    }
    if (group !== undefined && group !== '') create.config[clusterGroupKey] = group;
    const view = await m.cluster.member(target);
    if (view.status === 'Offline') throw errors.memberOffline(target);
    if (view.status !== 'Online') throw errors.memberEvacuated();
    await m.instances.checkVolumesOn(create, target); // 400 before any operation, as for other bad input
    const q = new URLSearchParams(req.query as Record<string, string>);
    q.set('target', target);
    if (group !== undefined && group !== '') q.set(placedGroupParam, group);
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
    const profiles = await m.profiles.set(record.project);
    const st = await m.instances.state(record, profiles);
    return sync(reply, instanceToApi(record, st, recursion(req) > 0, profiles), instanceEtag(record));
  });

  const update = (replace: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const body = parseBody(req, updateBody);
    if (replace && body.restore !== undefined && body.restore !== '') {
      // The client names the snapshot `<instance>/<snapshot>`, as LXD's API takes it.
      const snapshot = body.restore.startsWith(`${name}/`) ? body.restore.slice(name.length + 1) : body.restore;
      return restore(req, reply, project, name, snapshot, body.stateful === true);
    }
    const ifMatch = req.headers['if-match'];
    const etag = typeof ifMatch === 'string' && ifMatch !== '' ? ifMatch.replace(/^"|"$/g, '') : undefined;
    await m.instances.update(project, name, {
      config: body.config ?? undefined,
      devices: body.devices ?? undefined,
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
  // `lxc restore`: the member holding the instance runs it (its pool has the snapshot).
  const restore = async (req: FastifyRequest, reply: FastifyReply, project: string, name: string, snapshot: string, stateful: boolean) => {
    const { record } = await m.instances.load(project, name);
    if (await forwardTo(r, req, reply, record.location)) return reply;
    if (stateful) throw errors.statefulSnapshot();
    await m.snapshots.get(project, name, snapshot).catch(() => {
      throw errors.restoreSnapshotNotFound(name, snapshot);
    });
    if (await m.store.get(keys.move(project, name))) throw errors.instanceBusy(name);
    const op = await m.operations.begin({
      description: 'Restoring snapshot',
      resources: { instances: [`/1.0/instances/${name}`], instances_snapshots: [`/1.0/instances/${name}/snapshots/${snapshot}`] },
      project,
      run: async () => {
        await m.snapshots.restore(project, name, snapshot);
      },
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
    const requested = queryParam(req, 'target');
    if (!requested) {
      if (body.name && body.name !== name) throw errors.badRequest('Renaming instances is not supported yet');
      throw errors.badRequest('A move needs a target member (?target=<member>)');
    }
    const group = requested.startsWith('@') ? requested.slice(1) : undefined;
    if (group !== undefined) await groups.get(group); // 404 for an unknown group
    const target = group === undefined ? requested : await chooseMoveTarget(m, record, group);
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
        // As LXD 6.x: a move to `@<group>` records the group, so evacuation keeps the instance in it.
        if (group !== undefined) await m.instances.setConfig(project, name, { [clusterGroupKey]: group });
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

/**
 * Pick a member for a new instance without --target, or with `--target=@<group>` among that cluster
 * group's members (placement over a fresh snapshot).
 */
async function chooseMember(m: Member, create: CreateInstance, group?: string): Promise<string> {
  const snapshot = await readSnapshot(m);
  const expanded = await m.instances.expandCreate(create);
  const within = group === undefined ? undefined : groupMembers(snapshot, group);
  const volumes = attachedVolumes(expanded.devices);
  if (volumes.length > 0) {
    const vol = snapshot.volumes.find((v) => v.name === volumes[0]?.volume && v.pool === volumes[0]?.pool && v.project === create.project);
    if (vol && within !== undefined && !within.has(vol.location)) {
      throw errors.badRequest(`Volume "${vol.name}" is on member "${vol.location}", which is not in cluster group "${group ?? ''}"`);
    }
    if (vol) return vol.location;
  }
  const placed = placeNewInstance(snapshot, {
    project: create.project,
    architecture: snapshot.members.find((x) => x.name === m.name)?.architecture ?? 'x86_64',
    cpu: Number(expanded.config['limits.cpu'] ?? 0) || 0,
    memoryBytes: parseBytes(expanded.config['limits.memory'] ?? '') ?? 0,
    bytes: 0,
    // Only members where every pool it uses is created.
    pools: Object.fromEntries(instancePools(expanded.devices).map((pool) => [pool, 0])),
    group: expanded.config['placement.group'],
  }, within);
  if (!placed.ok) throw errors.badRequest(`No suitable cluster member for the instance${inGroup(group)}: ${placed.reason}`);
  return placed.member;
}

const inGroup = (group: string | undefined): string => (group === undefined ? '' : ` in cluster group "${group}"`);

/** Pick the member a move to `--target=@<group>` goes to: the placement rules, among the group's other members. */
async function chooseMoveTarget(m: Member, record: InstanceRecord, group: string): Promise<string> {
  const snapshot = await readSnapshot(m);
  const inst = snapshot.instances.find((i) => i.project === record.project && i.name === record.name);
  if (inst === undefined) throw errors.instanceNotFound();
  const picked = pickTarget(new LoadLedger(snapshot), placementRequest(inst, snapshot), {
    exclude: [record.location],
    within: groupMembers(snapshot, group),
  });
  if (!picked.ok) throw errors.badRequest(`No suitable cluster member for the instance${inGroup(group)}: ${picked.reason}`);
  return picked.member;
}
