#!/usr/bin/env bash
# Stop the emulators deploy/emulators/start.sh started, by the PIDs it wrote (never by name).
#   deploy/emulators/stop.sh [moto] [seaweedfs] [gcs] [azurite]   # default: all
# SeaweedFS takes >10 s to stop on SIGTERM; after GNS_STOP_TIMEOUT seconds (default 30) a
# process still running gets SIGKILL.
set -euo pipefail

SELF_DIR=.; [[ "${BASH_SOURCE[0]}" == */* ]] && SELF_DIR="${BASH_SOURCE[0]%/*}"
ROOT="$(cd "$SELF_DIR/../.." && pwd)"
DIR="${GNS_EMULATOR_DIR:-$ROOT/.gns/emulators}"
TIMEOUT="${GNS_STOP_TIMEOUT:-30}"

which=("$@")
[[ ${#which[@]} -gt 0 ]] || which=(moto seaweedfs gcs azurite)
pids=()
names=()
for name in "${which[@]}"; do
  f="$DIR/$name.pid"
  [[ -f "$f" ]] || continue
  pid="$(cat "$f")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
    names+=("$name")
  else
    echo "$name: not running"
    rm -f "$f"
  fi
done

for i in "${!pids[@]}"; do
  pid="${pids[$i]}"
  name="${names[$i]}"
  for _ in $(seq 1 $((TIMEOUT * 5))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: still running after ${TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/$name.pid"
  echo "$name: stopped (pid $pid)"
done
