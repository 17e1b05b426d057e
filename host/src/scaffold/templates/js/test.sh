#!/bin/sh
# Runs the unit tests natively with Node's test runner.
set -eu
cd "$(dirname "$0")"
node --test
