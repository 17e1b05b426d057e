// The route's config, checked once at init. A refusal is thrown as a config-error record,
// `{ key, message }`, naming the key at fault (`key` undefined when the whole config is).

import { PathError, parsePath } from './extract.js';
import { TemplateError, isToken, parseUrl } from './template.js';

/** The most headers one entry may set: each is also a header rule, of which a plugin has 64. */
export const MAX_HEADERS = 32;
/** The longest `timeout_ms`, as aggregate's: five minutes. */
export const MAX_TIMEOUT_MS = 300_000;

const TOP_KEYS = ['url', 'headers', 'timeout_ms', 'on_error'];
const POLICIES = ['continue', 'deny'];

// Headers the gateway manages itself (framing and hop-by-hop), and `host`, which decides the
// upstream's `Host`: not values a lookup should decide.
const MANAGED = new Set([
  'connection',
  'content-length',
  'host',
  'keep-alive',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function refuse(key, message) {
  throw { key, message };
}

const isTable = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Parses the config JSON text into the settings the handler runs on:
 * `{ url, headers: [{ name, path, keys }], timeoutMs, onError }` (`timeoutMs` null when unset).
 */
export function parseConfig(text) {
  let config;
  try {
    config = JSON.parse(text);
  } catch (e) {
    refuse(undefined, `not JSON: ${e.message}`);
  }
  // A route without `config` hands over null: report what it lacks.
  if (config === null) config = {};
  if (!isTable(config)) refuse(undefined, 'must be a table');
  for (const key of Object.keys(config)) {
    if (!TOP_KEYS.includes(key)) {
      refuse(key, `unknown key (expected one of: ${TOP_KEYS.join(', ')})`);
    }
  }

  if (config.url === undefined) refuse('url', 'is required');
  let url;
  try {
    url = parseUrl(config.url);
  } catch (e) {
    if (e instanceof TemplateError) refuse('url', e.message);
    throw e;
  }

  const table = config.headers;
  if (table === undefined) refuse('headers', 'is required');
  if (!isTable(table)) refuse('headers', 'must be a table of header name = JSON path');
  const entries = Object.entries(table);
  if (entries.length === 0) refuse('headers', 'must name at least one header');
  if (entries.length > MAX_HEADERS) refuse('headers', `must name at most ${MAX_HEADERS} headers`);
  const seen = new Set();
  const headers = entries.map(([given, path]) => {
    const key = `headers.${given}`;
    if (!isToken(given)) refuse(key, 'is not a valid header name');
    const name = given.toLowerCase();
    if (MANAGED.has(name)) refuse(key, `\`${name}\` is not a header a lookup may set`);
    if (seen.has(name)) refuse(key, `\`${name}\` is listed twice (header names ignore case)`);
    seen.add(name);
    // The plugin removes a client's value of every header it sets before its request phase,
    // so the URL would never have this one.
    if (url.headers.includes(name)) {
      refuse(key, `\`${name}\` is also read by \`url\`, which would never see a value for it`);
    }
    if (typeof path !== 'string') {
      refuse(key, 'must be a JSON path (a string, e.g. "address.region")');
    }
    try {
      return { name, path, keys: parsePath(path) };
    } catch (e) {
      if (e instanceof PathError) refuse(key, e.message);
      throw e;
    }
  });

  let timeoutMs = null;
  if (config.timeout_ms !== undefined) {
    timeoutMs = config.timeout_ms;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) {
      refuse('timeout_ms', `must be an integer from 1 to ${MAX_TIMEOUT_MS}`);
    }
  }

  const onError = config.on_error ?? 'continue';
  if (!POLICIES.includes(onError)) refuse('on_error', 'must be "continue" or "deny"');

  return { url, headers, timeoutMs, onError };
}
