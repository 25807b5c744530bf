//! `pgvalet check`: everything a start needs, tried without serving — the configuration, the
//! certificates (with days to expiry, backend client certificates included), each credentials
//! entry (read, never printed; for an IAM source, a token made), and a login through each
//! route's backend. One line per item.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, SourceKind};
use crate::server::State;

/// One line of the report.
pub struct Line {
    pub ok: bool,
    pub text: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", if self.ok { "✓" } else { "✗" }, self.text)
    }
}

fn line(ok: bool, text: String) -> Line {
    Line { ok, text }
}

/// Days until the first certificate in a PEM file expires (negative once it has).
fn days_left(key: &str, path: &Path) -> Result<i64, String> {
    let not_after = crate::tls::not_after(key, path).map_err(|e| e.to_string())?;
    Ok((not_after - crate::tls::unix_now()) / 86_400)
}

/// Runs every check of `config` (read from `origin`).
pub async fn run(config: Config, origin: &Path) -> Vec<Line> {
    let mut out = vec![line(
        true,
        format!("{}: configuration valid", origin.display()),
    )];
    for (key, path) in [
        ("tls.cert", &config.tls.cert),
        ("tls.client_ca", &config.tls.client_ca),
    ] {
        out.push(match days_left(key, path) {
            Ok(days) if days >= 0 => line(
                true,
                format!("{key} {}: valid for {days} more days", path.display()),
            ),
            Ok(days) => line(
                false,
                format!("{key} {}: expired {} days ago", path.display(), -days),
            ),
            Err(e) => line(false, e),
        });
    }
    let state = match State::build(config).await {
        Ok(state) => Arc::new(state),
        Err(e) => {
            out.push(line(false, e.to_string()));
            return out;
        }
    };
    out.push(line(
        true,
        "certificates and keys load; TLS configurations build".into(),
    ));
    for cert in state.targets.client_certs() {
        let days = (cert.not_after - crate::tls::unix_now()) / 86_400;
        let what = format!(
            "{} {} (CN {})",
            cert.key,
            cert.path.display(),
            cert.cn.as_deref().unwrap_or("none")
        );
        out.push(if days >= 0 {
            line(true, format!("{what}: valid for {days} more days"))
        } else {
            line(false, format!("{what}: expired {} days ago", -days))
        });
    }
    for (name, config) in &state.config.credentials {
        let Some(cache) = state.credentials.get(name) else {
            continue;
        };
        out.push(match cache.refresh().await {
            Ok(creds) if config.source == SourceKind::Iam => {
                match crate::iam::token::Token::parse(creds.password.expose()) {
                    Ok(token) => line(
                        true,
                        format!(
                            "credentials.{name}: an IAM auth token can be made for user {} at {}:{} in {}, signed with access key {}",
                            token.db_user,
                            token.host,
                            token.port,
                            token.region,
                            token.access_key_id
                        ),
                    ),
                    Err(e) => line(
                        false,
                        format!("credentials.{name}: the IAM auth token made is malformed: {}", e.0),
                    ),
                }
            }
            Ok(creds) => line(
                true,
                format!(
                    "credentials.{name}: {} readable (user {})",
                    cache.location(),
                    creds.username
                ),
            ),
            Err(e) => line(false, e.to_string()),
        });
    }
    for route in &state.config.routes {
        let Some(target) = state.targets.for_route(route) else {
            continue;
        };
        let database = route
            .databases
            .iter()
            .find(|d| *d != "*")
            .map_or("postgres", String::as_str);
        let pool = state.pools.get(route, target, database);
        let what = format!(
            "route {}: backends.{} ({}) database {database}",
            route.name,
            route.backend,
            target.addr()
        );
        out.push(
            match pool
                .borrow(&crate::backend::ClientSettings::default())
                .await
            {
                Ok(backend) => {
                    let user = backend
                        .params
                        .iter()
                        .find(|(k, _)| k == "session_authorization")
                        .map(|(_, v)| v.clone());
                    let text = format!(
                        "{what}: logged in{}",
                        user.map(|u| format!(" as {u}")).unwrap_or_default()
                    );
                    backend.release(true).await;
                    line(true, text)
                }
                Err(e) => line(false, format!("{what}: {e}")),
            },
        );
    }
    out
}
