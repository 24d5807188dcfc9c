//! A broker of a test's own: Nisshi on a free port, keeping its data in SQLite in a directory of
//! its own, which the test can kill -9 and start again on the same data; or one that lets in
//! only a user it knows (SASL SCRAM).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use financing_messaging::{BrokerSecurity, KafkaConfig, SaslCredentials};
use uuid::Uuid;

use crate::{Services, wait_until};

pub struct OwnBroker {
    port: u16,
    dir: PathBuf,
    process: Option<Child>,
    /// The user it lets in, if it asks clients to authenticate.
    user: Option<SaslCredentials>,
}

impl OwnBroker {
    /// Starts the broker and waits until it accepts connections.
    pub async fn start() -> OwnBroker {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("financing-broker-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory for the broker");
        let mut broker = OwnBroker {
            port,
            dir,
            process: None,
            user: None,
        };
        broker.restart().await;
        broker
    }

    /// A broker that lets in `username` with `password` (SASL SCRAM-SHA-512) and no one else:
    /// the user is made on the broker first, then it starts again asking for authentication.
    pub async fn authenticating(username: &str, password: &str) -> OwnBroker {
        let mut broker = OwnBroker::start().await;
        let created = Command::new(nisshi())
            .args(["user", "create", "--broker", &broker.url()])
            .args(["--mechanism", "scram512", username, password])
            .env("RUST_LOG", "warn")
            .output()
            .expect("nisshi runs");
        assert!(created.status.success(), "the user is created: {created:?}");
        broker.user = Some(SaslCredentials {
            mechanism: "SCRAM-SHA-512".into(),
            username: username.into(),
            password: password.into(),
        });
        broker.restart().await;
        broker
    }

    /// Topics of the test's own on this broker, reached as its user if it has one.
    pub fn kafka(&self) -> KafkaConfig {
        let security = BrokerSecurity {
            protocol: self.user.as_ref().map(|_| "sasl_plaintext".to_owned()),
            sasl: self.user.clone(),
            ca_location: None,
        };
        KafkaConfig {
            brokers: format!("127.0.0.1:{}", self.port),
            security,
            ..Services::from_env().own_topics()
        }
    }

    /// Kills the broker at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().expect("the broker can be killed");
            process.wait().expect("the broker exits");
        }
    }

    /// Starts the broker (again) on its data, and waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.kill();
        let mut command = Command::new(nisshi());
        command
            .args(["broker", "--listener-url", &self.url()])
            .args(["--advertised-listener-url", &self.url()])
            .args(["--storage-engine", "sqlite://broker.db"]);
        if self.user.is_some() {
            command.arg("--authentication");
        }
        let process = command
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nisshi is installed (scripts/test.sh installs it)");
        self.process = Some(process);
        let port = self.port;
        wait_until("the broker accepts connections", || async move {
            TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        })
        .await;
        let exited = self
            .process
            .as_mut()
            .and_then(|p| p.try_wait().ok().flatten());
        assert!(
            exited.is_none(),
            "the broker exited ({exited:?}): another process has port {port}"
        );
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The broker binary: `NISSHI` if set, else `nisshi` on the PATH or in Cargo's bin directory.
fn nisshi() -> PathBuf {
    if let Some(path) = std::env::var_os("NISSHI") {
        return path.into();
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|home| home.join("bin").join("nisshi"));
    match cargo_bin {
        Some(path) if path.exists() => path,
        _ => "nisshi".into(),
    }
}
