// Unit tests of the config, run with `node --test`.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parseConfig } from './config.js';

const URL = 'http://users/users/${header.x-user-id}';
const HEADERS = { 'x-user-tier': 'tier' };

/** The key and message a config is refused with. */
function refused(config) {
  const text = typeof config === 'string' ? config : JSON.stringify(config);
  try {
    parseConfig(text);
  } catch (e) {
    assert.equal(typeof e.message, 'string');
    assert.ok(e.message.length > 0);
    return [e.key, e.message];
  }
  assert.fail(`config accepted: ${text}`);
}

test('the example config', () => {
  const s = parseConfig(JSON.stringify({
    url: URL,
    headers: { 'X-User-Tier': 'tier', 'x-user-region': 'address.region' },
    timeout_ms: 300,
    on_error: 'deny',
  }));
  assert.equal(s.url.text, URL);
  assert.deepEqual(s.url.headers, ['x-user-id']);
  assert.deepEqual(s.headers, [
    { name: 'x-user-tier', path: 'tier', keys: ['tier'] },
    { name: 'x-user-region', path: 'address.region', keys: ['address', 'region'] },
  ]);
  assert.equal(s.timeoutMs, 300);
  assert.equal(s.onError, 'deny');
});

test('defaults: no timeout of its own, on_error continue', () => {
  const s = parseConfig(JSON.stringify({ url: URL, headers: HEADERS }));
  assert.equal(s.timeoutMs, null);
  assert.equal(s.onError, 'continue');
});

test('refuses bad configs, naming the key', () => {
  const cases = [
    ['[1]', undefined, 'must be a table'],
    ['not json', undefined, 'not JSON'],
    ['null', 'url', 'is required'],
    [{ headers: HEADERS }, 'url', 'is required'],
    [{ url: URL, headers: HEADERS, cache: true }, 'cache', 'unknown key'],
    [{ url: 7, headers: HEADERS }, 'url', 'must be a URL'],
    [{ url: 'http://${var.host}/x', headers: HEADERS }, 'url', 'host must be written out'],
    [{ url: 'users/${header.x}', headers: HEADERS }, 'url', 'http://'],
    [{ url: URL }, 'headers', 'is required'],
    [{ url: URL, headers: ['x-a'] }, 'headers', 'must be a table'],
    [{ url: URL, headers: {} }, 'headers', 'at least one'],
    [{ url: URL, headers: { 'x a': 'a' } }, 'headers.x a', 'not a valid header name'],
    [{ url: URL, headers: { Host: 'a' } }, 'headers.Host', 'not a header a lookup may set'],
    [{ url: URL, headers: { 'content-length': 'a' } }, 'headers.content-length', 'not a header'],
    [{ url: URL, headers: { 'x-a': 'a', 'X-A': 'b' } }, 'headers.X-A', 'listed twice'],
    [{ url: URL, headers: { 'X-User-Id': 'id' } }, 'headers.X-User-Id', 'also read by `url`'],
    [{ url: URL, headers: { 'x-a': 7 } }, 'headers.x-a', 'must be a JSON path'],
    [{ url: URL, headers: { 'x-a': 'a..b' } }, 'headers.x-a', 'empty key'],
    [{ url: URL, headers: HEADERS, timeout_ms: 0 }, 'timeout_ms', 'from 1 to 300000'],
    [{ url: URL, headers: HEADERS, timeout_ms: 1.5 }, 'timeout_ms', 'integer'],
    [{ url: URL, headers: HEADERS, timeout_ms: '300' }, 'timeout_ms', 'integer'],
    [{ url: URL, headers: HEADERS, timeout_ms: 300001 }, 'timeout_ms', 'from 1'],
    [{ url: URL, headers: HEADERS, on_error: 'skip' }, 'on_error', '"continue" or "deny"'],
  ];
  for (const [config, key, needle] of cases) {
    const [gotKey, message] = refused(config);
    assert.equal(gotKey, key, `${JSON.stringify(config)}: ${message}`);
    assert.ok(message.includes(needle), `${JSON.stringify(config)}: ${message}`);
  }
});

test('at most 32 headers', () => {
  const headers = (n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`x-h${i}`, 'a']));
  assert.equal(parseConfig(JSON.stringify({ url: URL, headers: headers(32) })).headers.length, 32);
  assert.deepEqual(refused({ url: URL, headers: headers(33) })[0], 'headers');
});
