// Unit tests, run natively with `node --test`: fakes stand in for the host's request and
// response.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { handler } from './app.js';

/** A request or response as the host lends it: headers with lower-case names. */
class FakeMessage {
  constructor(headers = []) {
    this.headers = headers.map(([n, v]) => [n.toLowerCase(), v]);
  }

  header(name) {
    return this.headers.find(([n]) => n === name.toLowerCase())?.[1];
  }

  headerValues(name) {
    return this.headers.filter(([n]) => n === name.toLowerCase()).map(([, v]) => v);
  }

  setHeader(name, value) {
    if (/[\r\n]/.test(value)) {
      const e = new Error('host refused the call');
      e.payload = 'invalid-value';
      throw e;
    }
    this.headers = this.headers.filter(([n]) => n !== name.toLowerCase());
    this.headers.push([name.toLowerCase(), value]);
  }
}

function refusedKey(config) {
  try {
    handler.init(config);
  } catch (e) {
    assert.equal(typeof e.message, 'string');
    return e.key;
  }
  assert.fail(`config accepted: ${config}`);
}

test('sets the header both ways', () => {
  const registration = handler.init('{"header": "X-Hello", "value": "world"}');
  assert.deepEqual(registration, {
    onRequest: true, onResponse: true, requestBody: false, responseBody: false,
  });

  const req = new FakeMessage([['X-Hello', 'from the client']]);
  assert.deepEqual(handler.onRequest(req), { tag: 'continue' });
  assert.deepEqual(req.headerValues('x-hello'), ['world']);

  const resp = new FakeMessage();
  assert.deepEqual(handler.onResponse(req, resp), { tag: 'continue' });
  assert.equal(resp.header('x-hello'), 'world');
});

test('the header name defaults to x-hello', () => {
  handler.init('{"value": "v"}');
  const req = new FakeMessage();
  handler.onRequest(req);
  assert.equal(req.header('x-hello'), 'v');
});

test('refuses bad configs naming the key', () => {
  assert.equal(refusedKey('{}'), 'value');
  assert.equal(refusedKey('{"value": 7}'), 'value');
  assert.equal(refusedKey('{"value": "a\\r\\nb"}'), 'value');
  assert.equal(refusedKey('{"header": "", "value": "v"}'), 'header');
  assert.equal(refusedKey('{"header": "a b", "value": "v"}'), 'header');
  assert.equal(refusedKey('{"header": "Content-Length", "value": "1"}'), 'header');
  assert.equal(refusedKey('{"header": "Proxy-Authorization", "value": "1"}'), 'header');
  assert.equal(refusedKey('{"value": "v", "extra": 1}'), 'extra');
  assert.equal(refusedKey('[1]'), undefined);
  assert.equal(refusedKey('{not json'), undefined);
});

test('a refused host call is a plugin error', () => {
  handler.init('{"value": "v"}');
  const refusing = new FakeMessage();
  refusing.setHeader = () => {
    const e = new Error('host refused the call');
    e.payload = 'not-allowed';
    throw e;
  };
  assert.throws(() => handler.onRequest(refusing), (e) => typeof e === 'string' && e.includes('not-allowed'));
});
