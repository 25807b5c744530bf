//! Everything pgvalet must refuse, each with the SQLSTATE or TLS alert a user would see, and
//! the proxy still serving afterwards.

mod common;

use std::time::Duration;

use common::*;

/// A query through pgvalet that must still work after a refusal.
async fn still_serving(proxy: &Proxy) {
    let out = psql(
        proxy.port(),
        "orders",
        "orders",
        "orders",
        "select current_user",
    )
    .await;
    assert_eq!(
        out.stdout, "orders_svc",
        "pgvalet stopped serving: {}",
        out.stderr
    );
}

fn conninfo(proxy: &Proxy, extra: &str) -> String {
    let ca = pki().join("ca.crt").display().to_string();
    format!(
        "host=127.0.0.1 port={} user=orders dbname=orders sslrootcert={ca} connect_timeout=10 {extra}",
        proxy.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_fail_the_tls_handshake() {
    let proxy = Proxy::start().await;
    for (cert, alert) in [
        ("expired", "alert certificate expired"),
        ("rogue", "alert unknown ca"),
        ("revoked", "alert certificate revoked"),
    ] {
        let out = psql(proxy.port(), cert, "orders", "orders", "select 1").await;
        assert!(
            !out.ok && out.stderr.contains(alert),
            "{cert}: {}",
            out.stderr
        );
    }
    let out = psql_conninfo(&conninfo(&proxy, "sslmode=verify-full"), "select 1").await;
    assert!(
        out.stderr.contains("alert certificate required"),
        "no cert: {}",
        out.stderr
    );
    still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_identity_user_and_database_are_denied() {
    let proxy = Proxy::start().await;
    let cases = [
        (
            "mallory",
            "orders",
            "orders",
            "certificate identity \"uri:spiffe://pgvalet.dev/svc/mallory\" may not connect: no route is configured for it",
        ),
        (
            "orders",
            "billing",
            "orders",
            "user \"billing\" is not allowed",
        ),
        (
            "billing",
            "billing",
            "orders",
            "route \"billing\" does not allow database \"orders\"",
        ),
        (
            "orders",
            "orders",
            "billing",
            "route \"orders\" does not allow database \"billing\"",
        ),
    ];
    for (cert, user, db, text) in cases {
        let err = pg_connect(proxy.port(), cert, user, db).await.unwrap_err();
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some("28000"),
            "{cert}/{user}/{db}: {err:?}"
        );
        let message = err.as_db_error().unwrap().message();
        assert!(message.contains(text), "{cert}/{user}/{db}: {message}");
        let out = psql(proxy.port(), cert, user, db, "select 1").await;
        assert!(
            out.stderr.contains(text),
            "psql {cert}/{user}/{db}: {}",
            out.stderr
        );
    }
    still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_address_outside_the_route_cidr_is_denied() {
    let route = "\n[[routes]]\nname = \"local_only\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\nusers = [\"local_only\"]\ndatabases = [\"orders\"]\nallow_cidrs = [\"127.0.0.1/32\"]\nbackend = \"main\"\ncredentials = \"orders\"\n";
    let proxy = Proxy::start_with("", route).await;
    let startup = startup_packet(196_608, &[("user", "local_only"), ("database", "orders")]);

    let mut from_2 = Raw::connect_from("127.0.0.2", proxy.port())
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    from_2.send(&startup).await;
    let msgs = from_2.read_until_ready_or_error().await;
    assert_eq!(error_code(&msgs).as_deref(), Some("28000"));
    assert!(
        error_message(&msgs)
            .unwrap()
            .contains("does not allow connections from 127.0.0.2")
    );

    let mut from_1 = Raw::connect_from("127.0.0.1", proxy.port())
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    from_1.send(&startup).await;
    let msgs = from_1.read_until_ready_or_error().await;
    assert_eq!(
        msgs.last().map(|m| m.tag),
        Some(b'Z'),
        "127.0.0.1 is allowed: {msgs:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_address_outside_the_global_cidr_is_closed_before_tls() {
    let proxy = Proxy::start_with("allow_cidrs = [\"127.0.0.1/32\"]", "").await;
    let mut raw = Raw::connect_from("127.0.0.2", proxy.port()).await;
    assert!(
        raw.closed_within(Duration::from_secs(5)).await,
        "not closed"
    );
    still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_startup_is_told_tls_is_required() {
    let proxy = Proxy::start().await;
    let mut raw = Raw::connect(proxy.port()).await;
    raw.send(&startup_packet(
        196_608,
        &[("user", "orders"), ("database", "orders")],
    ))
    .await;
    let msgs = raw.read_until_ready_or_error().await;
    assert_eq!(error_code(&msgs).as_deref(), Some("28000"));
    assert!(error_message(&msgs).unwrap().contains("requires TLS"));
    assert!(raw.closed_within(Duration::from_secs(5)).await);

    let out = psql_conninfo(&conninfo(&proxy, "sslmode=disable"), "select 1").await;
    assert!(
        out.stderr
            .contains("This pgvalet proxy requires TLS connections."),
        "{}",
        out.stderr
    );
    still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_ssl_request_are_refused() {
    let proxy = Proxy::start().await;
    let mut raw = Raw::connect(proxy.port()).await;
    let mut packet = SSL_REQUEST.to_vec();
    packet.extend(startup_packet(196_608, &[("user", "orders")]));
    raw.send(&packet).await;
    let msgs = raw.read_until_ready_or_error().await;
    assert_eq!(
        error_code(&msgs).as_deref(),
        Some("08P01"),
        "no 'S' may come first: {msgs:?}"
    );
    assert_eq!(
        error_message(&msgs).as_deref(),
        Some("received unencrypted data after SSL request")
    );
    still_serving(&proxy).await;
    proxy.stop().await;
}

/// A first packet whose length word is out of range is closed without a word, as Postgres closes
/// it (it logs such a packet and answers nothing); one of the right length but the wrong shape
/// gets Postgres' FATAL 08P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_garbage_first_packets_are_protocol_errors() {
    let proxy = Proxy::start().await;
    let unanswered: Vec<(&str, Vec<u8>)> = vec![
        ("oversize", 10_001u32.to_be_bytes().to_vec()),
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("short", vec![0, 0, 0, 4]),
    ];
    for (name, bytes) in unanswered {
        let mut raw = Raw::connect(proxy.port()).await;
        raw.send(&bytes).await;
        assert!(
            raw.closed_within(Duration::from_secs(5)).await,
            "{name}: closed without a byte"
        );
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no terminator",
            [&[0u8, 0, 0, 14, 0, 3, 0, 0][..], b"user\0x"].concat(),
            "invalid startup packet",
        ),
        (
            "bad cancel",
            vec![0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1],
            "cancel request",
        ),
    ];
    for (name, bytes, text) in cases {
        let mut raw = Raw::connect(proxy.port()).await;
        raw.send(&bytes).await;
        let msgs = raw.read_until_ready_or_error().await;
        assert_eq!(
            error_code(&msgs).as_deref(),
            Some("08P01"),
            "{name}: {msgs:?}"
        );
        assert!(
            error_message(&msgs).unwrap().contains(text),
            "{name}: {:?}",
            error_message(&msgs)
        );
    }
    // Oversize inside TLS too.
    let mut tls = Raw::connect(proxy.port())
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    tls.send(&1_000_000u32.to_be_bytes()).await;
    assert!(tls.closed_within(Duration::from_secs(5)).await);
    // A protocol version pgvalet does not speak.
    let mut raw = Raw::connect(proxy.port()).await;
    raw.send(&startup_packet(0x0002_0000, &[("user", "orders")]))
        .await;
    let msgs = raw.read_until_ready_or_error().await;
    assert_eq!(error_code(&msgs).as_deref(), Some("0A000"));
    still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_at_the_handshake_timeout() {
    let proxy = Proxy::start_with("handshake_timeout = \"500ms\"", "").await;
    // A first session opens the pool's connection, so that the check after the refusals
    // (whose backend login would also run under the 500 ms deadline) finds one idle.
    still_serving(&proxy).await;
    let started = std::time::Instant::now();
    let mut silent = Raw::connect(proxy.port()).await;
    assert!(
        silent.closed_within(Duration::from_secs(5)).await,
        "silent TCP client not closed"
    );
    let mut after_tls = Raw::connect(proxy.port())
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    assert!(
        after_tls.closed_within(Duration::from_secs(5)).await,
        "silent TLS client not closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed before the timeout"
    );
    still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_and_wrong_backend_password_are_clear() {
    let down_port = common::postgres::free_port();
    let tables = format!(
        "\n[backends.down]\nhost = \"127.0.0.1\"\nport = {down_port}\ntls = \"require\"\n\n[[routes]]\nname = \"down\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\nusers = [\"down\"]\ndatabases = [\"orders\"]\nbackend = \"down\"\ncredentials = \"orders\"\n"
    );
    let proxy = Proxy::start_with("", &tables).await;
    let err = pg_connect(proxy.port(), "orders", "down", "orders")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err:?}");
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains(&format!(
            "could not connect to backend \"down\" at 127.0.0.1:{down_port}"
        )),
        "{message}"
    );

    let err = pg_connect(proxy.port(), "orders", "orders_wrong", "orders")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err:?}");
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains("refused the login of user \"orders_svc\" with credentials \"wrong\""),
        "{message}"
    );
    assert!(
        !message.contains("not-the-password"),
        "the secret leaked: {message}"
    );
    still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_packets_pgvalet_does_not_serve() {
    let proxy = Proxy::start().await;
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("database", "orders")], "28000"),
        (&[("user", "orders"), ("replication", "database")], "0A000"),
        (&[("user", "")], "28000"),
    ];
    for (params, code) in cases {
        let mut tls = Raw::connect(proxy.port())
            .await
            .start_tls(Some("orders"))
            .await
            .unwrap();
        tls.send(&startup_packet(196_608, params)).await;
        let msgs = tls.read_until_ready_or_error().await;
        assert_eq!(
            error_code(&msgs).as_deref(),
            Some(code),
            "{params:?}: {msgs:?}"
        );
    }
    // An SSLRequest inside TLS.
    let mut tls = Raw::connect(proxy.port())
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    tls.send(&SSL_REQUEST).await;
    assert_eq!(
        error_code(&tls.read_until_ready_or_error().await).as_deref(),
        Some("08P01")
    );
    still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_max_clients_are_closed_and_the_slot_comes_back() {
    let proxy = Proxy::start_with("max_clients = 1", "").await;
    let first = pg_connect(proxy.port(), "orders", "orders", "orders")
        .await
        .unwrap();
    let err = pg_connect(proxy.port(), "orders", "orders", "orders")
        .await
        .unwrap_err();
    assert!(
        err.as_db_error().is_none(),
        "closed at accept, no server message: {err:?}"
    );
    drop(first);
    // The slot is released when the first session's task ends.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(client) = pg_connect(proxy.port(), "orders", "orders", "orders").await {
            let row = client.query_one("select current_user", &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), "orders_svc");
            ok = true;
            break;
        }
    }
    assert!(ok, "the slot never came back");
    proxy.stop().await;
}
