// Dotted paths into the lookup's JSON answer (`tier`, `address.region`, `roles.0`), parsed once
// at init, and the header value a path finds.

/** The most keys in one path. */
export const MAX_SEGMENTS = 32;

export class PathError extends Error {}

const INDEX = /^(0|[1-9][0-9]*)$/;

/**
 * Splits a path into its keys: `.` separates them, and `\` escapes the next character (`a\.b`
 * is the key `a.b`, `a\\b` the key `a\b`).
 */
export function parsePath(text) {
  if (typeof text !== 'string' || text === '') throw new PathError('must be a non-empty path');
  const keys = [];
  let key = '';
  let escaped = false;
  const close = () => {
    if (key === '') throw new PathError(`empty key in \`${text}\``);
    keys.push(key);
    key = '';
  };
  for (const c of text) {
    if (escaped) {
      key += c;
      escaped = false;
    } else if (c === '\\') {
      escaped = true;
    } else if (c === '.') {
      close();
    } else {
      key += c;
    }
  }
  if (escaped) throw new PathError(`\`${text}\` ends with a lone \\`);
  close();
  if (keys.length > MAX_SEGMENTS) throw new PathError(`has more than ${MAX_SEGMENTS} keys`);
  return keys;
}

/**
 * The value at `keys` in a parsed JSON document, or `undefined`. A key names an object's own
 * member (`constructor` is a key like any other); on an array it must be an index (`0`, `12`).
 */
export function find(doc, keys) {
  let value = doc;
  for (const key of keys) {
    if (Array.isArray(value)) {
      if (!INDEX.test(key)) return undefined;
      value = value[Number(key)];
    } else if (value !== null && typeof value === 'object' && Object.hasOwn(value, key)) {
      value = value[key];
    } else {
      return undefined;
    }
  }
  return value;
}

/** Whether a string may be a header value: no control characters but tab, and no DEL. */
const isHeaderValue = (s) => !/[\x00-\x08\x0a-\x1f\x7f]/.test(s);

/**
 * The header value for what a path found: `{ value }` for a string (as it is), a number or a
 * boolean; `null` for nothing (missing, or JSON `null`); `{ problem }` for a value that cannot
 * be one.
 */
export function headerValue(found) {
  switch (typeof found) {
    case 'undefined':
      return null;
    case 'string':
      if (!isHeaderValue(found)) return { problem: 'holds control characters' };
      return { value: found };
    case 'boolean':
      return { value: String(found) };
    case 'number':
      // JSON.parse has already rounded an integer past 2^53: better no header than a wrong one.
      if (!Number.isFinite(found) || (Number.isInteger(found) && !Number.isSafeInteger(found))) {
        return { problem: 'is a number too large to carry exactly' };
      }
      return { value: String(found) };
    default:
      if (found === null) return null;
      return { problem: `is ${Array.isArray(found) ? 'an array' : 'an object'}, not a value` };
  }
}
