import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatBytes, formatDuration, parseBytes, parseSeconds } from '../src/util/units.js';
import { checkConfig, configValue } from '../src/config/keys.js';

test('byte sizes parse as LXD users write them', () => {
  assert.equal(parseBytes('512MiB'), 512 * 1024 * 1024);
  assert.equal(parseBytes('2GB'), 2e9);
  assert.equal(parseBytes('1048576'), 1048576);
  assert.equal(parseBytes('lots'), null);
  assert.equal(formatBytes(1536), '1.50KiB');
});

test('durations parse and print like Go', () => {
  assert.equal(parseSeconds('2.5'), 2.5);
  assert.equal(parseSeconds('2m'), 120);
  assert.equal(parseSeconds('soon'), null);
  assert.equal(formatDuration(20500), '20.5s');
});

test('config validation names the offending key', () => {
  assert.equal(checkConfig('instance', { 'cluster.evacuate': 'stop', 'user.x': 'y' }), null);
  assert.match(checkConfig('instance', { 'cluster.evacuate': 'sometimes' }) ?? '', /cluster\.evacuate/);
  assert.match(checkConfig('instance', { 'nonsense.key': '1' }) ?? '', /Unknown configuration key: nonsense\.key/);
  assert.match(checkConfig('member', { 'scheduler.instance': 'never' }) ?? '', /scheduler\.instance/);
  assert.equal(configValue('server', {}, 'cluster.offline_threshold'), '20');
});
