import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  evacuateModes,
  planEvacuation,
  planHasWork,
  planRestore,
  type EvacuationPlan,
  type PlannedInstance,
} from '../../src/evacuation/planner.js';
import { hostDevice, hostPathDisk, moveRules, physicalNic } from '../../src/evacuation/rules.js';
import { GiB, MiB, instance, member, snapshot, syntheticCluster, volume, volumeDisk } from '../helpers/snapshot.js';
import type { ClusterSnapshot, InstanceSnapshot } from '../../src/placement/snapshot.js';

/** The planned entry of `name`, failing the test if it is missing. */
function entry(plan: EvacuationPlan, name: string): PlannedInstance {
  const found = plan.instances.find((i) => i.name === name);
  assert.ok(found, `${name} is not in the plan (refusals: ${JSON.stringify(plan.refusals)})`);
  return found;
}

/** The refusal reason for `name`, failing the test if there is none. */
function refusal(plan: EvacuationPlan, name: string): string {
  const found = plan.refusals.find((r) => r.name === name);
  assert.ok(found, `${name} is not refused`);
  return found.reason;
}

/** Two empty targets besides the evacuated member m1. */
const threeMembers = () => [member('m1'), member('m2'), member('m3')];

test('evacuate plans the four LXD cases: running, stopped and never-started move, stop-pinned stops', () => {
  const plan = planEvacuation(
    snapshot(threeMembers(), [
      instance('running', 'm1', { config: { 'volatile.last_state.power': 'RUNNING' } }),
      instance('stopped', 'm1', { running: false, config: { 'volatile.last_state.power': 'STOPPED' } }),
      instance('pinned', 'm1', { config: { 'cluster.evacuate': 'stop', 'volatile.last_state.power': 'RUNNING' } }),
      instance('fresh', 'm1', { running: false }),
    ]),
    'm1',
  );
  assert.deepEqual(plan.refusals, []);
  assert.equal(entry(plan, 'running').action, 'migrate');
  assert.equal(entry(plan, 'running').running, true);
  assert.equal(entry(plan, 'stopped').action, 'migrate');
  assert.equal(entry(plan, 'stopped').running, false);
  assert.match(entry(plan, 'stopped').reason, /stays stopped/);
  assert.equal(entry(plan, 'fresh').action, 'migrate');
  assert.deepEqual(
    { action: entry(plan, 'pinned').action, target: entry(plan, 'pinned').target, reason: entry(plan, 'pinned').reason },
    { action: 'stop', target: null, reason: 'cluster.evacuate=stop' },
  );
  for (const name of ['running', 'stopped', 'fresh']) assert.ok(['m2', 'm3'].includes(entry(plan, name).target ?? ''));
});

test('the rule list names every way an instance can be tied to its host', () => {
  assert.deepEqual(
    moveRules.map((r) => r.name),
    ['hostPathDisk', 'hostDevice', 'physicalNic'],
  );
  const context = { snapshot: snapshot([]) };
  const tied = instance('t', 'm1', { devices: { eth1: { type: 'nic', nictype: 'physical', parent: 'eno2' } } });
  assert.deepEqual(physicalNic.check(tied, context), { verdict: 'immovable', reason: `nic device "eth1" is this host's physical NIC` });
  assert.deepEqual(hostPathDisk.check(tied, context), { verdict: 'movable' });
  assert.deepEqual(hostDevice.check(tied, context), { verdict: 'movable' });
});

const tyingDevices: Record<string, Record<string, string>> = {
  'host path disk': { type: 'disk', source: '/srv/data', path: '/data' },
  'unix-char': { type: 'unix-char', source: '/dev/ttyS0' },
  'unix-block': { type: 'unix-block', source: '/dev/sdb' },
  usb: { type: 'usb', vendorid: '0403' },
  gpu: { type: 'gpu' },
  'physical nic': { type: 'nic', nictype: 'physical', parent: 'eno2' },
};

