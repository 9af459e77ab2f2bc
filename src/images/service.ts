// Local images in LXD's unified format (a tarball with `metadata.yaml` and `rootfs/`): imported on one
// member, recorded in the store, copied to another member the first time it creates an instance from
// them, and unpacked into a container's root volume.

import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { parse as parseYaml } from 'yaml';
import type { Store } from '../store/store.js';
import type { InternalClient } from '../cluster/internal.js';
import type { ClusterService } from '../cluster/members.js';
import type { EventBus } from '../operations/events.js';
import { ApiError, errors } from '../errors/index.js';
import { KeyedMutex } from '../util/mutex.js';
import { exactTree } from '../util/exact-tree.js';

/** An image as the store keeps it. */
export interface ImageRecord {
  fingerprint: string;
  filename: string;
  size: number;
  architecture: string;
  type: 'container';
  properties: Record<string, string>;
  createdAt: string;
  uploadedAt: string;
  /** Members holding the tarball. */
  locations: string[];
}

/** An alias pointing at an image. */
export interface AliasRecord {
  name: string;
  target: string;
  description: string;
}

const imageKey = (fp: string): string => `images/${fp}`;
const aliasKey = (name: string): string => `image-aliases/${name}`;

/** The images of the cluster, seen from one member. */
export class ImageService {
  /** Per fingerprint: putting a copy in place and recording it, or dropping a copy, one at a time. */
  private readonly copies = new KeyedMutex();
  private unsubscribe: (() => void) | null = null;

  constructor(
    private readonly store: Store,
    private readonly member: string,
    private readonly dir: string,
    private readonly internal: InternalClient,
    private readonly cluster: ClusterService,
    private readonly events: EventBus,
  ) {}

  private path(fp: string): string {
    return join(this.dir, 'images', fp);
  }

  /** Every image. */
  async list(): Promise<ImageRecord[]> {
    const { kvs } = await this.store.range('images/');
    return kvs.map((kv) => JSON.parse(kv.value) as ImageRecord);
  }

  /** Every alias. */
  async aliases(): Promise<AliasRecord[]> {
    const { kvs } = await this.store.range('image-aliases/');
    return kvs.map((kv) => JSON.parse(kv.value) as AliasRecord);
  }

  /** An image by fingerprint, or by a unique fingerprint prefix (as LXD accepts); 404 otherwise. */
  async get(fpOrPrefix: string): Promise<ImageRecord> {
    if (!/^[0-9a-f]{1,64}$/.test(fpOrPrefix)) throw errors.notFound('Image not found');
    const matches = (await this.list()).filter((i) => i.fingerprint.startsWith(fpOrPrefix));
    if (matches.length !== 1 || !matches[0]) throw errors.notFound('Image not found');
    return matches[0];
  }

  /** An alias; 404 otherwise. */
  async alias(name: string): Promise<AliasRecord> {
    const kv = await this.store.get(aliasKey(name));
    if (!kv) throw errors.notFound('Image alias not found');
    return JSON.parse(kv.value) as AliasRecord;
  }

  /** The image an instance source names (`alias` or `fingerprint`). */
  async resolve(source: { alias?: string; fingerprint?: string }): Promise<ImageRecord> {
    if (source.alias) return this.get((await this.alias(source.alias)).target);
    if (source.fingerprint) return this.get(source.fingerprint);
    throw errors.badRequest('An image source needs an "alias" or a "fingerprint"');
  }

