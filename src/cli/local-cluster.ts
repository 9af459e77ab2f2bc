// `roost up` / `roost down`: a local multi-member cluster on this host with the embedded store.
// (Implemented by the daemon work; the CLI only calls these.)

/** Options of `roost up`. */
export interface UpOptions {
  members: number;
  dir?: string;
}

/** Options of `roost down`. */
export interface DownOptions {
  dir?: string;
  purge: boolean;
}

/** Start (or complete) a local cluster; prints one line per member. */
export async function upCommand(_options: UpOptions): Promise<void> {
  throw new Error('not implemented yet');
}

/** Stop a local cluster's members and instances; with purge, remove its directory. */
export async function downCommand(_options: DownOptions): Promise<void> {
  throw new Error('not implemented yet');
}
