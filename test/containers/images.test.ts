// Images end to end on a real two-member cluster: `roost image import|list|delete` with the busybox image
// built by scripts/build-busybox-image.sh, the LXD shapes of `/1.0/images`, the same bytes giving the same
// fingerprint, a tarball that is not an image refused, a container launched from the alias on the member
// that does not hold the image (which copies it there), an unknown alias refused, and a deletion that
// leaves no alias and no copy on any member.

import { after, before, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApiClientError } from '../../src/client/client.js';
import { keys } from '../../src/store/schema.js';
import { waitFor, type TestCluster } from '../helpers/cluster.js';
import { assertError, syncMetadata } from '../helpers/envelope.js';
import {
  containersPossible,
  execOk,
  lxcLs,
  lxcNameOf,
  requireContainers,
  roost,
  roostOk,
  run,
  teardown,
  timed,
  startWithImage,
  type BuiltImage,
} from './support.js';

let c: TestCluster | undefined;
let image: BuiltImage | undefined;
/** sha256 of the tarball: LXD's fingerprint of a unified image. */
let expectedFp = '';
let fp = '';

/** The image record as the store keeps it (the members holding a copy). */
async function storedImage(cluster: TestCluster, fingerprint: string): Promise<{ locations: string[] } | null> {
  const kv = await (await cluster.store()).get(`images/${fingerprint}`);
  return kv ? (JSON.parse(kv.value) as { locations: string[] }) : null;
}

/** Files in a member's image directory. */
async function imageFiles(cluster: TestCluster, member: string): Promise<string[]> {
  return (await readdir(path.join(cluster.memberDir(member), 'images')).catch(() => [] as string[])).sort();
}

