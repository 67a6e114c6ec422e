#!/usr/bin/env bash
# Install everything the tests need (Debian packages, Python extras, the pinned Azurite),
# check that the generated gRPC code, the import contracts, lint and types are clean, then
# run every test (failing on any skip that is not expected).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: FUSE (mounts, CSI node; pyfuse3 builds against libfuse3-dev), rsync/rclone
# (peers in the mirroring and FUSE tests, driven with git inside gns fuse mounts) and
# kubectl (Debian's kubernetes-client; renders deploy/ in the deploy tests), and h2load
# (nghttp2-client: no test uses it; bench.dataplane's Resolve load, so that a machine set up
# by this script runs every benchmark). Only what is missing is installed, and the package
# lists are fetched only then.
need=()
for pkg in fuse3 libfuse3-dev pkg-config rsync rclone git nghttp2-client; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

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
# --strict over every package, the tests and scripts/gen-crds.py ([tool.mypy] files).
python -m mypy

# Everything the tests need is installed above: a skip for any other reason fails the run.
# The ten slowest steps are listed: the suite's time budget is watched from CI logs.
# Two xdist workers (GNS_TEST_WORKERS; 0 runs in this process), each starting its own
# session servers, stealing work from each other so the slow cases do not queue behind one
# worker. pytest-benchmark, where installed, disables itself under xdist with a warning that
# filterwarnings=error would turn into a failure: it is not ours (bench/ prints JSON).
GNS_FAIL_ON_SKIP=1 python -m pytest -p no:benchmark -n "${GNS_TEST_WORKERS:-2}" --dist worksteal \
  --durations=10 "$@"
