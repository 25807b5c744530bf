//! pgvalet in-process, on 127.0.0.1:0, with a config written the way a user would write one.

use std::net::SocketAddr;
use std::path::Path;

use pgvalet::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{cluster, pki};

pub struct Proxy {
    pub addr: SocketAddr,
    /// The `[[endpoints]]` listeners: name and address.
    pub endpoints: Vec<(String, SocketAddr)>,
    pub dir: tempfile::TempDir,
    /// Reloads the configuration; also gives the pools in force, to check their counts.
    pub reloader: pgvalet::server::Reloader,
    pub cancels: std::sync::Arc<pgvalet::cancel::Registry>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

fn secret_json(user: &str, password: &str) -> String {
    format!(
        r#"{{"engine":"postgres","username":"{user}","password":"{password}","host":"127.0.0.1","dbname":"orders"}}"#
    )
}

/// The config every test starts from: routes `orders` and `billing` as in `make run`, plus
/// routes that log in with MD5 and cleartext users, one that allows any database, and one
/// whose credentials hold a wrong password. `top` goes before the tables (top-level keys),
/// `tables` after them.
pub fn config_text(dir: &Path, top: &str, tables: &str) -> String {
    let c = cluster();
    for (name, user) in [
        ("orders", "orders_svc"),
        ("billing", "billing_svc"),
        ("md5", "md5_svc"),
        ("plain", "plain_svc"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.json")),
            secret_json(user, c.password(user)),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("wrong.json"),
        secret_json("orders_svc", "not-the-password"),
    )
    .unwrap();
    let p = |name: &str| pki().join(name).display().to_string();
    let d = |name: &str| dir.join(name).display().to_string();
    let uri = |svc: &str| format!("uri:spiffe://pgvalet.dev/svc/{svc}");
    let mut text = format!(
        r#"
listen_addr = "127.0.0.1:0"
{cidrs}
{top}

[tls]
cert = "{server_crt}"
key = "{server_key}"
client_ca = "{ca}"
crls = ["{crl}"]

[backends.main]
host = "127.0.0.1"
port = {port}
tls = "verify-full"
ca = "{ca}"
server_name = "localhost"
"#,
        server_crt = p("server.crt"),
        server_key = p("server.key"),
        ca = p("ca.crt"),
        crl = p("ca.crl"),
        port = c.port,
        cidrs = if top.contains("allow_cidrs") {
            ""
        } else {
            r#"allow_cidrs = ["127.0.0.0/8", "::1/128"]"#
        },
    );
    for name in ["orders", "billing", "md5", "plain", "wrong"] {
        text += &format!(
            "\n[credentials.{name}]\nsource = \"file\"\npath = \"{}\"\n",
            d(&format!("{name}.json"))
        );
    }
    let routes = [
        ("orders", uri("orders"), "orders", "\"orders\"", "orders"),
        (
            "billing",
            uri("billing"),
            "billing",
            "\"billing\"",
            "billing",
        ),
        (
            "orders_md5",
            uri("orders"),
            "orders_md5",
            "\"orders\"",
            "md5",
        ),
        (
            "orders_plain",
            uri("orders"),
            "orders_plain",
            "\"orders\"",
            "plain",
        ),
        ("orders_any", uri("orders"), "orders_any", "\"*\"", "orders"),
        (
            "orders_wrong",
            uri("orders"),
            "orders_wrong",
            "\"orders\"",
            "wrong",
        ),
    ];
    for (name, identity, user, dbs, creds) in routes {
        text += &format!(
            "\n[[routes]]\nname = \"{name}\"\nidentity = \"{identity}\"\nusers = [\"{user}\"]\ndatabases = [{dbs}]\nbackend = \"main\"\ncredentials = \"{creds}\"\n"
        );
    }
    text + tables
}

impl Proxy {
    /// Starts pgvalet with the standard test config.
    pub async fn start() -> Proxy {
        Proxy::start_with("", "").await
    }

    /// Starts pgvalet with extra top-level keys and extra tables.
    pub async fn start_with(top: &str, tables: &str) -> Proxy {
        super::init_logging();
        let dir = tempfile::tempdir().unwrap();
        let text = config_text(dir.path(), top, tables);
        let config = Config::parse(&text, Path::new("test.toml")).expect("test config is valid");
        Proxy::start_config(config, dir).await
    }

    pub async fn start_config(config: Config, dir: tempfile::TempDir) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Proxy::start_on(listener, config, dir).await
    }

    /// Starts pgvalet on a listener the caller bound (to know its port beforehand).
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        config: Config,
        dir: tempfile::TempDir,
    ) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = pgvalet::server::Server::start(config)
            .await
            .expect("pgvalet failed to start");
        let (reloader, cancels) = (server.reloader(), server.cancels());
        let endpoints = server.endpoint_addrs();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            endpoints,
            dir,
            reloader,
            cancels,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The port of the `[[endpoints]]` listener named `name`.
    pub fn endpoint_port(&self, name: &str) -> u16 {
        self.endpoints
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.port())
            .unwrap_or_else(|| panic!("no endpoint named {name}"))
    }

    /// The counts of the pool of `route` for `database` (zero if it was never used).
    pub fn pool_stats(&self, route: &str, database: &str) -> pgvalet::pool::Stats {
        let name = format!("{route}/{database}");
        self.reloader
            .pools()
            .all()
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.stats())
            .unwrap_or_default()
    }

    /// Waits up to five seconds for the pool of `route`/`database` to show `expected`.
    pub async fn wait_for_pool(&self, route: &str, database: &str, expected: pgvalet::pool::Stats) {
        for _ in 0..100 {
            if self.pool_stats(route, database) == expected {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            self.pool_stats(route, database),
            expected,
            "pool {route}/{database}"
        );
    }

    /// Stops pgvalet and waits until every session task has ended.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("pgvalet panicked");
        }
    }
}

/// A `[[routes]]` table for the orders service's certificate: user `name` on database `orders`
/// through `backend` with the orders credentials, in `pool_mode`, plus `extra` lines.
pub fn orders_route(name: &str, backend: &str, pool_mode: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\nusers = [\"{name}\"]\ndatabases = [\"orders\"]\nbackend = \"{backend}\"\ncredentials = \"orders\"\npool_mode = \"{pool_mode}\"\n{extra}\n"
    )
}
