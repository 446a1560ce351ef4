//! One full pass: scan the sources, plan per account, write the outbox, send what may be
//! sent, apply the results. `sync --once` runs it; the daemon will run it on every change.
//!
//! SQLite calls here are short and never held across an await: the pass owns the store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use tracing::Instrument;

use crate::backend::{
    ALL_RETRY_PAUSE, Backend, BackendError, BoxFuture, ImportResult, retry_delay,
};
use crate::config::Config;
use crate::contact_key;
use crate::diff::{self, DeleteLimits, Held, ImportReason, Names, Plan};
use crate::source;
use crate::store::{
    BatchKind, CutDone, DesiredOf, PlanRecord, RunRecord, SourceStatus, Store, StoreError,
    Timestamp,
};

/// Wall-clock time as the state records it; tests substitute their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    fn sleep(&self, seconds: u64) -> BoxFuture<'_, ()>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn sleep(&self, seconds: u64) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(Duration::from_secs(seconds)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncOptions {
    /// Apply deletions the guard would hold, and take an emptied source at its word.
    pub force_delete: bool,
    /// Plan and queue, send nothing.
    pub offline: bool,
    /// Server-requested pauses up to this many seconds (in total) are waited out.
    pub max_wait: u64,
    pub limits: DeleteLimits,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            force_delete: false,
            offline: false,
            max_wait: 60,
            limits: DeleteLimits::default(),
        }
    }
}

/// Why an account stopped sending before its queue was empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stop {
    Offline,
    Paused {
        until: Timestamp,
        reason: String,
    },
    LoginRequired {
        reason: String,
    },
    Network {
        error: String,
    },
    /// The account's configuration does not work (a base_url that answers 404): stopped
    /// until it changes.
    Setup {
        reason: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    pub new: usize,
    pub renames: usize,
    pub retries: usize,
    pub deletes: usize,
    pub forgotten: usize,
    pub waiting: usize,
    /// The earliest time one of the waiting numbers may be retried.
    #[serde(skip)]
    pub next_retry: Option<Timestamp>,
}

impl PlanCounts {
    /// Adds a later plan's counts (a pass that planned twice).
    pub fn absorb(&mut self, later: &Self) {
        self.new += later.new;
        self.renames += later.renames;
        self.retries += later.retries;
        self.deletes += later.deletes;
        self.forgotten += later.forgotten;
        self.waiting = later.waiting;
        self.next_retry = later.next_retry;
    }

