// Cluster membership: member records, heartbeats on a store lease, derived Offline status, and the
// server and member config (validated through the config-key registry).

import os from 'node:os';
import type { Store, Watch } from '../store/store.js';
import { keys, type HeartbeatRecord, type MemberRecord, type MemberStatus, type StoredMemberState } from '../store/schema.js';
import { checkConfig, configValue } from '../config/keys.js';
import { errors } from '../errors/index.js';
import { formatDuration, parseSeconds } from '../util/units.js';
import type { Logger } from '../util/log.js';

/** A member with its derived status, as the API shows it. */
export interface MemberView {
  record: MemberRecord;
  status: MemberStatus;
  message: string;
  /** Store revision of the member record (for compare-and-swap). */
  modRevision: number;
  /** When its last heartbeat was written (epoch ms), if known. */
  lastSeen: number | null;
}

/** LXD's status messages. */
const messages: Record<MemberStatus, string> = {
  Online: 'Fully operational',
  Evacuating: 'Evacuation in progress',
  Evacuated: 'Unavailable due to maintenance',
  Restoring: 'Restore in progress',
  Offline: 'No heartbeat',
};

/** The message of a member that answers: LXD's, or what healing did to it. */
function stateMessage(record: MemberRecord): string {
  if (record.state === 'Evacuated' && record.healed) {
    const n = record.healed.unreachable.length;
    return `Healed while offline${n > 0 ? ` (${n} instance${n > 1 ? 's' : ''} on local storage left in place)` : ''}; restore it to bring its instances home`;
  }
  return messages[record.state];
}

/** Key of the unleased "last seen" stamp kept beside the leased heartbeat, for the Offline message. */
const lastSeenKey = (name: string): string => `lastseen/${name}`;

/** Reads and writes membership and config; runs this member's heartbeat. */
/** Seconds without heartbeat before a member is Offline, from the server config (`cluster.offline_threshold`, default 20). */
function offlineThresholdOf(config: Record<string, string>): number {
  return parseSeconds(configValue('server', config, 'cluster.offline_threshold')) ?? 20;
}

export class ClusterService {
  private lease: string | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  /** True while a beat runs; `beatAgain` asks it to schedule the next one at once. */
  private beating = false;
  private beatAgain = false;
  private configWatch: Watch | null = null;
  private stopped = false;
  /** Called when the heartbeat finds this member's record gone (it was removed from the cluster). */
  onRemoved: (() => void) | null = null;
  private leaseTtl = 0;
  private returned: (() => void) | null = null;

  constructor(
    private readonly store: Store,
    readonly memberName: string,
    private readonly log: Logger,
  ) {}

  /** Add this member to the cluster, or refresh its address and host facts if it is already a member. */
  async register(address: string): Promise<MemberRecord> {
    for (;;) {
      const kv = await this.store.get(keys.member(this.memberName));
      const host = { cpus: os.cpus().length, memoryBytes: os.totalmem() };
      const startedAt = new Date().toISOString();
      const record: MemberRecord = kv
        ? { ...(JSON.parse(kv.value) as MemberRecord), address, host, startedAt }
        : {
            name: this.memberName,
            address,
            architecture: hostArchitecture(),
            description: '',
            state: 'Online',
            config: {},
            host,
            createdAt: startedAt,
            startedAt,
          };
      const r = await this.store.txn([{ key: keys.member(this.memberName), modRevision: kv?.modRevision ?? 0 }], [
        { type: 'put', key: keys.member(this.memberName), value: JSON.stringify(record) },
      ]);
      if (r.succeeded) return record;
    }
  }

  /** Seconds without heartbeat before a member is Offline (server key `cluster.offline_threshold`). */
  async offlineThreshold(): Promise<number> {
    return offlineThresholdOf(await this.serverConfig());
  }

  /** Start heartbeating: a key under a lease whose TTL is the offline threshold, kept alive well within it. */
  async startHeartbeat(): Promise<void> {
    await this.beat();
    // A changed offline threshold takes effect at once, with a lease of the new length, not at the next beat
    // (up to 4 s later): a member that dies meanwhile would otherwise stay Online for the old threshold.
    const key = keys.serverConfig();
    const { revision } = await this.store.range(key);
    this.configWatch = this.store.watch(key, revision, (events) => {
      const change = events.filter((e) => e.kv.key === key).at(-1);
      if (!change || this.stopped) return;
      const config = change.kv.value === '' ? {} : (JSON.parse(change.kv.value) as Record<string, string>);
      if (offlineThresholdOf(config) === this.leaseTtl) return;
      if (this.beating) {
        this.beatAgain = true;
        return;
      }
      if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
      void this.beat();
    });
  }

  /**
   * Call `fn` when this member's heartbeat had lapsed (its lease expired: the others saw it Offline, e.g.
   * while it was cut off from the store) and is alive again, so work that others gave up on meanwhile can be
   * tidied up here.
   */
  onReturn(fn: () => void): void {
    this.returned = fn;
  }

