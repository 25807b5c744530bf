//! pgjdbc (Java, as DBeaver and JDBC applications use it) and node-postgres through pgvalet, in
//! session and in transaction mode: the programs in tests/drivers/ (`PgjdbcClients.java`,
//! `node_pg.js`) check every result themselves and exit non-zero on the first wrong one.
//! `make test` installs the JDK, Debian's pgjdbc and node-postgres (`make node-deps`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Proxy, pki};
use pgvalet::pool::Stats;
use tokio::process::Command;
use tokio::sync::OnceCell;

/// Two routes for the orders identity: session mode with a backend connection for each of the
/// programs' three clients, and transaction mode with two for the three.
const ROUTES: &str = r#"
[[routes]]
name = "sess"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["sess"]
databases = ["orders"]
backend = "main"
credentials = "orders"
max_size = 3
borrow_timeout = "10s"

[[routes]]
name = "txn"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["txn"]
databases = ["orders"]
backend = "main"
credentials = "orders"
pool_mode = "transaction"
max_size = 2
borrow_timeout = "10s"
"#;

/// (route and user, mode, backend connections the route holds at the end).
const MODES: [(&str, &str, usize); 2] = [("sess", "session", 3), ("txn", "transaction", 2)];

/// Debian's pgjdbc (`libpostgresql-jdbc-java`).
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a driver program; returns its output, failing the test (with the output) when it fails.
async fn run(what: &str, cmd: &mut Command) -> String {
    let run = cmd.kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 3 minutes"))
        .unwrap_or_else(|e| panic!("{what} could not start: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// Compiles tests/drivers/PgjdbcClients.java once per test process; returns the class directory.
async fn pgjdbc_classes() -> &'static Path {
    static CLASSES: OnceCell<PathBuf> = OnceCell::const_new();
    CLASSES
        .get_or_init(|| async {
            assert!(
                Path::new(PGJDBC_JAR).exists(),
                "{PGJDBC_JAR} is missing: run `make deps` (`make test` does it)"
            );
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("pgjdbc-classes-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            run(
                "javac",
                Command::new("javac")
                    .args(["-Xlint:all", "-Werror", "-cp", PGJDBC_JAR, "-d"])
                    .arg(&dir)
                    .arg(root().join("tests/drivers/PgjdbcClients.java")),
            )
            .await;
            dir
        })
        .await
}

/// Checks that every client is gone: the pool holds its connections, none lent out.
async fn pool_settled(proxy: &Proxy, route: &str, connections: usize) {
    let expected = Stats {
        idle: connections,
        active: 0,
        waiting: 0,
    };
    proxy.wait_for_pool(route, "orders", expected).await;
}

/// Runs PgjdbcClients through `proxy` on `route` in `mode` with extra connection properties;
/// checks its summary line and that the pool ends with `connections`, none lent out.
async fn pgjdbc(proxy: &Proxy, route: &str, mode: &str, connections: usize, props: &[&str]) {
    let classes = pgjdbc_classes().await;
    assert!(
        pki().join("orders.pk8").exists(),
        "the test PKI has orders.pk8"
    );
    let out = run(
        &format!("PgjdbcClients ({mode} mode, {props:?})"),
        Command::new("java")
            .arg("-cp")
            .arg(format!("{}:{PGJDBC_JAR}", classes.display()))
            .args(["PgjdbcClients", &proxy.port().to_string()])
            .arg(pki())
            .args([route, "orders", mode])
            .args(props),
    )
    .await;
    let summary = format!(
        "{mode}: 3 clients on {connections} backend connections; named statements, batch of 1000, transaction, error and rollback: ok"
    );
    assert!(out.contains(&summary), "{out}");
    pool_settled(proxy, route, connections).await;
}

/// pgjdbc with the key as PKCS#8 DER: named statements past the prepare threshold, batches of
/// 1000 (one that commits, one that fails on a duplicate key in a transaction), a transaction,
/// division by zero in a transaction (22012, then 25P02) and the rollback. In transaction mode
/// with `assumeMinServerVersion=9.4`, as with other transaction poolers: pgjdbc then sends
/// `extra_float_digits` and `application_name` in the startup packet, which pgvalet carries from
/// one backend connection to the next, instead of session-level `SET`s, which pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_in_session_and_transaction_mode() {
    let proxy = Proxy::start_with("", ROUTES).await;
    pgjdbc(&proxy, "sess", "session", 3, &[]).await;
    pgjdbc(
        &proxy,
        "txn",
        "transaction",
        2,
        &["assumeMinServerVersion=9.4"],
    )
    .await;
    assert!(proxy.cancels.is_empty(), "every key was withdrawn");
    proxy.stop().await;
}

/// pgjdbc as shipped (DBeaver's settings) in transaction mode. After the startup it sends
/// `SET extra_float_digits = 3` and `SET application_name = '…'`; pgvalet pins the client to its
/// backend connection for the first, so the third client of a two-connection route waits for a
/// connection and gets 53300 at connect. Both settings are ones pgvalet already carries for a
/// client when they come in the startup packet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_defaults_in_transaction_mode() {
    let proxy = Proxy::start_with("", ROUTES).await;
    pgjdbc(&proxy, "txn", "transaction", 2, &[]).await;
    proxy.stop().await;
}

