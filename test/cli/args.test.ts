import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  configPath,
  evacuateRequestBody,
  instanceCreateBody,
  instanceStateBody,
  monitorTypes,
  moveRequest,
  parseConfigArgs,
  parseConfigPairs,
  parseLaunchArgs,
  parsePositiveInt,
  volumeAttachDevice,
  volumeCreateBody,
  withTarget,
} from '../../src/cli/requests.js';
import { PlainProgressLog, failureLines, parseEvacuationProgress, summaryLine } from '../../src/cli/evacuation-progress.js';
import { inFlightLines, overallLine } from '../../src/cli/live-progress.js';
import { parseYesNo } from '../../src/cli/prompt.js';
import type { Operation } from '../../src/client/client.js';

test('evacuate flags map onto the state request body, leaving out what was not given', () => {
  assert.deepEqual(evacuateRequestBody({ action: 'evacuate' }), { action: 'evacuate' });
  assert.deepEqual(evacuateRequestBody({ action: 'evacuate', mode: 'stop', dryRun: true, parallel: 8 }), {
    action: 'evacuate', mode: 'stop', dry_run: true, parallel: 8,
  });
  assert.deepEqual(evacuateRequestBody({ action: 'restore', mode: 'skip', dryRun: false }), { action: 'restore', mode: 'skip' });
});

test('--parallel and --members take whole numbers of at least 1', () => {
  assert.equal(parsePositiveInt('4', '--parallel'), 4);
  assert.throws(() => parsePositiveInt('0', '--parallel'), { message: 'Invalid value for --parallel: "0" (expected a whole number of at least 1)' });
  assert.throws(() => parsePositiveInt('two', '--members'), /--members/);
});

test('config arguments are told apart like lxc config: instance form vs server form', () => {
  assert.deepEqual(parseConfigArgs('set', ['t1', 'cluster.evacuate', 'stop']), {
    target: { kind: 'instance', name: 't1' }, key: 'cluster.evacuate', values: { 'cluster.evacuate': 'stop' },
  });
  assert.deepEqual(parseConfigArgs('set', ['cluster.offline_threshold', '5']), {
    target: { kind: 'server' }, key: 'cluster.offline_threshold', values: { 'cluster.offline_threshold': '5' },
  });
  assert.deepEqual(parseConfigArgs('set', ['cluster.offline_threshold=5', 'cluster.evacuation_parallelism=2']).values, {
    'cluster.offline_threshold': '5', 'cluster.evacuation_parallelism': '2',
  });
  assert.deepEqual(parseConfigArgs('set', ['t1', 'limits.cpu=2', 'user.note=a=b']), {
    target: { kind: 'instance', name: 't1' }, key: 'limits.cpu', values: { 'limits.cpu': '2', 'user.note': 'a=b' },
  });
  assert.deepEqual(parseConfigArgs('get', ['cluster.offline_threshold']), {
    target: { kind: 'server' }, key: 'cluster.offline_threshold', values: {},
  });
  assert.deepEqual(parseConfigArgs('get', ['t1', 'cluster.evacuate']).target, { kind: 'instance', name: 't1' });
  assert.deepEqual(parseConfigArgs('unset', ['t1', 'cluster.evacuate']).values, { 'cluster.evacuate': '' });
  assert.deepEqual(parseConfigArgs('unset', ['core.debug']), { target: { kind: 'server' }, key: 'core.debug', values: { 'core.debug': '' } });
  assert.throws(() => parseConfigArgs('set', ['lonely']), /usage: roost config set/);
  assert.throws(() => parseConfigArgs('get', ['a', 'b', 'c']), /usage: roost config get/);
  assert.throws(() => parseConfigArgs('set', ['t1', 'k', 'v', 'extra']), /usage/);
  assert.equal(configPath({ kind: 'server' }), '/1.0');
  assert.equal(configPath({ kind: 'instance', name: 'my c' }), '/1.0/instances/my%20c');
});

test('launch takes an optional image before the name', () => {
  assert.deepEqual(parseLaunchArgs('c1', undefined), { name: 'c1' });
  assert.deepEqual(parseLaunchArgs('busybox', 'c1'), { image: 'busybox', name: 'c1' });
  assert.throws(() => parseLaunchArgs(undefined, undefined), /Instance name is required/);
});

