// "Can this instance move?" as a list of small named rules, each with its reason (spec section 3), in the
// manner of kubectl's drain filters: the planner asks every rule, and a dry-run shows the reasons as is.
// Root disks and custom volumes on a pool are not rules' business: they move with the instance.

import type { ClusterSnapshot, InstanceSnapshot } from '../placement/snapshot.js';

/** A rule's answer; an immovable verdict carries the reason the user will read. */
export type RuleVerdict = { verdict: 'movable' } | { verdict: 'immovable'; reason: string };

/** What a rule may consult besides the instance, so future rules need no new signature. */
export interface RuleContext {
  snapshot: ClusterSnapshot;
}

/** One named reason an instance may be tied to its member. */
export interface MoveRule {
  name: string;
  check(inst: InstanceSnapshot, context: RuleContext): RuleVerdict;
}

const movable: RuleVerdict = { verdict: 'movable' };

/** The first device (in name order, for stable reasons) that `tied` says binds the instance to its host. */
function firstTiedDevice(
  inst: InstanceSnapshot,
  tied: (device: Record<string, string>) => string | null,
): RuleVerdict {
  for (const name of Object.keys(inst.devices).sort()) {
    const device = inst.devices[name];
    if (device === undefined) continue;
    const why = tied(device);
    if (why !== null) return { verdict: 'immovable', reason: `${device.type ?? 'device'} device "${name}" ${why}` };
  }
  return movable;
}

/** A disk that mounts a host path (a `source` without a `pool`) has nothing to copy and no twin elsewhere. */
export const hostPathDisk: MoveRule = {
  name: 'hostPathDisk',
  check: (inst) =>
    firstTiedDevice(inst, (d) =>
      d.type === 'disk' && (d.pool ?? '') === '' && (d.source ?? '') !== '' ? `uses host path ${d.source}` : null,
    ),
};

/** Device types that pass a piece of this host's hardware through. */
export const hostDeviceTypes: readonly string[] = ['unix-char', 'unix-block', 'usb', 'gpu'];

/** Host character/block devices, USB and GPUs exist on this host only. */
export const hostDevice: MoveRule = {
  name: 'hostDevice',
  check: (inst) =>
    firstTiedDevice(inst, (d) => (hostDeviceTypes.includes(d.type ?? '') ? 'is a device of this host' : null)),
};

/** A physical NIC is this host's network card, handed to the instance. */
export const physicalNic: MoveRule = {
  name: 'physicalNic',
  check: (inst) =>
    firstTiedDevice(inst, (d) => (d.type === 'nic' && d.nictype === 'physical' ? "is this host's physical NIC" : null)),
};

/** Every rule, in the order their reasons are reported. */
export const moveRules: readonly MoveRule[] = [hostPathDisk, hostDevice, physicalNic];

/** Why `inst` cannot move, one entry per rule that objects (empty: it can move with its volumes). */
export function immovableReasons(
  inst: InstanceSnapshot,
  context: RuleContext,
  rules: readonly MoveRule[] = moveRules,
): { rule: string; reason: string }[] {
  const reasons: { rule: string; reason: string }[] = [];
  for (const rule of rules) {
    const v = rule.check(inst, context);
    if (v.verdict === 'immovable') reasons.push({ rule: rule.name, reason: v.reason });
  }
  return reasons;
}
