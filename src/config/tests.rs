//! Config parsing and validation: every refusal names its key.

use super::*;

const GOOD: &str = r#"
        listen_addr = "127.0.0.1:6432"
        allow_cidrs = ["127.0.0.0/8"]
        [tls]
        cert = "s.crt"
        key = "s.key"
        client_ca = "ca.crt"
        [backends.main]
        host = "127.0.0.1"
        ca = "ca.crt"
        [credentials.orders]
        source = "file"
        path = "orders.json"
        [[routes]]
        name = "orders"
        identity = "uri:spiffe://x/orders"
        databases = ["orders"]
        backend = "main"
        credentials = "orders"
"#;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
}

#[test]
fn good_config_gets_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.handshake_timeout, Duration::from_secs(10));
    assert_eq!(c.backends["main"].port, 5432);
    assert_eq!(c.backends["main"].tls, BackendTls::VerifyFull);
    assert_eq!(c.backends["main"].server_name(), "127.0.0.1");
    assert_eq!(c.routes[0].users(), vec!["orders"]);
    assert_eq!(c.routes[0].pool_size(), PoolSize::Percent(100));
}

#[test]
fn pool_size_is_fixed_or_a_share_of_the_backend() {
    let route = |extra: &str| parse(&format!("{GOOD}{extra}\n"));
    let c = route("max_size = 7").unwrap();
    assert_eq!(c.routes[0].pool_size(), PoolSize::Fixed(7));
    let c = route("max_connections_percent = 40").unwrap();
    assert_eq!(c.routes[0].pool_size(), PoolSize::Percent(40));
    for (extra, key) in [
        (
            "max_size = 7\nmax_connections_percent = 40",
            "max_connections_percent",
        ),
        ("max_connections_percent = 0", "max_connections_percent"),
        ("max_connections_percent = 101", "max_connections_percent"),
        ("max_size = 2\nmin_idle = 3", "min_idle"),
    ] {
        let err = route(extra).unwrap_err();
        assert!(err.contains(&format!("routes[0].{key}")), "{extra}: {err}");
    }
}

#[test]
fn unknown_key_is_named() {
    let err = parse(
        &GOOD
            .replace("max_clients", "x")
            .replace("[tls]", "colour = 1\n[tls]"),
    )
    .unwrap_err();
    assert!(err.contains("colour"), "{err}");
    assert!(err.contains("test.toml"), "{err}");
}

#[test]
fn unknown_key_in_credentials_is_named() {
    let err = parse(&GOOD.replace("path = \"orders.json\"", "path = \"o\"\npth = 1")).unwrap_err();
    assert!(err.contains("pth"), "{err}");
}

#[test]
fn references_are_checked() {
    let err = parse(&GOOD.replace("backend = \"main\"", "backend = \"nope\"")).unwrap_err();
    assert!(
        err.contains("routes[0].backend") && err.contains("nope"),
        "{err}"
    );
    let err = parse(&GOOD.replace("credentials = \"orders\"", "credentials = \"x\"")).unwrap_err();
    assert!(err.contains("routes[0].credentials"), "{err}");
}

#[test]
fn verify_needs_a_ca() {
    let backend_ca = "host = \"127.0.0.1\"\n        ca = \"ca.crt\"\n";
    assert!(GOOD.contains(backend_ca));
    let err = parse(&GOOD.replace(backend_ca, "host = \"h\"\n")).unwrap_err();
    assert!(err.contains("backends.main.ca"), "{err}");
    assert!(parse(&GOOD.replace(backend_ca, "host = \"h\"\ntls = \"require\"\n")).is_ok());
}

