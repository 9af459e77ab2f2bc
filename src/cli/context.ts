// What a command runs with: its streams, environment and (lazily) the API client. Tests pass their own.

import { RoostClient } from '../client/client.js';
import type { CliEnv } from '../client/config.js';

/** An output stream; `isTTY` decides between the live display and plain lines. */
export type OutputStream = NodeJS.WritableStream & { isTTY?: boolean };

/** The outside world of one CLI run, injectable so tests can drive `runCli` without a process. */
export interface CliIO {
  stdout: OutputStream;
  stderr: OutputStream;
  /** Where prompts read their answer; without it a prompt gets no answer (which means "no"). */
  stdin?: NodeJS.ReadableStream;
  env?: CliEnv;
  /** Use this client instead of resolving one from the environment (the caller closes it). */
  client?: RoostClient;
  /** Ends long-running commands such as `roost monitor`. */
  signal?: AbortSignal;
}

/** Shared by every command of one run: output helpers and one client, closed when the run ends. */
export class CliContext {
  private owned: RoostClient | null = null;
  /** The exit code a command asks for without failing (`roost exec` passes on its command's). */
  exitCode = 0;

  constructor(readonly io: CliIO) {}

  /** The environment commands resolve the member from. */
  get env(): CliEnv {
    return this.io.env ?? process.env;
  }

  /** The API client, created on first use so commands that need none (`up`, `down`) never resolve one. */
  client(): RoostClient {
    if (this.io.client) return this.io.client;
    this.owned ??= RoostClient.fromEnv(this.env);
    return this.owned;
  }

  /** True when stdout is a terminal (live progress instead of plain lines). */
  get isTerminal(): boolean {
    return this.io.stdout.isTTY === true;
  }

  /** Write text to stdout as is. */
  write(text: string): void {
    this.io.stdout.write(text);
  }

  /** Write one line to stdout. */
  print(line: string): void {
    this.io.stdout.write(`${line}\n`);
  }

  /** Write one line to stderr. */
  warn(line: string): void {
    this.io.stderr.write(`${line}\n`);
  }

  /** Release the client this run created. */
  async close(): Promise<void> {
    const client = this.owned;
    this.owned = null;
    if (client) await client.close();
  }
}
