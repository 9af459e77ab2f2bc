// Picks a store backend from the URL in the daemon's configuration, so nothing above the store names a backend.

import { openSqliteStore } from './sqlite.js';
import { StoreError, type Store } from './store.js';

/**
 * Opens the store named by `url`: `sqlite:<path>` (relative to the working directory, or absolute) or
 * `sqlite://<absolute path>`; `etcd://…` is reserved for the etcd backend.
 */
export async function openStore(url: string): Promise<Store> {
  if (url.startsWith('sqlite://')) {
    const path = url.slice('sqlite://'.length);
    // `sqlite://data.db` would read as a URL host, not a path; insist on the unambiguous spelling.
    if (!path.startsWith('/')) {
      throw new StoreError(`store URL "${url}": sqlite:// must be followed by an absolute path (or use sqlite:<path>)`);
    }
    return openSqliteStore(path);
  }
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length);
    if (path.length === 0) throw new StoreError(`store URL "${url}" names no database file`);
    return openSqliteStore(path);
  }
  if (url.startsWith('etcd://') || url.startsWith('etcd:')) {
    throw new StoreError('the etcd backend comes in a later issue');
  }
  throw new StoreError(`unsupported store URL "${url}" (expected sqlite:<path> or etcd://<host:port>)`);
}
