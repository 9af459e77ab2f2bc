// Driving the real `lxc` client (Debian lxd-client) against a member of a test cluster: with pipes (input
// given, output collected, a deadline), as a child the test signals, or under a terminal (node-pty) the
// test types into, as a person would.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { spawn as spawnPty, type IPty } from 'node-pty';
import { readPtyToEnd } from '../../src/instances/pty-output.js';
import type { TestCluster } from './cluster.js';
import { waitFor } from './cluster.js';

/** What `lxc` printed and how it ended. */
export interface LxcResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment that points `lxc` at `member` (LXD_DIR) with a config directory inside the cluster's. */
export function lxcEnv(c: TestCluster, member: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  return { ...env, LXD_DIR: c.memberDir(member), LXD_CONF: path.join(c.dir, 'lxc-conf'), TERM: 'xterm' };
}

/** Start `lxc <args>` with pipes; the caller owns the child. */
export function lxcChild(c: TestCluster, member: string, args: string[]): ChildProcess {
  return spawn('lxc', args, { env: lxcEnv(c, member), stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Run `lxc <args>` to its end with `input` on stdin (none: stdin closed at once), killed after `timeoutMs`. */
export function lxc(c: TestCluster, member: string, args: string[], options: { input?: string | Buffer; timeoutMs?: number } = {}): Promise<LxcResult> {
  const child = lxcChild(c, member, args);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (b: Buffer) => out.push(b));
  child.stderr?.on('data', (b: Buffer) => err.push(b));
  child.stdin?.end(options.input);
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
  return new Promise((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString('utf8') + (signal ? `\n(lxc ${args.join(' ')} killed by ${signal})` : '');
      resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString('utf8'), stderr });
    });
  });
}

/** `lxc` that must exit 0; returns its stdout. */
export async function lxcOk(c: TestCluster, member: string, args: string[], input?: string): Promise<string> {
  const r = await lxc(c, member, args, { input });
  assert.equal(r.code, 0, `lxc ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** `lxc` running under a terminal the test types into. */
export interface LxcTerminal {
  /** Everything the terminal showed so far. */
  readonly output: string;
  /** Type `text` (a carriage return is Enter). */
  type(text: string): void;
  /** Change the terminal's size, as a resized window does. */
  resize(cols: number, rows: number): void;
  /** Wait until the output matches `pattern` (10 s deadline). */
  waitFor(pattern: RegExp): Promise<void>;
  /** The exit code of `lxc` (20 s deadline; killed then). */
  exit(): Promise<number>;
}

/** Start `lxc <args>` under a `cols`×`rows` terminal. */
export function lxcTerminal(c: TestCluster, member: string, args: string[], size = { cols: 100, rows: 30 }): LxcTerminal {
  const term: IPty = spawnPty('lxc', args, { cols: size.cols, rows: size.rows, cwd: c.dir, env: lxcEnv(c, member), name: 'xterm' });
  readPtyToEnd(term);
  let output = '';
  term.onData((d) => {
    output += d;
  });
  const exited = new Promise<number>((resolve) => term.onExit((e) => resolve(e.signal ? 128 + e.signal : e.exitCode)));
  return {
    get output() {
      return output;
    },
    type: (text) => term.write(text),
    resize: (cols, rows) => term.resize(cols, rows),
    async waitFor(pattern) {
      try {
        await waitFor(`the terminal shows ${pattern}`, () => pattern.test(output));
      } catch (err) {
        throw new Error(`${err instanceof Error ? err.message : String(err)}; it shows ${JSON.stringify(output.slice(-300))}`);
      }
    },
    async exit() {
      const timer = setTimeout(() => term.kill('SIGKILL'), 20_000);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
