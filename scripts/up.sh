#!/usr/bin/env bash
# Runs the whole system on this machine: builds the binaries, makes sure PostgreSQL and the
# broker are up (installing Nisshi if missing; its data is kept in $RUN_DIR/nisshi.db), starts
# the five components with their logs in $RUN_DIR/logs, seeds demo data with populate, and
# prints what to try. On first start it makes the key pair that signs tokens in
# $RUN_DIR/keys; the services verify with its public key, and $RUN_DIR/demo.env holds a token
# for every demo party. Ctrl-C, or scripts/down.sh from another terminal, stops everything
# gracefully. --detach returns once the system is up.
#
# Environment: RUN_DIR (default .run), PROFILE (cargo profile, default release), BIN_DIR
# (run the binaries in this directory instead of building them, e.g. an earlier build kept to
# compare with), INSTANCES (instances of each component, default 1: see start_component in
# scripts/lib.sh for the ports of the others), BROKER_PORT (default 9092), BROKER_STORAGE (default: SQLite in $RUN_DIR; memory://nisshi/ forgets on
# restart), BROKER_LOG (the broker's log filter, default warn), and every variable the
# components read (LISTENER_ADDR, QUERIES_ADDR, DATABASE_URL, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

RUN_DIR="${RUN_DIR:-.run}"
PROFILE="${PROFILE:-release}"
LISTENER_ADDR="${LISTENER_ADDR:-127.0.0.1:8080}"
QUERIES_ADDR="${QUERIES_ADDR:-127.0.0.1:8081}"
KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:$BROKER_PORT}"
export LISTENER_ADDR QUERIES_ADDR KAFKA_BROKERS RUST_LOG="${RUST_LOG:-info}"

for pidfile in "$RUN_DIR"/*.pid; do
    if [ -e "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "already running ($pidfile); scripts/down.sh stops it"
        exit 1
    fi
done
mkdir -p "$RUN_DIR/logs"
rm -f "$RUN_DIR"/*.pid

ensure_postgres
install_nisshi
if [ -n "${BIN_DIR:-}" ]; then
    BIN=$BIN_DIR
else
    ensure_build_dependencies
    log "building ($PROFILE)"
    cargo build --profile "$PROFILE" --locked --bins
    BIN="target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
fi
# The broker runs in $RUN_DIR: a sqlite:// path is relative to it.
broker=$(start_broker "${BROKER_STORAGE:-sqlite://nisshi.db}" "$RUN_DIR/logs/broker.log" "$RUN_DIR")
if [ -n "$broker" ]; then echo "$broker" >"$RUN_DIR/broker.pid"; fi

# The key pair that signs tokens: made once, kept with the run's data (a build from before
# tokens, run with BIN_DIR to compare, has none to make).
if "$BIN/financing" keys --help >/dev/null 2>&1; then
    "$BIN/financing" keys "$RUN_DIR/keys" >/dev/null
    export_keys
fi

# Each in a session of its own: a Ctrl-C in this terminal reaches this script only, whose
# down.sh then stops the components first and the broker last.
for component in "${COMPONENTS[@]}"; do
    for ((instance = 1; instance <= INSTANCES; instance++)); do
        start_component "$component" "$instance"
    done
done
wait_for_port "${LISTENER_ADDR##*:}" listener 60
wait_for_port "${QUERIES_ADDR##*:}" queries 60

log "seeding demo data"
"$BIN/populate" --wait-for "http://$QUERIES_ADDR" --env-file "$RUN_DIR/demo.env"

cat <<TRY

Financing is running: commands on $LISTENER_ADDR, queries on $QUERIES_ADDR, logs in $RUN_DIR/logs.
The ids above, and a token for each party, are in $RUN_DIR/demo.env (source it to use
\$ISSUER_1, \$ISSUER_1_TOKEN, \$INVESTOR_1, ..., \$OPERATOR_TOKEN).
  grpcurl -plaintext $LISTENER_ADDR list
  grpcurl -plaintext -H "authorization: Bearer \$OPERATOR_TOKEN" $QUERIES_ADDR financing.v1.Queries/AllInvestors
The README's walkthrough goes on from here; scripts/down.sh stops everything.
TRY

if [ "${1:-}" = "--detach" ]; then exit 0; fi
trap 'echo; scripts/down.sh; exit 0' INT TERM
log "Ctrl-C stops everything"
wait
