#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs formatting
# and lint checks, the contract lint, the deployment-file validators, every
# unit and integration test (on SQLite and on PostgreSQL), a grpcurl smoke test
# of `omninode up`, and the benchmark harness in its smoke mode.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omninode/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "tools"
scripts/setup-test-env.sh

step "format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "contracts (buf lint, buf breaking)"
(cd proto && buf lint)
# Wire compatibility with the last release: its tag when there is one, else the committed image.
last_release="$(git describe --tags --abbrev=0 2>/dev/null || true)"
if [ -n "$last_release" ]; then
    (cd proto && buf breaking --against "../.git#tag=$last_release,subdir=proto")
else
    (cd proto && buf breaking --against release-baseline.binpb)
fi

step "deployment files (hadolint, docker compose config, kubernetes-validate)"
hadolint docker/Dockerfile
# The bundled binary, not the wrapper: the wrapper always exits 0.
compose="$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
for profile in core full; do
    (cd docker && "$compose" --env-file .env.example --profile "$profile" config -q)
done
(cd deployment/kubernetes && kubernetes-validate --strict --quiet $(ls *.yaml | grep -v '^kustomization.yaml$'))

step "TypeScript SDK: install and build (the browser test imports it)"
(cd sdks/typescript && npm ci --no-audit --no-fund --silent && npm run build --silent)

step "unit and integration tests (SQLite and PostgreSQL)"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

step "smoke test: omninode up + grpcurl"
# The same feature set as the tests, so nothing is built twice.
cargo build --locked --workspace --all-targets
scripts/smoke.sh "$CARGO_TARGET_DIR/debug/omninode"

step "SDKs: generated code up to date; pytest and node --test against a real omninode up"
scripts/generate-sdks.sh --check
python3 -m pip install --quiet --disable-pip-version-check -e 'sdks/python[test]'
OMNINODE_BIN="$CARGO_TARGET_DIR/debug/omninode" python3 -m pytest -q sdks/python/tests
(cd sdks/typescript && OMNINODE_BIN="$CARGO_TARGET_DIR/debug/omninode" node --test test/)

step "benchmark harness (smoke mode: every scenario completes; no timings judged)"
"$CARGO_TARGET_DIR/debug/omninode-bench" --smoke >/dev/null
