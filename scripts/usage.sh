#!/usr/bin/env bash
# Prints the CPU and memory each process of a running system (started by scripts/up.sh, in
# $RUN_DIR, default .run) uses over a window: CPU as a share of one core, RSS at the end.
# Usage: scripts/usage.sh [seconds, default 10]. Run it on an idle system for the idle cost, or
# during a load for its cost.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
RUN="${RUN_DIR:-.run}"
window="${1:-10}"
ticks_per_second=$(getconf CLK_TCK)

shopt -s nullglob
declare -A before
pidfiles=("$RUN"/*.pid)
if ((${#pidfiles[@]} == 0)); then
    echo "no process of a running system in $RUN" >&2
    exit 1
fi
for pidfile in "${pidfiles[@]}"; do
    before[$pidfile]=$(cpu_ticks "$(cat "$pidfile")")
done
sleep "$window"
printf '%-16s %8s %9s\n' process "CPU %" "RSS MB"
for pidfile in "${pidfiles[@]}"; do
    pid=$(cat "$pidfile")
    name=$(basename "$pidfile" .pid)
    if ! kill -0 "$pid" 2>/dev/null; then
        printf '%-16s %8s %9s\n' "$name" dead -
        continue
    fi
    used=$(($(cpu_ticks "$pid") - before[$pidfile]))
    rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
    awk -v name="$name" -v used="$used" -v hz="$ticks_per_second" -v window="$window" \
        -v rss="$rss_kb" 'BEGIN { printf "%-16s %8.1f %9.1f\n", name, 100 * used / hz / window, rss / 1024 }'
done