for (const [what, device] of Object.entries(tyingDevices)) {
  test(`auto stops an instance with a ${what} and says which device`, () => {
    const plan = planEvacuation(snapshot(threeMembers(), [instance('a', 'm1', { devices: { dev0: device } })]), 'm1');
    assert.equal(entry(plan, 'a').action, 'stop');
    assert.equal(entry(plan, 'a').target, null);
    assert.match(entry(plan, 'a').reason, new RegExp(`^cannot move: ${device.type} device "dev0"`));
  });

  test(`migrate on an instance with a ${what} is a refusal`, () => {
    const plan = planEvacuation(
      snapshot(threeMembers(), [instance('a', 'm1', { config: { 'cluster.evacuate': 'migrate' }, devices: { dev0: device } })]),
      'm1',
    );
    assert.deepEqual(plan.instances, []);
    assert.match(refusal(plan, 'a'), /^cluster\.evacuate=migrate but it cannot move: .*device "dev0"/);
    assert.ok(planHasWork(plan));
  });
}

test('root disks, custom volumes on a pool and bridged nics move with the instance', () => {
  const plan = planEvacuation(
    snapshot(
      threeMembers(),
      [
        instance('a', 'm1', {
          devices: { data: volumeDisk('data'), eth0: { type: 'nic', nictype: 'bridged', parent: 'br0' }, p: { type: 'proxy' } },
        }),
      ],
      [volume('data', 'm1', 3 * GiB)],
    ),
    'm1',
  );
  assert.equal(entry(plan, 'a').action, 'migrate');
  assert.equal(entry(plan, 'a').reason, 'every device can move');
  assert.deepEqual(entry(plan, 'a').volumes, ['local/data']);
  assert.equal(entry(plan, 'a').bytes, 4 * GiB);
});

test('a stopped instance that stays is already stopped and needs nothing', () => {
  const plan = planEvacuation(
    snapshot(threeMembers(), [
      instance('a', 'm1', { running: false, config: { 'cluster.evacuate': 'force-stop' } }),
      instance('b', 'm1', { running: false, devices: { gpu: { type: 'gpu' } } }),
    ]),
    'm1',
  );
  assert.equal(entry(plan, 'a').action, 'none');
  assert.equal(entry(plan, 'a').reason, 'already stopped; cluster.evacuate=force-stop');
  assert.equal(entry(plan, 'b').action, 'none');
  assert.match(entry(plan, 'b').reason, /^already stopped; cannot move: gpu device "gpu"/);
  assert.equal(planHasWork(plan), false);
});

test('a member with no instances, or only stopped ones that stay, has no work', () => {
  assert.equal(planHasWork(planEvacuation(snapshot(threeMembers()), 'm1')), false);
  assert.equal(planHasWork(planEvacuation(snapshot(threeMembers(), [instance('a', 'm2')]), 'm1')), false);
  assert.equal(planHasWork(planEvacuation(snapshot(threeMembers(), [instance('a', 'm1')]), 'm1')), true);
  const stopped = snapshot(threeMembers(), [instance('a', 'm1', { running: false })]);
  assert.equal(planHasWork(planEvacuation(stopped, 'm1', { mode: 'stop' })), false);
});

test('a request mode overrides every instance own cluster.evacuate', () => {
  const snap = snapshot(threeMembers(), [
    instance('auto', 'm1'),
    instance('stopper', 'm1', { config: { 'cluster.evacuate': 'stop' } }),
    instance('tied', 'm1', { devices: { u: { type: 'usb' } } }),
  ]);
  const stop = planEvacuation(snap, 'm1', { mode: 'stop' });
  assert.deepEqual(stop.instances.map((i) => [i.name, i.action, i.reason]), [
    ['auto', 'stop', 'mode=stop'],
    ['stopper', 'stop', 'mode=stop'],
    ['tied', 'stop', 'mode=stop'],
  ]);
  assert.deepEqual(planEvacuation(snap, 'm1', { mode: 'force-stop' }).instances.map((i) => i.action), ['force-stop', 'force-stop', 'force-stop']);
  const migrate = planEvacuation(snap, 'm1', { mode: 'migrate' });
  assert.equal(entry(migrate, 'stopper').action, 'migrate');
  assert.match(refusal(migrate, 'tied'), /^mode=migrate but it cannot move: usb device "u"/);
  const auto = planEvacuation(snap, 'm1', { mode: 'auto' });
  assert.deepEqual(auto.instances.map((i) => i.action), ['migrate', 'stop', 'stop']);
  assert.deepEqual(planEvacuation(snap, 'm1', { mode: '' }), { ...auto, mode: 'auto' });
});

