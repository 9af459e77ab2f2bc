// Which members each cluster group holds, resolved from the group records: `default` takes every member no
// record lists, so a member that just joined is in it without a write.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { groupNameProblem, groupsOf, resolveMembership } from '../../src/cluster/groups.js';

test('a member no group lists is in default; an assigned one only in its groups', () => {
  const membership = resolveMembership(
    [
      { name: 'g1', description: '', members: ['m02', 'm03'] },
      { name: 'default', description: '', members: ['m02'] },
    ],
    ['m01', 'm02', 'm03', 'm04'],
  );
  assert.deepEqual(Object.fromEntries(membership), { g1: ['m02', 'm03'], default: ['m01', 'm02', 'm04'] });
  assert.deepEqual(groupsOf(membership, 'm02'), ['default', 'g1']);
  assert.deepEqual(groupsOf(membership, 'm03'), ['g1']);
  assert.deepEqual(groupsOf(membership, 'm04'), ['default'], 'a new member is in default');
});

test('members that left the cluster are not listed in any group', () => {
  const membership = resolveMembership([{ name: 'g1', description: '', members: ['gone', 'm01'] }], ['m01']);
  assert.deepEqual(membership.get('g1'), ['m01']);
  assert.deepEqual(membership.get('default'), []);
});

test('group names: letters, digits and hyphens, at most 63', () => {
  for (const ok of ['g1', 'rack-2', 'A', 'x'.repeat(63)]) assert.equal(groupNameProblem(ok), null, ok);
  for (const bad of ['', '-a', 'a/b', 'a b', '@g', 'bad_name!', 'x'.repeat(64)]) assert.match(groupNameProblem(bad) ?? '', /Invalid cluster group name/, bad);
});
