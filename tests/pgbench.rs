//! pgbench through pgvalet: 50 clients on a transaction-mode route with `max_size = 5`, in
//! every query mode pgbench has, with Postgres itself counting the backend connections.
//! (Its own test binary, so its cluster serves nothing else while it counts.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

const ROUTE: &str = r#"
[[routes]]
name = "bench"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["bench"]
databases = ["orders"]
backend = "main"
credentials = "orders"
pool_mode = "transaction"
max_size = 5
borrow_timeout = "20s"
"#;

async fn pgbench(port: u16, args: &[&str]) -> (bool, String) {
    let p = |f: &str| pki().join(f).display().to_string();
    let out = tokio::process::Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "bench"])
        .args(args)
        .arg("orders")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", p("ca.crt"))
        .env("PGSSLCERT", p("orders.crt"))
        .env("PGSSLKEY", p("orders.key"))
        .env_remove("PGPASSWORD")
        .output()
        .await
        .expect("pgbench is not installed: run `make test`, which installs it");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pgbench_clients_on_five_backend_connections() {
    let proxy = Proxy::start_with("", ROUTE).await;
    let (ok, out) = pgbench(proxy.port(), &["-i", "-s", "1", "-q"]).await;
    assert!(ok, "pgbench -i through pgvalet failed:\n{out}");

    // Postgres' own count of orders_svc backends, sampled while pgbench runs.
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, most) = (stop.clone(), most.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n: usize = cluster()
                    .admin_sql(
                        "postgres",
                        "select count(*) from pg_stat_activity where usename = 'orders_svc'",
                    )
                    .parse()
                    .unwrap();
                most.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    for mode in ["prepared", "extended", "simple"] {
        let (ok, out) = pgbench(
            proxy.port(),
            &["-n", "-M", mode, "-c", "50", "-j", "2", "-t", "40"],
        )
        .await;
        assert!(ok, "pgbench -M {mode} failed:\n{out}");
        assert!(
            out.contains("number of transactions actually processed: 2000/2000"),
            "-M {mode}:\n{out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "-M {mode}:\n{out}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let most = most.load(Ordering::Relaxed);
    assert!(
        (1..=5).contains(&most),
        "Postgres saw {most} backends for 50 clients on max_size = 5"
    );
    let s = proxy.pool_stats("bench", "orders");
    assert_eq!((s.active, s.waiting), (0, 0), "{s:?}");
    assert!(s.idle <= 5, "{s:?}");
    proxy.stop().await;
}
