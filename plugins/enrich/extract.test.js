// Unit tests of JSON paths and the header values they find, run with `node --test`.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { PathError, find, headerValue, parsePath } from './extract.js';

const DOC = JSON.parse(
  '{"tier":"gold","address":{"region":"eu-west","geo":{"lat":1.5}},"roles":["admin","dev"],' +
    '"a.b":{"c":1},"flags":{"beta":true,"gone":null},"list":[{"id":7}],"0":"zero",' +
    '"__proto__":{"x":"own"},"big":12345678901234567890}',
);

test('splits paths on dots, with backslash escapes', () => {
  assert.deepEqual(parsePath('tier'), ['tier']);
  assert.deepEqual(parsePath('address.region'), ['address', 'region']);
  assert.deepEqual(parsePath('a\\.b.c'), ['a.b', 'c']);
  assert.deepEqual(parsePath('a\\\\b'), ['a\\b']);
});

test('refuses empty keys, a lone backslash and over-long paths', () => {
  for (const bad of ['', 'a..b', '.a', 'a.', 'a\\', 'k.'.repeat(32) + 'k', 7]) {
    assert.throws(() => parsePath(bad), PathError, String(bad));
  }
  assert.equal(parsePath('k.'.repeat(31) + 'k').length, 32);
});

test('finds object members and array elements', () => {
  const at = (path) => find(DOC, parsePath(path));
  assert.equal(at('tier'), 'gold');
  assert.equal(at('address.region'), 'eu-west');
  assert.equal(at('address.geo.lat'), 1.5);
  assert.equal(at('roles.1'), 'dev');
  assert.equal(at('list.0.id'), 7);
  assert.equal(at('a\\.b.c'), 1);
  assert.equal(at('0'), 'zero', 'a digit key on an object is a key');
  assert.equal(at('__proto__.x'), 'own', 'a JSON key named __proto__ is a plain key');
});

test('finds nothing where the path leads nowhere', () => {
  const at = (path) => find(DOC, parsePath(path));
  for (const path of ['plan', 'address.city', 'tier.length', 'roles.2', 'roles.01', 'roles.-1',
    'roles.length', 'constructor', 'address.toString', 'flags.gone.x']) {
    assert.equal(at(path), undefined, path);
  }
  assert.equal(find('text', ['length']), undefined);
  assert.equal(find(null, ['a']), undefined);
});

test('strings, numbers and booleans become header values', () => {
  assert.deepEqual(headerValue('gold'), { value: 'gold' });
  assert.deepEqual(headerValue(''), { value: '' });
  assert.deepEqual(headerValue('tab\tok é'), { value: 'tab\tok é' });
  assert.deepEqual(headerValue(42), { value: '42' });
  assert.deepEqual(headerValue(-1.5), { value: '-1.5' });
  assert.deepEqual(headerValue(true), { value: 'true' });
  assert.deepEqual(headerValue(false), { value: 'false' });
});

test('missing values and null give no header', () => {
  assert.equal(headerValue(undefined), null);
  assert.equal(headerValue(null), null);
  assert.equal(headerValue(find(DOC, ['flags', 'gone'])), null);
});

test('objects, arrays, control characters and inexact numbers are refused', () => {
  for (const [value, needle] of [
    [{ a: 1 }, 'an object'],
    [['a'], 'an array'],
    ['a\r\nx-injected: 1', 'control characters'],
    ['nul\x00', 'control characters'],
    ['del\x7f', 'control characters'],
    [find(DOC, ['big']), 'too large'],
    [Infinity, 'too large'],
  ]) {
    const got = headerValue(value);
    assert.ok(got?.problem?.includes(needle), `${JSON.stringify(value)}: ${JSON.stringify(got)}`);
  }
  assert.deepEqual(headerValue(2 ** 53 - 1), { value: '9007199254740991' });
});
