#!/bin/sh
# Runs the unit tests natively, against the WIT world's generated Python bindings.
set -eu
cd "$(dirname "$0")"
if command -v componentize-py >/dev/null 2>&1; then
    tool=componentize-py
else
    if [ ! -x .venv/bin/componentize-py ]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet --disable-pip-version-check componentize-py==0.25.1
    fi
    tool=.venv/bin/componentize-py
fi
rm -rf .bindings
"$tool" --wit-path wit --world plugin bindings .bindings >/dev/null
PYTHONPATH=.bindings PYTHONDONTWRITEBYTECODE=1 python3 -m unittest --verbose
