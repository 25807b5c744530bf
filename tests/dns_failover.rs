//! The backend's host name moving to another server, as an Aurora failover moves the cluster
//! endpoint: a pgvalet process whose /etc/hosts the test rewrites (a mount namespace of its own)
//! and two real Postgres servers on one port, at 127.0.0.1 and 127.0.0.2. New sessions and
//! transactions follow the name; sessions open before the move keep their server until they
//! end (a transaction under way finishes there, a cancel reaches it); pgvalet's connections to
//! the old server close as they come free, logged and counted, until none are left.

mod common;

use std::io::{Seek, Write};
use std::time::{Duration, Instant};

use common::admin::{get, get_until, sample, with_metrics};
use common::postgres::{Cluster, Setup};
use common::process::ProxyProcess;
use common::proxy::orders_route;
use common::*;

const MOVED: &str = r#"pgvalet_backend_moved_total{backend="moving"}"#;
const HOST: &str = "db.pgvalet.test";

/// Points the name at `addr`, rewriting the file in place: the same length, one write, no
/// truncation, so that a lookup at that moment reads one address or the other.
fn point(hosts: &std::path::Path, addr: &str) {
    let mut file = std::fs::OpenOptions::new().write(true).open(hosts).unwrap();
    file.rewind().unwrap();
    file.write_all(format!("{addr} {HOST}\n").as_bytes())
        .unwrap();
}

/// The server a client's session or transaction runs on.
async fn server_of(client: &tokio_postgres::Client) -> String {
    let row = client
        .query_one("select host(inet_server_addr())", &[])
        .await
        .unwrap();
    row.get(0)
}

/// pgvalet's sessions on `cluster` (logged in as the orders credentials' user).
fn sessions_on(cluster: &Cluster) -> usize {
    cluster
        .admin_sql(
            "orders",
            "select count(*) from pg_stat_activity where usename = 'orders_svc'",
        )
        .parse()
        .unwrap()
}

/// Waits up to 20 s for `cluster` to hold `n` of pgvalet's sessions.
async fn wait_for_sessions(cluster: &Cluster, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sessions_on(cluster) != n {
        assert!(
            Instant::now() < deadline,
            "{what}: {} sessions, not {n}",
            sessions_on(cluster)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_host_name_takes_new_work_and_drains_the_old_server() {
    let old = cluster();
    let new = Cluster::start_with(
        pki(),
        Setup {
            listen: Some(("127.0.0.2", old.port)),
            passwords_of: Some(old),
            ..Setup::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "").unwrap();
    point(&hosts, "127.0.0.1");
    let admin = common::postgres::free_port();
    let tables = format!(
        "\n[backends.moving]\nhost = \"{HOST}\"\nport = {port}\ntls = \"verify-full\"\nca = \"{ca}\"\nserver_name = \"localhost\"\ndns_refresh_interval = \"1s\"\n{session}{transaction}",
        port = old.port,
        ca = pki().join("ca.crt").display(),
        session = orders_route("dns_s", "moving", "session", "max_size = 4"),
        transaction = orders_route("dns_t", "moving", "transaction", "max_size = 4"),
    );
    let text = with_metrics(&common::proxy::config_text(dir.path(), "", &tables), admin);
    let proxy = ProxyProcess::start_with_hosts(&text, dir, &hosts).expect("pgvalet starts");
    let port = proxy.port;

    // Before the move: a session, a transaction under way, and a client between transactions
    // (its connection idle in the pool), all on the old server.
    let session = pg_connect(port, "orders", "dns_s", "orders").await.unwrap();
    assert_eq!(server_of(&session).await, "127.0.0.1");
    let in_transaction = pg_connect(port, "orders", "dns_t", "orders").await.unwrap();
    in_transaction.batch_execute("begin").await.unwrap();
    let pid: i32 = in_transaction
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let between = pg_connect(port, "orders", "dns_t", "orders").await.unwrap();
    assert_eq!(server_of(&between).await, "127.0.0.1");
    wait_for_sessions(old, 3, "before the move").await;
    assert_eq!(sessions_on(&new), 0);
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(sample(&metrics, MOVED), 0.0);

    point(&hosts, "127.0.0.2");
    // The idle connection is closed within a refresh (1 s) and a pool check (1 s).
    let moved = Instant::now();
    wait_for_sessions(old, 2, "the idle connection").await;
    let (_, metrics) = get_until(admin, "/metrics", |_, m| sample(m, MOVED) == 1.0).await;
    assert_eq!(sample(&metrics, MOVED), 1.0);
    assert!(moved.elapsed() < Duration::from_secs(10));

    // New work follows the name: a new session, and the next transaction of a client.
    let fresh = pg_connect(port, "orders", "dns_s", "orders").await.unwrap();
    assert_eq!(server_of(&fresh).await, "127.0.0.2");
    assert_eq!(server_of(&between).await, "127.0.0.2");

    // The transaction under way finishes on the old server, on its own connection; its next
    // one runs on the new server.
    assert_eq!(server_of(&in_transaction).await, "127.0.0.1");
    let same: i32 = in_transaction
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(same, pid);
    in_transaction.batch_execute("commit").await.unwrap();
    wait_for_sessions(old, 1, "the transaction's connection, released").await;
    assert_eq!(server_of(&in_transaction).await, "127.0.0.2");

    // The session open before the move keeps its server, and a cancel reaches it there, not
    // where the name points now.
    assert_eq!(server_of(&session).await, "127.0.0.1");
    let token = session.cancel_token();
    let sleeping = tokio::spawn(async move {
        let result = session.batch_execute("select pg_sleep(30)").await;
        (session, result)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        (*client_tls("ca.crt", Some("orders"), None)).clone(),
    );
    token.cancel_query(tls).await.unwrap();
    let (session, result) = tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .expect("the cancel did not reach the old server")
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("57014"));
    assert_eq!(server_of(&session).await, "127.0.0.1");

    // Once it ends, pgvalet has nothing left on the old server.
    drop(session);
    wait_for_sessions(old, 0, "after the last old session").await;
    let (_, metrics) = get_until(admin, "/metrics", |_, m| sample(m, MOVED) == 3.0).await;
    assert_eq!(sample(&metrics, MOVED), 3.0, "idle, released, session end");
    let logs = proxy.logs();
    assert_eq!(
        logs.matches("its host name no longer resolves to its address")
            .count(),
        3,
        "{logs}"
    );
    assert!(
        logs.contains("the backend's host name resolves to other addresses"),
        "{logs}"
    );
    assert!(
        sessions_on(&new) >= 2,
        "fresh, and the transactions of the others"
    );
    drop((fresh, between, in_transaction));
    for route in ["dns_s", "dns_t"] {
        let series = format!(
            r#"pgvalet_pool_connections{{route="{route}",database="orders",backend="moving",state="active"}}"#
        );
        let (_, metrics) = get_until(admin, "/metrics", |_, m| sample(m, &series) == 0.0).await;
        assert_eq!(sample(&metrics, &series), 0.0, "{route}");
    }
}
