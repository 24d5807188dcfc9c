#!/usr/bin/env bash
# The relayer's own ceiling, without the rest of the system: a backlog of events is committed
# to an event store of its own at once, and one relayer (release build) publishes it to a
# broker of its own (Nisshi on memory storage, port 19392); prints events published per second
# and the CPU the relayer, the broker and PostgreSQL used meanwhile. The command handler's
# ceiling to read it against is scripts/bench-store.sh's (docs/scaling.md).
# Usage: scripts/relayer-ceiling.sh [events, default 100000] [RELAY_BATCH_SIZE...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

events="${1:-100000}"
shift || true
batch_sizes=("${@:-500}")
ensure_postgres
install_nisshi
cargo build --release --locked --bin relayer --quiet
export BROKER_PORT=19392 KAFKA_BROKERS=127.0.0.1:19392 RUST_LOG=warn
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/relayer_ceiling
export RELAYER_METRICS_ADDR=127.0.0.1:19382
if port_open "$BROKER_PORT"; then
    log "port $BROKER_PORT is taken: the ceiling needs a broker of its own there"
    exit 1
fi
dir=$(mktemp -d /tmp/relayer-ceiling.XXXXXX)
broker="" relayer=""
trap 'kill $relayer $broker 2>/dev/null; rm -rf "$dir"' EXIT
broker=$(start_broker memory://nisshi/ "$dir/broker.log" "$dir")

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
postgres_ticks() { # every PostgreSQL process's
    local total=0 pid
    for pid in $(pgrep -f '^postgres'); do total=$((total + $(ticks "$pid" 2>/dev/null || echo 0))); done
    echo "$total"
}
backlog() { psql -Atq "$DATABASE_URL" -c "SELECT count(*) FROM unpublished_events"; }

printf '%8s %10s %10s %9s %9s %9s\n' batch events events/s "relayer%" "broker%" "postgres%"
for batch in "${batch_sizes[@]}"; do
    dropdb -h 127.0.0.1 -U postgres --if-exists relayer_ceiling
    createdb -h 127.0.0.1 -U postgres relayer_ceiling
    RELAY_BATCH_SIZE=$batch setsid target/release/relayer >>"$dir/relayer.log" 2>&1 &
    relayer=$!
    until psql -Atq "$DATABASE_URL" -c "SELECT 1 FROM unpublished_events LIMIT 0" 2>/dev/null; do
        sleep 0.2
    done
    sleep 2 # its topics made
    # One transaction: the whole backlog becomes visible at once.
    psql -q "$DATABASE_URL" -c "
        INSERT INTO events (aggregate_type, aggregate_id, version, event_type, schema_version,
            payload, event_id, command_id, correlation_id, causation_id)
        SELECT 'Investor', id, 1, 'InvestorFundsAdded', 1,
            jsonb_build_object('investor_id', id, 'amount', '1.00'), gen_random_uuid(),
            gen_random_uuid(), gen_random_uuid(), gen_random_uuid()
        FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $events)) AS ids"
    started=$(date +%s.%N)
    before=($(ticks "$relayer") $(ticks "$broker") $(postgres_ticks))
    while (($(backlog) > 0)); do sleep 0.1; done
    finished=$(date +%s.%N)
    after=($(ticks "$relayer") $(ticks "$broker") $(postgres_ticks))
    kill -TERM "$relayer"
    wait "$relayer" || true
    relayer=""
    awk -v b="$batch" -v n="$events" -v s="$started" -v f="$finished" -v hz="$(getconf CLK_TCK)" \
        -v r=$((after[0] - before[0])) -v k=$((after[1] - before[1])) -v p=$((after[2] - before[2])) \
        'BEGIN { t = f - s; printf "%8d %10d %10.0f %9.0f %9.0f %9.0f\n", b, n, n / t,
                 100 * r / hz / t, 100 * k / hz / t, 100 * p / hz / t }'
done
dropdb -h 127.0.0.1 -U postgres --if-exists relayer_ceiling
