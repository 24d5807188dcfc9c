#!/usr/bin/env bash
# Runs the whole system on this machine: builds the release binaries, makes sure PostgreSQL and
# the broker are up (installing Tansu if missing; its data is kept in .run/tansu.db), starts
# every component with its log in .run/logs, and prints what to try. Ctrl-C, or
# scripts/down.sh from another terminal, stops everything gracefully.
# With --detach it returns once the system is up.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

COMPONENTS=(listener command-handler relayer)
RUN=.run

for pidfile in "$RUN"/*.pid; do
    if [ -e "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "already running ($pidfile); scripts/down.sh stops it"
        exit 1
    fi
done
mkdir -p "$RUN/logs"
rm -f "$RUN"/*.pid

ensure_postgres
install_tansu
log "building release binaries"
cargo build --release --locked --bins
broker=$(start_tansu "sqlite://$RUN/tansu.db" "$RUN/logs/tansu.log")
if [ -n "$broker" ]; then echo "$broker" >"$RUN/tansu.pid"; fi

export RUST_LOG="${RUST_LOG:-info}"
for component in "${COMPONENTS[@]}"; do
    nohup "target/release/$component" >"$RUN/logs/$component.log" 2>&1 &
    echo $! >"$RUN/$component.pid"
done
wait_for_port 8080 listener 60

cat <<TRY

Financing is running: commands on 127.0.0.1:8080, logs in $RUN/logs.
  grpcurl -plaintext 127.0.0.1:8080 list
  grpcurl -plaintext -d '{"issuer_id":{"value":"<issuer id>"},"asking_price":{"amount":10}}' \\
      127.0.0.1:8080 financing.v1.Commands/SellInvoice
TRY

if [ "${1:-}" = "--detach" ]; then exit 0; fi
trap 'echo; scripts/down.sh; exit 0' INT TERM
log "Ctrl-C stops everything"
wait