#[test]
fn credentials_keys_follow_the_source() {
    let aws = GOOD.replace(
        "source = \"file\"\n        path = \"orders.json\"",
        "source = \"aws\"\n        secret_id = \"db/orders\"\n        region = \"eu-west-1\"",
    );
    let c = parse(&aws).unwrap();
    assert_eq!(
        c.credentials["orders"].secret_id.as_deref(),
        Some("db/orders")
    );
    assert_eq!(
        c.credentials["orders"].refresh_interval,
        Duration::from_secs(300)
    );
    let err = parse(&GOOD.replace("source = \"file\"", "source = \"aws\"")).unwrap_err();
    assert!(
        err.contains("credentials.orders.secret_id is required with source = \"aws\""),
        "{err}"
    );
    let err = parse(&aws.replace("region", "path")).unwrap_err();
    assert!(
        err.contains("credentials.orders.path does not apply to source = \"aws\""),
        "{err}"
    );
    let err = parse(&GOOD.replace("source = \"file\"", "source = \"env\"")).unwrap_err();
    assert!(
        err.contains("credentials.orders.username_env is required"),
        "{err}"
    );
    let err = parse(&GOOD.replace("source = \"file\"", "source = \"vault\"")).unwrap_err();
    assert!(err.contains("vault"), "{err}");
}

#[test]
fn bad_identity_kind_is_refused() {
    let err = parse(&GOOD.replace("uri:spiffe", "email:spiffe")).unwrap_err();
    assert!(err.contains("identity") || err.contains("uri:"), "{err}");
}

#[test]
fn bad_duration_is_refused() {
    let err = parse(&GOOD.replace("[tls]", "handshake_timeout = \"10\"\n[tls]")).unwrap_err();
    assert!(
        err.contains("handshake_timeout") && err.contains("no unit"),
        "{err}"
    );
}

#[test]
fn duplicate_claim_is_refused() {
    let second = "[[routes]]\nname = \"orders2\"\nidentity = \"uri:spiffe://x/orders\"\nusers = [\"orders\"]\ndatabases = [\"*\"]\nbackend = \"main\"\ncredentials = \"orders\"\n";
    let err = parse(&format!("{GOOD}\n{second}")).unwrap_err();
    assert!(
        err.contains("routes[1].users") && err.contains("already claimed"),
        "{err}"
    );
}

#[test]
fn auth_modes_and_identity() {
    let password = GOOD.replace(
        "identity = \"uri:spiffe://x/orders\"",
        "auth = \"password\"",
    );
    let c = parse(&password).unwrap();
    assert!(c.has_password_only_routes());
    assert!(!parse(GOOD).unwrap().has_password_only_routes());
    let err = parse(&GOOD.replace("identity = \"uri:spiffe://x/orders\"\n", "")).unwrap_err();
    assert!(
        err.contains("routes[0].identity is required with auth = \"cert\""),
        "{err}"
    );
    let err = parse(&GOOD.replace("identity =", "auth = \"password\"\nidentity =")).unwrap_err();
    assert!(err.contains("routes[0].identity does not apply"), "{err}");
    assert!(parse(&GOOD.replace("identity =", "auth = \"cert+password\"\nidentity =")).is_ok());
    let err = parse(&GOOD.replace("identity =", "auth = \"passwd\"\nidentity =")).unwrap_err();
    assert!(err.contains("passwd"), "{err}");
    // A password route's user name is taken for every client.
    let second = "[[routes]]\nname = \"pw\"\nauth = \"password\"\nusers = [\"orders\"]\ndatabases = [\"*\"]\nbackend = \"main\"\ncredentials = \"orders\"\n";
    let err = parse(&format!("{GOOD}\n{second}")).unwrap_err();
    assert!(
        err.contains("routes[1].users") && err.contains("any client as user \"orders\""),
        "{err}"
    );
}

#[test]
fn proxy_protocol_needs_trusted_senders() {
    let on = GOOD.replace("[tls]", "proxy_protocol = \"optional\"\n[tls]");
    let err = parse(&on).unwrap_err();
    assert!(err.contains("proxy_protocol_trusted is empty"), "{err}");
    assert!(
        parse(&on.replace("[tls]", "proxy_protocol_trusted = [\"10.0.0.0/16\"]\n[tls]")).is_ok()
    );
    assert!(parse(&GOOD.replace("[tls]", "proxy_protocol = \"sometimes\"\n[tls]")).is_err());
}

