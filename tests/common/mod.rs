//! The integration test harness: a development PKI, a real Postgres cluster, pgvalet running
//! in-process on 127.0.0.1:0, and real clients (psql, tokio-postgres, a raw wire client).
#![allow(dead_code)]

pub mod admin;
pub mod clients;
pub mod moto;
pub mod openssl;
#[path = "../../examples/devpki/pki.rs"]
pub mod pki;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// Each test binary uses a different part of the harness.
#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use postgres::Cluster;
#[allow(unused_imports)]
pub use proxy::Proxy;

/// The development PKI (the same files `make run` uses, plus a revoked certificate and a CRL),
/// generated once per test process under the target directory.
pub fn pki() -> &'static Path {
    static PKI: OnceLock<PathBuf> = OnceLock::new();
    PKI.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        // Remove what earlier test processes left behind.
        if let Ok(entries) = std::fs::read_dir(&base) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("pki-")
                    && !Path::new("/proc").join(pid).exists()
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("pki-{}", std::process::id()));
        pki::generate_dev(&dir).expect("could not generate the test PKI");
        dir
    })
}

/// The Postgres cluster shared by the tests of one test binary.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(pki()))
}

/// Installs a log subscriber once, so `PGVALET_LOG=debug cargo test` shows pgvalet's logs.
pub fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(filter) = std::env::var("PGVALET_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}
