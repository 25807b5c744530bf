//! What a client's TLS stack may do after the handshake, with OpenSSL's `s_client` as the client
//! against a pgvalet process: a TLS 1.2 renegotiation is refused with a `no_renegotiation` alert
//! at once, in any phase of a session (OpenSSL then gives up with `handshake_failure`, and the
//! session ends as if the client had gone: a transaction it had open is rolled back, its slot
//! freed); TLS 1.3 KeyUpdates keep the session going, but more than 32 in a row with no data
//! between them end it; a TLS 1.2 client is refused where `min_version = "1.3"`.

mod common;

use std::time::Duration;

use common::admin::{get, get_until, sample, with_metrics};
use common::openssl::{SClient, Version};
use common::process::ProxyProcess;
use common::*;

const TXN_ACTIVE: &str = r#"pgvalet_pool_connections{route="orders_txn",database="orders",backend="main",state="active"}"#;
const SESSION_ACTIVE: &str =
    r#"pgvalet_pool_connections{route="orders",database="orders",backend="main",state="active"}"#;
const REFUSED: &str = "<<< TLS 1.2, Alert [length 0002], warning no_renegotiation";
const GIVES_UP: &str = ">>> TLS 1.2, Alert [length 0002], fatal handshake_failure";
const CLIENT_KEY_UPDATE: &str = ">>> TLS 1.3, Handshake [length 0005], KeyUpdate";
const SERVER_KEY_UPDATE: &str = "<<< TLS 1.3, Handshake [length 0005], KeyUpdate";

/// pgvalet with its metrics on a port of its own, the standard routes and `orders_txn`, a
/// transaction-mode route of two connections.
fn start(top: &str) -> (ProxyProcess, u16) {
    let dir = tempfile::tempdir().unwrap();
    let admin = common::postgres::free_port();
    let route = common::proxy::orders_route("orders_txn", "main", "transaction", "max_size = 2");
    let text = with_metrics(&common::proxy::config_text(dir.path(), top, &route), admin);
    (
        ProxyProcess::start(&text, dir).expect("pgvalet starts"),
        admin,
    )
}

/// Logs in as `user` over s_client and waits for the first ReadyForQuery.
fn log_in(s: &mut SClient, user: &str) {
    s.send(&startup_packet(
        196_608,
        &[("user", user), ("database", "orders")],
    ));
    assert!(s.wait_for_output(b"Z\0\0\0\x05I"), "{}", s.stderr());
}

/// Sends `sql` as a simple query. s_client would take a leading `Q` as its quit command, so a
/// Sync goes first (it only adds a ReadyForQuery).
fn query(s: &mut SClient, sql: &str) {
    let mut bytes = vec![b'S', 0, 0, 0, 4];
    bytes.extend(query_message(sql));
    s.send(&bytes);
}

/// Runs `select 'marker' || 'N'` and waits for `markerN` to come back.
fn marker(s: &mut SClient, n: usize) -> bool {
    query(s, &format!("select 'marker' || '{n}'"));
    s.wait_for_output(format!("marker{n}").as_bytes())
}

async fn metric(admin: u16, series: &str) -> f64 {
    sample(&get(admin, "/metrics").await.1, series)
}

