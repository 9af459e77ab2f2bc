// The web UI end to end in a real browser: a three-member cluster whose m01 holds instances that take a
// moment to stop, the UI opened through `roost ui`'s proxy, m01 evacuated from its page (options chosen,
// the dry-run plan read, confirmed) while the live view shows every instance arrive elsewhere, the cluster
// checked through the API, then m01 restored from the page the same way.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { runCli } from '../../src/cli/run.js';
import type { Page } from 'playwright-core';
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js';
import { launchWorkload, memberInfo } from '../evacuation/world.js';
import { startUiProxy, type UiProxy } from '../../src/cli/ui-proxy.js';
import { buildUi, launchBrowser, requireChromium, type Browser } from './browser.js';

const instances = ['web1', 'web2', 'web3'];
/** Long enough for a page to poll a phase, short for the suite. */
const waitMs = 60_000;

let c: TestCluster | null = null;
let uiDir = '';
let proxy: UiProxy | null = null;
let browser: Browser | null = null;
let page: Page;

/** The live view's row of an instance. */
const runRow = (name: string): string => `[data-testid=run-instances] tr[data-instance="${name}"]`;

/** The plan's rows as the page shows them: instance → [action, target]. */
async function planOnPage(): Promise<Map<string, [string, string]>> {
  const rows = page.locator('[data-testid=plan] tbody tr[data-instance]');
  const plan = new Map<string, [string, string]>();
  for (let i = 0; i < (await rows.count()); i++) {
    const [name = '', action = '', target = ''] = await rows.nth(i).locator('td').allTextContents();
    plan.set(name, [action, target]);
  }
  return plan;
}

/** Wait until the live view shows the run of `title` over, every instance `done` with its target. */
async function waitRunDone(title: string, expectTargets: Map<string, string>): Promise<void> {
  await page.waitForSelector(`[data-testid=live-run] h2:has-text("${title}")`, { timeout: waitMs });
  const n = instances.length;
  await page.locator('[data-testid=overall-count]', { hasText: new RegExp(`^${n}/${n} instances`) }).waitFor({ timeout: waitMs });
  for (const name of instances) {
    await page.waitForSelector(`${runRow(name)}[data-state="done"]`, { timeout: waitMs });
    assert.equal(await page.locator(`${runRow(name)} [data-testid=target]`).textContent(), expectTargets.get(name), `target of ${name} on the page`);
  }
  await page.waitForSelector('[data-testid=live-run] h2 .status-done', { timeout: waitMs });
}

