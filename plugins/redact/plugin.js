// The component's glue: the `handler` export, logging through the host. Everything else is in
// plain modules that Node can load for the unit tests.

import { log } from 'wasmgate:plugin/log@0.1.6';

import { createHandler } from './redact.js';

export const handler = createHandler((level, message) => log(level, message));
