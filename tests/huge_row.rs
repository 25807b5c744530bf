//! A backend that sends one DataRow of 500 MB, through a pgvalet process: psql gets it whole
//! and correct (its length and SHA-256 as the server computes them), pgvalet streams it without
//! holding it (its peak resident memory grows by far less than the row), other sessions are
//! served meanwhile, and the connection goes back to its pool. A client that reads such a row
//! slowly and then stops reading holds no more of pgvalet's memory, and when it hangs up
//! mid-row the backend connection is closed (its Postgres process ends) and the slot freed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::admin::{get, get_until, sample, with_metrics};
use common::process::ProxyProcess;
use common::*;
use tokio::io::AsyncReadExt;

/// 524,336,000 bytes of text: 500 copies of 1,048,672 bytes of MD5 digests (not a power of two,
/// and no two 16 KiB TLS records of it alike within a copy).
const PAYLOAD: &str =
    "repeat((select string_agg(md5(i::text), '') from generate_series(1, 32771) i), 500)";
const PAYLOAD_LEN: u64 = 524_336_000;
/// Far less than the row: pgvalet holds a few buffers of it at a time.
const MAX_GROWTH_KIB: u64 = 64 * 1024;

/// One 500 MB row at a time: each takes the cluster a gigabyte or two and both cores a while.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn series(route: &str, state: &str) -> String {
    format!(
        r#"pgvalet_pool_connections{{route="{route}",database="orders",backend="main",state="{state}"}}"#
    )
}

fn start() -> (ProxyProcess, u16) {
    let dir = tempfile::tempdir().unwrap();
    let admin = common::postgres::free_port();
    let route = common::proxy::orders_route("orders_txn", "main", "transaction", "max_size = 2");
    let text = with_metrics(&common::proxy::config_text(dir.path(), "", &route), admin);
    (
        ProxyProcess::start(&text, dir).expect("pgvalet starts"),
        admin,
    )
}

