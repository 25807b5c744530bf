//! The ways in that must work besides the usual SSLRequest: PG17 direct TLS, GSSENC declined
//! first, protocol 3.2 requests, and cancel requests in plaintext and inside TLS.

mod common;

use std::time::Duration;

use common::*;

async fn login_ok<S>(raw: &mut Raw<S>, user: &str) -> Vec<Msg>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    raw.send(&startup_packet(
        196_608,
        &[("user", user), ("database", "orders")],
    ))
    .await;
    let msgs = raw.read_until_ready_or_error().await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    msgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_postgresql() {
    let proxy = Proxy::start().await;
    let mut direct = Raw::connect(proxy.port())
        .await
        .tls(Some("orders"), Some(b"postgresql"))
        .await
        .unwrap();
    let msgs = login_ok(&mut direct, "orders").await;
    assert_eq!(msgs[0].tag, b'R', "AuthenticationOk first");

    let mut no_alpn = Raw::connect(proxy.port())
        .await
        .tls(Some("orders"), None)
        .await
        .unwrap();
    no_alpn
        .send(&startup_packet(196_608, &[("user", "orders")]))
        .await;
    assert!(
        no_alpn.closed_within(Duration::from_secs(5)).await,
        "direct TLS without ALPN must be closed"
    );

    let wrong_alpn = Raw::connect(proxy.port())
        .await
        .tls(Some("orders"), Some(b"http/1.1"))
        .await;
    match wrong_alpn {
        Err(e) => assert!(e.to_string().contains("NoApplicationProtocol"), "{e}"),
        Ok(mut raw) => {
            raw.send(&startup_packet(196_608, &[("user", "orders")]))
                .await;
            assert!(raw.closed_within(Duration::from_secs(5)).await);
        }
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_is_declined_then_ssl_works() {
    let proxy = Proxy::start().await;
    let mut raw = Raw::connect(proxy.port()).await;
    raw.send(&GSSENC_REQUEST).await;
    assert_eq!(raw.read_byte().await, Some(b'N'));
    let mut tls = raw.start_tls(Some("orders")).await.unwrap();
    login_ok(&mut tls, "orders").await;
    proxy.stop().await;
}

/// NegotiateProtocolVersion as Postgres 18 sends it: the version the session runs as a full
/// Int32 (3.2 for a client asking 3.2 or later) and the options pgvalet does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_negotiation_names_the_version_served() {
    let proxy = Proxy::start().await;
    for (asked, served) in [(0x0003_0002u32, [0, 3, 0, 2]), (0x0003_0007, [0, 3, 0, 2])] {
        let mut tls = Raw::connect(proxy.port())
            .await
            .start_tls(Some("orders"))
            .await
            .unwrap();
        let params = [
            ("user", "orders"),
            ("database", "orders"),
            ("_pq_.compression", "on"),
        ];
        tls.send(&startup_packet(asked, &params)).await;
        let msgs = tls.read_until_ready_or_error().await;
        let v = &msgs[0];
        assert_eq!(v.tag, b'v', "{msgs:?}");
        assert_eq!(&v.body[..4], &served, "the version served");
        assert_eq!(&v.body[4..8], &[0, 0, 0, 1], "one option");
        assert_eq!(&v.body[8..], b"_pq_.compression\0");
        assert_eq!(msgs.last().unwrap().tag, b'Z');
        let key = msgs.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
        assert_eq!(key.body.len(), 4 + 48, "a 3.2 session has a long key");
        // The session works.
        tls.send(&query_message("select current_user")).await;
        let msgs = tls.read_until_ready_or_error().await;
        let row = msgs.iter().find(|m| m.tag == b'D').expect("a data row");
        assert!(row.body.ends_with(b"orders_svc"));
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_in_plaintext_cancels_the_query() {
    let proxy = Proxy::start().await;
    let mut tls = Raw::connect(proxy.port())
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    let msgs = login_ok(&mut tls, "orders").await;
    let key = msgs.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
    tls.send(&query_message("select pg_sleep(30)")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A wrong secret does nothing.
    let mut wrong = Raw::connect(proxy.port()).await;
    let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    cancel.extend(&key.body[..4]);
    cancel.extend(key.body[4..].iter().map(|b| !b));
    wrong.send(&cancel).await;
    assert!(wrong.closed_within(Duration::from_secs(5)).await);

    let mut raw = Raw::connect(proxy.port()).await;
    let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    cancel.extend(&key.body);
    raw.send(&cancel).await;
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    let msgs = tls.read_until_ready_or_error().await;
    assert_eq!(error_code(&msgs).as_deref(), Some("57014"), "{msgs:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_reaches_the_wrong_instance_is_forwarded_to_its_peer() {
    let a_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a_addr, b_addr) = (
        a_listener.local_addr().unwrap(),
        b_listener.local_addr().unwrap(),
    );
    let start = |listener, me: u8, peer: u8, peer_addr: std::net::SocketAddr| async move {
        let dir = tempfile::tempdir().unwrap();
        let top = format!(
            "instance_id = {me}\npeers = [{{ instance_id = {peer}, addr = \"{peer_addr}\" }}]"
        );
        let text = common::proxy::config_text(dir.path(), &top, "");
        let config = pgvalet::Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
        Proxy::start_on(listener, config, dir).await
    };
    let a = start(a_listener, 1, 2, b_addr).await;
    let b = start(b_listener, 2, 1, a_addr).await;

    // A protocol 3.0 key (4-byte secret) and a 3.2 one (48 bytes) each name A in the secret.
    for (version, secret_len) in [(196_608, 4), (196_610, 48)] {
        let mut tls = Raw::connect(a.port())
            .await
            .start_tls(Some("orders"))
            .await
            .unwrap();
        tls.send(&startup_packet(
            version,
            &[("user", "orders"), ("database", "orders")],
        ))
        .await;
        let msgs = tls.read_until_ready_or_error().await;
        assert!(
            msgs.iter().all(|m| m.tag != b'v'),
            "3.{} is served as asked: {msgs:?}",
            version & 0xffff
        );
        let key = msgs.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
        assert_eq!(key.body.len(), 4 + secret_len);
        let instance_at = if secret_len == 4 { 4 } else { 5 };
        assert_eq!(key.body[instance_at], 1, "A's instance id is in the key");
        tls.send(&query_message("select pg_sleep(30)")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The load balancer sends the cancel to B: B forwards it to A, whose key it is.
        let mut raw = Raw::connect(b.port()).await;
        let mut cancel = ((12 + secret_len) as u32).to_be_bytes().to_vec();
        cancel.extend([0x04, 0xd2, 0x16, 0x2e]);
        cancel.extend(&key.body);
        raw.send(&cancel).await;
        let msgs = tls.read_until_ready_or_error().await;
        assert_eq!(error_code(&msgs).as_deref(), Some("57014"), "{msgs:?}");
    }
    b.stop().await;
    a.stop().await;
}
