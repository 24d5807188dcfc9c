# Shared by the scripts: make sure PostgreSQL and the Kafka-compatible broker (Tansu) are up.
# Source it; every function is idempotent.

TANSU_VERSION=0.6.0
KAFKA_PORT=9092

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() { # port what seconds
    local deadline=$((SECONDS + ${3:-60}))
    until port_open "$1"; do
        if ((SECONDS > deadline)); then
            log "$2 did not open port $1 in time"
            return 1
        fi
        sleep 0.2
    done
}

ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    wait_for_port 5432 PostgreSQL 60
}

tansu_bin() {
    command -v tansu 2>/dev/null || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
}

# Installs Tansu from crates.io if it is missing (about 15 minutes on two cores).
install_tansu() {
    if [ -x "$(tansu_bin)" ]; then return; fi
    log "installing Tansu $TANSU_VERSION (a one-time build)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --quiet
}

# Starts Tansu on 127.0.0.1:9092 unless something already listens there.
# $1: storage engine URL; $2: log file. Prints the broker's PID (empty if it was running).
start_tansu() {
    if port_open "$KAFKA_PORT"; then
        log "a broker already listens on $KAFKA_PORT"
        return
    fi
    log "starting Tansu on 127.0.0.1:$KAFKA_PORT ($1)"
    # Tansu logs every request at info: keep its log to warnings (TANSU_LOG overrides).
    RUST_LOG="${TANSU_LOG:-warn}" setsid nohup "$(tansu_bin)" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "$1" >"$2" 2>&1 &
    local pid=$!
    wait_for_port "$KAFKA_PORT" Tansu 30
    echo "$pid"
}
