// Small narrowing helpers: API answers are parsed into `unknown` and read through these, so a server that
// omits or mistypes a field yields an empty value in the output instead of a crash.

/** A plain JSON object. */
export type JsonObject = Record<string, unknown>;

/** True for a JSON object (not null, not an array), so its keys can be read. */
export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `value` as an object, or an empty one, so optional sub-objects can be read without checks. */
export function asObject(value: unknown): JsonObject {
  return isObject(value) ? value : {};
}

/** `value` as an array, or an empty one (LXD sends `null` for empty lists). */
export function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** A string field, or `fallback` when it is missing or not a string. */
export function str(obj: unknown, key: string, fallback = ''): string {
  const v = asObject(obj)[key];
  return typeof v === 'string' ? v : fallback;
}

/** A numeric field, or `fallback` when it is missing or not a number. */
export function num(obj: unknown, key: string, fallback = 0): number {
  const v = asObject(obj)[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

/** A boolean field, or `fallback` when it is missing or not a boolean. */
export function bool(obj: unknown, key: string, fallback = false): boolean {
  const v = asObject(obj)[key];
  return typeof v === 'boolean' ? v : fallback;
}

/** The string values of a string map (LXD config), skipping anything that is not a string. */
export function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(asObject(value))) if (typeof v === 'string') out[k] = v;
  return out;
}

/** The strings of a list, skipping anything else. */
export function stringList(value: unknown): string[] {
  return asArray(value).filter((v): v is string => typeof v === 'string');
}
