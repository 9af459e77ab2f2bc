// Cluster groups (LXD's `lxc cluster group`): named sets of members that `--target=@<group>` places an
// instance among and that evacuation keeps it inside. One store record per group; `default` always exists
// and holds every member that no other group lists and that was not moved out of it, so a member that joins
// is in `default` without anyone writing for it.

import type { Store, Compare, Op } from '../store/store.js';
import { keys, type GroupRecord, type InstanceRecord, type MemberRecord } from '../store/schema.js';
import { errors } from '../errors/index.js';
import { clusterGroupKey } from '../placement/index.js';

/** The group every member starts in; it can be neither deleted nor renamed. */
export const defaultGroup = 'default';

const namePattern = /^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$/;

/** Why `name` cannot name a group, or null; checked before anything is written. */
export function groupNameProblem(name: string): string | null {
  if (namePattern.test(name)) return null;
  return `Invalid cluster group name "${name}": use letters, digits and hyphens (at most 63), starting with a letter or digit`;
}

/**
 * Every group's members, resolved: each record's list (members that no longer exist left out), plus, for
 * `default`, every member that no record lists. `default` is always there, even without a record.
 */
export function resolveMembership(records: readonly GroupRecord[], memberNames: readonly string[]): Map<string, string[]> {
  const exists = new Set(memberNames);
  const listed = new Set<string>();
  const membership = new Map<string, string[]>();
  for (const r of records) {
    const members = r.members.filter((m) => exists.has(m));
    for (const m of members) listed.add(m);
    membership.set(r.name, members);
  }
  const unlisted = memberNames.filter((m) => !listed.has(m));
  membership.set(defaultGroup, [...new Set([...(membership.get(defaultGroup) ?? []), ...unlisted])].sort());
  return membership;
}

/** The groups `member` is in, in name order: what `GET /1.0/cluster/members/<m>` shows as `groups`. */
export function groupsOf(membership: ReadonlyMap<string, readonly string[]>, member: string): string[] {
  return [...membership].filter(([, members]) => members.includes(member)).map(([name]) => name).sort();
}

/** A group as the API shows it. */
export interface GroupView {
  name: string;
  description: string;
  members: string[];
  /** Instances placed into the group (their `volatile.cluster.group`), as API paths. */
  usedBy: string[];
}

/** One consistent read of what a group change decides on. */
interface GroupState {
  records: Map<string, { record: GroupRecord; modRevision: number }>;
  memberNames: string[];
  membership: Map<string, string[]>;
  instances: InstanceRecord[];
}

const instancePath = (i: InstanceRecord): string =>
  i.project === 'default' ? `/1.0/instances/${i.name}` : `/1.0/instances/${i.name}?project=${i.project}`;

/** Reads and changes cluster groups; every change is one compare-and-swap transaction over the records it read. */
export class GroupService {
  constructor(private readonly store: Store) {}

  /** Every group, in name order. */
  async list(): Promise<GroupView[]> {
    const state = await this.read();
    return [...state.membership.keys()].sort().map((name) => this.view(state, name));
  }

  /** One group; 404 if there is none of that name. */
  async get(name: string): Promise<GroupView> {
    const state = await this.read();
    if (!state.membership.has(name)) throw errors.groupNotFound(name);
    return this.view(state, name);
  }

  /** Which members each group holds, for placement and the member API. */
  async membership(): Promise<Map<string, string[]>> {
    return (await this.read()).membership;
  }

  /** Create a group, optionally with members (who stay in their other groups as well). */
  async create(name: string, description: string, members: readonly string[]): Promise<void> {
    const problem = groupNameProblem(name);
    if (problem) throw errors.badRequest(problem);
    for (;;) {
      const state = await this.read();
      if (state.membership.has(name)) throw errors.conflict(`Cluster group "${name}" already exists`);
      checkMembersExist(state, members);
      const record: GroupRecord = { name, description, members: [...new Set(members)].sort() };
      if (await this.commit(state, [record], [])) return;
    }
  }

  /**
   * Change a group's description and members (PUT replaces both; PATCH keeps what it does not name).
   * A member may leave a group only if it stays in another one, as LXD requires.
   */
  async update(name: string, change: { description?: string; members?: readonly string[] }, replace: boolean): Promise<void> {
    for (;;) {
      const state = await this.read();
      const current = state.membership.get(name);
      if (current === undefined) throw errors.groupNotFound(name);
      const members = change.members ?? (replace ? [] : current);
      checkMembersExist(state, members);
      for (const leaving of current.filter((m) => !members.includes(m))) {
        if (groupsOf(state.membership, leaving).length <= 1) {
          throw errors.badRequest(`Cannot remove "${leaving}" from group "${name}": a member needs to belong to at least one cluster group`);
        }
      }
      const old = state.records.get(name)?.record;
      const description = change.description ?? (replace ? '' : (old?.description ?? ''));
      if (await this.commit(state, [{ name, description, members: [...new Set(members)].sort() }], [])) return;
    }
  }

