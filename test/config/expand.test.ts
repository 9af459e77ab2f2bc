// Profile expansion as LXD does it: profiles in the order an instance lists them, later over earlier,
// then the instance's own over all of them; devices replaced whole by name.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expandInstance, profileSets } from '../../src/config/expand.js';
import type { ProfileRecord } from '../../src/store/schema.js';

function profile(name: string, config: Record<string, string>, devices: ProfileRecord['devices'] = {}): ProfileRecord {
  return { name, project: 'default', description: '', config, devices };
}

const sets = profileSets([
  profile('default', { 'user.a': 'default' }, { root: { type: 'disk', path: '/', pool: 'default' } }),
  profile('web', { 'user.a': 'web', 'user.b': 'web', 'cluster.evacuate': 'stop' }, { data: { type: 'disk', path: '/srv', pool: 'default', source: 'v1' } }),
  profile('late', { 'user.b': 'late' }, { root: { type: 'disk', path: '/', pool: 'other', size: '1GiB' } }),
]);
const set = sets.get('default') ?? new Map();

test('later profiles win over earlier ones, the instance over all, devices whole by name', () => {
  const expanded = expandInstance(
    { profiles: ['default', 'web', 'late'], config: { 'user.c': 'own', 'user.b': 'own' }, devices: { data: { type: 'disk', path: '/data', pool: 'default', source: 'v2' } } },
    set,
  );
  assert.deepEqual(expanded.config, { 'user.a': 'web', 'user.b': 'own', 'cluster.evacuate': 'stop', 'user.c': 'own' });
  assert.deepEqual(expanded.devices, {
    root: { type: 'disk', path: '/', pool: 'other', size: '1GiB' },
    data: { type: 'disk', path: '/data', pool: 'default', source: 'v2' },
  });
});

test('the order of the list decides, not the order of the store', () => {
  const expanded = expandInstance({ profiles: ['late', 'web'], config: {}, devices: {} }, set);
  assert.equal(expanded.config['user.b'], 'web');
});

test('a project without a stored default profile expands with the initial root disk', () => {
  const fresh = profileSets([], ['default']).get('default') ?? new Map();
  assert.deepEqual(expandInstance({ profiles: ['default'], config: {}, devices: {} }, fresh).devices, {
    root: { type: 'disk', path: '/', pool: 'default' },
  });
});

test('expansion never changes the records it reads', () => {
  const own = { profiles: ['web'], config: { 'user.x': '1' }, devices: {} };
  const expanded = expandInstance(own, set);
  expanded.config['user.x'] = '2';
  (expanded.devices.data as Record<string, string>).path = '/elsewhere';
  assert.equal(own.config['user.x'], '1');
  assert.equal(set.get('web')?.devices.data?.path, '/srv');
});
