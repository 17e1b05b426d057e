// Unit tests of the path matcher and the in-place JSON masking, run with `node --test`.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parseConfig } from './config.js';
import { PathError, parsePath } from './matcher.js';
import { InvalidJson, redact } from './scan.js';

/** Masks `text` with the given `fields` (and other config keys); null when nothing matched. */
function mask(fields, text, extra = {}) {
  const { matcher } = parseConfig(JSON.stringify({ fields, ...extra }));
  return redact(text, matcher);
}

const parsed = (fields, value) => JSON.parse(mask(fields, JSON.stringify(value)));

test('paths split on dots, with wildcards and escapes', () => {
  assert.deepEqual(parsePath('a.b'), [{ key: 'a' }, { key: 'b' }]);
  assert.deepEqual(parsePath('*.ssn'), [{ any: true }, { key: 'ssn' }]);
  assert.deepEqual(parsePath('**.x'), [{ deep: true }, { key: 'x' }]);
  assert.deepEqual(parsePath('a\\.b.\\*'), [{ key: 'a.b' }, { key: '*' }]);
  assert.deepEqual(parsePath('a*b'), [{ key: 'a*b' }]);
  assert.deepEqual(parsePath('__proto__.x'), [{ key: '__proto__' }, { key: 'x' }]);
  for (const bad of ['', 'a..b', '.a', 'a.', 'a\\', '***.a', 'a.**', '**', '**.**.a']) {
    assert.throws(() => parsePath(bad), PathError, bad);
  }
});

test('masks exact paths and leaves everything else byte for byte', () => {
  const text = '{"email":"a@b.c" , "big": 12345678901234567890, "f": 1.50e+3,\n "card":{"number":"4111","cvc":123}}';
  assert.equal(
    mask(['email', 'card.cvc'], text),
    '{"email":"***" , "big": 12345678901234567890, "f": 1.50e+3,\n "card":{"number":"4111","cvc":"***"}}',
  );
});

test('nothing matched gives null, so the body is left alone', () => {
  assert.equal(mask(['email'], '{"name":"x","nested":{"email2":1}}'), null);
  assert.equal(mask(['a.email'], '{"email":"x"}'), null);
  for (const scalar of ['"email"', '42', 'true', 'null', ' [] ', '{}']) {
    assert.equal(mask(['email'], scalar), null, scalar);
  }
});

test('a star matches any one key, a double star any depth', () => {
  const v = { a: { ssn: 1, x: { ssn: 2 } }, b: { ssn: '3' }, ssn: 4 };
  assert.deepEqual(parsed(['*.ssn'], v), { a: { ssn: '***', x: { ssn: 2 } }, b: { ssn: '***' }, ssn: 4 });
  assert.deepEqual(parsed(['**.ssn'], v), {
    a: { ssn: '***', x: { ssn: '***' } }, b: { ssn: '***' }, ssn: '***',
  });
  assert.deepEqual(parsed(['a.**.ssn'], v), { a: { ssn: '***', x: { ssn: '***' } }, b: { ssn: '3' }, ssn: 4 });
  assert.deepEqual(parsed(['*'], { a: 1, b: [2] }), { a: '***', b: '***' });
});

test('arrays are transparent: a path applies to every element', () => {
  assert.deepEqual(
    parsed(['users.email'], { users: [{ email: 'a', id: 1 }, { email: 'b' }, 'x', [{ email: 'c' }]] }),
    { users: [{ email: '***', id: 1 }, { email: '***' }, 'x', [{ email: '***' }]] },
  );
  // A top-level array too.
  assert.deepEqual(parsed(['email'], [{ email: 'a' }, { email: 'b' }]), [{ email: '***' }, { email: '***' }]);
});

test('non-string values are replaced whole by the mask', () => {
  assert.deepEqual(
    parsed(['*'], { n: 1, t: true, z: null, o: { email: 'x' }, a: [1, 2], s: 'str' }),
    { n: '***', t: '***', z: '***', o: '***', a: '***', s: '***' },
  );
});

test('keep_last keeps the tail of strings only, and never a whole value', () => {
  const fields = [{ path: 'card', keep_last: 4 }];
  assert.deepEqual(parsed(fields, { card: '4111111111111111' }), { card: '***1111' });
  assert.deepEqual(parsed(fields, { card: '1111' }), { card: '***' });
  assert.deepEqual(parsed(fields, { card: 4111111111111111 }), { card: '***' });
  // Characters are code points, not UTF-16 units, and escapes count as what they spell.
  assert.deepEqual(parsed(fields, { card: 'ab😀😀😀😀' }), { card: '***😀😀😀😀' });
  assert.equal(mask(fields, '{"card":"12\\u00e9456"}'), '{"card":"***é456"}');
  // A per-field mask.
  assert.deepEqual(parsed([{ path: 'card', mask: '[x]', keep_last: 2 }], { card: 'abcd' }), { card: '[x]cd' });
});