  /** Rename a group; refused for `default` and for a group instances were placed into. */
  async rename(name: string, newName: string): Promise<void> {
    if (name === defaultGroup) throw errors.forbidden('The "default" cluster group cannot be renamed');
    const problem = groupNameProblem(newName);
    if (problem) throw errors.badRequest(problem);
    for (;;) {
      const state = await this.read();
      const old = state.records.get(name);
      if (old === undefined) throw errors.groupNotFound(name);
      if (state.membership.has(newName)) throw errors.conflict(`Name "${newName}" already in use`);
      if (this.view(state, name).usedBy.length > 0) throw errors.badRequest(`Cluster group "${name}" is currently in use`);
      if (await this.commit(state, [{ ...old.record, name: newName }], [name])) return;
    }
  }

  /** Delete a group; refused for `default`, for a group with members, and for one instances were placed into. */
  async remove(name: string): Promise<void> {
    if (name === defaultGroup) throw errors.forbidden('The "default" cluster group cannot be deleted');
    for (;;) {
      const state = await this.read();
      const members = state.membership.get(name);
      if (members === undefined) throw errors.groupNotFound(name);
      if (members.length > 0) throw errors.badRequest(`Only empty cluster groups can be removed ("${name}" has ${members.join(', ')})`);
      if (this.view(state, name).usedBy.length > 0) throw errors.badRequest(`Cluster group "${name}" is currently in use`);
      if (await this.commit(state, [], [name])) return;
    }
  }

  /**
   * Put `member` in exactly `groups` (LXD's `lxc cluster group assign`, a PUT of the member's `groups`):
   * it joins the ones it is not in and leaves the others. Every group must exist, and at least one is needed.
   */
  async assign(member: string, groups: readonly string[]): Promise<void> {
    const wanted = [...new Set(groups)];
    if (wanted.length === 0) throw errors.badRequest(`Cluster member "${member}" needs to belong to at least one cluster group`);
    for (;;) {
      const state = await this.read();
      if (!state.memberNames.includes(member)) throw errors.memberNotFound(member);
      for (const g of wanted) if (!state.membership.has(g)) throw errors.groupNotFound(g);
      const changed: GroupRecord[] = [];
      for (const name of state.membership.keys()) {
        const record = state.records.get(name)?.record ?? { name, description: '', members: [] };
        const has = record.members.includes(member);
        const want = wanted.includes(name);
        if (has === want) continue;
        const members = want ? [...record.members, member].sort() : record.members.filter((m) => m !== member);
        changed.push({ ...record, members });
      }
      if (await this.commit(state, changed, [])) return;
    }
  }

  private view(state: GroupState, name: string): GroupView {
    return {
      name,
      description: state.records.get(name)?.record.description ?? (name === defaultGroup ? 'Default cluster group' : ''),
      members: state.membership.get(name) ?? [],
      usedBy: state.instances.filter((i) => i.config[clusterGroupKey] === name).map(instancePath).sort(),
    };
  }

  private async read(): Promise<GroupState> {
    const { kvs } = await this.store.rangeMany([keys.groups(), keys.members(), keys.instances()]);
    const records = new Map<string, { record: GroupRecord; modRevision: number }>();
    const memberNames: string[] = [];
    const instances: InstanceRecord[] = [];
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.groups())) {
        const record = JSON.parse(kv.value) as GroupRecord;
        records.set(record.name, { record, modRevision: kv.modRevision });
      } else if (kv.key.startsWith(keys.members())) memberNames.push((JSON.parse(kv.value) as MemberRecord).name);
      else instances.push(JSON.parse(kv.value) as InstanceRecord);
    }
    memberNames.sort();
    const membership = resolveMembership([...records.values()].map((r) => r.record), memberNames);
    return { records, memberNames, membership, instances };
  }

  /** Write `puts` and delete `deletes` if no group record changed since `state` was read; false: read again. */
  private async commit(state: GroupState, puts: readonly GroupRecord[], deletes: readonly string[]): Promise<boolean> {
    const compares: Compare[] = [...state.records.entries()].map(([name, r]) => ({ key: keys.group(name), modRevision: r.modRevision }));
    for (const p of puts) if (!state.records.has(p.name)) compares.push({ key: keys.group(p.name), modRevision: 0 });
    const ops: Op[] = [
      ...deletes.map((name): Op => ({ type: 'delete', key: keys.group(name) })),
      ...puts.map((record): Op => ({ type: 'put', key: keys.group(record.name), value: JSON.stringify(record) })),
    ];
    return (await this.store.txn(compares, ops)).succeeded;
  }
}

function checkMembersExist(state: GroupState, members: readonly string[]): void {
  for (const m of members) if (!state.memberNames.includes(m)) throw errors.memberNotFound(m);
}
