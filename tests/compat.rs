//! Differences from Postgres that the drivers' own test suites found through pgvalet
//! (scripts/driver-suites.sh; causes in docs/compatibility.md), each as the smallest exchange
//! that shows it, kept as a regression test once mended.

mod common;

use std::time::Duration;

use common::*;
use pgvalet::pool::Stats;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const TXN_ROUTE: &str = r#"
[[routes]]
name = "txn"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["txn"]
databases = ["orders"]
backend = "main"
credentials = "orders"
pool_mode = "transaction"
max_size = 1
"#;

/// A session through pgvalet with the orders certificate, `extra` added to the startup packet;
/// returns it and its login messages.
async fn login(
    port: u16,
    user: &str,
    extra: &[(&str, &str)],
) -> (Raw<TlsStream<TcpStream>>, Vec<Msg>) {
    let mut params = vec![("user", user), ("database", "orders")];
    params.extend_from_slice(extra);
    let mut raw = Raw::startup(port, &params).await;
    let msgs = raw.read_until_ready_or_error().await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    (raw, msgs)
}

async fn show(raw: &mut Raw<TlsStream<TcpStream>>, setting: &str) -> String {
    raw.simple_query(&format!("SHOW {setting}")).await.unwrap()[0][0].clone()
}

const ONE_IDLE: Stats = Stats {
    idle: 1,
    active: 0,
    waiting: 0,
};

/// node-postgres' statement_timeout and options tests: Postgres applies every setting of the
/// startup packet (and of `options`) to the session it starts. pgvalet sends them to the backend
/// only when it opens a connection, so a client given a pooled one loses them, and the next
/// client of the connection that was opened with them inherits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_follow_the_client_not_the_connection() {
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    for (route, user) in [("orders", "orders"), ("txn", "txn")] {
        // One pooled connection, opened by a client that set nothing.
        let (mut first, _) = login(proxy.port(), user, &[]).await;
        assert_eq!(show(&mut first, "statement_timeout").await, "0");
        drop(first);
        proxy.wait_for_pool(route, "orders", ONE_IDLE).await;

        let asks = [
            ("statement_timeout", "3000"),
            (
                "options",
                "-c lock_timeout=2s --idle_in_transaction_session_timeout=4s",
            ),
        ];
        let (mut asking, _) = login(proxy.port(), user, &asks).await;
        assert_eq!(
            show(&mut asking, "statement_timeout").await,
            "3s",
            "{route}"
        );
        assert_eq!(show(&mut asking, "lock_timeout").await, "2s", "{route}");
        assert_eq!(
            show(&mut asking, "idle_in_transaction_session_timeout").await,
            "4s",
            "{route}"
        );
        drop(asking);
        proxy.wait_for_pool(route, "orders", ONE_IDLE).await;

        // The next client of that connection gets the server's defaults again.
        let (mut next, _) = login(proxy.port(), user, &[]).await;
        assert_eq!(show(&mut next, "statement_timeout").await, "0", "{route}");
        assert_eq!(show(&mut next, "lock_timeout").await, "0", "{route}");
        drop(next);
        proxy.wait_for_pool(route, "orders", ONE_IDLE).await;
    }
    proxy.stop().await;
}

/// psycopg's test_cancel_conn_*: libpq 17+ sends a CancelRequest inside TLS and reads until the
/// server closes; Postgres ends with a TLS close_notify, and without one OpenSSL reports
/// "unexpected eof while reading" and libpq a failed cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_inside_tls_ends_with_close_notify() {
    let proxy = Proxy::start().await;
    let (mut session, msgs) = login(proxy.port(), "orders", &[]).await;
    let key = msgs.iter().find(|m| m.tag == b'K').expect("BackendKeyData");
    session.send(&query_message("select pg_sleep(30)")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut cancel = Raw::connect(proxy.port())
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    let mut packet = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    packet.extend(&key.body);
    cancel.send(&packet).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), cancel.stream.read(&mut buf))
        .await
        .expect("pgvalet closes the cancel connection");
    // tokio-rustls reads a close_notify as end of stream, a bare TCP close as UnexpectedEof.
    assert!(matches!(read, Ok(0)), "{read:?}");

    let msgs = session.read_until_ready_or_error().await;
    assert_eq!(error_code(&msgs).as_deref(), Some("57014"), "{msgs:?}");
    proxy.stop().await;
}