describe('web UI: evacuate and restore a member from its page, watching it live', () => {
  before(async () => {
    uiDir = await buildUi();
    // Members start from the sources through tsx, which takes long on a busy 2-core host.
    c = await startCluster({ members: 3, env: { ROOST_UI_DIR: uiDir }, readyTimeoutMs: 120_000 });
    // Clean stops take a second, and each root volume holds 4 MiB to copy.
    for (const name of instances) await launchWorkload(c, name, { target: 'm01', termSleep: 1, payloadBytes: 4 * 1024 * 1024, config: { 'limits.cpu': '1', 'limits.memory': '64MiB' } });
    proxy = await startUiProxy({ socketPath: c.client('m02').socketPath });
  });

  after(async () => {
    await browser?.close();
    await proxy?.close();
    await c?.stop();
    if (uiDir) await rm(uiDir, { recursive: true, force: true });
  });

  it('serves the built UI at /ui/ (index.html for client-side routes), and says so when it is not built', async () => {
    assert.ok(c);
    const route = await c.raw('m01', 'GET', '/ui/members/m01', { headers: { accept: 'text/html' } });
    assert.equal(route.status, 200);
    assert.match(route.text, /<div id="root">/);
    assert.match(route.headers['content-security-policy'] ?? '', /default-src 'self'/);
    const asset = await c.raw('m01', 'GET', '/ui/assets/missing.js');
    assert.equal(asset.status, 404);
    assert.equal(asset.body?.error_code, 404);
    assert.equal((await c.raw('m01', 'GET', '/ui')).headers.location, '/ui/');

    await rename(path.join(uiDir, 'index.html'), path.join(uiDir, 'index.html.away'));
    try {
      const api = await c.raw('m01', 'GET', '/ui/');
      assert.equal(api.status, 404);
      assert.match(api.body?.error ?? '', /web UI is not built on member "m01": run "npm run build"/);
      const html = await c.raw('m01', 'GET', '/ui/', { headers: { accept: 'text/html' } });
      assert.equal(html.status, 404);
      assert.match(html.text, /<h1>Web UI not built<\/h1>/);
    } finally {
      await rename(path.join(uiDir, 'index.html.away'), path.join(uiDir, 'index.html'));
    }
  });

  it('roost ui proxy admits only its own address with its token', async () => {
    assert.ok(proxy);
    const noToken = await fetch(`${proxy.origin}/1.0/instances`);
    assert.equal(noToken.status, 403);
    assert.match(((await noToken.json()) as { error: string }).error, /access token/);
    const enter = await fetch(proxy.url, { redirect: 'manual' });
    assert.equal(enter.status, 303);
    assert.equal(enter.headers.get('location'), '/ui/');
    const cookie = (enter.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
    const api = await fetch(`${proxy.origin}/1.0/instances`, { headers: { cookie } });
    assert.equal(api.status, 200);
    assert.equal(((await api.json()) as { metadata: string[] }).metadata.length, instances.length);
    const otherSite = await fetch(`${proxy.origin}/1.0/instances`, { method: 'POST', headers: { cookie, origin: 'http://127.0.0.1:1', 'content-type': 'application/json' }, body: '{}' });
    assert.equal(otherSite.status, 403);
  });

  it('roost ui prints the address of the UI of the ROOST_DIR member and serves it until stopped', async () => {
    assert.ok(c);
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let printed = '';
    stdout.on('data', (chunk: Buffer) => (printed += chunk.toString()));
    stderr.resume();
    const stop = new AbortController();
    const exit = runCli(['ui'], { stdout, stderr, env: { ROOST_DIR: c.memberDir('m03') }, signal: stop.signal });
    try {
      await waitFor('roost ui prints its address', () => /http:\/\/127\.0\.0\.1:\d+\/ui\/\?token=\S+/.test(printed), waitMs);
      const url = /http:\/\/127\.0\.0\.1:\d+\/ui\/\?token=\S+/.exec(printed)?.[0] ?? '';
      const enter = await fetch(url, { redirect: 'manual' });
      assert.equal(enter.status, 303);
      const cookie = (enter.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
      const ui = await fetch(new URL('/ui/', url), { headers: { cookie } });
      assert.equal(ui.status, 200);
      assert.match(await ui.text(), /<div id="root">/);
    } finally {
      stop.abort();
    }
    assert.equal(await exit, 0);
    await assert.rejects(fetch(/http:\/\/127\.0\.0\.1:\d+/.exec(printed)?.[0] ?? 'http://127.0.0.1:1'), 'the proxy stopped listening');
  });

  it('lists members with their load and instances with filters', async (t) => {
    if (!requireChromium(t) || !proxy) return;
    browser = await launchBrowser();
    page = await browser.context.newPage();
    // The host may be busy (other suites, a 2-core CI machine): waits are generous, never fixed sleeps.
    page.setDefaultTimeout(waitMs);
    await page.goto(proxy.url);
    // The token was exchanged for a cookie: the address no longer carries it.
    assert.equal(new URL(page.url()).search, '');
    await page.waitForSelector('[data-testid=members] tr[data-member="m03"]');
    const m01 = page.locator('[data-testid=members] tr[data-member="m01"] td');
    assert.equal(await m01.nth(1).textContent(), 'Online');
    assert.match((await m01.nth(3).textContent()) ?? '', /^3\b/);
    assert.match((await m01.nth(4).textContent()) ?? '', /^192\.00MiB/);
    assert.equal(await m01.nth(5).textContent(), '3');
    assert.equal(await page.locator('[data-testid=members] tr[data-member="m02"] td').nth(5).textContent(), '0');

    await page.getByRole('link', { name: 'Instances' }).click();
    await page.waitForSelector('[data-testid=instances] tr[data-instance="web3"]');
    await page.getByLabel('Filter by text').fill('web2');
    await waitFor('the filter leaves one instance', async () => (await page.locator('[data-testid=instances] tbody tr').count()) === 1);
    assert.equal(await page.locator('[data-testid=instances] tbody tr td').first().textContent(), 'web2');
    await page.getByLabel('Filter by text').fill('');
    await page.getByLabel('Member').selectOption('m02');
    await waitFor('m02 shows no instance', async () => (await page.locator('[data-testid=instances] tbody tr').count()) === 0);
  });

  it('evacuates m01 from its page: plan first, then every instance live until it runs elsewhere', async (t) => {
    if (!requireChromium(t) || !c || !browser) return;
    // A client-side route opened directly: the member serves index.html for it.
    await page.goto(`${proxy?.origin}/ui/members/m01`);
    await page.getByRole('button', { name: 'Evacuate' }).click();

    // A bad option is answered with the server's own error text, and cannot be confirmed.
    await page.getByLabel('Parallel copies').fill('0');
    await page.waitForSelector('[data-testid=plan-error]');
    assert.match((await page.locator('[data-testid=plan-error]').textContent()) ?? '', /parallel/);
    assert.equal(await page.getByRole('button', { name: 'Confirm evacuation' }).isDisabled(), true);

    await page.getByLabel('Parallel copies').fill('2');
    await page.getByLabel('Action').selectOption('migrate');
    await page.waitForSelector('[data-testid=plan] tbody tr[data-instance="web3"]');
    const plan = await planOnPage();
    assert.deepEqual([...plan.keys()].sort(), instances);
    const targets = new Map<string, string>();
    for (const [name, [action, target]] of plan) {
      assert.equal(action, 'migrate', `planned action of ${name}`);
      assert.ok(target === 'm02' || target === 'm03', `planned target of ${name}: "${target}"`);
      targets.set(name, target);
    }
    assert.equal(await page.locator('[data-testid=refusals]').count(), 0);

    await page.getByRole('button', { name: 'Confirm evacuation' }).click();
    // Mid-run: an instance is seen stopping or copying (each takes a second to stop).
    await page.waitForSelector('[data-testid=run-instances] tr[data-state="stopping"], [data-testid=run-instances] tr[data-state="copying"], [data-testid=run-instances] tr[data-state="waiting"]', { timeout: waitMs });
    // ROOST_UI_SCREENSHOT=<file.png>: the README's picture of the live view, once something has moved.
    const shot = process.env.ROOST_UI_SCREENSHOT;
    if (shot) {
      await page.waitForSelector('[data-testid=run-instances] tr[data-state="copying"], [data-testid=run-instances] tr[data-state="starting"], [data-testid=run-instances] tr[data-state="done"]');
      await page.locator('.app').screenshot({ path: shot });
    }
    await waitRunDone('Evacuation of m01', targets);

    // The cluster agrees with the page.
    for (const name of instances) {
      const view = await c.instance(name);
      assert.equal(view.location, targets.get(name), `location of ${name}`);
      assert.equal(view.status, 'Running', `status of ${name}`);
    }
    assert.equal((await memberInfo(c, 'm01')).status, 'Evacuated');
    await page.waitForSelector('h1 .status-evacuated', { timeout: waitMs });
  });

  it('restores m01 from its page: every instance comes home and runs again', async (t) => {
    if (!requireChromium(t) || !c || !browser) return;
    await page.getByRole('button', { name: 'Restore' }).click();
    await page.waitForSelector('[data-testid=plan] tbody tr[data-instance="web3"]');
    const plan = await planOnPage();
    assert.deepEqual([...plan.keys()].sort(), instances);
    for (const [name, [action, target]] of plan) assert.deepEqual([action, target], ['migrate', 'm01'], `restore plan of ${name}`);
    await page.getByRole('button', { name: 'Confirm restore' }).click();
    await waitRunDone('Restore of m01', new Map(instances.map((n) => [n, 'm01'])));

    for (const name of instances) {
      const view = await c.instance(name);
      assert.equal(view.location, 'm01', `location of ${name}`);
      assert.equal(view.status, 'Running', `status of ${name}`);
    }
    assert.equal((await memberInfo(c, 'm01')).status, 'Online');
    await page.waitForSelector('h1 .status-online', { timeout: waitMs });
  });
});
