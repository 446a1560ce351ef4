//! The run history and the per-source status of the last scan.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store, Timestamp};

/// One pass (`sync --once`, or a daemon cycle) and what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub kind: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub files_seen: u64,
    pub files_parsed: u64,
    pub files_deferred: u64,
    pub contacts: u64,
    pub imports_planned: u64,
    pub deletes_planned: u64,
    pub deletes_held: u64,
    pub batches_sent: u64,
    pub imported: u64,
    pub saved: u64,
    pub retrying: u64,
    pub rejected: u64,
    pub deleted: u64,
    pub outcome: Option<String>,
    pub message: Option<String>,
}

/// A source as the last scan found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub path: String,
    /// `ok`, or `unknown`: missing, unreadable or suddenly empty; its contacts are kept.
    pub state: String,
    pub reason: Option<String>,
    pub files: u64,
    pub cards: u64,
    /// Phone numbers (contact keys in E.164).
    pub phones: u64,
    /// Telegram usernames a card is known by (contact keys `@username`), counted apart.
    pub usernames: u64,
    pub card_errors: u64,
    pub deferred: u64,
    pub scanned_at: Timestamp,
}

impl Store {
    pub fn record_run(&self, run: &RunRecord) -> Result<i64> {
        self.conn().execute(
            "INSERT INTO run (kind, started_at, finished_at, files_seen, files_parsed, files_deferred, contacts,
               imports_planned, deletes_planned, deletes_held, batches_sent, imported, saved, retrying, rejected,
               deleted, outcome, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
                run.kind,
                run.started_at,
                run.finished_at,
                run.files_seen,
                run.files_parsed,
                run.files_deferred,
                run.contacts,
                run.imports_planned,
                run.deletes_planned,
                run.deletes_held,
                run.batches_sent,
                run.imported,
                run.saved,
                run.retrying,
                run.rejected,
                run.deleted,
                run.outcome,
                run.message
            ],
        )?;
        Ok(self.conn().last_insert_rowid())
    }

    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let mut statement = self.conn().prepare(
            "SELECT id, kind, started_at, finished_at, files_seen, files_parsed, files_deferred, contacts,
               imports_planned, deletes_planned, deletes_held, batches_sent, imported, saved, retrying, rejected,
               deleted, outcome, message
             FROM run ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            Ok(RunRecord {
                id: row.get(0)?,
                kind: row.get(1)?,
                started_at: row.get(2)?,
                finished_at: row.get(3)?,
                files_seen: row.get(4)?,
                files_parsed: row.get(5)?,
                files_deferred: row.get(6)?,
                contacts: row.get(7)?,
                imports_planned: row.get(8)?,
                deletes_planned: row.get(9)?,
                deletes_held: row.get(10)?,
                batches_sent: row.get(11)?,
                imported: row.get(12)?,
                saved: row.get(13)?,
                retrying: row.get(14)?,
                rejected: row.get(15)?,
                deleted: row.get(16)?,
                outcome: row.get(17)?,
                message: row.get(18)?,
            })
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// The state the last full scan found a source in (`source::SOURCE_OK` …).
    pub fn source_state(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT state FROM source_status WHERE name = ?1")?
            .query_row([name], |row| row.get(0))
            .optional()?)
    }

    pub fn set_source_statuses(&mut self, statuses: &[SourceStatus]) -> Result<()> {
        let tx = self.conn_mut().transaction()?;
        tx.execute("DELETE FROM source_status", [])?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO source_status (name, path, state, reason, files, cards, phones, card_errors, deferred, scanned_at, usernames)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for s in statuses {
                insert.execute(params![
                    s.name,
                    s.path,
                    s.state,
                    s.reason,
                    s.files,
                    s.cards,
                    s.phones,
                    s.card_errors,
                    s.deferred,
                    s.scanned_at,
                    s.usernames
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A pass that found every source as it was: only the time moves.
    pub fn touch_source_statuses(&self, now: Timestamp) -> Result<()> {
        self.conn()
            .execute("UPDATE source_status SET scanned_at = ?1", [now])?;
        Ok(())
    }

    pub fn source_statuses(&self) -> Result<Vec<SourceStatus>> {
        let mut statement = self.conn().prepare(
            "SELECT name, path, state, reason, files, cards, phones, card_errors, deferred, scanned_at, usernames
             FROM source_status ORDER BY name",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(SourceStatus {
                name: row.get(0)?,
                path: row.get(1)?,
                state: row.get(2)?,
                reason: row.get(3)?,
                files: row.get(4)?,
                cards: row.get(5)?,
                phones: row.get(6)?,
                card_errors: row.get(7)?,
                deferred: row.get(8)?,
                scanned_at: row.get(9)?,
                usernames: row.get(10)?,
            })
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }
}
