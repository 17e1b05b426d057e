// The lookup's URL template: an absolute http(s) URL whose host is written out, with the
// gateway's template variables (`${header.NAME}`, `${var.NAME}`, `${client_ip}`, ...) in its
// path and query. Parsed and checked once, at init; rendered per request by joining its pieces.

/** Longest template, in bytes: the gateway's own limit for a template. */
export const MAX_URL_BYTES = 8 * 1024;
/** Longest pipeline variable name the gateway takes, in bytes. */
const MAX_VAR_BYTES = 16 * 1024;

export class TemplateError extends Error {}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Whether `s` is an HTTP token (RFC 9110 §5.6.2), as a header name is. */
export const isToken = (s) => TOKEN.test(s);

const utf8Length = (s) => new TextEncoder().encode(s).length;

/**
 * Percent-encodes a value as one URL component: all but letters, digits and `-._~`, so
 * `a b/c?d` becomes `a%20b%2Fc%3Fd` and stays one path segment or one query value.
 */
export function encodeComponent(value) {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

// The variables every request has a value for.
const FIXED = {
  client_ip: (req) => req.clientAddr(),
  request_id: (req) => req.id(),
  route: (req) => req.route(),
  method: (req) => req.method(),
  path: (req) => req.path(),
};

/** The variable `${name}` stands for: `{ label, read(req) }`. */
function variable(name) {
  if (Object.hasOwn(FIXED, name)) return { label: name, read: FIXED[name] };
  const dot = name.indexOf('.');
  const kind = dot < 0 ? name : name.slice(0, dot);
  const rest = dot < 0 ? '' : name.slice(dot + 1);
  if (kind === 'header' && isToken(rest)) {
    const header = rest.toLowerCase();
    return { label: `header ${header}`, header, read: (req) => req.header(header) };
  }
  if (kind === 'var' && rest !== '' && utf8Length(rest) <= MAX_VAR_BYTES) {
    return { label: `var ${rest}`, read: (req) => req.getVar(rest) };
  }
  throw new TemplateError(
    `unknown variable \`\${${name}}\` (expected \${header.NAME}, \${var.NAME}, \${client_ip}, ` +
      '${request_id}, ${route}, ${method} or ${path})',
  );
}

/**
 * Parses a URL template into `{ text, parts, headers }`: `parts` are strings (text as it is)
 * and variables, `headers` the request headers it reads (lower case).
 */
export function parseUrl(text) {
  if (typeof text !== 'string' || text === '') throw new TemplateError('must be a URL');
  if (utf8Length(text) > MAX_URL_BYTES) {
    throw new TemplateError(`must be at most ${MAX_URL_BYTES} bytes`);
  }
  const parts = [];
  let rest = text;
  for (let start = rest.indexOf('${'); start >= 0; start = rest.indexOf('${')) {
    if (start > 0) parts.push(rest.slice(0, start));
    const end = rest.indexOf('}', start + 2);
    if (end < 0) throw new TemplateError('unclosed `${`');
    parts.push(variable(rest.slice(start + 2, end)));
    rest = rest.slice(end + 1);
  }
  if (rest !== '') parts.push(rest);

  // The destination is fixed at init: no request can send the lookup anywhere else.
  const head = typeof parts[0] === 'string' ? parts[0] : '';
  const scheme = ['https://', 'http://'].find((s) => head.slice(0, s.length).toLowerCase() === s);
  if (scheme === undefined) throw new TemplateError('must start with http:// or https://');
  const afterScheme = head.slice(scheme.length);
  const end = afterScheme.search(/[/?]/);
  let authority;
  if (end >= 0 && afterScheme[end] === '?') {
    throw new TemplateError('write a path before the query (http://host/?...)');
  } else if (end >= 0) {
    authority = afterScheme.slice(0, end);
  } else if (parts.length === 1) {
    authority = afterScheme;
  } else {
    throw new TemplateError('the host must be written out: end it with `/` before any `${...}`');
  }
  if (authority === '') throw new TemplateError('no host');
  if (authority.includes('@')) throw new TemplateError('no user name or password in the URL');
  for (const part of parts) {
    if (typeof part === 'string' && !/^[\x21-\x22\x24-\x7e]*$/.test(part)) {
      throw new TemplateError(
        "the URL's text must be visible ASCII, percent-encoded, with no fragment",
      );
    }
  }
  // The URL with every variable standing for one letter must parse (a port past 65535, say,
  // would fail every call).
  const sample = parts.map((p) => (typeof p === 'string' ? p : 'x')).join('');
  try {
    new URL(sample);
  } catch {
    throw new TemplateError('is not a valid URL');
  }
  const headers = parts.filter((p) => typeof p !== 'string' && p.header).map((p) => p.header);
  return { text, parts, headers };
}

/**
 * The template's URL for this request, its values percent-encoded, or `null` when a
 * `${header.NAME}` or `${var.NAME}` is unset or empty: the URL without it would ask for
 * something else (`/users/` for `/users/${header.x-user-id}`).
 */
export function render(template, req) {
  let url = '';
  for (const part of template.parts) {
    if (typeof part === 'string') {
      url += part;
      continue;
    }
    const value = part.read(req);
    if (value === undefined || value === null || value === '') return null;
    url += encodeComponent(value);
  }
  return url;
}
