// What the web UI tests share: the UI built from the current sources into a temporary folder (the daemons
// serve it through ROOST_UI_DIR), and Debian's chromium driven by playwright-core (nothing downloaded).

import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { build } from 'vite';
import { chromium, type BrowserContext } from 'playwright-core';

/** Debian's chromium (`apt-get install chromium`). */
export const chromiumPath = '/usr/bin/chromium';

/**
 * True if chromium is installed. Otherwise skips the test (by hand) or throws (under CI=true), naming what
 * is missing and how to install it.
 */
export function requireChromium(t: TestContext): boolean {
  if (existsSync(chromiumPath)) return true;
  const reason = `${chromiumPath} is not installed (install it with: apt-get install chromium)`;
  if (process.env.CI === 'true') throw new Error(`missing prerequisite under CI: ${reason}`);
  t.skip(reason);
  return false;
}

/** Build the UI from `ui/` into a fresh temporary folder; returns it (remove it with `rm`). */
export async function buildUi(): Promise<string> {
  const out = await mkdtemp(path.join(os.tmpdir(), 'roost-ui-'));
  await build({
    configFile: fileURLToPath(new URL('../../ui/vite.config.ts', import.meta.url)),
    logLevel: 'warn',
    build: { outDir: out, emptyOutDir: true },
  });
  return out;
}

/** A headless chromium with a fresh profile, and how to end it (profile removed). */
export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Launch chromium headless with a fresh profile, with the flags known to work on this kind of host. */
export async function launchBrowser(): Promise<Browser> {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'roost-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1200, height: 820 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    async close() {
      await context.close().catch(() => undefined);
      await rm(profile, { recursive: true, force: true });
    },
  };
}
