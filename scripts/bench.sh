#!/usr/bin/env bash
# The benchmark command: installs what it needs (PostgreSQL, the tansu
# broker), builds with the release profile and runs every scenario.
# Arguments go to the harness: --seconds N, --reducer-events N, --output FILE.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omninode/target}"
scripts/setup-test-env.sh >&2
cargo build --release --locked -p omninode-bench >&2
exec "$CARGO_TARGET_DIR/release/omninode-bench" "$@"
