//! RDS Proxy's settings under their own names: `idle_client_timeout`,
//! `connection_borrow_timeout`, `init_query`, `max_idle_connections_percent` (the
//! `max_connections_percent` share is in tests/pooling.rs), each shown by a real client.

mod common;

use std::time::{Duration, Instant};

use common::*;

const ROUTES: &str = r#"
[[routes]]
name = "rds"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["rds"]
databases = ["orders"]
backend = "main"
credentials = "orders"
max_size = 1
connection_borrow_timeout = "1s"
init_query = "SET statement_timeout = 4242; SET application_name = 'from-init'"

[[routes]]
name = "rds_txn"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["rds_txn"]
databases = ["orders"]
backend = "main"
credentials = "orders"
pool_mode = "transaction"
max_connections_percent = 2
max_idle_connections_percent = 1
"#;

/// A client that says nothing for `idle_client_timeout` is closed as Postgres closes one
/// (FATAL 57P05); one waiting on a long query is not, in either pool mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_busy_ones_are_not() {
    let proxy = Proxy::start_with("idle_client_timeout = \"1s\"", ROUTES).await;
    for user in ["rds", "rds_txn"] {
        let mut idle = Raw::startup(proxy.port(), &[("user", user), ("database", "orders")]).await;
        let msgs = idle.read_until_ready_or_error().await;
        assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
        let started = Instant::now();
        // A query that runs longer than the timeout is not idleness.
        let busy = idle.simple_query("select pg_sleep(1.6)").await;
        assert!(busy.is_ok(), "{user}: {busy:?}");
        let msgs = idle.read_until_ready_or_error().await;
        let waited = started.elapsed();
        assert_eq!(
            error_code(&msgs).as_deref(),
            Some("57P05"),
            "{user}: {msgs:?}"
        );
        assert_eq!(
            error_message(&msgs).as_deref(),
            Some("terminating connection due to idle-session timeout")
        );
        assert!(
            waited >= Duration::from_millis(2600) && waited < Duration::from_secs(5),
            "{user}: closed {waited:?} after the query began"
        );
        assert!(idle.closed_within(Duration::from_secs(2)).await);
    }
    proxy.stop().await;
}

/// A client that takes none of its answer for `idle_client_timeout` is as idle as one that says
/// nothing: it is closed, and the backend connection it held mid-answer is closed too, so its
/// slot serves the next client (the route has one), in either pool mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_nothing_of_its_answer_frees_its_backend() {
    let proxy = Proxy::start_with("idle_client_timeout = \"1s\"", ROUTES).await;
    for user in ["rds", "rds_txn"] {
        let mut stalled =
            Raw::startup(proxy.port(), &[("user", user), ("database", "orders")]).await;
        let msgs = stalled.read_until_ready_or_error().await;
        assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
        // 200 MB of rows, none of them read; the socket stays open.
        stalled
            .send(&query_message(
                "select repeat('x', 1000000) from generate_series(1, 200)",
            ))
            .await;
        let started = Instant::now();
        proxy
            .wait_for_pool(
                user,
                "orders",
                pgvalet::pool::Stats {
                    idle: 0,
                    active: 0,
                    waiting: 0,
                },
            )
            .await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
            "{user}: freed {waited:?} after the query was sent"
        );
        let next = pg_connect(proxy.port(), "orders", user, "orders")
            .await
            .unwrap();
        let row = next.query_one("select 7", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 7, "{user}");
        drop(stalled);
    }
    proxy.stop().await;
}

/// `connection_borrow_timeout` is `borrow_timeout` under RDS Proxy's name; `init_query` runs on
/// each new connection and again after each reset, before any client settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrow_timeout_by_its_rds_name_and_init_query() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let port = proxy.port();
    let holder = pg_connect(port, "orders", "rds", "orders").await.unwrap();
    let row = holder
        .query_one("select current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "4242ms", "init_query ran");
    let started = Instant::now();
    let refused = pg_connect(port, "orders", "rds", "orders")
        .await
        .expect_err("the only connection is taken");
    let waited = started.elapsed();
    assert_eq!(sqlstate(&refused).as_deref(), Some("53300"), "{refused:?}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    drop(holder);
    proxy
        .wait_for_pool(
            "rds",
            "orders",
            pgvalet::pool::Stats {
                idle: 1,
                active: 0,
                waiting: 0,
            },
        )
        .await;
    // The same connection after its DISCARD ALL: init_query again.
    let next = pg_connect(port, "orders", "rds", "orders").await.unwrap();
    let row = next
        .query_one("select current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "4242ms",
        "init_query ran after the reset"
    );
    proxy.stop().await;
}

/// A pool keeps open no more idle connections than `max_idle_connections_percent` of the
/// backend's connection slots, as RDS Proxy: 1% of 197 (200 less 3 reserved) is 1, of a pool of
/// 3 (2%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_their_share_are_closed() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let port = proxy.port();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            pg_connect(port, "orders", "rds_txn", "orders")
                .await
                .unwrap(),
        );
    }
    // Three transactions at once need three connections.
    let mut open = Vec::new();
    for client in &mut clients {
        let tx = client.transaction().await.unwrap();
        tx.query_one("select 1", &[]).await.unwrap();
        open.push(tx);
    }
    assert_eq!(proxy.pool_stats("rds_txn", "orders").active, 3);
    for tx in open {
        tx.commit().await.unwrap();
    }
    proxy
        .wait_for_pool(
            "rds_txn",
            "orders",
            pgvalet::pool::Stats {
                idle: 1,
                active: 0,
                waiting: 0,
            },
        )
        .await;
    proxy.stop().await;
}
