use std::process::ExitCode;

use clap::Parser;
use contactsyncd::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli::run(cli) {
        Ok(()) => ExitCode::from(cli::exit::SUCCESS),
        Err(failure) => {
            eprintln!("contactsyncd: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// Logs go to stderr; `CONTACTSYNCD_LOG` (or `RUST_LOG`) sets the filter, e.g. `debug`.
fn init_logging() {
    let filter = std::env::var("CONTACTSYNCD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,rusqlite_migration=warn,grammers_mtsender=warn,grammers_client=warn,grammers_mtproto=warn,grammers_session=warn".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

// glibc malloc was a quarter of `inspect`'s time on a 100,000-card export (many small,
// short-lived allocations per card); mimalloc is the usual remedy.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