test('the mask is written as a JSON string', () => {
  assert.equal(mask(['a'], '{"a":1}', { mask: 'quote " and \\ back\n' }), '{"a":"quote \\" and \\\\ back\\n"}');
  assert.equal(mask(['a'], '{"a":1}', { mask: '' }), '{"a":""}');
});

test('the first listed path wins where several end', () => {
  const fields = [{ path: 'a.b', mask: 'first' }, { path: '*.b', mask: 'second' }, { path: 'c', mask: 'c' }];
  assert.deepEqual(parsed(fields, { a: { b: 1 }, x: { b: 1 } }), { a: { b: 'first' }, x: { b: 'second' } });
  // A masked value hides what is under it: the deeper path has nothing left to do.
  assert.deepEqual(parsed(['a', 'a.b'], { a: { b: 1 } }), { a: '***' });
});

test('hostile keys are plain keys', () => {
  const text = '{"__proto__":{"email":"x"},"constructor":{"prototype":"y"},"toString":"z","hasOwnProperty":1}';
  assert.equal(
    mask(['__proto__.email', 'constructor.prototype', 'toString', 'hasOwnProperty'], text),
    '{"__proto__":{"email":"***"},"constructor":{"prototype":"***"},"toString":"***","hasOwnProperty":"***"}',
  );
  // Unlisted, they are left alone.
  assert.equal(mask(['email'], text), null);
});

test('escaped keys match what they spell', () => {
  assert.equal(mask(['email'], '{"em\\u0061il":"x"}'), '{"em\\u0061il":"***"}');
  assert.equal(mask(['a.b'], '{"a\\u002eb":1,"a":{"b":2}}'), '{"a\\u002eb":1,"a":{"b":"***"}}');
  assert.equal(mask(['a\\.b'], '{"a\\u002eb":1,"a":{"b":2}}'), '{"a\\u002eb":"***","a":{"b":2}}');
});

test('every duplicate of a key is masked', () => {
  assert.equal(mask(['email'], '{"email":"a","email":"b","x":{"email":"c"}}'), '{"email":"***","email":"***","x":{"email":"c"}}');
});

test('deep nesting costs no call stack', () => {
  const depth = 200000;
  const text = `${'{"a":['.repeat(depth)}{"email":"x"}${']}'.repeat(depth)}`;
  const out = mask(['**.email'], text);
  assert.equal(out.length, text.length + 2);
  assert.ok(out.includes('{"email":"***"}'));
  assert.equal(mask(['email'], `${'['.repeat(depth)}${']'.repeat(depth)}`), null);
});

test('huge arrays', () => {
  const n = 100000;
  const text = JSON.stringify({ users: Array.from({ length: n }, (_, i) => ({ id: i, email: `u${i}@x` })) });
  const out = JSON.parse(mask(['users.email'], text));
  assert.equal(out.users.length, n);
  assert.ok(out.users.every((u, i) => u.email === '***' && u.id === i));
});

test('whatever is not one strict JSON value is refused', () => {
  const bad = [
    '', ' ', '{', '}', '[1,]', '{"a":1,}', '{"a" 1}', '{a:1}', "{'a':1}", '[1 2]', '01', '1.', '.5', '+1',
    '-', '1e', 'NaN', 'Infinity', 'tru', 'nul', 'True', '"abc', '"a\\x"', '"\\u12g4"', '"tab\there"',
    '{"a":1}{"b":2}', '{"a":1} x', '[1]]', '"\u0000"', '{"a":{"b":1}', '[[[', '{"email":"x"',
    '\ufeff{}',
  ];
  for (const text of bad) {
    assert.throws(() => mask(['email'], text), InvalidJson, JSON.stringify(text));
  }
});

test('whitespace and every value kind parse', () => {
  const text = ' \t\r\n{ "a" : [ -0.5e-3 , 0 , 1E+2 , true , false , null , "s\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041" , { } , [ ] ] , "email" : "x" } \n';
  assert.equal(mask(['email'], text), text.replace('"email" : "x"', '"email" : "***"'));
});

test('a named key and a star at the same place both apply', () => {
  const fields = ['a.b', '*.c', '**.d.e'];
  assert.deepEqual(
    parsed(fields, { a: { b: 1, c: 2, x: 3 }, z: { b: 1, c: 2 }, d: { e: 1 }, q: [{ r: { d: { e: 2, d: { e: 3 } } } }] }),
    { a: { b: '***', c: '***', x: 3 }, z: { b: 1, c: '***' }, d: { e: '***' }, q: [{ r: { d: { e: '***', d: { e: '***' } } } }] },
  );
  // `**` matches zero keys too, and keeps matching past a partial match.
  assert.deepEqual(parsed(['x.**.d.e'], { x: { d: { d: { e: 1 } } } }), { x: { d: { d: { e: '***' } } } });
  assert.deepEqual(parsed(['x.**.d.e'], { d: { e: 1 }, x: { d: { e: 1 } } }), { d: { e: 1 }, x: { d: { e: '***' } } });
});
