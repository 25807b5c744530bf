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
    // Everything reachable: one ✓ per item, the login through each route included.
    let wrong_route = "\n[[routes]]\nname = \"orders_wrong\"";
    let start = text
        .find(wrong_route)
        .expect("the test config has the orders_wrong route");
    let end = text[start + 1..]
        .find("\n[[routes]]")
        .map_or(text.len(), |n| start + 1 + n);
    let without_wrong = format!("{}{}", &text[..start], &text[end..]);
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &without_wrong).unwrap();
    let (ok, out) = pgvalet(&["check", "--config", good.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(!out.contains('✗'), "{out}");
    assert!(
        out.contains("✓ tls.cert") && out.contains("more days"),
        "{out}"
    );
    assert!(
        out.contains("✓ credentials.orders: file") && out.contains("readable (user orders_svc)"),
        "{out}"
    );
    assert!(
        out.contains("✓ route orders: backends.main") && out.contains("logged in as orders_svc"),
        "{out}"
    );
    assert!(
        !out.contains(common::cluster().password("orders_svc")),
        "a password was printed"
    );

    // A route whose secret holds a wrong password: its line says so, and check exits 1.
    let with_wrong = dir.path().join("with_wrong.toml");
    std::fs::write(&with_wrong, &text).unwrap();
    let (ok, out) = pgvalet(&["check", "--config", with_wrong.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("✗ route orders_wrong") && out.contains("refused the login"),
        "{out}"
    );
    assert!(!out.contains("not-the-password"), "a password was printed");

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