  /** Stop heartbeating (the member will turn Offline after the threshold unless revoke is asked). */
  async stopHeartbeat(revoke: boolean): Promise<void> {
    this.stopped = true;
    this.configWatch?.close();
    this.configWatch = null;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
    if (revoke && this.lease) await this.store.revokeLease(this.lease).catch(() => undefined);
  }

  private async beat(): Promise<void> {
    this.beating = true;
    this.beatAgain = false;
    try {
      // A member removed from the cluster (`roost cluster remove`) stops beating and says so, once.
      if (!(await this.store.get(keys.member(this.memberName)))) {
        this.log.warn('this member was removed from the cluster; it stops');
        this.onRemoved?.();
        this.beating = false;
        return;
      }
      const ttl = await this.offlineThreshold();
      const at = new Date().toISOString();
      // On a threshold change the old lease is revoked only after the heartbeat moved to the new one:
      // revoking first would delete the heartbeat and show this member Offline for a moment.
      let replaced: string | null = null;
      const lapsed = this.lease !== null && ttl === this.leaseTtl && !(await this.store.keepAlive(this.lease));
      if (!this.lease || ttl !== this.leaseTtl || lapsed) {
        if (this.lease && ttl !== this.leaseTtl) replaced = this.lease;
        this.lease = await this.store.grantLease(ttl);
        this.leaseTtl = ttl;
      }
      const beat: HeartbeatRecord = { at };
      // A heartbeat means nothing after a reboot: it need not wait for the disk (see TxnOptions).
      await this.store.txn([], [
        { type: 'put', key: keys.heartbeat(this.memberName), value: JSON.stringify(beat), lease: this.lease },
        { type: 'put', key: lastSeenKey(this.memberName), value: JSON.stringify(beat) },
      ], [], { durability: 'relaxed' });
      if (replaced) await this.store.revokeLease(replaced).catch(() => undefined);
      if (lapsed) {
        this.log.info('heartbeat restored after it had lapsed (this member was Offline)');
        this.returned?.();
      }
    } catch (err) {
      this.log.warn({ err }, 'heartbeat failed');
    }
    // Five beats per lease length leave room for four slow ones; at the default 20 s threshold that is one
    // beat (two writes, see above) every 4 s per member.
    const interval = this.beatAgain ? 0 : Math.max(100, Math.min(4000, (this.leaseTtl * 1000) / 5));
    this.beating = false;
    if (this.stopped) return;
    this.heartbeatTimer = setTimeout(() => void this.beat(), interval);
    this.heartbeatTimer.unref();
  }

