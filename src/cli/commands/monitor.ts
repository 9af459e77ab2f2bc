// `roost monitor`: print `/1.0/events` as `lxc monitor` does (YAML by default, one event per block).

import type { Command } from 'commander';
import type { RoostEvent } from '../../client/client.js';
import { asObject, str } from '../../client/json.js';
import type { CliContext } from '../context.js';
import { renderJson, renderYaml } from '../format.js';
import { monitorTypes } from '../requests.js';

/** The output forms of `roost monitor`. */
export type MonitorFormat = 'yaml' | 'json' | 'pretty';

function prettyContext(context: unknown): string {
  return Object.entries(asObject(context))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => ` ${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`)
    .join('');
}

/** One event as a human-readable log line (`--pretty`), in the style of LXD's log lines. */
export function prettyEvent(event: RoostEvent): string {
  const m = asObject(event.metadata);
  let level = 'INFO';
  let message: string;
  let context: Record<string, unknown> = {};
  switch (event.type) {
    case 'logging':
      level = (str(m, 'level') || 'info').toUpperCase();
      message = str(m, 'message');
      context = asObject(m.context);
      break;
    case 'lifecycle':
      message = `Action: ${str(m, 'action')}, Source: ${str(m, 'source')}`;
      context = asObject(m.context);
      break;
    case 'operation':
      message = `ID: ${str(m, 'id')}, Class: ${str(m, 'class')}, Description: ${str(m, 'description')}`;
      context = { status: str(m, 'status'), ...(str(m, 'err') ? { err: str(m, 'err') } : {}) };
      break;
    default:
      message = `${event.type}: ${JSON.stringify(event.metadata)}`;
  }
  if (event.location) context = { ...context, location: event.location };
  return `${level.padEnd(6)} [${event.timestamp}] ${message}${prettyContext(context)}\n`;
}

/** One event in the chosen form; YAML keys are sorted as Go's map output is, with a blank line after. */
export function renderEvent(event: RoostEvent, format: MonitorFormat): string {
  switch (format) {
    case 'pretty':
      return prettyEvent(event);
    case 'json':
      return renderJson(event.raw);
    case 'yaml':
      return `${renderYaml(event.raw, { sortKeys: true })}\n\n`;
  }
}

function parseMonitorFormat(value: string): MonitorFormat {
  if (value === 'yaml' || value === 'json' || value === 'pretty') return value;
  throw new Error(`Invalid format "${value}" (use one of: yaml, json, pretty)`);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Register `roost monitor`. */
export function registerMonitorCommand(program: Command, ctx: CliContext): void {
  program
    .command('monitor')
    .description('Print events as they happen (until interrupted)')
    .argument('[remote]', '[<remote>:]')
    .option('--type <type>', 'Event type to show: lifecycle, operation, logging (repeatable; default all)', collect, [])
    .option('--pretty', 'Human-readable lines (short for --format pretty)')
    .option('-f, --format <format>', 'Format (yaml|json|pretty)', 'yaml')
    .action(async (remote: string | undefined, flags: { type: string[]; pretty?: boolean; format: string }) => {
      const format = flags.pretty ? 'pretty' : parseMonitorFormat(flags.format);
      const client = ctx.remoteOnly(remote, 'roost monitor [<remote>:]');
      const signal = ctx.io.signal;
      if (signal?.aborted) return;
      const sub = await client.events(monitorTypes(flags.type), (event) => ctx.write(renderEvent(event, format)));
      const stop = (): void => sub.close();
      signal?.addEventListener('abort', stop, { once: true });
      try {
        await sub.done;
      } finally {
        signal?.removeEventListener('abort', stop);
      }
    });
}
