// Running the host's tools for the LXD comparison: a program with optional stdin, a deadline and its own
// environment, its outputs collected; and the same program that must succeed.

import { spawn } from 'node:child_process';

/** What a program printed and how it ended. */
export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** How to run a program. */
export interface ToolOptions {
  /** Written to stdin, which is then closed (none: closed at once). */
  input?: string;
  /** Killed with SIGKILL after this many milliseconds (default 120 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** Run `file args...` to its end; the outcome even if it fails (a killed program reports code -1). */
export function runTool(file: string, args: string[], options: ToolOptions = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input);
    const timeoutMs = options.timeoutMs ?? 120_000;
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${file} could not be run: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const killed = signal ? `\n(${file} ${args.join(' ')} ended by ${signal}${signal === 'SIGKILL' ? `, deadline ${timeoutMs} ms` : ''})` : '';
      resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') + killed });
    });
  });
}

/** `runTool` that must exit 0; returns stdout. */
export async function runToolOk(file: string, args: string[], options: ToolOptions = {}): Promise<string> {
  const r = await runTool(file, args, options);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** True if `command` is on the PATH. */
export async function onPath(command: string): Promise<boolean> {
  return (await runTool('sh', ['-c', 'command -v "$1"', 'sh', command], { timeoutMs: 10_000 })).code === 0;
}
