//! Differences from Postgres that the drivers' own test suites found through pgvalet
//! (scripts/driver-suites.sh; causes in docs/compatibility.md), each as the smallest exchange
//! that shows it, kept as a regression test once mended.

mod common;

use std::time::Duration;

use common::*;
use pgvalet::pool::Stats;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const TXN_ROUTE: &str = r#"
[[routes]]
name = "txn"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["txn"]
databases = ["orders"]
backend = "main"
credentials = "orders"
pool_mode = "transaction"
max_size = 1
"#;

/// A session through pgvalet with the orders certificate, `extra` added to the startup packet;
/// returns it and its login messages.
async fn login(
    port: u16,
    user: &str,
    extra: &[(&str, &str)],
) -> (Raw<TlsStream<TcpStream>>, Vec<Msg>) {
    let mut raw = Raw::connect(port)
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    let mut params = vec![("user", user), ("database", "orders")];
    params.extend_from_slice(extra);
    raw.send(&startup_packet(196_608, &params)).await;
    let msgs = raw.read_until_ready_or_error().await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    (raw, msgs)
}

async fn show(raw: &mut Raw<TlsStream<TcpStream>>, setting: &str) -> String {
    raw.simple_query(&format!("SHOW {setting}")).await.unwrap()[0][0].clone()
}

const ONE_IDLE: Stats = Stats {
    idle: 1,
    active: 0,
    waiting: 0,
};

/// node-postgres' statement_timeout and options tests: Postgres applies every setting of the
/// startup packet (and of `options`) to the session it starts. pgvalet sends them to the backend
/// only when it opens a connection, so a client given a pooled one loses them, and the next
/// client of the connection that was opened with them inherits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_follow_the_client_not_the_connection() {
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    for (route, user) in [("orders", "orders"), ("txn", "txn")] {
        // One pooled connection, opened by a client that set nothing.
        let (mut first, _) = login(proxy.port(), user, &[]).await;
        assert_eq!(show(&mut first, "statement_timeout").await, "0");
        drop(first);
        proxy.wait_for_pool(route, "orders", ONE_IDLE).await;

        let asks = [
            ("statement_timeout", "3000"),
            (
                "options",
                "-c lock_timeout=2s --idle_in_transaction_session_timeout=4s",
            ),
        ];
        let (mut asking, _) = login(proxy.port(), user, &asks).await;
        assert_eq!(
            show(&mut asking, "statement_timeout").await,
            "3s",
            "{route}"
        );
        assert_eq!(show(&mut asking, "lock_timeout").await, "2s", "{route}");
        assert_eq!(
            show(&mut asking, "idle_in_transaction_session_timeout").await,
            "4s",
            "{route}"
        );
        drop(asking);
        proxy.wait_for_pool(route, "orders", ONE_IDLE).await;

        // The next client of that connection gets the server's defaults again.
        let (mut next, _) = login(proxy.port(), user, &[]).await;
        assert_eq!(show(&mut next, "statement_timeout").await, "0", "{route}");
        assert_eq!(show(&mut next, "lock_timeout").await, "0", "{route}");
        drop(next);
        proxy.wait_for_pool(route, "orders", ONE_IDLE).await;
    }
    proxy.stop().await;
}

/// psycopg's test_cancel_conn_*: libpq 17+ sends a CancelRequest inside TLS and reads until the
/// server closes; Postgres ends with a TLS close_notify, and without one OpenSSL reports
/// "unexpected eof while reading" and libpq a failed cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_inside_tls_ends_with_close_notify() {
    let proxy = Proxy::start().await;
    let (mut session, msgs) = login(proxy.port(), "orders", &[]).await;
    let key = msgs.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
    session.send(&query_message("select pg_sleep(30)")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut cancel = Raw::connect(proxy.port())
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    let mut packet = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    packet.extend(&key.body);
    cancel.send(&packet).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), cancel.stream.read(&mut buf))
        .await
        .expect("pgvalet closes the cancel connection");
    // tokio-rustls reads a close_notify as end of stream, a bare TCP close as UnexpectedEof.
    assert!(matches!(read, Ok(0)), "{read:?}");

    let msgs = session.read_until_ready_or_error().await;
    assert_eq!(error_code(&msgs).as_deref(), Some("57014"), "{msgs:?}");
    proxy.stop().await;
}

/// asyncpg's test_introspection: a client drops a database it has just left. Direct, its
/// backend left with it; through pgvalet the pool's idle connection to that database makes
/// Postgres refuse with 55006 "database … is being accessed by other users".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_drop_a_database_pgvalet_holds_idle_connections_to() {
    let c = common::cluster();
    c.admin_sql(
        "postgres",
        "DROP DATABASE IF EXISTS compat_drop WITH (FORCE)",
    );
    c.admin_sql("postgres", "CREATE DATABASE compat_drop OWNER orders_svc");
    let proxy = Proxy::start().await;
    let used = psql(
        proxy.port(),
        "orders",
        "orders_any",
        "compat_drop",
        "select 1",
    )
    .await;
    assert!(used.ok, "{}", used.stderr);
    proxy
        .wait_for_pool("orders_any", "compat_drop", ONE_IDLE)
        .await;

    let dropped = psql(
        proxy.port(),
        "orders",
        "orders_any",
        "orders",
        "DROP DATABASE compat_drop",
    )
    .await;
    assert!(dropped.ok, "{}", dropped.stderr);
    proxy.stop().await;
}
