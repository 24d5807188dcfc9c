#!/usr/bin/env bash
# The command handler's and the relayer's own ceilings, each alone (release builds), against a
# broker of their own (Nisshi on memory storage, port 19392) and an event store of their own:
#   - handler: COUNT SellInvoice commands queued on financing.commands (loadgen backlog, one
#     issuer registered first) are drained by one command handler;
#   - relayer: COUNT events committed to the event store at once are published by one relayer,
#     for each RELAY_BATCH_SIZE given.
# Prints what each got through per second and the CPU (share of one core) it, the broker and
# PostgreSQL used meanwhile. docs/scaling.md reads them against each other.
# Usage: scripts/ceilings.sh [COUNT, default 100000] [RELAY_BATCH_SIZE..., default 500]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

count="${1:-100000}"
shift || true
batch_sizes=("${@:-500}")
ensure_postgres
install_nisshi
cargo build --release --locked --bin relayer --bin command-handler --bin loadgen --quiet
BIN=target/release
export BROKER_PORT=19392 KAFKA_BROKERS=127.0.0.1:19392 RUST_LOG=warn
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/ceiling_financing
export RELAYER_METRICS_ADDR=127.0.0.1:19382 COMMAND_HANDLER_METRICS_ADDR=127.0.0.1:19381
if port_open "$BROKER_PORT"; then
    log "port $BROKER_PORT is taken: the ceilings need a broker of their own there"
    exit 1
fi
dir=$(mktemp -d /tmp/ceilings.XXXXXX)
broker="" running=""
trap 'kill $running $broker 2>/dev/null; rm -rf "$dir"' EXIT
broker=$(start_broker memory://nisshi/ "$dir/broker.log" "$dir")

postgres_ticks() { # every PostgreSQL process's
    local total=0 pid
    for pid in $(pgrep -f '^postgres'); do total=$((total + $(cpu_ticks "$pid"))); done
    echo "$total"
}
holds() { [ "$(psql -Atq "$DATABASE_URL" -c "SELECT $1")" = t ]; }

fresh_store() {
    dropdb -h 127.0.0.1 -U postgres --if-exists ceiling_financing
    createdb -h 127.0.0.1 -U postgres ceiling_financing
}

start() { # program, with its settings in the environment
    setsid "$BIN/$1" >>"$dir/$1.log" 2>&1 &
    running=$!
}

stop() {
    kill -TERM "$running"
    wait "$running" || true
    running=""
}

# Waits until the SQL condition $1 holds; then prints a result line: $5, $2 things per second
# since $3 (the start, in seconds since the epoch), and the CPU the running program, the broker
# and PostgreSQL used since the ticks in $4.
measure_until() { # condition count started before_ticks label
    until holds "$1"; do sleep 0.1; done
    local finished after
    finished=$(date +%s.%N)
    after="$(cpu_ticks "$running") $(cpu_ticks "$broker") $(postgres_ticks)"
    awk -v label="$5" -v n="$2" -v s="$3" -v f="$finished" -v hz="$(getconf CLK_TCK)" \
        -v before="$4" -v after="$after" 'BEGIN {
            split(before, b, " "); split(after, a, " "); t = f - s
            printf "%-22s %9d %10.0f %8.0f %8.0f %9.0f\n", label, n, n / t,
                100 * (a[1] - b[1]) / hz / t, 100 * (a[2] - b[2]) / hz / t, 100 * (a[3] - b[3]) / hz / t
        }'
}

printf '%-22s %9s %10s %8s %8s %9s\n' measure count "per s" "itself%" "broker%" "postgres%"

# The handler: the issuer first, then the sales queued while no handler runs.
fresh_store
start command-handler
issuer=$("$BIN/loadgen" backlog)
until holds "EXISTS (SELECT FROM processed_commands)" 2>/dev/null; do sleep 0.2; done
stop
"$BIN/loadgen" --samples "$count" backlog --issuer "$issuer" >/dev/null
start command-handler
started=$(date +%s.%N)
before="$(cpu_ticks "$running") $(cpu_ticks "$broker") $(postgres_ticks)"
measure_until "(SELECT count(*) FROM processed_commands) > $count" "$count" "$started" "$before" \
    "handler: commands"
stop

# The relayer: the whole backlog committed in one transaction, visible at once.
for batch in "${batch_sizes[@]}"; do
    fresh_store
    RELAY_BATCH_SIZE=$batch start relayer
    until holds "to_regclass('unpublished_events') IS NOT NULL" 2>/dev/null; do sleep 0.2; done
    sleep 2 # its topics made
    psql -q "$DATABASE_URL" -c "
        INSERT INTO events (aggregate_type, aggregate_id, version, event_type, schema_version,
            payload, event_id, command_id, correlation_id, causation_id)
        SELECT 'Investor', id, 1, 'InvestorFundsAdded', 1,
            jsonb_build_object('investor_id', id, 'amount', '1.00'), gen_random_uuid(),
            gen_random_uuid(), gen_random_uuid(), gen_random_uuid()
        FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $count)) AS ids"
    started=$(date +%s.%N)
    before="$(cpu_ticks "$running") $(cpu_ticks "$broker") $(postgres_ticks)"
    measure_until "NOT EXISTS (SELECT FROM unpublished_events)" "$count" "$started" "$before" \
        "relayer: events ($batch)"
    stop
done
dropdb -h 127.0.0.1 -U postgres --if-exists ceiling_financing