/// Waits until the gauge `series` reads `value`.
async fn settles(admin: u16, series: &str, value: f64) {
    let (_, body) = get_until(admin, "/metrics", |_, m| sample(m, series) == value).await;
    assert_eq!(sample(&body, series), value, "{series}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_mb_row_streams_through_whole_in_bounded_memory() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = cluster();
    // What the row is, as the server computes it (psql prints it with a newline).
    let expected = cluster.admin_sql(
        "orders",
        &format!(
            "select length(p) || ' ' || encode(sha256(convert_to(p || E'\\n', 'UTF8')), 'hex') from (select {PAYLOAD} as p) s"
        ),
    );
    let (length, digest) = expected.split_once(' ').unwrap();
    assert_eq!(length.parse::<u64>().unwrap(), PAYLOAD_LEN);

    let (proxy, admin) = start();
    // Warm up both routes, so that the baseline holds what serving them takes.
    let bystander = pg_connect(proxy.port, "orders", "orders_txn", "orders")
        .await
        .unwrap();
    bystander.batch_execute("select 1").await.unwrap();
    assert!(
        psql(proxy.port, "orders", "orders", "orders", "select 1")
            .await
            .ok
    );
    let before = proxy.memory_kib("VmHWM");
    let (_, metrics) = get(admin, "/metrics").await;
    let sent_before = sample(
        &metrics,
        r#"pgvalet_bytes_total{direction="backend_to_client"}"#,
    );

    // psql through pgvalet, its output counted and hashed as it comes.
    let p = |f: &str| pki().join(f).display().to_string();
    let conn = format!(
        "host=127.0.0.1 port={} dbname=orders user=orders sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        proxy.port,
        p("ca.crt"),
        p("orders.crt"),
        p("orders.key"),
    );
    let counted = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "set -o pipefail; psql -X -A -t -v ON_ERROR_STOP=1 -c \"select {PAYLOAD}\" '{conn}' | tee >(wc -c > {count}) | sha256sum",
        count = counted.path().display(),
    );
    let started = Instant::now();
    let mut psql = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Meanwhile another session is served, query after query.
    let done = Arc::new(AtomicBool::new(false));
    let meanwhile = tokio::spawn({
        let done = done.clone();
        async move {
            let mut slowest = Duration::ZERO;
            let mut served = 0;
            while !done.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let row = bystander.query_one("select 6 * 7", &[]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), 42);
                slowest = slowest.max(asked.elapsed());
                served += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (served, slowest)
        }
    });
    let mut out = String::new();
    psql.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let status = psql.wait().await.unwrap();
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (served, slowest) = meanwhile.await.unwrap();
    let mut err = String::new();
    psql.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(status.success(), "psql: {err}");

    // Whole and correct.
    assert_eq!(out.split_whitespace().next(), Some(digest), "{out}");
    let count = std::fs::read_to_string(counted.path()).unwrap();
    assert_eq!(count.trim().parse::<u64>().unwrap(), PAYLOAD_LEN + 1);
    // Streamed: pgvalet's peak resident memory grew by far less than the row.
    let grown = proxy.memory_kib("VmHWM").saturating_sub(before);
    assert!(grown < MAX_GROWTH_KIB, "pgvalet's peak grew by {grown} KiB");
    // Others were served while it passed.
    assert!(
        served >= 3 && slowest < Duration::from_secs(5),
        "{served} queries in {took:?}, the slowest {slowest:?}"
    );
    // Every byte counted, and the connection back in its pool.
    settles(admin, &series("orders", "active"), 0.0).await;
    let (_, metrics) = get(admin, "/metrics").await;
    assert!(sample(&metrics, &series("orders", "idle")) >= 1.0);
    let sent = sample(
        &metrics,
        r#"pgvalet_bytes_total{direction="backend_to_client"}"#,
    );
    assert!(
        sent - sent_before >= PAYLOAD_LEN as f64,
        "{sent_before} -> {sent}"
    );
    println!(
        "500 MB row: {took:?}, pgvalet's peak grew {grown} KiB; {served} other queries meanwhile, the slowest {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_500_mb_row_holds_no_memory_and_frees_its_backend() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = cluster();
    let (proxy, admin) = start();
    let warm = pg_connect(proxy.port, "orders", "orders_txn", "orders")
        .await
        .unwrap();
    warm.batch_execute("select 1").await.unwrap();
    drop(warm);
    let before = proxy.memory_kib("VmHWM");

    let mut raw = Raw::startup(
        proxy.port,
        &[("user", "orders_txn"), ("database", "orders")],
    )
    .await;
    let msgs = raw.read_until_ready_or_error().await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    raw.send(&query_message(&format!("select {PAYLOAD}"))).await;

    // Slowly: 64 KiB every 100 ms for 3 s, then nothing for 3 s more.
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let slow_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < slow_until {
        let n = tokio::time::timeout(Duration::from_secs(20), raw.stream.read(&mut chunk))
            .await
            .expect("nothing came")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The row has begun (RowDescription, then the DataRow's header), and is far from done.
    let at = got.iter().position(|&b| b == b'D').unwrap();
    let declared = u32::from_be_bytes(got[at + 1..at + 5].try_into().unwrap()) as u64;
    assert_eq!(declared, 4 + 2 + 4 + PAYLOAD_LEN);
    assert!(
        (got.len() as u64) < PAYLOAD_LEN / 10,
        "{} bytes read",
        got.len()
    );
    let grown = proxy.memory_kib("VmHWM").saturating_sub(before);
    assert!(grown < MAX_GROWTH_KIB, "pgvalet's peak grew by {grown} KiB");
    assert_eq!(
        sample(
            &get(admin, "/metrics").await.1,
            &series("orders_txn", "active")
        ),
        1.0
    );

    // Hanging up mid-row: the backend connection is closed, not pooled, and its slot freed.
    let running = "select count(*) from pg_stat_activity where state = 'active' and query like 'select repeat(%'";
    assert_eq!(cluster.admin_sql("orders", running), "1");
    drop(raw);
    settles(admin, &series("orders_txn", "active"), 0.0).await;
    assert_eq!(
        sample(
            &get(admin, "/metrics").await.1,
            &series("orders_txn", "idle")
        ),
        0.0
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.admin_sql("orders", running) != "0" {
        assert!(
            Instant::now() < deadline,
            "the backend still runs the query"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = pg_connect(proxy.port, "orders", "orders_txn", "orders")
        .await
        .unwrap();
    client.batch_execute("select 1").await.unwrap();
    println!(
        "slow reader: {} bytes read, pgvalet's peak grew {grown} KiB",
        got.len()
    );
}
