#![forbid(unsafe_code)]
//! The `pgvalet` command: `run` serves, `check` validates a config and its files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgvalet::Config;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "pgvalet", version, about = "mTLS-terminating PostgreSQL proxy")]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, short, global = true, default_value = "pgvalet.toml")]
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PGVALET_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pgvalet: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => runtime.block_on(check(config, &cli.config)),
        Command::Run => runtime.block_on(serve(config)),
    }
}

async fn check(config: Config, path: &Path) -> ExitCode {
    let lines = pgvalet::check::run(config, path).await;
    for line in &lines {
        println!("{line}");
    }
    if lines.iter().all(|l| l.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(config: Config) -> ExitCode {
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
    match pgvalet::run(config, listener, stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgvalet: {e}");
            ExitCode::FAILURE
        }
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
