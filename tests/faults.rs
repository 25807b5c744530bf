//! Faults pgvalet must survive without a restart: its backend restarted under load, and a
//! backend that accepts connections and never answers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A route in each pool mode to `backend`.
fn routes_to(backend: &str, session_user: &str, txn_user: &str) -> String {
    use common::proxy::orders_route;
    orders_route(session_user, backend, "session", "max_size = 4")
        + &orders_route(txn_user, backend, "transaction", "max_size = 4")
}

/// The backend restarts while clients run queries in both pool modes: work under way fails
/// with Postgres' own error, new work succeeds once it is back, and the pools heal by
/// themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_restart_under_load_heals_without_restarting_pgvalet() {
    // The shared cluster is the one the routes' credentials name; it restarts in place.
    let backend = cluster();
    let proxy = Proxy::start_with("", &routes_to("main", "restart_s", "restart_t")).await;
    let port = proxy.port();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..4 {
        let user = if i % 2 == 0 { "restart_s" } else { "restart_t" };
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.spawn(async move {
            let mut codes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok(client) = pg_connect(port, "orders", user, "orders").await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                while !stop.load(Ordering::Relaxed) {
                    match client.query_one("select pg_sleep(0.02)::text", &[]).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            codes.push(sqlstate(&e));
                            break;
                        }
                    }
                }
            }
            codes
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline,
            "no query ran before the restart ({} failed)",
            failed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    backend.stop_server();
    tokio::time::sleep(Duration::from_millis(500)).await;
    backend.start_server();
    let restarted = Instant::now();
    // New work succeeds again, soon, without pgvalet being restarted.
    let after_restart = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < after_restart + 20 {
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "no queries succeed after the backend came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut codes = Vec::new();
    while let Some(worker) = workers.join_next().await {
        codes.extend(worker.unwrap());
    }
    // The errors of work under way are Postgres' (the shutdown's 57P01) or a closed
    // connection (no SQLSTATE), never a pgvalet invention.
    for code in &codes {
        assert!(
            matches!(code.as_deref(), None | Some("57P01" | "08006" | "57P03")),
            "{codes:?}"
        );
    }
    assert!(
        failed.load(Ordering::Relaxed) > 0,
        "the restart went unseen"
    );
    // The pools are whole again: every connection idle, none waiting, and a fresh client of
    // each mode is served.
    for user in ["restart_s", "restart_t"] {
        let client = pg_connect(port, "orders", user, "orders").await.unwrap();
        client.batch_execute("select 1").await.unwrap();
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stats = proxy.pool_stats(user, "orders");
            if stats.active == 0 && stats.waiting == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{user}: {stats:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    proxy.stop().await;
}

/// A backend that accepts TCP and never says a word: the client gets 08006 naming it after
/// `connect_timeout`, and sessions of other routes are not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_times_out_at_connect_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            sockets.push(s);
        }
    });
    let tables = format!(
        "\n[backends.silent]\nhost = \"127.0.0.1\"\nport = {silent_port}\ntls = \"require\"\nconnect_timeout = \"1s\"\n{}",
        routes_to("silent", "silent_s", "silent_t")
    );
    let proxy = Proxy::start_with("handshake_timeout = \"8s\"", &tables).await;
    let port = proxy.port();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let err = pg_connect(port, "orders", "silent_s", "orders")
            .await
            .unwrap_err();
        (err, started.elapsed())
    });
    // Meanwhile another route is served at once.
    let started = Instant::now();
    let other = pg_connect(port, "orders", "orders", "orders")
        .await
        .unwrap();
    other.batch_execute("select 1").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let (err, took) = waiting.await.unwrap();
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err:?}");
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("\"silent\""), "{message}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    held.abort();
    proxy.stop().await;
}
