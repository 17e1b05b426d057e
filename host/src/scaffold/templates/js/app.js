// `{{name}}`: sets a configured header on every request before it goes upstream, and on every
// response before it goes back to the client.
//
// The module imports nothing from `wasmgate:plugin/...`, so Node can load it for the unit tests.

const DEFAULT_HEADER = 'x-hello';

// The headers the gateway manages (framing and hop-by-hop), written here from its rules by
// `wasmgate plugin new`: the gateway refuses them from a plugin, so a config naming one is
// refused at load rather than failing every request.
const HOST_MANAGED = new Set([
  {{host_managed_headers}}
]);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;

// A thrown plain value becomes the `err` of the export's result: here, a config-error.
function refuse(key, message) {
  throw { key, message };
}

/** The route's config as { header, value }; throws a config-error naming the key at fault. */
export function parseConfig(text) {
  let config;
  try {
    config = text.trim() ? JSON.parse(text) : {};
  } catch (e) {
    refuse(undefined, `not JSON: ${e.message}`);
  }
  if (config === null) config = {};
  if (typeof config !== 'object' || Array.isArray(config)) refuse(undefined, 'must be a table');
  for (const key of Object.keys(config)) {
    if (key !== 'header' && key !== 'value') {
      refuse(key, 'unknown key (expected `header` or `value`)');
    }
  }
  let header = config.header ?? DEFAULT_HEADER;
  if (typeof header !== 'string' || !TOKEN.test(header)) {
    refuse('header', 'must be an HTTP header name');
  }
  header = header.toLowerCase();
  if (HOST_MANAGED.has(header)) refuse('header', 'is managed by the gateway');
  if (!('value' in config)) refuse('value', 'is required');
  const value = config.value;
  if (typeof value !== 'string') refuse('value', 'must be a string');
  if (CONTROL.test(value)) refuse('value', 'must not hold control characters');
  return { header, value };
}

function setHeader(target, name, value) {
  try {
    target.setHeader(name, value);
  } catch (e) {
    // The hook's error type is a string: turn the host's error code into one.
    throw `setting ${name}: ${e?.payload ?? e}`;
  }
}

let settings;

export const handler = {
  init(config) {
    settings = parseConfig(config);
    return { onRequest: true, onResponse: true, requestBody: false, responseBody: false };
  },

  onRequest(req) {
    setHeader(req, settings.header, settings.value);
    return { tag: 'continue' };
  },

  onResponse(req, resp) {
    setHeader(resp, settings.header, settings.value);
    return { tag: 'continue' };
  },
};
