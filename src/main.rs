use std::process::ExitCode;

use clap::Parser;
use contactsyncd::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logging comes before the command; a broken configuration is the command's to report.
    let log = contactsyncd::config::load(cli.config.as_deref())
        .map(|c| c.log)
        .unwrap_or_default();
    init_logging(&log, cli.log_format);
    match cli::run(cli) {
        Ok(()) => ExitCode::from(cli::exit::SUCCESS),
        Err(failure) => {
            eprintln!("contactsyncd: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// Libraries whose own chatter is only interesting from warn up.
const QUIET: &str = "rusqlite_migration=warn,grammers_mtsender=warn,grammers_client=warn,grammers_mtproto=warn,grammers_session=warn";

/// journald when systemd connected stderr to the journal (or `log.target = "journald"`),
/// else text (or JSON with `--log-format json`) on stderr. `CONTACTSYNCD_LOG` / `RUST_LOG`
/// override `log.level`.
fn init_logging(log: &contactsyncd::config::LogConfig, format: cli::LogFormat) {
    use contactsyncd::config::LogTarget;
    use tracing_subscriber::prelude::*;
    contactsyncd::phone::set_show_personal_data(log.show_personal_data);
    let level = std::env::var("CONTACTSYNCD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| format!("{},{QUIET}", log.level));
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = match log.target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if journald && let Ok(layer) = tracing_journald::layer() {
        tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init();
        return;
    }
    match format {
        cli::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        cli::LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
}

// glibc malloc was a quarter of `inspect`'s time on a 100,000-card export (many small,
// short-lived allocations per card); mimalloc is the usual remedy.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
