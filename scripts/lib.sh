# Shared by the scripts: make sure PostgreSQL and the Kafka-compatible broker (Nisshi) are up,
# and start the system's processes. Source it; every function is idempotent.

NISSHI_VERSION=0.8.1
# The broker's port; KAFKA_BROKERS follows it unless set.
BROKER_PORT="${BROKER_PORT:-9092}"
COMPONENTS=(listener command-handler relayer projector queries)

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

# The C libraries the build links: OpenSSL, for the Kafka client's TLS and SASL SCRAM.
ensure_build_dependencies() {
    if dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then return; fi
    log "installing libssl-dev and pkg-config from Debian (the Kafka client links OpenSSL)"
    apt-get install -y -q libssl-dev pkg-config >/dev/null 2>&1 ||
        { apt-get update -q && apt-get install -y -q libssl-dev pkg-config; } >/dev/null
}

nisshi_bin() {
    command -v nisshi 2>/dev/null || echo "${CARGO_HOME:-$HOME/.cargo}/bin/nisshi"
}

# Installs Nisshi from crates.io if it is missing: a one-time build of about 15 minutes on two
# cores (measured with the project building alongside, as in test.sh). Only the storage engines used here: memory:// (dynostore) and sqlite:// (libsql). One of
# its dependencies declares rustc 1.96; it builds and runs on 1.95.
install_nisshi() {
    if [ -x "$(nisshi_bin)" ]; then return; fi
    log "installing Nisshi $NISSHI_VERSION (a one-time build)"
    cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version \
        --no-default-features --features dynostore,libsql --quiet
}

# Starts Nisshi on 127.0.0.1:$BROKER_PORT unless something already listens there, in
# directory $3 (a sqlite:// path is relative to it, and Nisshi reads any .env file there).
# $1: storage engine URL; $2: log file. Prints the broker's PID (empty if it was running).
start_broker() {
    if port_open "$BROKER_PORT"; then
        log "a broker already listens on $BROKER_PORT"
        return
    fi
    log "starting Nisshi on 127.0.0.1:$BROKER_PORT ($1)"
    local bin log_file
    bin=$(nisshi_bin)
    log_file=$(realpath "$2")
    # Nisshi logs every request at info: keep its log to warnings (BROKER_LOG overrides).
    (
        cd "$3" || exit 1
        RUST_LOG="${BROKER_LOG:-warn}" setsid nohup "$bin" broker \
            --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
            --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
            --storage-engine "$1" >>"$log_file" 2>&1 &
        echo $!
    )
    wait_for_port "$BROKER_PORT" Nisshi 30
}

# Exports where the token keys of the system in $RUN_DIR are (up.sh makes them): the services
# verify tokens with the public key (AUTH_PUBLIC_KEY), populate, loadgen and `financing token`
# sign with the private one (FINANCING_SIGNING_KEY).
export_keys() {
    local keys
    keys=$(realpath "$RUN_DIR/keys")
    export AUTH_PUBLIC_KEY="$keys/public-key.pem" FINANCING_SIGNING_KEY="$keys/signing-key.pem"
}

# Starts one of the system's programs from $BIN in a session of its own (a Ctrl-C in the
# terminal reaches the calling script only), logging to $RUN_DIR/logs/$1.log and recording its
# PID in $RUN_DIR/$1.pid.
start_component() {
    setsid nohup "$BIN/$1" >>"$RUN_DIR/logs/$1.log" 2>&1 &
    echo $! >"$RUN_DIR/$1.pid"
}
