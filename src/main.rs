use std::process::ExitCode;

use clap::Parser;
use contactsyncd::cli::{self, Cli};

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    // Logging comes before the command; a broken configuration is the command's to report.
    let log = contactsyncd::config::load(cli.config.as_deref())
        .map(|c| c.log)
        .unwrap_or_default();
    init_logging(&log, cli.log_format, &cli.command);
    match cli::run(cli) {
        Ok(()) => ExitCode::from(cli::exit::SUCCESS),
        Err(failure) => {
            contactsyncd::progress::clear();
            eprintln!("contactsyncd: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// Libraries whose own chatter is only interesting from warn up (the daemon's log).
const QUIET: &str = "rusqlite_migration=warn,grammers_mtsender=warn,grammers_client=warn,grammers_mtproto=warn,grammers_session=warn";
/// On a terminal the command says what happened in its own words (`login` without a
/// network: "cannot reach Telegram"); the library's raw lines ("WARN grammers_mtsender:
/// read 0 bytes") would only say it again, worse. `CONTACTSYNCD_LOG` still shows them.
const QUIET_INTERACTIVE: &str = "rusqlite_migration=warn,grammers_mtsender=off,grammers_client=off,grammers_mtproto=off,grammers_session=off";

/// journald when systemd connected stderr to the journal (or `log.target = "journald"`),
/// else text (or JSON with `--log-format json`) on stderr. `CONTACTSYNCD_LOG` / `RUST_LOG`
/// override `log.level`. The daemon (`run`) logs from `log.level` on; the interactive
/// commands only warnings and errors unless `CONTACTSYNCD_LOG` asks for more: their result
/// is their output. `sync` on a terminal draws its progress instead.
fn init_logging(
    log: &contactsyncd::config::LogConfig,
    format: cli::LogFormat,
    command: &cli::Command,
) {
    use contactsyncd::config::LogTarget;
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    contactsyncd::phone::set_show_personal_data(log.show_personal_data);
    let interactive = !matches!(command, cli::Command::Run);
    let level = std::env::var("CONTACTSYNCD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| {
            if interactive {
                format!(
                    "warn,{QUIET_INTERACTIVE},{}=off",
                    contactsyncd::sync::REPORTED
                )
            } else {
                format!("{},{QUIET}", log.level)
            }
        });
    // Progress events are for the progress line only, never log lines.
    let progress_off = format!(",{}=off", contactsyncd::progress::TARGET);
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{level}{progress_off}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info{progress_off}")));
    let progress = matches!(command, cli::Command::Sync(_)) && std::io::stderr().is_terminal();
    let journald = match log.target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if journald && let Ok(layer) = tracing_journald::layer() {
        tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .init();
        return;
    }
    match format {
        cli::LogFormat::Json => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .with(progress.then(contactsyncd::progress::layer))
            .init(),
        cli::LogFormat::Text => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .with(progress.then(contactsyncd::progress::layer))
            .init(),
    }
}

/// Transparent huge pages off for this process (the allocator asks for none either, see
/// Cargo.toml): with them, an allocator page that holds a few live objects keeps a whole
/// 2 MiB page resident. The idle daemon after a first pass of 50,000 files held 107 MB with
/// them and 42 MB without (benches/daemon_latency.py); the pass's CPU time was the same.
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's flag.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

// glibc malloc was a quarter of `inspect`'s time on a 100,000-card export (many small,
// short-lived allocations per card); mimalloc is the usual remedy.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