  /** Import a unified tarball from a stream; returns the image (an existing one if the bytes are known). */
  async import(body: Readable, filename: string): Promise<ImageRecord> {
    await mkdir(join(this.dir, 'images'), { recursive: true });
    const tmp = join(this.dir, 'images', `.upload-${randomUUID()}`);
    const hash = createHash('sha256');
    let size = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
        hash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    });
    try {
      await pipeline(body, counter, createWriteStream(tmp));
      const fingerprint = hash.digest('hex');
      const metadata = await readMetadata(tmp);
      const now = new Date().toISOString();
      const record: ImageRecord = {
        fingerprint,
        filename,
        size,
        architecture: metadata.architecture,
        type: 'container',
        properties: metadata.properties,
        createdAt: metadata.creationDate ?? now,
        uploadedAt: now,
        locations: [this.member],
      };
      const stored = await this.copies.run(fingerprint, async () => {
        await rename(tmp, this.path(fingerprint));
        for (;;) {
          const kv = await this.store.get(imageKey(fingerprint));
          const next = kv ? { ...(JSON.parse(kv.value) as ImageRecord) } : record;
          if (!next.locations.includes(this.member)) next.locations.push(this.member);
          const r = await this.store.txn([{ key: imageKey(fingerprint), modRevision: kv?.modRevision ?? 0 }], [
            { type: 'put', key: imageKey(fingerprint), value: JSON.stringify(next) },
          ]);
          if (r.succeeded) return next;
        }
      });
      this.events.lifecycle('image-created', `/1.0/images/${fingerprint}`);
      return stored;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** Point an alias at an image (409 if the alias exists). */
  async createAlias(name: string, target: string, description: string): Promise<void> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$/.test(name)) throw errors.badRequest(`Invalid image alias "${name}"`);
    const image = await this.get(target);
    const r = await this.store.txn([{ key: aliasKey(name), modRevision: 0 }], [
      { type: 'put', key: aliasKey(name), value: JSON.stringify({ name, target: image.fingerprint, description } satisfies AliasRecord) },
    ]);
    if (!r.succeeded) throw errors.conflict(`Alias "${name}" already exists`);
  }

  /** Remove an alias. */
  async deleteAlias(name: string): Promise<void> {
    await this.alias(name);
    await this.store.delete(aliasKey(name));
  }

  /**
   * Delete an image and its aliases; members drop their copies: this one now, the others when the
   * `image-deleted` event reaches them (`watch`), or at their next start if they are down (`prune`).
   */
  async delete(fp: string): Promise<void> {
    const image = await this.get(fp);
    const aliases = (await this.aliases()).filter((a) => a.target === image.fingerprint);
    await this.store.txn([], [{ type: 'delete', key: imageKey(image.fingerprint) }, ...aliases.map((a) => ({ type: 'delete' as const, key: aliasKey(a.name) }))]);
    await this.dropIfUnrecorded(image.fingerprint);
    this.events.lifecycle('image-deleted', `/1.0/images/${image.fingerprint}`);
  }

  /** Drop this member's copy of an image when another member deletes it (events reach every member). */
  watch(): void {
    this.unsubscribe ??= this.events.subscribe((event) => {
      const meta = event.metadata as { action?: unknown; source?: unknown } | null;
      if (event.type !== 'lifecycle' || meta?.action !== 'image-deleted' || typeof meta.source !== 'string') return;
      const fp = meta.source.slice(meta.source.lastIndexOf('/') + 1);
      if (/^[0-9a-f]{64}$/.test(fp)) void this.dropIfUnrecorded(fp).catch(() => undefined);
    });
  }

  /** Stop watching for deletions. */
  unwatch(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  /**
   * At start (before the API serves anything): remove image files no record gives this member (deleted
   * while it was down) and the partial files of uploads and copies an earlier run did not finish.
   */
  async prune(): Promise<void> {
    const files = await readdir(join(this.dir, 'images')).catch(() => [] as string[]);
    for (const f of files) {
      if (/^[0-9a-f]{64}$/.test(f)) await this.dropIfUnrecorded(f);
      else if (f.startsWith('.upload-') || /^[0-9a-f]{64}\.part-/.test(f)) await rm(join(this.dir, 'images', f), { force: true });
    }
  }

  /** Remove this member's copy of an image unless the store records it here. */
  private async dropIfUnrecorded(fp: string): Promise<void> {
    await this.copies.run(fp, async () => {
      const kv = await this.store.get(imageKey(fp));
      if (kv && (JSON.parse(kv.value) as ImageRecord).locations.includes(this.member)) return;
      await rm(this.path(fp), { force: true });
    });
  }

  /** A readable stream of a local image file (for peers copying it). */
  async open(fp: string): Promise<Readable> {
    const image = await this.get(fp);
    await stat(this.path(image.fingerprint)).catch(() => {
      throw errors.notFound('Image not found on this member');
    });
    return createReadStream(this.path(image.fingerprint));
  }

  /** Make sure this member has the image file, copying it from a member that has it. */
  async ensureLocal(image: ImageRecord): Promise<string> {
    const path = this.path(image.fingerprint);
    if (await stat(path).then(() => true, () => false)) return path;
    const views = await this.cluster.members();
    let lastError: unknown = new Error('no member holding the image is online');
    for (const holder of image.locations) {
      const view = views.find((v) => v.record.name === holder);
      if (!view || view.status === 'Offline' || holder === this.member) continue;
      const tmp = `${path}.part-${randomUUID()}`;
      try {
        await mkdir(join(this.dir, 'images'), { recursive: true });
        const body = await this.internal.image(view.record.address, image.fingerprint);
        const hash = createHash('sha256');
        await pipeline(body, new Transform({
          transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback) {
            hash.update(chunk);
            cb(null, chunk);
          },
        }), createWriteStream(tmp));
        if (hash.digest('hex') !== image.fingerprint) {
          throw new Error(`copy of image ${image.fingerprint.slice(0, 12)} from ${holder} is damaged`);
        }
        // Put in place and recorded here as one step against a deletion dropping copies meanwhile.
        await this.copies.run(image.fingerprint, async () => {
          await rename(tmp, path);
          for (;;) {
            const kv = await this.store.get(imageKey(image.fingerprint));
            if (!kv) {
              await rm(path, { force: true });
              throw errors.notFound('Image not found (deleted while it was being copied)');
            }
            const rec = JSON.parse(kv.value) as ImageRecord;
            if (rec.locations.includes(this.member)) break;
            rec.locations.push(this.member);
            if ((await this.store.txn([{ key: kv.key, modRevision: kv.modRevision }], [{ type: 'put', key: kv.key, value: JSON.stringify(rec) }])).succeeded) break;
          }
        });
        return path;
      } catch (err) {
        if (err instanceof ApiError) throw err;
        lastError = err;
      } finally {
        await rm(tmp, { force: true });
      }
    }
    throw errors.unavailable(`Image ${image.fingerprint.slice(0, 12)} could not be copied here: ${lastError instanceof Error ? lastError.message : String(lastError)}`);
  }

  /** Unpack the image's `rootfs/` into `dest` (a container's root volume is its rootfs). */
  async unpackRootfs(image: ImageRecord, dest: string): Promise<void> {
    const file = await this.ensureLocal(image);
    const exact = exactTree(dest); // the image's modes and absolute symlinks exactly (node-tar changes both)
    await tar.x({
      file,
      cwd: dest,
      strip: 1,
      preserveOwner: process.getuid?.() === 0,
      filter: (p) => p === 'rootfs' || p.startsWith('rootfs/') || p.startsWith('./rootfs/'),
      onReadEntry: exact.record,
    });
    await exact.apply();
  }
}

