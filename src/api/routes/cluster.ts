// `/1.0/cluster...`: the cluster, its members, join tokens and member state (evacuate/restore).

import os from 'node:os';
import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Router } from '../server.js';
import { sync, async as asyncReply } from '../envelope.js';
import { param, parseBody, queryParam, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import type { MemberView } from '../../cluster/members.js';
import type { Member } from '../../daemon/context.js';
import { issueToken } from '../../cluster/tokens.js';
import { maintenanceRequestPorts, requestPorts } from '../../daemon/drainer-ports.js';
import { requestMaintenance } from '../../evacuation/maintenance-request.js';
import { memberProgress, requestStateChange } from '../../evacuation/requests.js';
import { GroupService, groupsOf } from '../../cluster/groups.js';
import { checkConfig } from '../../config/keys.js';

const memberUpdate = z.object({
  config: z.record(z.string(), z.unknown()).optional(),
  description: z.string().optional(),
  /** The groups the member is to be in, exactly (`lxc cluster group assign`). */
  groups: z.array(z.string()).nullable().optional(),
}).passthrough();

const stateRequest = z.object({
  action: z.string(),
  mode: z.string().optional(),
}).passthrough();

/** A member as LXD's API shows it, with the cluster groups it is in. */
export function memberToApi(view: MemberView, membership: ReadonlyMap<string, readonly string[]>): Record<string, unknown> {
  const r = view.record;
  return {
    server_name: r.name,
    url: `https://${r.address}`,
    database: true,
    status: view.status,
    message: view.message,
    architecture: r.architecture,
    failure_domain: 'default',
    description: r.description,
    config: r.config,
    roles: ['database'],
    groups: groupsOf(membership, r.name),
  };
}

/** The `sysinfo` and `storage_pools` of this member (capacity that placement uses). */
export async function localMemberState(m: Member): Promise<Record<string, unknown>> {
  const storagePools: Record<string, unknown> = {};
  for (const [name, pool] of m.pools.all()) {
    const usage = await pool.poolUsage();
    storagePools[name] = { space: { used: usage.usedBytes, total: usage.totalBytes }, inodes: { used: 0, total: 0 } };
  }
  const load = os.loadavg();
  return {
    sysinfo: {
      uptime: Math.round(os.uptime()),
      load_averages: load,
      total_ram: os.totalmem(),
      free_ram: os.freemem(),
      shared_ram: 0,
      buffered_ram: 0,
      total_swap: 0,
      free_swap: 0,
      processes: 0,
      logical_cpus: os.cpus().length,
    },
    storage_pools: storagePools,
    roost_evacuation: await memberProgress(requestPorts(m), m.name),
  };
}

/** Register the cluster routes. */
export function registerClusterRoutes(r: Router): void {
  const m = r.member;
  const groups = new GroupService(m.store);

  r.on('GET', '/1.0/cluster', async (_req, reply) => sync(reply, { server_name: m.name, enabled: true, member_config: [] }));

  r.on('GET', '/1.0/cluster/members', async (req, reply) => {
    const views = (await m.cluster.members()).sort((a, b) => a.record.name.localeCompare(b.record.name));
    if (recursion(req) === 0) return sync(reply, views.map((v) => `/1.0/cluster/members/${v.record.name}`));
    const membership = await groups.membership();
    return sync(reply, views.map((v) => memberToApi(v, membership)));
  });

  // A join token for a new member (LXD's `lxc cluster add <name>`).
  r.on('POST', '/1.0/cluster/members', async (req, reply) => {
    const body = parseBody(req, z.object({ server_name: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$/, 'must be a valid member name') }).passthrough());
    const existing = (await m.cluster.members()).find((v) => v.record.name === body.server_name);
    if (existing) throw errors.conflict(`The cluster already has a member with name: ${body.server_name}`);
    // The operation stays Running until the token is used, revoked or expires (`lxc cluster list-tokens`).
    const op = await issueToken(m.store, m.events, {
      kind: 'join',
      name: body.server_name,
      description: 'Requesting to join the cluster',
      location: m.name,
      metadata: (secret, expiresAt) => ({
        serverName: body.server_name,
        secret,
        fingerprint: m.cert.fingerprint,
        addresses: [m.address],
        expiresAt,
        store: m.storeUrl,
      }),
    });
    return asyncReply(reply, op);
  });

  r.on('GET', '/1.0/cluster/members/:name', async (req, reply) => {
    const view = await m.cluster.member(param(req, 'name'));
    return sync(reply, memberToApi(view, await groups.membership()));
  });

  // `lxc cluster remove [--force]`: the member's daemon sees its record gone at its next heartbeat and stops.
  r.on('DELETE', '/1.0/cluster/members/:name', async (req, reply) => {
    const force = ['1', 'true'].includes(queryParam(req, 'force') ?? '');
    const lost = await m.cluster.remove(param(req, 'name'), force);
    m.events.lifecycle('cluster-member-removed', `/1.0/cluster/members/${param(req, 'name')}`, lost);
    return sync(reply, lost);
  });

  const update = (replace: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    const name = param(req, 'name');
    const body = parseBody(req, memberUpdate);
    await m.cluster.member(name);
    // Config is checked before the groups are written, so a refused request changes nothing.
    const problem = body.config ? checkConfig('member', body.config) : null;
    if (problem) throw errors.badRequest(problem);
    if (body.groups !== undefined) await groups.assign(name, body.groups ?? []);
    await m.cluster.updateMember(name, { config: body.config, description: body.description }, replace);
    return sync(reply, {});
  };
  r.on('PUT', '/1.0/cluster/members/:name', update(true));
  r.on('PATCH', '/1.0/cluster/members/:name', update(false));

  // A member answers for itself; for an offline one any member answers what the store knows.
  const stateOwner = async (req: FastifyRequest): Promise<string | null> => {
    const view = await m.cluster.member(param(req, 'name'));
    return view.status === 'Offline' ? null : view.record.name;
  };
  r.owned('GET', '/1.0/cluster/members/:name/state', stateOwner, async (req, reply) => {
    const name = param(req, 'name');
    if (name !== m.name) {
      return sync(reply, { sysinfo: null, storage_pools: null, roost_evacuation: await memberProgress(requestPorts(m), name) });
    }
    return sync(reply, await localMemberState(m));
  });

  r.on('POST', '/1.0/cluster/members/:name/state', async (req, reply) => {
    const name = param(req, 'name');
    const body = parseBody(req, stateRequest);
    if (body.action !== 'evacuate' && body.action !== 'restore') throw errors.badRequest(`Unknown action "${body.action}"`);
    // Any member records the request; the drainer (on whichever member leads) carries it out.
    const result = await requestStateChange(requestPorts(m), name, req.body);
    if ('operation' in result) return asyncReply(reply, result.operation);
    return sync(reply, result.sync);
  });

  // Rolling maintenance: any member records it; the drainer carries it out.
  r.on('POST', '/1.0/cluster/maintenance', async (req, reply) => asyncReply(reply, await requestMaintenance(maintenanceRequestPorts(m), req.body)));
  r.on('GET', '/1.0/cluster/maintenance', async (_req, reply) => {
    const list = await maintenanceRequestPorts(m).list();
    list.sort((a, b) => a.record.startedAt.localeCompare(b.record.startedAt));
    return sync(reply, list.map(({ record }) => ({
      id: record.id,
      operation: `/1.0/operations/${record.operation}`,
      status: record.status,
      started_at: record.startedAt,
      finished_at: record.finishedAt,
      exec: record.exec ?? '',
      wait_online: record.waitOnlineSeconds,
      concurrency: record.concurrency,
      members: record.members,
      error: record.error,
    })));
  });
}