/// asyncpg's test_introspection: a client drops a database it has just left. Direct, its
/// backend left with it; through pgvalet the pool's idle connection to that database makes
/// Postgres refuse with 55006 "database … is being accessed by other users".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_drop_a_database_pgvalet_holds_idle_connections_to() {
    let c = common::cluster();
    c.admin_sql(
        "postgres",
        "DROP DATABASE IF EXISTS compat_drop WITH (FORCE)",
    );
    c.admin_sql("postgres", "CREATE DATABASE compat_drop OWNER orders_svc");
    let proxy = Proxy::start().await;
    let used = psql(
        proxy.port(),
        "orders",
        "orders_any",
        "compat_drop",
        "select 1",
    )
    .await;
    assert!(used.ok, "{}", used.stderr);
    proxy
        .wait_for_pool("orders_any", "compat_drop", ONE_IDLE)
        .await;

    let dropped = psql(
        proxy.port(),
        "orders",
        "orders_any",
        "orders",
        "DROP DATABASE compat_drop",
    )
    .await;
    assert!(dropped.ok, "{}", dropped.stderr);
    proxy.stop().await;
}

const MB: usize = 1 << 20;

/// Messages off one half of a split stream.
struct Messages<R> {
    half: R,
    buf: bytes::BytesMut,
}

impl<R: tokio::io::AsyncRead + Unpin> Messages<R> {
    fn new(half: R) -> Self {
        Messages {
            half,
            buf: bytes::BytesMut::new(),
        }
    }

    /// The next message's tag and body; `None` at end of stream; panics when nothing arrives
    /// for 10 s (the session stalled).
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let message = self.buf.split_to(len + 1);
                    return Some((message[0], message[5..].to_vec()));
                }
            }
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.half.read_buf(&mut self.buf))
                    .await
                    .expect("stalled: nothing came through pgvalet for 10 s");
            if read.unwrap_or(0) == 0 {
                return None;
            }
        }
    }
}

fn message(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = vec![tag];
    out.extend(((len + 4) as u32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// A Bind of the unnamed statement with text parameters.
fn bind(params: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0, 0, 0, 0]; // unnamed portal and statement, no parameter formats
    body.extend((params.len() as u16).to_be_bytes());
    for p in params {
        body.extend((p.len() as u32).to_be_bytes());
        body.extend_from_slice(p);
    }
    body.extend([0, 0]); // no result formats
    message(b'B', &[&body])
}

const EXECUTE: [u8; 10] = [b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0];
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

/// asyncpg's test_executemany_server_failure_during_writes, the stall: a client that writes
/// while it reads (asyncpg, libpq's pipeline mode) sends many MB of queries behind one whose
/// result is itself many MB. Direct, Postgres writes that result while the client goes on
/// writing. Through pgvalet the backend's output must keep flowing to the client while a write
/// to the backend waits, or the backend blocks writing to pgvalet, stops reading, and the
/// session stalls for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_flows_while_the_client_is_still_writing() {
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    for user in ["orders", "txn"] {
        let (raw, _) = login(proxy.port(), user, &[]).await;
        let (rx, mut tx) = tokio::io::split(raw.stream);
        let (results, inputs) = (48, 32);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let first = format!("select repeat('x', {MB}) from generate_series(1, {results})");
            tx.write_all(&query_message(&first)).await?;
            let big = query_message(&format!("select length('{}')", "y".repeat(MB)));
            for _ in 0..inputs {
                tx.write_all(&big).await?;
            }
            tx.flush().await?;
            Ok::<_, std::io::Error>(tx)
        });
        let mut messages = Messages::new(rx);
        let (mut rows, mut readies) = (0, 0);
        while readies < 1 + inputs {
            let (tag, body) = messages.next().await.expect("pgvalet closed the session");
            match tag {
                b'D' => rows += 1,
                b'Z' => readies += 1,
                b'E' => panic!("{user}: {}", String::from_utf8_lossy(&body)),
                _ => {}
            }
        }
        assert_eq!(rows, results + inputs, "{user}");
        let tx = writer.await.unwrap().unwrap();
        let mut raw = Raw::on(messages.half.unsplit(tx));
        assert_eq!(raw.simple_query("select 7").await.unwrap()[0][0], "7");
    }
    proxy.stop().await;
}

