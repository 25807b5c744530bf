//! RDS IAM database authentication from clients (`auth = "iam"`): tokens made by boto3's
//! `generate_db_auth_token`, as applications written for RDS Proxy make them, accepted by
//! psql and psycopg; each kind of bad token refused with its own error and metric.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::clients::{Raw, error_code, error_message, psql_conninfo, startup_packet};
use common::process::ProxyProcess;
use common::{cluster, pki};

/// The endpoint name applications sign for, as they would for an RDS Proxy endpoint.
const ENDPOINT: (&str, u16) = ("orders.proxy-test.us-east-1.rds.amazonaws.com", 5432);

const IAM: &str = r#"
[[routes]]
name = "iam_orders"
auth = "iam"
users = ["orders_iam"]
databases = ["orders"]
backend = "main"
credentials = "orders"

[iam]
endpoint = "orders.proxy-test.us-east-1.rds.amazonaws.com:5432"
region = "us-east-1"
keys = [{ access_key_id = "testing", secret_access_key = "env:IAM_TEST_SECRET" }]
"#;

fn python(script: &str, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/drivers").join(script))
        .args(args)
        .output()
        .expect("the test venv is missing: run `make venv`");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{script}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A token from boto3 for `host:port` and `user`, signed with `key`/`secret`.
fn boto3_token(host: &str, port: u16, user: &str, key: &str, secret: &str) -> String {
    let port = port.to_string();
    python(
        "iam_token.py",
        &[host, &port, user, key, secret, "us-east-1"],
    )
}

/// psql with `password`, verify-full TLS and no client certificate.
async fn psql_with(port: u16, user: &str, password: &str, sslmode: &str) -> common::clients::Psql {
    let conn = format!(
        "host=127.0.0.1 port={port} dbname=orders user={user} password='{password}' sslmode={sslmode} sslrootcert={} connect_timeout=10",
        pki().join("ca.crt").display()
    );
    psql_conninfo(&conn, "select current_user").await
}

async fn scrape(port: u16) -> String {
    common::admin::get(port, "/metrics").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_tokens_log_in_and_bad_ones_are_refused_each_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let admin = common::postgres::free_port();
    let text = common::proxy::config_text(dir.path(), "", IAM).replace(
        "\n[tls]",
        &format!("\n[metrics]\naddr = \"127.0.0.1:{admin}\"\n\n[tls]"),
    );
    let proxy = ProxyProcess::start_with_env(&text, dir, &[("IAM_TEST_SECRET", "testing")])
        .expect("pgvalet starts");
    let (host, port) = ENDPOINT;
    let good = boto3_token(host, port, "orders_iam", "testing", "testing");

    // psql and psycopg, as an app configured for RDS Proxy connects; the backend login is the
    // route's credentials.
    let ok = psql_with(proxy.port, "orders_iam", &good, "verify-full").await;
    assert!(ok.ok, "{}", ok.stderr);
    assert_eq!(ok.stdout, "orders_svc");
    let app = python(
        "iam_app.py",
        &[
            &proxy.port.to_string(),
            &pki().join("ca.crt").display().to_string(),
            host,
            &port.to_string(),
            "orders_iam",
            "orders",
        ],
    );
    assert!(app.ends_with("the backend user is orders_svc"), "{app}");

    // Refusals, each with what a person needs to act on.
    let expired = pgvalet::iam::make_token(
        &aws_credential_types::Credentials::new("testing", "testing", None, None, "test"),
        "us-east-1",
        host,
        port,
        "orders_iam",
        SystemTime::now() - Duration::from_secs(25 * 60),
    )
    .unwrap();
    let mut flipped = good.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    let cases = [
        (expired, "orders_iam", "has expired"),
        (
            boto3_token(
                "db.elsewhere.example",
                port,
                "orders_iam",
                "testing",
                "testing",
            ),
            "orders_iam",
            "was generated for db.elsewhere.example:5432, not for this endpoint",
        ),
        (
            boto3_token(host, port, "someone_else", "testing", "testing"),
            "orders_iam",
            "was generated for the user \"someone_else\"",
        ),
        (flipped, "orders_iam", "signature is wrong"),
        (
            boto3_token(host, port, "orders_iam", "AKIDUNKNOWN", "testing"),
            "orders_iam",
            "access key AKIDUNKNOWN, which this pgvalet does not know",
        ),
        ("hunter2".to_owned(), "orders_iam", "is malformed"),
    ];
    for (token, user, says) in &cases {
        let refused = psql_with(proxy.port, user, token, "verify-full").await;
        assert!(!refused.ok, "{says}: {}", refused.stdout);
        assert!(refused.stderr.contains(says), "{says}: {}", refused.stderr);
    }
    // The good token over a connection without TLS never leaves the client's side of the
    // handshake: pgvalet refuses the plaintext startup first.
    let plain = psql_with(proxy.port, "orders_iam", &good, "disable").await;
    assert!(plain.stderr.contains("requires TLS"), "{}", plain.stderr);

    // A 100 KB password: refused by its declared length, before the rest is read (so only its
    // first kilobyte is sent; the rest would meet a closed connection).
    let mut tls = Raw::connect(proxy.port)
        .await
        .start_tls(None)
        .await
        .unwrap();
    tls.send(&startup_packet(
        196_608,
        &[("user", "orders_iam"), ("database", "orders")],
    ))
    .await;
    let ask = tls.read_msg().await.expect("an authentication request");
    assert_eq!((ask.tag, &ask.body[..]), (b'R', &[0, 0, 0, 3][..]));
    let mut huge = vec![b'p'];
    huge.extend_from_slice(&(4 + 100_000u32 + 1).to_be_bytes());
    huge.extend(std::iter::repeat_n(b'x', 1000));
    tls.send(&huge).await;
    let msgs = tls.read_until_ready_or_error().await;
    assert_eq!(error_code(&msgs).as_deref(), Some("08P01"), "{msgs:?}");
    assert!(error_message(&msgs).unwrap().contains("longer than an IAM"));

    // Every refusal counted under its own outcome.
    let metrics = scrape(admin).await;
    for outcome in [
        "iam_expired",
        "iam_wrong_host",
        "iam_wrong_user",
        "iam_bad_signature",
        "iam_unknown_key",
        "iam_malformed",
        "iam_too_long",
        "tls_required",
    ] {
        let series =
            format!("pgvalet_handshakes_total{{outcome=\"{outcome}\",endpoint=\"default\"}}");
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    // And the route goes on serving.
    let again = psql_with(proxy.port, "orders_iam", &good, "verify-full").await;
    assert!(again.ok, "{}", again.stderr);
    let _ = cluster();
}

/// Each endpoint checks tokens for its own name: `iam_endpoint`, or `[iam]`'s host with the
/// endpoint's port; a token made for another endpoint is refused with both names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_for_the_endpoint_they_reach() {
    let dir = tempfile::tempdir().unwrap();
    let (ro, second) = (common::postgres::free_port(), common::postgres::free_port());
    let ro_name = "orders-ro.endpoint.proxy-test.us-east-1.rds.amazonaws.com";
    let endpoints = format!(
        "\n[[endpoints]]\nname = \"ro\"\nlisten_addr = \"127.0.0.1:{ro}\"\nrole = \"read-only\"\niam_endpoint = \"{ro_name}:5432\"\n\n[[endpoints]]\nname = \"second\"\nlisten_addr = \"127.0.0.1:{second}\"\n"
    );
    let text = common::proxy::config_text(dir.path(), "", &format!("{IAM}{endpoints}"));
    let proxy = ProxyProcess::start_with_env(&text, dir, &[("IAM_TEST_SECRET", "testing")])
        .expect("pgvalet starts");
    let (host, port) = ENDPOINT;
    let token = |h: &str, p: u16| boto3_token(h, p, "orders_iam", "testing", "testing");
    let conn = |to: u16, password: &str| {
        format!(
            "host=127.0.0.1 port={to} dbname=orders user=orders_iam password='{password}' sslmode=verify-full sslrootcert={} connect_timeout=10",
            pki().join("ca.crt").display()
        )
    };
    // The read-only endpoint under its own name (no readers here: the writer, read-only).
    let ok = psql_conninfo(
        &conn(ro, &token(ro_name, 5432)),
        "show default_transaction_read_only",
    )
    .await;
    assert!(ok.ok, "{}", ok.stderr);
    assert_eq!(ok.stdout, "on");
    let refused = psql_conninfo(&conn(ro, &token(host, port)), "select 1").await;
    assert!(
        refused.stderr.contains(&format!(
            "was generated for {host}:{port}, not for this endpoint ({ro_name}:5432)"
        )),
        "{}",
        refused.stderr
    );
    // An endpoint without iam_endpoint: [iam]'s host, its own port.
    let ok = psql_conninfo(&conn(second, &token(host, second)), "select current_user").await;
    assert!(ok.ok, "{}", ok.stderr);
    let refused = psql_conninfo(&conn(second, &token(host, port)), "select 1").await;
    assert!(!refused.ok && refused.stderr.contains("not for this endpoint"));
    // And the default endpoint still takes its own name only.
    let refused = psql_conninfo(&conn(proxy.port, &token(host, second)), "select 1").await;
    assert!(!refused.ok && refused.stderr.contains("not for this endpoint"));
}
