//! PROXY protocol from a load balancer: a trusted sender's header gives the address the CIDR
//! rules see; a header from anyone else is refused.

mod common;

use std::time::Duration;

use common::*;

const TOP_OPTIONAL: &str = "proxy_protocol = \"optional\"\nproxy_protocol_trusted = [\"127.0.0.1/32\"]\nallow_cidrs = [\"127.0.0.0/8\", \"203.0.113.0/24\"]";
const VIA_LB: &str = "\n[[routes]]\nname = \"via_lb\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\nusers = [\"via_lb\"]\ndatabases = [\"orders\"]\nallow_cidrs = [\"203.0.113.0/24\"]\nbackend = \"main\"\ncredentials = \"orders\"\n";

fn v2_header(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(src);
    h.extend([127, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(6432u16.to_be_bytes());
    h
}

/// Sends `header` from `source`, then logs in as `user`; the messages that came back, or
/// `None` when the connection was closed before TLS.
async fn through_lb(port: u16, source: &str, header: &[u8], user: &str) -> Option<Vec<Msg>> {
    let mut raw = Raw::connect_from(source, port).await;
    if !header.is_empty() {
        raw.send(header).await;
    }
    raw.send(&SSL_REQUEST).await;
    if raw.read_byte().await != Some(b'S') {
        return None;
    }
    let mut tls = raw.tls(Some("orders"), None).await.ok()?;
    tls.send(&startup_packet(
        196_608,
        &[("user", user), ("database", "orders")],
    ))
    .await;
    Some(tls.read_until_ready_or_error().await)
}

fn ready(msgs: &Option<Vec<Msg>>) -> bool {
    msgs.as_ref()
        .is_some_and(|m| m.last().map(|m| m.tag) == Some(b'Z'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_header_sets_the_source_address() {
    let proxy = Proxy::start_with(TOP_OPTIONAL, VIA_LB).await;
    let port = proxy.port();
    // From the balancer (127.0.0.1) for a client at 203.0.113.7: the route's CIDR allows it.
    assert!(ready(
        &through_lb(
            port,
            "127.0.0.1",
            &v2_header([203, 0, 113, 7], 40000),
            "via_lb"
        )
        .await
    ));
    let v1 = b"PROXY TCP4 203.0.113.8 127.0.0.1 40001 6432\r\n";
    assert!(
        ready(&through_lb(port, "127.0.0.1", v1, "via_lb").await),
        "version 1 too"
    );
    // The same route without a header: the source is 127.0.0.1, which it does not allow.
    let direct = through_lb(port, "127.0.0.1", b"", "via_lb").await.unwrap();
    assert_eq!(error_code(&direct).as_deref(), Some("28000"));
    assert!(
        error_message(&direct)
            .unwrap()
            .contains("does not allow connections from 127.0.0.1")
    );
    // A client address outside the global allow_cidrs is closed before TLS.
    assert!(
        through_lb(
            port,
            "127.0.0.1",
            &v2_header([198, 51, 100, 1], 40002),
            "via_lb"
        )
        .await
        .is_none()
    );
    // A header from an address not in proxy_protocol_trusted is refused.
    assert!(
        through_lb(
            port,
            "127.0.0.2",
            &v2_header([203, 0, 113, 7], 40003),
            "via_lb"
        )
        .await
        .is_none()
    );
    // And garbage that starts like a header is closed, not parsed as Postgres.
    let mut raw = Raw::connect(port).await;
    raw.send(b"PROXY TCP4 nonsense\r\n").await;
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_refuses_connections_without_a_trusted_header() {
    let top = TOP_OPTIONAL.replace("\"optional\"", "\"required\"");
    let proxy = Proxy::start_with(&top, VIA_LB).await;
    let port = proxy.port();
    assert!(ready(
        &through_lb(
            port,
            "127.0.0.1",
            &v2_header([203, 0, 113, 9], 40004),
            "via_lb"
        )
        .await
    ));
    assert!(
        through_lb(port, "127.0.0.1", b"", "orders").await.is_none(),
        "no header"
    );
    assert!(
        through_lb(port, "127.0.0.2", b"", "orders").await.is_none(),
        "not a trusted sender"
    );
    proxy.stop().await;
}