test('an unknown mode is rejected, and the accepted modes are exported for the API', () => {
  assert.deepEqual([...evacuateModes], ['auto', 'migrate', 'live-migrate', 'stop', 'force-stop']);
  assert.throws(() => planEvacuation(snapshot(threeMembers()), 'm1', { mode: 'sometimes' }), /Invalid mode "sometimes"/);
});

test('live-migrate moves running instances live and stopped ones cold', () => {
  const plan = planEvacuation(
    snapshot(threeMembers(), [
      instance('up', 'm1', { config: { 'cluster.evacuate': 'live-migrate' } }),
      instance('down', 'm1', { running: false, config: { 'cluster.evacuate': 'live-migrate' } }),
    ]),
    'm1',
  );
  assert.equal(entry(plan, 'up').action, 'live-migrate');
  assert.equal(entry(plan, 'down').action, 'migrate');
  assert.match(entry(plan, 'down').reason, /cold move/);
});

test('instances sharing a local custom volume move together to one target, the volume counted once', () => {
  const snap = snapshot(
    [member('m1'), member('m2', { cpuCapacity: 8 }), member('m3', { cpuCapacity: 3 })],
    [
      instance('a', 'm1', { config: { 'limits.cpu': '2' }, devices: { data: volumeDisk('shared') }, rootBytes: GiB }),
      instance('b', 'm1', { config: { 'limits.cpu': '2' }, devices: { data: volumeDisk('shared', '/srv') }, rootBytes: 2 * GiB }),
      instance('busy', 'm2', { config: { 'limits.cpu': '4' } }),
    ],
    [volume('shared', 'm1', 5 * GiB)],
  );
  const plan = planEvacuation(snap, 'm1');
  const a = entry(plan, 'a');
  const b = entry(plan, 'b');
  // Apart, each would go to the emptier m3; together they need 4 CPUs, which only m2 has.
  assert.equal(a.target, 'm2');
  assert.equal(b.target, 'm2');
  assert.equal(a.unit, 'default/a');
  assert.equal(b.unit, 'default/a');
  assert.deepEqual([a.volumes, a.bytes], [['local/shared'], 6 * GiB]);
  assert.deepEqual([b.volumes, b.bytes], [[], 2 * GiB]);
  assert.match(a.reason, /moves with "b" \(shared volume\)/);
});

test('units form transitively and only within one project', () => {
  const plan = planEvacuation(
    snapshot(
      threeMembers(),
      [
        instance('a', 'm1', { devices: { v: volumeDisk('x') } }),
        instance('b', 'm1', { devices: { v: volumeDisk('x'), w: volumeDisk('y') } }),
        instance('c', 'm1', { devices: { w: volumeDisk('y') } }),
        instance('d', 'm1', { project: 'other', devices: { v: volumeDisk('x') } }),
      ],
      [volume('x', 'm1', GiB), volume('y', 'm1', GiB), volume('x', 'm1', GiB, { project: 'other' })],
    ),
    'm1',
  );
  assert.deepEqual(plan.instances.map((i) => [i.project, i.name, i.unit]), [
    ['default', 'a', 'default/a'],
    ['default', 'b', 'default/a'],
    ['default', 'c', 'default/a'],
    ['other', 'd', 'other/d'],
  ]);
  assert.equal(new Set(plan.instances.filter((i) => i.unit === 'default/a').map((i) => i.target)).size, 1);
});

test('when one instance of a unit cannot move, its auto partners stop and its pinned partners are refused', () => {
  const plan = planEvacuation(
    snapshot(
      threeMembers(),
      [
        instance('tied', 'm1', { devices: { data: volumeDisk('shared'), u: { type: 'usb' } } }),
        instance('partner', 'm1', { devices: { data: volumeDisk('shared') } }),
        instance('pinned', 'm1', { config: { 'cluster.evacuate': 'migrate' }, devices: { data: volumeDisk('shared') } }),
        instance('alone', 'm1'),
      ],
      [volume('shared', 'm1', GiB)],
    ),
    'm1',
  );
  assert.equal(entry(plan, 'tied').action, 'stop');
  assert.equal(entry(plan, 'partner').action, 'stop');
  assert.equal(entry(plan, 'partner').reason, 'shares volume local/shared with "tied", which stays');
  assert.equal(refusal(plan, 'pinned'), 'cluster.evacuate=migrate but it shares volume local/shared with "tied", which stays');
  assert.equal(entry(plan, 'alone').action, 'migrate');
});

