#!/usr/bin/env bash
# Measures the system under each of several settings, side by side in one run. For each
# setting it starts a fresh system with scripts/up.sh (its own broker, databases and ports, so a
# running demo is left alone), lets it settle, and prints:
#   - idle CPU and memory of every process (scripts/usage.sh),
#   - one command at a time: SellInvoice -> InvoiceCreated and BidOnInvoice -> reserved funds
#     shown (loadgen command-to-event, bid-to-read-model),
#   - a soak at --rate for --seconds (loadgen soak), with the CPU it costs (--rate 0: none);
#   - with --throughput N, N SellInvoice from --clients clients (default 64) as fast as they
#     go, until the query service shows every invoice (loadgen throughput), with the CPU each
#     process used over its first 10 s;
#   - with --sagas N, N bid sagas a second for --seconds (loadgen sagas), and where a saga's
#     time went (scripts/hops.sql);
# then stops it (scripts/down.sh).
#
# Usage: scripts/bench.sh [--rate N] [--throughput N] [--clients N] [--sagas N] [--seconds N]
#        [--samples N] SETTING...
# A SETTING is environment assignments for up.sh and loadgen, e.g. "KAFKA_PARTITIONS=1",
# "BROKER_STORAGE=memory://nisshi/ KAFKA_FETCH_WAIT_MS=100", "INSTANCES=2" (two of every
# component), "BIN_DIR=/tmp/before" (an
# earlier build of the services, to compare with) or "LOADGEN=/tmp/before/loadgen" (an earlier
# load generator; target/release/loadgen otherwise); "" is the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

rate=300 throughput=0 clients=64 sagas=0 seconds=60 samples=200
while [[ "${1:-}" == --* ]]; do
    case "$1" in
        --rate) rate=$2 ;;
        --throughput) throughput=$2 ;;
        --clients) clients=$2 ;;
        --sagas) sagas=$2 ;;
        --seconds) seconds=$2 ;;
        --samples) samples=$2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
if (($# == 0)); then set -- ""; fi

cargo build --release --locked --bins --quiet
export BROKER_PORT=19092 KAFKA_BROKERS=127.0.0.1:19092
export LISTENER_ADDR=127.0.0.1:18080 QUERIES_ADDR=127.0.0.1:18081
export LISTENER_URL=http://$LISTENER_ADDR QUERIES_URL=http://$QUERIES_ADDR
export LISTENER_METRICS_ADDR=127.0.0.1:19180 COMMAND_HANDLER_METRICS_ADDR=127.0.0.1:19181
export RELAYER_METRICS_ADDR=127.0.0.1:19182 PROJECTOR_METRICS_ADDR=127.0.0.1:19183
export QUERIES_METRICS_ADDR=127.0.0.1:19184
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_financing
export QUERIES_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_queries
export RUST_LOG=warn
ensure_postgres

for setting in "$@"; do
    export RUN_DIR
    RUN_DIR=$(mktemp -d /tmp/financing-bench.XXXXXX)
    for db in bench_financing bench_queries; do
        dropdb -h 127.0.0.1 -U postgres --if-exists "$db"
    done
    printf '\n\033[1m#### setting: %s\033[0m\n' "${setting:-defaults}"
    (
        # shellcheck disable=SC2086 # the setting is a list of assignments
        [ -n "$setting" ] && export $setting
        # loadgen spreads its requests over every instance (INSTANCES in the setting).
        LISTENER_URL=$(instance_urls LISTENER) QUERIES_URL=$(instance_urls QUERIES)
        export LISTENER_URL QUERIES_URL
        # Whatever up.sh started is stopped, even if it failed halfway.
        trap 'scripts/down.sh >/dev/null 2>&1' EXIT
        loadgen=${LOADGEN:-target/release/loadgen}
        scripts/up.sh --detach >"$RUN_DIR/up.out"
        if [ -d "$RUN_DIR/keys" ]; then export_keys; fi
        sleep 5
        echo "-- idle, over 10 s"
        scripts/usage.sh 10
        "$loadgen" --samples "$samples" command-to-event
        "$loadgen" --samples "$samples" bid-to-read-model
        if ((rate > 0)); then
            echo "-- soak, $rate commands/s for $seconds s; usage over its first $((seconds / 2)) s"
            scripts/usage.sh $((seconds / 2)) >"$RUN_DIR/usage.out" &
            "$loadgen" soak --rate "$rate" --seconds "$seconds" || true
            wait
            cat "$RUN_DIR/usage.out"
        fi
        if ((throughput > 0)); then
            scripts/usage.sh 10 >"$RUN_DIR/usage.out" &
            "$loadgen" --samples "$throughput" throughput --clients "$clients" || true
            wait
            echo "-- usage over the throughput run's first 10 s"
            cat "$RUN_DIR/usage.out"
        fi
        if ((sagas > 0)); then
            echo "-- bid sagas, $sagas a second for $seconds s"
            "$loadgen" sagas --rate "$sagas" --seconds "$seconds" || true
            echo "-- where the sagas' time went (ms)"
            psql -q "$DATABASE_URL" -f scripts/hops.sql
            echo "-- relay since start: an event's recording -> the broker's acknowledgement"
            { curl -sf "http://$RELAYER_METRICS_ADDR/metrics" || true; } | awk -F'[{}" ]+' '
                /^financing_relay_seconds_bucket/ { le[n] = $3; below[n++] = $NF }
                END {
                    if (n == 0) { print "not measured by this build"; exit }
                    for (i = 0; i < n && below[i] < 0.5 * below[n - 1]; i++) {}
                    for (j = i; j < n && below[j] < 0.99 * below[n - 1]; j++) {}
                    printf "%d events: p50 <= %s s, p99 <= %s s\n", below[n - 1], le[i], le[j]
                }'
        fi
    )
    rm -rf "$RUN_DIR"
done
