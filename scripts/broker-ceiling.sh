#!/usr/bin/env bash
# The SQLite broker's own produce ceiling, without the system: Nisshi's `perf produce` against a
# fresh broker of its own (port 19292, a temporary directory), records of 300 bytes (an event's
# size), for each batch size and number of producers. Records written per second are counted in
# the broker's database over a window in the middle of each run. The system's end-to-end
# throughput on SQLite is read against it (docs/benchmarks.md).
# Usage: scripts/broker-ceiling.sh [seconds per measure, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

window="${1:-10}"
if ! command -v sqlite3 >/dev/null; then
    log "counting needs the sqlite3 command line (apt-get install sqlite3)"
    exit 1
fi
install_nisshi
nisshi=$(nisshi_bin)
BROKER_PORT=19292
if port_open "$BROKER_PORT"; then
    log "port $BROKER_PORT is taken: the ceiling needs a broker of its own there"
    exit 1
fi
url=tcp://127.0.0.1:$BROKER_PORT
dir=$(mktemp -d /tmp/broker-ceiling.XXXXXX)
broker="" perf=""
trap 'kill $perf $broker 2>/dev/null; rm -rf "$dir"' EXIT
broker=$(start_broker "sqlite://n.db" "$dir/broker.log" "$dir")
"$nisshi" topic create --broker "$url" --partitions 3 ceiling >/dev/null

written() { sqlite3 -cmd '.timeout 5000' "$dir/n.db" "SELECT count(*) FROM record"; }

printf '%6s %10s %12s\n' batch producers records/s
for batch in 1 16 64; do
    for producers in 1 8 32; do
        "$nisshi" perf --broker "$url" ceiling produce --batch-size "$batch" \
            --record-size 300 --producers "$producers" --duration "$((window + 6))s" \
            >"$dir/perf.log" 2>&1 &
        perf=$!
        sleep 3 # its producers connected and running
        before=$(written)
        sleep "$window"
        after=$(written)
        if ! wait "$perf"; then
            log "nisshi perf failed:"
            tail -5 "$dir/perf.log" >&2
            exit 1
        fi
        perf=""
        printf '%6s %10s %12s\n' "$batch" "$producers" $(((after - before) / window))
    done
done
