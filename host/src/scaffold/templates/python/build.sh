#!/bin/sh
# Builds the component: {{name}}.wasm beside this script.
set -eu
cd "$(dirname "$0")"
if command -v componentize-py >/dev/null 2>&1; then
    tool=componentize-py
else
    # No componentize-py on PATH: use a pinned one in a venv of this plugin's own.
    if [ ! -x .venv/bin/componentize-py ]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet --disable-pip-version-check componentize-py==0.25.1
    fi
    tool=.venv/bin/componentize-py
fi
"$tool" --wit-path wit --world plugin componentize app --output {{name}}.wasm
echo "built {{name}}.wasm"
