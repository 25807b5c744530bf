//! Stopping as ECS stops a task: SIGTERM, then SIGKILL 30 s later. pgvalet stops accepting,
//! tells idle clients FATAL 57P01 as Postgres does, lets transactions under way commit, and
//! exits 0.

mod common;

use std::time::{Duration, Instant};

use common::process::ProxyProcess;
use common::*;

fn start(top: &str) -> ProxyProcess {
    let dir = tempfile::tempdir().unwrap();
    let text = common::proxy::config_text(dir.path(), top, "");
    ProxyProcess::start(&text, dir).expect("pgvalet did not start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_open_transaction_commit_and_exits_zero() {
    cluster().admin_sql(
        "orders",
        "create table if not exists drained (x int); grant all on drained to orders_svc",
    );
    let mut proxy = start("shutdown_timeout = \"10s\"");
    let busy = pg_connect(proxy.port, "orders", "orders", "orders")
        .await
        .unwrap();
    let idle = pg_connect(proxy.port, "orders", "orders", "orders")
        .await
        .unwrap();
    busy.batch_execute("begin; insert into drained values (1)")
        .await
        .unwrap();

    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The idle client was told and let go.
    let err = idle.query_one("select 1", &[]).await.unwrap_err();
    assert!(
        err.is_closed() || sqlstate(&err).as_deref() == Some("57P01"),
        "{err:?}"
    );
    // No new clients.
    assert!(
        pg_connect(proxy.port, "orders", "orders", "orders")
            .await
            .is_err()
    );
    // The transaction under way goes on and commits.
    busy.batch_execute("insert into drained values (2)")
        .await
        .unwrap();
    busy.batch_execute("commit").await.unwrap();

    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("pgvalet did not exit after the last transaction");
    assert!(status.success(), "{status}");
    let rows = cluster().admin_sql("orders", "select count(*) from drained where x in (1, 2)");
    assert_eq!(rows, "2");
    let logs = proxy.logs();
    assert!(
        logs.contains("pgvalet stopping") && logs.contains("pgvalet stopped"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_ends_transactions_that_do_not() {
    let mut proxy = start("shutdown_timeout = \"1s\"");
    let stuck = pg_connect(proxy.port, "orders", "orders", "orders")
        .await
        .unwrap();
    stuck.batch_execute("begin").await.unwrap();
    let started = Instant::now();
    proxy.signal("INT");
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("pgvalet did not exit");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited for shutdown_timeout"
    );
    assert!(
        stuck.query_one("select 1", &[]).await.is_err(),
        "the session was closed"
    );
    assert!(
        proxy.logs().contains("shutdown_timeout reached"),
        "{}",
        proxy.logs()
    );
}