test('init/launch flags build the body lxc sends', () => {
  assert.deepEqual(
    instanceCreateBody({ name: 'c1', type: 'process', config: parseConfigPairs(['limits.cpu=1', 'process.command=sleep 1000']) }),
    {
      name: 'c1', type: 'process', source: { type: 'none' }, config: { 'limits.cpu': '1', 'process.command': 'sleep 1000' },
      devices: {}, profiles: ['default'],
    },
  );
  assert.deepEqual(instanceCreateBody({ name: 'c2', image: 'busybox' }).source, { type: 'image', alias: 'busybox' });
  assert.equal('type' in instanceCreateBody({ name: 'c3', empty: true }), false, 'the server picks the default type');
  assert.throws(() => instanceCreateBody({ name: 'c4', image: 'busybox', empty: true }), /--empty cannot be combined/);
  assert.throws(() => parseConfigPairs(['novalue']), /Bad key=value pair: "novalue"/);
  assert.equal(withTarget('/1.0/instances', 'm2'), '/1.0/instances?target=m2');
  assert.equal(withTarget('/1.0/x?recursion=1', 'm 2'), '/1.0/x?recursion=1&target=m%202');
  assert.equal(withTarget('/1.0/instances', undefined), '/1.0/instances');
});

test('start/stop/restart bodies use lxc\'s timeouts unless --timeout is given', () => {
  assert.deepEqual(instanceStateBody('start'), { action: 'start', timeout: 0, force: false, stateful: false });
  assert.deepEqual(instanceStateBody('stop'), { action: 'stop', timeout: -1, force: false, stateful: false });
  assert.deepEqual(instanceStateBody('restart', { force: true, timeout: 10 }), { action: 'restart', timeout: 10, force: true, stateful: false });
});

test('move --target posts a migration to the instance with ?target=', () => {
  assert.deepEqual(moveRequest('w1', { target: 'm1' }), { path: '/1.0/instances/w1?target=m1', body: { name: 'w1', migration: true } });
  assert.deepEqual(moveRequest('w1', { newName: 'w2' }), { path: '/1.0/instances/w1', body: { name: 'w2' } });
  assert.throws(() => moveRequest('w1', {}), /--target/);
});

test('storage volume create and attach map onto lxc\'s bodies and argument order', () => {
  assert.deepEqual(volumeCreateBody('data'), { name: 'data', type: 'custom', config: {} });
  assert.deepEqual(volumeAttachDevice('default', 'data', ['mnt', '/srv/data']), {
    device: 'mnt', config: { type: 'disk', pool: 'default', source: 'data', path: '/srv/data' },
  });
  assert.deepEqual(volumeAttachDevice('default', 'data', ['/srv/data']).device, 'data');
  assert.throws(() => volumeAttachDevice('default', 'data', []), /usage/);
});

test('monitor --type accepts repeated and comma-separated types', () => {
  assert.deepEqual(monitorTypes(['lifecycle', 'operation,logging']), ['lifecycle', 'operation', 'logging']);
  assert.deepEqual(monitorTypes([]), []);
});

test('prompt answers: yes/y, no/n, empty means the default, anything else asks again', () => {
  assert.equal(parseYesNo('yes', false), true);
  assert.equal(parseYesNo(' Y ', false), true);
  assert.equal(parseYesNo('n', true), false);
  assert.equal(parseYesNo('', false), false);
  assert.equal(parseYesNo('maybe', false), null);
});

function op(status: string, metadata: Record<string, unknown> | null): Operation {
  return {
    id: 'x', class: 'task', description: 'Evacuating cluster member', status, status_code: 103, created_at: '', updated_at: '',
    may_cancel: true, err: '', location: 'm1', metadata, resources: null,
  };
}

function evac(instances: Record<string, { action: string; target?: string; state: string; error?: string }>, extra: Record<string, number> = {}): Record<string, unknown> {
  return {
    evacuation_progress: 'Migrating "c1" in project "default" to "m2"',
    roost_evacuation: { total: 4, done: 0, failed: 0, bytesTotal: 4096, bytesDone: 1024, rate: 512, ...extra, instances },
  };
}

