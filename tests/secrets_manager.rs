//! Credentials from AWS Secrets Manager (a local moto server, through the real AWS SDK), and
//! sessions that keep working through every kind of rotation and outage.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::moto::{self, Moto};
use common::process::ProxyProcess;
use common::*;

/// A database role of this test's own, allowed into the `orders` database.
fn role(name: &str, password: &str) {
    cluster().admin_sql(
        "postgres",
        &format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'; GRANT CONNECT ON DATABASE orders TO {name};"),
    );
}

fn unique(prefix: &str) -> String {
    let n: u32 = std::process::id()
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos());
    format!("{prefix}_{n:08x}")
}

/// A `[credentials.NAME]` table reading `secret` from moto, and a route `NAME` for the orders
/// certificate using it.
fn aws_route(name: &str, secret: &str, moto: &Moto, extra: &str) -> String {
    format!(
        "\n[credentials.{name}]\nsource = \"aws\"\nsecret_id = \"{secret}\"\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n{extra}\n\n[[routes]]\nname = \"{name}\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\nusers = [\"{name}\"]\ndatabases = [\"orders\"]\nbackend = \"main\"\ncredentials = \"{name}\"\n",
        url = moto.url()
    )
}

fn alter_password(role: &str, password: &str) {
    cluster().admin_sql(
        "postgres",
        &format!("ALTER ROLE {role} PASSWORD '{password}'"),
    );
}

/// A role with `password`, a secret holding it, and pgvalet reading that secret every second
/// for route `route`, whose pooled connections live 300 ms, so that new backend logins keep
/// happening through the rotation (as they do on a busy proxy).
struct Rotating {
    moto: Moto,
    sm: aws_sdk_secretsmanager::Client,
    user: String,
    secret: String,
    first_version: String,
    proxy: ProxyProcess,
}

async fn rotating(route: &str, password: &str) -> Rotating {
    let moto = Moto::start();
    let sm = moto.client();
    let user = unique(route);
    let secret = format!("pgvalet/test/{user}");
    role(&user, password);
    let first_version =
        moto::create_secret(&sm, &secret, &moto::secret_json(&user, password)).await;
    let tables = aws_route(route, &secret, &moto, "refresh_interval = \"1s\"")
        + "max_lifetime = \"300ms\"\n";
    let proxy = start_proxy(&tables);
    Rotating {
        moto,
        sm,
        user,
        secret,
        first_version,
        proxy,
    }
}

fn start_proxy(tables: &str) -> ProxyProcess {
    let dir = tempfile::tempdir().unwrap();
    let text = common::proxy::config_text(dir.path(), "", tables);
    ProxyProcess::start(&text, dir).expect("pgvalet did not start")
}

/// Clients opening a new session for every query, plus one long session querying all along,
/// until stopped. Counts what worked and what did not, and which backend users served.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    users: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

use std::sync::Mutex;

