//! `contactsyncd run`: watch the sources, plan after each (debounced) change and on timers,
//! send from one task per account, answer signals, and keep systemd informed.
//!
//! Tasks, all on one `TaskTracker` under one `CancellationToken`:
//! - watcher: owns the notify debouncer, forwards the paths of changes to the planner,
//!   and sets its watches up again when a source appears or vanishes;
//! - planner: scans, plans and queues, on a blocking thread since it reads files and writes
//!   SQLite: a change pass (`sync::change_pass`) reads only the paths the watcher named;
//!   the full pass (`sync::plan_pass`) looks at everything, at start, on the
//!   `rescan_interval` timer, after a watcher overflow, a reload or a CardDAV change, and
//!   when a change pass leaves the decision to it;
//! - one sender per account: reconciles when due and sends the account's queue; a FLOOD_WAIT
//!   or a dead network pauses only that account, never the planning;
//! - one CardDAV poller per CardDAV source: asks the server what changed every
//!   `poll_interval` (one request when nothing did, and no write) and, when something did,
//!   has the planner run a full pass over the cache;
//! - watchdog: `WATCHDOG=1` while the runtime is alive.
//!
//! Each holds its own SQLite connection; the main one holds the state lock. SIGHUP swaps the
//! planner, senders and watcher for ones built from the new configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer_opt};
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{self, Backend};
use crate::config::{self, Config};
use crate::source;
use crate::store::Store;
use crate::sync::{
    self, AccountReport, AccountSpec, DeletionWindow, PassReport, Stop, SyncOptions, SystemClock,
    describe_stop, format_time,
};

/// What the watcher tells the planner.
#[derive(Debug)]
enum Change {
    /// These paths were written, created, renamed or removed.
    Paths(Vec<PathBuf>),
    /// Events may have been lost (overflow, a watch set up again): look at everything.
    Everything,
}

/// A paused or failing account gets another chance on this beat; a planned retry too.
const RETRY_BEAT: Duration = Duration::from_secs(60);

/// Runs until SIGTERM or SIGINT.
pub async fn run(config_path: Option<PathBuf>, config: Config) -> anyhow::Result<()> {
    // Held for the daemon's life: one writer per state directory.
    let _lock = Store::open_for_writing(&config.state_dir).context("opening the state")?;
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let board = Arc::new(StatusBoard::default());
    // Planner passes run on blocking threads that a reload cannot stop: the pass of the old
    // configuration may still run when the new planner starts. One lock over every
    // generation's passes makes sure only one planner ever plans at a time.
    let planning = Arc::new(std::sync::Mutex::new(()));

    let mut watchdog_usec = 0;
    if sd_notify::watchdog_enabled(false, &mut watchdog_usec) {
        let period = Duration::from_micros(watchdog_usec / 2);
        tracker.spawn(watchdog(period, shutdown.clone()));
    }
    let mut generation = Generation::start(&config, &tracker, &shutdown, &board, &planning)?;
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("starting: first pass"),
    ]);
    tracing::info!(
        sources = config.sources.len(),
        backends = generation.accounts,
        "contactsyncd running"
    );
    let mut shutdown_timeout = config.shutdown_timeout_duration();
    let mut current = config;

    while let Some(signal) = signals.next().await {
        if signal != SIGHUP {
            break;
        }
        notify(&[
            NotifyState::Reloading,
            NotifyState::MonotonicUsec(monotonic_usec()),
        ]);
        match config::load(config_path.as_deref()) {
            Ok(new) => {
                generation.stop(shutdown_timeout).await;
                generation = match Generation::start(&new, &tracker, &shutdown, &board, &planning) {
                    Ok(started) => {
                        tracing::info!("configuration reloaded");
                        current = new;
                        started
                    }
                    Err(err) => {
                        // E.g. out of inotify watches: the old configuration worked.
                        tracing::error!(
                            "reload failed, going on with the previous configuration: {err:#}"
                        );
                        Generation::start(&current, &tracker, &shutdown, &board, &planning)?
                    }
                };
                shutdown_timeout = current.shutdown_timeout_duration();
            }
            Err(err) => {
                tracing::error!("reload refused, keeping the running configuration: {err}")
            }
        }
        notify(&[NotifyState::Ready]);
    }

    notify(&[NotifyState::Stopping]);
    tracing::info!("stopping: letting the request in flight finish");
    shutdown.cancel();
    tracker.close();
    tokio::select! {
        finished = tokio::time::timeout(shutdown_timeout, tracker.wait()) => {
            if finished.is_err() {
                tracing::warn!(seconds = shutdown_timeout.as_secs(), "shutdown_timeout passed: abandoning the request in flight");
            }
        }
        Some(_) = signals.next() => tracing::warn!("second signal: stopping now"),
    }
    Ok(())
}

