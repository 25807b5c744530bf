//! pgvalet as a separate process, the way it runs in a container: its own environment (AWS
//! credentials for the local Secrets Manager come from the standard chain), a config file, and
//! its log lines collected for the test to read.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::watchdog::Watchdog;

pub struct ProxyProcess {
    pub port: u16,
    child: Child,
    /// Stops pgvalet if the test process ends without dropping this.
    _watchdog: Watchdog,
    pub logs: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

fn collect(stream: impl Read + Send + 'static, logs: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut logs = logs.lock().unwrap();
            logs.push_str(&line);
            logs.push('\n');
        }
    });
}

impl ProxyProcess {
    /// Starts `pgvalet --config` with `config` (its `listen_addr` set to a free port) and
    /// waits until it listens. An `Err` holds the output of a pgvalet that exited instead.
    pub fn start(config: &str, dir: tempfile::TempDir) -> Result<ProxyProcess, String> {
        ProxyProcess::start_with_env(config, dir, &[])
    }

    /// As [`ProxyProcess::start`], with extra environment variables.
    pub fn start_with_env(
        config: &str,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Result<ProxyProcess, String> {
        ProxyProcess::start_command(config, dir, env, &[])
    }

    /// As [`ProxyProcess::start`], in a mount namespace of its own where the file `hosts` is
    /// mounted over /etc/hosts: the test moves pgvalet's host names by rewriting it (in place:
    /// the mount holds its inode), and the machine's own /etc/hosts is never touched.
    pub fn start_with_hosts(
        config: &str,
        dir: tempfile::TempDir,
        hosts: &std::path::Path,
    ) -> Result<ProxyProcess, String> {
        let hosts = hosts.display().to_string();
        let wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
            &hosts,
        ];
        ProxyProcess::start_command(config, dir, &[], &wrapper)
    }

    /// Starts pgvalet, run by `wrapper` (a command and its arguments, to which pgvalet's own are
    /// added) when that is not empty.
    fn start_command(
        config: &str,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Result<ProxyProcess, String> {
        let port = super::postgres::free_port();
        let config = config.replace(
            "listen_addr = \"127.0.0.1:0\"",
            &format!("listen_addr = \"127.0.0.1:{port}\""),
        );
        let path = dir.path().join("pgvalet.toml");
        std::fs::write(&path, config).unwrap();
        let pgvalet = env!("CARGO_BIN_EXE_pgvalet");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(pgvalet);
                c
            }
            None => Command::new(pgvalet),
        };
        let mut child = command
            .arg("--config")
            .arg(&path)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("PGVALET_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("could not start pgvalet");
        let (watchdog, _) = Watchdog::start(&format!(
            "echo watching; cat >/dev/null; kill -TERM {} 2>/dev/null",
            child.id()
        ));
        let logs = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), logs.clone());
        collect(child.stderr.take().unwrap(), logs.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if logs.lock().unwrap().contains("pgvalet listening") {
                return Ok(ProxyProcess {
                    port,
                    child,
                    _watchdog: watchdog,
                    logs,
                    _dir: dir,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "pgvalet exited with {status}:\n{}",
                    logs.lock().unwrap()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "pgvalet did not start:\n{}",
                logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`) to pgvalet.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `within` for pgvalet to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        exited_within(&mut self.child, within)
    }

    /// pgvalet's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of pgvalet's `/proc/PID/status` in KiB: `VmRSS` (resident now) or `VmHWM`
    /// (the most it has been resident).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `within` for `child` to exit, and returns how it did.
pub fn exited_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
