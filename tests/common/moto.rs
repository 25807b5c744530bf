//! A local AWS Secrets Manager: the moto server from the venv `make test` creates, on a free
//! loopback port, watched like the Postgres cluster so it cannot outlive the test process.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};

use super::watchdog::Watchdog;

pub struct Moto {
    pub port: u16,
    watchdog: Watchdog,
}

fn moto_server() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server")
}

/// Whether the moto tests can run. They are skipped, loudly, only when there is no Python at
/// all; with Python but no venv they fail and say how to make it (`make venv`).
pub fn available() -> bool {
    if moto_server().exists() {
        return true;
    }
    let python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if python {
        panic!(
            "{} is missing: run `make venv` (`make test` does it)",
            moto_server().display()
        );
    }
    eprintln!(
        "\n*** SKIPPED: no python3 on this machine, so no local Secrets Manager (moto). `make test` installs it. ***\n"
    );
    false
}

impl Moto {
    pub fn start() -> Moto {
        let port = super::postgres::free_port();
        let script = format!(
            "{} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!\necho started\ncat >/dev/null\nkill $pid 2>/dev/null\nwait $pid 2>/dev/null\n",
            moto_server().display()
        );
        let (watchdog, _) = Watchdog::start(&script);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { port, watchdog }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (Secrets Manager goes down).
    pub fn stop(&self) {
        self.watchdog.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A real Secrets Manager client pointed at this server.
    pub fn client(&self) -> Client {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.url())
            .credentials_provider(Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "pgvalet-tests",
            ))
            .http_client(pgvalet::credentials::aws_http::RustlsHttpClient)
            .build();
        Client::from_conf(config)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The JSON of a database secret as RDS writes it.
pub fn secret_json(user: &str, password: &str) -> String {
    format!(
        r#"{{"engine":"postgres","username":"{user}","password":"{password}","host":"127.0.0.1","dbname":"orders"}}"#
    )
}

/// Creates a secret; returns its AWSCURRENT version id.
pub async fn create_secret(client: &Client, name: &str, value: &str) -> String {
    let out = client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
    out.version_id().unwrap().to_owned()
}

/// Puts a new version under AWSPENDING (the "create secret" step of a rotation).
pub async fn put_pending(client: &Client, name: &str, value: &str) -> String {
    let out = client
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    out.version_id().unwrap().to_owned()
}

/// Moves AWSCURRENT from `from` to `to` (the "finish secret" step); `from` becomes AWSPREVIOUS.
pub async fn move_current(client: &Client, name: &str, from: &str, to: &str) {
    client
        .update_secret_version_stage()
        .secret_id(name)
        .version_stage("AWSCURRENT")
        .move_to_version_id(to)
        .remove_from_version_id(from)
        .send()
        .await
        .unwrap();
    // The finished version is no longer pending.
    let _ = client
        .update_secret_version_stage()
        .secret_id(name)
        .version_stage("AWSPENDING")
        .remove_from_version_id(to)
        .send()
        .await;
}
