// The plugin's phases, written against the host's request and response resources (which arrive
// as arguments) and a logging function, so Node can load this module for the unit tests; the
// component's glue (`plugin.js`) hands it the host's log.

import { parseConfig } from './config.js';
import { InvalidJson, redact } from './scan.js';

const REFUSED_HEADERS = [['content-type', 'application/json']];
const encoder = new TextEncoder();
// JSON is UTF-8 (RFC 8259): other bytes make the body invalid, never silently replaced.
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Whether a content-type names JSON: `application/json` or any `+json` type. */
export function isJson(contentType) {
  if (contentType === undefined) return false;
  const semi = contentType.indexOf(';');
  const media = (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  const slash = media.indexOf('/');
  if (slash <= 0) return false;
  const subtype = media.slice(slash + 1);
  return media === 'application/json' || (subtype.endsWith('+json') && subtype.length > 5);
}

/** Whether any content-encoding value is other than identity. */
export function isEncoded(values) {
  return values.some((v) =>
    v.split(',').some((coding) => {
      const c = coding.trim().toLowerCase();
      return c !== '' && c !== 'identity';
    }));
}

function decode(bytes) {
  try {
    return decoder.decode(bytes);
  } catch {
    throw new InvalidJson('not UTF-8');
  }
}

function refusal(message) {
  return {
    tag: 'respond',
    val: {
      status: 502,
      headers: REFUSED_HEADERS.map(([n, v]) => [n, v]),
      body: encoder.encode(JSON.stringify({ error: 'redaction_failed', message })),
    },
  };
}

// A host call that fails: the hooks' error type is a string, the host's is an error code.
function hostCall(what, call) {
  try {
    return call();
  } catch (e) {
    throw `redact: ${what}: ${e?.payload ?? e}`;
  }
}

/** The `handler` export, logging through `log(level, message)`. */
export function createHandler(log) {
  let settings = null;

  return {
    init(config) {
      settings = parseConfig(config);
      return {
        onRequest: settings.stripAcceptEncoding,
        onResponse: true,
        requestBody: false,
        responseBody: true,
      };
    },

    onRequest(req) {
      if (settings === null) throw 'redact: called before init';
      // Upstreams then answer uncompressed, so the response can be read and masked.
      hostCall('removing accept-encoding', () => req.removeHeader('accept-encoding'));
      return { tag: 'continue' };
    },

    onResponse(req, resp) {
      if (settings === null) throw 'redact: called before init';
      if (!isJson(resp.header('content-type'))) return { tag: 'continue' };

      if (isEncoded(resp.headerValues('content-encoding'))) {
        if (settings.onEncoded === 'pass') return { tag: 'continue' };
        log('warn', 'redact: refused a compressed JSON response it cannot read (content-encoding)');
        return refusal('the response could not be checked for protected fields');
      }

      const body = hostCall('reading the response body', () => resp.body());
      // Nothing to protect: HEAD, 204, 304 and empty answers pass as they are.
      if (body.length === 0) return { tag: 'continue' };

      let masked;
      try {
        masked = redact(decode(body), settings.matcher);
      } catch (e) {
        if (!(e instanceof InvalidJson)) throw `redact: ${e}`;
        if (settings.onInvalid === 'pass') {
          log('warn', `redact: passed a JSON response that does not parse, unmasked (${e.message})`);
          return { tag: 'continue' };
        }
        log('warn', `redact: refused a JSON response that does not parse (${e.message})`);
        return refusal('the response could not be checked for protected fields');
      }
      if (masked !== null) {
        hostCall('replacing the response body', () => resp.setBody(encoder.encode(masked)));
      }
      return { tag: 'continue' };
    },
  };
}
