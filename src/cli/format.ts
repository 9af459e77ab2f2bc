// Output rendering shared by every command, matching what `lxc` prints: `+----+` tables with a rule
// between rows, compact JSON, Go-style YAML (sequences not indented) and headerless CSV.

import Table from 'cli-table3';
import { stringify } from 'yaml';

/** `formatEta` lives with the other unit formatters (the web UI uses it too); re-exported for the CLI. */
export { formatEta } from '../util/units.js';

/** The values `--format` accepts. */
export const outputFormats = ['table', 'json', 'yaml', 'csv'] as const;

/** One of `outputFormats`. */
export type OutputFormat = (typeof outputFormats)[number];

/** Validate a `--format` value, with the list of valid ones in the error. */
export function parseFormat(value: string): OutputFormat {
  const found = outputFormats.find((f) => f === value);
  if (!found) throw new Error(`Invalid format "${value}" (use one of: ${outputFormats.join(', ')})`);
  return found;
}

const asciiChars = {
  top: '-',
  'top-mid': '+',
  'top-left': '+',
  'top-right': '+',
  bottom: '-',
  'bottom-mid': '+',
  'bottom-left': '+',
  'bottom-right': '+',
  left: '|',
  'left-mid': '+',
  mid: '-',
  'mid-mid': '+',
  right: '|',
  'right-mid': '+',
  middle: '|',
};

/** A table as `lxc` draws it (centred header, left-aligned cells, multi-line cells), ending in a newline. */
export function renderTable(header: string[], rows: string[][]): string {
  const table = new Table({
    chars: asciiChars,
    style: { head: [], border: [], 'padding-left': 1, 'padding-right': 1 },
  });
  table.push(header.map((h) => ({ content: h, hAlign: 'center' as const })));
  for (const row of rows) table.push(row);
  return `${table.toString()}\n`;
}

function csvField(value: string): string {
  return /[",\r\n]/.test(value) || value.startsWith(' ') ? `"${value.replaceAll('"', '""')}"` : value;
}

/** Rows as CSV without a header line, as `lxc ... --format csv` prints them. */
export function renderCsv(rows: string[][]): string {
  return rows.map((row) => `${row.map(csvField).join(',')}\n`).join('');
}

/** Compact JSON on one line, as `lxc ... --format json` prints it. */
export function renderJson(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}

/** YAML as Go's yaml.v2 writes it (YAML 1.1 quoting, flush sequences); `sortKeys` mimics Go maps (events). */
export function renderYaml(value: unknown, options: { sortKeys?: boolean } = {}): string {
  return stringify(value, { indentSeq: false, sortMapEntries: options.sortKeys ?? false, schema: 'yaml-1.1' });
}

/** What a listing command hands to `renderList`: table cells, and the API objects for json/yaml. */
export interface Listing {
  header: string[];
  rows: string[][];
  data: unknown;
}

/** A listing in the chosen format: tables and CSV show the columns, JSON and YAML the API objects. */
export function renderList(format: OutputFormat, listing: Listing): string {
  switch (format) {
    case 'table':
      return renderTable(listing.header, listing.rows);
    case 'csv':
      return renderCsv(listing.rows);
    case 'json':
      return renderJson(listing.data);
    case 'yaml':
      return renderYaml(listing.data);
  }
}

/** A status as the CLI prints it (`Online` → `ONLINE`, `Running` → `RUNNING`). */
export function upperState(status: string): string {
  return status.toUpperCase();
}

/** An API timestamp as `lxc` prints it (`2026/11/25 14:49 UTC`); empty for a zero or invalid time. */
export function formatTime(iso: string): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t) || t <= 0) return '';
  const d = new Date(t);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}/${p(d.getUTCMonth() + 1)}/${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())} UTC`;
}