#[test]
fn shipped_configs_are_valid() {
    for (name, text) in [
        (
            "config/example.toml",
            include_str!("../../config/example.toml"),
        ),
        ("config/dev.toml", include_str!("../../config/dev.toml")),
        (
            "config/dev-aws.toml",
            include_str!("../../config/dev-aws.toml"),
        ),
        (
            "config/dev-rds.toml",
            include_str!("../../config/dev-rds.toml"),
        ),
    ] {
        if let Err(e) = Config::parse(text, Path::new(name)) {
            panic!("{e}");
        }
    }
}

#[test]
fn empty_allow_cidrs_is_refused() {
    let err = parse(&GOOD.replace("[\"127.0.0.0/8\"]", "[]")).unwrap_err();
    assert!(err.contains("allow_cidrs"), "{err}");
}

#[test]
fn every_top_level_key_can_be_overridden() {
    // The example sets every top-level key; the override list must know each of them, and no
    // other, or a PGVALET_… variable would be taken for a secret (or a secret for a key).
    let example: toml::Table = toml::from_str(include_str!("../../config/example.toml")).unwrap();
    let mut in_example: Vec<&str> = example.keys().map(String::as_str).collect();
    let mut known = env::TOP_LEVEL.to_vec();
    in_example.sort_unstable();
    known.sort_unstable();
    assert_eq!(in_example, known);
}