test('a stop-pinned or refused instance keeps its whole unit home', () => {
  const stopPinned = planEvacuation(
    snapshot(threeMembers(), [
      instance('a', 'm1', { devices: { data: volumeDisk('v') } }),
      instance('b', 'm1', { config: { 'cluster.evacuate': 'stop' }, devices: { data: volumeDisk('v') } }),
    ]),
    'm1',
  );
  assert.deepEqual(stopPinned.instances.map((i) => [i.name, i.action]), [['a', 'stop'], ['b', 'stop']]);
  const refused = planEvacuation(
    snapshot(threeMembers(), [
      instance('a', 'm1', { devices: { data: volumeDisk('v') } }),
      instance('b', 'm1', { config: { 'cluster.evacuate': 'migrate' }, devices: { data: volumeDisk('v'), g: { type: 'gpu' } } }),
    ]),
    'm1',
  );
  assert.equal(entry(refused, 'a').reason, 'shares volume local/v with "b", which cannot move');
  assert.match(refusal(refused, 'b'), /gpu device "g"/);
});

test('a unit with no target that fits is refused as a whole', () => {
  const plan = planEvacuation(
    snapshot(
      [member('m1'), member('m2', { cpuCapacity: 3 })],
      [
        instance('a', 'm1', { config: { 'limits.cpu': '2' }, devices: { data: volumeDisk('v') } }),
        instance('b', 'm1', { config: { 'limits.cpu': '2' }, devices: { data: volumeDisk('v') } }),
      ],
    ),
    'm1',
  );
  assert.deepEqual(plan.instances, []);
  assert.match(refusal(plan, 'a'), /^moves with "b" \(shared volume\); no member has room: needs 4 CPU/);
  assert.match(refusal(plan, 'b'), /m2: not enough CPU/);
});

test('moves that fit nowhere are refused naming the resource, never skipped', () => {
  const snap = snapshot(
    [member('m1'), member('m2', { cpuCapacity: 4, memoryCapacity: 4 * GiB, diskFree: 10 * GiB })],
    [
      instance('cpu', 'm1', { config: { 'limits.cpu': '5' } }),
      instance('mem', 'm1', { config: { 'limits.memory': '5GiB' } }),
      instance('disk', 'm1', { rootBytes: 11 * GiB }),
      instance('fits', 'm1', { rootBytes: 100 * MiB }),
    ],
  );
  const plan = planEvacuation(snap, 'm1');
  assert.equal(refusal(plan, 'cpu'), 'no member has room: needs 5 CPU, 1.00GiB disk (m2: not enough CPU)');
  assert.equal(refusal(plan, 'mem'), 'no member has room: needs 5.00GiB memory, 1.00GiB disk (m2: not enough memory)');
  assert.equal(refusal(plan, 'disk'), 'no member has room: needs 11.00GiB disk (m2: not enough disk)');
  assert.equal(entry(plan, 'fits').target, 'm2');
  assert.equal(plan.instances.length + plan.refusals.length, 4);
});

test('manual, non-Online and other-architecture members never receive moves, nor does the source', () => {
  const members = [
    member('m1'),
    member('a-manual', { config: { 'scheduler.instance': 'manual' } }),
    member('b-evacuated', { status: 'Evacuated' }),
    member('c-offline', { status: 'Offline' }),
    member('d-arm', { architecture: 'aarch64' }),
    member('z-ok', { cpuCapacity: 2 }),
  ];
  const instances = Array.from({ length: 5 }, (_, i) => instance(`i${i}`, 'm1'));
  const plan = planEvacuation(snapshot(members, instances), 'm1');
  assert.deepEqual(new Set(plan.instances.map((i) => i.target)), new Set(['z-ok']));
  const onlyArm = planEvacuation(snapshot(members.slice(0, 5), instances), 'm1');
  assert.equal(onlyArm.refusals.length, 5);
  assert.equal(
    refusal(onlyArm, 'i0'),
    'no member has room: needs 1.00GiB disk (a-manual: scheduler.instance=manual; b-evacuated: evacuated; c-offline: offline; d-arm: architecture aarch64)',
  );
});

