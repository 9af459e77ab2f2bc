// `/1.0/images...`: import (a unified tarball as the raw body), list, show, delete, and aliases.

import type { Readable } from 'node:stream';
import { z } from 'zod';
import type { Router } from '../server.js';
import { sync, async as asyncReply } from '../envelope.js';
import { param, parseBody, recursion } from '../request.js';
import { errors } from '../../errors/index.js';
import type { AliasRecord, ImageRecord } from '../../images/service.js';

/** An image as LXD's API shows it. */
export function imageToApi(image: ImageRecord, aliases: AliasRecord[]): Record<string, unknown> {
  return {
    fingerprint: image.fingerprint,
    filename: image.filename,
    size: image.size,
    architecture: image.architecture,
    type: image.type,
    properties: image.properties,
    aliases: aliases.filter((a) => a.target === image.fingerprint).map((a) => ({ name: a.name, description: a.description })),
    public: false,
    auto_update: false,
    cached: false,
    created_at: image.createdAt,
    uploaded_at: image.uploadedAt,
    last_used_at: '1970-01-01T00:00:00Z',
    expires_at: '1970-01-01T00:00:00Z',
    update_source: null,
    profiles: ['default'],
  };
}

/** Register the image routes. */
export function registerImageRoutes(r: Router): void {
  const m = r.member;

  r.on('GET', '/1.0/images', async (req, reply) => {
    const [images, aliases] = await Promise.all([m.images.list(), m.images.aliases()]);
    return sync(reply, recursion(req) > 0 ? images.map((i) => imageToApi(i, aliases)) : images.map((i) => `/1.0/images/${i.fingerprint}`));
  });

  // The body is the tarball itself; it is read fully before answering, then an already finished
  // operation carries the fingerprint (as LXD's import operation does).
  r.on('POST', '/1.0/images', async (req, reply) => {
    const body = req.body as Readable | undefined;
    if (!body || typeof body.pipe !== 'function') {
      throw errors.badRequest('Send the image tarball as the request body with Content-Type: application/octet-stream');
    }
    const filename = typeof req.headers['x-lxd-filename'] === 'string' ? req.headers['x-lxd-filename'] : 'image.tar.gz';
    const image = await m.images.import(body, filename);
    const op = await m.operations.begin({
      description: 'Downloading image',
      resources: { images: [`/1.0/images/${image.fingerprint}`] },
      run: async () => ({ fingerprint: image.fingerprint, size: image.size }),
    });
    return asyncReply(reply, op);
  });

  r.on('GET', '/1.0/images/aliases', async (req, reply) => {
    const aliases = await m.images.aliases();
    return sync(reply, recursion(req) > 0 ? aliases : aliases.map((a) => `/1.0/images/aliases/${a.name}`));
  });
  r.on('POST', '/1.0/images/aliases', async (req, reply) => {
    const body = parseBody(req, z.object({ name: z.string(), target: z.string(), description: z.string().optional() }).passthrough());
    await m.images.createAlias(body.name, body.target, body.description ?? '');
    return sync(reply, {});
  });
  r.on('GET', '/1.0/images/aliases/:name', async (req, reply) => sync(reply, await m.images.alias(param(req, 'name'))));
  r.on('DELETE', '/1.0/images/aliases/:name', async (req, reply) => {
    await m.images.deleteAlias(param(req, 'name'));
    return sync(reply, {});
  });

  r.on('GET', '/1.0/images/:fp', async (req, reply) => {
    const image = await m.images.get(param(req, 'fp'));
    return sync(reply, imageToApi(image, await m.images.aliases()));
  });
  r.on('DELETE', '/1.0/images/:fp', async (req, reply) => {
    const image = await m.images.get(param(req, 'fp'));
    const op = await m.operations.begin({
      description: 'Deleting image',
      resources: { images: [`/1.0/images/${image.fingerprint}`] },
      run: async () => {
        await m.images.delete(image.fingerprint);
      },
    });
    return asyncReply(reply, op);
  });
}