#[test]
fn environment_overrides_and_whole_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgvalet.toml");
    std::fs::write(&path, GOOD).unwrap();
    let vars = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let (c, applied) = Config::load_with_env(
        &path,
        &vars(&[
            ("PGVALET_LISTEN_ADDR", "0.0.0.0:7000"),
            ("PGVALET_ROUTES__0__MAX_SIZE", "42"),
            ("PGVALET_METRICS__ADDR", "127.0.0.1:9931"),
            ("PGVALET_ORDERS_PASSWORD", "not a key"),
        ]),
    )
    .unwrap();
    assert_eq!(c.listen_addr.to_string(), "0.0.0.0:7000");
    assert_eq!(c.routes[0].max_size, Some(42));
    assert_eq!(c.metrics.unwrap().addr.to_string(), "127.0.0.1:9931");
    assert_eq!(
        applied,
        [
            "PGVALET_LISTEN_ADDR",
            "PGVALET_METRICS__ADDR",
            "PGVALET_ROUTES__0__MAX_SIZE"
        ]
    );

    // A bad value names the variable; validation still runs after overrides.
    let err = Config::load_with_env(&path, &vars(&[("PGVALET_MAX_CLIENTS", "many")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("PGVALET_MAX_CLIENTS"), "{err}");
    let err = Config::load_with_env(&path, &vars(&[("PGVALET_ROUTES__0__MAX_SIZE", "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("routes[0].max_size"), "{err}");
    let err = Config::load_with_env(&path, &vars(&[("PGVALET_TLS__CRT", "x")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("crt") && err.contains("PGVALET_TLS__CRT"),
        "{err}"
    );

    // The whole configuration from a variable; the file is not read.
    let (c, _) = Config::load_with_env(
        &dir.path().join("missing.toml"),
        &vars(&[(env::WHOLE, &GOOD.replace("6432", "6999"))]),
    )
    .unwrap();
    assert_eq!(c.listen_addr.port(), 6999);
}

#[test]
fn rds_proxy_names_and_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.idle_client_timeout, Duration::from_secs(1800));
    assert_eq!(c.routes[0].borrow_timeout, Duration::from_secs(120));
    assert_eq!(c.routes[0].idle_percent(), 50, "a share-sized pool");
    let c = parse(&format!(
        "{GOOD}connection_borrow_timeout = 7\nmax_size = 4\n"
    ))
    .unwrap();
    assert_eq!(c.routes[0].borrow_timeout, Duration::from_secs(7));
    assert_eq!(
        c.routes[0].idle_percent(),
        100,
        "a fixed pool keeps its idle connections"
    );
    let both = parse(&format!(
        "{GOOD}connection_borrow_timeout = \"7s\"\nborrow_timeout = \"8s\"\n"
    ));
    assert!(both.is_err(), "one setting, one value");
    let err =
        parse(&GOOD.replacen("listen_addr", "require_tls = false\nlisten_addr", 1)).unwrap_err();
    assert!(err.contains("require_tls"), "{err}");
    let err = parse(&format!("{GOOD}max_idle_connections_percent = 101\n")).unwrap_err();
    assert!(
        err.contains("routes[0].max_idle_connections_percent"),
        "{err}"
    );
}

#[test]
fn endpoints_and_readers_are_checked() {
    let reader = "[backends.r1]\nhost = \"127.0.0.2\"\nca = \"ca.crt\"\n";
    let with = |main_extra: &str, tables: &str| {
        let text = GOOD.replacen(
            "host = \"127.0.0.1\"\n",
            &format!("host = \"127.0.0.1\"\n{main_extra}\n"),
            1,
        );
        parse(&format!("{text}{tables}"))
    };
    let c = with(
        "readers = [\"r1\"]",
        &format!(
            "{reader}[[endpoints]]\nname = \"ro\"\nlisten_addr = \"127.0.0.1:6433\"\nrole = \"read-only\"\nroutes = [\"orders\"]\n"
        ),
    )
    .unwrap();
    assert_eq!(c.endpoints[0].role, EndpointRole::ReadOnly);
    assert!(c.endpoints[0].serves("orders") && !c.endpoints[0].serves("billing"));
    assert_eq!(c.backends["r1"].check_interval, Duration::from_secs(5));
    assert_eq!(
        c.backends["r1"].dns_refresh_interval,
        Duration::from_secs(15)
    );
    let endpoint = |fields: &str| format!("[[endpoints]]\n{fields}\n");
    for (main_extra, tables, key) in [
        (
            "readers = [\"nope\"]",
            String::new(),
            "backends.main.readers",
        ),
        (
            "readers = [\"main\"]",
            String::new(),
            "backends.main.readers",
        ),
        (
            "readers = [\"r1\"]",
            format!("{reader}readers = [\"main\"]\n"),
            "backends.main.readers",
        ),
        (
            "",
            format!("{reader}check_interval = 0\n"),
            "backends.r1.check_interval",
        ),
        (
            "dns_refresh_interval = \"0s\"",
            String::new(),
            "backends.main.dns_refresh_interval",
        ),
        (
            "",
            endpoint("name = \"default\"\nlisten_addr = \"127.0.0.1:7000\""),
            "endpoints[0].name",
        ),
        (
            "",
            endpoint("name = \"ro\"\nlisten_addr = \"127.0.0.1:6432\""),
            "endpoints[0].listen_addr",
        ),
        (
            "",
            endpoint("name = \"ro\"\nlisten_addr = \"127.0.0.1:7000\"\nroutes = [\"nope\"]"),
            "endpoints[0].routes",
        ),
    ] {
        let err = with(main_extra, &tables).unwrap_err();
        assert!(err.contains(key), "{main_extra} {tables}: {err}");
    }
}

/// The backend's `ca` line in [`GOOD`] (the `[tls]` table has a `client_ca` too).
const BACKEND_CA: &str = "host = \"127.0.0.1\"\n        ca = \"ca.crt\"";

#[test]
fn iam_credentials_need_their_keys_and_tls() {
    let iam = r#"
        [credentials.orders]
        source = "iam"
        username = "orders_svc"
        endpoint = "db.example:5432"
"#;
    let with = |table: &str| {
        GOOD.replace(
            "[credentials.orders]\n        source = \"file\"\n        path = \"orders.json\"\n",
            table,
        )
    };
    let c = parse(&with(iam)).unwrap();
    assert_eq!(c.credentials["orders"].source, SourceKind::Iam);
    assert_eq!(
        c.credentials["orders"].token_lifetime(),
        Duration::from_secs(14 * 60)
    );
    for (change, key, says) in [
        (
            ("username = \"orders_svc\"\n", ""),
            "credentials.orders.username",
            "is required",
        ),
        (
            (
                "endpoint = \"db.example:5432\"",
                "endpoint = \"db.example\"",
            ),
            "credentials.orders.endpoint",
            "not host:port",
        ),
        (
            (
                "source = \"iam\"",
                "source = \"iam\"\ntoken_lifetime = \"16m\"",
            ),
            "credentials.orders.token_lifetime",
            "at most 15m",
        ),
        (
            (
                "source = \"iam\"",
                "source = \"iam\"\ntoken_lifetime = \"0s\"",
            ),
            "credentials.orders.token_lifetime",
            "longer than 0",
        ),
        (
            ("source = \"iam\"", "source = \"iam\"\nsecret_id = \"x\""),
            "credentials.orders.secret_id",
            "does not apply",
        ),
    ] {
        let err = parse(&with(&iam.replace(change.0, change.1))).unwrap_err();
        assert!(err.contains(key) && err.contains(says), "{change:?}: {err}");
    }
    let err = parse(&GOOD.replace(
        "path = \"orders.json\"",
        "path = \"o\"\ntoken_lifetime = \"1m\"",
    ))
    .unwrap_err();
    assert!(
        err.contains("credentials.orders.token_lifetime does not apply to source = \"file\""),
        "{err}"
    );

    // A token is a password: never over plaintext, and never what clients are checked against.
    let plain = with(iam).replace(BACKEND_CA, "host = \"127.0.0.1\"\ntls = \"disable\"");
    let err = parse(&plain).unwrap_err();
    assert!(
        err.contains("routes[0].credentials")
            && err.contains("only over TLS")
            && err.contains("backends.main.tls is \"disable\""),
        "{err}"
    );
    let password = with(iam).replace(
        "identity = \"uri:spiffe://x/orders\"",
        "auth = \"password\"",
    );
    let err = parse(&password).unwrap_err();
    assert!(
        err.contains("routes[0].credentials") && err.contains("IAM auth tokens"),
        "{err}"
    );
}

#[test]
fn client_certificates_and_routes_without_credentials() {
    let cert = &format!("{BACKEND_CA}\nclient_cert = \"c.crt\"\nclient_key = \"c.key\"");
    let without = |text: &str| text.replace("credentials = \"orders\"\n", "");
    // The backend's certificate is the login of a route without credentials.
    let c = parse(&without(&GOOD.replace(BACKEND_CA, cert))).unwrap();
    assert_eq!(c.routes[0].credentials, None);
    assert_eq!(
        c.backends["main"].client_cert.as_deref(),
        Some(Path::new("c.crt"))
    );
    // So is the route's own.
    let own = format!(
        "{}client_cert = \"r.crt\"\nclient_key = \"r.key\"\n",
        without(GOOD)
    );
    assert!(parse(&own).is_ok());
    for (text, key, says) in [
        (
            without(GOOD),
            "routes[0].credentials",
            "neither the route nor backends.main has a client_cert",
        ),
        (
            GOOD.replace(
                BACKEND_CA,
                &format!("{BACKEND_CA}\nclient_cert = \"c.crt\""),
            ),
            "backends.main.client_key",
            "is required with client_cert",
        ),
        (
            format!("{GOOD}client_key = \"r.key\"\n"),
            "routes[0].client_cert",
            "is required with client_key",
        ),
        (
            without(&GOOD.replace(
                BACKEND_CA,
                "host = \"127.0.0.1\"\ntls = \"disable\"\nclient_cert = \"c.crt\"\nclient_key = \"c.key\"",
            )),
            "backends.main.client_cert",
            "needs TLS",
        ),
        (
            without(&GOOD.replace(BACKEND_CA, cert)).replace(
                "identity = \"uri:spiffe://x/orders\"",
                "auth = \"password\"",
            ),
            "routes[0].credentials",
            "is required with auth = \"password\"",
        ),
        (
            format!(
                "{}use_secret_address = true\n",
                without(&GOOD.replace(BACKEND_CA, cert))
            ),
            "routes[0].use_secret_address",
            "needs credentials",
        ),
    ] {
        let err = parse(&text).unwrap_err();
        assert!(err.contains(key) && err.contains(says), "{key}: {err}");
    }
}