test('an aarch64 instance goes only to an aarch64 member', () => {
  const plan = planEvacuation(
    snapshot(
      [member('m1', { architecture: 'aarch64' }), member('m2'), member('m3', { architecture: 'aarch64' })],
      [instance('a', 'm1', { architecture: 'aarch64' })],
    ),
    'm1',
  );
  assert.equal(entry(plan, 'a').target, 'm3');
});

test('moves planned earlier count: two big instances do not both go to a member that fits one', () => {
  const members = [member('m1'), member('m2', { memoryCapacity: 10 * GiB }), member('m3', { memoryCapacity: 10 * GiB })];
  const big = { config: { 'limits.memory': '6GiB' } };
  const plan = planEvacuation(snapshot(members, [instance('a', 'm1', big), instance('b', 'm1', big)]), 'm1');
  assert.deepEqual(plan.instances.map((i) => i.target).sort(), ['m2', 'm3']);
  const one = planEvacuation(snapshot(members.slice(0, 2), [instance('a', 'm1', big), instance('b', 'm1', big)]), 'm1');
  assert.equal(one.instances.length, 1);
  assert.match(refusal(one, 'b'), /m2: not enough memory/);
});

test('larger demands are placed first so that they still find room', () => {
  // By name, "a" would take m2 (the first name on a tie) and "b" would fit nowhere.
  const plan = planEvacuation(
    snapshot(
      [member('m1'), member('m2', { cpuCapacity: 6 }), member('m3', { cpuCapacity: 4 })],
      [instance('a', 'm1', { config: { 'limits.cpu': '3' } }), instance('b', 'm1', { config: { 'limits.cpu': '6' } })],
    ),
    'm1',
  );
  assert.deepEqual(plan.refusals, []);
  assert.deepEqual(plan.instances.map((i) => [i.name, i.target]), [['a', 'm3'], ['b', 'm2']]);
});

test('moves go to the least loaded member, then the one with fewer instances, then by name', () => {
  const plan = planEvacuation(
    snapshot(
      [member('m1'), member('m2'), member('m3'), member('m4')],
      [
        instance('load', 'm2', { config: { 'limits.cpu': '4' } }),
        instance('x1', 'm3'),
        instance('x2', 'm3'),
        instance('x3', 'm4'),
        instance('a', 'm1'),
        instance('b', 'm1'),
      ],
    ),
    'm1',
  );
  // m3 and m4 are unloaded; m4 has fewer instances; after "a" both hold two, and m3 wins by name.
  assert.deepEqual(plan.instances.map((i) => [i.name, i.target]), [['a', 'm4'], ['b', 'm3']]);
});

test('instances of one placement group are spread over distinct members', () => {
  const group = { 'placement.group': 'db' };
  const plan = planEvacuation(
    snapshot(
      [member('m1'), member('m2'), member('m3'), member('m4', { cpuCapacity: 64 })],
      [instance('db1', 'm1', { config: group }), instance('db2', 'm1', { config: group }), instance('db3', 'm1', { config: group })],
    ),
    'm1',
  );
  assert.deepEqual(plan.instances.map((i) => i.target).sort(), ['m2', 'm3', 'm4']);
});

test('the plan lists instances by project then name, whatever the snapshot order', () => {
  const plan = planEvacuation(
    snapshot(threeMembers(), [
      instance('b', 'm1', { project: 'zeta' }),
      instance('c', 'm1'),
      instance('a', 'm1', { project: 'zeta' }),
      instance('d', 'm1', { project: 'alpha' }),
    ]),
    'm1',
  );
  assert.deepEqual(plan.instances.map((i) => `${i.project}/${i.name}`), ['alpha/d', 'default/c', 'zeta/a', 'zeta/b']);
});

