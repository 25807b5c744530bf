//! Pooling: backend connections reused across sessions (session mode, reset between clients)
//! and across transactions (transaction mode), bounded by max_size with FIFO waiting and clean
//! 53300 refusals, and slots that always come back, however a client leaves.

mod common;

use std::time::Duration;

use common::*;
use pgvalet::pool::Stats;

const ROUTES: &str = r#"
[[routes]]
name = "sess"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["sess"]
databases = ["orders"]
backend = "main"
credentials = "orders"
max_size = 2
borrow_timeout = "1s"

[[routes]]
name = "txn"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["txn"]
databases = ["orders"]
backend = "main"
credentials = "orders"
pool_mode = "transaction"
max_size = 2
borrow_timeout = "1s"
"#;

fn stats(idle: usize, active: usize) -> Stats {
    Stats {
        idle,
        active,
        waiting: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_reuses_connections_and_resets_them() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let first = psql(
        proxy.port(),
        "orders",
        "sess",
        "orders",
        "create temp table scratch(x int); set work_mem = '7MB'; select pg_backend_pid()",
    )
    .await;
    assert!(first.ok, "{}", first.stderr);
    proxy.wait_for_pool("sess", "orders", stats(1, 0)).await;
    let second = psql(
        proxy.port(),
        "orders",
        "sess",
        "orders",
        "select pg_backend_pid(), current_setting('work_mem'), to_regclass('pg_temp.scratch') is null",
    )
    .await;
    let (pid, rest) = second
        .stdout
        .split_once('|')
        .unwrap_or_else(|| panic!("{}", second.stderr));
    assert_eq!(
        first.stdout.lines().last(),
        Some(pid),
        "the second session reused the first one's backend"
    );
    assert_eq!(
        rest, "4MB|t",
        "DISCARD ALL reset the setting and dropped the temp table"
    );
    proxy.wait_for_pool("sess", "orders", stats(1, 0)).await;
    proxy.stop().await;
}

/// A session on `route` with these startup parameters; returns the settings it sees.
async fn settings_seen(port: u16, route: &str, params: &[(&str, &str)]) -> Vec<String> {
    let mut all = vec![("user", route), ("database", "orders")];
    all.extend_from_slice(params);
    let mut tls = Raw::startup(port, &all).await;
    let msgs = tls.read_until_ready_or_error().await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    let sql = "select current_setting('application_name'), current_setting('TimeZone'), \
               pg_backend_pid(), current_setting('statement_timeout')";
    let row = tls.simple_query(sql).await.unwrap().remove(0);
    tls.send(&[b'X', 0, 0, 0, 4]).await;
    row
}

/// A client's value ending in a backslash, applied on a connection that a client left with
/// `standard_conforming_strings` off: the backslash once escaped the closing quote of the
/// literal pgvalet wrote, the settings failed to apply and the connection was thrown away (a
/// value made for it could have run SQL of its own in pgvalet's settings query).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_settings_are_quoted_whatever_the_connection_quotes_with() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let off = ("standard_conforming_strings", "off");
    let first = settings_seen(proxy.port(), "txn", &[off]).await;
    proxy.wait_for_pool("txn", "orders", stats(1, 0)).await;
    let second = settings_seen(proxy.port(), "txn", &[off, ("application_name", r"x\")]).await;
    assert_eq!(second[2], first[2], "the same backend was reused");
    assert_eq!(second[0], r"x\");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_settings_follow_the_client_not_the_connection() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let default_zone = cluster().admin_sql("postgres", "show timezone");
    for route in ["sess", "txn"] {
        let first = settings_seen(
            proxy.port(),
            route,
            &[
                ("application_name", "one"),
                ("TimeZone", "Asia/Tokyo"),
                ("options", "-c statement_timeout=5432"),
            ],
        )
        .await;
        assert_eq!(first[..2], ["one", "Asia/Tokyo"], "{route}");
        assert_eq!(first[3], "5432ms", "{route}: options=-c applied");
        proxy.wait_for_pool(route, "orders", stats(1, 0)).await;
        // The same backend connection, a client with other settings (and no TimeZone).
        let second = settings_seen(proxy.port(), route, &[("application_name", "two")]).await;
        assert_eq!(second[2], first[2], "{route}: the same backend was reused");
        assert_eq!(second[..2], ["two", default_zone.as_str()], "{route}");
        assert_eq!(
            second[3], "0",
            "{route}: the first client's options stayed with it"
        );
    }
    // Options Postgres does not take are refused as Postgres refuses them.
    let params = [("user", "sess"), ("database", "orders"), ("options", "-x")];
    let mut tls = Raw::startup(proxy.port(), &params).await;
    let msgs = tls.read_until_ready_or_error().await;
    assert_eq!(error_code(&msgs).as_deref(), Some("42601"), "{msgs:?}");
    assert_eq!(
        error_message(&msgs).as_deref(),
        Some("invalid command-line argument for server process: -x")
    );
    proxy.wait_for_pool("sess", "orders", stats(1, 0)).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_mode_multiplexes_many_clients_on_few_connections() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(
            pg_connect(proxy.port(), "orders", "txn", "orders")
                .await
                .unwrap(),
        );
    }
    // Ten sessions open, at most two backend connections.
    assert!(proxy.pool_stats("txn", "orders").idle <= 2);
    let mut tasks = Vec::new();
    for client in clients {
        tasks.push(tokio::spawn(async move {
            let mut pids = std::collections::BTreeSet::new();
            for i in 0..20i32 {
                let row = client
                    .query_one("select pg_backend_pid(), $1::int + 1", &[&i])
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i32>(1), i + 1);
                pids.insert(row.get::<_, i32>(0));
            }
            // Inside a transaction the backend stays the same.
            client.batch_execute("begin").await.unwrap();
            let a: i32 = client
                .query_one("select pg_backend_pid()", &[])
                .await
                .unwrap()
                .get(0);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let b: i32 = client
                .query_one("select pg_backend_pid()", &[])
                .await
                .unwrap()
                .get(0);
            client.batch_execute("commit").await.unwrap();
            assert_eq!(a, b, "one backend for the whole transaction");
            pids
        }));
    }
    let mut all = std::collections::BTreeSet::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert!(
        all.len() <= 2,
        "ten clients used {} backends: {all:?}",
        all.len()
    );
    let s = proxy.pool_stats("txn", "orders");
    assert_eq!((s.active, s.waiting), (0, 0), "{s:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn borrow_storm_ends_in_clean_53300_and_a_full_pool() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let port = proxy.port();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        tasks.push(tokio::spawn(async move {
            let client = pg_connect(port, "orders", "txn", "orders").await?;
            client
                .query_one("select pg_sleep(0.3)", &[])
                .await
                .map(|_| ())
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => {
                let db = e
                    .as_db_error()
                    .unwrap_or_else(|| panic!("not a server error: {e:?}"));
                assert_eq!(db.code().code(), "53300", "{db:?}");
                assert_eq!(
                    db.message(),
                    "timed out waiting to acquire a database connection"
                );
                refused += 1;
            }
        }
    }
    assert!(ok >= 2, "ok {ok}, refused {refused}");
    assert!(
        refused > 0,
        "100 clients of 0.3 s on 2 connections with a 1 s wait: some must be refused"
    );
    proxy.wait_for_pool("txn", "orders", stats(2, 0)).await;
    // And the pool serves again.
    let client = pg_connect(port, "orders", "txn", "orders").await.unwrap();
    client.query_one("select 1", &[]).await.unwrap();
    proxy.stop().await;
}

/// Opens a TLS session on `user` and sends `messages`, then drops the connection without a word.
async fn leave_abruptly(port: u16, user: &str, messages: &[Vec<u8>]) {
    let mut tls = Raw::startup(port, &[("user", user), ("database", "orders")]).await;
    let msgs = tls.read_until_ready_or_error().await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    for m in messages {
        tls.send(m).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tls);
}

fn copy_data(data: &[u8]) -> Vec<u8> {
    let mut out = vec![b'd'];
    out.extend(((data.len() + 4) as u32).to_be_bytes());
    out.extend(data);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_come_back_however_a_client_leaves() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("mid-query", vec![query_message("select pg_sleep(3)")]),
        ("mid-transaction", vec![query_message("begin; select 1")]),
        (
            "mid-COPY",
            vec![
                query_message("create temp table t(x int); copy t from stdin"),
                copy_data(b"1\n2\n"),
            ],
        ),
        ("half a message", vec![b"Q\0\0\0\x40select".to_vec()]),
        ("idle", vec![]),
    ];
    for route in ["sess", "txn"] {
        for (name, messages) in &cases {
            leave_abruptly(proxy.port(), route, messages).await;
            for _ in 0..100 {
                if proxy.pool_stats(route, "orders").active == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let s = proxy.pool_stats(route, "orders");
            assert_eq!((s.active, s.waiting), (0, 0), "{route} {name}: {s:?}");
            assert!(s.idle <= 2, "{route} {name}: {s:?}");
        }
        // The pool still serves.
        let out = psql(proxy.port(), "orders", route, "orders", "select 42").await;
        assert_eq!(out.stdout, "42", "{route}: {}", out.stderr);
    }
    // psql leaves as soon as it has its answer; the session ends a moment later.
    for _ in 0..100 {
        if proxy.cancels.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proxy.cancels.is_empty(),
        "every session's cancel key was withdrawn"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_while_idle_is_not_handed_out() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let out = psql(
        proxy.port(),
        "orders",
        "sess",
        "orders",
        "select pg_backend_pid()",
    )
    .await;
    let pid = out.stdout.clone();
    proxy.wait_for_pool("sess", "orders", stats(1, 0)).await;
    cluster().admin_sql("postgres", &format!("select pg_terminate_backend({pid})"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = psql(
        proxy.port(),
        "orders",
        "sess",
        "orders",
        "select pg_backend_pid()",
    )
    .await;
    assert!(
        out.ok,
        "the next client got the dead connection: {}",
        out.stderr
    );
    assert_ne!(out.stdout, pid);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_backend_serving_the_transaction() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let client = pg_connect(proxy.port(), "orders", "txn", "orders")
        .await
        .unwrap();
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        client
            .query_one("select pg_sleep(30)", &[])
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        (*client_tls("ca.crt", Some("orders"), None)).clone(),
    );
    let started = std::time::Instant::now();
    token.cancel_query(tls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "cancelled within a second"
    );
    proxy.wait_for_pool("txn", "orders", stats(1, 0)).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_pins_the_client_in_transaction_mode() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let pins = || {
        proxy
            .reloader
            .pools()
            .all()
            .iter()
            .find(|p| p.name() == "txn/orders")
            .map(|p| p.pins())
            .unwrap_or(0)
    };

    // A temp table made in one transaction must be there in the next ones: the client is
    // pinned to the backend that has it.
    let a = pg_connect(proxy.port(), "orders", "txn", "orders")
        .await
        .unwrap();
    a.batch_execute("create temp table scratch (x int); set search_path = pg_temp, public")
        .await
        .unwrap();
    let pid: i32 = a
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Another client keeps the other connection busy meanwhile.
    let b = pg_connect(proxy.port(), "orders", "txn", "orders")
        .await
        .unwrap();
    for i in 0..10i32 {
        a.execute("insert into scratch values ($1)", &[&i])
            .await
            .unwrap();
        b.query_one("select 1", &[]).await.unwrap();
        let again: i32 = a
            .query_one("select pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(again, pid, "pinned to one backend");
    }
    let n: i64 = a
        .query_one("select count(*) from scratch", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);
    assert_eq!(pins(), 1);

    // A session advisory lock taken through a prepared statement pins too.
    let c = pg_connect(proxy.port(), "orders", "sess", "orders")
        .await
        .unwrap();
    drop(c);
    let d = pg_connect(proxy.port(), "orders", "txn", "orders")
        .await
        .unwrap();
    drop(b);
    d.query_one("select pg_advisory_lock($1)", &[&42i64])
        .await
        .unwrap();
    assert_eq!(pins(), 2);
    drop(d);
    drop(a);

    // Both pinned backends come back reset: no temp table, no search_path, no lock.
    proxy.wait_for_pool("txn", "orders", stats(2, 0)).await;
    for _ in 0..2 {
        let e = pg_connect(proxy.port(), "orders", "txn", "orders")
            .await
            .unwrap();
        e.batch_execute("begin").await.unwrap();
        let row = e
            .query_one("select to_regclass('pg_temp.scratch') is null, current_setting('search_path'), pg_try_advisory_xact_lock(42)", &[])
            .await
            .unwrap();
        assert!(
            row.get::<_, bool>(0),
            "the temp table was dropped by the reset"
        );
        assert_eq!(row.get::<_, String>(1), "\"$user\", public");
        assert!(row.get::<_, bool>(2), "the session lock was released");
        e.batch_execute("commit").await.unwrap();
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_ctrl_c_cancels_through_pgvalet_within_a_second() {
    let proxy = Proxy::start_with("", ROUTES).await;
    for route in ["sess", "txn"] {
        let p = |f: &str| pki().join(f).display().to_string();
        let conn = format!(
            "host=127.0.0.1 port={} dbname=orders user={route} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
            proxy.port(),
            p("ca.crt"),
            p("orders.crt"),
            p("orders.key")
        );
        let child = tokio::process::Command::new("psql")
            .args(["-X", "-c", "select pg_sleep(30)", &conn])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let started = std::time::Instant::now();
        // What Ctrl-C does: SIGINT to psql, which sends a CancelRequest.
        let status = std::process::Command::new("kill")
            .args(["-INT", &child.id().unwrap().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("canceling statement due to user request"),
            "{route}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{route}: took {:?}",
            started.elapsed()
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_is_warmed_and_idle_connections_are_retired() {
    let tables = ROUTES.to_owned()
        + "\n[[routes]]\nname = \"warm\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\nusers = [\"warm\"]\ndatabases = [\"orders\"]\nbackend = \"main\"\ncredentials = \"orders\"\nmax_size = 4\nmin_idle = 2\n"
        + "\n[[routes]]\nname = \"brief\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\nusers = [\"brief\"]\ndatabases = [\"orders\"]\nbackend = \"main\"\ncredentials = \"orders\"\nidle_timeout = \"500ms\"\n";
    let proxy = Proxy::start_with("", &tables).await;
    // Warmed at start, before any client.
    proxy.wait_for_pool("warm", "orders", stats(2, 0)).await;
    // An idle connection past idle_timeout is closed by the housekeeping.
    let out = psql(proxy.port(), "orders", "brief", "orders", "select 1").await;
    assert_eq!(out.stdout, "1", "{}", out.stderr);
    proxy.wait_for_pool("brief", "orders", stats(1, 0)).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(proxy.pool_stats("brief", "orders"), stats(0, 0));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_survive_a_pinned_neighbours_reset() {
    let tables = ROUTES.to_owned()
        + "\n[[routes]]\nname = \"one\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\nusers = [\"one\"]\ndatabases = [\"orders\"]\nbackend = \"main\"\ncredentials = \"orders\"\npool_mode = \"transaction\"\nmax_size = 1\n";
    let proxy = Proxy::start_with("", &tables).await;
    // A prepares a statement on the only connection.
    let a = pg_connect(proxy.port(), "orders", "one", "orders")
        .await
        .unwrap();
    let stmt = a.prepare("select $1::int + 100").await.unwrap();
    assert_eq!(
        a.query_one(&stmt, &[&1i32]).await.unwrap().get::<_, i32>(0),
        101
    );
    // B pins that connection, then leaves: the connection is reset (DISCARD ALL).
    let b = pg_connect(proxy.port(), "orders", "one", "orders")
        .await
        .unwrap();
    b.batch_execute("set work_mem = '8MB'").await.unwrap();
    drop(b);
    proxy.wait_for_pool("one", "orders", stats(1, 0)).await;
    // A's statement still works: pgvalet knows the reset dropped it and prepares it again.
    assert_eq!(
        a.query_one(&stmt, &[&2i32]).await.unwrap().get::<_, i32>(0),
        102
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_parameters_and_results_in_transaction_mode() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let client = pg_connect(proxy.port(), "orders", "txn", "orders")
        .await
        .unwrap();
    // A 4 MiB Bind: read whole in transaction mode, far past the relay's read-ahead.
    let blob: Vec<u8> = (0..4 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let back = tokio::time::timeout(
        Duration::from_secs(20),
        client.query_one("select $1::bytea", &[&blob]),
    )
    .await
    .expect("a large Bind stalled the relay")
    .unwrap();
    assert_eq!(back.get::<_, Vec<u8>>(0), blob);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_in_transaction_mode() {
    use futures_util::{SinkExt, TryStreamExt};
    cluster().admin_sql(
        "orders",
        "create table if not exists copied (id int, name text); grant all on copied to orders_svc",
    );
    let proxy = Proxy::start_with("", ROUTES).await;
    let client = pg_connect(proxy.port(), "orders", "txn", "orders")
        .await
        .unwrap();
    let other = pg_connect(proxy.port(), "orders", "txn", "orders")
        .await
        .unwrap();
    client.batch_execute("delete from copied").await.unwrap();
    let sink = client.copy_in("copy copied from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..5000 {
        data += &format!("{i}\tname-{i}\n");
    }
    sink.send(bytes::Bytes::from(data.clone())).await.unwrap();
    other.query_one("select 1", &[]).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 5000);
    let out = client
        .copy_out("copy (select * from copied order by id) to stdout")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    assert_eq!(String::from_utf8(chunks.concat()).unwrap(), data);
    drop((client, other));
    proxy.wait_for_pool("txn", "orders", stats(2, 0)).await;
    proxy.stop().await;
}

/// Without `max_size` a pool takes a share of the backend's connection slots, read from the
/// backend: 2% of (200 `max_connections` less 3 reserved for superusers) is 3. The fourth
/// session waits `borrow_timeout`, is refused with 53300, and gets in once a slot is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_sized_as_a_share_of_the_backend_connections() {
    let share = r#"
[[routes]]
name = "share"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["share"]
databases = ["orders"]
backend = "main"
credentials = "orders"
max_connections_percent = 2
borrow_timeout = "1s"
"#;
    let proxy = Proxy::start_with("", share).await;
    let port = proxy.port();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let client = pg_connect(port, "orders", "share", "orders").await.unwrap();
        client.query_one("select 1", &[]).await.unwrap();
        sessions.push(client);
    }
    proxy.wait_for_pool("share", "orders", stats(0, 3)).await;
    let limit = proxy
        .reloader
        .pools()
        .all()
        .iter()
        .find(|p| p.name() == "share/orders")
        .map(|p| p.limit());
    assert_eq!(limit, Some(3));
    let started = std::time::Instant::now();
    let refused = pg_connect(port, "orders", "share", "orders")
        .await
        .expect_err("a fourth session has no slot");
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
    assert_eq!(sqlstate(&refused).as_deref(), Some("53300"), "{refused:?}");
    sessions.pop();
    let client = pg_connect(port, "orders", "share", "orders").await.unwrap();
    client.query_one("select 1", &[]).await.unwrap();
    proxy.stop().await;
}

/// A client that leaves a database and drops it succeeds, as it does direct: the idle pooled
/// connection it left behind is closed first (simple protocol with psql, extended with
/// tokio-postgres; both pool modes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_left_by_its_clients_can_be_dropped() {
    let any = r#"
[[routes]]
name = "any_txn"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["any_txn"]
databases = ["*"]
backend = "main"
credentials = "orders"
pool_mode = "transaction"
"#;
    let proxy = Proxy::start_with("", any).await;
    let port = proxy.port();
    for (i, route) in ["orders_any", "any_txn"].iter().enumerate() {
        for extended in [false, true] {
            let db = format!("scratch_{i}_{extended}");
            cluster().admin_sql(
                "postgres",
                &format!("create database {db} owner orders_svc"),
            );
            let used = psql(port, "orders", route, &db, "select 1").await;
            assert!(used.ok, "{route}: {}", used.stderr);
            proxy.wait_for_pool(route, &db, stats(1, 0)).await;
            let drop = format!("DROP DATABASE {db}");
            if extended {
                let client = pg_connect(port, "orders", route, "orders").await.unwrap();
                client
                    .execute(drop.as_str(), &[])
                    .await
                    .unwrap_or_else(|e| panic!("{route}: {e:?}"));
            } else {
                let dropped = psql(port, "orders", route, "orders", &drop).await;
                assert!(dropped.ok, "{route}: {}", dropped.stderr);
            }
            assert_eq!(proxy.pool_stats(route, &db), stats(0, 0), "{route}");
        }
    }
    proxy.stop().await;
}