/// asyncpg's test_executemany_server_failure_during_writes, the early error: a client that
/// reads while it writes pipelines one statement that keeps the backend busy, one that fails,
/// and then many more that each take the backend a moment (so that writes to it wait on the
/// sockets all along). Direct, the error reaches the client while it is still writing and it
/// stops; through pgvalet the error must not wait behind the client's writes until they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_error_reaches_a_client_that_is_still_writing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let proxy = Proxy::start_with("", TXN_ROUTE).await;
    for user in ["orders", "txn"] {
        let (raw, _) = login(proxy.port(), user, &[]).await;
        let (rx, mut tx) = tokio::io::split(raw.stream);
        let failed = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn({
            let failed = failed.clone();
            async move {
                use tokio::io::AsyncWriteExt;
                let sql = b"\0select length($1::text) / $2::int from pg_sleep($3::float8)\0";
                let mut first = message(b'P', &[sql, &[0, 0]]);
                for params in [[&b"a"[..], b"1", b"0.2"], [b"a", b"0", b"0"]] {
                    first.extend(bind(&params));
                    first.extend(EXECUTE);
                    first.extend(SYNC);
                }
                tx.write_all(&first).await?;
                // Then 8 KB parts that take the backend a millisecond each, for 3 s at most.
                let mut part = bind(&[&[b'a'; 8192], b"1", b"0.001"]);
                part.extend(EXECUTE);
                part.extend(SYNC);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                let mut parts = 0;
                while !failed.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                    tx.write_all(&part).await?;
                    tx.flush().await?;
                    parts += 1;
                }
                tx.write_all(&query_message("select 'done'")).await?;
                tx.flush().await?;
                let stopped_early = failed.load(Ordering::SeqCst);
                Ok::<_, std::io::Error>((tx, parts, stopped_early))
            }
        });
        let mut messages = Messages::new(rx);
        let (mut code, mut done) = (None, false);
        loop {
            let (tag, body) = messages.next().await.expect("pgvalet closed the session");
            match tag {
                b'E' => {
                    failed.store(true, Ordering::SeqCst);
                    code = Msg { tag, body }.field(b'C');
                }
                b'D' => done = body.ends_with(b"done"),
                b'Z' if done => break,
                _ => {}
            }
        }
        let (tx, parts, stopped_early) = writer.await.unwrap().unwrap();
        assert_eq!(code.as_deref(), Some("22012"), "{user}");
        assert!(
            stopped_early,
            "{user}: the error came only after the client had written for 3 s ({parts} parts)"
        );
        let mut raw = Raw::on(messages.half.unsplit(tx));
        assert_eq!(raw.simple_query("select 7").await.unwrap()[0][0], "7");
    }
    proxy.stop().await;
}

/// node-postgres' quick-disconnect test: a client ended while it connects writes its Terminate
/// ahead of its SSLRequest. Postgres reads a length word out of range, logs it and closes
/// without a byte; pgvalet answered FATAL 08P01, which node-postgres reports as "There was an
/// error establishing an SSL connection" for the client the application had already ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminate_ahead_of_the_ssl_request_is_closed_without_a_word() {
    let c = common::cluster();
    let proxy = Proxy::start().await;
    let terminate_then_ssl_request = [b'X', 0, 0, 0, 4, 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    for (way, port) in [("postgres", c.port), ("pgvalet", proxy.port())] {
        let mut raw = Raw::connect(port).await;
        raw.send(&terminate_then_ssl_request).await;
        assert!(
            raw.closed_within(Duration::from_secs(5)).await,
            "{way} closes without a byte"
        );
    }
    proxy.stop().await;
}
