import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatEta,
  formatTime,
  parseFormat,
  renderCsv,
  renderJson,
  renderList,
  renderTable,
  renderYaml,
  upperState,
} from '../../src/cli/format.js';
import { memberHeader, memberRows, renderPlan } from '../../src/cli/commands/cluster.js';
import { instanceRows } from '../../src/cli/commands/instances.js';
import { flattenOperations, operationRows } from '../../src/cli/commands/operations.js';
import { renderEvent } from '../../src/cli/commands/monitor.js';
import { renderInstanceInfo } from '../../src/cli/commands/instances.js';
import { configShowObject } from '../../src/cli/commands/config.js';
import { volumeRows } from '../../src/cli/commands/storage.js';

const lines = (...l: string[]): string => `${l.join('\n')}\n`;

const member = (name: string, url: string, roles: string[], status: string, message: string): Record<string, unknown> => ({
  roles, failure_domain: 'default', description: '', config: {}, groups: ['default'], server_name: name, url,
  database: true, status, message, architecture: 'x86_64',
});

const members = [
  member('m1', 'https://127.0.0.2:8443', ['database-leader', 'database'], 'Online', 'Fully operational'),
  member('m2', 'https://127.0.0.3:8443', ['database'], 'Evacuated', 'Unavailable due to maintenance'),
];

test('tables are drawn exactly as lxc draws them (the cluster list capture)', () => {
  const rows = memberRows(members, []).map((r) => r.slice(0, 8));
  assert.equal(renderTable(memberHeader.slice(0, 8), rows), lines(
    '+------+------------------------+-----------------+--------------+----------------+-------------+-----------+--------------------------------+',
    '| NAME |          URL           |      ROLES      | ARCHITECTURE | FAILURE DOMAIN | DESCRIPTION |   STATE   |            MESSAGE             |',
    '+------+------------------------+-----------------+--------------+----------------+-------------+-----------+--------------------------------+',
    '| m1   | https://127.0.0.2:8443 | database-leader | x86_64       | default        |             | ONLINE    | Fully operational              |',
    '|      |                        | database        |              |                |             |           |                                |',
    '+------+------------------------+-----------------+--------------+----------------+-------------+-----------+--------------------------------+',
    '| m2   | https://127.0.0.3:8443 | database        | x86_64       | default        |             | EVACUATED | Unavailable due to maintenance |',
    '+------+------------------------+-----------------+--------------+----------------+-------------+-----------+--------------------------------+',
  ));
});

test('an empty listing still prints the header', () => {
  assert.equal(renderTable(['NAME', 'STATE'], []), lines('+------+-------+', '| NAME | STATE |', '+------+-------+'));
});

test('cluster list prints states upper-case and counts each member\'s instances', () => {
  const instances = [{ name: 'c1', location: 'm1' }, { name: 'c2', location: 'm1' }, { name: 'c3', location: 'm3' }];
  const rows = memberRows([...members, member('m3', 'https://127.0.0.4:8443', [], 'Evacuating', '')], instances);
  assert.deepEqual(rows.map((r) => [r[0], r[6], r[8]]), [['m1', 'ONLINE', '2'], ['m2', 'EVACUATED', '0'], ['m3', 'EVACUATING', '1']]);
  assert.equal(upperState('Restoring'), 'RESTORING');
});

test('csv has no header and quotes what needs quoting', () => {
  assert.equal(renderCsv([['m1', 'database-leader\ndatabase', 'a,b', 'say "hi"'], ['m2', '', 'x', 'y']]),
    'm1,"database-leader\ndatabase","a,b","say ""hi"""\nm2,,x,y\n');
});

test('json is the API objects on one line, yaml keeps the server\'s field order', () => {
  const listing = { header: ['NAME'], rows: [['m1']], data: [{ server_name: 'm1', status: 'Online' }] };
  assert.equal(renderList('json', listing), '[{"server_name":"m1","status":"Online"}]\n');
  assert.equal(renderList('csv', listing), 'm1\n');
  assert.equal(renderList('yaml', listing), lines('- server_name: m1', '  status: Online'));
  assert.equal(renderJson({ a: 1 }), '{"a":1}\n');
});

