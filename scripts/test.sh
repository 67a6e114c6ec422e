#!/usr/bin/env bash
# Install everything the tests need (Python extras, the pinned Azurite), check that the
# generated gRPC code and the layer contract are current, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e '.[test]'
if [ ! -x node_modules/.bin/azurite-blob ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# Generated code must match the protos (regenerate, then fail on any difference).
./scripts/gen-protos.sh
if ! git diff --quiet -- federation/api/_gen 2>/dev/null; then
  echo "federation/api/_gen is stale: run scripts/gen-protos.sh and commit" >&2
  git --no-pager diff --stat -- federation/api/_gen >&2
  exit 1
fi
lint-imports
ruff check .

python -m pytest "$@"
