//! Reload: a new configuration put in force for new sessions (SIGHUP, `watch = true`), or
//! refused with the running one kept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Inner, Loader, State, spawn_refreshers};
use crate::config::Config;
use crate::error::ConfigError;
use crate::pool::Pools;

/// Reloads a running server's configuration: on SIGHUP, and with `watch = true` when the
/// certificate files change.
#[derive(Clone)]
pub struct Reloader(pub(super) Arc<Inner>);

impl Reloader {
    /// Puts `config` in force for new sessions, or refuses it (logged, counted) and keeps the
    /// running one. Credentials that changed are read first, as at start.
    pub async fn reload(&self, config: Config) -> Result<(), ConfigError> {
        let inner = &self.0;
        let _one = inner.reloading.lock().await;
        let old = inner.state.load_full();
        let built = async {
            let new = State::next(config, Some(&old)).await?;
            if !Arc::ptr_eq(&new.credentials, &old.credentials) {
                new.credentials.prime(&new.config.credentials).await?;
            }
            Ok::<_, ConfigError>(new)
        };
        let new = match built.await {
            Ok(new) => new,
            Err(e) => return Err(refused(e)),
        };
        let listeners = |c: &Config| -> Vec<(String, SocketAddr)> {
            c.endpoints
                .iter()
                .map(|e| (e.name.clone(), e.listen_addr))
                .collect()
        };
        if listeners(&new.config) != listeners(&old.config) {
            return Err(refused(ConfigError::Invalid {
                path: "-".into(),
                key: "endpoints".into(),
                message: "names or listen addresses changed; endpoints' listeners change only at a restart".into(),
            }));
        }
        for (key, changed) in [
            (
                "listen_addr",
                new.config.listen_addr != old.config.listen_addr,
            ),
            ("metrics.addr", new.config.metrics != old.config.metrics),
            (
                "max_clients",
                new.config.max_clients != old.config.max_clients,
            ),
        ] {
            if changed {
                tracing::warn!(
                    key,
                    "this key takes effect at the next start, not on reload"
                );
            }
        }
        let new_credentials = !Arc::ptr_eq(&new.credentials, &old.credentials);
        if new_credentials {
            spawn_refreshers(&new, &inner.background, &inner.stop);
        }
        new.declare_warm_pools();
        inner.state.store(Arc::new(new));
        if new_credentials {
            old.refreshers.cancel();
        }
        crate::metrics::config_reload(true);
        tracing::info!(
            new_credentials,
            "configuration reloaded; new sessions use it"
        );
        Ok(())
    }

    /// The pools in force now, for their counts.
    pub fn pools(&self) -> Arc<Pools> {
        self.0.state.load().pools.clone()
    }

    /// Sets how [`Reloader::reload_now`] and `watch` read the configuration (once).
    pub fn set_loader(&self, loader: Loader) {
        let _ = self.0.loader.set(loader);
    }

    /// Reads the configuration with the loader and reloads it.
    pub async fn reload_now(&self) -> Result<(), ConfigError> {
        let Some(loader) = self.0.loader.get().cloned() else {
            return Ok(());
        };
        match loader() {
            Ok(config) => self.reload(config).await,
            Err(e) => Err(refused(e)),
        }
    }

    /// While the configuration in force has `watch = true`, reloads when one of its
    /// certificate, key, CA or CRL files, or one of `also`, changes. Checks every 5 s; after
    /// a change it waits a second more, so that a renewal writing two files lands whole.
    pub async fn watch_forever(self, also: Vec<std::path::PathBuf>) {
        let fingerprint =
            |files: &[std::path::PathBuf]| -> Vec<Option<(std::time::SystemTime, u64)>> {
                files
                    .iter()
                    .map(|f| {
                        let m = std::fs::metadata(f).ok()?;
                        Some((m.modified().ok()?, m.len()))
                    })
                    .collect()
            };
        let files = |state: &State| {
            let mut files = state.watched_files();
            files.extend(also.iter().cloned());
            files
        };
        // `None` while the configuration in force does not ask to watch: no files are looked at.
        let mut last = None;
        loop {
            let watching = self.0.state.load().config.watch;
            if watching && last.is_none() {
                last = Some(fingerprint(&files(&self.0.state.load())));
            } else if !watching {
                last = None;
            }
            tokio::select! {
                () = self.0.stop.cancelled() => return,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let Some(before) = &last else { continue };
            let now = fingerprint(&files(&self.0.state.load()));
            if now == *before {
                continue;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            tracing::info!("watched files changed; reloading");
            // What this attempt read: a refused reload is tried again once the files change
            // again (a renewal that wrote the certificate before its key), not every tick.
            let attempted = fingerprint(&files(&self.0.state.load()));
            last = match self.reload_now().await {
                Ok(()) => None,
                Err(_) => Some(attempted),
            };
        }
    }
}

/// Logs and counts a reload that did not happen, and hands its error back.
fn refused(e: ConfigError) -> ConfigError {
    crate::metrics::config_reload(false);
    tracing::error!(error = %e, "configuration reload refused; the running configuration stays in force");
    e
}

/// How often `watch = true` looks at the files.
const WATCH_EVERY: Duration = Duration::from_secs(5);
