// Which member the CLI talks to: `ROOST_DIR`, else the member that `roost up` recorded in the CLI config.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { isObject } from './json.js';

/** Environment variables as the CLI sees them (process.env, or a test's own map). */
export type CliEnv = Record<string, string | undefined>;

/** The CLI config file's content: the member directory commands talk to. */
export interface CliConfig {
  member: string;
}

/** The message users see when no member can be found, naming both ways to fix it. */
export const noMemberMessage = 'no Roost member configured; run "roost up" or set ROOST_DIR';

/** Path of the CLI config file, following XDG so tests and users can relocate it. */
export function cliConfigPath(env: CliEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'roost', 'config.json');
}

/** The CLI config, or null when `roost up` never wrote one; a corrupt file is an error naming it. */
export function readCliConfig(env: CliEnv = process.env): CliConfig | null {
  const path = cliConfigPath(env);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`${path} is not valid JSON; fix it or run "roost up" again`);
  }
  if (!isObject(parsed) || typeof parsed.member !== 'string' || parsed.member === '') {
    throw new Error(`${path} has no "member" directory; run "roost up" again`);
  }
  return { member: parsed.member };
}

/** Record the member directory for later commands (called by `roost up`). */
export function writeCliConfig(config: CliConfig, env: CliEnv = process.env): void {
  const path = cliConfigPath(env);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(config, null, 2)}\n`);
}

/** The unix socket of the member to talk to; `ROOST_DIR` wins so one shell can address any member. */
export function resolveSocketPath(env: CliEnv = process.env): string {
  if (env.ROOST_DIR) return join(env.ROOST_DIR, 'unix.socket');
  const config = readCliConfig(env);
  if (config) return join(config.member, 'unix.socket');
  throw new Error(noMemberMessage);
}