impl Load {
    async fn start(port: u16, user: &'static str, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let users = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (stop, ok, failed, users) =
                (stop.clone(), ok.clone(), failed.clone(), users.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = async {
                        let client = pg_connect(port, "orders", user, "orders").await?;
                        client.query_one("select current_user::text", &[]).await
                    }
                    .await;
                    match result {
                        Ok(row) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            let who: String = row.get(0);
                            let mut users = users.lock().unwrap();
                            if users.last() != Some(&who) {
                                users.push(who);
                            }
                        }
                        Err(e) => failed.lock().unwrap().push(format!("new session: {e:?}")),
                    }
                }
            }));
        }
        // The long session: opened once, must never break.
        let long = pg_connect(port, "orders", user, "orders")
            .await
            .expect("long session");
        let (stop2, ok2, failed2) = (stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                match long.query_one("select 1", &[]).await {
                    Ok(_) => {
                        ok2.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failed2.lock().unwrap().push(format!("long session: {e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
        Load {
            stop,
            ok,
            failed,
            users,
            tasks,
        }
    }

    /// Stops the clients; returns (queries that worked, failures, backend users in order).
    async fn finish(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        let users = self.users.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failed, users)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_user_rotation_under_load_fails_no_query() {
    if !moto::available() {
        return;
    }
    let Rotating {
        moto: _moto,
        sm,
        user,
        secret,
        first_version,
        proxy,
    } = rotating("rot", "first-password").await;

    let load = Load::start(proxy.port, "rot", 3).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The rotation Lambda's steps: create (AWSPENDING), set (ALTER ROLE), finish (move AWSCURRENT).
    let v2 = moto::put_pending(&sm, &secret, &moto::secret_json(&user, "second-password")).await;
    alter_password(&user, "second-password");
    tokio::time::sleep(Duration::from_millis(1500)).await; // the window: AWSCURRENT is refused
    moto::move_current(&sm, &secret, &first_version, &v2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, failed, _) = load.finish().await;

    assert!(
        failed.is_empty(),
        "{} failed queries: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 30, "only {ok} queries ran");
    let logs = proxy.logs();
    assert!(
        logs.contains("the backend accepts a version other than the current one"),
        "the window was never hit:\n{logs}"
    );
    assert!(logs.contains("credentials changed"), "{logs}");
    assert!(
        !logs.contains("second-password") && !logs.contains("first-password"),
        "a password reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alternating_users_rotation_keeps_both_users_serving() {
    if !moto::available() {
        return;
    }
    let Rotating {
        moto: _moto,
        sm,
        user,
        secret,
        first_version,
        proxy,
    } = rotating("alt", "user-password").await;
    let clone = format!("{user}_clone");
    role(&clone, "clone-password-0");

    let load = Load::start(proxy.port, "alt", 3).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Rotation to the clone: new password for the clone, then it becomes AWSCURRENT.
    let v2 = moto::put_pending(&sm, &secret, &moto::secret_json(&clone, "clone-password-1")).await;
    alter_password(&clone, "clone-password-1");
    tokio::time::sleep(Duration::from_millis(700)).await;
    moto::move_current(&sm, &secret, &first_version, &v2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // After the window the next rotation changes the old user's password: sessions still open
    // as the old user (the long one) keep going; new ones are the clone's.
    alter_password(&user, "user-password-2");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (ok, failed, users) = load.finish().await;

    assert!(
        failed.is_empty(),
        "{} failed queries: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 30, "only {ok} queries ran");
    assert_eq!(users.first(), Some(&user), "{users:?}");
    assert_eq!(
        users.last(),
        Some(&clone),
        "new sessions moved to the clone: {users:?}"
    );
    let client = pg_connect(proxy.port, "orders", "alt", "orders")
        .await
        .unwrap();
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        who, clone,
        "the client still says user \"alt\"; the backend user is the clone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_manager_outage_serves_cached_credentials() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let sm = moto.client();
    let user = unique("out");
    let secret = format!("pgvalet/test/{user}");
    role(&user, "outage-password");
    moto::create_secret(&sm, &secret, &moto::secret_json(&user, "outage-password")).await;
    let proxy = start_proxy(&aws_route(
        "out",
        &secret,
        &moto,
        "refresh_interval = \"500ms\"",
    ));

    let load = Load::start(proxy.port, "out", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    moto.stop();
    // The SDK retries with backoff before a refresh gives up; wait for the first failure.
    for _ in 0..200 {
        if proxy.logs().contains("serving the last good value") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A session opened during the outage.
    let client = pg_connect(proxy.port, "orders", "out", "orders")
        .await
        .expect("new session during the outage");
    client.query_one("select 1", &[]).await.unwrap();
    let (ok, failed, _) = load.finish().await;

    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 20, "only {ok} queries ran");
    let logs = proxy.logs();
    assert!(
        logs.contains("serving the last good value") && logs.contains("stale_for_s"),
        "staleness not logged:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secrets_get_clear_errors_and_other_routes_keep_serving() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let sm = moto.client();
    let good = unique("good");
    role(&good, "good-password");
    let good_secret = format!("pgvalet/test/{good}");
    moto::create_secret(
        &sm,
        &good_secret,
        &moto::secret_json(&good, "good-password"),
    )
    .await;
    moto::create_secret(
        &sm,
        "pgvalet/test/malformed",
        "{\"username\": \"x\", \"password\": \"leaky-value\"",
    )
    .await;
    moto::create_secret(
        &sm,
        "pgvalet/test/wrongpw",
        &moto::secret_json(&good, "leaky-wrong-password"),
    )
    .await;
    // The backend table points at a port nothing listens on; the secret names the real one.
    let address = format!(
        r#"{{"username":"{good}","password":"good-password","host":"127.0.0.1","port":{}}}"#,
        cluster().port
    );
    moto::create_secret(&sm, "pgvalet/test/address", &address).await;
    let lenient = "require_at_start = false";
    let mut tables = aws_route("good", &good_secret, &moto, "")
        + &aws_route("missing", "pgvalet/test/missing", &moto, lenient)
        + &aws_route("malformed", "pgvalet/test/malformed", &moto, lenient)
        + &aws_route("wrongpw", "pgvalet/test/wrongpw", &moto, "");
    tables += &format!(
        "\n[backends.elsewhere]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"verify-full\"\nca = \"{}\"\nserver_name = \"localhost\"\n",
        common::postgres::free_port(),
        pki().join("ca.crt").display()
    );
    tables += &aws_route("address", "pgvalet/test/address", &moto, "").replace(
        "backend = \"main\"",
        "backend = \"elsewhere\"\nuse_secret_address = true",
    );
    let proxy = start_proxy(&tables);

    for (user, needle) in [
        ("missing", "secret \"pgvalet/test/missing\" does not exist"),
        (
            "malformed",
            "secret \"pgvalet/test/malformed\" (AWSCURRENT) are malformed: is not valid JSON",
        ),
        ("wrongpw", "refused the login of user"),
    ] {
        let err = pg_connect(proxy.port, "orders", user, "orders")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{user}: {err:?}");
        let message = err.as_db_error().unwrap().message();
        assert!(message.contains(needle), "{user}: {message}");
        assert!(
            !message.contains("leaky"),
            "{user}: the secret leaked: {message}"
        );
    }
    for user in ["good", "address"] {
        let client = pg_connect(proxy.port, "orders", user, "orders")
            .await
            .unwrap();
        let who: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, good, "{user}");
    }
    assert!(
        !proxy.logs().contains("leaky"),
        "a secret value reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_secret_that_cannot_be_read_stops_the_start() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let text = common::proxy::config_text(
        dir.path(),
        "",
        &aws_route("nothing", "pgvalet/test/nothing-here", &moto, ""),
    );
    let Err(out) = ProxyProcess::start(&text, dir) else {
        panic!("pgvalet started without its required secret")
    };
    assert!(
        out.contains("credentials.nothing: cannot start without them")
            && out.contains("secret \"pgvalet/test/nothing-here\" does not exist"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_mode_accepts_the_previous_password_inside_the_window() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let sm = moto.client();
    let user = unique("pw");
    let secret = format!("pgvalet/test/{user}");
    role(&user, "password-one");
    let v1 = moto::create_secret(&sm, &secret, &moto::secret_json(&user, "password-one")).await;
    let tables = aws_route(
        "pw",
        &secret,
        &moto,
        "refresh_interval = \"500ms\"\nprevious_grace = \"3s\"",
    )
    .replace(
        "identity = \"uri:spiffe://pgvalet.dev/svc/orders\"",
        "auth = \"password\"",
    )
    .replace("users = [\"pw\"]", &format!("users = [\"{user}\"]"));
    let proxy = start_proxy(&tables);
    let login = |password: &'static str| {
        let user = user.clone();
        async move {
            let client = pg_connect_password(proxy.port, &user, password, "orders").await?;
            client
                .query_one("select current_user::text", &[])
                .await
                .map(|row| row.get::<_, String>(0))
        }
    };
    assert_eq!(login("password-one").await.unwrap(), user);

    let v2 = moto::put_pending(&sm, &secret, &moto::secret_json(&user, "password-two")).await;
    alter_password(&user, "password-two");
    moto::move_current(&sm, &secret, &v1, &v2).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        login("password-two").await.unwrap(),
        user,
        "the new current password"
    );
    assert_eq!(
        login("password-one").await.unwrap(),
        user,
        "AWSPREVIOUS inside the window"
    );

    tokio::time::sleep(Duration::from_millis(3000)).await;
    let err = login("password-one").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err:?}");
    let message = err.as_db_error().unwrap().message().to_owned();
    assert_eq!(
        message,
        format!("The password that was provided for the role {user} is wrong.")
    );
    assert_eq!(login("password-two").await.unwrap(), user);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_source_reads_the_process_environment() {
    let user = unique("envsrc");
    role(&user, "env-password");
    let tables = "\n[credentials.fromenv]\nsource = \"env\"\nusername_env = \"ORDERS_DB_USER\"\npassword_env = \"ORDERS_DB_PASSWORD\"\n\n[[routes]]\nname = \"fromenv\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\ndatabases = [\"orders\"]\nbackend = \"main\"\ncredentials = \"fromenv\"\n";
    let dir = tempfile::tempdir().unwrap();
    let text = common::proxy::config_text(dir.path(), "", tables);
    let env = [
        ("ORDERS_DB_USER", user.as_str()),
        ("ORDERS_DB_PASSWORD", "env-password"),
    ];
    let proxy = ProxyProcess::start_with_env(&text, dir, &env).expect("pgvalet did not start");
    let client = pg_connect(proxy.port, "orders", "fromenv", "orders")
        .await
        .unwrap();
    let who: String = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, user);

    // Without the variables, start fails and names the variable.
    let dir = tempfile::tempdir().unwrap();
    let text = common::proxy::config_text(dir.path(), "", tables);
    let Err(out) = ProxyProcess::start(&text, dir) else {
        panic!("started without its credentials")
    };
    assert!(out.contains("environment variable ORDERS_DB_USER"), "{out}");
}

/// A Secrets Manager that accepts connections and never answers: pgvalet starts at once, the
/// routes of other credentials are served at once, and the route that needs it gets a clear
/// error, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secrets_manager_that_never_answers_holds_up_only_its_own_routes() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut sockets = Vec::new();
        for s in silent.incoming().flatten() {
            sockets.push(s);
        }
    });
    let tables = format!(
        "\n[credentials.mute]\nsource = \"aws\"\nsecret_id = \"pgvalet/test/mute\"\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\nrequire_at_start = false\n\n[[routes]]\nname = \"mute\"\nidentity = \"uri:spiffe://pgvalet.dev/svc/orders\"\nusers = [\"mute\"]\ndatabases = [\"orders\"]\nbackend = \"main\"\ncredentials = \"mute\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let text = common::proxy::config_text(dir.path(), "handshake_timeout = \"20s\"", &tables);
    let started = std::time::Instant::now();
    let proxy = ProxyProcess::start(&text, dir).expect("pgvalet did not start");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the start waited {:?} for the silent source",
        started.elapsed()
    );
    let port = proxy.port;
    let mute = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = pg_connect(port, "orders", "mute", "orders").await;
        (result.err(), started.elapsed())
    });
    let started = std::time::Instant::now();
    let other = pg_connect(port, "orders", "orders", "orders")
        .await
        .unwrap();
    other.batch_execute("select 1").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let (err, took) = mute.await.unwrap();
    let err = err.expect("the mute route logged in without credentials");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err:?}");
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("no answer within 10s"), "{message}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    drop(held);
}
