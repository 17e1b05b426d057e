// The plugin's phases, written against the host's request resource (which arrives as an
// argument) and the host functions handed to `createHandler`, so Node can load this module for
// the unit tests; the component's glue (`plugin.js`) hands it the host's.

import { parseConfig } from './config.js';
import { find, headerValue } from './extract.js';
import { render } from './template.js';

const CONTINUE = { tag: 'continue' };
const encoder = new TextEncoder();
const DENIED_BODY = JSON.stringify({
  error: 'enrichment_failed',
  message: 'the request could not be enriched',
});

/** Why a lookup gave no answer to read. */
export class LookupFailed extends Error {}

function denial() {
  return {
    tag: 'respond',
    val: {
      status: 502,
      headers: [['content-type', 'application/json']],
      body: encoder.encode(DENIED_BODY),
    },
  };
}

/**
 * Calls the lookup and parses its answer. `fetch` rejects every failed call alike (a refused
 * destination, a refused connection and the gateway's timeout all look the same from here), so
 * only this plugin's own timeout can be told apart; the gateway's log names the others.
 */
async function lookup(fetch, url, timeoutMs) {
  const init = { headers: { accept: 'application/json' } };
  let timer = null;
  let timedOut = false;
  if (timeoutMs !== null) {
    const controller = new AbortController();
    init.signal = controller.signal;
    timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
  }
  const failure = (what, e) =>
    new LookupFailed(
      timedOut ? `timed out after ${timeoutMs} ms` : `${what} (${e}; the gateway's log says why)`,
    );
  try {
    let resp;
    try {
      resp = await fetch(url, init);
    } catch (e) {
      throw failure('the call failed', e);
    }
    if (resp.status < 200 || resp.status > 299) throw new LookupFailed(`status ${resp.status}`);
    let text;
    try {
      text = await resp.text();
    } catch (e) {
      throw failure('reading its body failed', e);
    }
    try {
      return JSON.parse(text);
    } catch {
      throw new LookupFailed('answered a body that is not JSON');
    }
  } finally {
    // The lookup is over: its timer must not fire into a later request on this instance.
    if (timer !== null) clearTimeout(timer);
  }
}

/**
 * The `handler` export, with the host's functions: `log(level, message)`,
 * `removeRequestHeader(name)` (a request header rule, at init) and `fetch(url, init)`.
 */
export function createHandler(host) {
  let settings = null;

  function failed(reason) {
    const deny = settings.onError === 'deny';
    host.log(
      'warn',
      `enrich: lookup ${settings.url.text} failed: ${reason}; ` +
        (deny ? 'answered 502' : 'the request goes on without its headers'),
    );
    return deny ? denial() : CONTINUE;
  }

  return {
    init(config) {
      const parsed = parseConfig(config);
      // The upstream sees only looked-up values: a client's own are removed by the gateway
      // before every request phase of this plugin, found or not.
      for (const { name } of parsed.headers) {
        try {
          host.removeRequestHeader(name);
        } catch (e) {
          throw { key: `headers.${name}`, message: `the gateway refused it: ${e?.payload ?? e}` };
        }
      }
      settings = parsed;
      return { onRequest: true, onResponse: false, requestBody: false, responseBody: false };
    },

    // An async hook: componentize-js runs the event loop until its promise settles.
    async onRequest(req) {
      if (settings === null) throw 'enrich: called before init';
      const url = render(settings.url, req);
      // A value the URL needs is missing: there is nothing to look up.
      if (url === null) return CONTINUE;

      let doc;
      try {
        doc = await lookup(host.fetch, url, settings.timeoutMs);
      } catch (e) {
        if (!(e instanceof LookupFailed)) throw `enrich: ${e}`;
        return failed(e.message);
      }

      for (const { name, path, keys } of settings.headers) {
        const found = headerValue(find(doc, keys));
        if (found === null) continue;
        if (found.problem !== undefined) {
          const problem = `\`${path}\` in the lookup's answer ${found.problem}`;
          host.log('warn', `enrich: ${problem}; ${name} left out`);
          continue;
        }
        try {
          req.setHeader(name, found.value);
        } catch (e) {
          const code = e?.payload ?? e;
          host.log('warn', `enrich: the gateway refused \`${path}\` as ${name} (${code})`);
        }
      }
      return CONTINUE;
    },

    onResponse(_req, _resp) {
      return CONTINUE;
    },
  };
}