/// The tasks built from one configuration; SIGHUP replaces them.
struct Generation {
    cancel: CancellationToken,
    handles: Vec<JoinHandle<()>>,
    accounts: usize,
}

impl Generation {
    fn start(
        config: &Config,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        board: &Arc<StatusBoard>,
        planning: &Arc<std::sync::Mutex<()>>,
    ) -> anyhow::Result<Self> {
        let cancel = shutdown.child_token();
        let config = Arc::new(config.clone());
        let (changes_tx, changes) = mpsc::unbounded_channel();
        // Set up before READY=1: a source that cannot be watched is reported at start.
        let watcher = Watcher::start(&config, changes_tx.clone())?;
        let backends = backend::configured(&config);
        let accounts: Vec<AccountSpec> = backends
            .iter()
            .map(|b| AccountSpec::of(b.as_ref()))
            .collect();
        board.reset(&accounts);
        let replan = Arc::new(Notify::new());
        // Senders wait for this generation's first plan: what is queued was checked against
        // the state of the previous configuration (another region or filter, say).
        let (first_plan_done, first_plan) = tokio::sync::watch::channel(false);
        let mut wakes = Vec::new();
        let mut handles = Vec::new();
        for backend in backends {
            let wake = Arc::new(Notify::new());
            wakes.push(Arc::clone(&wake));
            let store = Store::open_connection(&config.state_dir)
                .context("opening the state for a sender")?;
            let sender = Sender {
                config: Arc::clone(&config),
                first_plan: first_plan.clone(),
                backend,
                store,
                wake,
                replan: Arc::clone(&replan),
                board: Arc::clone(board),
            };
            handles.push(tracker.spawn(sender.run(cancel.clone())));
        }
        let planner = Planner {
            config: Arc::clone(&config),
            store: Some(
                Store::open_connection(&config.state_dir)
                    .context("opening the state for the planner")?,
            ),
            accounts: accounts.clone(),
            wakes,
            board: Arc::clone(board),
            planning: Arc::clone(planning),
            first_plan_done,
            window: Arc::new(Mutex::new(DeletionWindow::new(
                config.watch.rescan_interval_duration(),
            ))),
        };
        handles.push(tracker.spawn(planner.run(changes, replan, cancel.clone())));
        let mut store = Store::open_connection(&config.state_dir)
            .context("opening the state for the CardDAV cache")?;
        source::carddav::forget_unconfigured(&config, &mut store);
        drop(store);
        for source in config.sources.iter().filter(|s| s.is_carddav()) {
            let store = Store::open_connection(&config.state_dir)
                .context("opening the state for a CardDAV poller")?;
            handles.push(tracker.spawn(poll_carddav(
                source.clone(),
                store,
                changes_tx.clone(),
                cancel.clone(),
            )));
        }
        handles.push(tracker.spawn(watch(watcher, config, changes_tx, cancel.clone())));
        Ok(Self {
            cancel,
            handles,
            accounts: accounts.len(),
        })
    }

    /// Stops the tasks, letting a request in flight finish within `timeout`.
    async fn stop(self, timeout: Duration) {
        self.cancel.cancel();
        let aborts: Vec<_> = self.handles.iter().map(|h| h.abort_handle()).collect();
        let all = futures_util::future::join_all(self.handles);
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("reload: abandoning the request in flight");
            aborts.iter().for_each(|a| a.abort());
        }
    }
}