/** The same snapshot with its lists in another order. */
function reordered(snap: ClusterSnapshot): ClusterSnapshot {
  const rotate = <T>(xs: T[]): T[] => [...xs.slice(Math.floor(xs.length / 2)), ...xs.slice(0, Math.floor(xs.length / 2))].reverse();
  return { members: rotate(snap.members), instances: rotate(snap.instances), volumes: rotate(snap.volumes) };
}

test('the plan is deterministic for a given snapshot, whatever the order of its lists', () => {
  const snap = syntheticCluster({ members: 20, instances: 600, onSource: 120 });
  const first = planEvacuation(snap, 'm000');
  assert.deepEqual(planEvacuation(snap, 'm000'), first);
  assert.deepEqual(planEvacuation(reordered(snap), 'm000'), first);
});

test('restore starts what evacuation stopped and brings home what it moved, units together', () => {
  const home = 'm1';
  const origin = { 'volatile.evacuate.origin': home };
  const snap = snapshot(
    [member('m1'), member('m2'), member('m3')],
    [
      instance('stopped-by-evac', 'm1', { running: false, config: { 'volatile.last_state.power': 'RUNNING' } }),
      instance('stopped-by-user', 'm1', { running: false, config: { 'volatile.last_state.power': 'STOPPED' } }),
      instance('already-up', 'm1', { config: { 'volatile.last_state.power': 'RUNNING' } }),
      instance('y', 'm2', { config: origin, devices: { data: volumeDisk('v') }, rootBytes: GiB }),
      instance('a', 'm3', { config: origin, running: false }),
      instance('x', 'm2', { config: origin, devices: { data: volumeDisk('v') }, rootBytes: GiB }),
      instance('elsewhere', 'm3', { config: { 'volatile.evacuate.origin': 'm9' } }),
      instance('native', 'm2'),
      instance('live', 'm3', { config: { ...origin, 'cluster.evacuate': 'live-migrate' } }),
      instance('live-but-stopped', 'm3', { running: false, config: { ...origin, 'cluster.evacuate': 'live-migrate' } }),
    ],
    [volume('v', 'm2', 2 * GiB)],
  );
  assert.deepEqual(planRestore(snap, home), {
    member: home,
    start: [{ name: 'stopped-by-evac', project: 'default' }],
    moves: [
      { name: 'a', project: 'default', from: 'm3', bytes: GiB, running: false, live: false, volumes: [], unit: 'default/a' },
      { name: 'live', project: 'default', from: 'm3', bytes: GiB, running: true, live: true, volumes: [], unit: 'default/live' },
      { name: 'live-but-stopped', project: 'default', from: 'm3', bytes: GiB, running: false, live: false, volumes: [], unit: 'default/live-but-stopped' },
      { name: 'x', project: 'default', from: 'm2', bytes: 3 * GiB, running: true, live: false, volumes: ['local/v'], unit: 'default/x' },
      { name: 'y', project: 'default', from: 'm2', bytes: GiB, running: true, live: false, volumes: [], unit: 'default/x' },
    ],
  });
});

test('restore of a member nothing left has nothing to do', () => {
  assert.deepEqual(planRestore(snapshot(threeMembers(), [instance('a', 'm2')]), 'm1'), { member: 'm1', start: [], moves: [] });
});

