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

step "contracts (buf lint)"
(cd proto && buf lint)

step "deployment files (hadolint, docker compose config, kubernetes-validate)"
hadolint docker/Dockerfile
# The bundled binary, not the wrapper: the wrapper always exits 0.
compose="$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
for profile in core full; do
    (cd docker && "$compose" --env-file .env.example --profile "$profile" config -q)
done
(cd deployment/kubernetes && kubernetes-validate --strict --quiet $(ls *.yaml | grep -v '^kustomization.yaml$'))

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

step "benchmark harness (smoke mode: every scenario completes; no timings judged)"
"$CARGO_TARGET_DIR/debug/omninode-bench" --smoke >/dev/null
