// `roost exec <instance> -- <command...>`: run a command in an instance (LXD's exec with recorded
// output), print what it wrote, and exit with its exit code.

import type { Command } from 'commander';
import { num, asObject, str } from '../../client/json.js';
import type { CliContext } from '../context.js';
import { parseConfigPairs, seg } from '../requests.js';

/** Register `roost exec`. */
export function registerExecCommand(program: Command, ctx: CliContext): void {
  program
    .command('exec')
    .description('Run a command in an instance (output is printed when it ends)')
    .argument('<instance>')
    .argument('<command...>', 'the command and its arguments (put them after --)')
    .option('--env <KEY=VALUE...>', 'environment variables')
    .option('--cwd <dir>', 'working directory inside the instance')
    .action(async (instance: string, command: string[], flags: { env?: string[]; cwd?: string }) => {
      const client = ctx.client();
      const body = {
        command,
        environment: parseConfigPairs(flags.env ?? []),
        cwd: flags.cwd,
        'wait-for-websocket': false,
        'record-output': true,
        interactive: false,
      };
      const result = await client.runAsync('POST', `/1.0/instances/${seg(instance)}/exec`, body);
      const metadata = asObject(result.operation?.metadata ?? {});
      const output = asObject(metadata.output);
      for (const [fd, stream] of [['1', ctx.io.stdout], ['2', ctx.io.stderr]] as const) {
        const url = str(output, fd);
        if (!url) continue;
        const raw = await client.requestRaw('GET', url);
        stream.write(raw.text);
        await client.request('DELETE', url).catch(() => undefined);
      }
      ctx.exitCode = num(metadata, 'return');
    });
}