test('a 10,000-instance cluster plans the evacuation of 1,000 instances correctly', () => {
  const snap = syntheticCluster({ members: 100, instances: 10_000, onSource: 1_000 });
  const source = 'm000';
  const plan = planEvacuation(snap, source);

  // Every instance of the source is in the plan or refused, exactly once.
  const onSource = snap.instances.filter((i) => i.location === source);
  const seen = [...plan.instances, ...plan.refusals].map((i) => `${i.project}/${i.name}`);
  assert.equal(seen.length, 1_000);
  assert.deepEqual(new Set(seen), new Set(onSource.map((i) => `${i.project}/${i.name}`)));

  const byKey = new Map<string, InstanceSnapshot>(snap.instances.map((i) => [`${i.project}/${i.name}`, i]));
  const members = new Map(snap.members.map((m) => [m.name, m]));
  const cpu = new Map<string, number>();
  const mem = new Map<string, number>();
  const disk = new Map<string, number>();
  const limits = (i: InstanceSnapshot): [number, number] => [
    Number(i.config['limits.cpu'] ?? 0),
    i.config['limits.memory'] === undefined ? 0 : Number(i.config['limits.memory'].replace('MiB', '')) * MiB,
  ];
  for (const i of snap.instances) {
    const [c, m] = limits(i);
    cpu.set(i.location, (cpu.get(i.location) ?? 0) + c);
    mem.set(i.location, (mem.get(i.location) ?? 0) + m);
  }
  const unitTargets = new Map<string, string | null>();
  let moves = 0;
  for (const p of plan.instances) {
    const inst = byKey.get(`${p.project}/${p.name}`);
    assert.ok(inst);
    if (p.action === 'migrate' || p.action === 'live-migrate') {
      moves++;
      const target = members.get(p.target ?? '');
      assert.ok(target, `${p.name} has a target`);
      assert.notEqual(target.name, source);
      assert.equal(target.status, 'Online');
      assert.notEqual(target.config['scheduler.instance'], 'manual');
      assert.equal(target.architecture, inst.architecture);
      const [c, m] = limits(inst);
      cpu.set(target.name, (cpu.get(target.name) ?? 0) + c);
      mem.set(target.name, (mem.get(target.name) ?? 0) + m);
      disk.set(target.name, (disk.get(target.name) ?? 0) + p.bytes);
    } else {
      assert.equal(p.target, null);
      assert.equal(p.action, inst.running ? p.action : 'none');
    }
    if (unitTargets.has(p.unit)) assert.equal(unitTargets.get(p.unit), p.target, `unit ${p.unit} stays together`);
    else unitTargets.set(p.unit, p.target);
  }
  assert.ok(moves > 800, `most instances move (${moves})`);
  assert.ok(plan.instances.some((p) => p.action === 'stop' && p.reason.startsWith('cannot move: usb device')));
  assert.ok(plan.instances.some((p) => p.reason.includes('shares volume')));
  for (const m of snap.members) {
    if (m.name === source) continue;
    assert.ok((cpu.get(m.name) ?? 0) <= m.cpuCapacity || !disk.has(m.name), `${m.name} cpu within capacity`);
    assert.ok((mem.get(m.name) ?? 0) <= m.memoryCapacity || !disk.has(m.name), `${m.name} memory within capacity`);
    assert.ok((disk.get(m.name) ?? 0) <= m.diskFree, `${m.name} disk within capacity`);
  }
  assert.deepEqual(plan.refusals, []);
});

/** m1 is evacuated; m2 is empty and first by name, m3 and m4 form cluster group `g`. */
function groupedMembers(): ReturnType<typeof member>[] {
  return [
    member('m1', { clusterGroups: ['default', 'g'] }),
    member('m2'),
    member('m3', { clusterGroups: ['default', 'g'] }),
    member('m4', { clusterGroups: ['g'] }),
  ];
}

test('evacuation keeps an instance inside the cluster group it was placed into, and says so', () => {
  const plan = planEvacuation(
    snapshot(groupedMembers(), [
      instance('grouped', 'm1', { config: { 'volatile.cluster.group': 'g' } }),
      instance('free', 'm1'),
    ]),
    'm1',
  );
  assert.deepEqual(plan.refusals, []);
  assert.ok(['m3', 'm4'].includes(entry(plan, 'grouped').target ?? ''), `grouped goes to ${entry(plan, 'grouped').target}`);
  assert.match(entry(plan, 'grouped').reason, /stays in cluster group "g"/);
  assert.equal(entry(plan, 'free').target, 'm2', 'an instance placed without a group goes anywhere (m2 is the emptiest and first)');
  assert.doesNotMatch(entry(plan, 'free').reason, /cluster group/);
});

