// Picks a store backend from the URL in the daemon's configuration, so nothing above the store names a backend.

import { openSqliteStore } from './sqlite.js';
import { StoreError, type Store } from './store.js';

/**
 * Opens the store named by `url`:
 * - `sqlite:<path>` (relative to the working directory, or absolute) or `sqlite://<absolute path>`: the
 *   embedded store, one file shared by the members on one host.
 * - `etcd://host:port[,host:port...]`: an etcd cluster (3.4 or later) over plain HTTP; name every member
 *   so the store can move to another when one dies (a port left out is 2379).
 * - `etcd://host:port,...?cacert=<file>[&cert=<file>&key=<file>]`: etcd over HTTPS, trusting the CA in
 *   `cacert` and presenting the client certificate `cert`/`key` (PEM files) when etcd requires one.
 * - Either etcd form may add `timeout_ms=<ms>`: the deadline of every store call (default 5000).
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
  if (url.startsWith('etcd:')) {
    // Loaded on demand: the etcd client (gRPC, protobuf) takes about half a second to load.
    const { openEtcdStore, parseEtcdUrl } = await import('./etcd.js');
    return openEtcdStore(parseEtcdUrl(url));
  }
  throw new StoreError(`unsupported store URL "${url}" (expected sqlite:<path> or etcd://<host:port>[,<host:port>...])`);
}
