// `roost ui`: the web UI of the member the CLI talks to, through a proxy on 127.0.0.1 until interrupted.

import type { Command } from 'commander';
import { ApiClientError } from '../../client/client.js';
import type { CliContext } from '../context.js';
import { parsePositiveInt } from '../requests.js';
import { startUiProxy } from '../ui-proxy.js';

/** Resolves on Ctrl-C (or SIGTERM), or when `signal` aborts (tests end the command that way). */
function interrupted(signal: AbortSignal | undefined): { done: Promise<void>; release: () => void } {
  let release = (): void => undefined;
  const done = new Promise<void>((resolve) => {
    if (signal) {
      if (signal.aborted) return resolve();
      signal.addEventListener('abort', () => resolve(), { once: true });
      return;
    }
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    release = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    };
  });
  return { done, release };
}

/** Register `roost ui`. */
export function registerUiCommand(program: Command, ctx: CliContext): void {
  program
    .command('ui')
    .description('Serve the web UI of this member on 127.0.0.1 (a proxy onto its unix socket) until Ctrl-C')
    .option('--port <n>', 'Port on 127.0.0.1 to listen on (default: a free one)')
    .action(async (flags: { port?: string }) => {
      const port = flags.port === undefined ? 0 : parsePositiveInt(flags.port, '--port');
      const client = ctx.client();
      // Fail here, not in the browser, when the member cannot be reached; warn when it has no UI to serve.
      await client.get('/1.0');
      try {
        await client.requestRaw('GET', '/ui/');
      } catch (err) {
        if (!(err instanceof ApiClientError)) throw err;
        ctx.warn(`Warning: ${err.message}`);
      }
      const stop = interrupted(ctx.io.signal);
      const proxy = await startUiProxy({ socketPath: client.socketPath, port });
      try {
        ctx.print(`Web UI of this member: ${proxy.url}`);
        ctx.print('Only this host can open it (the address carries an access token). Press Ctrl-C to stop.');
        await stop.done;
      } finally {
        stop.release();
        await proxy.close();
      }
    });
}
