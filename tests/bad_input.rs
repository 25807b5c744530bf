//! Bad input after the login, in both pool modes: message lengths below 4, negative and near
//! 2^31, unknown message types, and floods of cancel requests with wrong keys. Each gets a
//! clear FATAL with SQLSTATE 08P01 (or a clean close), while other sessions go on and the pool
//! gets its connection back.

mod common;

use std::time::Duration;

use common::*;

fn txn_route() -> String {
    common::proxy::orders_route("orders_txn", "main", "transaction", "max_size = 2")
}

/// A logged-in raw session as `user`.
async fn logged_in(
    port: u16,
    user: &str,
) -> Raw<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut raw = Raw::startup(port, &[("user", user), ("database", "orders")]).await;
    let msgs = raw.read_until_ready_or_error().await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{user}: {msgs:?}");
    raw
}

/// A message with tag `tag` whose length word says `len`, followed by `body`.
fn framed(tag: u8, len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_after_login_end_only_their_session() {
    let proxy = Proxy::start_with("", &txn_route()).await;
    let port = proxy.port();
    // What the client must be told, where Postgres tells it something (a bad length it
    // only logs before closing).
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("length 3", framed(b'Q', 3, b""), None),
        ("length 0", framed(b'Q', 0, b""), None),
        (
            "negative length",
            framed(b'Q', 0x8000_0000, b"select 1\0"),
            None,
        ),
        (
            "length 2^31-1",
            framed(b'Q', 0x7fff_ffff, b"select 1\0"),
            None,
        ),
        (
            "unknown type",
            framed(b'!', 9, b"hello"),
            Some("invalid frontend message type 33"),
        ),
        (
            "unknown type, no body",
            framed(0, 4, b""),
            Some("invalid frontend message type 0"),
        ),
    ];
    for user in ["orders", "orders_txn"] {
        // A bystander with a transaction open throughout.
        let bystander = pg_connect(port, "orders", user, "orders").await.unwrap();
        bystander.batch_execute("begin").await.unwrap();
        for (name, bytes, says) in &cases {
            let mut raw = logged_in(port, user).await;
            raw.send(bytes).await;
            let msgs = raw.read_until_ready_or_error().await;
            let code = error_code(&msgs);
            assert!(
                code.is_none() || code.as_deref() == Some("08P01"),
                "{user}, {name}: {msgs:?}"
            );
            if let Some(says) = says {
                assert_eq!(
                    error_message(&msgs).as_deref(),
                    Some(*says),
                    "{user}, {name}"
                );
            }
            assert!(
                raw.closed_within(Duration::from_secs(5)).await,
                "{user}, {name}: the session was not closed after {msgs:?}"
            );
        }
        let row = bystander.query_one("select 42", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);
        bystander.batch_execute("commit").await.unwrap();
        drop(bystander);
        // Every connection came back: the next clients get one at once.
        for _ in 0..3 {
            let client = pg_connect(port, "orders", user, "orders").await.unwrap();
            client.batch_execute("select 1").await.unwrap();
        }
    }
    proxy
        .wait_for_pool(
            "orders_txn",
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

/// A query far larger than any real one (64 MiB and more) is refused with 08P01 before pgvalet
/// holds it, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_size_limit_is_refused() {
    let proxy = Proxy::start_with("", &txn_route()).await;
    for user in ["orders", "orders_txn"] {
        let mut raw = logged_in(proxy.port(), user).await;
        raw.send(&framed(b'Q', 100 << 20, b"select ")).await;
        let msgs = raw.read_until_ready_or_error().await;
        let code = error_code(&msgs);
        assert!(
            code.is_none() || code.as_deref() == Some("08P01"),
            "{user}: {msgs:?}"
        );
        assert!(raw.closed_within(Duration::from_secs(5)).await, "{user}");
    }
    let client = pg_connect(proxy.port(), "orders", "orders_txn", "orders")
        .await
        .unwrap();
    client.batch_execute("select 1").await.unwrap();
    proxy.stop().await;
}

/// Hundreds of cancel requests with made-up keys cancel nothing and stop nothing; a real one
/// still works after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_floods_with_wrong_keys_change_nothing() {
    let proxy = Proxy::start().await;
    let port = proxy.port();
    let client = pg_connect(port, "orders", "orders", "orders")
        .await
        .unwrap();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        flood.spawn(async move {
            let mut raw = Raw::connect(port).await;
            let mut req = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
            req.extend_from_slice(&i.to_be_bytes());
            req.extend_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
            raw.send(&req).await;
            raw.closed_within(Duration::from_secs(10)).await
        });
    }
    // While the flood runs, a query of the real session is not cancelled.
    let row = client
        .query_one("select pg_sleep(0.5)::text || 'done'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "done");
    while let Some(closed) = flood.join_next().await {
        assert!(closed.unwrap(), "a cancel connection was left open");
    }
    // A real cancel still works.
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.batch_execute("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        (*client_tls("ca.crt", Some("orders"), None)).clone(),
    );
    token.cancel_query(tls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancel did not end the query")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"));
    proxy.stop().await;
}

