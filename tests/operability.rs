//! Running pgvalet as an operator does: metrics and health on `metrics.addr`, `pgvalet health`,
//! SIGHUP and `watch` reloads of certificates, configuration from the environment, JSON logs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::admin::{get, get_until, sample, with_metrics};
use common::clients::{Raw, error_code, psql};
use common::process::ProxyProcess;
use common::{cluster, pki};
use tokio::io::AsyncWriteExt;

fn health(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgvalet"))
        .args(["health", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_refused_and_accepted_connections() {
    let dir = tempfile::tempdir().unwrap();
    let admin = common::postgres::free_port();
    let text = with_metrics(&common::proxy::config_text(dir.path(), "", ""), admin);
    let proxy = ProxyProcess::start(&text, dir).expect("pgvalet starts");

    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".into()));
    let (status, body) = get_until(admin, "/readyz", |s, _| s == 200).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let config_path = std::env::temp_dir().join(format!("pgvalet-health-{admin}.toml"));
    std::fs::write(&config_path, &text).unwrap();
    let (ok, out) = health(&config_path);
    assert!(ok, "{out}");

    let (_, before) = get(admin, "/metrics").await;
    // Refused: mallory's certificate is valid but no route names it.
    let refused = psql(proxy.port, "mallory", "orders", "orders", "select 1").await;
    assert!(!refused.ok, "{}", refused.stdout);
    // Refused before TLS would even start: a client that sends garbage.
    let mut garbage = Raw::connect(proxy.port).await;
    garbage.send(&[0, 0, 0, 8, 1, 2, 3, 4]).await;
    let answer = garbage.read_until_ready_or_error().await;
    assert_eq!(error_code(&answer).as_deref(), Some("08P01"));
    // Accepted: four requests, of which two end a transaction (select 1, commit).
    let client = common::clients::pg_connect(proxy.port, "orders", "orders", "orders")
        .await
        .unwrap();
    for sql in ["select 1", "begin", "select 2", "commit"] {
        client.simple_query(sql).await.unwrap();
    }
    drop(client);

    let ended = r#"pgvalet_client_connections{state="active"} 0"#;
    let (status, after) = get_until(admin, "/metrics", |_, m| m.contains(ended)).await;
    assert_eq!(status, 200);
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved(r#"pgvalet_handshakes_total{outcome="route_denied",endpoint="default"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"pgvalet_handshakes_total{outcome="protocol_error",endpoint="default"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"pgvalet_handshakes_total{outcome="ok",endpoint="default"}"#),
        1.0
    );
    assert_eq!(moved(r#"pgvalet_queries_total{route="orders"}"#), 4.0);
    assert_eq!(moved(r#"pgvalet_transactions_total{route="orders"}"#), 2.0);
    assert!(moved(r#"pgvalet_bytes_total{direction="client_to_backend"}"#) > 50.0);
    assert!(moved(r#"pgvalet_bytes_total{direction="backend_to_client"}"#) > 50.0);
    assert!(
        moved(r#"pgvalet_backend_connects_total{backend="main",outcome="ok"}"#) >= 1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, r#"pgvalet_backend_reachable{backend="main"}"#),
        1.0
    );
    assert!(after.contains("pgvalet_handshake_duration_seconds_bucket{le="));
    assert!(after.contains(r#"pgvalet_pool_borrow_wait_seconds_count{route="orders"}"#));
    // The session ended and its connection went back: one idle, none active, nobody waiting.
    assert_eq!(
        sample(
            &after,
            r#"pgvalet_pool_connections{route="orders",database="orders",backend="main",state="idle"}"#
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"pgvalet_pool_connections{route="orders",database="orders",backend="main",state="active"}"#
        ),
        0.0
    );
    assert_eq!(
        sample(&after, r#"pgvalet_client_connections{state="active"}"#),
        0.0
    );
    assert!(
        sample(
            &after,
            r#"pgvalet_secret_fetches_total{credentials="orders",outcome="ok"}"#
        ) >= 1.0
    );
    let age = sample(
        &after,
        r#"pgvalet_secret_age_seconds{credentials="orders"}"#,
    );
    assert!(age > 0.0 && age < 600.0, "{age}");
    let expiry = sample(
        &after,
        r#"pgvalet_certificate_expiry_seconds{certificate="server"}"#,
    );
    assert!(expiry > 86_400.0 * 300.0, "{expiry}");
    assert!(
        sample(
            &after,
            r#"pgvalet_certificate_expiry_seconds{certificate="client_ca"}"#
        ) > expiry
    );
    for line in after
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(line.starts_with("pgvalet_"), "{line}");
    }
    assert_eq!(get(admin, "/nope").await.0, 404);
    drop(proxy);
    let _ = std::fs::remove_file(&config_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_an_unreachable_backend_and_health_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let admin = common::postgres::free_port();
    let closed = common::postgres::free_port();
    let text = with_metrics(&common::proxy::config_text(dir.path(), "", ""), admin).replace(
        &format!("port = {}", cluster().port),
        &format!("port = {closed}"),
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config_path = config_dir.path().join("health.toml");
    std::fs::write(&config_path, &text).unwrap();
    let proxy = ProxyProcess::start(&text, dir).expect("pgvalet starts");
    let (status, body) = get_until(admin, "/readyz", |_, b| b.contains("unreachable")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("backends.main unreachable") && body.contains(&closed.to_string()),
        "{body}"
    );
    let (ok, out) = health(&config_path);
    assert!(!ok && out.contains("backends.main unreachable"), "{out}");
    assert_eq!(get(admin, "/healthz").await.0, 200);
    drop(proxy);
    // Nothing answers at all: health says so and exits 1.
    let (ok, out) = health(&config_path);
    assert!(!ok && out.contains(&admin.to_string()), "{out}");
}

/// psql with the orders certificate gets a session as the route's backend user.
async fn assert_psql_logs_in_as_orders_svc(port: u16) {
    let ok = psql(port, "orders", "orders", "orders", "select current_user").await;
    assert_eq!(ok.stdout, "orders_svc", "{}", ok.stderr);
}

/// The certificate a TLS handshake with pgvalet shows now.
async fn served_cert(port: u16) -> Vec<u8> {
    let raw = Raw::connect(port)
        .await
        .start_tls(Some("orders"))
        .await
        .unwrap();
    let (_, session) = raw.stream.get_ref();
    session.peer_certificates().unwrap()[0].to_vec()
}

/// A TLS handshake with pgvalet now shows the dev PKI's certificate `name`.
async fn assert_serves(port: u16, name: &str) {
    assert_eq!(
        served_cert(port).await,
        pem_der(&pki().join(name)),
        "pgvalet should serve {name}"
    );
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

fn copy_server_cert(from: &str, to: &Path) {
    std::fs::copy(pki().join(format!("{from}.crt")), to.join("server.crt")).unwrap();
    std::fs::copy(pki().join(format!("{from}.key")), to.join("server.key")).unwrap();
}

/// pgvalet as a process with a copy of the dev server certificate it can be made to reload,
/// and a metrics endpoint; checks that it serves the copy. Returns the copy's directory and
/// the metrics port.
async fn start_with_own_cert(top: &str) -> (ProxyProcess, std::path::PathBuf, u16) {
    let dir = tempfile::tempdir().unwrap();
    copy_server_cert("server", dir.path());
    let admin = common::postgres::free_port();
    let text = own_cert_config(dir.path(), top, admin);
    let cert_dir = dir.path().to_owned();
    let proxy = ProxyProcess::start(&text, dir).expect("pgvalet starts");
    assert_serves(proxy.port, "server.crt").await;
    (proxy, cert_dir, admin)
}

fn own_cert_config(dir: &Path, top: &str, admin: u16) -> String {
    let text = with_metrics(&common::proxy::config_text(dir, top, ""), admin);
    let p = |f: &str| pki().join(f).display().to_string();
    text.replace(
        &p("server.crt"),
        &dir.join("server.crt").display().to_string(),
    )
    .replace(
        &p("server.key"),
        &dir.join("server.key").display().to_string(),
    )
}

/// psql reading SQL from its stdin, connected through pgvalet as `orders`.
fn open_psql(port: u16) -> tokio::process::Child {
    let p = |f: &str| pki().join(f).display().to_string();
    let conn = format!(
        "host=127.0.0.1 port={port} dbname=orders user=orders sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        p("ca.crt"),
        p("orders.crt"),
        p("orders.key"),
    );
    tokio::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", &conn])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_for_log(proxy: &ProxyProcess, text: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.logs().matches(text).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_renews_the_server_certificate_while_a_session_runs() {
    let (proxy, cert_dir, admin) = start_with_own_cert("").await;

    // An open session, mid-transaction, across the reload.
    let client = common::clients::pg_connect(proxy.port, "orders", "orders", "orders")
        .await
        .unwrap();
    client
        .batch_execute("begin; create temp table t (x int); insert into t values (1)")
        .await
        .unwrap();

    // And an interactive psql, as a person would have open.
    let mut interactive = open_psql(proxy.port);
    let stdin = interactive.stdin.as_mut().unwrap();
    stdin.write_all(b"select 'before' as at;\n").await.unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        interactive.stdout.take().unwrap(),
    ));
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some("before"),
        "psql is connected"
    );

    copy_server_cert("server-renewed", &cert_dir);
    proxy.signal("HUP");
    wait_for_log(&proxy, "configuration reloaded", 1).await;
    let stdin = interactive.stdin.as_mut().unwrap();
    stdin
        .write_all(b"select 'after' as at;\n\\q\n")
        .await
        .unwrap();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("after"));
    let out = interactive.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_serves(proxy.port, "server-renewed.crt").await;
    let row = client
        .query_one(
            "insert into t values (2) returning (select count(*) from t)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        1,
        "the open session kept its transaction"
    );
    client.batch_execute("commit").await.unwrap();
    assert_psql_logs_in_as_orders_svc(proxy.port).await;

    // A broken renewal (a key that does not fit) is refused and the running certificate stays.
    std::fs::copy(pki().join("server.key"), cert_dir.join("server.key")).unwrap();
    proxy.signal("HUP");
    wait_for_log(&proxy, "configuration reload refused", 1).await;
    assert!(
        proxy.logs().contains("does not fit tls.cert"),
        "{}",
        proxy.logs()
    );
    assert_serves(proxy.port, "server-renewed.crt").await;
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(
        sample(&metrics, r#"pgvalet_config_reloads_total{outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"pgvalet_config_reloads_total{outcome="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        client
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_when_the_certificate_files_change() {
    let (proxy, cert_dir, _) = start_with_own_cert("watch = true").await;
    // A renewal that lands the certificate well before its key: the first reload is refused
    // and the old pair keeps serving; the key's arrival reloads again.
    std::fs::copy(
        pki().join("server-renewed.crt"),
        cert_dir.join("server.crt"),
    )
    .unwrap();
    wait_for_log(&proxy, "configuration reload refused", 1).await;
    assert_serves(proxy.port, "server.crt").await;
    std::fs::copy(
        pki().join("server-renewed.key"),
        cert_dir.join("server.key"),
    )
    .unwrap();
    wait_for_log(&proxy, "configuration reloaded", 1).await;
    assert_serves(proxy.port, "server-renewed.crt").await;
    assert_eq!(
        proxy.logs().matches("configuration reload refused").count(),
        1,
        "a refused reload is not retried until the files change again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_from_the_environment_with_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let admin = common::postgres::free_port();
    // The server certificate and key come as PEM text in variables; the metrics endpoint and
    // the log format are set by overrides the file does not have.
    let text = common::proxy::config_text(dir.path(), "", "");
    let cert = std::fs::read_to_string(pki().join("server.crt")).unwrap();
    let key = std::fs::read_to_string(pki().join("server.key")).unwrap();
    let metrics_addr = format!("127.0.0.1:{admin}");
    let proxy = ProxyProcess::start_with_env(
        &text,
        dir,
        &[
            ("PGVALET_TLS__CERT", "env:SERVER_CERT_PEM"),
            ("PGVALET_TLS__KEY", "env:SERVER_KEY_PEM"),
            ("SERVER_CERT_PEM", &cert),
            ("SERVER_KEY_PEM", &key),
            ("PGVALET_METRICS__ADDR", &metrics_addr),
            ("PGVALET_LOG_FORMAT", "json"),
        ],
    )
    .expect("pgvalet starts");
    assert_psql_logs_in_as_orders_svc(proxy.port).await;
    assert_eq!(get(admin, "/healthz").await.0, 200);
    let logs = proxy.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    assert!(
        logs.contains("PGVALET_METRICS__ADDR") && !logs.contains("BEGIN PRIVATE KEY"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_pools_and_refuses_unreadable_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::proxy::config_text(dir.path(), "", "");
    let parse = |text: &str| pgvalet::Config::parse(text, Path::new("test.toml")).unwrap();
    let proxy = common::Proxy::start_config(parse(&text), dir).await;
    let pid = || async {
        let out = psql(
            proxy.port(),
            "orders",
            "orders",
            "orders",
            "select pg_backend_pid()",
        )
        .await;
        assert!(out.ok, "{}", out.stderr);
        out.stdout
    };
    // A session that stays open across every reload below.
    let open = common::clients::pg_connect(proxy.port(), "orders", "orders", "orders")
        .await
        .unwrap();
    let first = pid().await;

    // The same configuration again: the pool, with its idle connection, carries over.
    proxy.reloader.reload(parse(&text)).await.unwrap();
    assert_eq!(
        pid().await,
        first,
        "an unchanged pool keeps its connections"
    );

    // The route's pool settings change: new sessions get a new pool.
    let resized = text.replace(
        "name = \"orders\"\nidentity",
        "max_size = 7\nname = \"orders\"\nidentity",
    );
    assert_ne!(resized, text);
    proxy.reloader.reload(parse(&resized)).await.unwrap();
    let second = pid().await;
    assert_ne!(second, first, "a resized pool starts afresh");

    // Credentials that cannot be read are refused; the running configuration stays.
    let unreadable = resized.replace("orders.json", "missing.json");
    let err = proxy.reloader.reload(parse(&unreadable)).await.unwrap_err();
    assert!(err.to_string().contains("credentials.orders"), "{err}");
    assert_eq!(pid().await, second);
    assert_eq!(
        open.query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    proxy.stop().await;
}