/// Waits until the gauge `series` reads `value`.
async fn settles(admin: u16, series: &str, value: f64) {
    let (_, body) = get_until(admin, "/metrics", |_, m| sample(m, series) == value).await;
    assert_eq!(sample(&body, series), value, "{series}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls12_renegotiation_is_refused_and_ends_only_its_session() {
    let cluster = cluster();
    cluster.admin_sql(
        "orders",
        "create table if not exists renegotiated (v text); grant all on renegotiated to orders_svc",
    );
    let (proxy, admin) = start("handshake_timeout = \"30s\"");
    // A bystander with a transaction open throughout, holding one of orders_txn's two slots.
    let bystander = pg_connect(proxy.port, "orders", "orders_txn", "orders")
        .await
        .unwrap();
    bystander.batch_execute("begin").await.unwrap();
    assert_eq!(metric(admin, TXN_ACTIVE).await, 1.0);

    // Idle, in session mode: refused at once; OpenSSL gives up on the refusal and closes.
    let mut idle = SClient::connect(proxy.port, "orders", Version::Tls12);
    log_in(&mut idle, "orders");
    assert!(marker(&mut idle, 1));
    idle.command("R").unwrap();
    assert!(idle.wait_for_trace(REFUSED), "{}", idle.trace());
    assert!(idle.wait_for_trace(GIVES_UP), "{}", idle.trace());
    assert!(idle.exited_within(Duration::from_secs(5)).is_some());
    assert!(!idle.output().windows(7).any(|w| w == b"marker2"));
    settles(admin, SESSION_ACTIVE, 0.0).await;

    // Mid-transaction, in transaction mode: the transaction is rolled back and the
    // connection not returned to the pool mid-transaction; its slot is freed.
    let mut busy = SClient::connect(proxy.port, "orders", Version::Tls12);
    log_in(&mut busy, "orders_txn");
    query(&mut busy, "begin; insert into renegotiated values ('lost')");
    assert!(busy.wait_for_output(b"INSERT 0 1"), "{}", busy.stderr());
    assert_eq!(metric(admin, TXN_ACTIVE).await, 2.0);
    busy.command("R").unwrap();
    assert!(busy.wait_for_trace(REFUSED), "{}", busy.trace());
    assert!(busy.exited_within(Duration::from_secs(5)).is_some());
    settles(admin, TXN_ACTIVE, 1.0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cluster.admin_sql("orders", "select count(*) from pg_stat_activity where state like 'idle in transaction%' and usename = 'orders_svc'") != "1" {
        assert!(std::time::Instant::now() < deadline, "the transaction stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cluster.admin_sql("orders", "select count(*) from renegotiated"),
        "0"
    );

    // Before the startup packet: refused at once, not at the 30 s handshake deadline.
    let started = std::time::Instant::now();
    let mut early = SClient::connect(proxy.port, "orders", Version::Tls12);
    assert!(early.wait_for_trace("Finished"), "{}", early.stderr());
    early.command("R").unwrap();
    assert!(early.wait_for_trace(REFUSED), "{}", early.trace());
    assert!(early.exited_within(Duration::from_secs(5)).is_some());
    assert!(started.elapsed() < Duration::from_secs(10));

    // The bystander's transaction went on untouched, and every slot is back.
    let row = bystander.query_one("select 42", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    bystander.batch_execute("commit").await.unwrap();
    drop(bystander);
    settles(admin, TXN_ACTIVE, 0.0).await;
    for user in ["orders", "orders_txn"] {
        let client = pg_connect(proxy.port, "orders", user, "orders")
            .await
            .unwrap();
        client.batch_execute("select 1").await.unwrap();
    }
    let logs = proxy.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_key_updates_keep_a_session_and_a_flood_of_them_ends_it() {
    let (proxy, admin) = start("");
    let bystander = pg_connect(proxy.port, "orders", "orders_txn", "orders")
        .await
        .unwrap();
    let mut s = SClient::connect(proxy.port, "orders", Version::Tls13);
    log_in(&mut s, "orders_txn");
    assert!(marker(&mut s, 1));

    // A KeyUpdate of the client's own, then one that asks pgvalet for one too: pgvalet's comes
    // before its next answer, as TLS 1.3 wants.
    s.command("k").unwrap();
    assert!(s.wait_for_trace(CLIENT_KEY_UPDATE));
    assert!(marker(&mut s, 2));
    s.command("K").unwrap();
    assert!(wait_for_count(&mut s, CLIENT_KEY_UPDATE, 2));
    assert!(!s.trace().contains(SERVER_KEY_UPDATE));
    assert!(marker(&mut s, 3));
    assert!(s.trace().contains(SERVER_KEY_UPDATE), "{}", s.trace());

    // Many KeyUpdates are fine while data flows between them: 3 rounds of 32, the most rustls
    // allows in a row (as BoringSSL does).
    let mut sent = 2;
    for round in 0..3 {
        for _ in 0..32 {
            s.command("k").unwrap();
            sent += 1;
            assert!(wait_for_count(&mut s, CLIENT_KEY_UPDATE, sent));
        }
        assert!(marker(&mut s, 10 + round), "round {round}");
    }

    // With nothing between them, the 33rd KeyUpdate in a row ends the session: a close with no
    // alert. s_client may send one or two more before it reads the close.
    let before_flood = sent;
    while sent < before_flood + 100 && s.command("k").is_ok() {
        sent += 1;
        if !wait_for_count(&mut s, CLIENT_KEY_UPDATE, sent) {
            break;
        }
    }
    assert!(
        s.exited_within(Duration::from_secs(10)).is_some(),
        "still open"
    );
    let trace = s.trace();
    let flood = trace.matches(CLIENT_KEY_UPDATE).count() - before_flood;
    assert!(
        (33..=35).contains(&flood),
        "{flood} KeyUpdates sent before the close"
    );
    assert!(!trace.contains("<<< TLS 1.3, Alert"), "{trace}");
    // A close, or a reset when s_client's extra KeyUpdate reached a socket already closed.
    let stderr = s.stderr();
    assert!(
        stderr.contains("unexpected eof") || stderr.contains("errno=104"),
        "{stderr}"
    );

    // Its slot is back and the bystander is served.
    settles(admin, TXN_ACTIVE, 0.0).await;
    let row = bystander.query_one("select 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    assert!(proxy.logs().contains(r#"route=orders_txn"#));
}

/// Where TLS 1.3 is the minimum, a TLS 1.2 client is refused with a `protocol_version` alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls12_client_is_refused_where_tls13_is_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::proxy::config_text(dir.path(), "", "")
        .replace("\n[tls]\n", "\n[tls]\nmin_version = \"1.3\"\n");
    let proxy = ProxyProcess::start(&text, dir).expect("pgvalet starts");
    let mut old = SClient::connect(proxy.port, "orders", Version::Tls12);
    assert!(old.exited_within(Duration::from_secs(10)).is_some());
    assert!(
        old.trace()
            .contains("<<< TLS 1.2, Alert [length 0002], fatal protocol_version"),
        "{}",
        old.trace()
    );
    let mut new = SClient::connect(proxy.port, "orders", Version::Tls13);
    log_in(&mut new, "orders");
    assert!(marker(&mut new, 1));
}

/// Waits up to 20 s until `needle` appears `n` times in the trace; false at once if s_client
/// has exited.
fn wait_for_count(s: &mut SClient, needle: &str, n: usize) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if s.trace().matches(needle).count() >= n {
            return true;
        }
        if s.exited_within(Duration::from_millis(10)).is_some() {
            return false;
        }
    }
    false
}
