#!/usr/bin/env bash
# Generates the client SDKs' code from proto/ with tools installed from the
# registries (grpcio-tools from PyPI for Python; buf from PyPI and
# @bufbuild/protoc-gen-es from npm for TypeScript, per proto/buf.gen.yaml;
# nothing is downloaded at generation time). The output is committed; `scripts/generate-sdks.sh --check` (run by
# the test command) regenerates into a scratch directory and fails on any
# difference.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOS=(
    omninode/api/v1/annotations.proto
    omninode/stamping/v1/stamping.proto
    omninode/orchestrator/v1/orchestrator.proto
    omninode/reducer/v1/reducer.proto
    omninode/events/v1/events.proto
    omninode/ingress/v1/ingress.proto
)

python_sdk() {
    local out="$1"
    mkdir -p "$out"
    # google/api and google/rpc come from googleapis-common-protos at run time; only our contracts are generated.
    (cd proto && python3 -m grpc_tools.protoc -I . \
        --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${PROTOS[@]}")
    find "$out/omninode" -type d -exec touch {}/__init__.py \;
}

typescript_sdk() { # output base directory
    [ -x sdks/typescript/node_modules/.bin/protoc-gen-es ] \
        || (cd sdks/typescript && npm ci --no-audit --no-fund --silent)
    buf generate proto --template proto/buf.gen.yaml -o "$1"
}

if [ "${1:-}" = "--check" ]; then
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    python_sdk "$scratch/python"
    typescript_sdk "$scratch"
    stale=0
    diff -r "$scratch/python/omninode" sdks/python/src/omninode || stale=1
    diff -r "$scratch/sdks/typescript/src/gen" sdks/typescript/src/gen || stale=1
    if [ "$stale" = 1 ]; then
        echo "the generated SDK code is not what proto/ generates: run scripts/generate-sdks.sh and commit" >&2
        exit 1
    fi
    echo "generated SDK code is up to date"
else
    rm -rf sdks/python/src/omninode sdks/typescript/src/gen
    python_sdk "$PWD/sdks/python/src"
    typescript_sdk .
fi
