#!/usr/bin/env bash
# Undo deploy/kind/up.sh: delete the two kind clusters and stop the etcd it started (by PID).
# Certificates and etcd data stay under GNS_KIND_STATE (default .gns/kind).
set -euo pipefail
SELF_DIR=.; [[ "${BASH_SOURCE[0]}" == */* ]] && SELF_DIR="${BASH_SOURCE[0]%/*}"
HERE="$(cd "$SELF_DIR" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${GNS_KIND_STATE:-$ROOT/.gns/kind}"

command -v kind >/dev/null 2>&1 || { echo "down.sh: kind is not installed" >&2; exit 2; }
for id in onprem-a aws-1; do
  if kind get clusters 2>/dev/null | grep -qx "gns-$id"; then
    kind delete cluster --name "gns-$id"
  fi
done
if [[ -f "$STATE/etcd.pid" ]]; then
  pid="$(cat "$STATE/etcd.pid")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "etcd stopped (pid $pid)"
  fi
  rm -f "$STATE/etcd.pid"
fi
