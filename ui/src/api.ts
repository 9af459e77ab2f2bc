// The UI's side of Roost's LXD-shaped REST API: one request function that unwraps LXD's envelope and turns
// an error answer into an `ApiError` carrying the server's own error text, and the few shapes pages read.

/** An error answer of the API (LXD's `{type: "error", error, error_code}`), or a failure to reach it. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** LXD's response envelope. */
interface Envelope {
  type?: string;
  error?: string;
  error_code?: number;
  metadata?: unknown;
  operation?: string;
}

/** What a successful request answered: sync metadata, or the operation an async request started. */
export interface ApiAnswer {
  type: 'sync' | 'async';
  metadata: unknown;
}

/** Send one request to the API of the member that served this page. */
export async function request(method: string, path: string, body?: unknown): Promise<ApiAnswer> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch (err) {
    throw new ApiError(0, `Cannot reach the Roost member: ${err instanceof Error ? err.message : String(err)}`);
  }
  const text = await res.text();
  let envelope: Envelope | null = null;
  try {
    envelope = JSON.parse(text) as Envelope;
  } catch {
    envelope = null;
  }
  if (!res.ok || envelope === null || envelope.type === 'error') {
    const message = envelope?.error || text.trim() || `HTTP ${res.status}`;
    throw new ApiError(envelope?.error_code || res.status, message);
  }
  return { type: envelope.type === 'async' ? 'async' : 'sync', metadata: envelope.metadata };
}

/** GET and return the metadata. */
export async function get<T>(path: string): Promise<T> {
  return (await request('GET', path)).metadata as T;
}

/** The text of any error, for showing it as is. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `/1.0/cluster/members?recursion=1` items (the fields the UI shows). */
export interface Member {
  server_name: string;
  status: string;
  message: string;
  roles: string[] | null;
  config: Record<string, string> | null;
}

/** `/1.0/instances?recursion=1` items. */
export interface Instance {
  name: string;
  project?: string;
  type: string;
  status: string;
  location: string;
  config: Record<string, string> | null;
}

/** An operation as the API and its events show it. */
export interface Operation {
  id: string;
  description: string;
  status: string;
  status_code?: number;
  resources: Record<string, string[]> | null;
  metadata: Record<string, unknown> | null;
  may_cancel: boolean;
  err: string;
  location: string;
}

/** Final operation statuses (LXD's). */
export function isFinalStatus(status: string): boolean {
  return status === 'Success' || status === 'Failure' || status === 'Cancelled';
}

/** `/1.0/cluster/members/<m>`: the path of a member, as operations list it in `resources.cluster`. */
export function memberPath(member: string): string {
  return `/1.0/cluster/members/${member}`;
}

/** True if an operation is an evacuation or restore of `member`. */
export function isRunOf(op: Operation, member: string): boolean {
  return (op.resources?.cluster ?? []).includes(memberPath(member)) && op.metadata !== null && 'roost_evacuation' in op.metadata;
}