/// Scans, plans and queues. The store moves to a blocking thread for each pass and back.
struct Planner {
    config: Arc<Config>,
    store: Option<Store>,
    accounts: Vec<AccountSpec>,
    /// One per sender: rung when its account has something new queued.
    wakes: Vec<Arc<Notify>>,
    board: Arc<StatusBoard>,
    /// Held for every pass, across reloads: one planner at a time.
    planning: Arc<std::sync::Mutex<()>>,
    /// Set after the first pass of this configuration.
    first_plan_done: tokio::sync::watch::Sender<bool>,
    /// The deletions queued since the window opened: change passes are judged together.
    window: Arc<Mutex<DeletionWindow>>,
}

/// Which pass to run.
enum Scope {
    Paths(BTreeSet<PathBuf>),
    Everything,
}

impl Planner {
    async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<Change>,
        replan: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        let rescan_every = self.config.watch.rescan_interval_duration();
        let mut rescan = tokio::time::interval_at(Instant::now() + rescan_every, rescan_every);
        rescan.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut retry = tokio::time::interval_at(Instant::now() + RETRY_BEAT, RETRY_BEAT);
        retry.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut waiting = false;
        let mut scope = Some(Scope::Everything);
        loop {
            if let Some(scope) = scope.take() {
                match self.pass(scope).await {
                    // A change pass planned only its own numbers: what waited before waits.
                    Ok((full, waits)) => waiting = waits || (waiting && !full),
                    Err(err) => {
                        tracing::error!("sync pass failed: {err:#}");
                        self.board.note_failure(&format!("{err:#}"));
                    }
                }
                self.first_plan_done.send_replace(true);
            }
            scope = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                Some(change) = changes.recv() => Some(Self::gather(change, &mut changes)),
                () = replan.notified() => Some(Scope::Everything),
                _ = rescan.tick() => Some(Scope::Everything),
                _ = retry.tick(), if waiting => Some(Scope::Everything),
            };
        }
    }

    /// Everything that arrived together, as one scope.
    fn gather(first: Change, more: &mut mpsc::UnboundedReceiver<Change>) -> Scope {
        let mut paths = BTreeSet::new();
        let mut everything = false;
        let mut take = |change| match change {
            Change::Paths(list) => paths.extend(list),
            Change::Everything => everything = true,
        };
        take(first);
        while let Ok(change) = more.try_recv() {
            take(change);
        }
        if everything {
            Scope::Everything
        } else {
            Scope::Paths(paths)
        }
    }

    /// A change pass over the named paths when that is enough, else the full pass.
    /// Returns whether the full pass ran, and whether some number waits for a retry time.
    async fn pass(&mut self, scope: Scope) -> anyhow::Result<(bool, bool)> {
        // A pass that panicked took its connection with it: open another.
        let mut store = match self.store.take() {
            Some(store) => store,
            None => Store::open_connection(&self.config.state_dir)
                .context("opening the state for the planner")?,
        };
        let config = Arc::clone(&self.config);
        let accounts = self.accounts.clone();
        let wakes = self.wakes.clone();
        let board = Arc::clone(&self.board);
        let planning = Arc::clone(&self.planning);
        let window = Arc::clone(&self.window);
        let (store, result) = tokio::task::spawn_blocking(move || {
            let _only_planner = match planning.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::WouldBlock) => {
                    tracing::info!(
                        "a pass of the previous configuration is still running: waiting for it"
                    );
                    planning.lock().unwrap_or_else(|p| p.into_inner())
                }
                // A pass that panicked poisoned the lock; the next pass is on its own.
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            };
            let mut window = window.lock().unwrap_or_else(|p| p.into_inner());
            let result = planner_pass(
                &config,
                &mut store,
                &accounts,
                &wakes,
                &board,
                &mut window,
                scope,
            );
            (store, result)
        })
        .await
        .context("the planner thread failed")?;
        self.store = Some(store);
        result
    }
}

