//! RDS-Proxy-compatible password mode: apps that send the secret's user name and password
//! connect without a certificate; pgvalet checks the password with SCRAM (channel-bound when
//! the client can) and logs in to the backend itself.

mod common;

use common::*;

const ROUTES: &str = r#"
[[routes]]
name = "legacy"
auth = "password"
users = ["orders_svc"]
databases = ["orders"]
backend = "main"
credentials = "orders"

[[routes]]
name = "both"
auth = "cert+password"
identity = "uri:spiffe://pgvalet.dev/svc/billing"
users = ["billing_svc"]
databases = ["billing"]
backend = "main"
credentials = "billing"
"#;

fn conninfo(proxy: &Proxy, user: &str, db: &str, extra: &str) -> String {
    let ca = pki().join("ca.crt").display().to_string();
    format!(
        "host=127.0.0.1 port={} user={user} dbname={db} sslmode=verify-full sslrootcert={ca} connect_timeout=10 {extra}",
        proxy.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_the_secret_password_and_no_certificate() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let password = cluster().password("orders_svc");
    // channel_binding=require: libpq insists on SCRAM-SHA-256-PLUS bound to pgvalet's certificate.
    let out = psql_conninfo(
        &conninfo(
            &proxy,
            "orders_svc",
            "orders",
            &format!("password={password} channel_binding=require"),
        ),
        "select current_user",
    )
    .await;
    assert_eq!(out.stdout, "orders_svc", "{}", out.stderr);

    let out = psql_conninfo(
        &conninfo(&proxy, "orders_svc", "orders", "password=wrong-password"),
        "select 1",
    )
    .await;
    assert!(
        out.stderr
            .contains("The password that was provided for the role orders_svc is wrong."),
        "{}",
        out.stderr
    );

    // Certificate routes still want a certificate.
    let out = psql_conninfo(
        &conninfo(&proxy, "orders", "orders", "password=x"),
        "select 1",
    )
    .await;
    assert!(
        out.stderr
            .contains("This pgvalet proxy has no credentials for the role orders."),
        "{}",
        out.stderr
    );
    // And a certificate client of a cert route is not asked for a password.
    let out = psql(
        proxy.port(),
        "orders",
        "orders",
        "orders",
        "select current_user",
    )
    .await;
    assert_eq!(out.stdout, "orders_svc", "{}", out.stderr);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_password_mode_and_sqlstates() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let tls =
        tokio_postgres_rustls::MakeRustlsConnect::new((*client_tls("ca.crt", None, None)).clone());
    let connect = |password: String| {
        let tls = tls.clone();
        let port = proxy.port();
        async move {
            let mut config = tokio_postgres::Config::new();
            config
                .host("localhost")
                .hostaddr("127.0.0.1".parse().unwrap())
                .port(port)
                .user("orders_svc")
                .password(password)
                .dbname("orders")
                .ssl_mode(tokio_postgres::config::SslMode::Require)
                .channel_binding(tokio_postgres::config::ChannelBinding::Require);
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    let client = connect(cluster().password("orders_svc").to_owned())
        .await
        .unwrap();
    let row = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "orders_svc");
    let err = connect("nope".into()).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_and_password_needs_both() {
    let proxy = Proxy::start_with("", ROUTES).await;
    let password = cluster().password("billing_svc");
    let p = |f: &str| pki().join(f).display().to_string();
    let with_cert = format!("sslcert={} sslkey={}", p("billing.crt"), p("billing.key"));
    let out = psql_conninfo(
        &conninfo(
            &proxy,
            "billing_svc",
            "billing",
            &format!("{with_cert} password={password}"),
        ),
        "select current_user",
    )
    .await;
    assert_eq!(out.stdout, "billing_svc", "{}", out.stderr);
    let out = psql_conninfo(
        &conninfo(
            &proxy,
            "billing_svc",
            "billing",
            &format!("{with_cert} password=wrong"),
        ),
        "select 1",
    )
    .await;
    assert!(
        out.stderr
            .contains("The password that was provided for the role billing_svc is wrong."),
        "{}",
        out.stderr
    );
    let out = psql_conninfo(
        &conninfo(
            &proxy,
            "billing_svc",
            "billing",
            &format!("password={password}"),
        ),
        "select 1",
    )
    .await;
    assert!(
        out.stderr
            .contains("no credentials for the role billing_svc"),
        "without the certificate: {}",
        out.stderr
    );
    proxy.stop().await;
}