    pub fn of(plan: &Plan) -> Self {
        let count = |reason| plan.imports.iter().filter(|i| i.reason == reason).count();
        Self {
            new: count(ImportReason::New),
            renames: count(ImportReason::Rename),
            retries: count(ImportReason::Retry),
            deletes: plan.deletes.len(),
            forgotten: plan.forget.len(),
            waiting: plan.waiting,
            next_retry: plan.next_retry,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccountReport {
    pub backend: String,
    pub planned: PlanCounts,
    pub held: Option<Held>,
    pub batches_sent: usize,
    pub imported: usize,
    pub saved: usize,
    pub retrying: usize,
    pub rejected: usize,
    /// Numbers the user had already saved (WhatsApp): recorded as theirs, left alone.
    pub by_user: usize,
    pub deleted: usize,
    /// Never-sent items dropped or replaced because the address book changed since they
    /// were queued (by planning, or by the check just before sending).
    pub superseded: usize,
    /// Numbers left to batches sent earlier whose results were not applied (reply lost,
    /// crash): they are sent again as they were, then planned again.
    #[serde(skip)]
    pub in_flight: usize,
    /// Batches still in the outbox after the pass.
    pub queued_batches: usize,
    pub stop: Option<Stop>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    pub files_seen: u64,
    pub files_read: u64,
    pub files_parsed: u64,
    pub files_deferred: u64,
    /// Stored files no longer there (in sources known to be complete).
    #[serde(skip)]
    pub files_removed: u64,
    pub contacts: usize,
    pub name_conflicts: usize,
    pub unknown_sources: Vec<SourceStatus>,
    /// Sources that hold no vCard file (a wrong path, most likely).
    pub empty_sources: Vec<SourceStatus>,
    /// Files that have ended inside a card for longer than the grace period.
    pub stalled_files: Vec<source::StalledFile>,
    /// Files that could not be read (permissions, not a regular file, no card in it).
    pub unreadable_files: Vec<source::UnreadableFile>,
    /// CardDAV sources whose server refused the user name or password this pass (they are
    /// among the unknown sources too): the user must fix them, a retry will not.
    pub refused_credentials: Vec<String>,
    /// CardDAV sources with OAuth 2.0 that need `contactsyncd authorize` (none yet, or
    /// revoked or expired: `invalid_grant`); among the unknown sources too.
    pub needs_authorization: Vec<String>,
    /// CardDAV sources whose server refused a fresh bearer token.
    pub refused_tokens: Vec<String>,
    pub accounts: Vec<AccountReport>,
}

impl AccountReport {
    /// Adds what applying an import batch (or the applied part of a cut one) did.
    fn count(&mut self, tally: &crate::store::ImportTally) {
        self.imported += tally.imported;
        self.saved += tally.saved;
        self.retrying += tally.retrying;
        self.rejected += tally.rejected;
        self.by_user += tally.by_user;
    }
}

impl PassReport {
    pub fn deletes_held(&self) -> bool {
        self.accounts.iter().any(|a| a.held.is_some())
    }

    /// Whether the pass read, dropped or queued anything (the daemon records only those).
    pub fn changed_anything(&self) -> bool {
        self.files_read > 0
            || self.files_deferred > 0
            || self.files_removed > 0
            || self.accounts.iter().any(|a| {
                let p = &a.planned;
                p.new + p.renames + p.retries + p.deletes + p.forgotten + a.superseded > 0
                    || a.batches_sent > 0
            })
    }

    pub fn login_required(&self) -> bool {
        self.accounts
            .iter()
            .any(|a| matches!(a.stop, Some(Stop::LoginRequired { .. })))
    }

    /// The first account stopped by its configuration, with the reason.
    pub fn setup_stop(&self) -> Option<(&str, &str)> {
        self.accounts.iter().find_map(|a| match &a.stop {
            Some(Stop::Setup { reason }) => Some((a.backend.as_str(), reason.as_str())),
            _ => None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The desired set as the diff wants it: E.164 → names. Takes the scan's changes apart
/// (`Scan::take_desired`).
pub fn desired_names(scan: &mut source::Scan) -> BTreeMap<String, Names> {
    into_names(scan.take_desired().contacts)
}

/// `desired_names` taking the set apart as it goes: each contact's key and name move over
/// (a card's name is shared by its numbers: the last one takes it), so the set and its copy
/// are never both whole (at 100k files, 45 MB and 26 MB).
fn into_names(
    contacts: BTreeMap<String, crate::contact::DesiredContact>,
) -> BTreeMap<String, Names> {
    contacts
        .into_iter()
        .map(|(e164, contact)| {
            let names = match std::sync::Arc::try_unwrap(contact.named_by.name) {
                Ok(name) => Names {
                    first: name.first,
                    last: name.last,
                },
                Err(shared) => Names {
                    first: shared.first.clone(),
                    last: shared.last.clone(),
                },
            };
            (e164, names)
        })
        .collect()
}

fn names_of(desired: &crate::contact::DesiredSet) -> BTreeMap<String, Names> {
    desired
        .contacts
        .iter()
        .map(|(e164, contact)| {
            (
                e164.clone(),
                Names {
                    first: contact.first_name().to_owned(),
                    last: contact.last_name().to_owned(),
                },
            )
        })
        .collect()
}

/// The desired names of some numbers as the state has them now (the stored cards of the
/// configured sources, by the name rule): what a queued item is checked against just
/// before it is sent.
pub fn desired_of(
    config: &Config,
) -> impl Fn(&Store, &BTreeSet<String>) -> Result<BTreeMap<String, Names>, StoreError> + Send + Sync + '_
{
    move |store, numbers| {
        Ok(names_of(&source::desired_for_numbers(
            config, store, numbers,
        )?))
    }
}

/// Plans for one account without writing anything (`contactsyncd plan`).
pub fn plan_for(
    store: &Store,
    backend: &str,
    desired: &BTreeMap<String, Names>,
    options: &SyncOptions,
    now: Timestamp,
) -> Result<(Plan, Option<Held>), SyncError> {
    plan_at_epoch(store, backend, desired, None, None, options, now)
        .map(|(plan, held, _)| (plan, held))
}

/// `plan_for`, with the state epoch its reads belong to. With `only`, `desired` holds just
/// those numbers and only their part of the mirror is compared (the quick pass).
fn plan_at_epoch(
    store: &Store,
    backend: &str,
    desired: &BTreeMap<String, Names>,
    only: Option<&BTreeSet<String>>,
    earlier_deletes: Option<&BTreeSet<String>>,
    options: &SyncOptions,
    now: Timestamp,
) -> Result<(Plan, Option<Held>, i64), SyncError> {
    // One snapshot: a sender applying a batch between the two reads would otherwise make
    // its numbers look neither synced nor in flight, and they would be queued twice.
    let (mirror, in_flight, remote, epoch, forgetting) = store.snapshot(|s| {
        let (mirror, remote) = match only {
            Some(numbers) => (
                s.mirror_of(backend, numbers)?,
                Some(s.remote_count(backend)?),
            ),
            None => (s.mirror(backend)?, None),
        };
        Ok((
            mirror,
            s.in_flight(backend)?,
            remote,
            s.plan_epoch()?,
            s.is_forgetting(backend)?,
        ))
    })?;
    // `remote forget-all`: the account is to hold nothing of ours, every deletion confirmed
    // by the user (no guard).
    let nothing = BTreeMap::new();
    let numbers_only;
    let desired = if forgetting {
        &nothing
    } else if !crate::backend::adds_by_username(backend)
        && desired
            .keys()
            .next_back()
            .is_some_and(|k| contact_key::is_username(k))
    {
        // Usernames sort last: only a book that has some pays for this copy.
        numbers_only = desired
            .iter()
            .filter(|(key, _)| !contact_key::is_username(key))
            .map(|(key, names)| (key.clone(), names.clone()))
            .collect();
        &numbers_only
    } else {
        desired
    };
    let mut plan = diff::diff(desired, &mirror, &in_flight, now);
    let remote = remote.unwrap_or_else(|| mirror.values().filter(|e| e.state.is_remote()).count());
    // Deletions the passes before this one queued in the window count as this pass's own,
    // and the contacts they removed as synced ones: as one pass over the same changes.
    let earlier = earlier_deletes.map_or(0, |earlier| {
        earlier
            .iter()
            .filter(|e164| plan.deletes.binary_search(e164).is_err())
            .count()
    });
    let held = if plan.deletes.is_empty() {
        None
    } else {
        diff::guard_count(
            plan.deletes.len() + earlier,
            remote + earlier,
            options.limits,
            options.force_delete || forgetting,
        )
    };
    if held.is_none() && !plan.deletes.is_empty() {
        rename_kept_persons(store, backend, &mut plan, &in_flight)?;
    }
    let held = held.map(|held| Held {
        deletes: plan.deletes.len(),
        reason: if earlier > 0 {
            format!(
                "counting the {earlier} deletions queued by the passes just before: {}",
                held.reason
            )
        } else {
            held.reason
        },
    });
    Ok((plan, held, epoch))
}

/// A delete that leaves its person to another of our keys (one Telegram user on a card by
/// number and on another by username) makes no call, but the person may still show the
/// deleted card's name, the one sent last: the staying key is renamed to its own names in
/// the same plan. Only once the delete is planned (not held), or every plan would rename.
fn rename_kept_persons(
    store: &Store,
    backend: &str,
    plan: &mut Plan,
    in_flight: &BTreeSet<String>,
) -> Result<(), SyncError> {
    for (key, names) in store.names_for_kept_persons(backend, &plan.deletes)? {
        let planned = plan.imports.binary_search_by(|i| i.e164.as_str().cmp(&key));
        if let (Err(at), false) = (planned, in_flight.contains(&key)) {
            plan.imports.insert(
                at,
                diff::PlannedImport {
                    e164: key,
                    names,
                    reason: diff::ImportReason::Rename,
                },
            );
        }
    }
    Ok(())
}

/// What planning depends on besides the files and the state: the program, the sources in
/// their order (the name rule), the default region and the accounts.
fn plan_key(config: &Config, accounts: &[AccountSpec]) -> String {
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    let inputs = serde_json::to_vec(&(
        env!("CARGO_PKG_VERSION"),
        &config.sources,
        config.default_region.map(|r| r.code()),
        names,
    ))
    .unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&inputs))
}

/// An account as planning needs it: its name and how many items go in one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    pub name: String,
    pub batch_size: usize,
}

impl AccountSpec {
    pub fn of(backend: &dyn Backend) -> Self {
        Self {
            name: backend.name().to_owned(),
            batch_size: backend.batch_size(),
        }
    }
}

/// What the CardDAV polls before a pass found.
#[derive(Debug, Default)]
pub struct CardDavPolls {
    /// Whether any source changed (or failed).
    pub changed: bool,
    /// Sources whose server refused the user name or password (401), or the token.
    pub refused_credentials: Vec<String>,
    /// Sources that need `contactsyncd authorize`.
    pub needs_authorization: Vec<String>,
    /// Sources whose server refused a fresh bearer token.
    pub refused_tokens: Vec<String>,
}

/// Asks every CardDAV source's server what changed and stores it, before a pass plans from
/// the state. A failure is recorded with the source (which then counts as unknown, and the
/// pass says why): it is not an error of the pass.
pub async fn poll_carddav_sources(
    config: &Config,
    store: &mut Store,
    now: Timestamp,
) -> CardDavPolls {
    let mut polls = CardDavPolls::default();
    source::carddav::forget_unconfigured(config, store);
    for source in config.sources.iter().filter(|s| s.is_carddav()) {
        match source::carddav::poll(source, store, now).await {
            Ok(outcome) => {
                outcome.log(&source.name);
                polls.changed |= outcome.changed;
            }
            // Recorded with the source; the pass's scan reports it as unknown.
            Err(err) => {
                tracing::debug!(source = %source.name, "CardDAV poll failed: {err}");
                match err {
                    source::carddav::CardDavError::NeedsAuthorization { .. } => {
                        polls.needs_authorization.push(source.name.clone());
                    }
                    source::carddav::CardDavError::TokenRefused { .. } => {
                        polls.refused_tokens.push(source.name.clone());
                    }
                    _ if err.needs_the_user() => {
                        polls.refused_credentials.push(source.name.clone())
                    }
                    _ => {}
                }
                polls.changed = true;
            }
        }
    }
    polls
}

/// One full pass: sync --once's reconcile, plan (`plan_pass`) and send, then the history.
pub async fn sync_once(
    config: &Config,
    store: &mut Store,
    backends: &mut [Box<dyn Backend>],
    clock: &dyn Clock,
    options: &SyncOptions,
) -> Result<PassReport, SyncError> {
    let started = clock.now();
    let mut polls = CardDavPolls::default();
    if !options.offline {
        polls = poll_carddav_sources(config, store, clock.now()).await;
        for backend in backends.iter_mut() {
            prepare_account(store, backend.as_ref())?;
            reconcile_if_due(store, backend.as_mut(), clock, options).await?;
        }
    }
    let accounts: Vec<AccountSpec> = backends
        .iter()
        .map(|b| AccountSpec::of(b.as_ref()))
        .collect();
    let mut report = plan_pass(config, store, &accounts, clock.now(), options)?;
    report.refused_credentials = polls.refused_credentials;
    report.needs_authorization = polls.needs_authorization;
    report.refused_tokens = polls.refused_tokens;
    let mut wait_budget = options.max_wait;
    let mut send = Sending {
        config,
        clock,
        options,
        wait_budget: &mut wait_budget,
    };
    send.accounts(store, backends, &mut report.accounts).await?;
    // Numbers left to a batch sent again as it was (its reply had been lost), or items
    // dropped just before sending, were not decided by the plan: plan once more, so that a
    // pass that ends quietly leaves the remote equal to the address book.
    let undecided = |a: &AccountReport| a.stop.is_none() && (a.in_flight > 0 || a.superseded > 0);
    if !options.offline && report.accounts.iter().any(undecided) {
        // A resend answered "already saved" (WhatsApp's 409) left the number unverified,
        // and its reconcile due at once: done before planning again, so that a number of
        // ours no card wants any more is known as ours and deleted in this pass, not the
        // next one.
        for backend in backends.iter_mut() {
            reconcile_if_due(store, backend.as_mut(), clock, options).await?;
        }
        let second = plan_pass(config, store, &accounts, clock.now(), options)?;
        for (account, again) in report.accounts.iter_mut().zip(second.accounts) {
            account.planned.absorb(&again.planned);
            account.superseded += again.superseded;
            account.held = again.held;
            account.queued_batches = again.queued_batches;
        }
        send.accounts(store, backends, &mut report.accounts).await?;
    }
    // A reconcile held by the safety limits is held like deletions.
    for account in &mut report.accounts {
        if account.held.is_none() {
            account.held = store.reconcile_hold(&account.backend)?;
        }
    }
    record_pass(store, "sync", &report, started, clock.now())?;
    Ok(report)
}

/// What `sync --once` sends with: one wait budget over all accounts and rounds.
struct Sending<'a> {
    config: &'a Config,
    clock: &'a dyn Clock,
    options: &'a SyncOptions,
    wait_budget: &'a mut u64,
}

impl Sending<'_> {
    /// Sends each account's queue into its report; an account a stop ended (a pause, a
    /// login required, the network) is not tried again in the same pass.
    async fn accounts(
        &mut self,
        store: &mut Store,
        backends: &mut [Box<dyn Backend>],
        reports: &mut [AccountReport],
    ) -> Result<(), SyncError> {
        let never = tokio_util::sync::CancellationToken::new();
        for (backend, account) in backends.iter_mut().zip(reports) {
            if account.stop.is_some() {
                continue;
            }
            send_account(
                self.config,
                store,
                backend.as_mut(),
                self.clock,
                self.options,
                self.wait_budget,
                &never,
                account,
            )
            .await?;
        }
        Ok(())
    }
}

/// The deletions the daemon's passes queued in the current window, per account. A change
/// pass plans only the numbers of the files it read: without this, many small passes would
/// each stay under a limit that one pass over the same changes trips. A pass is judged by
/// its own deletions together with the window's. An account's window opens with the first
/// deletion queued and closes at the first full pass that holds nothing once `span`
/// (`watch.rescan_interval`) has passed: a deletion counts until the full scan after it.
#[derive(Debug)]
pub struct DeletionWindow {
    span: Duration,
    accounts: BTreeMap<String, (std::time::Instant, BTreeSet<String>)>,
}

impl DeletionWindow {
    pub fn new(span: Duration) -> Self {
        Self {
            span,
            accounts: BTreeMap::new(),
        }
    }

    /// The numbers queued for deletion in the account's window so far.
    pub fn queued(&self, account: &str) -> Option<&BTreeSet<String>> {
        self.accounts.get(account).map(|(_, numbers)| numbers)
    }

    fn note_queued(&mut self, account: &str, deletes: &[String]) {
        if deletes.is_empty() {
            return;
        }
        let (_, numbers) = self
            .accounts
            .entry(account.to_owned())
            .or_insert_with(|| (std::time::Instant::now(), BTreeSet::new()));
        numbers.extend(deletes.iter().cloned());
    }

    fn full_pass_done(&mut self, account: &str, held: bool) {
        if !held
            && self
                .accounts
                .get(account)
                .is_some_and(|(opened, _)| opened.elapsed() >= self.span)
        {
            self.accounts.remove(account);
        }
    }
}

/// Scan every source, store what changed, plan every account and queue its batches.
/// Sends nothing: the report's accounts say what was planned and what is queued.
pub fn plan_pass(
    config: &Config,
    store: &mut Store,
    accounts: &[AccountSpec],
    now: Timestamp,
    options: &SyncOptions,
) -> Result<PassReport, SyncError> {
    plan_pass_in_window(
        config,
        store,
        accounts,
        now,
        options,
        &mut DeletionWindow::new(Duration::ZERO),
    )
}

/// `plan_pass` judging deletions together with those queued earlier in `window` (the
/// daemon's full pass).
pub fn plan_pass_in_window(
    config: &Config,
    store: &mut Store,
    accounts: &[AccountSpec],
    now: Timestamp,
    options: &SyncOptions,
    window: &mut DeletionWindow,
) -> Result<PassReport, SyncError> {
    let key = plan_key(config, accounts);
    if !options.force_delete
        && let Some(record) = store.current_plan_record(&key)?
        && let Some(planned_files) = record.files.as_deref()
        && let Some(files) = source::unchanged(config, store, planned_files)?
    {
        // Settled: nothing is held.
        for account in accounts {
            window.full_pass_done(&account.name, false);
        }
        return skipped_pass(store, accounts, record, files, now);
    }
    let mut scan = source::scan(
        config,
        store,
        now,
        options.force_delete,
        crate::phone::Purpose::Push,
    )?;
    store.apply_scan(&scan.changes, now)?;
    store.set_source_statuses(&scan.statuses)?;
    // Stored now, and the desired set has its names below: neither is held through the
    // planning (in a first pass each holds every phone of the book: a third of its peak).
    let files_removed = scan
        .changes
        .iter()
        .filter(|c| matches!(c.as_ref(), source::FileChange::Removed { .. }))
        .count() as u64;
    let mut desired_set = scan.take_desired();
    let name_conflicts = desired_set.conflicts.len();
    let desired = into_names(std::mem::take(&mut desired_set.contacts));
    drop(desired_set);
    for status in scan.unknown_sources() {
        // File names can be "Jane Doe +49 170 1234567.vcf": logs get them redacted, unless
        // log.show_personal_data; `status` has the full reason.
        let reason = if crate::phone::show_personal_data() {
            status.reason.as_deref()
        } else {
            scan.redacted_reason(&status.name)
        };
        let first_poll_pending = status
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with(source::carddav::NOT_POLLED_YET));
        if first_poll_pending {
            tracing::info!(
                source = %status.name,
                "CardDAV source not read from the server yet: it counts as unknown (nothing of it is deleted) until its first poll"
            );
            continue;
        }
        tracing::warn!(
            target: REPORTED,
            source = %status.name,
            reason = reason.unwrap_or_default(),
            "source counts as unknown: its contacts are kept and nothing of it is deleted (`contactsyncd status` has the full reason)"
        );
    }
    let mut report = PassReport {
        files_seen: scan.files_seen,
        files_read: scan.files_read,
        files_parsed: scan.files_parsed,
        files_deferred: scan.files_deferred,
        files_removed,
        contacts: desired.len(),
        name_conflicts,
        unknown_sources: scan.unknown_sources().cloned().collect(),
        empty_sources: scan.empty_sources().cloned().collect(),
        stalled_files: scan.stalled.clone(),
        unreadable_files: scan.unreadable.clone(),
        refused_credentials: Vec::new(),
        needs_authorization: Vec::new(),
        refused_tokens: Vec::new(),
        accounts: Vec::new(),
    };
    // The epoch the plans leave the state at, while each account's plan began where the
    // one before it left it (`None` once one did not: they were planned from two states).
    let mut left = Some(None);
    for account in accounts {
        let (plan, held, epoch) = plan_at_epoch(
            store,
            &account.name,
            &desired,
            None,
            window.queued(&account.name),
            options,
            now,
        )?;
        let held_now = held.is_some();
        if !held_now {
            window.note_queued(&account.name, &plan.deletes);
        }
        window.full_pass_done(&account.name, held_now);
        let (account_report, (queued_from, queued_to)) =
            queue_plan(store, account, None, plan, held, now)?;
        report.accounts.push(account_report);
        // The queueing's own changes (items superseded, mirror rows forgotten) move the
        // epoch, and are this plan's: the state it leaves is the one planned from, unless
        // something else moved the epoch between the plan's snapshot and the queueing.
        // Recording the snapshot's epoch made the pass after every such plan (after a
        // change of region: 1.2 s at 100k files) plan again, to find nothing.
        let leaves = if queued_from == epoch {
            queued_to
        } else {
            epoch
        };
        left = match left {
            Some(None) => Some(Some(leaves)),
            Some(Some(before)) if before == epoch => Some(Some(leaves)),
            _ => None,
        };
    }
    // Nothing held, no retry time ahead, every source known, and all accounts planned
    // from one state: planning again before something changes would give nothing new.
    let settled = report.unknown_sources.is_empty()
        && report
            .accounts
            .iter()
            .all(|a| a.held.is_none() && a.planned.next_retry.is_none());
    let epoch = match left {
        Some(None) => Some(store.plan_epoch()?),
        Some(Some(epoch)) => Some(epoch),
        None => None,
    };
    if settled && let Some(epoch) = epoch {
        let record = PlanRecord {
            contacts: report.contacts as u64,
            name_conflicts: report.name_conflicts as u64,
            files: store.settled_files_digest()?.map(|digest| digest.text()),
        };
        store.record_plan(&key, epoch, record)?;
    }
    Ok(report)
}

/// A pass that finds every file and the state as the last settled plan left them.
fn skipped_pass(
    store: &Store,
    accounts: &[AccountSpec],
    record: PlanRecord,
    files: u64,
    now: Timestamp,
) -> Result<PassReport, SyncError> {
    store.touch_source_statuses(now)?;
    let mut report = PassReport {
        files_seen: files,
        contacts: usize::try_from(record.contacts).unwrap_or(usize::MAX),
        name_conflicts: usize::try_from(record.name_conflicts).unwrap_or(usize::MAX),
        // Nothing changed, so a source that held no file still holds none.
        empty_sources: store
            .source_statuses()?
            .into_iter()
            .filter(|s| s.state == source::SOURCE_EMPTY)
            .collect(),
        ..PassReport::default()
    };
    for account in accounts {
        report.accounts.push(AccountReport {
            backend: account.name.clone(),
            queued_batches: store.open_batch_count(&account.name)?,
            ..AccountReport::default()
        });
    }
    tracing::debug!(files, "nothing changed since the last settled plan");
    Ok(report)
}

/// The daemon's change pass: reads just the paths the watcher named (written, added or
/// removed files) against their stored records, plans just the numbers they had or have,
/// and queues; deletions are judged with the others queued in `window`. `None` when the
/// events need the full pass (see `source::scan_changed`). The report counts only these
/// files and their contacts.
pub fn change_pass(
    config: &Config,
    store: &mut Store,
    accounts: &[AccountSpec],
    paths: &BTreeSet<std::path::PathBuf>,
    now: Timestamp,
    options: &SyncOptions,
    window: &mut DeletionWindow,
) -> Result<Option<PassReport>, SyncError> {
    let Some(changed) = source::scan_changed(config, store, paths)? else {
        return Ok(None);
    };
    store.apply_scan(&changed.changes, now)?;
    let mut report = PassReport {
        files_seen: paths.len() as u64,
        files_read: changed.files_read,
        files_parsed: changed.files_parsed,
        files_removed: changed.files_removed,
        ..PassReport::default()
    };
    if changed.numbers.is_empty() {
        return Ok(Some(report));
    }
    let desired_set = source::desired_for_numbers(config, store, &changed.numbers)?;
    let desired = names_of(&desired_set);
    // The contacts these files have now (history shows them for a change pass).
    report.contacts = desired.len();
    for account in accounts {
        let (plan, held, _) = plan_at_epoch(
            store,
            &account.name,
            &desired,
            Some(&changed.numbers),
            window.queued(&account.name),
            options,
            now,
        )?;
        if held.is_none() {
            window.note_queued(&account.name, &plan.deletes);
        }
        let (account_report, _) =
            queue_plan(store, account, Some(&changed.numbers), plan, held, now)?;
        report.accounts.push(account_report);
    }
    Ok(Some(report))
}

/// Makes the account's queue equal to its plan (deletions only when the guard lets them
/// go): never-sent items the plan no longer wants are superseded, new ones queued. `scope`:
/// the numbers the plan covers (`None`: all). The report counts only what the plan added;
/// with it, the plan epoch when the queueing began and when it ended.
fn queue_plan(
    store: &mut Store,
    account: &AccountSpec,
    scope: Option<&BTreeSet<String>>,
    mut plan: Plan,
    held: Option<Held>,
    now: Timestamp,
) -> Result<(AccountReport, (i64, i64)), SyncError> {
    let name = &account.name;
    store.ensure_account(name)?;
    if let Some(held) = &held {
        tracing::warn!(target: REPORTED, backend = %name, deletes = held.deletes, "deletions held: {}", held.reason);
    }
    let deletes: &[String] = if held.is_some() { &[] } else { &plan.deletes };
    let change = store.queue_plan(
        name,
        scope,
        &plan.imports,
        deletes,
        &plan.forget,
        account.batch_size,
        now,
    )?;
    if change.superseded > 0 {
        tracing::info!(
            backend = %name,
            items = change.superseded,
            "queued items the address book no longer wants were dropped before sending"
        );
    }
    // What was queued already (an earlier plan, not sent yet) is no news.
    let mut queued = change.already_queued_imports.iter();
    plan.imports
        .retain(|_| !queued.next().copied().unwrap_or(false));
    if held.is_none() {
        let mut queued = change.already_queued_deletes.iter();
        plan.deletes
            .retain(|_| !queued.next().copied().unwrap_or(false));
    }
    let report = AccountReport {
        backend: name.clone(),
        planned: PlanCounts::of(&plan),
        held,
        superseded: change.superseded,
        in_flight: change.in_flight,
        queued_batches: store.open_batch_count(name)?,
        ..AccountReport::default()
    };
    Ok((report, change.epochs))
}

/// Sends what the account has queued (unless offline), into its report.
#[allow(clippy::too_many_arguments)]
pub async fn send_account(
    config: &Config,
    store: &mut Store,
    backend: &mut dyn Backend,
    clock: &dyn Clock,
    options: &SyncOptions,
    wait_budget: &mut u64,
    cancel: &tokio_util::sync::CancellationToken,
    report: &mut AccountReport,
) -> Result<(), SyncError> {
    report.stop = if options.offline {
        Some(Stop::Offline)
    } else {
        let desired_of = desired_of(config);
        send_queue(
            store,
            &desired_of,
            backend,
            clock,
            wait_budget,
            cancel,
            report,
        )
        .await?
    };
    report.queued_batches = store.open_batch_count(backend.name())?;
    Ok(())
}

/// Writes a pass to the history and logs its summary.
pub fn record_pass(
    store: &Store,
    kind: &str,
    report: &PassReport,
    started: Timestamp,
    finished: Timestamp,
) -> Result<(), SyncError> {
    let mut run = RunRecord {
        kind: kind.into(),
        started_at: started,
        finished_at: Some(finished),
        files_seen: report.files_seen,
        files_parsed: report.files_parsed,
        files_deferred: report.files_deferred,
        contacts: report.contacts as u64,
        ..RunRecord::default()
    };
    let mut notes: Vec<String> = Vec::new();
    for a in &report.accounts {
        run.imports_planned += (a.planned.new + a.planned.renames + a.planned.retries) as u64;
        run.deletes_planned += a.planned.deletes as u64;
        run.deletes_held += a.held.as_ref().map_or(0, |h| h.deletes as u64);
        run.batches_sent += a.batches_sent as u64;
        run.imported += a.imported as u64;
        run.saved += a.saved as u64;
        run.retrying += a.retrying as u64;
        run.rejected += a.rejected as u64;
        run.deleted += a.deleted as u64;
        if a.superseded > 0 {
            notes.push(format!(
                "{}: {} queued items superseded (the address book changed before they were sent)",
                a.backend, a.superseded
            ));
        }
        if let Some(held) = &a.held {
            notes.push(format!("{}: deletions held: {}", a.backend, held.reason));
        }
        if let Some(stop) = &a.stop {
            notes.push(format!("{}: {}", a.backend, describe_stop(stop)));
        }
    }
    for status in &report.unknown_sources {
        notes.push(format!(
            "source {} unknown: {}",
            status.name,
            status.reason.as_deref().unwrap_or_default()
        ));
    }
    run.outcome = Some(
        if report.login_required() {
            "login required"
        } else if report.setup_stop().is_some() {
            "configuration error"
        } else if report.accounts.iter().any(|a| a.stop.is_some()) {
            "queued"
        } else if report.deletes_held() {
            "deletes held"
        } else {
            "ok"
        }
        .to_owned(),
    );
    run.message = (!notes.is_empty()).then(|| notes.join("; "));
    store.record_run(&run)?;
    tracing::info!(
        kind,
        contacts = report.contacts,
        files_parsed = report.files_parsed,
        imported = run.imported,
        deleted = run.deleted,
        outcome = run.outcome.as_deref().unwrap_or_default(),
        "{kind} pass: {}",
        summarize_run(&run)
    );
    Ok(())
}

/// The log target of warnings a pass's report says too (deletions held, a source unknown,
/// the queue kept): the daemon's log has them; a command on a terminal, whose report is
/// printed, leaves them out, so each is said once.
pub const REPORTED: &str = "contactsyncd::reported";

/// `1 batch`, `2 batches`.
pub fn plural(n: impl TryInto<u64>, one: &str, many: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// What a recorded pass did, in its kind's terms (counts only: fit for logs): a `change`
/// pass the files an event named and the contacts it planned, a `send` pass what it sent,
/// a full pass (`sync`, `scan`) both.
pub fn summarize_run(run: &RunRecord) -> String {
    let files = {
        let mut text = plural(run.files_seen, "file", "files");
        let mut details = vec![format!("{} parsed", run.files_parsed)];
        if run.files_deferred > 0 {
            // The pass summary's and status's words (issue 25.6).
            details.push(plural(
                run.files_deferred,
                "deferred file",
                "deferred files",
            ));
        }
        text.push_str(&format!(" ({})", details.join(", ")));
        text
    };
    let planned = {
        let mut text = format!(
            "planned {}, {}",
            plural(run.imports_planned, "import", "imports"),
            plural(run.deletes_planned, "delete", "deletes")
        );
        if run.deletes_held > 0 {
            text.push_str(&format!(" ({} held)", run.deletes_held));
        }
        text
    };
    let sent = {
        let mut text = format!(
            "sent {}: {} imported",
            plural(run.batches_sent, "batch", "batches"),
            run.imported
        );
        if run.saved > 0 {
            text.push_str(&format!(
                ", {} saved (without a Telegram account)",
                run.saved
            ));
        }
        for (n, what) in [
            (run.retrying, "retrying"),
            (run.rejected, "rejected"),
            (run.deleted, "deleted"),
        ] {
            if n > 0 {
                text.push_str(&format!(", {n} {what}"));
            }
        }
        text
    };
    match run.kind.as_str() {
        "change" => format!(
            "{} changed: {}; {planned}",
            files,
            plural(run.contacts, "contact", "contacts")
        ),
        "send" => sent,
        _ => format!(
            "{files}, {}; {planned}; {sent}",
            plural(run.contacts, "contact", "contacts")
        ),
    }
}

pub fn describe_stop(stop: &Stop) -> String {
    match stop {
        Stop::Offline => "offline: the work stays queued".to_owned(),
        Stop::Paused { until, reason } => {
            format!("paused until {} ({reason})", format_time(*until))
        }
        Stop::LoginRequired { reason } => {
            format!("login required ({reason}): run `contactsyncd login`")
        }
        Stop::Network { error } => format!("network trouble ({error}); the queue is kept"),
        Stop::Setup { reason } => {
            format!("stopped: {reason}; nothing is sent until the configuration changes")
        }
    }
}

/// `2026-12-01 14:05:00 UTC`, for people.
pub fn format_time(timestamp: Timestamp) -> String {
    let days = timestamp.div_euclid(86_400);
    let seconds = timestamp.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm): no time crate needed for UTC dates.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let day_of_year = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// Before an account's pass: its row exists, and a stop for a configuration that has changed
/// since is lifted.
pub fn prepare_account(store: &Store, backend: &dyn Backend) -> Result<(), SyncError> {
    store.ensure_account(backend.name())?;
    store.note_setup(backend.name(), backend.setup_key().as_deref())?;
    // No session here: nothing is claimed or sent, the pass stops with "login required".
    if let Some(reason) = backend.login_required()
        && !store
            .account(backend.name())?
            .is_some_and(|a| a.auth_required)
    {
        store.set_auth_required(backend.name(), &reason)?;
    }
    Ok(())
}

/// Compares the mirror with the remote list when the account's interval has passed (and on
/// the first pass), never while the account is paused or needs a login. The list's hash is
/// kept in the state (`sync --once` benefits from "not modified" too) and dropped by every
/// batch sent. A wait error pauses the account (persisted), like one on any other call;
/// other failures are logged and leave the sync to go on. Returns how many contacts were
/// found deleted in the app.
pub async fn reconcile_if_due(
    store: &mut Store,
    backend: &mut dyn Backend,
    clock: &dyn Clock,
    options: &SyncOptions,
) -> Result<usize, SyncError> {
    let Some((interval, reimport)) = backend.reconcile_policy() else {
        return Ok(0);
    };
    let name = backend.name().to_owned();
    let now = clock.now();
    // A held reconcile is tried again at once when forced (like held deletions).
    let forced = options.force_delete && store.reconcile_hold(&name)?.is_some();
    // A last reconcile later than now means the clock was set back (a wrong RTC at boot,
    // corrected by NTP): due now, not once the clock has caught up (maybe years).
    let due = forced
        || store.last_reconcile(&name)?.is_none_or(|last| {
            now < last || now - last >= i64::try_from(interval).unwrap_or(i64::MAX)
        });
    let account = store.account(&name)?;
    let blocked = store.setup_error(&name)?.is_some()
        || account
            .as_ref()
            .is_some_and(|a| a.auth_required || a.paused_until.is_some_and(|u| u > now));
    if !due || blocked {
        return Ok(0);
    }
    backend.set_remote_hash(store.remote_hash(&name)?);
    match backend.remote_contacts().await {
        Ok(Some(remote)) if backend.adopts_existing().is_some() => {
            let policy = crate::store::ListingPolicy {
                reimport,
                adopt_existing: backend.adopts_existing() == Some(true),
                limits: options.limits,
                force: options.force_delete,
            };
            let outcome = store.apply_listing(&name, &remote, policy, now)?;
            if let Some(held) = &outcome.held {
                tracing::warn!(target: REPORTED, backend = %name, missing = held.deletes, "reconcile held: {}", held.reason);
            } else if outcome.gone + outcome.confirmed + outcome.users + outcome.dropped > 0 {
                tracing::info!(
                    backend = %name,
                    gone = outcome.gone,
                    confirmed = outcome.confirmed,
                    users = outcome.users,
                    dropped = outcome.dropped,
                    "reconciled with the phone's contact list"
                );
            }
            // What the planner must look at again: numbers to add again or maybe to rename.
            return Ok(outcome.gone + outcome.dropped + outcome.confirmed);
        }
        Ok(Some(remote)) => {
            let hash = backend.remote_hash();
            let policy = crate::store::ListingPolicy {
                reimport,
                adopt_existing: false,
                limits: options.limits,
                force: options.force_delete,
            };
            let gone = store.apply_reconcile_with_hash(&name, &remote, policy, hash, now)?;
            if let Some(held) = store.reconcile_hold(&name)? {
                tracing::warn!(target: REPORTED, backend = %name, missing = held.deletes, "reconcile held: {}", held.reason);
            }
            if gone > 0 {
                tracing::info!(backend = %name, contacts = gone, reimport, "contacts deleted in the app");
            }
            return Ok(gone);
        }
        Ok(None) => store.note_reconcile(&name, now)?,
        Err(BackendError::Auth(reason)) => store.set_auth_required(&name, &reason)?,
        Err(BackendError::Setup(reason)) => {
            tracing::error!(backend = %name, "stopped until the configuration changes: {reason}");
            store.set_setup_error(&name, &reason)?;
        }
        Err(BackendError::Wait { seconds, reason }) => {
            pause_account(store, &name, clock.now(), seconds, &reason)?
        }
        Err(err) => tracing::warn!(backend = %name, "reconciliation skipped: {err}"),
    }
    Ok(0)
}

/// A wait error (FLOOD_WAIT, 429) on any call: nothing of the account is called before
/// it ends, across restarts.
fn pause_account(
    store: &Store,
    name: &str,
    now: Timestamp,
    seconds: u64,
    reason: &str,
) -> Result<(), SyncError> {
    let until = now.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX / 2));
    store.set_pause(name, until, reason)?;
    tracing::info!(backend = %name, seconds, "server asks to wait: {reason}; the account pauses");
    Ok(())
}

