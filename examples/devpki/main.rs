//! Generates pgvalet's development PKI: `cargo run --example devpki -- [DIR]` (default
//! `certs-dev`). Development only: the keys are written in the clear next to their certificates.

mod pki;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("certs-dev"), PathBuf::from);
    match pki::generate_dev(&dir) {
        Ok(()) => {
            println!("wrote the development PKI to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("devpki: {e}");
            ExitCode::FAILURE
        }
    }
}
