#!/usr/bin/env bash
# The event store's command loop against its yardstick, side by side in one run on the same
# PostgreSQL: for each client count, pgbench inserting one row per transaction, then the
# handler's executor in-process (`loadgen in-process`: load, decide, append with the
# idempotency record, a SellInvoice per command). Each run gets a fresh database, dropped after.
#
# Usage: scripts/bench-store.sh [--seconds N] [CLIENTS...]   (default: 10 s; 1 8 32 clients)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds=10
if [[ "${1:-}" == --seconds ]]; then seconds=$2; shift 2; fi
if (($# == 0)); then set -- 1 8 32; fi

ensure_postgres
cargo build --release --locked --bin loadgen --quiet
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
server=postgres://postgres@127.0.0.1:5432
db=financing_bench_store
fresh_database() {
    psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
}
trap 'psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db"' EXIT

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
    log "loadgen in-process, $clients tasks, $seconds s"
    out=$(target/release/loadgen in-process --database-url "$server/$db" \
        --tasks "$clients" --seconds "$seconds")
    echo "$out"
    rate=$(sed -n 's/.* \([0-9]*\) commands\/s$/\1/p' <<<"$out" | head -1)
    results+=("$clients|$(printf '%.0f' "$tps")|$rate")
done
rm -f "$insert"

echo
echo "| clients | pgbench, one-row INSERT per transaction (tps) | executor in-process (commands/s) |"
echo "|---|---|---|"
for row in "${results[@]}"; do echo "| ${row//|/ | } |"; done