test('yaml of a member matches lxc cluster show', () => {
  const m2 = member('m2', 'https://127.0.0.3:8443', ['database'], 'Online', 'Fully operational');
  assert.equal(renderYaml(m2), lines(
    'roles:', '- database', 'failure_domain: default', 'description: ""', 'config: {}', 'groups:', '- default',
    'server_name: m2', 'url: https://127.0.0.3:8443', 'database: true', 'status: Online', 'message: Fully operational',
    'architecture: x86_64',
  ));
});

test('monitor prints events as lxc monitor does: sorted keys, quoted timestamps, a blank line after', () => {
  const raw = {
    type: 'operation', timestamp: '2026-11-25T15:04:08.887405256Z',
    metadata: {
      id: '268a72da-d2ea-47d7-8837-80b376c8f6c6', class: 'task', description: 'Stopping instance',
      created_at: '2026-11-25T15:04:08.880394479Z', updated_at: '2026-11-25T15:04:08.880394479Z', status: 'Running',
      status_code: 103, resources: { instances: ['/1.0/instances/s1'] }, metadata: null, may_cancel: false, err: '', location: 'm2',
    },
    location: 'm2', project: 'default',
  };
  const event = { type: 'operation', timestamp: raw.timestamp, location: 'm2', project: 'default', metadata: raw.metadata, raw };
  assert.equal(renderEvent(event, 'yaml'), lines(
    'location: m2', 'metadata:', '  class: task', '  created_at: "2026-11-25T15:04:08.880394479Z"', '  description: Stopping instance',
    '  err: ""', '  id: 268a72da-d2ea-47d7-8837-80b376c8f6c6', '  location: m2', '  may_cancel: false', '  metadata: null',
    '  resources:', '    instances:', '    - /1.0/instances/s1', '  status: Running', '  status_code: 103',
    '  updated_at: "2026-11-25T15:04:08.880394479Z"', 'project: default', 'timestamp: "2026-11-25T15:04:08.887405256Z"',
    'type: operation', '', '',
  ));
  assert.match(renderEvent(event, 'pretty'), /^INFO {3}\[2026-11-25T15:04:08.887405256Z\] ID: 268a72da.*, Description: Stopping instance location=m2 status=Running\n$/);
  assert.equal(renderEvent(event, 'json'), `${JSON.stringify(raw)}\n`);
});

test('roost list shows the process type as PROCESS and sorts by name', () => {
  const rows = instanceRows([
    { name: 'w1', status: 'Stopped', type: 'container', location: 'm1', snapshots: null },
    {
      name: 'p1', status: 'Running', type: 'process', location: 'm2', snapshots: [{}],
      state: { network: { eth0: { type: 'broadcast', addresses: [
        { family: 'inet', address: '10.0.0.5', scope: 'global' },
        { family: 'inet6', address: 'fe80::1', scope: 'link' },
      ] } } },
    },
  ]);
  assert.deepEqual(rows, [
    ['p1', 'RUNNING', '10.0.0.5 (eth0)', '', 'PROCESS', '1', 'm2'],
    ['w1', 'STOPPED', '', '', 'CONTAINER', '0', 'm1'],
  ]);
});

test('operation list flattens the status groups and prints lxc\'s columns', () => {
  const ops = flattenOperations({
    running: [{ id: 'a', class: 'task', description: 'Evacuating cluster member', status: 'Running', may_cancel: true, created_at: '2026-11-25T14:52:13.4Z', location: 'm2' }],
    failure: [{ id: 'b', class: 'websocket', description: 'Migrating instance', status: 'Failure', may_cancel: false, created_at: '2026-11-25T14:49:00Z', location: 'm3' }],
  });
  assert.deepEqual(operationRows(ops), [
    ['a', 'TASK', 'Evacuating cluster member', 'RUNNING', 'YES', '2026/11/25 14:52 UTC', 'm2'],
    ['b', 'WEBSOCKET', 'Migrating instance', 'FAILURE', 'NO', '2026/11/25 14:49 UTC', 'm3'],
  ]);
});

