#!/usr/bin/env bash
# Regenerates the committed gRPC stubs from proto/externalscaler.proto.
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: scaler_service/_generated)
# grpcio-tools writes `import externalscaler_pb2`; the sed makes it a package-relative import.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-scaler_service/_generated}"
python="${PYTHON:-.venv/bin/python}"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -Iproto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/externalscaler.proto
sed -i 's/^import externalscaler_pb2 as externalscaler__pb2$/from . import externalscaler_pb2 as externalscaler__pb2/' \
  "$out/externalscaler_pb2_grpc.py"
if [ ! -f "$out/__init__.py" ]; then
  printf '"""Stubs generated from proto/externalscaler.proto by scripts/gen_proto.sh: do not edit."""\n' >"$out/__init__.py"
fi
