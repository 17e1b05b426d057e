#!/bin/sh
# Builds the component: {{name}}.wasm beside this script.
set -eu
cd "$(dirname "$0")"
if command -v componentize-js >/dev/null 2>&1; then
    tool=componentize-js
else
    # No componentize-js on PATH: use the version package.json pins.
    [ -x node_modules/.bin/componentize-js ] || npm install --no-audit --no-fund
    tool=node_modules/.bin/componentize-js
fi
# The gateway links no wasi:http: a plugin reaches the network only through the host.
"$tool" app.js --wit wit --world-name plugin --disable http fetch-event --out {{name}}.wasm
echo "built {{name}}.wasm"