test('without a terminal each instance prints one line when it reaches a final state', () => {
  const log = new PlainProgressLog();
  assert.deepEqual(log.lines(op('Running', evac({
    'default/c1': { action: 'migrate', target: 'm2', state: 'copying' },
    'default/c3': { action: 'stop', state: 'done' },
  }))), ['c3: stopped']);
  assert.deepEqual(log.lines(op('Running', evac({
    'default/c1': { action: 'migrate', target: 'm2', state: 'done' },
    'default/c3': { action: 'stop', state: 'done' },
    'web/c5': { action: 'live-migrate', target: 'm3', state: 'failed', error: 'target m3 went offline' },
  }))), ['c1: migrated to m2', 'web/c5: failed: target m3 went offline']);
  assert.deepEqual(log.lines(op('Success', evac({
    'default/c1': { action: 'migrate', target: 'm2', state: 'done' },
    'default/c7': { action: 'none', state: 'done' },
  }))), ['c7: stays (not running)']);
});

test('without roost_evacuation the plain output falls back to LXD\'s progress text', () => {
  const log = new PlainProgressLog();
  const text = (t: string): Operation => op('Running', { evacuation_progress: t });
  assert.deepEqual(log.lines(text('Stopping "t1" in project "default"')), ['Stopping "t1" in project "default"']);
  assert.deepEqual(log.lines(text('Stopping "t1" in project "default"')), []);
  assert.deepEqual(log.lines(text('Migrating "t2" in project "default" to "m3"')), ['Migrating "t2" in project "default" to "m3"']);
  assert.deepEqual(log.lines(op('Running', null)), []);
});

test('the summary counts moves, stops (restore: starts) and failures', () => {
  const progress = parseEvacuationProgress(evac({
    'default/c1': { action: 'migrate', target: 'm2', state: 'done' },
    'default/c2': { action: 'live-migrate', target: 'm3', state: 'done' },
    'default/c3': { action: 'force-stop', state: 'done' },
    'default/c5': { action: 'migrate', target: 'm3', state: 'failed', error: 'disk full on m3' },
    'default/c7': { action: 'none', state: 'done' },
  }));
  assert.equal(summaryLine('evacuate', 'm1', 'Success', progress), 'Evacuated "m1": 2 moved, 1 stopped, 1 failed');
  assert.equal(summaryLine('evacuate', 'm1', 'Failure', progress), 'Evacuation of "m1" failed: 2 moved, 1 stopped, 1 failed');
  assert.equal(summaryLine('restore', 'm1', 'Cancelled', progress), 'Restore of "m1" cancelled: 2 moved, 0 started, 1 failed');
  assert.equal(summaryLine('restore', 'm1', 'Success', null), 'Restored "m1"');
  assert.deepEqual(failureLines(progress), ['  c5: disk full on m3']);
});

test('the live display shows instances, bytes, rate and ETA, and one line per instance in flight', () => {
  const progress = parseEvacuationProgress(evac({
    'default/c1': { action: 'migrate', target: 'm2', state: 'copying' },
    'default/c2': { action: 'stop', state: 'stopping' },
    'default/c3': { action: 'stop', state: 'done' },
    'default/c4': { action: 'migrate', target: 'm3', state: 'pending' },
  }, { done: 1 }));
  assert.equal(overallLine('Evacuating cluster member', progress, null),
    `Evacuating cluster member [${'█'.repeat(8)}${'░'.repeat(22)}] 1/4 instances | 1.00KiB/4.00KiB | 512B/s | ETA 6s`);
  assert.deepEqual(inFlightLines(progress), ['  c1: copying → m2', '  c2: stopping']);
  const withEta = parseEvacuationProgress(evac({}, { etaSeconds: 75 }));
  assert.match(overallLine('Evacuating cluster member', withEta, null), /\| ETA 1m15s$/, 'the server\'s estimate wins');
  assert.equal(overallLine('Evacuating cluster member', null, 'Stopping "t1" in project "default"'),
    'Evacuating cluster member: Stopping "t1" in project "default"');
});
