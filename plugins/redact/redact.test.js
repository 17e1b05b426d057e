// Unit tests of the config and the phases, run with `node --test`: fakes stand in for the host's
// request and response.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createHandler, isEncoded, isJson } from './redact.js';

/** A request or response as the host lends it. */
class FakeMessage {
  constructor(headers = [], body = new Uint8Array()) {
    this.headers = headers.map(([n, v]) => [n.toLowerCase(), v]);
    this.bodyBytes = typeof body === 'string' ? new TextEncoder().encode(body) : body;
    this.bodyWrites = 0;
  }

  header(name) {
    return this.headers.find(([n]) => n === name)?.[1];
  }

  headerValues(name) {
    return this.headers.filter(([n]) => n === name).map(([, v]) => v);
  }

  removeHeader(name) {
    this.headers = this.headers.filter(([n]) => n !== name);
  }

  body() {
    return this.bodyBytes;
  }

  setBody(bytes) {
    this.bodyWrites++;
    this.bodyBytes = bytes;
  }

  text() {
    return new TextDecoder().decode(this.bodyBytes);
  }
}

function hostError(code) {
  const e = new Error('host refused the call');
  e.payload = code;
  return e;
}

/** A handler initialised with `config` (an object), and the lines it logged. */
function start(config) {
  const logged = [];
  const h = createHandler((level, message) => logged.push([level, message]));
  const registration = h.init(JSON.stringify(config));
  return { h, registration, logged };
}

function refused(configText) {
  const h = createHandler(() => {});
  try {
    h.init(configText);
  } catch (e) {
    assert.equal(typeof e.message, 'string');
    assert.ok(e.message.length > 0);
    return e.key;
  }
  assert.fail(`config accepted: ${configText}`);
}

const JSON_TYPE = [['content-type', 'application/json']];

test('registers the response body, and the request phase only to strip accept-encoding', () => {
  assert.deepEqual(start({ fields: ['a'] }).registration, {
    onRequest: true, onResponse: true, requestBody: false, responseBody: true,
  });
  assert.deepEqual(start({ fields: ['a'], strip_accept_encoding: false }).registration, {
    onRequest: false, onResponse: true, requestBody: false, responseBody: true,
  });
});

test('the request phase removes accept-encoding', () => {
  const { h } = start({ fields: ['a'] });
  const req = new FakeMessage([['accept-encoding', 'gzip, br'], ['accept', '*/*']]);
  assert.deepEqual(h.onRequest(req), { tag: 'continue' });
  assert.deepEqual(req.headers, [['accept', '*/*']]);
});

test('masks JSON responses, and leaves unmatched ones unwritten', () => {
  const { h } = start({ fields: ['email', 'card.number'] });
  const resp = new FakeMessage(JSON_TYPE, '{"email":"a@b.c","card":{"number":"4111"},"id":7}');
  assert.deepEqual(h.onResponse(new FakeMessage(), resp), { tag: 'continue' });
  assert.equal(resp.text(), '{"email":"***","card":{"number":"***"},"id":7}');

  const plain = new FakeMessage(JSON_TYPE, '{"id":7}');
  h.onResponse(new FakeMessage(), plain);
  assert.equal(plain.bodyWrites, 0);
});

test('only JSON media types are read', () => {
  for (const t of ['application/json', 'Application/JSON; charset=utf-8', 'application/problem+json',
    'application/vnd.api+json ;x=y']) {
    assert.ok(isJson(t), t);
  }
  for (const t of [undefined, '', 'text/plain', 'application/jsonx', 'application/json-seq', 'text/html; x=application/json',
    'application/+json', '+json', 'json']) {
    assert.ok(!isJson(t), t);
  }
  const { h } = start({ fields: ['email'] });
  const resp = new FakeMessage([['content-type', 'text/plain']], '{"email":"x"}');
  resp.body = () => assert.fail('a non-JSON body is not read');
  assert.deepEqual(h.onResponse(new FakeMessage(), resp), { tag: 'continue' });
  assert.equal(resp.bodyWrites, 0);
});

test('a byte order mark is accepted', () => {
  const { h } = start({ fields: ['email'] });
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode('{"email":"x"}')]);
  const resp = new FakeMessage(JSON_TYPE, bom);
  assert.deepEqual(h.onResponse(new FakeMessage(), resp), { tag: 'continue' });
  assert.equal(resp.text(), '{"email":"***"}');
  assert.equal(resp.bodyBytes[0], 0x7b);
});

test('an empty JSON body passes', () => {
  const { h } = start({ fields: ['email'] });
  const resp = new FakeMessage(JSON_TYPE, '');
  assert.deepEqual(h.onResponse(new FakeMessage(), resp), { tag: 'continue' });
  assert.equal(resp.bodyWrites, 0);
});

test('a JSON response that does not parse is refused, or passed when configured', () => {
  const bodies = ['{"email":"x"', 'not json', new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])];
  for (const body of bodies) {
    const { h, logged } = start({ fields: ['email'] });
    const d = h.onResponse(new FakeMessage(), new FakeMessage(JSON_TYPE, body));
    assert.equal(d.tag, 'respond');
    assert.equal(d.val.status, 502);
    assert.deepEqual(d.val.headers, [['content-type', 'application/json']]);
    assert.equal(JSON.parse(new TextDecoder().decode(d.val.body)).error, 'redaction_failed');
    assert.equal(logged.length, 1);
    assert.equal(logged[0][0], 'warn');

    const pass = start({ fields: ['email'], on_invalid: 'pass' });
    const resp = new FakeMessage(JSON_TYPE, body);
    assert.deepEqual(pass.h.onResponse(new FakeMessage(), resp), { tag: 'continue' });
    assert.equal(resp.bodyWrites, 0);
    assert.match(pass.logged[0][1], /unmasked/);
  }
  // The log says where it broke, never what the body held.
  const { h, logged } = start({ fields: ['email'] });
  h.onResponse(new FakeMessage(), new FakeMessage(JSON_TYPE, '{"email":"secret" x'));
  assert.doesNotMatch(logged[0][1], /secret/);
  h.onResponse(new FakeMessage(), new FakeMessage(JSON_TYPE, new Uint8Array([0xc3, 0x28])));
  assert.match(logged[1][1], /not UTF-8/);
});

