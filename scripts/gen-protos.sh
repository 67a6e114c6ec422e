#!/usr/bin/env bash
# Regenerate federation/api/_gen from the protos. CI runs it and fails on a diff.
# --proto_path maps the proto tree onto the package path, so generated modules import
# each other as federation.api._gen.gns.federation.v1.* without any patching. The CSI proto
# (package csi.v1, federation/api/proto/csi/v1) lands in federation/api/_gen/csi/v1 the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
out=federation/api/_gen
rm -rf "$out/gns" "$out/csi"
python -m grpc_tools.protoc \
  --proto_path=federation/api/_gen=federation/api/proto \
  --python_out=. --grpc_python_out=. --pyi_out=. \
  $(find federation/api/proto -name '*.proto' | sort)
find "$out" -type d -exec touch {}/__init__.py \;
# grpcio-tools stamps its own release into each *_pb2_grpc.py, and the module refuses to
# import under an older grpcio. Stamp the floor pyproject.toml gives grpcio instead: a newer
# grpcio-tools patch on a fresh machine then writes the same files, and the stamp says what
# the package supports.
floor=$(sed -n 's/^ *"grpcio>=\([0-9][0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$floor" ] || { echo "gen-protos: no grpcio>= floor in pyproject.toml" >&2; exit 1; }
find "$out" -name '*_pb2_grpc.py' -exec sed -i "s/^GRPC_GENERATED_VERSION = '.*'$/GRPC_GENERATED_VERSION = '$floor'/" {} +
