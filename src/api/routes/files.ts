// `/1.0/instances/<name>/files?path=...`: LXD's file API, which `lxc file push|pull|delete` drives. GET answers
// a file's bytes, a directory's entry names (sync envelope) or a symlink's target, with the entry's type,
// mode and owner in `X-LXD-*` headers; POST creates or writes a file, directory or symlink as those headers
// say; DELETE removes one. Requests go to the member holding the instance, bodies streamed both ways.

import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import type { Router } from '../server.js';
import { sync } from '../envelope.js';
import { forwardRaw, param, projectOf, queryParam } from '../request.js';
import { errors } from '../../errors/index.js';
import { keys, type InstanceRecord } from '../../store/schema.js';
import { InstanceFiles, type FileInfo } from '../../instances/files.js';

/** Headers a relayed file request or answer carries. */
const relayedHeaders = ['content-type', 'content-length', 'content-disposition', 'x-lxd-uid', 'x-lxd-gid', 'x-lxd-mode', 'x-lxd-type', 'x-lxd-write', 'x-lxd-modified'];

/** Register the file routes. */
export function registerFileRoutes(r: Router): void {
  const m = r.member;
  const url = '/1.0/instances/:name/files';

  /** The instance, its files and the path asked for; null once the request went to the member holding it. */
  const target = async (req: FastifyRequest, reply: FastifyReply): Promise<{ record: InstanceRecord; files: InstanceFiles; path: string } | null> => {
    const { record } = await m.instances.load(projectOf(req), param(req, 'name'));
    if (await forwardRaw(r, req, reply, record.location, relayedHeaders)) return null;
    const raw = queryParam(req, 'path') ?? '';
    if (raw === '') throw errors.badRequest('Missing path argument');
    // The client sends the path with or without its leading slash.
    const path = raw.startsWith('/') ? raw : `/${raw}`;
    return { record, files: new InstanceFiles(await m.instances.filesRoot(record)), path };
  };

  /** Writes to an instance being moved would miss the copy: refused until the move is over. */
  const refuseWhileMoving = async (record: InstanceRecord): Promise<void> => {
    if (await m.store.get(keys.move(record.project, record.name))) throw errors.instanceBusy(record.name);
  };

  r.on('GET', url, async (req, reply) => {
    const t = await target(req, reply);
    if (!t) return reply; // relayed: the answer is a stream still being sent
    const read = await t.files.read(t.path);
    void reply.headers(fileHeaders(read.info));
    m.events.lifecycle('instance-file-retrieved', `/1.0/instances/${t.record.name}`, { path: t.path }, t.record.project);
    if (read.kind === 'directory') return sync(reply, read.entries);
    const filename = t.path.split('/').filter((p) => p !== '').pop() ?? '/';
    void reply.headers({ 'content-type': 'application/octet-stream', 'content-disposition': `inline;filename=${filename}` });
    if (read.kind === 'symlink') return reply.header('content-length', Buffer.byteLength(read.target)).send(read.target);
    return reply.header('content-length', read.info.size).send(read.content);
  });

  r.on(
    'POST',
    url,
    async (req, reply) => {
      const t = await target(req, reply);
      if (!t) return reply; // relayed: the answer is a stream still being sent
      const type = header(req, 'x-lxd-type') || 'file';
      const write = header(req, 'x-lxd-write') || 'overwrite';
      if (write !== 'overwrite' && write !== 'append') throw errors.badRequest(`Bad file write mode: ${write}`);
      if (type !== 'file' && type !== 'directory' && type !== 'symlink') throw errors.badRequest(`Bad file type: ${type}`);
      await refuseWhileMoving(t.record);
      const entry = { uid: idHeader(req, 'x-lxd-uid'), gid: idHeader(req, 'x-lxd-gid'), mode: modeHeader(req) };
      const body = req.body as Readable;
      if (type === 'file') await t.files.writeFile(t.path, body, entry, write === 'append');
      else if (type === 'directory') await t.files.mkdir(t.path, entry);
      else await t.files.symlink(t.path, await readText(body));
      m.events.lifecycle('instance-file-pushed', `/1.0/instances/${t.record.name}`, { path: t.path }, t.record.project);
      return sync(reply, {});
    },
    {
      // Whatever the client says (the lxc client sends no Content-Type), a file's body is raw bytes.
      onRequest: async (req) => {
        req.headers['content-type'] = 'application/octet-stream';
      },
    },
  );

  r.on('DELETE', url, async (req, reply) => {
    const t = await target(req, reply);
    if (!t) return reply; // relayed: the answer is a stream still being sent
    await refuseWhileMoving(t.record);
    await t.files.remove(t.path);
    m.events.lifecycle('instance-file-deleted', `/1.0/instances/${t.record.name}`, { path: t.path }, t.record.project);
    return sync(reply, {});
  });
}

/** LXD's `X-LXD-*` headers of a GET: owner, permission bits (`%04o`), type, modification time. */
function fileHeaders(info: FileInfo): Record<string, string> {
  return {
    'x-lxd-uid': String(info.uid),
    'x-lxd-gid': String(info.gid),
    'x-lxd-mode': info.mode.toString(8).padStart(4, '0'),
    'x-lxd-modified': info.modified.toISOString().replace('T', ' ').replace('Z', ' +0000 UTC'),
    'x-lxd-type': info.type,
  };
}

function header(req: FastifyRequest, name: string): string {
  const v = req.headers[name];
  return typeof v === 'string' ? v.trim() : '';
}

/** `X-LXD-uid` / `X-LXD-gid`: a number, or -1 (leave as is) when absent or not a number, as LXD parses them. */
function idHeader(req: FastifyRequest, name: string): number {
  const v = header(req, name);
  return /^\d+$/.test(v) && Number(v) <= 0xffffffff ? Number(v) : -1;
}

/** `X-LXD-mode`: LXD reads it as Go's base-0 integers (`0644` is octal) and keeps the permission bits. */
function modeHeader(req: FastifyRequest): number {
  const v = header(req, 'x-lxd-mode');
  if (/^0[0-7]*$/.test(v)) return parseInt(v, 8) & 0o777;
  if (/^0[xX][0-9a-fA-F]+$/.test(v)) return parseInt(v.slice(2), 16) & 0o777;
  if (/^[1-9]\d*$/.test(v)) return Number(v) & 0o777;
  return -1;
}

/** A small body (a symlink's target) as text; a target is a path, never megabytes. */
async function readText(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    size += b.length;
    if (size > 65_536) throw errors.badRequest('Symlink target too long');
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}
