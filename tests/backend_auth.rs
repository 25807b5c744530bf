//! Passwordless backend logins. IAM: pgvalet makes RDS IAM auth tokens with its own AWS
//! credentials and sends them to a backend that checks them (a second pgvalet with an
//! `auth = "iam"` route, standing in for RDS). Client certificates: pgvalet presents one to a
//! Postgres whose pg_hba.conf accepts nothing but `cert` logins; a renewed certificate is picked
//! up on SIGHUP.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::{Authority, Issued, Leaf, write};
use common::postgres::{Cluster, Setup, free_port};
use common::process::ProxyProcess;
use common::{pg_connect, pki, psql, sqlstate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The name the IAM tokens are signed for, as an RDS instance's endpoint.
const RDS_ENDPOINT: &str = "orders.cluster-test.us-east-1.rds.amazonaws.com:5432";

async fn scrape(port: u16) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).await.unwrap();
    reply
}

/// The value of the series `name{labels}` in a scrape.
fn series(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `pgvalet check` on the configuration file `config`, with `env`: what it printed.
fn check(config: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pgvalet"))
        .args(["check", "--config"])
        .arg(config)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The token ages pgvalet B logged for the IAM tokens it accepted, in order.
fn accepted_token_ages(logs: &str) -> Vec<u64> {
    logs.lines()
        .filter(|l| l.contains("IAM token accepted"))
        .filter_map(|l| {
            let rest = l.split("token_age_s=").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_tokens_carry_a_session_through_two_pgvalets_and_are_renewed() {
    // B: the RDS stand-in. It checks tokens signed with moto's test keys and logs in to
    // Postgres with the route's password.
    let b_dir = tempfile::tempdir().unwrap();
    let b_tables = format!(
        r#"
[iam]
endpoint = "{RDS_ENDPOINT}"
region = "us-east-1"
clock_skew = "0s"
keys = [{{ access_key_id = "testing", secret_access_key = "env:IAM_TEST_SECRET" }}]

[[routes]]
name = "rds"
auth = "iam"
users = ["orders_iam"]
databases = ["orders"]
backend = "main"
credentials = "orders"
"#
    );
    let b_text = common::proxy::config_text(b_dir.path(), "", &b_tables);
    let b = ProxyProcess::start_with_env(
        &b_text,
        b_dir,
        &[
            ("IAM_TEST_SECRET", "testing"),
            ("PGVALET_LOG", "info,pgvalet=debug"),
        ],
    )
    .expect("pgvalet B starts");

    // A: what an application reaches, with AWS keys in its environment and no password at
    // all for the backend. Tokens live 2 s here, so the second login below needs a new one.
    let a_tables = |tls: &str| {
        format!(
            r#"
[backends.rds]
host = "127.0.0.1"
port = {port}
{tls}
server_name = "localhost"

[credentials.rds_iam]
source = "iam"
username = "orders_iam"
endpoint = "{RDS_ENDPOINT}"
region = "us-east-1"
token_lifetime = "2s"
refresh_interval = "1h"

[[routes]]
name = "via_iam"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["via_iam"]
databases = ["orders"]
backend = "rds"
credentials = "rds_iam"
max_lifetime = "1s"
"#,
            port = b.port,
        )
    };
    let ca = pki().join("ca.crt").display().to_string();
    let verify = format!("tls = \"verify-full\"\nca = \"{ca}\"");

    // A token never goes out over plaintext: such a configuration does not start.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = common::proxy::config_text(plain_dir.path(), "", &a_tables("tls = \"disable\""));
    let refused = ProxyProcess::start(&plain, plain_dir)
        .err()
        .expect("an IAM source towards a backend without TLS is refused");
    assert!(
        refused.contains("routes[6].credentials")
            && refused.contains("\"rds_iam\" makes IAM auth tokens, which pgvalet sends only over TLS, but backends.rds.tls is \"disable\""),
        "{refused}"
    );

    let a_dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let a_text = common::proxy::config_text(a_dir.path(), "", &a_tables(&verify)).replace(
        "\n[tls]",
        &format!("\n[metrics]\naddr = \"127.0.0.1:{admin}\"\n\n[tls]"),
    );
    let a_config = a_dir.path().join("a.toml");
    std::fs::write(&a_config, &a_text).unwrap();
    let a = ProxyProcess::start(&a_text, a_dir).expect("pgvalet A starts");

    // A client with its certificate, through A, then B, to Postgres: B logged in as the
    // route's user, so the query runs as orders_svc.
    let first = psql(
        a.port,
        "orders",
        "via_iam",
        "orders",
        "select current_user || ' ' || current_database()",
    )
    .await;
    assert!(
        first.ok,
        "{}\nA:\n{}\nB:\n{}",
        first.stderr,
        a.logs(),
        b.logs()
    );
    assert_eq!(first.stdout, "orders_svc orders");

    // Past the token's lifetime (and past the pooled connection's), the next login must use a
    // token made after the first: B would see an age of at least 3 s otherwise.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let second = psql(a.port, "orders", "via_iam", "orders", "select 1 + 1").await;
    assert!(second.ok, "{}\nB:\n{}", second.stderr, b.logs());
    assert_eq!(second.stdout, "2");
    let ages = accepted_token_ages(&b.logs());
    assert_eq!(ages.len(), 2, "two backend logins reached B:\n{}", b.logs());
    assert!(
        ages.iter().all(|age| *age <= 2),
        "a token older than its 2 s lifetime was sent: ages {ages:?}"
    );
    assert!(
        !b.logs().contains("connection refused"),
        "B refused a token:\n{}",
        b.logs()
    );
    // A counts the tokens it made as reads of that credentials entry: one at start, one for
    // the second login (the background renewal is an hour away).
    let metrics = scrape(admin).await;
    let made = series(
        &metrics,
        "pgvalet_secret_fetches_total{credentials=\"rds_iam\",outcome=\"ok\"}",
    )
    .unwrap_or_default();
    assert!(made >= 2.0, "tokens made: {made}\n{metrics}");
    assert!(
        !metrics.contains("pgvalet_secret_rotations_total{credentials=\"rds_iam\""),
        "a renewed token is not a rotation:\n{metrics}"
    );

    // `pgvalet check` makes a token with the same AWS credentials and logs in through B.
    let report = check(
        &a_config,
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert!(
        report.contains(&format!(
            "✓ credentials.rds_iam: an IAM auth token can be made for user orders_iam at {RDS_ENDPOINT} in us-east-1, signed with access key testing"
        )),
        "{report}"
    );
    assert!(
        report.contains("✓ route via_iam: backends.rds")
            && report.contains("logged in as orders_svc"),
        "{report}"
    );
}

/// Writes a certificate and its key as `NAME.crt` and `NAME.key`.
fn put(dir: &Path, name: &str, issued: &Issued) {
    write(
        dir,
        &format!("{name}.crt"),
        issued.cert_pem.as_bytes(),
        false,
    )
    .unwrap();
    write(dir, &format!("{name}.key"), issued.key_pem.as_bytes(), true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_the_whole_backend_login() {
    // A CA for database clients, as step-ca would be, and a certificate for the database user
    // cert_svc; its renewal; and one from a CA the database does not trust.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut ca = Authority::new("database clients CA").unwrap();
    write(d, "db-clients-ca.crt", ca.cert_pem.as_bytes(), false).unwrap();
    let current = ca.issue(&Leaf::client("cert_svc", &[])).unwrap();
    let renewed = ca.issue(&Leaf::client("cert_svc", &[])).unwrap();
    let rogue = Authority::new("rogue CA")
        .unwrap()
        .issue(&Leaf::client("cert_svc", &[]))
        .unwrap();
    put(d, "cert_svc", &current);
    put(d, "rogue", &rogue);
    put(
        d,
        "pw_svc",
        &ca.issue(&Leaf::client("pw_svc", &[])).unwrap(),
    );

    // A Postgres that takes nothing but client certificates, and a role with no password; one
    // other role must also give a password.
    let hba = "local all all trust\n\
               hostssl all pw_svc 127.0.0.1/32 scram-sha-256\n\
               hostssl all all 127.0.0.1/32 cert clientcert=verify-full\n\
               host all all 0.0.0.0/0 reject\n";
    let pg = Cluster::start_with(
        pki(),
        Setup {
            hba: Some(hba),
            client_ca: Some(&d.join("db-clients-ca.crt")),
            ..Setup::default()
        },
    );
    pg.admin_sql(
        "postgres",
        "CREATE ROLE cert_svc LOGIN; GRANT CONNECT ON DATABASE orders TO cert_svc; \
         CREATE ROLE pw_svc LOGIN PASSWORD 'unknown-to-pgvalet'",
    );

    let p = |name: &str| pki().join(name).display().to_string();
    let f = |name: &str| d.join(name).display().to_string();
    let admin = free_port();
    let text = format!(
        r#"
listen_addr = "127.0.0.1:0"
allow_cidrs = ["127.0.0.0/8"]

[metrics]
addr = "127.0.0.1:{admin}"

[tls]
cert = "{server_crt}"
key = "{server_key}"
client_ca = "{ca}"

[backends.certdb]
host = "127.0.0.1"
port = {port}
ca = "{ca}"
server_name = "localhost"
client_cert = "{cert}"
client_key = "{key}"

[[routes]]
name = "certs"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["cert_app"]
databases = ["orders"]
backend = "certdb"

[[routes]]
name = "rogue"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["rogue_app"]
databases = ["orders"]
backend = "certdb"
client_cert = "{rogue_cert}"
client_key = "{rogue_key}"

[[routes]]
name = "needs_password"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["pw_app"]
databases = ["orders"]
backend = "certdb"
client_cert = "{pw_cert}"
client_key = "{pw_key}"
"#,
        server_crt = p("server.crt"),
        server_key = p("server.key"),
        ca = p("ca.crt"),
        port = pg.port,
        cert = f("cert_svc.crt"),
        key = f("cert_svc.key"),
        rogue_cert = f("rogue.crt"),
        rogue_key = f("rogue.key"),
        pw_cert = f("pw_svc.crt"),
        pw_key = f("pw_svc.key"),
    );
    let config = d.join("check.toml");
    std::fs::write(&config, &text).unwrap();

    // `pgvalet check` lists the client certificates with their expiry and logs in with one.
    let report = check(&config, &[]);
    for wanted in [
        format!(
            "✓ backends.certdb.client_cert {} (CN cert_svc): valid for 729 more days",
            f("cert_svc.crt")
        ),
        format!(
            "✓ routes[1].client_cert {} (CN cert_svc): valid for 729 more days",
            f("rogue.crt")
        ),
        "logged in as cert_svc".to_owned(),
        "✗ route rogue: backends.certdb".to_owned(),
    ] {
        assert!(report.contains(&wanted), "{wanted}:\n{report}");
    }

    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy_config = proxy_dir.path().join("pgvalet.toml");
    let proxy = ProxyProcess::start(&text, proxy_dir).expect("pgvalet starts");
    let whoami = "SELECT current_user::text, client_serial::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let open = pg_connect(proxy.port, "orders", "cert_app", "orders")
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", proxy.logs()));
    let row = open.query_one(whoami, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "cert_svc");
    assert_eq!(row.get::<_, String>(1), current.serial.to_string());

    // A certificate the backend does not trust: the client hears which backend and why.
    let e = pg_connect(proxy.port, "orders", "rogue_app", "orders")
        .await
        .expect_err("the rogue certificate is refused");
    let message = e
        .as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_default();
    assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{e:?}");
    assert!(
        message.contains("backend \"certdb\" refused pgvalet's client certificate (routes[1].client_cert, CN cert_svc)"),
        "{message}"
    );

    // A backend that wants a password as well, from a route that has none to give.
    let e = pg_connect(proxy.port, "orders", "pw_app", "orders")
        .await
        .expect_err("no password to give");
    assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{e:?}");
    let message = e.as_db_error().map(|db| db.message()).unwrap_or_default();
    assert!(
        message.contains("pgvalet has nothing to log in to backend \"certdb\" with: it asked for a password for user \"pw_svc\", and the route has no credentials"),
        "{message}"
    );

    // The client certificate's expiry is a metric, per certificate.
    let metrics = scrape(admin).await;
    let left = series(
        &metrics,
        "pgvalet_certificate_expiry_seconds{certificate=\"backends.certdb.client_cert\"}",
    )
    .expect("an expiry series for the backend's client certificate");
    assert!(
        (729.0 * 86_400.0..=730.0 * 86_400.0).contains(&left),
        "{left}"
    );

    // step-ca renews the certificate in place; SIGHUP. The session already open goes on over
    // its connection; the next backend login presents the renewed certificate.
    put(d, "cert_svc", &renewed);
    let reloaded = |proxy: &ProxyProcess| proxy.logs().matches("configuration reloaded").count();
    let before = reloaded(&proxy);
    proxy.signal("HUP");
    wait_until(Duration::from_secs(5), || reloaded(&proxy) > before).await;
    let next = pg_connect(proxy.port, "orders", "cert_app", "orders")
        .await
        .unwrap();
    let row = next.query_one(whoami, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "cert_svc");
    assert_eq!(row.get::<_, String>(1), renewed.serial.to_string());
    let row = open.query_one(whoami, &[]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(1),
        current.serial.to_string(),
        "the open session kept its connection"
    );

    // With watch = true a renewal needs no signal: pgvalet sees the files change.
    let text = std::fs::read_to_string(&proxy_config).unwrap();
    std::fs::write(
        &proxy_config,
        text.replace("allow_cidrs", "watch = true\nallow_cidrs"),
    )
    .unwrap();
    let before = reloaded(&proxy);
    proxy.signal("HUP");
    wait_until(Duration::from_secs(5), || reloaded(&proxy) > before).await;
    // The watcher looks every 5 s; its first look after the reload is what a change is
    // measured against.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let third = ca.issue(&Leaf::client("cert_svc", &[])).unwrap();
    put(d, "cert_svc", &third);
    let before = reloaded(&proxy);
    wait_until(Duration::from_secs(15), || reloaded(&proxy) > before).await;
    assert!(proxy.logs().contains("watched files changed; reloading"));
    let last = pg_connect(proxy.port, "orders", "cert_app", "orders")
        .await
        .unwrap();
    let row = last.query_one(whoami, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(1), third.serial.to_string());
    for session in [&open, &next] {
        assert_eq!(
            session
                .query_one("select 1", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            1
        );
    }
}

/// Waits up to `limit` for `done`, failing the test if it never is.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
