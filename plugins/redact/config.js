// The route's config, checked once at init. A refusal is thrown as a config-error record,
// `{ key, message }`, naming the key at fault (`key` undefined when the whole config is).

import { MAX_PATHS, PathError, compile, parsePath } from './matcher.js';

export const DEFAULT_MASK = '***';
/** Longer masks are a mistake, and each copy of one lands in a response. */
const MAX_MASK = 256;

const TOP_KEYS = ['fields', 'mask', 'on_invalid', 'on_encoded', 'strip_accept_encoding'];
const FIELD_KEYS = ['path', 'mask', 'keep_last'];
const POLICIES = ['reject', 'pass'];

function refuse(key, message) {
  throw { key, message };
}

const isTable = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function checkKeys(table, allowed, at) {
  for (const key of Object.keys(table)) {
    if (!allowed.includes(key)) {
      refuse(`${at}${key}`, `unknown key (expected one of: ${allowed.join(', ')})`);
    }
  }
}

function checkMask(value, key) {
  if (typeof value !== 'string') refuse(key, 'must be a string');
  if (value.length > MAX_MASK) refuse(key, `must be at most ${MAX_MASK} characters`);
  return value;
}

function policy(config, key) {
  const value = config[key] ?? 'reject';
  if (!POLICIES.includes(value)) refuse(key, 'must be "reject" or "pass"');
  return value;
}

/**
 * Parses the config JSON text into the settings the handler runs on:
 * `{ matcher, onInvalid, onEncoded, stripAcceptEncoding }`.
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
  checkKeys(config, TOP_KEYS, '');

  const mask = checkMask(config.mask ?? DEFAULT_MASK, 'mask');
  const onInvalid = policy(config, 'on_invalid');
  const onEncoded = policy(config, 'on_encoded');
  const strip = config.strip_accept_encoding ?? true;
  if (typeof strip !== 'boolean') refuse('strip_accept_encoding', 'must be true or false');

  const fields = config.fields;
  if (fields === undefined) refuse('fields', 'is required');
  if (!Array.isArray(fields)) refuse('fields', 'must be a list of paths');
  if (fields.length === 0) refuse('fields', 'must name at least one path');
  if (fields.length > MAX_PATHS) refuse('fields', `must name at most ${MAX_PATHS} paths`);

  const seen = new Set();
  const paths = fields.map((field, i) => {
    const at = `fields[${i}]`;
    let path = field;
    let fieldMask = mask;
    let keepLast = 0;
    if (isTable(field)) {
      checkKeys(field, FIELD_KEYS, `${at}.`);
      if (!('path' in field)) refuse(`${at}.path`, 'is required');
      path = field.path;
      if ('mask' in field) fieldMask = checkMask(field.mask, `${at}.mask`);
      if ('keep_last' in field) {
        keepLast = field.keep_last;
        if (!Number.isInteger(keepLast) || keepLast < 0 || keepLast > 64) {
          refuse(`${at}.keep_last`, 'must be an integer from 0 to 64');
        }
      }
    } else if (typeof field !== 'string') {
      refuse(at, 'must be a path or a table with `path`');
    }
    const pathKey = isTable(field) ? `${at}.path` : at;
    let segments;
    try {
      segments = parsePath(path);
    } catch (e) {
      if (e instanceof PathError) refuse(pathKey, e.message);
      throw e;
    }
    if (seen.has(path)) refuse(pathKey, `\`${path}\` is listed twice`);
    seen.add(path);
    return { segments, rule: { mask: fieldMask, maskJson: JSON.stringify(fieldMask), keepLast } };
  });

  const matcher = compile(paths);
  return { matcher, onInvalid, onEncoded, stripAcceptEncoding: strip };
}
