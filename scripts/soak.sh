#!/usr/bin/env bash
# Soaks the system that scripts/up.sh runs (in $RUN_DIR, default .run; start it first with
# scripts/up.sh --detach, with the same environment): loadgen soak offers a realistic mix of
# commands at a fixed rate for a fixed time while faults are injected on a schedule, then checks
# that every acknowledged command was decided and every investor's money adds up; this script
# then checks that every process is alive. Exits non-zero if anything failed.
#
# Usage: scripts/soak.sh [--rate N] [--seconds N] [--settle-seconds N] [--fault WHAT@SECONDS]...
#   --fault broker@20            kill -9 the broker 20 s in, and start it again on its data
#   --fault command-handler@40   the same for a component (listener, command-handler, relayer,
#                                projector, queries): its first instance
#   --fault projector-2@45       the same for the second instance (INSTANCES=2 in up.sh's and
#                                this script's environment); the other instances carry on
#   --fault postgres@60          restart PostgreSQL in immediate mode (no clean shutdown)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

RUN_DIR="${RUN_DIR:-.run}"
PROFILE="${PROFILE:-release}"
BIN="target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"
LISTENER_ADDR="${LISTENER_ADDR:-127.0.0.1:8080}"
QUERIES_ADDR="${QUERIES_ADDR:-127.0.0.1:8081}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:$BROKER_PORT}"
# loadgen spreads its requests over every instance.
LISTENER_URL=$(instance_urls LISTENER) QUERIES_URL=$(instance_urls QUERIES)
export LISTENER_URL QUERIES_URL

rate=300 seconds=60 settle=180 faults=()
while (($#)); do
    case "$1" in
        --rate) rate=$2 ;;
        --seconds) seconds=$2 ;;
        --settle-seconds) settle=$2 ;;
        --fault) faults+=("$2") ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
for process in "${COMPONENTS[@]}"; do
    if [ ! -e "$RUN_DIR/$process.pid" ]; then
        log "no $process in $RUN_DIR: start the system with scripts/up.sh --detach first"
        exit 1
    fi
done
# The components started again after a fault verify tokens as before; loadgen signs them.
export_keys

# Kills -9 what the fault names (waiting until it is gone) and starts it again, the way up.sh
# did. Fails if the fault cannot be injected.
inject() { # what
    local pid component=$1 instance=1
    case "$1" in
        postgres)
            log "fault: restarting PostgreSQL in immediate mode"
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main restart -m immediate
            return
            ;;
    esac
    if [[ $1 =~ ^(.+)-([0-9]+)$ ]]; then component=${BASH_REMATCH[1]} instance=${BASH_REMATCH[2]}; fi
    if [ "$1" != broker ] && ! component_number "$component" >/dev/null; then
        log "fault: there is no $1 to crash"
        return 1
    fi
    if [ ! -e "$RUN_DIR/$1.pid" ]; then
        log "fault: $1 was not started by up.sh in $RUN_DIR (no $1.pid)"
        return 1
    fi
    pid=$(cat "$RUN_DIR/$1.pid")
    log "fault: kill -9 the $1, then starting it again"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    if [ "$1" = broker ]; then
        while port_open "$BROKER_PORT"; do sleep 0.05; done
        start_broker "${BROKER_STORAGE:-sqlite://nisshi.db}" "$RUN_DIR/logs/broker.log" \
            "$RUN_DIR" >"$RUN_DIR/broker.pid"
    else
        start_component "$component" "$instance"
    fi
}

# Injects each fault at its time; fails if any could not be injected.
schedule() {
    local fault what at injectors=() failed=0
    for fault in "${faults[@]}"; do
        what=${fault%@*} at=${fault#*@}
        ( sleep "$at" && inject "$what" ) &
        injectors+=($!)
    done
    for injector in "${injectors[@]}"; do
        wait "$injector" || failed=1
    done
    return "$failed"
}

log "soak: $rate commands/s for $seconds s${faults:+, faults: ${faults[*]}}"
schedule &
injector=$!
status=0
"$BIN/loadgen" soak --rate "$rate" --seconds "$seconds" --settle-seconds "$settle" || status=$?
if ! wait "$injector"; then
    log "a fault could not be injected"
    status=1
fi

for pidfile in "$RUN_DIR"/*.pid; do
    name=$(basename "$pidfile" .pid)
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "$name is dead (its log: $RUN_DIR/logs/$name.log)"
        status=1
    fi
done
if ((status == 0)); then log "soak passed: every process alive"; fi
exit "$status"