/** Read `metadata.yaml` out of an image tarball. */
async function readMetadata(file: string): Promise<{ architecture: string; properties: Record<string, string>; creationDate: string | null }> {
  let text: string | null = null;
  await tar.t({
    file,
    filter: (p) => p === 'metadata.yaml' || p === './metadata.yaml',
    onReadEntry: (entry) => {
      const chunks: Buffer[] = [];
      entry.on('data', (c: Buffer) => chunks.push(c));
      entry.on('end', () => {
        text = Buffer.concat(chunks).toString('utf8');
      });
    },
  });
  if (text === null) throw errors.badRequest('Not an image: the tarball has no metadata.yaml (LXD unified image format expected)');
  let meta: unknown;
  try {
    meta = parseYaml(text) as unknown;
  } catch {
    throw errors.badRequest('The image metadata.yaml is not valid YAML');
  }
  const m = (meta ?? {}) as { architecture?: unknown; properties?: unknown; creation_date?: unknown };
  const properties: Record<string, string> = {};
  if (m.properties && typeof m.properties === 'object') {
    for (const [k, v] of Object.entries(m.properties as Record<string, unknown>)) properties[k] = String(v);
  }
  const created = typeof m.creation_date === 'number' ? new Date(m.creation_date * 1000).toISOString() : null;
  return { architecture: typeof m.architecture === 'string' ? m.architecture : 'x86_64', properties, creationDate: created };
}
