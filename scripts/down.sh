#!/usr/bin/env bash
# Stops what scripts/up.sh started (in $RUN_DIR, default .run), gracefully: SIGTERM to every
# component (each finishes the message in hand and commits its offsets), then the broker once
# they have exited.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
RUN="${RUN_DIR:-.run}"

stop() { # pidfile...
    local pidfile pid pids=()
    for pidfile in "$@"; do
        [ -e "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        rm -f "$pidfile"
        if kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); fi
    done
    local deadline=$((SECONDS + 30))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS > deadline)); then
                log "process $pid did not stop in 30 s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            sleep 0.1
        done
    done
}

shopt -s nullglob
components=()
for pidfile in "$RUN"/*.pid; do
    [ "$pidfile" = "$RUN/broker.pid" ] || components+=("$pidfile")
done
stop "${components[@]}"
stop "$RUN/broker.pid"
log "stopped"