  /** Every member with its status, from one consistent read. */
  async members(): Promise<MemberView[]> {
    const { kvs } = await this.store.rangeMany([keys.members(), keys.heartbeats(), 'lastseen/']);
    const alive = new Set<string>();
    const lastSeen = new Map<string, number>();
    const views: MemberView[] = [];
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.heartbeats())) alive.add(kv.key.slice(keys.heartbeats().length));
      else if (kv.key.startsWith('lastseen/')) {
        lastSeen.set(kv.key.slice('lastseen/'.length), Date.parse((JSON.parse(kv.value) as HeartbeatRecord).at));
      }
    }
    for (const kv of kvs) {
      if (!kv.key.startsWith(keys.members())) continue;
      const record = JSON.parse(kv.value) as MemberRecord;
      if (!alive.has(record.name)) {
        const seen = lastSeen.get(record.name);
        const message = `${seen ? `No heartbeat for ${formatDuration(Date.now() - seen)}` : 'No heartbeat'}${record.healed ? '; healed (evacuated while offline)' : ''}`;
        views.push({ record, status: 'Offline', message, modRevision: kv.modRevision, lastSeen: seen ?? null });
      } else {
        views.push({ record, status: record.state, message: stateMessage(record), modRevision: kv.modRevision, lastSeen: lastSeen.get(record.name) ?? null });
      }
    }
    return views;
  }

  /** One member with its status; 404 if unknown. */
  async member(name: string): Promise<MemberView> {
    const view = (await this.members()).find((m) => m.record.name === name);
    if (!view) throw errors.memberNotFound(name);
    return view;
  }

  /**
   * Change a member's stored state if it is one of `from` (a compare-and-swap on the member record).
   * Returns false if it was not.
   */
  async transition(name: string, from: StoredMemberState[], to: StoredMemberState): Promise<boolean> {
    for (;;) {
      const kv = await this.store.get(keys.member(name));
      if (!kv) throw errors.memberNotFound(name);
      const record = JSON.parse(kv.value) as MemberRecord;
      if (!from.includes(record.state)) return false;
      record.state = to;
      const r = await this.store.txn([{ key: kv.key, modRevision: kv.modRevision }], [
        { type: 'put', key: kv.key, value: JSON.stringify(record) },
      ]);
      if (r.succeeded) return true;
    }
  }

  /**
   * Remove a member from the cluster (`lxc cluster remove`). Refused while it holds instances or custom
   * volumes, or while its evacuation or restore runs; with `force` (a member that is gone for good) its
   * instance and volume records go too, since their data was on it, and they are reported.
   */
  async remove(name: string, force: boolean): Promise<{ instances: string[]; volumes: string[] }> {
    for (;;) {
      const memberKv = await this.store.get(keys.member(name));
      if (!memberKv) throw errors.memberNotFound(name);
      const { kvs } = await this.store.rangeMany([keys.instances(), keys.volumes(), keys.moves(), keys.evacuation(name)]);
      const held = (prefix: string): { key: string; modRevision: number; label: string }[] =>
        kvs.filter((kv) => kv.key.startsWith(prefix)).flatMap((kv) => {
          const r = JSON.parse(kv.value) as { name: string; location: string; project: string };
          return r.location === name ? [{ key: kv.key, modRevision: kv.modRevision, label: r.project === 'default' ? r.name : `${r.project}/${r.name}` }] : [];
        });
      const instances = held(keys.instances());
      const volumes = held(keys.volumes());
      const run = kvs.find((kv) => kv.key === keys.evacuation(name));
      const running = run && ['pending', 'running'].includes((JSON.parse(run.value) as { status: string }).status);
      if (!force) {
        if (instances.length > 0) throw errors.badRequest(`Cluster member "${name}" still has the following instances: ${instances.map((i) => i.label).join(', ')}`);
        if (volumes.length > 0) throw errors.badRequest(`Cluster member "${name}" still has the following storage volumes: ${volumes.map((v) => v.label).join(', ')}`);
        if (running) throw errors.conflict(`An evacuation or restore of "${name}" is running; wait for it or cancel it first`);
      }
      const journals = kvs.filter((kv) => kv.key.startsWith(keys.moves()) && [(JSON.parse(kv.value) as { source: string }).source, (JSON.parse(kv.value) as { target: string }).target].includes(name));
      const gone = [...instances, ...volumes, ...journals.map((kv) => ({ key: kv.key, modRevision: kv.modRevision }))];
      const r = await this.store.txn(
        [{ key: memberKv.key, modRevision: memberKv.modRevision }, ...gone.map((g) => ({ key: g.key, modRevision: g.modRevision }))],
        [
          { type: 'delete', key: memberKv.key },
          { type: 'delete', key: keys.heartbeat(name) },
          { type: 'delete', key: lastSeenKey(name) },
          ...(run ? [{ type: 'delete' as const, key: run.key }] : []),
          ...gone.map((g) => ({ type: 'delete' as const, key: g.key })),
        ],
      );
      if (r.succeeded) return { instances: instances.map((i) => i.label), volumes: volumes.map((v) => v.label) };
    }
  }

  /** Update a member's config or description; `replace` swaps the whole config (PUT) instead of merging (PATCH). */
  async updateMember(name: string, change: { config?: Record<string, unknown>; description?: string }, replace: boolean): Promise<MemberRecord> {
    if (change.config) {
      const problem = checkConfig('member', change.config);
      if (problem) throw errors.badRequest(problem);
    }
    for (;;) {
      const kv = await this.store.get(keys.member(name));
      if (!kv) throw errors.memberNotFound(name);
      const record = JSON.parse(kv.value) as MemberRecord;
      if (change.config) record.config = mergeConfig(replace ? {} : record.config, change.config as Record<string, string>);
      if (change.description !== undefined) record.description = change.description;
      const r = await this.store.txn([{ key: kv.key, modRevision: kv.modRevision }], [
        { type: 'put', key: kv.key, value: JSON.stringify(record) },
      ]);
      if (r.succeeded) return record;
    }
  }

  /** The server (cluster-wide) config. */
  async serverConfig(): Promise<Record<string, string>> {
    const kv = await this.store.get(keys.serverConfig());
    return kv ? (JSON.parse(kv.value) as Record<string, string>) : {};
  }

  /** Update the server config, merging (PATCH) or replacing (PUT). */
  async updateServerConfig(config: Record<string, unknown>, replace: boolean): Promise<Record<string, string>> {
    const problem = checkConfig('server', config);
    if (problem) throw errors.badRequest(problem);
    for (;;) {
      const kv = await this.store.get(keys.serverConfig());
      const current = kv ? (JSON.parse(kv.value) as Record<string, string>) : {};
      const next = mergeConfig(replace ? {} : current, config as Record<string, string>);
      const r = await this.store.txn([{ key: keys.serverConfig(), modRevision: kv?.modRevision ?? 0 }], [
        { type: 'put', key: keys.serverConfig(), value: JSON.stringify(next) },
      ]);
      if (r.succeeded) return next;
    }
  }
}

/** Apply a config change: empty values unset keys. */
export function mergeConfig(base: Record<string, string>, change: Record<string, string>): Record<string, string> {
  const out = { ...base };
  for (const [k, v] of Object.entries(change)) {
    if (v === '') delete out[k];
    else out[k] = v;
  }
  return out;
}

/** The host architecture in LXD's words. */
export function hostArchitecture(): string {
  const map: Record<string, string> = { x64: 'x86_64', arm64: 'aarch64', ia32: 'i686', arm: 'armv7l', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return map[process.arch] ?? process.arch;
}
