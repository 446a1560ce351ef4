//! One full pass: scan the sources, plan per account, write the outbox, send what may be
//! sent, apply the results. `sync --once` runs it; the daemon will run it on every change.
//!
//! SQLite calls here are short and never held across an await: the pass owns the store.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tracing::Instrument;

use crate::backend::{ALL_RETRY_PAUSE, Backend, BackendError, BoxFuture, retry_delay};
use crate::config::Config;
use crate::diff::{self, DeleteLimits, Held, ImportReason, Names, Plan};
use crate::source;
use crate::store::{BatchKind, RunRecord, SourceStatus, Store, StoreError, Timestamp};

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
    Paused { until: Timestamp, reason: String },
    LoginRequired { reason: String },
    Network { error: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    pub new: usize,
    pub renames: usize,
    pub retries: usize,
    pub deletes: usize,
    pub forgotten: usize,
    pub waiting: usize,
}

impl PlanCounts {
    pub fn of(plan: &Plan) -> Self {
        let count = |reason| plan.imports.iter().filter(|i| i.reason == reason).count();
        Self {
            new: count(ImportReason::New),
            renames: count(ImportReason::Rename),
            retries: count(ImportReason::Retry),
            deletes: plan.deletes.len(),
            forgotten: plan.forget.len(),
            waiting: plan.waiting,
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
    pub deleted: usize,
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
    pub contacts: usize,
    pub name_conflicts: usize,
    pub unknown_sources: Vec<SourceStatus>,
    pub accounts: Vec<AccountReport>,
}

impl PassReport {
    pub fn deletes_held(&self) -> bool {
        self.accounts.iter().any(|a| a.held.is_some())
    }

    pub fn login_required(&self) -> bool {
        self.accounts
            .iter()
            .any(|a| matches!(a.stop, Some(Stop::LoginRequired { .. })))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The desired set as the diff wants it: E.164 → names.
pub fn desired_names(scan: &source::Scan) -> BTreeMap<String, Names> {
    scan.desired
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

/// Plans for one account without writing anything (`contactsyncd plan`).
pub fn plan_for(
    store: &Store,
    backend: &str,
    desired: &BTreeMap<String, Names>,
    options: &SyncOptions,
    now: Timestamp,
) -> Result<(Plan, Option<Held>), SyncError> {
    let mirror = store.mirror(backend)?;
    let in_flight = store.in_flight(backend)?;
    let plan = diff::diff(desired, &mirror, &in_flight, now);
    let remote = mirror.values().filter(|e| e.state.is_remote()).count();
    let held = diff::guard(&plan, remote, options.limits, options.force_delete);
    Ok((plan, held))
}

/// One full pass.
pub async fn sync_once(
    config: &Config,
    store: &mut Store,
    backends: &mut [Box<dyn Backend>],
    clock: &dyn Clock,
    options: &SyncOptions,
) -> Result<PassReport, SyncError> {
    let started = clock.now();
    let scan = source::scan(config, store, started, options.force_delete)?;
    store.apply_scan(&scan.changes, started)?;
    store.set_source_statuses(&scan.statuses)?;
    let desired = desired_names(&scan);
    for status in scan.unknown_sources() {
        tracing::warn!(
            source = %status.name,
            reason = status.reason.as_deref().unwrap_or_default(),
            "source counts as unknown: its contacts are kept and nothing of it is deleted"
        );
    }

    let mut report = PassReport {
        files_seen: scan.files_seen,
        files_read: scan.files_read,
        files_parsed: scan.files_parsed,
        files_deferred: scan.files_deferred,
        contacts: desired.len(),
        name_conflicts: scan.desired.conflicts.len(),
        unknown_sources: scan.unknown_sources().cloned().collect(),
        accounts: Vec::new(),
    };
    let mut wait_budget = options.max_wait;
    for backend in backends.iter_mut() {
        let account = sync_account(
            store,
            backend.as_mut(),
            &desired,
            clock,
            options,
            &mut wait_budget,
        )
        .await?;
        report.accounts.push(account);
    }

    let mut run = RunRecord {
        kind: "sync".into(),
        started_at: started,
        finished_at: Some(clock.now()),
        files_seen: scan.files_seen,
        files_parsed: scan.files_parsed,
        files_deferred: scan.files_deferred,
        contacts: desired.len() as u64,
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
        contacts = report.contacts,
        files_parsed = report.files_parsed,
        imported = run.imported,
        deleted = run.deleted,
        outcome = run.outcome.as_deref().unwrap_or_default(),
        "sync pass finished"
    );
    Ok(report)
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

async fn sync_account(
    store: &mut Store,
    backend: &mut dyn Backend,
    desired: &BTreeMap<String, Names>,
    clock: &dyn Clock,
    options: &SyncOptions,
    wait_budget: &mut u64,
) -> Result<AccountReport, SyncError> {
    let name = backend.name().to_owned();
    store.ensure_account(&name)?;
    if !options.offline {
        reconcile_if_due(store, backend, clock).await?;
    }
    let now = clock.now();
    let (plan, held) = plan_for(store, &name, desired, options, now)?;
    let mut report = AccountReport {
        backend: name.clone(),
        planned: PlanCounts::of(&plan),
        held: held.clone(),
        ..AccountReport::default()
    };
    if let Some(held) = &held {
        tracing::warn!(backend = %name, deletes = held.deletes, "deletions held: {}", held.reason);
    }
    let deletes: &[String] = if held.is_some() { &[] } else { &plan.deletes };
    store.enqueue(
        &name,
        &plan.imports,
        deletes,
        &plan.forget,
        backend.batch_size(),
        now,
    )?;

    report.stop = if options.offline {
        Some(Stop::Offline)
    } else {
        send_queue(store, backend, clock, wait_budget, &mut report).await?
    };
    report.queued_batches = store.open_batches(&name)?.len();
    Ok(report)
}

/// Compares the mirror with the remote list when the account's interval has passed (and on
/// the first pass). A failure here is logged and leaves the sync to go on.
async fn reconcile_if_due(
    store: &mut Store,
    backend: &mut dyn Backend,
    clock: &dyn Clock,
) -> Result<(), SyncError> {
    let Some((interval, reimport)) = backend.reconcile_policy() else {
        return Ok(());
    };
    let name = backend.name().to_owned();
    let now = clock.now();
    let due = store
        .last_reconcile(&name)?
        .is_none_or(|last| now - last >= i64::try_from(interval).unwrap_or(i64::MAX));
    let account = store.account(&name)?;
    let blocked = account
        .as_ref()
        .is_some_and(|a| a.auth_required || a.paused_until.is_some_and(|u| u > now));
    if !due || blocked {
        return Ok(());
    }
    match backend.remote_contacts().await {
        Ok(Some(remote)) => {
            let numbers = remote.into_iter().map(|c| c.e164).collect();
            let gone = store.apply_reconcile(&name, &numbers, reimport, now)?;
            if gone > 0 {
                tracing::info!(backend = %name, contacts = gone, reimport, "contacts deleted in the app");
            }
        }
        Ok(None) => store.note_reconcile(&name, now)?,
        Err(BackendError::Auth(reason)) => store.set_auth_required(&name, &reason)?,
        Err(err) => tracing::warn!(backend = %name, "reconciliation skipped: {err}"),
    }
    Ok(())
}

/// Sends the account's open batches in order until the queue is empty or something stops it.
async fn send_queue(
    store: &mut Store,
    backend: &mut dyn Backend,
    clock: &dyn Clock,
    wait_budget: &mut u64,
    report: &mut AccountReport,
) -> Result<Option<Stop>, SyncError> {
    let name = backend.name().to_owned();
    loop {
        let Some(account) = store.account(&name)? else {
            return Ok(None);
        };
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
            *wait_budget -= wait;
            clock.sleep(wait).await;
            continue;
        }
        let Some(batch) = store.open_batches(&name)?.into_iter().next() else {
            return Ok(None);
        };
        store.mark_sent(batch.id, clock.now())?;
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
        let result = match batch.kind {
            BatchKind::Import => {
                let items: Vec<_> = batch
                    .items
                    .iter()
                    .map(|item| crate::batch::ImportItem {
                        client_id: item.client_id.unwrap_or_default(),
                        e164: item.e164.clone(),
                        names: item.names.clone(),
                    })
                    .collect();
                match backend.import(&items).instrument(span.clone()).await {
                    Ok(results) => {
                        let tally =
                            store.apply_import(&batch, &results, clock.now(), &retry_delay)?;
                        report.imported += tally.imported;
                        report.saved += tally.saved;
                        report.retrying += tally.retrying;
                        report.rejected += tally.rejected;
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
                    Err(err) => Err(err),
                }
            }
            BatchKind::Delete => {
                let phones: Vec<String> = batch.items.iter().map(|i| i.e164.clone()).collect();
                match backend.delete(&phones).instrument(span.clone()).await {
                    Ok(()) => {
                        store.apply_delete(&batch, clock.now())?;
                        report.deleted += phones.len();
                        Ok(())
                    }
                    Err(err) => Err(err),
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
        match result {
            Ok(()) => store.note_success(&name, clock.now())?,
            Err(BackendError::Wait { seconds, reason }) => {
                let until = clock.now() + i64::try_from(seconds).unwrap_or(i64::MAX / 2);
                store.set_pause(&name, until, &reason)?;
                tracing::info!(backend = %name, seconds, "server asks to wait: {reason}");
            }
            Err(BackendError::Auth(reason)) => {
                store.set_auth_required(&name, &reason)?;
                tracing::error!(backend = %name, "login required: {reason}; run `contactsyncd login`");
            }
            Err(BackendError::Temporary(error)) => {
                store.note_error(&name, &error)?;
                tracing::warn!(backend = %name, "temporary failure, the queue is kept: {error}");
                return Ok(Some(Stop::Network { error }));
            }
            Err(BackendError::Permanent(reason)) => {
                let tally = store.reject_batch(&batch, &reason, clock.now())?;
                report.rejected += tally.rejected;
                tracing::warn!(backend = %name, items = batch.items.len(), "batch refused: {reason}");
            }
        }
    }
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
}