/// node-postgres with `ssl: {ca, cert, key}`: named statements of the same name in three
/// clients, 1000 inserts in a transaction beside 1000 in autocommit, a transaction, a named
/// statement that fails to prepare, division by zero in a transaction and the rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_in_session_and_transaction_mode() {
    let drivers = root().join("tests/drivers");
    assert!(
        drivers.join("node_modules/pg").exists(),
        "node-postgres is missing: run `make node-deps` (`make test` does it)"
    );
    let proxy = Proxy::start_with("", ROUTES).await;
    let port = proxy.port().to_string();
    for (route, mode, connections) in MODES {
        let out = run(
            &format!("node_pg.js ({mode} mode)"),
            Command::new("node")
                .arg(drivers.join("node_pg.js"))
                .arg(&port)
                .arg(pki())
                .args([route, "orders", mode]),
        )
        .await;
        let summary = format!(
            "{mode}: 3 clients on {connections} backend connections; named statements, 2 x 1000 inserts, transaction, errors and rollback: ok"
        );
        assert!(out.contains(&summary), "{out}");
        pool_settled(&proxy, route, connections).await;
    }
    assert!(proxy.cancels.is_empty(), "every key was withdrawn");
    proxy.stop().await;
}

/// node-postgres' quick-disconnect test, 20 clients ended right after `connect()`: each writes
/// its Terminate ahead of its SSLRequest, and no error may reach the application for them,
/// direct or through pgvalet in either mode. Postgres closes such a connection without a word;
/// while pgvalet answered it with FATAL 08P01, about half the clients reported "There was an
/// error establishing an SSL connection".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_clients_ended_while_connecting_see_no_error() {
    let drivers = root().join("tests/drivers");
    let script = drivers.join("node_quick_disconnect.js");
    let c = common::cluster();
    let direct_port = c.port.to_string();
    let direct = [
        direct_port.as_str(),
        "orders_svc",
        "orders",
        c.password("orders_svc"),
    ];
    let proxy = Proxy::start_with("", ROUTES).await;
    let port = proxy.port().to_string();
    let ways = [
        ("direct", &direct[..]),
        ("session", &[port.as_str(), "sess", "orders"][..]),
        ("transaction", &[port.as_str(), "txn", "orders"][..]),
    ];
    for (way, args) in ways {
        let out = run(
            &format!("node_quick_disconnect.js ({way})"),
            Command::new("node")
                .arg(&script)
                .arg(args[0])
                .arg(pki())
                .args(&args[1..]),
        )
        .await;
        assert!(
            out.contains("20 clients ended while connecting, no error"),
            "{way}: {out}"
        );
    }
    proxy.stop().await;
}
