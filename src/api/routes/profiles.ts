// `/1.0/profiles...`: list, create, show, replace, patch, rename, delete (LXD's shapes, ETag and words).
// Profiles are store records every member reads, so any member answers; nothing is forwarded.

import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { param, parseBody, projectOf, recursion } from '../request.js';
import { keys, type InstanceRecord, type ProfileRecord } from '../../store/schema.js';
import { profileEtag, type ProfileChange } from '../../profiles/service.js';

const stringMap = z.record(z.string(), z.string());
const putBody = z.object({
  config: z.record(z.string(), z.string()).nullish(),
  description: z.string().nullish(),
  devices: z.record(z.string(), stringMap).nullish(),
}).passthrough();
const createBody = putBody.extend({ name: z.string() });
const renameBody = z.object({ name: z.string() }).passthrough();

/** A profile as LXD's API shows it. */
function profileToApi(p: ProfileRecord, usedBy: string[]): Record<string, unknown> {
  return { name: p.name, description: p.description, config: p.config, devices: p.devices, used_by: usedBy };
}

/** A sync answer naming the object made or renamed (LXD's `SyncResponseLocation`). */
function created(reply: FastifyReply, location: string): FastifyReply {
  void reply.header('Location', location);
  return sync(reply, null, undefined, 201);
}

function ifMatch(req: FastifyRequest): string | undefined {
  const v = req.headers['if-match'];
  return typeof v === 'string' && v !== '' ? v.replace(/^"|"$/g, '') : undefined;
}

/** Register the profile routes. */
export function registerProfileRoutes(r: Router): void {
  const m = r.member;

  r.on('GET', '/1.0/profiles', async (req, reply) => {
    const project = projectOf(req);
    const profiles = await m.profiles.list(project);
    if (recursion(req) === 0) return sync(reply, profiles.map((p) => `/1.0/profiles/${p.name}`));
    const { kvs } = await m.store.range(keys.instances(project));
    const instances = kvs.map((kv) => JSON.parse(kv.value) as InstanceRecord);
    const out = [];
    for (const p of profiles) out.push(profileToApi(p, await m.profiles.usedBy(project, p.name, instances)));
    return sync(reply, out);
  });

  r.on('POST', '/1.0/profiles', async (req, reply) => {
    const project = projectOf(req);
    const body = parseBody(req, createBody);
    const record = await m.profiles.create(project, body.name, { config: body.config ?? {}, description: body.description ?? '', devices: body.devices ?? {} });
    return created(reply, `/1.0/profiles/${record.name}`);
  });

  r.on('GET', '/1.0/profiles/:name', async (req, reply) => {
    const project = projectOf(req);
    const { record } = await m.profiles.load(project, param(req, 'name'), 'Fetch profile: ');
    return sync(reply, profileToApi(record, await m.profiles.usedBy(project, record.name)), profileEtag(record));
  });

  r.on('PUT', '/1.0/profiles/:name', async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const body = parseBody(req, putBody);
    const change: ProfileChange = { config: body.config ?? {}, description: body.description ?? '', devices: body.devices ?? {} };
    await m.profiles.update(project, name, () => change, ifMatch(req), `Failed to retrieve profile='${name}': `);
    return sync(reply, {});
  });

  // PATCH merges as LXD does: keys and devices absent from the body stay; a description only if sent.
  r.on('PATCH', '/1.0/profiles/:name', async (req, reply) => {
    const project = projectOf(req);
    const name = param(req, 'name');
    const body = parseBody(req, putBody);
    await m.profiles.update(project, name, (current) => ({
      config: { ...current.config, ...(body.config ?? {}) },
      description: typeof body.description === 'string' ? body.description : current.description,
      devices: { ...current.devices, ...(body.devices ?? {}) },
    }), ifMatch(req), `Failed to retrieve profile='${name}': `);
    return sync(reply, {});
  });

  r.on('POST', '/1.0/profiles/:name', async (req, reply) => {
    const project = projectOf(req);
    const body = parseBody(req, renameBody);
    await m.profiles.rename(project, param(req, 'name'), body.name);
    return created(reply, `/1.0/profiles/${body.name}`);
  });

  r.on('DELETE', '/1.0/profiles/:name', async (req, reply) => {
    await m.profiles.delete(projectOf(req), param(req, 'name'));
    return sync(reply, {});
  });
}
