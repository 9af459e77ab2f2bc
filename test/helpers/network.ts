// A network partition between members of a local cluster (as root, with nftables): every TCP segment sent
// to one member's HTTPS port is answered with a reset, so its peers find it unreachable, new connections and
// established ones alike, while the member itself keeps running (and keeps heartbeating through the store).

import { spawnSync } from 'node:child_process';

/** Tables this process created and has not removed yet; removed on exit whatever happens. */
const open = new Set<string>();
process.on('exit', () => {
  for (const table of open) spawnSync('nft', ['delete', 'table', 'inet', table]);
});

function nft(args: string[]): void {
  const r = spawnSync('nft', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`nft ${args.join(' ')} failed: ${r.stderr}`);
}

/** Cut `127.0.0.1:<port>` off from its peers; returns how to heal the partition (safe to call twice). */
export function partition(address: string): () => void {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  if (!Number.isInteger(port) || port <= 0) throw new Error(`not a host:port address: ${address}`);
  const table = `roost_test_${process.pid}_${port}`;
  nft(['add', 'table', 'inet', table]);
  open.add(table);
  nft(['add', 'chain', 'inet', table, 'out', '{ type filter hook output priority 0; }']);
  nft(['add', 'rule', 'inet', table, 'out', 'ip', 'daddr', '127.0.0.1', 'tcp', 'dport', String(port), 'reject', 'with', 'tcp', 'reset']);
  return () => {
    if (!open.delete(table)) return;
    nft(['delete', 'table', 'inet', table]);
  };
}
