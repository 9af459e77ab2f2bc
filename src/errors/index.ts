// Every error Roost answers with, declared once with its status code. It sits below every engine and the
// API: engines throw these, the API renders them as LXD's error envelope.

import { formatBytes } from '../util/units.js';

/** An error the API returns to the client as `{"type":"error","error":...,"error_code":...}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Constructors for the errors Roost answers with, so the texts live in one place. */
export const errors = {
  badRequest: (message: string) => new ApiError(400, message),
  forbidden: (message: string) => new ApiError(403, message),
  notFound: (message = 'not found') => new ApiError(404, message),
  methodNotAllowed: () => new ApiError(405, 'method not allowed'),
  conflict: (message: string) => new ApiError(409, message),
  preconditionFailed: () => new ApiError(412, 'ETag doesn\'t match'),
  internal: (message: string) => new ApiError(500, message),
  unavailable: (message: string) => new ApiError(503, message),

  projectNotFound: () => new ApiError(404, 'Project not found'),
  profileNotFound: () => new ApiError(404, 'Profile not found'),
  instanceNotFound: () => new ApiError(404, 'Instance not found'),
  instanceExists: (name: string) => new ApiError(409, `Instance "${name}" already exists`),
  volumeNotFound: () => new ApiError(404, 'Storage volume not found'),
  volumeExists: (name: string) => new ApiError(409, `Storage volume "${name}" already exists`),
  poolNotFound: () => new ApiError(404, 'Storage pool not found'),
  memberNotFound: (name: string) => new ApiError(404, `Cluster member "${name}" not found`),
  operationNotFound: () => new ApiError(404, 'Operation not found'),
  memberEvacuated: () => new ApiError(403, 'Cluster member is evacuated'),
  memberOffline: (name: string) => new ApiError(503, `Cluster member "${name}" is offline`),
  instanceBusy: (name: string) => new ApiError(409, `Instance "${name}" is being moved`),
  /** 507 Insufficient Storage: a copy refused before it starts, because the pool cannot hold it. */
  notEnoughSpace: (member: string, pool: string, neededBytes: number, freeBytes: number) =>
    new ApiError(507, `Not enough space on member "${member}" (pool "${pool}"): the copy needs ${neededBytes} bytes (${formatBytes(neededBytes)}), only ${freeBytes} bytes are free (${formatBytes(freeBytes)})`),
  notEnoughInodes: (member: string, pool: string, needed: number, free: number) =>
    new ApiError(507, `Not enough inodes on member "${member}" (pool "${pool}"): the copy needs ${needed} inodes, only ${free} are free`),
  /** 507: the pool filled up while a copy was written into it (something else took the space). */
  ranOutOfSpace: (member: string, pool: string, volume: string, cause: string) =>
    new ApiError(507, `Member "${member}" ran out of space in pool "${pool}" while receiving volume "${volume}": ${cause}`),
} as const;

/** The LXD error envelope for `err`. */
export function errorBody(status: number, message: string): Record<string, unknown> {
  return { type: 'error', status: '', status_code: 0, operation: '', error_code: status, error: message, metadata: null };
}
