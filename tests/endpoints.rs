//! Endpoints as RDS Proxy has them: a read-only endpoint beside the default one, its sessions
//! spread over the backend's readers (two hot standbys of the test cluster) by least
//! connections; a reader that stops leaves the rotation without failing new sessions and comes
//! back when it starts again; with no reader left, sessions run on the writer read-only, so a
//! write gets Postgres' own 25006.

mod common;

use std::time::{Duration, Instant};

use common::admin::{get_until, sample, with_metrics};
use common::*;

const ENDPOINT: &str = r#"
[[endpoints]]
name = "reader"
listen_addr = "127.0.0.1:0"
role = "read-only"
routes = ["orders", "orders_txn"]
"#;

/// A reader's `[backends]` table, checked every second.
fn reader_table(name: &str, port: u16) -> String {
    format!(
        "\n[backends.{name}]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"verify-full\"\nca = \"{ca}\"\nserver_name = \"localhost\"\ncheck_interval = 1\n",
        ca = pki().join("ca.crt").display()
    )
}

/// The port of the server that runs `client`'s queries, and whether it is a standby.
async fn served_by(client: &tokio_postgres::Client) -> (u16, bool) {
    let row = client
        .query_one("select inet_server_port(), pg_is_in_recovery()", &[])
        .await
        .unwrap();
    (row.get::<_, i32>(0) as u16, row.get(1))
}

/// Waits until `replica` has replayed the primary's table `ro_t`.
fn wait_for_replay(replica: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.admin_sql(
        "orders",
        "select count(*) from pg_class where relname = 'ro_t'",
    ) != "1"
    {
        assert!(Instant::now() < deadline, "the standby did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_endpoint_spreads_over_readers_and_falls_back_read_only() {
    let primary = cluster();
    primary.admin_sql(
        "orders",
        "create table if not exists ro_t(x int); grant all on ro_t to orders_svc",
    );
    let (r1, r2) = (primary.start_replica(pki()), primary.start_replica(pki()));
    wait_for_replay(&r1);
    wait_for_replay(&r2);

    let dir = tempfile::tempdir().unwrap();
    let admin = common::postgres::free_port();
    let tables = format!(
        "{}{ENDPOINT}{}{}",
        common::proxy::orders_route("orders_txn", "main", "transaction", ""),
        reader_table("r1", r1.port),
        reader_table("r2", r2.port)
    );
    let text = with_metrics(&common::proxy::config_text(dir.path(), "", &tables), admin).replacen(
        "server_name = \"localhost\"\n",
        "server_name = \"localhost\"\nreaders = [\"r1\", \"r2\"]\n",
        1,
    );
    let config = pgvalet::Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
    let proxy = Proxy::start_config(config, dir).await;
    let (rw, ro) = (proxy.port(), proxy.endpoint_port("reader"));

    // The default endpoint writes on the primary.
    let writer = pg_connect(rw, "orders", "orders", "orders").await.unwrap();
    assert_eq!(served_by(&writer).await, (primary.port, false));
    writer
        .batch_execute("insert into ro_t values (1)")
        .await
        .unwrap();

    // The read-only endpoint: four sessions at once, two on each reader.
    let mut held = Vec::new();
    for _ in 0..4 {
        let client = pg_connect(ro, "orders", "orders", "orders").await.unwrap();
        held.push((served_by(&client).await, client));
    }
    let on = |port: u16, held: &[((u16, bool), tokio_postgres::Client)]| {
        held.iter().filter(|((p, _), _)| *p == port).count()
    };
    assert_eq!((on(r1.port, &held), on(r2.port, &held)), (2, 2));
    assert!(held.iter().all(|((_, standby), _)| *standby));
    let refused = held[0]
        .1
        .batch_execute("insert into ro_t values (2)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("25006"), "{refused:?}");
    let txn = pg_connect(ro, "orders", "orders_txn", "orders")
        .await
        .unwrap();
    let (port, standby) = served_by(&txn).await;
    assert!(standby && (port == r1.port || port == r2.port));
    let refused = txn
        .batch_execute("insert into ro_t values (3)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("25006"));
    drop(txn);

    // r1 stops: its sessions end with it, new ones go to r2 and none fails.
    r1.stop_server();
    held.retain(|((port, _), _)| *port == r2.port);
    for i in 0..4 {
        let client = pg_connect(ro, "orders", "orders", "orders")
            .await
            .unwrap_or_else(|e| panic!("session {i} after r1 stopped: {e:?}"));
        assert_eq!(served_by(&client).await, (r2.port, true));
    }
    let series = r#"pgvalet_reader_in_rotation{backend="r1"}"#;
    let (_, body) = get_until(admin, "/metrics", |_, b| sample(b, series) == 0.0).await;
    assert_eq!(sample(&body, series), 0.0);

    // r1 starts again: its check passes and, with r2 busier, the next session goes to it.
    r1.start_server();
    let (_, body) = get_until(admin, "/metrics", |_, b| sample(b, series) == 1.0).await;
    assert_eq!(sample(&body, series), 1.0, "r1 back in the rotation");
    let client = pg_connect(ro, "orders", "orders", "orders").await.unwrap();
    assert_eq!(served_by(&client).await, (r1.port, true));
    drop(client);
    drop(held);

    // No reader left: the writer serves, every transaction read-only, in both pool modes.
    r1.stop_server();
    r2.stop_server();
    for user in ["orders", "orders_txn"] {
        let client = pg_connect(ro, "orders", user, "orders").await.unwrap();
        assert_eq!(served_by(&client).await, (primary.port, false), "{user}");
        let row = client
            .query_one("show default_transaction_read_only", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "on", "{user}");
        let refused = client
            .batch_execute("insert into ro_t values (4)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&refused).as_deref(), Some("25006"), "{user}");
        let message = refused.as_db_error().map(|e| e.message().to_owned());
        assert_eq!(
            message.as_deref(),
            Some("cannot execute INSERT in a read-only transaction")
        );
    }
    let (_, body) = get_until(admin, "/metrics", |_, _| true).await;
    assert_eq!(
        sample(
            &body,
            r#"pgvalet_read_only_fallbacks_total{endpoint="reader",route="orders"}"#
        ),
        1.0
    );
    assert!(
        sample(
            &body,
            r#"pgvalet_endpoint_sessions_total{endpoint="reader",route="orders",backend="r2"}"#
        ) >= 6.0,
        "{body}"
    );
    // The default endpoint still writes.
    writer
        .batch_execute("insert into ro_t values (5)")
        .await
        .unwrap();
    proxy.stop().await;
}
