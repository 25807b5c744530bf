//! A temporary Postgres cluster for tests: initdb with SCRAM and TLS, on a free loopback port,
//! under a directory of its own in /tmp so the `postgres` user can reach it (when the tests run
//! as root, the server runs as `postgres`).
//!
//! The cluster is watched by a small shell that stops it and removes its directory when the
//! test process's end of a pipe closes, so a test binary that panics or is killed leaves
//! nothing running.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use super::watchdog::Watchdog;
use std::process::Command;

/// Database users the cluster has, with the auth method pg_hba gives them.
pub const ROLES: &[(&str, &str)] = &[
    ("orders_svc", "scram-sha-256"),
    ("billing_svc", "scram-sha-256"),
    ("md5_svc", "md5"),
    ("plain_svc", "password"),
];

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    pub socket_dir: PathBuf,
    /// Password of each role in [`ROLES`].
    pub passwords: Vec<(String, String)>,
    /// `pg_ctl start`'s `-o` options, for [`Cluster::start_server`].
    options: String,
    watchdog: Watchdog,
}

/// The directory holding initdb, pg_ctl and postgres: PATH first, then Debian's layout.
pub fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
    {
        let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !found.is_empty() {
            let real = std::fs::canonicalize(&found).unwrap_or_else(|_| PathBuf::from(&found));
            return real.parent().unwrap().to_owned();
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run `make test`, which installs it")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("no PostgreSQL bin directory under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn random_password() -> String {
    let bytes: [u8; 16] = rand_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut out).unwrap();
    out
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// How a cluster differs from the default one.
#[derive(Default)]
pub struct Setup<'a> {
    /// The whole pg_hba.conf, in place of a line per role of [`ROLES`] and scram for the rest.
    pub hba: Option<&'a str>,
    /// The CA bundle client certificates are checked against (`ssl_ca_file`), in place of the
    /// dev PKI's CA.
    pub client_ca: Option<&'a Path>,
    /// Copy this cluster (pg_basebackup) and run as its hot standby, instead of initdb.
    pub primary: Option<&'a Cluster>,
    /// Listen on this loopback address and port, in place of 127.0.0.1 and a free port (another
    /// cluster may have the same port on another address).
    pub listen: Option<(&'a str, u16)>,
    /// Give the roles this cluster's passwords: a server of its own that the same credentials
    /// log in to.
    pub passwords_of: Option<&'a Cluster>,
}

impl Cluster {
    /// Starts a cluster whose server certificate, key and CA come from `pki`.
    pub fn start(pki: &Path) -> Cluster {
        Cluster::start_with(pki, Setup::default())
    }

    /// Starts a hot standby of this cluster (streaming replication): the same roles and
    /// passwords, read-only.
    pub fn start_replica(&self, pki: &Path) -> Cluster {
        let setup = Setup {
            primary: Some(self),
            ..Setup::default()
        };
        Cluster::start_with(pki, setup)
    }

    /// Starts a cluster as [`Cluster::start`] does, with the differences `setup` names.
    pub fn start_with(pki: &Path, setup: Setup<'_>) -> Cluster {
        let primary = setup.primary;
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pgvalet-test-pg-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let (address, port) = setup.listen.unwrap_or(("127.0.0.1", 0));
        let port = if port == 0 { free_port() } else { port };
        let data = dir.join("data");
        let socket_dir = dir.join("run");
        std::fs::create_dir_all(&socket_dir).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let client_ca = setup
            .client_ca
            .map_or_else(|| pki.join("ca.crt"), Path::to_owned);
        for (from, target) in [
            (pki.join("postgres.crt"), "server.crt"),
            (pki.join("postgres.key"), "server.key"),
            (client_ca, "ca.crt"),
        ] {
            std::fs::copy(from, dir.join(target)).unwrap();
        }
        let passwords: Vec<(String, String)> = match primary.or(setup.passwords_of) {
            Some(other) => other.passwords.clone(),
            None => ROLES
                .iter()
                .map(|(r, _)| (r.to_string(), random_password()))
                .collect(),
        };

        let mut hba = String::from("local all all trust\nlocal replication all trust\n");
        for (role, method) in ROLES {
            hba += &format!(
                "hostssl all {role} 127.0.0.1/32 {method}\nhostssl all {role} ::1/128 {method}\n"
            );
        }
        hba += "hostssl all all 127.0.0.1/32 scram-sha-256\nhost all all 0.0.0.0/0 reject\n";
        std::fs::write(dir.join("pg_hba.conf"), setup.hba.unwrap_or(&hba)).unwrap();

        let mut setup = String::new();
        for (role, password) in &passwords {
            let method = ROLES.iter().find(|(r, _)| r == role).unwrap().1;
            let encryption = if method == "md5" {
                "md5"
            } else {
                "scram-sha-256"
            };
            setup += &format!(
                "SET password_encryption = '{encryption}';\nCREATE ROLE {role} LOGIN PASSWORD '{password}';\n"
            );
        }
        for (db, owner) in [("orders", "orders_svc"), ("billing", "billing_svc")] {
            setup += &format!(
                "CREATE DATABASE {db} OWNER {owner};\nREVOKE ALL ON DATABASE {db} FROM PUBLIC;\n"
            );
        }
        for role in ["md5_svc", "plain_svc"] {
            setup += &format!("GRANT CONNECT ON DATABASE orders TO {role};\n");
        }
        std::fs::write(dir.join("setup.sql"), setup).unwrap();

        let root = is_root();
        let as_pg = if root { "runuser -u postgres --" } else { "" };
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown of the test cluster failed");
        }
        let d = |p: &Path| sh_quote(&p.display().to_string());
        let options = format!(
            "-c listen_addresses={address} -c port={port} -c unix_socket_directories={sock} -c ssl=on \
             -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key -c ssl_ca_file={dir}/ca.crt \
             -c hba_file={dir}/pg_hba.conf -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=200 -c shared_buffers=32MB -c log_min_messages=warning",
            sock = socket_dir.display(),
            dir = dir.display(),
        );
        // A primary is made with initdb and set up; a replica is copied from its primary.
        let (make, set_up) = match primary {
            None => (
                format!(
                    "{as_pg} {bin}/initdb -D {data} -U postgres --auth=trust -N -E UTF8 --locale=C >{dir}/initdb.log 2>&1 || {{ cat {dir}/initdb.log >&2; exit 1; }}",
                    bin = d(&bin),
                    data = d(&data),
                    dir = d(&dir),
                ),
                format!(
                    "{as_pg} psql -X -q -v ON_ERROR_STOP=1 -h {sock} -p {port} -U postgres -d postgres -f {dir}/setup.sql >/dev/null",
                    sock = d(&socket_dir),
                    dir = d(&dir),
                ),
            ),
            Some(primary) => (
                format!(
                    "{as_pg} {bin}/pg_basebackup -D {data} -h {psock} -p {pport} -U postgres -R -X stream -c fast >{dir}/basebackup.log 2>&1 || {{ cat {dir}/basebackup.log >&2; exit 1; }}; chmod 700 {data}",
                    bin = d(&bin),
                    data = d(&data),
                    dir = d(&dir),
                    psock = d(&primary.socket_dir),
                    pport = primary.port,
                ),
                String::new(),
            ),
        };
        let script = format!(
            r#"set -e
            # Every path here is absolute, and the postgres user may not enter the checkout.
            cd /
            chmod 700 {dir}/server.key
            {make}
            {as_pg} {bin}/pg_ctl -D {data} -l {dir}/postgres.log -w -t 30 -o {options} start >/dev/null || {{ cat {dir}/postgres.log >&2; exit 1; }}
            {set_up}
            echo ready
            set +e
            cat >/dev/null
            {as_pg} {bin}/pg_ctl -D {data} -m immediate stop >/dev/null 2>&1
            rm -rf {dir}
            "#,
            dir = d(&dir),
            data = d(&data),
            bin = d(&bin),
            options = sh_quote(&options),
        );
        let (watchdog, line) = Watchdog::start(&script);
        assert_eq!(
            line, "ready",
            "the test Postgres cluster did not start (see stderr above)"
        );
        Cluster {
            port,
            dir,
            socket_dir,
            passwords,
            options,
            watchdog,
        }
    }

    /// Stops the server (fast shutdown: sessions are ended); the cluster stays, to start again.
    pub fn stop_server(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    /// Starts the server stopped by [`Cluster::stop_server`].
    pub fn start_server(&self) {
        let log = self.dir.join("postgres.log");
        let log = log.display().to_string();
        self.pg_ctl(&["-l", &log, "-w", "-t", "30", "-o", &self.options, "start"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = bin_dir().join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let out = cmd
            .current_dir("/")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn password(&self, role: &str) -> &str {
        &self
            .passwords
            .iter()
            .find(|(r, _)| r == role)
            .expect("unknown role")
            .1
    }

    /// Runs SQL as the superuser over the unix socket; returns trimmed unaligned output.
    pub fn admin_sql(&self, db: &str, sql: &str) -> String {
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            // The postgres user may not enter the checkout (a clone under a 0700 directory).
            c.args(["-u", "postgres", "--", "psql"]).current_dir("/");
            c
        } else {
            Command::new("psql")
        };
        let out = cmd
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "admin SQL failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
