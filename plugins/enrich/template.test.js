// Unit tests of the URL template, run with `node --test`.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TemplateError, encodeComponent, parseUrl, render } from './template.js';

/** A request as the host lends it, reduced to what templates read. */
function request({ headers = {}, vars = {} } = {}) {
  return {
    header: (name) => headers[name],
    getVar: (name) => vars[name],
    clientAddr: () => '203.0.113.7',
    id: () => 'req-1',
    route: () => 'me',
    method: () => 'GET',
    path: () => '/api/me',
  };
}

function refusal(text) {
  assert.throws(() => parseUrl(text), TemplateError);
  try {
    parseUrl(text);
  } catch (e) {
    return e.message;
  }
}

test('renders header and var values, each percent-encoded as one component', () => {
  const t = parseUrl('http://users/users/${header.X-User-Id}?org=${var.org}&via=${route}');
  const req = request({ headers: { 'x-user-id': 'a b/c?d&e#f' }, vars: { org: 'acme' } });
  assert.equal(render(t, req), 'http://users/users/a%20b%2Fc%3Fd%26e%23f?org=acme&via=me');
});

test('every variable of the gateway templates has its value', () => {
  const t = parseUrl(
    'https://lookup.example.com/${client_ip}/${request_id}/${route}/${method}/${path}',
  );
  assert.equal(
    render(t, request()),
    'https://lookup.example.com/203.0.113.7/req-1/me/GET/%2Fapi%2Fme',
  );
});

test('only letters, digits and -._~ pass unencoded', () => {
  assert.equal(encodeComponent("az09-._~!'()*é %"), "az09-._~%21%27%28%29%2A%C3%A9%20%25");
});

test('a missing or empty header or var skips the lookup', () => {
  const t = parseUrl('http://users/users/${header.x-user-id}/${var.org}');
  assert.equal(render(t, request({ vars: { org: 'acme' } })), null);
  assert.equal(render(t, request({ headers: { 'x-user-id': '' }, vars: { org: 'acme' } })), null);
  assert.equal(render(t, request({ headers: { 'x-user-id': '7' } })), null);
  assert.equal(
    render(t, request({ headers: { 'x-user-id': '7' }, vars: { org: 'a' } })),
    'http://users/users/7/a',
  );
});

test('a URL without variables renders as it is', () => {
  assert.equal(render(parseUrl('HTTP://users'), request()), 'HTTP://users');
  assert.equal(render(parseUrl('http://users:8080/a?b=c'), request()), 'http://users:8080/a?b=c');
});

test('lists the headers a URL reads, in lower case', () => {
  const t = parseUrl('http://u/${header.X-A}/${var.b}/${header.x-c}');
  assert.deepEqual(t.headers, ['x-a', 'x-c']);
});

test('refuses URLs whose destination is not written out, or that are not URLs', () => {
  const cases = [
    ['', 'must be a URL'],
    ['ftp://users/x', 'http://'],
    ['users/x', 'http://'],
    ['${var.base}/x', 'http://'],
    ['http://${var.host}/x', 'host must be written out'],
    ['http://users${header.x}', 'host must be written out'],
    ['http://users?x=${header.x}', 'path before the query'],
    ['http:///x', 'no host'],
    ['http://me:pw@users/x', 'no user name'],
    ['http://users/a b', 'visible ASCII'],
    ['http://users/x#frag', 'no fragment'],
    ['http://users:99999/x', 'not a valid URL'],
    ['http://users/${header.x', 'unclosed'],
    ['http://users/${header.}', 'unknown variable `${header.}`'],
    ['http://users/${header.a b}', 'unknown variable'],
    ['http://users/${var.}', 'unknown variable'],
    ['http://users/${user}', 'unknown variable `${user}`'],
    [`http://users/${'x'.repeat(9000)}`, 'at most 8192 bytes'],
  ];
  for (const [text, needle] of cases) {
    const message = refusal(text);
    assert.ok(message.includes(needle), `${text}: ${message}`);
  }
  assert.throws(() => parseUrl(7), TemplateError);
});
