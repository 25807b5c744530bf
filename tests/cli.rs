//! The `pgvalet` binary: `check` validates a config and its files, and refuses bad ones with
//! an error that names the file and the key.

mod common;

use std::process::Command;

fn pgvalet(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgvalet"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_accepts_a_good_config_and_names_what_is_wrong_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::proxy::config_text(dir.path(), "", "");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &text).unwrap();
    let (ok, out) = pgvalet(&["check", "--config", good.to_str().unwrap()]);
    assert!(ok && out.contains('✓'), "{out}");

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, text.replace("[tls]", "colour = \"blue\"\n[tls]")).unwrap();
    let (ok, out) = pgvalet(&["check", "--config", unknown.to_str().unwrap()]);
    assert!(
        !ok && out.contains("unknown.toml") && out.contains("colour"),
        "{out}"
    );

    let missing_cert = dir.path().join("missing.toml");
    let server_crt = common::pki().join("server.crt").display().to_string();
    std::fs::write(
        &missing_cert,
        text.replace(&server_crt, "/nonexistent/server.crt"),
    )
    .unwrap();
    let (ok, out) = pgvalet(&["check", "--config", missing_cert.to_str().unwrap()]);
    assert!(
        !ok && out.contains("tls.cert") && out.contains("/nonexistent/server.crt"),
        "{out}"
    );

    let (ok, out) = pgvalet(&["check", "--config", "/nonexistent/pgvalet.toml"]);
    assert!(!ok && out.contains("/nonexistent/pgvalet.toml"), "{out}");
}
