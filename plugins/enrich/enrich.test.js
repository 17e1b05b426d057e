// Unit tests of the phases, run with `node --test`: fakes stand in for the host's request,
// header rules, log and `fetch`.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createHandler } from './enrich.js';

/** A request as the host lends it. */
class FakeRequest {
  constructor(headers = [], vars = {}) {
    this.headers = headers.map(([n, v]) => [n.toLowerCase(), v]);
    this.vars = vars;
  }

  header(name) {
    return this.headers.find(([n]) => n === name)?.[1];
  }

  getVar(name) {
    return this.vars[name];
  }

  setHeader(name, value) {
    if (/[\r\n\0]/.test(value)) {
      const e = new Error('host refused the call');
      e.payload = 'invalid-value';
      throw e;
    }
    this.headers = this.headers.filter(([n]) => n !== name);
    this.headers.push([name, value]);
  }
}

/** A `fetch` answering `status` with `body`, noting each call. */
function answering(status, body) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init });
    return { status, text: async () => body };
  };
  return { fetch, calls };
}

/** A handler initialised with `config` (an object), its fakes, and what it logged and removed. */
function start(config, fetch) {
  const logged = [];
  const removed = [];
  const h = createHandler({
    log: (level, message) => logged.push([level, message]),
    removeRequestHeader: (name) => removed.push(name),
    fetch,
  });
  const registration = h.init(JSON.stringify(config));
  return { h, registration, logged, removed };
}

const CONFIG = {
  url: 'http://users/users/${header.x-user-id}',
  headers: { 'X-User-Tier': 'tier', 'x-user-region': 'address.region', 'x-user-plan': 'plan' },
};
const ANSWER = '{"tier":"gold","address":{"region":"eu-west"},"score":3}';

test('registers the request phase, and removes clients\' values of its headers by rule', () => {
  const { registration, removed } = start(CONFIG, answering(200, ANSWER).fetch);
  assert.deepEqual(registration, {
    onRequest: true, onResponse: false, requestBody: false, responseBody: false,
  });
  assert.deepEqual(removed, ['x-user-tier', 'x-user-region', 'x-user-plan']);
});

test('a refused header rule is a config error naming the header', () => {
  const h = createHandler({
    log: () => {},
    removeRequestHeader: () => {
      const e = new Error('refused');
      e.payload = 'not-allowed';
      throw e;
    },
    fetch: answering(200, ANSWER).fetch,
  });
  assert.throws(() => h.init(JSON.stringify(CONFIG)), (e) =>
    e.key === 'headers.x-user-tier' && e.message.includes('not-allowed'));
});

test('sets each found value as its header, and leaves out what the answer lacks', async () => {
  const { fetch, calls } = answering(200, ANSWER);
  const { h, logged } = start(CONFIG, fetch);
  const req = new FakeRequest([['x-user-id', 'al ice'], ['accept', '*/*']]);
  assert.deepEqual(await h.onRequest(req), { tag: 'continue' });
  assert.deepEqual(req.headers, [
    ['x-user-id', 'al ice'],
    ['accept', '*/*'],
    ['x-user-tier', 'gold'],
    ['x-user-region', 'eu-west'],
  ]);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, 'http://users/users/al%20ice');
  assert.deepEqual(calls[0].init.headers, { accept: 'application/json' });
  assert.equal(calls[0].init.signal, undefined, 'no timeout of its own unless configured');
  assert.deepEqual(logged, []);
});

test('a request without the URL\'s values makes no call', async () => {
  const { fetch, calls } = answering(200, ANSWER);
  const { h } = start({ ...CONFIG, on_error: 'deny' }, fetch);
  const req = new FakeRequest();
  assert.deepEqual(await h.onRequest(req), { tag: 'continue' });
  assert.deepEqual(await h.onRequest(new FakeRequest([['x-user-id', '']])), { tag: 'continue' });
  assert.equal(calls.length, 0);
  assert.deepEqual(req.headers, []);
});

