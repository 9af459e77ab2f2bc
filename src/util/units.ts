// Byte sizes and durations as LXD users write them ("512MiB", "2GB", "1.5s").

const binary: Record<string, number> = { KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40, PiB: 2 ** 50 };
const decimal: Record<string, number> = { kB: 1e3, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, PB: 1e15 };

/** Parse a byte size such as `512MiB`, `2GB` or `1048576`. Returns null if it is not one. */
export function parseBytes(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(text);
  if (!m) return null;
  const n = Number(m[1]);
  const unit = m[2] ?? '';
  if (unit === '' || unit === 'B') return Math.round(n);
  const f = binary[unit] ?? decimal[unit];
  return f === undefined ? null : Math.round(n * f);
}

/** Format bytes the way LXD's CLI does (`1.50MiB`). */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes}B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(2)}${units[i]}`;
}

/** Parse a duration in seconds (`20`, `2.5`, `30s`, `2m`). Returns null if it is not one. */
export function parseSeconds(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$/.exec(text);
  if (!m) return null;
  const n = Number(m[1]);
  const f = m[2] === 'm' ? 60 : m[2] === 'h' ? 3600 : 1;
  return n * f;
}

/** A duration as Go prints it (`20.5s`, `1m3s`), used in LXD's "No heartbeat for" message. */
export function formatDuration(ms: number): string {
  const s = ms / 1000;
  if (s < 60) return `${Number(s.toFixed(3))}s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s - m * 60);
  if (m < 60) return `${m}m${rest}s`;
  return `${Math.floor(m / 60)}h${m % 60}m${rest}s`;
}

/** A remaining time as `45s`, `2m05s` or `1h02m`, for progress displays. */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