/// One pass of the planner. Returns whether it was the full pass, and whether some number
/// waits for a retry time.
fn planner_pass(
    config: &Config,
    store: &mut Store,
    accounts: &[AccountSpec],
    wakes: &[Arc<Notify>],
    board: &StatusBoard,
    window: &mut DeletionWindow,
    scope: Scope,
) -> anyhow::Result<(bool, bool)> {
    let options = SyncOptions {
        limits: config.safety,
        ..SyncOptions::default()
    };
    let clock = SystemClock;
    let wake_queued = |report: &PassReport| {
        for (wake, account) in wakes.iter().zip(&report.accounts) {
            if account.queued_batches > 0 {
                wake.notify_one();
            }
        }
    };
    let waits = |report: &PassReport| {
        report
            .accounts
            .iter()
            .any(|a| a.planned.next_retry.is_some())
    };
    if let Scope::Paths(paths) = &scope {
        let started = sync::Clock::now(&clock);
        let timer = std::time::Instant::now();
        let changed = sync::change_pass(config, store, accounts, paths, started, &options, window)?;
        if let Some(report) = changed {
            wake_queued(&report);
            tracing::debug!(
                files = paths.len(),
                parsed = report.files_parsed,
                removed = report.files_removed,
                ms = timer.elapsed().as_secs_f64() * 1e3,
                "change pass queued"
            );
            if report.changed_anything() {
                sync::record_pass(store, "change", &report, started, sync::Clock::now(&clock))?;
            }
            board.changed(&report);
            return Ok((false, waits(&report)));
        }
    }
    let started = sync::Clock::now(&clock);
    let timer = std::time::Instant::now();
    let report = sync::plan_pass_in_window(config, store, accounts, started, &options, window)?;
    wake_queued(&report);
    tracing::debug!(
        files = report.files_seen,
        parsed = report.files_parsed,
        ms = timer.elapsed().as_secs_f64() * 1e3,
        "full pass queued"
    );
    if report.changed_anything() {
        sync::record_pass(store, "scan", &report, started, sync::Clock::now(&clock))?;
    }
    board.planned(&report);
    Ok((true, waits(&report)))
}

/// Sends one account's queue; reconciles it with the remote list when due.
struct Sender {
    config: Arc<Config>,
    first_plan: tokio::sync::watch::Receiver<bool>,
    backend: Box<dyn Backend>,
    store: Store,
    wake: Arc<Notify>,
    /// Rung when a reconciliation found contacts deleted in the app (they need planning).
    replan: Arc<Notify>,
    board: Arc<StatusBoard>,
}

impl Sender {
    async fn run(mut self, cancel: CancellationToken) {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = self.first_plan.wait_for(|done| *done) => {}
        }
        // A reconcile_interval under the retry beat is honoured too (the round reconciles
        // when due); a paused account is not called whatever the beat (see `sync`).
        let every = self
            .backend
            .reconcile_policy()
            .map_or(RETRY_BEAT, |(seconds, _)| {
                RETRY_BEAT.min(Duration::from_secs(seconds.max(1)))
            });
        let mut beat = tokio::time::interval_at(Instant::now() + every, every);
        beat.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            if let Err(err) = self.round(&cancel).await {
                tracing::error!(backend = %self.backend.name(), "sending failed: {err}");
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = self.wake.notified() => {}
                _ = beat.tick() => {}
            }
        }
    }

    async fn round(&mut self, cancel: &CancellationToken) -> Result<(), sync::SyncError> {
        let clock = SystemClock;
        let name = self.backend.name().to_owned();
        let options = SyncOptions {
            // A reconcile that finds too many of ours gone is held like deletions.
            limits: self.config.safety,
            ..SyncOptions::default()
        };
        sync::prepare_account(&self.store, self.backend.as_ref())?;
        if sync::reconcile_if_due(&mut self.store, self.backend.as_mut(), &clock, &options).await?
            > 0
        {
            self.replan.notify_one();
        }
        let started = sync::Clock::now(&clock);
        let mut account = AccountReport {
            backend: name,
            ..AccountReport::default()
        };
        let mut wait_budget = options.max_wait;
        sync::send_account(
            &self.config,
            &mut self.store,
            self.backend.as_mut(),
            &clock,
            &options,
            &mut wait_budget,
            cancel,
            &mut account,
        )
        .await?;
        // A reconcile held by the safety limits shows like held deletions.
        account.held = self.store.reconcile_hold(&account.backend)?;
        self.board.sent(&account);
        if account.superseded > 0 {
            // Items dropped just before sending: their numbers need a plan of their own.
            self.replan.notify_one();
        }
        if account.batches_sent > 0 {
            let report = PassReport {
                accounts: vec![account],
                ..PassReport::default()
            };
            sync::record_pass(
                &self.store,
                "send",
                &report,
                started,
                sync::Clock::now(&clock),
            )?;
        }
        Ok(())
    }
}