describe('images', () => {
  before(async () => {
    if (!containersPossible()) return; // each test skips (or fails under CI) through requireContainers
    ({ c, image } = await startWithImage(2));
    expectedFp = createHash('sha256').update(await readFile(image.tarball)).digest('hex');
  });
  after(async () => {
    await teardown(c, [image?.dir]);
  });

  it('roost image import <tar> --alias busybox imports it on the member asked', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c && image);
    const { ms, value: out } = await timed(() => roostOk(c!.memberDir('m01'), 'image', 'import', image!.tarball, '--alias', 'busybox'));
    t.diagnostic(`import: ${ms} ms`);
    fp = /^Image imported with fingerprint: ([0-9a-f]{64})$/m.exec(out)?.[1] ?? '';
    assert.equal(fp, expectedFp, `the fingerprint is the sha256 of the tarball (${out})`);
    assert.deepEqual(await imageFiles(c, 'm01'), [fp], 'the tarball is kept under m01/images, nothing else');
    assert.deepEqual(await imageFiles(c, 'm02'), [], 'not copied anywhere before it is used');
    assert.deepEqual((await storedImage(c, fp))?.locations, ['m01']);
  });

  it('roost image list shows the alias, the fingerprint prefix and CONTAINER, from any member', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    for (const m of c.names) {
      const table = await roostOk(c.memberDir(m), 'image', 'list');
      assert.match(table, /\|\s+ALIAS\s+\|\s+FINGERPRINT\s+\|\s+PUBLIC\s+\|\s+DESCRIPTION\s+\|\s+ARCHITECTURE\s+\|\s+TYPE\s+\|\s+SIZE\s+\|\s+UPLOAD DATE\s+\|/);
      assert.match(table, new RegExp(`\\| busybox \\| ${fp.slice(0, 12)} \\| no +\\| BusyBox [^|]+\\| \\S+ +\\| CONTAINER \\| [0-9.]+[KM]iB +\\|`), table);
    }
    const csv = await roostOk(c.memberDir('m02'), 'image', 'list', '--format', 'csv');
    assert.equal(csv.trim().split('\n').length, 1, csv);
    assert.deepEqual(csv.split(',').slice(0, 3), ['busybox', fp.slice(0, 12), 'no']);
  });

  it('GET /1.0/images (and ?recursion=1, /aliases, /<fp>) answer in LXD\'s shapes', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c && image);
    assert.deepEqual(syncMetadata(await c.raw('m02', 'GET', '/1.0/images')), [`/1.0/images/${fp}`]);
    const list = syncMetadata(await c.raw('m02', 'GET', '/1.0/images?recursion=1')) as Record<string, unknown>[];
    assert.equal(list.length, 1);
    const img = list[0] ?? {};
    assert.equal(img.fingerprint, fp);
    assert.equal(img.type, 'container');
    assert.equal(img.filename, 'busybox.tar.gz');
    assert.equal(img.size, (await readFile(image.tarball)).length);
    assert.equal(img.public, false);
    assert.deepEqual(img.aliases, [{ name: 'busybox', description: '' }]);
    assert.equal(typeof img.architecture, 'string');
    const props = img.properties as Record<string, string>;
    assert.equal(props.os, 'busybox');
    assert.match(props.description ?? '', /^BusyBox /);
    for (const k of ['created_at', 'uploaded_at']) assert.ok(!Number.isNaN(Date.parse(String(img[k]))), `${k} is a time`);
    assert.deepEqual(syncMetadata(await c.raw('m01', 'GET', `/1.0/images/${fp.slice(0, 12)}`)), img, 'a fingerprint prefix finds it too');
    assert.deepEqual(syncMetadata(await c.raw('m01', 'GET', '/1.0/images/aliases')), ['/1.0/images/aliases/busybox']);
    assert.deepEqual(syncMetadata(await c.raw('m02', 'GET', '/1.0/images/aliases/busybox')), { name: 'busybox', target: fp, description: '' });
  });

  it('importing the same tarball again gives the same fingerprint and no second image', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c && image);
    const out = await roostOk(c.memberDir('m01'), 'image', 'import', image.tarball);
    assert.equal(/fingerprint: ([0-9a-f]{64})/.exec(out)?.[1], fp);
    const again = await roost(c.memberDir('m01'), 'image', 'import', image.tarball, '--alias', 'busybox');
    assert.equal(again.code, 1, 'the alias exists already');
    assert.equal(again.stderr, 'Error: Alias "busybox" already exists\n');
    assert.deepEqual(syncMetadata(await c.raw('m01', 'GET', '/1.0/images')), [`/1.0/images/${fp}`]);
    assert.deepEqual(await imageFiles(c, 'm01'), [fp]);
  });

  it('a tarball that is not an image is refused with 400 and a clear error, leaving nothing behind', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c && image);
    const junkDir = path.join(image.dir, 'junk');
    await mkdir(junkDir, { recursive: true });
    await writeFile(path.join(junkDir, 'hello.txt'), 'not an image\n');
    const junk = path.join(image.dir, 'junk.tar.gz');
    assert.equal((await run('tar', ['-C', junkDir, '-czf', junk, 'hello.txt'])).code, 0);
    const message = 'Not an image: the tarball has no metadata.yaml (LXD unified image format expected)';
    await assert.rejects(c.client('m02').upload('/1.0/images', junk), (err: unknown) => {
      assert.ok(err instanceof ApiClientError, String(err));
      assert.equal(err.status, 400);
      assert.equal(err.message, message);
      return true;
    });
    const cli = await roost(c.memberDir('m02'), 'image', 'import', junk, '--alias', 'junk');
    assert.equal(cli.code, 1);
    assert.equal(cli.stderr, `Error: ${message}\n`);
    assert.deepEqual(await imageFiles(c, 'm02'), [], 'no partial upload is left');
    assert.deepEqual(syncMetadata(await c.raw('m01', 'GET', '/1.0/images')), [`/1.0/images/${fp}`]);
    assert.deepEqual(syncMetadata(await c.raw('m01', 'GET', '/1.0/images/aliases')), ['/1.0/images/aliases/busybox']);
  });

  it('launching from the alias on the other member copies the image there and runs the container', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    assert.ok(!existsSync(path.join(c.memberDir('m02'), 'images', fp)));
    // Asked through m01 (which holds the image) for m02 (which does not): the create is forwarded to m02.
    const { ms } = await timed(() => roostOk(c!.memberDir('m01'), 'launch', 'busybox', 'ct1', '--target', 'm02'));
    t.diagnostic(`launch on the member without the image (copy, unpack, start): ${ms} ms`);
    const copy = path.join(c.memberDir('m02'), 'images', fp);
    assert.ok(existsSync(copy), 'images/<fp> exists under m02');
    assert.equal(createHash('sha256').update(await readFile(copy)).digest('hex'), fp, 'an exact copy');
    assert.deepEqual((await storedImage(c, fp))?.locations.sort(), ['m01', 'm02'], 'the record lists both members');
    const inst = syncMetadata(await c.raw('m01', 'GET', '/1.0/instances/ct1')) as { status: string; location: string; type: string; config: Record<string, string> };
    assert.equal(inst.status, 'Running');
    assert.equal(inst.location, 'm02');
    assert.equal(inst.type, 'container');
    assert.equal(inst.config['volatile.base_image'], fp);
    assert.equal(inst.config['image.os'], 'busybox');
    assert.ok(lxcNameOf(await lxcLs(c, 'm02', true), 'm02', 'ct1'), 'LXC runs it on m02');
    assert.ok(existsSync(path.join(c.instanceDir('m02', 'ct1'), 'bin', 'busybox')), 'the rootfs was unpacked into the root volume');
    assert.match(await execOk(c, 'm01', 'ct1', ['cat', '/etc/passwd']), /^root:x:0:0:root:\/root:\/bin\/sh$/m, 'the image\'s files inside');
    assert.equal((await execOk(c, 'm01', 'ct1', ['hostname'])).trim(), 'ct1');
  });

  it('an unknown alias (or fingerprint) is refused with 404 and creates nothing', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    const before = await c.world();
    assertError(await c.raw('m01', 'POST', '/1.0/instances', { json: { name: 'ghost', source: { type: 'image', alias: 'nosuch' } } }), 404, 'Image alias not found');
    assertError(
      await c.raw('m02', 'POST', '/1.0/instances?target=m01', { json: { name: 'ghost', source: { type: 'image', fingerprint: 'abcdef0123' } } }),
      404,
      'Image not found',
    );
    const cli = await roost(c.memberDir('m02'), 'launch', 'nosuch', 'ghost');
    assert.equal(cli.code, 1);
    assert.equal(cli.stderr, 'Error: Image alias not found\n');
    assertError(await c.raw('m01', 'GET', '/1.0/instances/ghost'), 404, 'Instance not found');
    assert.equal(await c.world(), before, 'a refused launch changed nothing');
  });

  it('roost image delete removes the image, its alias and every member\'s copy', async (t: TestContext) => {
    if (!requireContainers(t)) return;
    assert.ok(c);
    await roostOk(c.memberDir('m02'), 'image', 'delete', 'busybox');
    assert.deepEqual(syncMetadata(await c.raw('m01', 'GET', '/1.0/images')), []);
    assert.deepEqual(syncMetadata(await c.raw('m01', 'GET', '/1.0/images/aliases')), []);
    assertError(await c.raw('m01', 'GET', `/1.0/images/${fp}`), 404, 'Image not found');
    assertError(await c.raw('m01', 'GET', '/1.0/images/aliases/busybox'), 404, 'Image alias not found');
    assert.equal(await storedImage(c, fp), null);
    assert.equal((await (await c.store()).range(keys.instances())).kvs.length, 1, 'the container made from it stays');
    const table = await roostOk(c.memberDir('m01'), 'image', 'list');
    assert.doesNotMatch(table, /busybox/);
    // m02 (asked) drops its copy at once; m01 when the image-deleted event reaches it.
    assert.deepEqual(await imageFiles(c, 'm02'), []);
    await waitFor('m01 drops its copy of the deleted image', async () => (await imageFiles(c!, 'm01')).length === 0, 10_000);
    const launch = await roost(c.memberDir('m01'), 'launch', 'busybox', 'ct2');
    assert.equal(launch.code, 1);
    assert.equal(launch.stderr, 'Error: Image alias not found\n');
  });
});
