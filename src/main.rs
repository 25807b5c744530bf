#![forbid(unsafe_code)]
//! The `pgvalet` command: `run` serves, `check` validates a config and its files, `health` asks
//! a running pgvalet whether it is ready.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pgvalet::Config;
use pgvalet::config::{LogFormat, env::WHOLE};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "pgvalet", version, about = "mTLS-terminating PostgreSQL proxy")]
struct Cli {
    /// The TOML configuration file (PGVALET_CONFIG_TOML may hold the whole configuration
    /// instead; PGVALET_<KEY> variables override single keys).
    #[arg(
        long,
        short,
        global = true,
        env = "PGVALET_CONFIG",
        default_value = "pgvalet.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve clients (the default).
    Run,
    /// Check everything a start needs: the configuration, certificates (days to expiry), each
    /// credentials entry (never printed), a login through each route's backend. Exits 1 on
    /// any failure.
    Check,
    /// Ask the running pgvalet's /readyz (on metrics.addr) whether it is ready: exit 0 if it
    /// is, 1 if not. For container health checks in images without curl.
    Health,
}

/// The environment, as the configuration reads it (variables that are not UTF-8 are skipped).
fn environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let vars = environment();
    let (config, overridden) = match Config::load_with_env(&cli.config, &vars) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("pgvalet: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = EnvFilter::try_from_env("PGVALET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_target(false)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
    if !overridden.is_empty() {
        tracing::info!(variables = %overridden.join(" "), "configuration keys set from the environment");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgvalet: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // With the whole configuration in the environment there is no file to name or watch.
    let file = (!vars.iter().any(|(k, _)| k == WHOLE)).then(|| cli.config.clone());
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            let origin = file.unwrap_or_else(|| PathBuf::from(WHOLE));
            runtime.block_on(check(config, &origin))
        }
        Command::Health => runtime.block_on(health(config)),
        Command::Run => runtime.block_on(serve(config, cli.config, file)),
    }
}

async fn check(config: Config, origin: &Path) -> ExitCode {
    let lines = pgvalet::check::run(config, origin).await;
    for line in &lines {
        println!("{line}");
    }
    if lines.iter().all(|l| l.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn health(config: Config) -> ExitCode {
    let Some(metrics) = config.metrics else {
        eprintln!(
            "pgvalet health: the configuration has no [metrics] table, so nothing serves /readyz"
        );
        return ExitCode::FAILURE;
    };
    match pgvalet::admin::ask_ready(metrics.addr).await {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("{why}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, path: PathBuf, file: Option<PathBuf>) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.listen_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "pgvalet: cannot listen on {} (listen_addr): {e}",
                config.listen_addr
            );
            return ExitCode::FAILURE;
        }
    };
    let server = match pgvalet::server::Server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("pgvalet: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reloader = server.reloader();
    reloader.set_loader(Arc::new(move || {
        Config::load_with_env(&path, &environment()).map(|(config, _)| config)
    }));
    tokio::spawn(reload_on_sighup(reloader.clone()));
    tokio::spawn(reloader.watch_forever(file.into_iter().collect()));
    server.serve(listener, stop_signal()).await;
    ExitCode::SUCCESS
}

/// Reloads the configuration on every SIGHUP.
async fn reload_on_sighup(reloader: pgvalet::server::Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload is not available");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = reloader.reload_now().await;
    }
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