test('a compressed JSON response is refused, or passed when configured', () => {
  assert.ok(isEncoded(['gzip']));
  assert.ok(isEncoded(['identity', 'br']));
  assert.ok(isEncoded(['identity, gzip']));
  assert.ok(!isEncoded([]));
  assert.ok(!isEncoded(['identity', ' Identity ']));

  const { h } = start({ fields: ['email'] });
  const resp = new FakeMessage([...JSON_TYPE, ['content-encoding', 'gzip']], new Uint8Array([0x1f, 0x8b, 8]));
  resp.body = () => assert.fail('a compressed body is not read');
  assert.equal(h.onResponse(new FakeMessage(), resp).val.status, 502);

  const pass = start({ fields: ['email'], on_encoded: 'pass' });
  assert.deepEqual(pass.h.onResponse(new FakeMessage(), resp), { tag: 'continue' });

  // Identity is no encoding: the body is read and masked.
  const id = new FakeMessage([...JSON_TYPE, ['content-encoding', 'identity']], '{"email":"x"}');
  h.onResponse(new FakeMessage(), id);
  assert.equal(id.text(), '{"email":"***"}');
});

test('a refused host call is a plugin error', () => {
  const { h } = start({ fields: ['email'] });
  const resp = new FakeMessage(JSON_TYPE, '{"email":"x"}');
  resp.setBody = () => {
    throw hostError('body-too-large');
  };
  assert.throws(() => h.onResponse(new FakeMessage(), resp), (e) => typeof e === 'string' && e.includes('body-too-large'));
  resp.body = () => {
    throw hostError('body-not-declared');
  };
  assert.throws(() => h.onResponse(new FakeMessage(), resp), (e) => typeof e === 'string' && e.includes('body-not-declared'));
});

test('phases before init fail rather than pass unmasked', () => {
  const h = createHandler(() => {});
  assert.throws(() => h.onResponse(new FakeMessage(), new FakeMessage(JSON_TYPE, '{}')), /before init/);
});

test('refuses bad configs naming the key', () => {
  const cases = [
    ['{}', 'fields'],
    ['null', 'fields'],
    ['{"fields": "email"}', 'fields'],
    ['{"fields": []}', 'fields'],
    [JSON.stringify({ fields: Array.from({ length: 257 }, (_, i) => `f${i}`) }), 'fields'],
    ['{"fields": [1]}', 'fields[0]'],
    ['{"fields": ["a", ""]}', 'fields[1]'],
    ['{"fields": ["a..b"]}', 'fields[0]'],
    ['{"fields": ["a.**"]}', 'fields[0]'],
    [JSON.stringify({ fields: [Array(33).fill('a').join('.')] }), 'fields[0]'],
    ['{"fields": ["a", "a"]}', 'fields[1]'],
    ['{"fields": [{"keep_last": 4}]}', 'fields[0].path'],
    ['{"fields": [{"path": 5}]}', 'fields[0].path'],
    ['{"fields": ["a", {"path": "b", "keep_last": -1}]}', 'fields[1].keep_last'],
    ['{"fields": [{"path": "b", "keep_last": 1.5}]}', 'fields[0].keep_last'],
    ['{"fields": [{"path": "b", "keep_last": "4"}]}', 'fields[0].keep_last'],
    ['{"fields": [{"path": "b", "mask": 1}]}', 'fields[0].mask'],
    ['{"fields": [{"path": "b", "keeplast": 4}]}', 'fields[0].keeplast'],
    ['{"fields": ["a"], "mask": 3}', 'mask'],
    [JSON.stringify({ fields: ['a'], mask: 'x'.repeat(257) }), 'mask'],
    ['{"fields": ["a"], "on_invalid": "allow"}', 'on_invalid'],
    ['{"fields": ["a"], "on_encoded": true}', 'on_encoded'],
    ['{"fields": ["a"], "strip_accept_encoding": "yes"}', 'strip_accept_encoding'],
    ['{"fields": ["a"], "feilds": ["b"]}', 'feilds'],
    ['{"fields": ["a"], "__proto__": 1}', '__proto__'],
    ['[1]', undefined],
    ['{not json', undefined],
  ];
  for (const [config, key] of cases) {
    assert.equal(refused(config), key, config);
  }
});

test('a config of many double-star paths builds quickly', () => {
  const fields = [
    ...Array.from({ length: 200 }, (_, i) => `**.k${i}.**.v${i}`),
    ...Array.from({ length: 56 }, (_, i) => `**.s${i}`),
  ];
  const started = Date.now();
  const { h } = start({ fields });
  assert.ok(Date.now() - started < 1000);
  const resp = new FakeMessage(JSON_TYPE, '{"a":{"k7":{"x":{"y":{"v7":1,"v8":2}}}},"s3":[{"s55":1}]}');
  h.onResponse(new FakeMessage(), resp);
  assert.equal(resp.text(), '{"a":{"k7":{"x":{"y":{"v7":"***","v8":2}}}},"s3":"***"}');
});