test('times, ETAs and formats print as the CLI shows them', () => {
  assert.equal(formatTime('2026-11-25T14:49:58.310867597Z'), '2026/11/25 14:49 UTC');
  assert.equal(formatTime('0001-01-01T00:00:00Z'), '');
  assert.equal(formatEta(42), '42s');
  assert.equal(formatEta(125), '2m05s');
  assert.equal(formatEta(3720), '1h02m');
  assert.equal(parseFormat('yaml'), 'yaml');
  assert.throws(() => parseFormat('xml'), { message: 'Invalid format "xml" (use one of: table, json, yaml, csv)' });
});

test('the dry-run plan is a table of moves followed by the refusals', () => {
  const out = renderPlan({
    instances: [
      { name: 'c1', project: 'default', action: 'migrate', target: 'm2', reason: 'auto: every device can move', bytes: 1536 },
      { name: 'c3', project: 'web', action: 'stop', target: '', reason: 'cluster.evacuate=stop', bytes: 0 },
    ],
    refusals: [{ name: 'c5', project: 'default', reason: 'no member has room for limits.memory=64GiB' }, 'c6 is pinned to migrate'],
  });
  assert.equal(out, lines(
    '+----------+---------+--------+---------+-----------------------------+',
    '| INSTANCE | ACTION  | TARGET |  SIZE   |           REASON            |',
    '+----------+---------+--------+---------+-----------------------------+',
    '| c1       | migrate | m2     | 1.50KiB | auto: every device can move |',
    '+----------+---------+--------+---------+-----------------------------+',
    '| web/c3   | stop    |        |         | cluster.evacuate=stop       |',
    '+----------+---------+--------+---------+-----------------------------+',
    '',
    'Refusals:',
    '- c5: no member has room for limits.memory=64GiB',
    '- c6 is pinned to migrate',
  ));
});

test('info shows status, type, location and resources like lxc info', () => {
  const out = renderInstanceInfo(
    { name: 'p1', type: 'process', architecture: 'x86_64', location: 'm2', created_at: '2026-11-25T14:49:58Z', last_used_at: '2026-11-25T14:50:00Z' },
    { status: 'Running', pid: 4242, processes: 3, memory: { usage: 430080, usage_peak: 1122304 } },
  );
  assert.equal(out, lines(
    'Name: p1', 'Status: RUNNING', 'Type: process', 'Architecture: x86_64', 'Location: m2', 'PID: 4242',
    'Created: 2026/11/25 14:49 UTC', 'Last Used: 2026/11/25 14:50 UTC', '', 'Resources:', '  Processes: 3',
    '  Memory usage:', '    Memory (current): 420.00KiB', '    Memory (peak): 1.07MiB',
  ));
});

test('config show prints the writable part of an instance, or the server config', () => {
  const inst = { name: 'c1', architecture: 'x86_64', config: { 'cluster.evacuate': 'stop' }, devices: {}, ephemeral: false, profiles: ['default'], stateful: false, description: '', status: 'Running' };
  assert.equal(renderYaml(configShowObject('instance', inst)), lines(
    'architecture: x86_64', 'config:', '  cluster.evacuate: stop', 'devices: {}', 'ephemeral: false', 'profiles:', '- default',
    'stateful: false', 'description: ""',
  ));
  assert.equal(renderYaml(configShowObject('server', { config: { 'cluster.offline_threshold': '5' }, api_extensions: [] })),
    lines('config:', '  cluster.offline_threshold: "5"'));
});

test('storage volume list shows lxc\'s columns', () => {
  assert.deepEqual(volumeRows([{ type: 'custom', name: 'data', description: '', content_type: 'filesystem', used_by: ['/1.0/instances/c1'], location: 'm1' }]),
    [['custom', 'data', '', 'filesystem', '1', 'm1']]);
});
