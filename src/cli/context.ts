// What a command runs with: its streams, environment and (lazily) the API clients, one per remote it
// names (`[<remote>:]<name>` as `lxc` reads it). Tests pass their own.

import { RoostClient } from '../client/client.js';
import { type CliEnv, type RemoteName, defaultRemote, parseRemoteName } from '../client/config.js';
import { endpointOf } from '../client/remotes.js';

/** An output stream; `isTTY` decides between the live display and plain lines. */
export type OutputStream = NodeJS.WritableStream & { isTTY?: boolean };

/** The outside world of one CLI run, injectable so tests can drive `runCli` without a process. */
export interface CliIO {
  stdout: OutputStream;
  stderr: OutputStream;
  /** Where prompts read their answer; without it a prompt gets no answer (which means "no"). */
  stdin?: NodeJS.ReadableStream;
  env?: CliEnv;
  /** Use this client instead of resolving one from the environment, for every remote (the caller closes it). */
  client?: RoostClient;
  /** Ends long-running commands such as `roost monitor`. */
  signal?: AbortSignal;
}

/** A name on a remote, with the client that reaches it. */
export interface RemoteTarget extends RemoteName {
  client: RoostClient;
}

/** Shared by every command of one run: output helpers and one client per remote, closed when the run ends. */
export class CliContext {
  private readonly owned = new Map<string, RoostClient>();
  /** The exit code a command asks for without failing (`roost exec` passes on its command's). */
  exitCode = 0;

  constructor(readonly io: CliIO) {}

  /** The environment commands resolve remotes from. */
  get env(): CliEnv {
    return this.io.env ?? process.env;
  }

  /**
   * The API client of `remote` (default: the default remote), created on first use so commands that need
   * none (`up`, `down`, `remote`) never resolve one.
   */
  client(remote?: string): RoostClient {
    if (this.io.client) return this.io.client;
    const name = remote ?? defaultRemote(this.env);
    let client = this.owned.get(name);
    if (!client) {
      client = new RoostClient(endpointOf(name, this.env));
      this.owned.set(name, client);
    }
    return client;
  }

  /**
   * `[<remote>:]<name>` → the remote, the name and the remote's client. With `what` (`instance`, `cluster
   * member`...) the name must not be empty (`prod:` alone names no instance).
   */
  target(raw: string, what?: string): RemoteTarget {
    const parsed = parseRemoteName(raw, this.env);
    if (what !== undefined && parsed.name === '') throw new Error(`Missing ${what} name`);
    return { ...parsed, client: this.client(parsed.remote) };
  }

  /**
   * An optional `[<remote>:]` argument (commands about a whole cluster: `roost list prod:`): the client of
   * the remote it names, or of the default one. Anything after the colon is refused.
   */
  remoteOnly(raw: string | undefined, usage: string): RoostClient {
    if (raw === undefined) return this.client();
    const parsed = parseRemoteName(raw, this.env);
    if (parsed.name !== '') throw new Error(`Invalid argument "${raw}" (a remote is written with a colon, e.g. prod:); usage: ${usage}`);
    return this.client(parsed.remote);
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

  /** Release the clients this run created. */
  async close(): Promise<void> {
    const clients = [...this.owned.values()];
    this.owned.clear();
    await Promise.all(clients.map((c) => c.close()));
  }
}