test('evacuation leaves the cluster group when no other member of it has room, and says so', () => {
  const full = [
    member('m1', { clusterGroups: ['g'] }),
    member('m2'),
    member('m3', { clusterGroups: ['g'], diskFree: 10 * MiB }),
  ];
  const plan = planEvacuation(snapshot(full, [instance('grouped', 'm1', { config: { 'volatile.cluster.group': 'g' } })]), 'm1');
  assert.equal(entry(plan, 'grouped').target, 'm2');
  assert.match(entry(plan, 'grouped').reason, /no member of cluster group "g" fits \(.*m3: not enough disk.*\); placed outside the group/);

  const alone = planEvacuation(
    snapshot([member('m1', { clusterGroups: ['solo', 'default'] }), member('m2')], [
      instance('single', 'm1', { config: { 'volatile.cluster.group': 'solo' } }),
    ]),
    'm1',
  );
  assert.equal(entry(alone, 'single').target, 'm2');
  assert.match(entry(alone, 'single').reason, /cluster group "solo" has no other member; placed outside the group/);
});

test('the cluster group counts the moves planned before: the second instance leaves the group once it is full', () => {
  const members = [
    member('m1', { clusterGroups: ['g'] }),
    member('m2'),
    member('m3', { clusterGroups: ['g'], diskFree: 1536 * MiB }),
  ];
  const plan = planEvacuation(
    snapshot(members, [
      instance('a', 'm1', { config: { 'volatile.cluster.group': 'g' } }),
      instance('b', 'm1', { config: { 'volatile.cluster.group': 'g' } }),
    ]),
    'm1',
  );
  const targets = [entry(plan, 'a').target, entry(plan, 'b').target].sort();
  assert.deepEqual(targets, ['m2', 'm3'], 'one fits in the group, the other falls back');
});

test('a member of the cluster group that is not Online is never a target', () => {
  const plan = planEvacuation(
    snapshot(
      [member('m1', { clusterGroups: ['g'] }), member('m2'), member('m3', { clusterGroups: ['g'], status: 'Evacuated' })],
      [instance('grouped', 'm1', { config: { 'volatile.cluster.group': 'g' } })],
    ),
    'm1',
  );
  assert.equal(entry(plan, 'grouped').target, 'm2');
  assert.match(entry(plan, 'grouped').reason, /m3: evacuated.*placed outside the group/);
});

test('the dry-run refuses an instance whose pool no other member has, naming the pool', () => {
  const onPool1 = { root: { type: 'disk', path: '/', pool: 'pool1' } };
  const plan = planEvacuation(
    snapshot(
      [member('m1', { pools: { default: 100 * GiB, pool1: 100 * GiB } }), member('m2', { pools: { default: 100 * GiB } })],
      [instance('c1', 'm1', { devices: onPool1 }), instance('c2', 'm1', { devices: { root: { type: 'disk', path: '/', pool: 'default' } } })],
    ),
    'm1',
  );
  assert.deepEqual(plan.instances.map((i) => [i.name, i.target]), [['c2', 'm2']]);
  assert.equal(plan.refusals.length, 1);
  assert.equal(plan.refusals[0]?.name, 'c1');
  assert.match(plan.refusals[0]?.reason ?? '', /m2: no storage pool "pool1"/);
});

test('an instance whose volumes are all on a shared pool moves with no copy, even onto a member with no local room', () => {
  const onShared = { root: { type: 'disk', path: '/', pool: 'nfs' } };
  const world = snapshot(
    [member('m1', { pools: { default: 100 * GiB, nfs: 100 * GiB } }), member('m2', { diskFree: 0, pools: { default: 0, nfs: 0 } })],
    // What the snapshot reader gives for a remote pool: nothing to copy.
    [instance('c1', 'm1', { devices: onShared, rootBytes: 0 }), instance('c2', 'm1', { devices: { ...onShared, data: volumeDisk('d', '/d', 'default') }, rootBytes: 0 })],
    [volume('d', 'm1', GiB, { pool: 'default' })],
  );
  world.remotePools = ['nfs'];
  const plan = planEvacuation(world, 'm1');
  const c1 = entry(plan, 'c1');
  assert.equal(c1.target, 'm2');
  assert.equal(c1.bytes, 0);
  assert.match(c1.reason, /shared: no copy/);
  // A custom volume on a local pool still has to be copied, so the full member cannot take it.
  assert.doesNotMatch(refusal(plan, 'c2'), /shared: no copy/);
});
