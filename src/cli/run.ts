// The `roost` command line: builds the command tree for one run and turns every failure into
// `Error: <message>` on stderr and exit code 1 (never a stack trace).

import { createRequire } from 'node:module';
import { Command, CommanderError } from 'commander';
import { registerClusterCommands } from './commands/cluster.js';
import { registerConfigCommands } from './commands/config.js';
import { registerInstanceCommands } from './commands/instances.js';
import { registerLocalClusterCommands } from './commands/local.js';
import { registerMonitorCommand } from './commands/monitor.js';
import { registerOperationCommands } from './commands/operations.js';
import { registerStorageCommands } from './commands/storage.js';
import { registerImageCommands } from './commands/images.js';
import { registerExecCommand } from './commands/exec.js';
import { registerUiCommand } from './commands/ui.js';
import { CliContext, type CliIO } from './context.js';

/** What `runCli` takes, re-exported for callers of this module. */
export type { CliIO } from './context.js';

/** Roost's version, from package.json (two levels up from both src/cli and dist/cli). */
const version = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

/** The command tree, built afresh per run because commander keeps parsed state on it. */
export function buildProgram(ctx: CliContext): Command {
  const program = new Command('roost')
    .description('Manage a Roost cluster (LXD-compatible)')
    .version(version, '--version', 'Print the version number')
    .exitOverride()
    .configureOutput({
      writeOut: (text) => ctx.io.stdout.write(text),
      writeErr: (text) => ctx.io.stderr.write(text),
      outputError: (text, write) => write(text.replace(/^error: /, 'Error: ')),
    });
  registerLocalClusterCommands(program, ctx);
  registerClusterCommands(program, ctx);
  registerInstanceCommands(program, ctx);
  registerConfigCommands(program, ctx);
  registerStorageCommands(program, ctx);
  registerImageCommands(program, ctx);
  registerExecCommand(program, ctx);
  registerOperationCommands(program, ctx);
  registerMonitorCommand(program, ctx);
  registerUiCommand(program, ctx);
  return program;
}

/** Run `roost <argv...>` and return its exit code; used by main.ts and by tests. */
export async function runCli(argv: string[], io: CliIO): Promise<number> {
  const ctx = new CliContext(io);
  try {
    await buildProgram(ctx).parseAsync(argv, { from: 'user' });
    return ctx.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    const message = err instanceof Error ? err.message : String(err);
    io.stderr.write(`Error: ${message}\n`);
    return 1;
  } finally {
    await ctx.close().catch(() => undefined);
  }
}
