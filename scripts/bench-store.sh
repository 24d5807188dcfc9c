#!/usr/bin/env bash
# The event store's command loop against its yardsticks, side by side in one run on the same
# PostgreSQL: for each client count, pgbench inserting one row per transaction, cqrs-es 0.5
# with postgres-es doing the same sale in-process (benches/cqrs-es-peer: load, decide, insert
# the event), then the handler's executor in-process (`loadgen in-process`: load, decide,
# append with the idempotency record, a SellInvoice per command): one command at a time (the
# path of every fallback), in batches of one (the handler under light load) and in batches of
# 64 (as the handler takes what its consumer has ready: one read, one transaction).
# Each run gets a fresh database, dropped after.
#
# Usage: [LOADGEN=path] scripts/bench-store.sh [--seconds N] [CLIENTS...]
#   default: 10 s; 1 8 32 clients. LOADGEN: another build's loadgen (one that knows
#   --one-at-a-time) to measure instead of target/release/loadgen.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds=10
if [[ "${1:-}" == --seconds ]]; then seconds=$2; shift 2; fi
if (($# == 0)); then set -- 1 8 32; fi

ensure_postgres
cargo build --release --locked --bin loadgen --quiet
loadgen=${LOADGEN:-target/release/loadgen}
# The peer has a workspace and a lock file of its own; its build lands in target/ too.
cargo build --release --locked --quiet --manifest-path benches/cqrs-es-peer/Cargo.toml \
    --target-dir target/cqrs-es-peer
peer=target/cqrs-es-peer/release/cqrs-es-peer
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
server=postgres://postgres@127.0.0.1:5432
db=financing_bench_store
fresh_database() {
    psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
}
trap 'psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db"' EXIT

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
rate_of() { sed -n 's/.* \([0-9]*\) commands\/s$/\1/p' <<<"$1" | head -1; }

insert=$(mktemp)
echo "INSERT INTO rows (payload) VALUES ('{}');" >"$insert"
results=()
for clients in "$@"; do
    fresh_database
    psql -q "$server/$db" -c "CREATE TABLE rows (id BIGSERIAL PRIMARY KEY, payload JSONB NOT NULL)"
    log "pgbench, $clients clients, $seconds s"
    tps=$("$pgbench" -n -c "$clients" -j "$((clients < 2 ? clients : 2))" -T "$seconds" \
        -f "$insert" "$server/$db" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    fresh_database
    log "cqrs-es in-process, $clients tasks, $seconds s"
    out=$("$peer" --database-url "$server/$db" --tasks "$clients" --seconds "$seconds")
    echo "$out"
    peer_rate=$(rate_of "$out")
    row="$clients|$(printf '%.0f' "$tps")|$peer_rate"
    for path in --one-at-a-time "--batch 1" "--batch 64"; do
        fresh_database
        log "loadgen in-process, $clients tasks, $path, $seconds s"
        # shellcheck disable=SC2086 # an option and its value
        out=$("$loadgen" in-process --database-url "$server/$db" --tasks "$clients" $path \
            --seconds "$seconds")
        echo "$out"
        rate=$(rate_of "$out")
        row+="|$rate|$(ratio "$rate" "$peer_rate")"
    done
    results+=("$row")
done
rm -f "$insert"

echo
echo "| clients / tasks | pgbench, one-row INSERT per transaction (tps) | cqrs-es + postgres-es (commands/s) | executor, one at a time (commands/s) | / cqrs-es | executor, batches of 1 | / cqrs-es | executor, batches of 64 | / cqrs-es |"
echo "|---|---|---|---|---|---|---|---|---|"
for row in "${results[@]}"; do echo "| ${row//|/ | } |"; done
