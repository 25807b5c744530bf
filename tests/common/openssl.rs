//! OpenSSL's `s_client` as a Postgres client: `-starttls postgres` sends the SSLRequest, the test
//! writes the wire messages to its standard input and reads the answers from its output, and the
//! interactive command lines (`R` renegotiate, `k`/`K` key update) drive the TLS layer as an
//! OpenSSL application would. Every TLS message and alert is written to a trace file (`-msg`).

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pki;

pub struct SClient {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What s_client printed: the server's bytes, as they came.
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    trace: tempfile::NamedTempFile,
}

/// The TLS version s_client is limited to.
#[derive(Debug, Clone, Copy)]
pub enum Version {
    Tls12,
    Tls13,
}

fn collect(mut stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
}

impl SClient {
    /// Connects to pgvalet on `port` with the client certificate `cert`, TLS limited to
    /// `version`.
    pub fn connect(port: u16, cert: &str, version: Version) -> SClient {
        let p = |f: &str| pki().join(f).display().to_string();
        let trace = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-starttls", "postgres", "-servername", "localhost"])
            .arg(match version {
                Version::Tls12 => "-tls1_2",
                Version::Tls13 => "-tls1_3",
            })
            .args(["-CAfile", &p("ca.crt"), "-verify_return_error"])
            .args(["-cert", &p(&format!("{cert}.crt"))])
            .args(["-key", &p(&format!("{cert}.key"))])
            // Quiet, yet reading the command letters (-quiet alone would ignore them).
            .args(["-quiet", "-no_ign_eof", "-msg", "-msgfile"])
            .arg(trace.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl is not installed");
        let (out, err) = (Arc::default(), Arc::default());
        collect(child.stdout.take().unwrap(), Arc::clone(&out));
        collect(child.stderr.take().unwrap(), Arc::clone(&err));
        let stdin = child.stdin.take();
        SClient {
            child,
            stdin,
            out,
            err,
            trace,
        }
    }

    /// Writes `bytes` to s_client in one write, which it reads and sends in one piece. A piece
    /// that starts with a command letter would be taken as the command.
    pub fn send(&mut self, bytes: &[u8]) {
        assert!(
            !matches!(bytes.first(), Some(b'Q' | b'R' | b'k' | b'K')),
            "s_client would read this as a command"
        );
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Gives s_client a command line: `R` (renegotiate), `k` (key update), `K` (key update,
    /// asking the server for one too).
    pub fn command(&mut self, letter: &str) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{letter}\n").as_bytes())?;
        stdin.flush()
    }

    /// The server's bytes so far.
    pub fn output(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// The `-msg` trace so far: one line per TLS message, alerts by name.
    pub fn trace(&self) -> String {
        std::fs::read_to_string(self.trace.path()).unwrap_or_default()
    }

    /// Waits up to 20 s until the server's bytes hold `needle`.
    pub fn wait_for_output(&self, needle: &[u8]) -> bool {
        wait(|| self.output().windows(needle.len()).any(|w| w == needle))
    }

    /// Waits up to 20 s until the trace holds `needle`.
    pub fn wait_for_trace(&self, needle: &str) -> bool {
        wait(|| self.trace().contains(needle))
    }

    /// Waits up to `within` for s_client to exit.
    pub fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        super::process::exited_within(&mut self.child, within)
    }
}

fn wait(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

impl Drop for SClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
