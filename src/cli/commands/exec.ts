// `roost exec <instance> -- <command...>`: run a command in an instance over LXD's exec websockets, as
// `lxc exec` does. Output is streamed as it comes; stdin is passed through (unless -n). With a terminal on
// both ends (or -t) the command gets a terminal of its own, its size following ours. Exits with the
// command's exit code.

import type { Command } from 'commander';
import type WebSocket from 'ws';
import { ApiClientError, type Operation, type RoostClient } from '../../client/client.js';
import { asObject, num, str } from '../../client/json.js';
import type { CliContext, OutputStream } from '../context.js';
import { parseConfigPairs, seg } from '../requests.js';

interface ExecFlags {
  env?: string[];
  cwd?: string;
  forceInteractive?: boolean;
  forceNoninteractive?: boolean;
  disableStdin?: boolean;
}

/** A terminal's input side, as process.stdin is when it is one. */
type TerminalInput = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };

/** Register `roost exec`. */
export function registerExecCommand(program: Command, ctx: CliContext): void {
  program
    .command('exec')
    .description('Run a command in an instance (streamed; a terminal when both ends are one)')
    .argument('<instance>', '[<remote>:]<instance>')
    .argument('<command...>', 'the command and its arguments (put them after --)')
    .option('--env <KEY=VALUE...>', 'environment variables')
    .option('--cwd <dir>', 'working directory inside the instance')
    .option('-t, --force-interactive', 'give the command a terminal')
    .option('-T, --force-noninteractive', 'no terminal, even when both ends are one')
    .option('-n, --disable-stdin', 'no input (the command reads end of file)')
    .action(async (rawInstance: string, command: string[], flags: ExecFlags) => {
      const { client, name: instance } = ctx.target(rawInstance, 'instance');
      if (flags.forceInteractive && flags.forceNoninteractive) throw new Error("You can't pass -t and -T at the same time");
      const stdin = flags.disableStdin ? undefined : (ctx.io.stdin as TerminalInput | undefined);
      const stdout = ctx.io.stdout as OutputStream & { columns?: number; rows?: number };
      const interactive = flags.disableStdin
        ? false
        : flags.forceInteractive || (!flags.forceNoninteractive && stdin?.isTTY === true && stdout.isTTY === true);
      const environment = parseConfigPairs(flags.env ?? []);
      const term = ctx.env.TERM;
      if (interactive && term && environment.TERM === undefined) environment.TERM = term;
      const { response, finished } = await client.beginAsync('POST', `/1.0/instances/${seg(instance)}/exec`, {
        command,
        environment,
        cwd: flags.cwd,
        'wait-for-websocket': true,
        interactive,
        width: stdout.columns ?? 0,
        height: stdout.rows ?? 0,
      });
      const fds = asObject(asObject(response.metadata).metadata).fds;
      const opId = str(response.metadata, 'id');
      let operation: Operation | null = null;
      try {
        const streams = await connectStreams(client, opId, asObject(fds), interactive, stdin, ctx);
        try {
          operation = await finished();
        } finally {
          await streams.done;
        }
      } catch (err) {
        // LXD fails the operation for exit codes 127 and 126 but still reports them, as `lxc` passes on.
        if (err instanceof ApiClientError && err.operation) {
          ctx.warn(`Error: ${err.message}`);
          ctx.exitCode = num(err.operation.metadata ?? {}, 'return', 1) || 1;
          return;
        }
        throw err;
      }
      ctx.exitCode = num(operation?.metadata ?? {}, 'return');
    });
}

/** The open channels of one exec; `done` settles once output is delivered and input handling is undone. */
interface Streams {
  done: Promise<void>;
}

/** Connect the exec's websockets (control first, as lxc does) and wire them to our streams. */
async function connectStreams(
  client: RoostClient,
  opId: string,
  fds: Record<string, unknown>,
  interactive: boolean,
  stdin: TerminalInput | undefined,
  ctx: CliContext,
): Promise<Streams> {
  const secret = (fd: string): string => {
    const s = fds[fd];
    if (typeof s !== 'string' || s === '') throw new Error(`The server's exec operation names no websocket "${fd}"`);
    return s;
  };
  const control = await client.operationWebsocket(opId, secret('control'));
  const input = await client.operationWebsocket(opId, secret('0'));
  const outputs = interactive
    ? [{ ws: input, to: ctx.io.stdout }]
    : [
        { ws: await client.operationWebsocket(opId, secret('1')), to: ctx.io.stdout },
        { ws: await client.operationWebsocket(opId, secret('2')), to: ctx.io.stderr },
      ];
  const undo: (() => void)[] = [];
  if (interactive && stdin?.isTTY && stdin.setRawMode) {
    stdin.setRawMode(true);
    undo.push(() => stdin.setRawMode?.(false));
  }
  if (interactive) {
    const stdout = ctx.io.stdout as OutputStream & { columns?: number; rows?: number; on?: (e: string, f: () => void) => unknown; off?: (e: string, f: () => void) => unknown };
    const resize = (): void => {
      if (control.readyState !== control.OPEN) return;
      control.send(JSON.stringify({ command: 'window-resize', args: { width: String(stdout.columns ?? 0), height: String(stdout.rows ?? 0) } }));
    };
    stdout.on?.('resize', resize);
    undo.push(() => stdout.off?.('resize', resize));
  }
  undo.push(sendInput(input, stdin));
  const delivered = outputs.map(({ ws, to }) => receiveOutput(ws, to));
  return {
    done: Promise.all(delivered).then(() => {
      for (const u of undo) u();
      for (const ws of [control, input, ...outputs.map((o) => o.ws)]) ws.close();
    }),
  };
}

/** Our input → the command: binary messages, then an empty text message at its end. Returns the undo. */
function sendInput(ws: WebSocket, stdin: NodeJS.ReadableStream | undefined): () => void {
  const end = (): void => {
    if (ws.readyState === ws.OPEN) ws.send(Buffer.alloc(0), { binary: false });
  };
  if (!stdin) {
    end();
    return () => undefined;
  }
  const onData = (chunk: Buffer | string): void => {
    if (ws.readyState === ws.OPEN) ws.send(typeof chunk === 'string' ? Buffer.from(chunk) : chunk, { binary: true });
  };
  stdin.on('data', onData);
  stdin.once('end', end);
  stdin.resume();
  return () => {
    stdin.off('data', onData);
    stdin.off('end', end);
    // Leave stdin as found: paused, so it no longer keeps the process alive.
    stdin.pause();
  };
}

/** The command's output → ours, until the empty text message that ends it (or the socket closes). */
function receiveOutput(ws: WebSocket, to: OutputStream): Promise<void> {
  return new Promise((resolve) => {
    ws.on('message', (data, isBinary) => {
      if (!isBinary) {
        resolve();
        return;
      }
      to.write(Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data));
    });
    ws.once('close', () => resolve());
  });
}
