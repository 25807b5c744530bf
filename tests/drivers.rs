//! Drivers other than tokio-postgres and libpq, through pgvalet as their users run them: the
//! scripts in tests/drivers/ run in the test venv (`make venv`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Proxy, pki};

const TXN_ROUTE: &str = r#"
[[routes]]
name = "txn"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["txn"]
databases = ["orders"]
backend = "main"
credentials = "orders"
pool_mode = "transaction"
max_size = 2
"#;

/// Runs `tests/drivers/SCRIPT` with the venv's Python; returns its output, failing the test
/// (with the script's output) when it fails.
async fn python(script: &str, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make venv` (`make test` does it)",
        python.display()
    );
    let run = tokio::process::Command::new(python)
        .arg(root.join("tests/drivers").join(script))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the driver script did not finish in 3 minutes")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_asyncpg_statement_caches_work_in_transaction_mode() {
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    let port = proxy.port().to_string();
    let pki = pki().display().to_string();
    let out = python("statement_caches.py", &[&port, &pki, "txn", "orders"]).await;
    assert!(out.contains("4 clients on 2 backend connections"), "{out}");
    // Every client is gone: the pool holds its two connections, none lent out.
    proxy
        .wait_for_pool(
            "txn",
            "orders",
            pgvalet::pool::Stats {
                idle: 2,
                active: 0,
                waiting: 0,
            },
        )
        .await;
    proxy.stop().await;
}

/// libpq 18 (psycopg's bundled libpq) asking for protocol 3.2 gets it, long cancel key and all,
/// with and without direct TLS; psycopg's and asyncpg's own notifications carry the pid of
/// their key; in session mode that pid is also `pg_backend_pid()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_32_cancel_and_pids_as_direct() {
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    let port = proxy.port().to_string();
    let pki = pki().display().to_string();
    for (user, mode) in [("orders", "session"), ("txn", "transaction")] {
        let out = python("protocol_and_pids.py", &[&port, &pki, user, "orders", mode]).await;
        assert!(out.contains(&format!("{mode}: ok")), "{out}");
        assert!(
            out.contains("max_protocol_version=latest sslnegotiation=direct: protocol 30002"),
            "{out}"
        );
    }
    assert!(proxy.cancels.is_empty(), "every key was withdrawn");
    proxy.stop().await;
}

/// A session-mode route without `max_size` takes its share of the backend's connections, so an
/// application's own pool of 30 (asyncpg) plus a listener connection all work at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_pool_of_30_fits_a_session_mode_route() {
    let proxy = Proxy::start().await;
    let port = proxy.port().to_string();
    let pki = pki().display().to_string();
    let out = python("app_pool.py", &[&port, &pki, "orders", "orders"]).await;
    assert!(out.contains("pool of 30 busy at once"), "{out}");
    proxy.stop().await;
}

/// In transaction mode a client's `options=-c …`, the reported settings it SETs (TimeZone,
/// client_encoding, standard_conforming_strings, DateStyle) and its lone plain SETs of others
/// (lock_timeout, work_mem) follow it to every backend connection, without pinning it, and never
/// reach another client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_a_transaction_mode_client() {
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    let port = proxy.port().to_string();
    let pki = pki().display().to_string();
    let out = python("settings_follow.py", &[&port, &pki, "txn", "orders"]).await;
    assert!(out.contains("settings follow the client: ok"), "{out}");
    let pool = proxy
        .reloader
        .pools()
        .all()
        .into_iter()
        .find(|p| p.name() == "txn/orders")
        .expect("the txn pool");
    assert_eq!(pool.pins(), 0, "no SET here pins");
    proxy.stop().await;
}

/// In transaction mode SQL `EXECUTE` and `DEALLOCATE` name the statements a client prepared with
/// the protocol by the client's own names, on every backend connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_execute_of_protocol_statements_in_transaction_mode() {
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    let port = proxy.port().to_string();
    let pki = pki().display().to_string();
    let out = python("sql_execute.py", &[&port, &pki, "txn", "orders"]).await;
    assert!(
        out.contains("EXECUTE and DEALLOCATE of protocol statements: ok"),
        "{out}"
    );
    proxy
        .wait_for_pool(
            "txn",
            "orders",
            pgvalet::pool::Stats {
                idle: 2,
                active: 0,
                waiting: 0,
            },
        )
        .await;
    proxy.stop().await;
}

/// A cancel is over when the driver's cancel connection closes: the query after a cancelled one
/// is never hit by it (asyncpg, both modes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_after_a_cancel_is_not_cancelled() {
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    let port = proxy.port().to_string();
    let pki = pki().display().to_string();
    for user in ["orders", "txn"] {
        let out = python("cancel_order.py", &[&port, &pki, user, "orders"]).await;
        assert!(
            out.contains("no query after them cancelled: ok"),
            "{user}: {out}"
        );
    }
    proxy.stop().await;
}

/// Preparing a statement name already in use fails as it does direct, in both modes: 42P05
/// `prepared statement "NAME" already exists` (or the query's own error first), the rest of the
/// pipeline skipped up to its Sync, its implicit transaction undone, the first statement kept.
/// psycopg (PQprepare, pipelines) and asyncpg, each step's answer compared with Postgres'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_name_in_use_is_refused_as_direct() {
    let c = common::cluster();
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    let pki = pki().display().to_string();
    let script = "duplicate_statements.py";
    let direct = python(
        script,
        &[
            &c.port.to_string(),
            &pki,
            "orders_svc",
            "orders",
            c.password("orders_svc"),
        ],
    )
    .await;
    let direct = direct.lines().last().unwrap_or_default();
    assert!(
        direct.contains(r#"prepared statement \"s1\" already exists"#)
            && direct.contains("DuplicatePreparedStatementError"),
        "{direct}"
    );
    let direct: serde_json::Map<String, serde_json::Value> = serde_json::from_str(direct).unwrap();
    let port = proxy.port().to_string();
    for user in ["orders", "txn"] {
        let through = python(script, &[&port, &pki, user, "orders"]).await;
        let through: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(through.lines().last().unwrap_or_default()).unwrap();
        for (case, answers) in &direct {
            assert_eq!(
                through.get(case),
                Some(answers),
                "{user}: {case} (left through pgvalet, right direct)"
            );
        }
    }
    proxy.stop().await;
}

/// asyncpg's test_executemany_server_failure_during_writes, twenty times direct and in each
/// mode: the third of 128 rows of 32 KB violates the primary key; asyncpg, which reads while it
/// writes, raises the error, leaves no row, and stops writing once it sees the error. How soon
/// it sees it is a race with its own writing (4 MB in a few milliseconds) that a proxy's extra
/// hop makes closer: direct it stops early every time, through pgvalet's debug build in most
/// rounds (docs/compatibility.md has the figures). Before the relay passed the backend's output
/// on while the client was still writing, the error waited until asyncpg had written all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_executemany_stops_early_on_a_server_error() {
    let c = common::cluster();
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    let port = proxy.port().to_string();
    let pki = pki().display().to_string();
    let script = "executemany_early_error.py";
    let password = c.password("orders_svc");
    let direct = python(
        script,
        &[
            &c.port.to_string(),
            &pki,
            "orders_svc",
            "orders",
            "20",
            password,
        ],
    )
    .await;
    println!("direct: {direct}");
    for user in ["orders", "txn"] {
        let out = python(script, &[&port, &pki, user, "orders", "20"]).await;
        println!("{user}: {out}");
        let early: u32 = out
            .split("stopped early ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            early > 0,
            "{user}: asyncpg never saw the error before its last row: {out}"
        );
    }
    proxy.stop().await;
}
