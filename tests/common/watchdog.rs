//! A shell that cleans up after a test's server: it runs in its own session, so a signal to the
//! test's process group (Ctrl-C, a timeout) does not reach it, and it does its cleanup when its
//! standard input closes — when the test drops it, or when the test process dies, however.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

pub struct Watchdog(Mutex<Option<(Child, ChildStdin)>>);

impl Watchdog {
    /// Runs `script` with `sh -c` in a new session and returns once it has printed its first
    /// line, with that line. The script reads its standard input to the end
    /// (`cat >/dev/null`) before it cleans up.
    pub fn start(script: &str) -> (Watchdog, String) {
        let mut child = Command::new("setsid")
            .args(["sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("could not run setsid sh");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (
            Watchdog(Mutex::new(Some((child, stdin)))),
            line.trim().to_owned(),
        )
    }

    /// Tells the script to clean up and waits until it has.
    pub fn stop(&self) {
        if let Some((mut child, stdin)) = self.0.lock().ok().and_then(|mut g| g.take()) {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}