test('values that cannot be headers are left out, with a warning', async () => {
  const body = '{"tier":{"name":"gold"},"address":{"region":"eu\\r\\nx-evil: 1"},' +
    '"plan":12345678901234567890}';
  const { h, logged } = start(CONFIG, answering(200, body).fetch);
  const req = new FakeRequest([['x-user-id', '7']]);
  assert.deepEqual(await h.onRequest(req), { tag: 'continue' });
  assert.deepEqual(req.headers, [['x-user-id', '7']]);
  assert.equal(logged.length, 3, JSON.stringify(logged));
  assert.ok(logged.every(([level]) => level === 'warn'));
  assert.match(logged[0][1],
    /`tier` in the lookup's answer is an object, not a value; x-user-tier left out/);
  assert.match(logged[1][1], /`address.region` .* control characters; x-user-region left out/);
  assert.match(logged[2][1], /`plan` .* too large/);
});

test('a failed lookup goes on without the headers, or answers 502 when denied', async () => {
  const failures = [
    [answering(503, '{"tier":"gold"}').fetch, 'failed: status 503'],
    [answering(404, '').fetch, 'failed: status 404'],
    [answering(200, '<html>').fetch, 'answered a body that is not JSON'],
    [answering(200, '').fetch, 'answered a body that is not JSON'],
    [async () => { throw new TypeError('NetworkError when attempting to fetch resource'); },
      'the call failed (TypeError: NetworkError when attempting to fetch resource; ' +
        "the gateway's log says why)"],
    [async () => ({ status: 200, text: async () => { throw new TypeError('body'); } }),
      'reading its body failed'],
  ];
  for (const [fetch, reason] of failures) {
    const cont = start(CONFIG, fetch);
    const req = new FakeRequest([['x-user-id', '7']]);
    assert.deepEqual(await cont.h.onRequest(req), { tag: 'continue' }, reason);
    assert.deepEqual(req.headers, [['x-user-id', '7']]);
    assert.equal(cont.logged.length, 1);
    assert.equal(cont.logged[0][0], 'warn');
    assert.ok(cont.logged[0][1].includes(reason), cont.logged[0][1]);
    const prefix = 'enrich: lookup http://users/users/${header.x-user-id} failed: ';
    assert.ok(cont.logged[0][1].startsWith(prefix), cont.logged[0][1]);
    assert.ok(cont.logged[0][1].endsWith('the request goes on without its headers'));

    const deny = start({ ...CONFIG, on_error: 'deny' }, fetch);
    const d = await deny.h.onRequest(new FakeRequest([['x-user-id', '7']]));
    assert.equal(d.tag, 'respond');
    assert.equal(d.val.status, 502);
    assert.deepEqual(d.val.headers, [['content-type', 'application/json']]);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(d.val.body)), {
      error: 'enrichment_failed',
      message: 'the request could not be enriched',
    });
    assert.ok(deny.logged[0][1].endsWith('answered 502'), deny.logged[0][1]);
  }
});

test('timeout_ms aborts a lookup that takes longer', async () => {
  let signal;
  // A lookup that answers only when aborted, as fetch does: by rejecting.
  const hanging = (_url, init) => new Promise((_resolve, reject) => {
    signal = init.signal;
    signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
  });
  const { h, logged } = start({ ...CONFIG, timeout_ms: 30 }, hanging);
  const started = Date.now();
  assert.deepEqual(await h.onRequest(new FakeRequest([['x-user-id', '7']])), { tag: 'continue' });
  assert.ok(Date.now() - started < 1000);
  assert.ok(signal.aborted);
  assert.match(logged[0][1], /failed: timed out after 30 ms;/);
});

test('a lookup within timeout_ms leaves no timer behind', async () => {
  let signal;
  const { h } = start({ ...CONFIG, timeout_ms: 20 }, async (_url, init) => {
    signal = init.signal;
    return { status: 200, text: async () => ANSWER };
  });
  const req = new FakeRequest([['x-user-id', '7']]);
  await h.onRequest(req);
  assert.equal(req.header('x-user-tier'), 'gold');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(signal.aborted, false, 'the timer was cleared');
});

test('phases before init fail', async () => {
  const h = createHandler({ log: () => {}, removeRequestHeader: () => {}, fetch: async () => {} });
  await assert.rejects(h.onRequest(new FakeRequest()), (e) => e === 'enrich: called before init');
});
