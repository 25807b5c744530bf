//! Sessions through pgvalet with real clients: psql (libpq, verify-full) and tokio-postgres
//! (rustls), against a real Postgres that only speaks TLS + SCRAM/MD5/password.

mod common;

use common::*;
use futures_util::{SinkExt, TryStreamExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verify_full_becomes_the_service_user() {
    let proxy = Proxy::start().await;
    let out = psql(
        proxy.port(),
        "orders",
        "orders",
        "orders",
        "select current_user, current_database()",
    )
    .await;
    assert!(out.ok, "psql failed: {}", out.stderr);
    assert_eq!(out.stdout, "orders_svc|orders");
    let out = psql(
        proxy.port(),
        "billing",
        "billing",
        "billing",
        "select current_user",
    )
    .await;
    assert_eq!(out.stdout, "billing_svc", "{}", out.stderr);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_session_is_tls_and_carries_client_parameters() {
    let proxy = Proxy::start().await;
    let sql = "select ssl, current_setting('application_name') from pg_stat_ssl where pid = pg_backend_pid()";
    let out = psql(proxy.port(), "orders", "orders", "orders", sql).await;
    assert_eq!(out.stdout, "t|pgvalet-test", "{}", out.stderr);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_cleartext_backend_logins() {
    let proxy = Proxy::start().await;
    let out = psql(
        proxy.port(),
        "orders",
        "orders_md5",
        "orders",
        "select current_user",
    )
    .await;
    assert_eq!(out.stdout, "md5_svc", "{}", out.stderr);
    let out = psql(
        proxy.port(),
        "orders",
        "orders_plain",
        "orders",
        "select current_user",
    )
    .await;
    assert_eq!(out.stdout, "plain_svc", "{}", out.stderr);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_copy_bytea_and_errors() {
    let proxy = Proxy::start().await;
    let client = pg_connect(proxy.port(), "orders", "orders", "orders")
        .await
        .unwrap();

    let row = client.query_one("select current_user", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "orders_svc");

    // A named prepared statement, run several times with different parameters.
    let stmt = client.prepare("select $1::int * 2").await.unwrap();
    for i in 0..5i32 {
        assert_eq!(
            client
                .query_one(&stmt, &[&i])
                .await
                .unwrap()
                .get::<_, i32>(0),
            i * 2
        );
    }

    // COPY in and out.
    client
        .batch_execute("create temp table t (id int, name text)")
        .await
        .unwrap();
    let sink = client.copy_in("copy t from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..1000 {
        data += &format!("{i}\tname-{i}\n");
    }
    sink.send(bytes::Bytes::from(data.clone())).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1000);
    let out = client
        .copy_out("copy (select * from t order by id) to stdout")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    let copied: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(copied).unwrap(), data);

    // A 1 MB bytea round trip.
    let blob: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let back: Vec<u8> = client
        .query_one("select $1::bytea", &[&blob])
        .await
        .unwrap()
        .get(0);
    assert_eq!(back, blob);

    // An error mid-transaction reaches the client as Postgres sent it; the session recovers.
    client.batch_execute("begin").await.unwrap();
    let err = client.query_one("select 1/0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));
    let err = client.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("25P02"),
        "in a failed transaction"
    );
    client.batch_execute("rollback").await.unwrap();
    assert_eq!(
        client
            .query_one("select 41 + 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );
    drop(client);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_backend() {
    let proxy = Proxy::start().await;
    let client = pg_connect(proxy.port(), "orders", "orders", "orders")
        .await
        .unwrap();
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move {
        client
            .query_one("select pg_sleep(30)", &[])
            .await
            .map(|_| ())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        (*client_tls("ca.crt", Some("orders"), None)).clone(),
    );
    token.cancel_query(tls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_reach_the_client_as_sent() {
    let proxy = Proxy::start().await;
    // The orders_any route allows any database; Postgres itself says this one does not exist.
    let err = pg_connect(proxy.port(), "orders", "orders_any", "nosuchdb")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"), "{err}");
    let message = err.as_db_error().unwrap().message();
    assert_eq!(message, "database \"nosuchdb\" does not exist");
    // And billing's database refuses orders_svc (REVOKE ALL … FROM PUBLIC).
    let err = pg_connect(proxy.port(), "orders", "orders_any", "billing")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");
    proxy.stop().await;
}
