//! `contactsyncd run`: watch the sources, run a sync pass after each (debounced) change and
//! on timers, answer signals, and keep systemd informed.
//!
//! One loop owns the state and the backends; the watcher and the signal stream feed it
//! through channels. A pass in flight when SIGTERM arrives may finish within
//! `shutdown_timeout`; a second SIGTERM abandons it at once (transactions keep the state
//! consistent either way).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer, new_debouncer_opt};
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::mpsc;

use crate::backend::{self, Backend};
use crate::config::{self, Config};
use crate::store::Store;
use crate::sync::{self, PassReport, Stop, SyncOptions, SystemClock, describe_stop, format_time};

/// Why the loop wakes up.
enum Wake {
    Changed,
    Timer,
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config_path: Option<PathBuf>, mut config: Config) -> anyhow::Result<()> {
    let mut store = Store::open_for_writing(&config.state_dir).context("opening the state")?;
    let mut backends = backend::configured(&config);
    let (changes_tx, mut changes) = mpsc::unbounded_channel::<()>();
    let mut watcher = Watcher::start(&config, changes_tx.clone())?;
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;

    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec / 2));
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first pass runs at once anyway: the timers start one period from now.
    let every =
        |period: Duration| tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut rescan = every(Duration::from_secs(config.watch.rescan_interval));
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // A paused or failing account gets another chance on this beat.
    let mut retry = every(Duration::from_secs(60));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    notify(&[
        NotifyState::Ready,
        NotifyState::Status("starting: first pass"),
    ]);
    tracing::info!(
        sources = config.sources.len(),
        backends = backends.len(),
        "contactsyncd running"
    );
    let mut wake = Some(Wake::Changed);
    loop {
        if let Some(reason) = wake.take() {
            if matches!(reason, Wake::Changed) {
                // Let a burst of writes settle before reading (the debouncer already
                // waited; this drains what arrived meanwhile).
                while changes.try_recv().is_ok() {}
            }
            let options = SyncOptions {
                limits: config.safety,
                ..SyncOptions::default()
            };
            let pass = sync::sync_once(&config, &mut store, &mut backends, &SystemClock, &options);
            tokio::pin!(pass);
            let outcome = loop {
                tokio::select! {
                    result = &mut pass => break Some(result),
                    Some(signal) = signals.next() => {
                        if signal == SIGHUP {
                            continue;
                        }
                        notify(&[NotifyState::Stopping]);
                        tracing::info!("stopping: letting the request in flight finish");
                        let deadline = Duration::from_secs(config.shutdown_timeout);
                        tokio::select! {
                            _ = tokio::time::timeout(deadline, &mut pass) => {}
                            Some(_) = signals.next() => tracing::warn!("second signal: stopping now"),
                        }
                        break None;
                    }
                };
            };
            match outcome {
                None => return Ok(()),
                Some(Ok(report)) => notify(&[NotifyState::Status(&status_line(&report))]),
                Some(Err(err)) => {
                    tracing::error!("sync pass failed: {err}");
                    notify(&[NotifyState::Status(&format!("last pass failed: {err}"))]);
                }
            }
        }
        tokio::select! {
            Some(()) = changes.recv() => wake = Some(Wake::Changed),
            _ = rescan.tick() => {
                if watcher.is_stale(&config) {
                    tracing::info!("a source appeared or vanished: watching it again");
                    watcher = Watcher::start(&config, changes_tx.clone())?;
                }
                wake = Some(Wake::Timer);
            }
            _ = retry.tick() => {
                if store_has_queue(&store, &backends) {
                    wake = Some(Wake::Timer);
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
            Some(signal) = signals.next() => match signal {
                SIGHUP => {
                    notify(&[NotifyState::Reloading, NotifyState::MonotonicUsec(monotonic_usec())]);
                    match config::load(config_path.as_deref()) {
                        Ok(new) => {
                            tracing::info!("configuration reloaded");
                            config = new;
                            backends = backend::configured(&config);
                            watcher = Watcher::start(&config, changes_tx.clone())?;
                            wake = Some(Wake::Changed);
                        }
                        Err(err) => tracing::error!("reload refused, keeping the running configuration: {err}"),
                    }
                    notify(&[NotifyState::Ready]);
                }
                _ => {
                    notify(&[NotifyState::Stopping]);
                    tracing::info!("stopping");
                    drop(watcher);
                    return Ok(());
                }
            },
        }
    }
}

/// Whether some account still has work queued (a pause may have ended).
fn store_has_queue(store: &Store, backends: &[Box<dyn Backend>]) -> bool {
    backends
        .iter()
        .any(|b| store.has_open_batches(b.name()).unwrap_or(true))
}

/// systemd's one-line STATUS=, e.g. `1,234 contacts · telegram: 12 queued, paused until …`.
pub fn status_line(report: &PassReport) -> String {
    let mut parts = vec![format!("{} contacts", report.contacts)];
    for account in &report.accounts {
        let mut text = format!("{}: {} queued", account.backend, account.queued_batches);
        match &account.stop {
            Some(Stop::Paused { until, reason }) => {
                text.push_str(&format!(
                    ", paused until {} ({reason})",
                    format_time(*until)
                ));
            }
            Some(stop) => text.push_str(&format!(", {}", describe_stop(stop))),
            None => {}
        }
        if account.held.is_some() {
            text.push_str(", deletions held");
        }
        parts.push(text);
    }
    if !report.unknown_sources.is_empty() {
        parts.push(format!(
            "{} source(s) unknown",
            report.unknown_sources.len()
        ));
    }
    parts.join(" · ")
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {err}");
    }
}

/// CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1.
fn monotonic_usec() -> i128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and nothing else.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } == 0;
    if ok {
        i128::from(now.tv_sec) * 1_000_000 + i128::from(now.tv_nsec) / 1_000
    } else {
        0
    }
}

/// notify + debouncer, watching each source: a directory tree recursively, a single file
/// through its parent directory filtered by name (exporters replace files by rename).
struct Watcher {
    _debouncer: Box<dyn std::any::Any + Send>,
    /// Which sources existed when the watches were set up: one that appears or disappears
    /// (a drive mounted, a folder restored) needs its watch set up again.
    existing: Vec<bool>,
}

impl Watcher {
    fn start(config: &Config, changes: mpsc::UnboundedSender<()>) -> anyhow::Result<Self> {
        let dirs: Vec<PathBuf> = config
            .sources
            .iter()
            .filter(|s| !s.path.is_file())
            .map(|s| s.path.clone())
            .collect();
        let files: Vec<PathBuf> = config
            .sources
            .iter()
            .filter(|s| s.path.is_file())
            .map(|s| s.path.clone())
            .collect();
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                // Reading is not changing: our own scan opens the directory (and changed
                // files), which inotify reports as access; reacting to it would loop.
                // A single file is watched through its directory: other files there are noise.
                let relevant = events
                    .iter()
                    .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)))
                    .flat_map(|e| e.paths.iter())
                    .any(|path| {
                        dirs.iter().any(|d| path.starts_with(d)) || files.iter().any(|f| f == path)
                    });
                if relevant {
                    let _ = changes.send(());
                }
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!("file watching: {error}");
                }
                // Something may have been missed: rescan.
                let _ = changes.send(());
            }
        };
        let debounce = Duration::from_millis(config.watch.debounce_ms);
        let existing = config.sources.iter().map(|s| s.path.exists()).collect();
        if config.watch.poll {
            let notify_config =
                notify::Config::default().with_poll_interval(debounce.max(Duration::from_secs(1)));
            let mut debouncer = new_debouncer_opt::<_, notify::PollWatcher, _>(
                debounce,
                None,
                handler,
                notify_debouncer_full::RecommendedCache::new(),
                notify_config,
            )
            .context("starting the polling file watcher")?;
            watch_sources(config, |path, mode| debouncer.watch(path, mode));
            return Ok(Self {
                _debouncer: Box::new(debouncer),
                existing,
            });
        }
        let mut debouncer =
            new_debouncer(debounce, None, handler).context("starting the file watcher")?;
        watch_sources(config, |path, mode| debouncer.watch(path, mode));
        Ok(Self {
            _debouncer: Box::new(debouncer),
            existing,
        })
    }

    fn is_stale(&self, config: &Config) -> bool {
        config
            .sources
            .iter()
            .map(|s| s.path.exists())
            .ne(self.existing.iter().copied())
    }
}

/// A directory tree recursively; a single file through its parent directory.
fn watch_sources(
    config: &Config,
    mut watch: impl FnMut(&Path, RecursiveMode) -> notify::Result<()>,
) {
    for source in &config.sources {
        let (path, mode) = if source.path.is_dir() {
            (source.path.clone(), RecursiveMode::Recursive)
        } else {
            (
                source.path.parent().unwrap_or(Path::new("/")).to_owned(),
                RecursiveMode::NonRecursive,
            )
        };
        if let Err(err) = watch(&path, mode) {
            // A missing source (unmounted drive) is picked up again by the periodic rescan.
            tracing::warn!(source = %source.name, "cannot watch {}: {err}", path.display());
        }
    }
}
