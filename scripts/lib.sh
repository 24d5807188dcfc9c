# Shared by the scripts: make sure PostgreSQL and the Kafka-compatible broker (Nisshi) are up,
# and start the system's processes. Source it; every function is idempotent.

NISSHI_VERSION=0.8.1
# The broker's port; KAFKA_BROKERS follows it unless set.
BROKER_PORT="${BROKER_PORT:-9092}"
COMPONENTS=(listener command-handler relayer projector queries)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# A process's CPU time so far (user + system), in clock ticks; 0 once it is gone.
cpu_ticks() { # pid
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

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
    # Nisshi logs every request at info: keep its log to warnings (BROKER_LOG overrides). It
    # reads LISTENER_URL as its own option: loadgen's (the listeners) must not reach it.
    (
        cd "$3" || exit 1
        unset LISTENER_URL
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

# How many instances of each component up.sh runs (INSTANCES, default 1).
INSTANCES="${INSTANCES:-1}"

# The name instance $2 of component $1 runs under (its PID file and its log): the component's
# own for the first, then command-handler-2, command-handler-3, ...
instance_name() { # component instance
    if (($2 == 1)); then echo "$1"; else echo "$1-$2"; fi
}

# Starts instance $2 (default 1) of one of the system's programs from $BIN in a session of its
# own (a Ctrl-C in the terminal reaches the calling script only), logging to
# $RUN_DIR/logs/NAME.log and recording its PID in $RUN_DIR/NAME.pid (NAME: instance_name).
# The first listener and query service keep LISTENER_ADDR and QUERIES_ADDR; instance k serves
# 2(k-1) ports further (with the defaults, the second listener :8082, the second query service
# :8083), and its metrics 10(k-1) ports further than the component's default.
start_component() { # component [instance]
    local component=$1 instance=${2:-1} name offset metrics_var metrics_port
    name=$(instance_name "$component" "$instance")
    offset=$((instance - 1))
    (
        if ((offset > 0)); then
            export LISTENER_ADDR="${LISTENER_ADDR%:*}:$((${LISTENER_ADDR##*:} + 2 * offset))"
            export QUERIES_ADDR="${QUERIES_ADDR%:*}:$((${QUERIES_ADDR##*:} + 2 * offset))"
            metrics_var="$(echo "$component" | tr 'a-z-' 'A-Z_')_METRICS_ADDR"
            metrics_port=$((METRICS_PORTS_FROM + $(component_number "$component") + 10 * offset))
            export "$metrics_var=127.0.0.1:$metrics_port"
        fi
        setsid nohup "$BIN/$component" >>"$RUN_DIR/logs/$name.log" 2>&1 &
        echo $! >"$RUN_DIR/$name.pid"
    )
}

# The components' metrics listen from this port on, in the order of COMPONENTS.
METRICS_PORTS_FROM=9180

# The place of component $1 in COMPONENTS, from 0.
component_number() { # component
    local n
    for n in "${!COMPONENTS[@]}"; do
        if [ "${COMPONENTS[$n]}" = "$1" ]; then echo "$n"; return; fi
    done
    return 1
}

# The URLs of every instance's listener (LISTENER) or query service (QUERIES), comma-separated,
# as loadgen takes them.
instance_urls() { # LISTENER|QUERIES
    local addr urls="" instance
    addr=$([ "$1" = LISTENER ] && echo "$LISTENER_ADDR" || echo "$QUERIES_ADDR")
    for ((instance = 1; instance <= INSTANCES; instance++)); do
        urls+="${urls:+,}http://${addr%:*}:$((${addr##*:} + 2 * (instance - 1)))"
    done
    echo "$urls"
}