/// A startup packet whose values are not UTF-8 is refused with a clear error before any backend
/// is touched; one that names 10,000 parameters is over the 10,000-byte limit and closed without
/// a word, as Postgres closes a startup packet of a length out of range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_startup_packets_are_refused_clearly() {
    let proxy = Proxy::start().await;
    // `user` = "orders\xff": bytes no string holds.
    let mut bad_utf8 = startup_packet(196_608, &[("user", "orders"), ("database", "orders")]);
    let at = bad_utf8.windows(7).position(|w| w == b"orders\0").unwrap() + 6;
    bad_utf8.insert(at, 0xff);
    let len = (bad_utf8.len() as u32).to_be_bytes();
    bad_utf8[..4].copy_from_slice(&len);
    let many: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("p{i}"), "x".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (name, packet, answer) in [
        ("non-UTF-8 user", bad_utf8, Some("08P01")),
        ("10,000 parameters", startup_packet(196_608, &many), None),
    ] {
        let mut tls = Raw::connect(proxy.port())
            .await
            .start_tls(Some("orders"))
            .await
            .unwrap();
        if answer.is_some() {
            tls.send(&packet).await;
            let msgs = tls.read_until_ready_or_error().await;
            assert_eq!(error_code(&msgs).as_deref(), answer, "{name}: {msgs:?}");
        } else {
            // Closed after the length word: the rest of the packet may meet a reset.
            use tokio::io::AsyncWriteExt;
            let _ = tls.stream.write_all(&packet).await;
            let _ = tls.stream.flush().await;
        }
        assert!(tls.closed_within(Duration::from_secs(5)).await, "{name}");
    }
    let client = pg_connect(proxy.port(), "orders", "orders", "orders")
        .await
        .unwrap();
    client.batch_execute("select 1").await.unwrap();
    proxy.stop().await;
}

/// A client that trickles its first packet a byte at a time is closed at `handshake_timeout`,
/// however steadily it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_client_is_closed_at_the_handshake_timeout() {
    let proxy = Proxy::start_with("handshake_timeout = \"1s\"", "").await;
    let mut raw = Raw::connect(proxy.port()).await;
    let started = std::time::Instant::now();
    let packet = startup_packet(196_608, &[("user", "orders"), ("database", "orders")]);
    let mut closed = false;
    for byte in packet.iter().cycle().take(200) {
        use tokio::io::AsyncWriteExt;
        if raw.stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        if raw.closed_within(Duration::from_millis(100)).await {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    proxy.stop().await;
}

/// The resident memory of this process (where pgvalet runs in-process), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// A client that asks for 200 MB of rows and reads none of them: pgvalet holds only its
/// buffers (the backend waits on its socket), and once the client goes, the pool's connection
/// is discarded and the slot freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_bounded_memory() {
    let proxy = Proxy::start_with("", &txn_route()).await;
    let before = rss_kib();
    let mut raw = logged_in(proxy.port(), "orders_txn").await;
    raw.send(&query_message(
        "select repeat('x', 1000000) from generate_series(1, 200)",
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 40 * 1024, "pgvalet grew by {grown} KiB");
    drop(raw);
    proxy
        .wait_for_pool(
            "orders_txn",
            "orders",
            pgvalet::pool::Stats {
                idle: 0,
                active: 0,
                waiting: 0,
            },
        )
        .await;
    let client = pg_connect(proxy.port(), "orders", "orders_txn", "orders")
        .await
        .unwrap();
    client.batch_execute("select 1").await.unwrap();
    proxy.stop().await;
}

/// Certificates whose SAN URI holds a route's identity as a substring, or in another case, or
/// with more after it, match no route: identities are compared exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_that_only_resemble_a_route_are_denied() {
    let mut ca = common::pki::Authority::new("pgvalet test lookalikes CA").unwrap();
    let cases = [
        ("exact", "spiffe://pgvalet.dev/svc/orders", true),
        ("suffix", "spiffe://pgvalet.dev/svc/orders-evil", false),
        (
            "prefix",
            "spiffe://evil.dev/x/spiffe://pgvalet.dev/svc/orders",
            false,
        ),
        ("case", "SPIFFE://PGVALET.DEV/svc/orders", false),
        ("path case", "spiffe://pgvalet.dev/svc/Orders", false),
        ("longer path", "spiffe://pgvalet.dev/svc/orders/x", false),
        ("query", "spiffe://pgvalet.dev/svc/orders?x=1", false),
    ];
    for (i, (_, uri, _)) in cases.iter().enumerate() {
        let issued = ca
            .issue(&common::pki::Leaf::client("lookalike", &[uri]))
            .unwrap();
        std::fs::write(pki().join(format!("lookalike-{i}.crt")), &issued.cert_pem).unwrap();
        std::fs::write(pki().join(format!("lookalike-{i}.key")), &issued.key_pem).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("clients-ca.crt");
    let dev_ca = std::fs::read_to_string(pki().join("ca.crt")).unwrap();
    std::fs::write(&bundle, format!("{dev_ca}{}", ca.cert_pem)).unwrap();
    let text = common::proxy::config_text(dir.path(), "", "").replacen(
        &format!("client_ca = \"{}\"", pki().join("ca.crt").display()),
        &format!("client_ca = \"{}\"", bundle.display()),
        1,
    );
    let config = pgvalet::Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
    let proxy = Proxy::start_config(config, dir).await;
    for (i, (name, _, allowed)) in cases.iter().enumerate() {
        let cert = format!("lookalike-{i}");
        let result = pg_connect(proxy.port(), &cert, "orders", "orders").await;
        match (allowed, result) {
            (true, Ok(client)) => client.batch_execute("select 1").await.unwrap(),
            (false, Err(e)) => assert_eq!(sqlstate(&e).as_deref(), Some("28000"), "{name}: {e:?}"),
            (true, Err(e)) => panic!("{name}: refused: {e:?}"),
            (false, Ok(_)) => panic!("{name}: let in as orders"),
        }
    }
    proxy.stop().await;
}