/// Sends the account's open batches in order until the queue is empty or something stops it.
async fn send_queue(
    store: &mut Store,
    desired_of: &DesiredOf<'_>,
    backend: &mut dyn Backend,
    clock: &dyn Clock,
    wait_budget: &mut u64,
    cancel: &tokio_util::sync::CancellationToken,
    report: &mut AccountReport,
) -> Result<Option<Stop>, SyncError> {
    let name = backend.name().to_owned();
    // Stopping lets the request in flight finish; the next batch waits for the next start.
    while !cancel.is_cancelled() {
        let Some(account) = store.account(&name)? else {
            return Ok(None);
        };
        if let Some(reason) = store.setup_error(&name)? {
            return Ok(Some(Stop::Setup { reason }));
        }
        if account.auth_required {
            return Ok(Some(Stop::LoginRequired {
                reason: account
                    .last_error
                    .unwrap_or_else(|| "session not valid".into()),
            }));
        }
        let now = clock.now();
        if let Some(until) = account.paused_until.filter(|u| *u > now) {
            let reason = account.pause_reason.unwrap_or_default();
            let wait = u64::try_from(until - now).unwrap_or(u64::MAX);
            if wait > *wait_budget {
                return Ok(Some(Stop::Paused { until, reason }));
            }
            tracing::info!(backend = %name, seconds = wait, "waiting out a short pause: {reason}");
            tracing::info!(target: crate::progress::TARGET, backend = %name, seconds = wait, reason = %reason, "waiting");
            *wait_budget -= wait;
            tokio::select! {
                () = clock.sleep(wait) => continue,
                () = cancel.cancelled() => break,
            }
        }
        let Some(claimed) = store.claim_next_batch(&name, clock.now(), desired_of)? else {
            return Ok(None);
        };
        report.superseded += claimed.superseded;
        let Some(batch) = claimed.batch else {
            return Ok(None);
        };
        report.batches_sent += 1;
        let span = tracing::info_span!(
            "batch",
            backend = %name,
            id = batch.id,
            kind = batch.kind.as_str(),
            items = batch.items.len()
        );
        span.in_scope(|| {
            tracing::debug!(
                phones = ?batch.items.iter().map(|i| crate::phone::for_debug_log(&i.e164)).collect::<Vec<_>>(),
                "sending"
            )
        });
        let started = std::time::Instant::now();
        // What is left of a batch the other side stopped part-way (`Store::apply_cut`).
        let mut left = None;
        let result = match batch.kind {
            BatchKind::Import => {
                let numbers = batch.items.iter().map(|i| i.e164.clone()).collect();
                let mirrored = store.mirror_of(&name, &numbers)?;
                let items: Vec<_> = batch
                    .items
                    .iter()
                    .map(|item| {
                        let by_username = contact_key::is_username(&item.e164);
                        let user = if by_username {
                            store.known_user(&name, &item.e164)?
                        } else {
                            None
                        };
                        let fallback_username =
                            if !by_username && crate::backend::adds_by_username(&name) {
                                store.fallback_username(&item.e164)?
                            } else {
                                None
                            };
                        Ok(crate::batch::ImportItem {
                            client_id: item.client_id.unwrap_or_default(),
                            e164: item.e164.clone(),
                            names: item.names.clone(),
                            rename: mirrored
                                .get(&item.e164)
                                .is_some_and(|m| m.state.is_remote()),
                            user,
                            fallback_username,
                        })
                    })
                    .collect::<Result<_, StoreError>>()?;
                let answer = backend.import(&items).instrument(span.clone()).await;
                crate::failpoint::hit(crate::failpoint::AFTER_SEND);
                match answer {
                    Ok(results) => {
                        let tally =
                            store.apply_import(&batch, &results, clock.now(), &retry_delay)?;
                        report.count(&tally);
                        if tally.retrying > 0 && tally.retrying == batch.items.len() {
                            // Every contact came back for retry: the account hit its limit.
                            store.set_pause(
                                &name,
                                clock.now() + ALL_RETRY_PAUSE,
                                "every contact of a batch came back for retry (import limit)",
                            )?;
                        }
                        Ok(())
                    }
                    Err(cut) => {
                        let unknown = batch
                            .items
                            .iter()
                            .filter(|i| cut.unknown.contains(&i.client_id.unwrap_or_default()))
                            .map(|i| i.e164.clone())
                            .collect();
                        let (tally, rest) = store.apply_cut(
                            &batch,
                            &CutDone::Imported(&cut.done),
                            &unknown,
                            clock.now(),
                            &retry_delay,
                        )?;
                        report.count(&tally);
                        left = rest;
                        // A number saved by importContacts whose fallback username was not
                        // added (the wait refused its addContact, or came before it): asked
                        // again once the pause is over.
                        let username_left: Vec<String> = items
                            .iter()
                            .filter(|item| {
                                item.fallback_username.is_some()
                                    && cut.done.iter().any(|(id, result)| {
                                        *id == item.client_id
                                            && matches!(result, ImportResult::Saved { .. })
                                    })
                            })
                            .map(|item| item.e164.clone())
                            .collect();
                        if !username_left.is_empty() {
                            let seconds = match &cut.error {
                                BackendError::Wait { seconds, .. } => *seconds,
                                _ => 0,
                            };
                            store.hold_for_retry(
                                &name,
                                &username_left,
                                clock
                                    .now()
                                    .saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX / 2)),
                                "the username is asked again after the pause",
                            )?;
                        }
                        Err(cut.error)
                    }
                }
            }
            BatchKind::Delete => {
                let keys: Vec<String> = batch.items.iter().map(|i| i.e164.clone()).collect();
                // A contact who changed their number is not removed by the old string: ours
                // with a known user go by user too, and a username contact only by user.
                let users = store.users_by_key(&name, &keys)?;
                // A person another card wants under another key stays: their number here
                // is done without a call.
                let kept = store.kept_under_another_key(&name, &keys)?;
                let phones: Vec<String> = keys
                    .iter()
                    .filter(|key| !contact_key::is_username(key) && !kept.contains(*key))
                    .cloned()
                    .collect();
                // A number deleted by phone is done only when it has no user left to delete.
                let done_by_phone = |deleted: &[String]| -> BTreeSet<String> {
                    deleted
                        .iter()
                        .filter(|key| !users.contains_key(*key))
                        .chain(&kept)
                        .cloned()
                        .collect()
                };
                let by_phone = if phones.is_empty() {
                    Ok(())
                } else {
                    backend.delete(&phones).instrument(span.clone()).await
                };
                let cut = match by_phone {
                    Err(cut) => Some((
                        done_by_phone(&cut.done),
                        cut.unknown.into_iter().collect(),
                        cut.error,
                    )),
                    Ok(()) if users.is_empty() => None,
                    Ok(()) => {
                        let by_user: Vec<(i64, i64)> = users.values().copied().collect();
                        match backend
                            .delete_users(&by_user)
                            .instrument(span.clone())
                            .await
                        {
                            Ok(()) => None,
                            // The numbers are gone; a user refused (a stale access hash) is
                            // not worth holding them for.
                            Err(BackendError::Permanent(reason)) => {
                                tracing::warn!(backend = %name, users = by_user.len(), "delete by user refused: {reason}");
                                None
                            }
                            // deleteByPhones was applied: the numbers without a user are
                            // done. Those with one are half done (gone by number, maybe not
                            // by user, whose number may have changed): they go out again as
                            // they were, unchecked, like a call without an answer. A
                            // username contact goes only by user: refused by a wait, or
                            // unknown without an answer.
                            Err(error) => {
                                let mut unknown: BTreeSet<String> = phones
                                    .iter()
                                    .filter(|key| users.contains_key(*key))
                                    .cloned()
                                    .collect();
                                if matches!(error, BackendError::Temporary(_)) {
                                    unknown.extend(users.keys().cloned());
                                }
                                Some((done_by_phone(&phones), unknown, error))
                            }
                        }
                    }
                };
                crate::failpoint::hit(crate::failpoint::AFTER_SEND);
                match cut {
                    None => {
                        store.apply_delete(&batch, clock.now())?;
                        report.deleted += keys.len();
                        Ok(())
                    }
                    Some((done, unknown, error)) => {
                        let (_, rest) = store.apply_cut(
                            &batch,
                            &CutDone::Deleted(&done),
                            &unknown,
                            clock.now(),
                            &retry_delay,
                        )?;
                        report.deleted += done.len();
                        left = rest;
                        Err(error)
                    }
                }
            }
        };
        span.in_scope(|| {
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                ok = result.is_ok(),
                "batch done"
            )
        });
        tracing::info!(
            target: crate::progress::TARGET,
            backend = %name,
            batches = report.batches_sent,
            queued = store.open_batch_count(&name)?,
            "sent"
        );
        match result {
            Ok(()) => store.note_success(&name, clock.now())?,
            // What was applied before the refusal is recorded (`apply_cut`), the rest is
            // back in the outbox: only then is the pause recorded.
            Err(BackendError::Wait { seconds, reason }) => {
                pause_account(store, &name, clock.now(), seconds, &reason)?;
            }
            Err(BackendError::Auth(reason)) => {
                store.set_auth_required(&name, &reason)?;
                tracing::error!(backend = %name, "login required: {reason}; run `contactsyncd login`");
            }
            Err(BackendError::Setup(reason)) => {
                store.set_setup_error(&name, &reason)?;
                tracing::error!(backend = %name, "stopped until the configuration changes: {reason}");
            }
            Err(BackendError::Temporary(error)) => {
                store.note_error(&name, &error)?;
                tracing::warn!(target: REPORTED, backend = %name, "temporary failure, the queue is kept: {error}");
                return Ok(Some(Stop::Network { error }));
            }
            // A refusal names an item only when the batch has one: held alone (a day, or
            // until its card changes). A bigger batch is split until the refused item is
            // alone; the others go through. Safer than holding the whole batch (one bad
            // number would stop every other) or sending it again as it is (refused again).
            Err(BackendError::Permanent(reason)) => {
                let Some(refused) = left else { continue };
                if refused.items.len() > 1 {
                    store.split_batch(&refused, &reason, clock.now())?;
                    tracing::info!(backend = %name, items = refused.items.len(), "batch refused as a whole, split to find the item: {reason}");
                } else {
                    let tally = store.reject_batch(&refused, &reason, clock.now())?;
                    report.rejected += tally.rejected;
                    let phone = refused
                        .items
                        .first()
                        .map(|i| crate::phone::redact(&i.e164))
                        .unwrap_or_default();
                    tracing::warn!(backend = %name, kind = refused.kind.as_str(), %phone, "refused, tried again in a day or when the card changes: {reason}");
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::epoch(0, "1970-01-01 00:00:00 UTC")]
    #[case::leap_day(951_782_400, "2000-02-29 00:00:00 UTC")]
    #[case::this_year(1_796_134_000, "2026-12-01 14:06:40 UTC")]
    fn formats_times(#[case] timestamp: i64, #[case] expected: &str) {
        assert_eq!(format_time(timestamp), expected);
    }

    /// Issue 16.13: each kind of pass says what it did, with plurals right.
    #[rstest]
    #[case::change(RunRecord { kind: "change".into(), files_seen: 1, files_parsed: 1, contacts: 1, imports_planned: 1, ..RunRecord::default() },
        "1 file (1 parsed) changed: 1 contact; planned 1 import, 0 deletes")]
    #[case::send(RunRecord { kind: "send".into(), batches_sent: 1, imported: 1, saved: 2, ..RunRecord::default() },
        "sent 1 batch: 1 imported, 2 saved (without a Telegram account)")]
    #[case::sync(RunRecord { kind: "sync".into(), files_seen: 4, files_parsed: 4, contacts: 4, imports_planned: 4, batches_sent: 1, imported: 4, ..RunRecord::default() },
        "4 files (4 parsed), 4 contacts; planned 4 imports, 0 deletes; sent 1 batch: 4 imported")]
    #[case::deferred(RunRecord { kind: "sync".into(), files_seen: 2, files_parsed: 1, files_deferred: 1, contacts: 1, ..RunRecord::default() },
        "2 files (1 parsed, 1 deferred file), 1 contact; planned 0 imports, 0 deletes; sent 0 batches: 0 imported")]
    fn passes_are_summarized_by_kind(#[case] run: RunRecord, #[case] expected: &str) {
        assert_eq!(summarize_run(&run), expected);
    }
}
