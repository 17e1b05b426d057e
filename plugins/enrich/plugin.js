// The component's glue: the `handler` export, with the host's log, header rules and `fetch`
// (componentize-js's, through wasi:http/outgoing-handler). Everything else is in plain modules
// that Node can load for the unit tests.

import { removeHeader } from 'wasmgate:plugin/header-rules@0.1.6';
import { log } from 'wasmgate:plugin/log@0.1.6';

import { createHandler } from './enrich.js';

export const handler = createHandler({
  log: (level, message) => log(level, message),
  removeRequestHeader: (name) => removeHeader('request', name),
  fetch: (url, init) => fetch(url, init),
});