async fn watchdog(period: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => notify(&[NotifyState::Watchdog]),
        }
    }
}

/// Polls one CardDAV source: at once, then every `poll_interval` (longer when the server
/// asked to wait). A poll that stored something (cards, a token, a failure or its end) has
/// the planner run a full pass; one that found nothing new wrote nothing.
async fn poll_carddav(
    source: config::SourceConfig,
    mut store: Store,
    changes: mpsc::UnboundedSender<Change>,
    cancel: CancellationToken,
) {
    let interval = Duration::from_secs(source.carddav.as_ref().map_or(300, |c| c.poll_interval));
    let mut poller = source::carddav::Poller::new(source.clone());
    let mut last_failure: Option<String> = None;
    loop {
        let now = sync::Clock::now(&SystemClock);
        let polled = tokio::select! {
            () = cancel.cancelled() => return,
            polled = poller.poll(&mut store, now) => polled,
        };
        let mut wait = interval;
        match polled {
            Ok(outcome) => {
                outcome.log(&source.name);
                if last_failure.take().is_some() {
                    tracing::info!(source = %source.name, "the CardDAV server answers again");
                }
                if outcome.changed {
                    let _ = changes.send(Change::Everything);
                }
            }
            Err(err) => {
                let text = err.to_string();
                // Logged once per reason, not every poll; the message names no card or user.
                if last_failure.as_deref() != Some(&text) {
                    tracing::warn!(source = %source.name, "CardDAV poll failed, the source counts as unknown and nothing of it is deleted: {text}");
                    let _ = changes.send(Change::Everything);
                }
                if let Some(seconds) = err.retry_after() {
                    wait = wait.max(Duration::from_secs(seconds));
                }
                last_failure = Some(text);
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Keeps the watches current: a source that appeared or vanished is watched again.
async fn watch(
    mut watcher: Watcher,
    config: Arc<Config>,
    changes: mpsc::UnboundedSender<Change>,
    cancel: CancellationToken,
) {
    let every = config.watch.rescan_interval_duration();
    let mut check = tokio::time::interval_at(Instant::now() + every, every);
    check.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = check.tick() => {
                if watcher.is_stale(&config) {
                    tracing::info!("a source appeared or vanished: watching it again");
                    match Watcher::start(&config, changes.clone()) {
                        Ok(new) => watcher = new,
                        Err(err) => tracing::warn!("file watching: {err:#}"),
                    }
                    let _ = changes.send(Change::Everything);
                }
            }
        }
    }
}

/// What STATUS= says, kept by the planner and the senders.
#[derive(Debug, Default)]
struct StatusBoard {
    state: Mutex<PassReport>,
    /// Stalled files already logged: each is logged once while it stays stalled.
    stalled_logged: Mutex<BTreeSet<PathBuf>>,
}

impl StatusBoard {
    fn reset(&self, accounts: &[AccountSpec]) {
        let mut state = self.lock();
        state.accounts = accounts
            .iter()
            .map(|a| AccountReport {
                backend: a.name.clone(),
                ..AccountReport::default()
            })
            .collect();
    }

    fn planned(&self, report: &PassReport) {
        let _ = self.log_stalled(report);
        let line = {
            let mut state = self.lock();
            state.contacts = report.contacts;
            state.unknown_sources = report.unknown_sources.clone();
            state.empty_sources = report.empty_sources.clone();
            state.stalled_files = report.stalled_files.clone();
            for planned in &report.accounts {
                if let Some(account) = state
                    .accounts
                    .iter_mut()
                    .find(|a| a.backend == planned.backend)
                {
                    account.held = planned.held.clone();
                    account.queued_batches = planned.queued_batches;
                }
            }
            status_line(&state)
        };
        notify(&[NotifyState::Status(&line)]);
    }

    /// After a change pass: its accounts' queues, and deletions it held (the counts and
    /// the sources' states are the full pass's).
    fn changed(&self, report: &PassReport) {
        let line = {
            let mut state = self.lock();
            for planned in &report.accounts {
                if let Some(account) = state
                    .accounts
                    .iter_mut()
                    .find(|a| a.backend == planned.backend)
                {
                    if planned.held.is_some() {
                        account.held = planned.held.clone();
                    }
                    account.queued_batches = planned.queued_batches;
                }
            }
            status_line(&state)
        };
        notify(&[NotifyState::Status(&line)]);
    }

    fn sent(&self, sent: &AccountReport) {
        let line = {
            let mut state = self.lock();
            if let Some(account) = state
                .accounts
                .iter_mut()
                .find(|a| a.backend == sent.backend)
            {
                account.queued_batches = sent.queued_batches;
                account.stop = sent.stop.clone();
                if sent.held.is_some() {
                    account.held = sent.held.clone();
                }
            }
            status_line(&state)
        };
        notify(&[NotifyState::Status(&line)]);
    }

    /// A file that ends inside a card past the grace period is logged once (redacted),
    /// and again only after it was complete or gone in between.
    /// Returns how many files were logged now.
    fn log_stalled(&self, report: &PassReport) -> usize {
        let mut logged = self
            .stalled_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        logged.retain(|path| report.stalled_files.iter().any(|f| f.path == *path));
        let mut now = 0;
        for file in &report.stalled_files {
            if logged.insert(file.path.clone()) {
                now += 1;
                let shown = if crate::phone::show_personal_data() {
                    file.path.display().to_string()
                } else {
                    file.redacted.clone()
                };
                tracing::warn!(
                    source = %file.source,
                    file = %shown,
                    minutes = source::INCOMPLETE_GRACE_SECS / 60,
                    "a file has ended inside a card for longer than the grace period: an export that stopped half-way? Its previous cards stay in effect until it is complete (`contactsyncd status` names it)"
                );
            }
        }
        now
    }

    fn note_failure(&self, error: &str) {
        notify(&[NotifyState::Status(&format!("last pass failed: {error}"))]);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PassReport> {
        // A panic elsewhere leaves counts that are still worth showing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
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
    // Counted per source name, never by path: `status` names the files.
    if !report.stalled_files.is_empty() {
        let mut sources: Vec<&str> = report
            .stalled_files
            .iter()
            .map(|f| f.source.as_str())
            .collect();
        sources.dedup();
        parts.push(format!(
            "{} incomplete for over {} min in {} (an export that stopped half-way?)",
            sync::plural(report.stalled_files.len(), "file", "files"),
            source::INCOMPLETE_GRACE_SECS / 60,
            sources.join(", ")
        ));
    }
    for empty in &report.empty_sources {
        parts.push(format!("source {} holds no vCard files", empty.name));
    }
    // Named (the configuration's names, not paths): `status` says why.
    match report.unknown_sources.as_slice() {
        [] => {}
        [one] => parts.push(format!("source {} unknown, kept as it was", one.name)),
        several => parts.push(format!(
            "sources {} unknown, kept as they were",
            several
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
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
    fn start(config: &Config, changes: mpsc::UnboundedSender<Change>) -> anyhow::Result<Self> {
        let dirs: Vec<PathBuf> = config
            .sources
            .iter()
            .filter(|s| !s.is_carddav() && !s.path.is_file())
            .map(|s| s.path.clone())
            .collect();
        let files: Vec<PathBuf> = config
            .sources
            .iter()
            .filter(|s| !s.is_carddav() && s.path.is_file())
            .map(|s| s.path.clone())
            .collect();
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                // Reading is not changing: our own scan opens the directory (and changed
                // files), which inotify reports as access; reacting to it would loop.
                // A single file is watched through its directory: other files there are noise.
                let paths: Vec<PathBuf> = events
                    .iter()
                    .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)))
                    .flat_map(|e| e.paths.iter())
                    .filter(|path| {
                        dirs.iter().any(|d| path.starts_with(d)) || files.iter().any(|f| f == *path)
                    })
                    .cloned()
                    .collect();
                let overflow = events.iter().any(|e| e.need_rescan());
                if overflow {
                    let _ = changes.send(Change::Everything);
                } else if !paths.is_empty() {
                    let _ = changes.send(Change::Paths(paths));
                }
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!("file watching: {}", watch_error(&error));
                }
                // Something may have been missed: rescan.
                let _ = changes.send(Change::Everything);
            }
        };
        let debounce = config.watch.debounce_duration();
        // The debouncer looks for settled events once per tick; its default (a quarter of
        // the debounce) would add up to 125 ms to every change. 100 wake-ups a second cost
        // 3–4 ms of CPU per second (benches/daemon_latency.py: 0.03–0.04 s in 10 idle s).
        let tick = (debounce / 50).clamp(Duration::from_millis(2), Duration::from_millis(10));
        let tick = tick.min(debounce.max(Duration::from_millis(1)));
        let existing = config
            .sources
            .iter()
            .filter(|s| !s.is_carddav())
            .map(|s| s.path.exists())
            .collect();
        if config.watch.poll {
            let notify_config =
                notify::Config::default().with_poll_interval(debounce.max(Duration::from_secs(1)));
            let mut debouncer = new_debouncer_opt::<_, notify::PollWatcher, _>(
                debounce,
                Some(tick),
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
        let mut debouncer = new_debouncer_opt::<_, notify::RecommendedWatcher, _>(
            debounce,
            Some(tick),
            handler,
            notify_debouncer_full::RecommendedCache::new(),
            notify::Config::default(),
        )
        .context("starting the file watcher")?;
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
            .filter(|s| !s.is_carddav())
            .map(|s| s.path.exists())
            .ne(self.existing.iter().copied())
    }
}

/// A directory tree recursively; a single file through its parent directory.
fn watch_sources(
    config: &Config,
    mut watch: impl FnMut(&Path, RecursiveMode) -> notify::Result<()>,
) {
    // A CardDAV source has nothing on disk to watch: its poller tells the planner.
    for source in config.sources.iter().filter(|s| !s.is_carddav()) {
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
            tracing::warn!(source = %source.name, "cannot watch the source: {}", watch_error(&err));
        }
    }
}

/// notify's error text names the paths it is about, which can be files named after people:
/// logs get the error alone unless `log.show_personal_data`.
fn watch_error(error: &notify::Error) -> String {
    if crate::phone::show_personal_data() || error.paths.is_empty() {
        return error.to_string();
    }
    let what = match &error.kind {
        notify::ErrorKind::Io(io) => io.to_string(),
        notify::ErrorKind::Generic(text) => text.clone(),
        other => format!("{other:?}"),
    };
    format!("{what} (about {} path(s))", error.paths.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stalled(source: &str, path: &str) -> source::StalledFile {
        source::StalledFile {
            source: source.into(),
            path: PathBuf::from(path),
            redacted: "J….vcf".into(),
        }
    }

    #[test]
    fn a_stalled_file_is_logged_once_and_in_the_status_line() {
        let board = StatusBoard::default();
        let mut report = PassReport {
            contacts: 6,
            stalled_files: vec![stalled("phone", "/book/Jane.vcf")],
            ..PassReport::default()
        };
        assert_eq!(board.log_stalled(&report), 1);
        assert_eq!(board.log_stalled(&report), 0, "once while it stays stalled");
        assert_eq!(
            status_line(&report),
            "6 contacts · 1 file incomplete for over 10 min in phone (an export that stopped half-way?)"
        );
        report.stalled_files.clear();
        assert_eq!(board.log_stalled(&report), 0);
        report.stalled_files = vec![stalled("phone", "/book/Jane.vcf")];
        assert_eq!(
            board.log_stalled(&report),
            1,
            "stalled again after a complete read"
        );
    }

    #[test]
    fn an_empty_source_is_named_in_the_status_line() {
        let report = PassReport {
            empty_sources: vec![crate::store::SourceStatus {
                name: "book".into(),
                ..Default::default()
            }],
            ..PassReport::default()
        };
        assert_eq!(
            status_line(&report),
            "0 contacts · source book holds no vCard files"
        );
    }

    #[test]
    fn watch_errors_leave_out_the_paths_they_are_about() {
        let error = notify::Error::io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "denied",
        ))
        .add_path(PathBuf::from("/book/Jane Doe +49 170 1234567.vcf"));
        assert!(error.to_string().contains("Jane"), "notify names the path");
        assert_eq!(watch_error(&error), "denied (about 1 path(s))");
        let no_path = notify::Error::generic("inotify limit reached");
        assert_eq!(watch_error(&no_path), "inotify limit reached");
    }
}
