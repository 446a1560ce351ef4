//! Per backend account: the mirror of the remote, the outbox, the pause and the client_id
//! counter.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, Timestamp};
use crate::backend::{ImportResult, RemoteContact};
use crate::batch;
use crate::diff::{Hold, MirrorEntry, MirrorState, Names, PlannedImport};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub backend: String,
    pub next_client_id: i64,
    pub paused_until: Option<Timestamp>,
    pub pause_reason: Option<String>,
    pub auth_required: bool,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    /// `remote forget-all`: the account is to hold nothing of ours until `remote resume`.
    pub forgetting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Import,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    Planned,
    Sent,
    Applied,
}

impl BatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Import => "import",
            Self::Delete => "delete",
        }
    }
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Sent => "sent",
            Self::Applied => "applied",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "planned" => Self::Planned,
            "sent" => Self::Sent,
            _ => Self::Applied,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub e164: String,
    pub names: Names,
    pub client_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: i64,
    pub backend: String,
    pub kind: BatchKind,
    pub state: BatchState,
    pub created_at: Timestamp,
    pub sent_at: Option<Timestamp>,
    pub applied_at: Option<Timestamp>,
    pub send_count: u32,
    pub outcome: Option<String>,
    pub items: Vec<OutboxItem>,
}

/// What applying one import batch's results did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportTally {
    pub imported: usize,
    pub saved: usize,
    /// Saved numbers that other Telegram users have too (`popular_invites`).
    pub popular: usize,
    pub retrying: usize,
    pub rejected: usize,
    /// Numbers the user had already saved (WhatsApp): left alone.
    pub by_user: usize,
}

/// Counts per mirror state for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MirrorCounts {
    pub imported: u64,
    pub saved: u64,
    /// Saved numbers without an account that other Telegram users have: worth an invite.
    pub popular: u64,
    pub retrying: u64,
    /// Numbers the server refused by name (import or delete), tried again a day later or
    /// when the card changes.
    pub rejected: u64,
    /// On the remote, but not as the address book wants it yet: a rename or a delete is
    /// queued, or a rename waits for its retry. Not counted as in sync.
    pub pending: u64,
    pub next_retry: Option<Timestamp>,
}

/// What `queue_plan` changed in the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueChange {
    /// Per import of the plan: already queued exactly so (left as it was), not news.
    pub already_queued_imports: Vec<bool>,
    /// Per delete of the plan, the same.
    pub already_queued_deletes: Vec<bool>,
    /// Never-sent items the plan no longer wants (removed).
    pub superseded: usize,
    /// Numbers in batches sent and not applied yet, left to those batches.
    pub in_flight: usize,
    /// The plan epoch when the queueing began and when it ended: its own changes (items
    /// superseded, a batch they emptied closed, mirror rows forgotten) move it.
    pub epochs: (i64, i64),
}

/// One row of a person's (see `Store::person`).
struct PersonRow {
    key: String,
    imported: bool,
    not_imported: bool,
    names: Names,
    /// (user id, access hash) when the hash is known.
    user: Option<(i64, i64)>,
    delete_held: bool,
}

/// The names the desired set wants for some numbers (absent: not wanted), as the state has
/// them now. The sync builds it from the stored cards and the configured sources.
pub type DesiredOf<'a> =
    dyn Fn(&Store, &BTreeSet<String>) -> Result<BTreeMap<String, Names>> + Send + Sync + 'a;

/// What a cut batch applied before the cut (`Store::apply_cut`).
#[derive(Debug, Clone, Copy)]
pub enum CutDone<'a> {
    /// An import batch: the results of the items applied.
    Imported(&'a [(i64, ImportResult)]),
    /// A delete batch: the contact keys deleted for good.
    Deleted(&'a BTreeSet<String>),
}

/// A batch taken for sending, and how many never-sent items were dropped on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub batch: Option<Batch>,
    pub superseded: usize,
}

/// How long a number the server refused by name waits before it is tried again (unless its
/// card changes first).
pub const REJECTED_RETRY: i64 = 24 * 60 * 60;

/// A number the server refused, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    pub e164: String,
    /// `import` or `delete`.
    pub action: &'static str,
    pub reason: String,
    /// When it is tried again (unless the card changes first); `None`: when the card changes.
    pub retry_at: Option<Timestamp>,
}

/// What a login to another Telegram user set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The account key they now live under, e.g. `telegram@1234`.
    pub key: String,
    pub contacts: u64,
    pub batches: usize,
    /// A mirror set aside earlier for the user now logged in, taken back into use.
    pub restored: Option<String>,
}

/// What a skipped pass reports: the counts of the plan it relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRecord {
    pub contacts: u64,
    pub name_conflicts: u64,
    /// The files it was made from (`FilesDigest::text`); `None`: some could not vouch for
    /// their content, and a pass must look at them again.
    pub files: Option<String>,
}

const MIRROR_COLUMNS: &str = "contact_key, first_name, last_name, state, hold_first_name, hold_last_name, hold_until, hold_reason, delete_hold_until";

fn mirror_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, MirrorEntry)> {
    let state: String = row.get(3)?;
    let hold_first: Option<String> = row.get(4)?;
    let hold = match hold_first {
        Some(first) => Some(Hold {
            names: Names {
                first,
                last: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
            },
            until: row.get(6)?,
            reason: row.get::<_, Option<String>>(7)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok((
        row.get::<_, String>(0)?,
        MirrorEntry {
            names: Names {
                first: row.get(1)?,
                last: row.get(2)?,
            },
            state: match state.as_str() {
                "imported" => MirrorState::Imported,
                "saved" => MirrorState::Saved,
                "user" | "unverified" => MirrorState::NotOurs,
                _ => MirrorState::NotImported,
            },
            hold,
            delete_held_until: row.get(8)?,
        },
    ))
}

impl Store {
    pub fn ensure_account(&self, backend: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO account (backend) VALUES (?1)",
            [backend],
        )?;
        Ok(())
    }

    pub fn account(&self, backend: &str) -> Result<Option<AccountState>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT backend, next_client_id, paused_until, pause_reason, auth_required, last_success, last_error, forgetting FROM account WHERE backend = ?1",
                [backend],
                account_row,
            )
            .optional()?)
    }

    pub fn accounts(&self) -> Result<Vec<AccountState>> {
        let mut statement = self.conn().prepare(
            "SELECT backend, next_client_id, paused_until, pause_reason, auth_required, last_success, last_error, forgetting FROM account ORDER BY backend",
        )?;
        let rows = statement.query_map([], account_row)?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    pub fn mirror(&self, backend: &str) -> Result<BTreeMap<String, MirrorEntry>> {
        let mut statement = self.conn().prepare(&format!(
            "SELECT {MIRROR_COLUMNS} FROM mirror WHERE backend = ?1"
        ))?;
        let rows = statement.query_map([backend], mirror_row)?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// The mirror restricted to `numbers` (the daemon's quick pass after one file changed).
    pub fn mirror_of(
        &self,
        backend: &str,
        numbers: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, MirrorEntry>> {
        let mut statement = self.conn().prepare_cached(&format!(
            "SELECT {MIRROR_COLUMNS} FROM mirror WHERE backend = ?1 AND contact_key = ?2"
        ))?;
        let mut found = BTreeMap::new();
        for e164 in numbers {
            if let Some((e164, entry)) = statement
                .query_row(params![backend, e164], mirror_row)
                .optional()?
            {
                found.insert(e164, entry);
            }
        }
        Ok(found)
    }

    /// How many numbers the remote has (imported or saved): the guard's denominator.
    pub fn remote_count(&self, backend: &str) -> Result<usize> {
        let count: i64 = self.conn().query_row(
            "SELECT count(*) FROM mirror WHERE backend = ?1 AND state IN ('imported', 'saved')",
            [backend],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(count).unwrap_or_default())
    }

    /// Moves with every change to the mirror and to batches once queued (see migration 005).
    pub fn plan_epoch(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT epoch FROM plan_epoch", [], |r| r.get(0))?)
    }

    /// The last plan that left nothing to do, if it was made by `key` at the current epoch.
    pub fn current_plan_record(&self, key: &str) -> Result<Option<PlanRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT contacts, name_conflicts, planned_files FROM plan_epoch
                 WHERE planned_key = ?1 AND planned_epoch = epoch",
                [key],
                |r| {
                    Ok(PlanRecord {
                        contacts: r.get(0)?,
                        name_conflicts: r.get(1)?,
                        files: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records that the plan `key` made at `epoch` left nothing to do.
    pub fn record_plan(&self, key: &str, epoch: i64, record: PlanRecord) -> Result<()> {
        self.conn().execute(
            "UPDATE plan_epoch SET planned_key = ?1, planned_epoch = ?2, contacts = ?3, name_conflicts = ?4,
               planned_files = ?5",
            params![key, epoch, record.contacts, record.name_conflicts, record.files],
        )?;
        Ok(())
    }

    pub fn open_batch_count(&self, backend: &str) -> Result<usize> {
        let count: i64 = self.conn().query_row(
            "SELECT count(*) FROM outbox_batch WHERE backend = ?1 AND state != 'applied'",
            [backend],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(count).unwrap_or_default())
    }

    pub fn mirror_counts(&self, backend: &str) -> Result<MirrorCounts> {
        Ok(self.conn().query_row(
            "SELECT
               coalesce(sum(state = 'imported'), 0),
               coalesce(sum(state = 'saved'), 0),
               coalesce(sum(state = 'saved' AND importers > 0), 0),
               coalesce(sum(hold_first_name IS NOT NULL AND hold_until IS NOT NULL AND hold_rejected = 0), 0),
               coalesce(sum((hold_first_name IS NOT NULL AND hold_rejected = 1)
                            OR delete_hold_until IS NOT NULL), 0),
               coalesce(sum(state IN ('imported', 'saved') AND (hold_first_name IS NOT NULL
                 OR contact_key IN (SELECT i.contact_key FROM outbox_item i JOIN outbox_batch b ON b.id = i.batch_id
                             WHERE b.backend = ?1 AND b.state != 'applied'))), 0),
               min(CASE WHEN hold_rejected = 0 THEN hold_until END)
             FROM mirror WHERE backend = ?1",
            [backend],
            |row| {
                Ok(MirrorCounts {
                    imported: row.get(0)?,
                    saved: row.get(1)?,
                    popular: row.get(2)?,
                    retrying: row.get(3)?,
                    rejected: row.get(4)?,
                    pending: row.get(5)?,
                    next_retry: row.get(6)?,
                })
            },
        )?)
    }

    /// Numbers in batches that were sent and whose results are not applied yet: they may
    /// have reached the remote, so their outcome is still to come. Batches only planned are
    /// not in flight: every plan supersedes them (`queue_plan`).
    pub fn in_flight(&self, backend: &str) -> Result<BTreeSet<String>> {
        in_flight(self.conn(), backend)
    }

    /// (user id, access hash) of ours among `phones` whose user is known: a delete goes by
    /// user too, as the number may no longer identify them.
    pub fn users_of(&self, backend: &str, phones: &[String]) -> Result<Vec<(i64, i64)>> {
        Ok(self.users_by_key(backend, phones)?.into_values().collect())
    }

    /// Every row of ours behind the user of `key`, `key`'s own included (a person on a card
    /// by number and on another by username is one user under two keys); none when `key`
    /// has no user. Two lookups by index: a join on the user let SQLite's planner read the
    /// whole mirror for each key.
    fn person(&self, backend: &str, key: &str) -> Result<Vec<PersonRow>> {
        let user: Option<i64> = self
            .conn()
            .prepare_cached("SELECT user_id FROM mirror WHERE backend = ?1 AND contact_key = ?2")?
            .query_row(params![backend, key], |r| r.get(0))
            .optional()?
            .flatten();
        let Some(user) = user else {
            return Ok(Vec::new());
        };
        let mut statement = self.conn().prepare_cached(
            "SELECT contact_key, state, first_name, last_name, access_hash,
                    delete_hold_until IS NOT NULL
             FROM mirror INDEXED BY mirror_user WHERE backend = ?1 AND user_id = ?2",
        )?;
        let rows = statement.query_map(params![backend, user], |r| {
            Ok(PersonRow {
                key: r.get(0)?,
                imported: r.get::<_, String>(1)? == "imported",
                not_imported: r.get::<_, String>(1)? == "not_imported",
                names: Names {
                    first: r.get(2)?,
                    last: r.get(3)?,
                },
                user: r.get::<_, Option<i64>>(4)?.map(|hash| (user, hash)),
                delete_held: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// `users_of`, by contact key: a delete batch cut after its numbers went is done only
    /// for the keys without a user. The same person under another of our keys stays, unless
    /// the state knows that key is not on the remote (deleted in the app, refused).
    pub fn users_by_key(
        &self,
        backend: &str,
        phones: &[String],
    ) -> Result<BTreeMap<String, (i64, i64)>> {
        let mut users = BTreeMap::new();
        for e164 in phones {
            let person = self.person(backend, e164)?;
            let Some(own) = person.iter().find(|row| row.key == *e164) else {
                continue;
            };
            let shared = person
                .iter()
                .any(|row| row.key != *e164 && !row.not_imported);
            if let (true, Some(user), false) = (own.imported, own.user, shared) {
                users.insert(e164.clone(), user);
            }
        }
        Ok(users)
    }

    /// Those of `keys` whose user is ours under another key too, one not among `keys` (a
    /// person on a card by number and on another by username): Telegram deletes a contact
    /// by any of its numbers, so deleting such a number would delete the person the other
    /// card still wants. They leave the mirror without a call.
    pub fn kept_under_another_key(
        &self,
        backend: &str,
        keys: &[String],
    ) -> Result<BTreeSet<String>> {
        let mut kept = BTreeSet::new();
        for key in keys {
            let person = self.person(backend, key)?;
            if person
                .iter()
                .any(|row| row.key != *key && row.imported && !keys.contains(&row.key))
            {
                kept.insert(key.clone());
            }
        }
        Ok(kept)
    }

    /// For `deletes` (sorted) that leave a person another of our keys still holds (kept, see
    /// `kept_under_another_key`): that key and its names, where the deleted key's differ.
    /// Telegram names the person, not the key, so the name last sent may be the deleted
    /// card's; sending the staying key's names again puts the person back under them.
    pub fn names_for_kept_persons(
        &self,
        backend: &str,
        deletes: &[String],
    ) -> Result<Vec<(String, Names)>> {
        let mut staying = Vec::new();
        for key in deletes {
            let person = self.person(backend, key)?;
            let Some(gone) = person.iter().find(|row| row.key == *key) else {
                continue;
            };
            for row in &person {
                if row.key != *key
                    && row.imported
                    && !row.delete_held
                    && row.names != gone.names
                    && deletes.binary_search(&row.key).is_err()
                {
                    staying.push((row.key.clone(), row.names.clone()));
                }
            }
        }
        Ok(staying)
    }

    /// The user behind one of ours (user id, access hash), as the last confirmed result
    /// gave it: a username contact is added again (renamed) by it without resolving the
    /// username once more.
    pub fn known_user(&self, backend: &str, key: &str) -> Result<Option<(i64, i64)>> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT user_id, access_hash FROM mirror WHERE backend = ?1 AND contact_key = ?2
                   AND user_id IS NOT NULL AND access_hash IS NOT NULL",
            )?
            .query_row(params![backend, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// The key each known user is in the mirror under: a contact the remote lists by its
    /// number (or none) is matched to ours by user, as one added by username has no number
    /// in its key and one who changed number no longer has the imported one.
    pub fn keys_by_user(&self, backend: &str) -> Result<BTreeMap<i64, String>> {
        let mut statement = self.conn().prepare(
            "SELECT user_id, contact_key FROM mirror WHERE backend = ?1 AND user_id IS NOT NULL",
        )?;
        let rows = statement.query_map([backend], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Ours that the remote now shows under another number: (imported, shown now).
    pub fn number_changes(&self, backend: &str) -> Result<Vec<(String, String)>> {
        let mut statement = self.conn().prepare(
            "SELECT contact_key, remote_phone FROM mirror WHERE backend = ?1 AND remote_phone IS NOT NULL
             ORDER BY contact_key",
        )?;
        let rows = statement.query_map([backend], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// The numbers the server refused, with the reason, for `status`.
    pub fn rejections(&self, backend: &str) -> Result<Vec<Rejection>> {
        let mut statement = self.conn().prepare(
            "SELECT contact_key, 'import', coalesce(hold_reason, ''), hold_until FROM mirror
               WHERE backend = ?1 AND hold_first_name IS NOT NULL AND hold_rejected = 1
             UNION ALL
             SELECT contact_key, 'delete', coalesce(delete_hold_reason, ''), delete_hold_until FROM mirror
               WHERE backend = ?1 AND delete_hold_until IS NOT NULL
             ORDER BY 1, 2",
        )?;
        let rows = statement.query_map([backend], |row| {
            Ok(Rejection {
                e164: row.get(0)?,
                action: if row.get::<_, String>(1)? == "delete" {
                    "delete"
                } else {
                    "import"
                },
                reason: row.get(2)?,
                retry_at: row.get(3)?,
            })
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// Makes the account's never-sent work equal to a plan, in one transaction, before
    /// anything is sent. Within `scope` (every number, or just these), a planned item the
    /// plan still wants exactly (same kind, number and names) stays where it is with its
    /// client_id; any other planned item is superseded (removed before it was ever sent; a
    /// batch left empty is closed as superseded); what the plan wants and is not queued yet
    /// goes into new batches, import items numbered from the account's counter (never
    /// reused). Numbers in flight (sent, results not applied) are left to their batch.
    /// `forget` rows leave the mirror.
    #[allow(clippy::too_many_arguments)]
    pub fn queue_plan(
        &mut self,
        backend: &str,
        scope: Option<&BTreeSet<String>>,
        imports: &[PlannedImport],
        deletes: &[String],
        forget: &[String],
        batch_size: usize,
        now: Timestamp,
    ) -> Result<QueueChange> {
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR IGNORE INTO account (backend) VALUES (?1)",
            [backend],
        )?;
        let flying = in_flight(&tx, backend)?;
        let epoch_before: i64 = tx.query_row("SELECT epoch FROM plan_epoch", [], |r| r.get(0))?;
        // The plan's lists are sorted by number (the diff's output): planned items are
        // matched to them by binary search, streamed in, never all held in a map.
        debug_assert!(imports.windows(2).all(|w| w[0].e164 < w[1].e164));
        debug_assert!(deletes.windows(2).all(|w| w[0] < w[1]));
        let mut change = QueueChange {
            already_queued_imports: vec![false; imports.len()],
            already_queued_deletes: vec![false; deletes.len()],
            ..QueueChange::default()
        };
        {
            let mut planned = tx.prepare(
                "SELECT b.id, b.kind, i.contact_key, i.first_name, i.last_name
                 FROM outbox_item i JOIN outbox_batch b ON b.id = i.batch_id
                 WHERE b.backend = ?1 AND b.state = 'planned' ORDER BY b.id, i.contact_key",
            )?;
            let mut rows = planned.query([backend])?;
            let mut drop_item =
                tx.prepare("DELETE FROM outbox_item WHERE batch_id = ?1 AND contact_key = ?2")?;
            let mut touched_batches = BTreeSet::new();
            while let Some(row) = rows.next()? {
                let batch_id: i64 = row.get(0)?;
                let e164 = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
                if scope.is_some_and(|numbers| !numbers.contains(e164)) {
                    continue;
                }
                let still_wanted = !flying.contains(e164)
                    && if row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?
                        == BatchKind::Delete.as_str()
                    {
                        match deletes.binary_search_by(|d| d.as_str().cmp(e164)) {
                            Ok(i) if !change.already_queued_deletes[i] => {
                                change.already_queued_deletes[i] = true;
                                true
                            }
                            _ => false,
                        }
                    } else {
                        let names = Names {
                            first: row.get(3)?,
                            last: row.get(4)?,
                        };
                        match imports.binary_search_by(|i| i.e164.as_str().cmp(e164)) {
                            Ok(i)
                                if !change.already_queued_imports[i]
                                    && imports[i].names == names =>
                            {
                                change.already_queued_imports[i] = true;
                                true
                            }
                            _ => false,
                        }
                    };
                if !still_wanted {
                    drop_item.execute(params![batch_id, e164])?;
                    change.superseded += 1;
                    touched_batches.insert(batch_id);
                }
            }
            for batch_id in touched_batches {
                tx.execute(
                    "UPDATE outbox_batch SET state = 'applied', applied_at = ?2,
                       outcome = 'superseded: the address book changed before it was sent'
                     WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM outbox_item WHERE batch_id = ?1)",
                    params![batch_id, now],
                )?;
            }
        }
        let next: i64 = tx.query_row(
            "SELECT next_client_id FROM account WHERE backend = ?1",
            [backend],
            |r| r.get(0),
        )?;
        let new_imports = imports
            .iter()
            .zip(&change.already_queued_imports)
            .filter(|(i, queued)| !**queued && !flying.contains(&i.e164))
            .map(|(i, _)| i);
        let mut import_batches = batch::numbered_batches(new_imports, batch_size, next);
        let new_deletes: Vec<String> = deletes
            .iter()
            .zip(&change.already_queued_deletes)
            .filter(|(e164, queued)| !**queued && !flying.contains(*e164))
            .map(|(e164, _)| e164.clone())
            .collect();
        let delete_batches = batch::delete_batches(&new_deletes, batch_size);
        {
            for items in import_batches.by_ref() {
                let rows = items
                    .iter()
                    .map(|i| (i.e164.as_str(), &i.names, Some(i.client_id)));
                insert_batch(&tx, backend, BatchKind::Import, now, rows)?;
            }
            let no_names = Names {
                first: String::new(),
                last: String::new(),
            };
            for phones in &delete_batches {
                let rows = phones.iter().map(|e164| (e164.as_str(), &no_names, None));
                insert_batch(&tx, backend, BatchKind::Delete, now, rows)?;
            }
            let mut forget_row =
                tx.prepare("DELETE FROM mirror WHERE backend = ?1 AND contact_key = ?2")?;
            for e164 in forget {
                forget_row.execute(params![backend, e164])?;
            }
        }
        tx.execute(
            "UPDATE account SET next_client_id = ?2 WHERE backend = ?1",
            params![backend, import_batches.next_client_id()],
        )?;
        change.epochs = (
            epoch_before,
            tx.query_row("SELECT epoch FROM plan_epoch", [], |r| r.get(0))?,
        );
        crate::failpoint::hit(crate::failpoint::QUEUE_PLAN);
        tx.commit()?;
        change.in_flight = flying.len();
        Ok(change)
    }

    /// Takes the account's next batch for sending: marks it sent (persisted before the
    /// request goes out, so a crash between send and apply makes it go out again as it was:
    /// import and delete-by-phone are idempotent) and returns it. A batch that was never
    /// sent is first checked, in the same transaction, against the desired set as the state
    /// has it now (`desired_of` gives the names wanted for some numbers): an import whose
    /// number is no longer wanted under those names, or a delete of a number wanted again
    /// (or no longer ours on the remote), is dropped from it; a batch left empty is closed
    /// as superseded and the next one is taken. `None`: nothing left to send.
    pub fn claim_next_batch(
        &self,
        backend: &str,
        now: Timestamp,
        desired_of: &DesiredOf<'_>,
    ) -> Result<Option<Claimed>> {
        let mut superseded = 0;
        loop {
            let tx = rusqlite::Transaction::new_unchecked(
                self.conn(),
                rusqlite::TransactionBehavior::Immediate,
            )?;
            let next: Option<i64> = self
                .conn()
                .query_row(
                    "SELECT id FROM outbox_batch WHERE backend = ?1 AND state != 'applied'
                     ORDER BY state = 'planned', id LIMIT 1",
                    [backend],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = next else {
                tx.commit()?;
                return Ok((superseded > 0).then_some(Claimed {
                    batch: None,
                    superseded,
                }));
            };
            let mut batch = self.batch(id)?;
            if batch.state == BatchState::Planned {
                let numbers: BTreeSet<String> =
                    batch.items.iter().map(|i| i.e164.clone()).collect();
                // Forgetting: nothing is wanted, every delete of ours goes.
                let wanted = if self.is_forgetting(backend)? {
                    BTreeMap::new()
                } else {
                    desired_of(self, &numbers)?
                };
                let ours = self.mirror_of(backend, &numbers)?;
                let (keep, stale): (Vec<OutboxItem>, Vec<OutboxItem>) =
                    batch.items.into_iter().partition(|item| match batch.kind {
                        BatchKind::Import => wanted.get(&item.e164) == Some(&item.names),
                        BatchKind::Delete => {
                            !wanted.contains_key(&item.e164)
                                && ours.get(&item.e164).is_some_and(|e| e.state.is_remote())
                        }
                    });
                for item in &stale {
                    self.conn().execute(
                        "DELETE FROM outbox_item WHERE batch_id = ?1 AND contact_key = ?2",
                        params![id, item.e164],
                    )?;
                }
                superseded += stale.len();
                batch.items = keep;
                if batch.items.is_empty() {
                    self.conn().execute(
                        "UPDATE outbox_batch SET state = 'applied', applied_at = ?2,
                           outcome = 'superseded: the address book changed before it was sent'
                         WHERE id = ?1",
                        params![id, now],
                    )?;
                    tx.commit()?;
                    continue;
                }
            }
            // Claimed while still 'sent': its last send has no known outcome (no answer, or
            // the process died before applying it), so this send is a resend.
            self.conn().execute(
                "UPDATE outbox_batch SET state = 'sent', sent_at = ?2, send_count = send_count + 1,
                   resend = resend OR state = 'sent'
                 WHERE id = ?1",
                params![id, now],
            )?;
            // The remote list may change with this batch: the getContacts hash of the list
            // before it no longer describes what the mirror expects, so it is dropped in the
            // same step (a deletion in the app that restores the old list must not answer
            // "not modified").
            self.conn().execute(
                "UPDATE account SET remote_hash = NULL WHERE backend = ?1",
                [backend],
            )?;
            crate::failpoint::hit(crate::failpoint::CLAIM);
            tx.commit()?;
            batch.state = BatchState::Sent;
            batch.sent_at = Some(now);
            batch.send_count += 1;
            return Ok(Some(Claimed {
                batch: Some(batch),
                superseded,
            }));
        }
    }

    /// Whether anything waits in the account's outbox (without loading it).
    pub fn has_open_batches(&self, backend: &str) -> Result<bool> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM outbox_batch WHERE backend = ?1 AND state != 'applied')",
            [backend],
            |r| r.get(0),
        )?)
    }

    /// Batches still to send: those left `sent` (maybe delivered, reply lost) first.
    pub fn open_batches(&self, backend: &str) -> Result<Vec<Batch>> {
        let ids: Vec<i64> = {
            let mut statement = self.conn().prepare(
                "SELECT id FROM outbox_batch WHERE backend = ?1 AND state != 'applied'
                 ORDER BY state = 'planned', id",
            )?;
            let rows = statement.query_map([backend], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        ids.into_iter().map(|id| self.batch(id)).collect()
    }

    pub fn batch(&self, id: i64) -> Result<Batch> {
        let mut batch = self.conn().query_row(
            "SELECT id, backend, kind, state, created_at, sent_at, applied_at, send_count, outcome FROM outbox_batch WHERE id = ?1",
            [id],
            batch_row,
        )?;
        let mut statement = self.conn().prepare(
            "SELECT contact_key, first_name, last_name, client_id FROM outbox_item WHERE batch_id = ?1 ORDER BY contact_key",
        )?;
        let items = statement.query_map([id], |row| {
            Ok(OutboxItem {
                e164: row.get(0)?,
                names: Names {
                    first: row.get(1)?,
                    last: row.get(2)?,
                },
                client_id: row.get(3)?,
            })
        })?;
        batch.items = items.collect::<rusqlite::Result<_>>()?;
        Ok(batch)
    }

    /// The newest batches with their item counts (items themselves not loaded).
    pub fn recent_batches(&self, limit: usize) -> Result<Vec<(Batch, u64)>> {
        let mut statement = self.conn().prepare(
            "SELECT b.id, b.backend, b.kind, b.state, b.created_at, b.sent_at, b.applied_at, b.send_count, b.outcome,
                    (SELECT count(*) FROM outbox_item i WHERE i.batch_id = b.id)
             FROM outbox_batch b ORDER BY b.id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            Ok((batch_row(row)?, row.get::<_, u64>(9)?))
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// Whether `remote forget-all` set the account to hold nothing of ours.
    pub fn is_forgetting(&self, backend: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT forgetting FROM account WHERE backend = ?1",
                [backend],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .is_some_and(|f| f != 0))
    }

    /// Sets or clears `forgetting`; what was planned before no longer holds.
    pub fn set_forgetting(&self, backend: &str, forgetting: bool) -> Result<()> {
        self.ensure_account(backend)?;
        self.conn().execute(
            "UPDATE account SET forgetting = ?2 WHERE backend = ?1",
            params![backend, forgetting],
        )?;
        self.conn()
            .execute("UPDATE plan_epoch SET epoch = epoch + 1", [])?;
        Ok(())
    }

    /// Applies an import batch's results in one transaction. `retry_delay(attempt)` gives
    /// the back-off in seconds for a number's n-th failed attempt.
    pub fn apply_import(
        &mut self,
        batch: &Batch,
        results: &[(i64, ImportResult)],
        now: Timestamp,
        retry_delay: &dyn Fn(u32) -> i64,
    ) -> Result<ImportTally> {
        let tx = self.conn_mut().transaction()?;
        let tally = record_import_results(&tx, batch, &batch.items, results, now, retry_delay)?;
        let mut outcome = format!(
            "imported {}, saved {}, retrying {}, rejected {}",
            tally.imported, tally.saved, tally.retrying, tally.rejected
        );
        if tally.by_user > 0 {
            outcome.push_str(&format!(", already saved by the user {}", tally.by_user));
        }
        finish_batch(&tx, batch, &outcome, now)?;
        crate::failpoint::hit(crate::failpoint::APPLY_IMPORT);
        tx.commit()?;
        Ok(tally)
    }

    /// A delete batch went through: its numbers leave the mirror.
    pub fn apply_delete(&mut self, batch: &Batch, now: Timestamp) -> Result<()> {
        let tx = self.conn_mut().transaction()?;
        {
            let mut remove =
                tx.prepare("DELETE FROM mirror WHERE backend = ?1 AND contact_key = ?2")?;
            for item in &batch.items {
                remove.execute(params![batch.backend, item.e164])?;
            }
        }
        finish_batch(&tx, batch, &format!("deleted {}", batch.items.len()), now)?;
        crate::failpoint::hit(crate::failpoint::APPLY_DELETE);
        tx.commit()?;
        Ok(())
    }

    /// A batch the other side stopped part-way (a wait, a 429, a login error, a refusal, no
    /// answer), in one transaction, before the caller records the pause: what `done` says
    /// was applied is applied (import results, or the contact keys deleted) and leaves the
    /// batch; the rest is what the other side refused before doing anything, or never saw,
    /// or (`unknown`, contact keys) a call without an answer. Refused or never tried, the
    /// items go back to the outbox as never sent, so that the check before sending applies
    /// to them again; unknown ones stay in flight and go out again as they were. A batch
    /// whose last send already had no known outcome (`resend`) stays in flight as a whole:
    /// any of its items may have been applied by that send. Returns the tally of what was
    /// applied and the batch as it is left (`None`: nothing left of it).
    pub fn apply_cut(
        &mut self,
        batch: &Batch,
        done: &CutDone<'_>,
        unknown: &BTreeSet<String>,
        now: Timestamp,
        retry_delay: &dyn Fn(u32) -> i64,
    ) -> Result<(ImportTally, Option<Batch>)> {
        let tx = self.conn_mut().transaction()?;
        let (applied, rest): (Vec<OutboxItem>, Vec<OutboxItem>) =
            batch.items.iter().cloned().partition(|item| match done {
                CutDone::Imported(results) => {
                    let client_id = item.client_id.unwrap_or_default();
                    results.iter().any(|(id, _)| *id == client_id)
                }
                CutDone::Deleted(keys) => keys.contains(&item.e164),
            });
        let tally = match done {
            CutDone::Imported(results) => {
                record_import_results(&tx, batch, &applied, results, now, retry_delay)?
            }
            CutDone::Deleted(_) => {
                let mut remove =
                    tx.prepare("DELETE FROM mirror WHERE backend = ?1 AND contact_key = ?2")?;
                for item in &applied {
                    remove.execute(params![batch.backend, item.e164])?;
                }
                ImportTally::default()
            }
        };
        {
            let mut leave =
                tx.prepare("DELETE FROM outbox_item WHERE batch_id = ?1 AND contact_key = ?2")?;
            for item in &applied {
                leave.execute(params![batch.id, item.e164])?;
            }
        }
        if rest.is_empty() {
            finish_batch(
                &tx,
                batch,
                &format!(
                    "applied {} before the server stopped the batch",
                    applied.len()
                ),
                now,
            )?;
            crate::failpoint::hit(crate::failpoint::APPLY_CUT);
            tx.commit()?;
            return Ok((tally, None));
        }
        let resend: bool = tx.query_row(
            "SELECT resend FROM outbox_batch WHERE id = ?1",
            [batch.id],
            |r| r.get(0),
        )?;
        let (in_flight, refused): (Vec<OutboxItem>, Vec<OutboxItem>) = rest
            .into_iter()
            .partition(|item| resend || unknown.contains(&item.e164));
        if in_flight.is_empty() {
            tx.execute(
                "UPDATE outbox_batch SET state = 'planned' WHERE id = ?1",
                [batch.id],
            )?;
        } else if !refused.is_empty() {
            // The refused ones become a batch of their own, never sent; the unknown ones
            // stay in this one.
            let mut leave =
                tx.prepare("DELETE FROM outbox_item WHERE batch_id = ?1 AND contact_key = ?2")?;
            for item in &refused {
                leave.execute(params![batch.id, item.e164])?;
            }
            let rows = refused
                .iter()
                .map(|i| (i.e164.as_str(), &i.names, i.client_id));
            insert_batch(&tx, &batch.backend, batch.kind, now, rows)?;
        }
        crate::failpoint::hit(crate::failpoint::APPLY_CUT);
        tx.commit()?;
        Ok((tally, Some(self.batch(batch.id)?)))
    }

    /// The server refused a batch by naming its items (a batch of one names its only item):
    /// imports are held as rejected, deletes are held from being planned again; both are
    /// tried again after `REJECTED_RETRY` (an import earlier if its card changes).
    pub fn reject_batch(
        &mut self,
        batch: &Batch,
        reason: &str,
        now: Timestamp,
    ) -> Result<ImportTally> {
        let results: Vec<(i64, ImportResult)> = batch
            .items
            .iter()
            .map(|i| {
                (
                    i.client_id.unwrap_or_default(),
                    ImportResult::Rejected(reason.to_owned()),
                )
            })
            .collect();
        match batch.kind {
            BatchKind::Import => self.apply_import(batch, &results, now, &|_| 0),
            BatchKind::Delete => {
                let tx = self.conn_mut().transaction()?;
                {
                    let mut hold = tx.prepare(
                        "UPDATE mirror SET delete_hold_until = ?3, delete_hold_reason = ?4, updated_at = ?5
                         WHERE backend = ?1 AND contact_key = ?2",
                    )?;
                    for item in &batch.items {
                        hold.execute(params![
                            batch.backend,
                            item.e164,
                            now + REJECTED_RETRY,
                            reason,
                            now
                        ])?;
                    }
                }
                finish_batch(&tx, batch, &format!("refused: {reason}"), now)?;
                tx.commit()?;
                Ok(ImportTally {
                    rejected: batch.items.len(),
                    ..ImportTally::default()
                })
            }
        }
    }

    /// The server refused a batch of several items without naming one: it goes back to the
    /// outbox as two planned halves (same items, same client_ids), so that the item it
    /// refuses is found and held alone while the others go through.
    pub fn split_batch(&mut self, batch: &Batch, reason: &str, now: Timestamp) -> Result<()> {
        let tx = self.conn_mut().transaction()?;
        let half = batch.items.len().div_ceil(2);
        for items in batch.items.chunks(half.max(1)) {
            let rows = items
                .iter()
                .map(|i| (i.e164.as_str(), &i.names, i.client_id));
            insert_batch(&tx, &batch.backend, batch.kind, now, rows)?;
        }
        finish_batch(
            &tx,
            batch,
            &format!("refused as a whole ({reason}): split in two to find the item"),
            now,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Saved numbers whose import had a step left when the batch was cut (Telegram: the
    /// `addContact` of the card's fallback username, refused by a wait): held under their
    /// own names until `until`, when the planner imports them again.
    pub fn hold_for_retry(
        &self,
        backend: &str,
        keys: &[String],
        until: Timestamp,
        reason: &str,
    ) -> Result<()> {
        let mut hold = self.conn().prepare_cached(
            "UPDATE mirror SET hold_first_name = first_name, hold_last_name = last_name,
               hold_until = ?3, hold_reason = ?4, hold_rejected = 0
             WHERE backend = ?1 AND contact_key = ?2 AND state = 'saved'",
        )?;
        for key in keys {
            hold.execute(params![backend, key, until, reason])?;
        }
        Ok(())
    }

    pub fn set_pause(&self, backend: &str, until: Timestamp, reason: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE account SET paused_until = ?2, pause_reason = ?3 WHERE backend = ?1",
            params![backend, until, reason],
        )?;
        Ok(())
    }

    pub fn set_auth_required(&self, backend: &str, reason: &str) -> Result<()> {
        self.ensure_account(backend)?;
        self.conn().execute(
            "UPDATE account SET auth_required = 1, last_error = ?2 WHERE backend = ?1",
            params![backend, reason],
        )?;
        Ok(())
    }

    pub fn last_reconcile(&self, backend: &str) -> Result<Option<Timestamp>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last_reconcile FROM account WHERE backend = ?1",
                [backend],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Applies what the remote list says: our imported numbers that are gone there were
    /// deleted in the app. `reimport`: forget them so the next diff imports them again;
    /// otherwise hold them (not imported again until the card changes). Numbers we never
    /// imported (added by hand in the app) are none of our business.
    pub fn apply_reconcile(
        &mut self,
        backend: &str,
        remote_numbers: &std::collections::BTreeSet<String>,
        reimport: bool,
        now: Timestamp,
    ) -> Result<usize> {
        let remote: Vec<RemoteContact> = remote_numbers
            .iter()
            .map(|e164| RemoteContact {
                e164: e164.clone(),
                first_name: String::new(),
                last_name: String::new(),
                user_id: None,
                username: None,
            })
            .collect();
        // Applied as given (no safety limits): the caller states what the remote lacks.
        let policy = crate::store::ListingPolicy {
            reimport,
            adopt_existing: false,
            limits: crate::diff::DeleteLimits::default(),
            force: true,
        };
        self.apply_reconcile_with_hash(backend, &remote, policy, None, now)
    }

    /// `apply_reconcile` on the remote's contacts, matched by user id where the mirror and
    /// the remote know it (a contact is a user: their number may change or be hidden), by
    /// phone otherwise. One of ours the remote shows under another number keeps its row,
    /// with that number in `remote_phone` for `status`. `hash` (the list's getContacts hash)
    /// is kept for the next time: while no batch is sent, an unchanged list then costs one
    /// "not modified".
    ///
    /// A list that lacks more of ours than the safety limits allow (a glitch that lists
    /// nothing, an account emptied by mistake) is not applied: the reconcile is held, as
    /// deletions are, until `--force-delete` (which also applies it) or a list that is
    /// within the limits. Under `keep` such a list would otherwise mark every contact as
    /// deleted in the app for good.
    pub fn apply_reconcile_with_hash(
        &mut self,
        backend: &str,
        remote: &[RemoteContact],
        policy: crate::store::ListingPolicy,
        hash: Option<i64>,
        now: Timestamp,
    ) -> Result<usize> {
        let reimport = policy.reimport;
        let by_user: BTreeMap<i64, &str> = remote
            .iter()
            .filter_map(|c| c.user_id.map(|id| (id, c.e164.as_str())))
            .collect();
        let username_of: BTreeMap<i64, &str> = remote
            .iter()
            .filter_map(|c| Some((c.user_id?, c.username.as_deref()?)))
            .collect();
        let phones: BTreeSet<&str> = remote.iter().map(|c| c.e164.as_str()).collect();
        let ours: Vec<(String, Option<i64>)> = {
            let mut statement = self.conn().prepare(
                "SELECT contact_key, user_id FROM mirror WHERE backend = ?1 AND state = 'imported'",
            )?;
            let rows = statement.query_map([backend], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut gone = Vec::new();
        let mut moved = Vec::new();
        let fallbacks = if username_of.is_empty() {
            BTreeMap::new()
        } else {
            self.fallback_usernames()?
        };
        for (e164, user_id) in ours {
            let found_by_username = match user_id.and_then(|id| username_of.get(&id)) {
                Some(shown) => fallbacks
                    .get(&e164)
                    .is_some_and(|fallback| fallback.eq_ignore_ascii_case(shown)),
                None => false,
            };
            match user_id.and_then(|id| by_user.get(&id)) {
                // Added by username: whatever number the remote shows is no change of ours.
                Some(_) if crate::contact_key::is_username(&e164) => moved.push((e164, None)),
                // A number without an account, added by its card's username instead: the
                // user's own number is no change either.
                Some(_) if found_by_username => moved.push((e164, None)),
                // Shown under another number: changed on Telegram. Hidden (empty): present.
                Some(now_shown) if !now_shown.is_empty() && *now_shown != e164 => {
                    moved.push((e164, Some((*now_shown).to_owned())));
                }
                Some(_) => moved.push((e164, None)),
                None if phones.contains(e164.as_str()) => moved.push((e164, None)),
                None => gone.push(e164),
            }
        }
        let ours = moved.len() + gone.len();
        let gone_plan = crate::diff::Plan {
            deletes: gone.clone(),
            ..crate::diff::Plan::default()
        };
        if let Some(held) = crate::diff::guard(&gone_plan, ours, policy.limits, policy.force) {
            let reason = format!(
                "Telegram's contact list lacks {} of our {ours} contacts, so nothing of it was applied: {}",
                held.deletes,
                held.reason.replace("deletions", "missing contacts")
            );
            // No hash kept: the next reconcile reads the whole list again.
            self.conn().execute(
                "UPDATE account SET last_reconcile = ?2, remote_hash = NULL, reconcile_held = ?3,
                   reconcile_held_reason = ?4 WHERE backend = ?1",
                params![backend, now, held.deletes, reason],
            )?;
            return Ok(0);
        }
        let tx = self.conn_mut().transaction()?;
        {
            let mut note = tx.prepare(
                "UPDATE mirror SET remote_phone = ?3
                 WHERE backend = ?1 AND contact_key = ?2 AND remote_phone IS NOT ?3",
            )?;
            for (e164, shown) in &moved {
                note.execute(params![backend, e164, shown])?;
            }
        }
        for e164 in &gone {
            if reimport {
                tx.execute(
                    "DELETE FROM mirror WHERE backend = ?1 AND contact_key = ?2",
                    params![backend, e164],
                )?;
            } else {
                tx.execute(
                    "UPDATE mirror SET state = 'not_imported', hold_first_name = first_name,
                       hold_last_name = last_name, hold_until = NULL,
                       hold_reason = 'deleted in the app (on_remote_delete = keep)', updated_at = ?3
                     WHERE backend = ?1 AND contact_key = ?2",
                    params![backend, e164, now],
                )?;
            }
        }
        tx.execute(
            "UPDATE account SET last_reconcile = ?2, remote_hash = ?3, reconcile_held = NULL,
               reconcile_held_reason = NULL WHERE backend = ?1",
            params![backend, now, hash],
        )?;
        tx.commit()?;
        Ok(gone.len())
    }

    /// The getContacts hash of the list the mirror was last reconciled with, unless a batch
    /// was sent since.
    pub fn remote_hash(&self, backend: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT remote_hash FROM account WHERE backend = ?1",
                [backend],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// The Telegram user the account's mirror and outbox belong to, if known.
    pub fn remote_user_id(&self, backend: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT remote_user_id FROM account WHERE backend = ?1",
                [backend],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Records whose the mirror is, when that is not known yet (`logout` of a session).
    pub fn note_remote_user(&self, backend: &str, user_id: i64) -> Result<()> {
        self.ensure_account(backend)?;
        self.conn().execute(
            "UPDATE account SET remote_user_id = ?2 WHERE backend = ?1 AND remote_user_id IS NULL",
            params![backend, user_id],
        )?;
        Ok(())
    }

    /// A login as `user_id`: when the account's mirror and outbox belong to another user
    /// (`owner`, or `previous`, the session's user before this login, when the account has
    /// none recorded; unknown with something in them counts as another), they are set aside
    /// under `backend@<their user id>` and never used for this user; a mirror set aside
    /// earlier for `user_id` comes back. client_ids go on from the highest counter.
    pub fn adopt_remote_user(
        &mut self,
        backend: &str,
        user_id: i64,
        previous: Option<i64>,
        now: Timestamp,
    ) -> Result<Option<SetAside>> {
        self.ensure_account(backend)?;
        let tx = self.conn_mut().transaction()?;
        let (owner, next_client_id): (Option<i64>, i64) = tx.query_row(
            "SELECT remote_user_id, next_client_id FROM account WHERE backend = ?1",
            [backend],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let owner = owner.or(previous);
        let contacts: u64 = tx.query_row(
            "SELECT count(*) FROM mirror WHERE backend = ?1",
            [backend],
            |r| r.get(0),
        )?;
        let batches: i64 = tx.query_row(
            "SELECT count(*) FROM outbox_batch WHERE backend = ?1 AND state != 'applied'",
            [backend],
            |r| r.get(0),
        )?;
        let empty = contacts == 0 && batches == 0;
        if owner == Some(user_id) || (owner.is_none() && empty) {
            tx.execute(
                "UPDATE account SET remote_user_id = ?2 WHERE backend = ?1",
                params![backend, user_id],
            )?;
            tx.commit()?;
            return Ok(None);
        }
        let label = owner.map_or_else(|| format!("unknown-{now}"), |id| id.to_string());
        let mut key = format!("{backend}@{label}");
        let taken = |tx: &rusqlite::Transaction<'_>, key: &str| -> rusqlite::Result<bool> {
            tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM account WHERE backend = ?1)",
                [key],
                |r| r.get(0),
            )
        };
        let mut n = 1;
        while taken(&tx, &key)? {
            n += 1;
            key = format!("{backend}@{label}-{n}");
        }
        rename_account(&tx, backend, &key)?;
        let earlier = format!("{backend}@{user_id}");
        let restored = if taken(&tx, &earlier)? {
            rename_account(&tx, &earlier, backend)?;
            Some(earlier)
        } else {
            tx.execute("INSERT INTO account (backend) VALUES (?1)", [backend])?;
            None
        };
        // The restored mirror may be old: compare it with the full list at once.
        tx.execute(
            "UPDATE account SET remote_user_id = ?2, next_client_id = max(next_client_id, ?3),
               auth_required = 0, last_error = NULL, remote_hash = NULL, last_reconcile = NULL
             WHERE backend = ?1",
            params![backend, user_id, next_client_id],
        )?;
        tx.commit()?;
        Ok(Some(SetAside {
            key,
            contacts,
            batches: usize::try_from(batches).unwrap_or_default(),
            restored,
        }))
    }

    pub fn note_reconcile(&self, backend: &str, now: Timestamp) -> Result<()> {
        self.conn().execute(
            "UPDATE account SET last_reconcile = ?2 WHERE backend = ?1",
            params![backend, now],
        )?;
        Ok(())
    }

    /// After a login: the account may send again.
    pub fn clear_auth_required(&self, backend: &str) -> Result<()> {
        self.ensure_account(backend)?;
        self.conn().execute(
            "UPDATE account SET auth_required = 0, last_error = NULL WHERE backend = ?1",
            [backend],
        )?;
        Ok(())
    }

    pub fn note_success(&self, backend: &str, now: Timestamp) -> Result<()> {
        self.conn().execute(
            "UPDATE account SET last_success = ?2, last_error = NULL WHERE backend = ?1",
            params![backend, now],
        )?;
        Ok(())
    }

    pub fn note_error(&self, backend: &str, error: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE account SET last_error = ?2 WHERE backend = ?1",
            params![backend, error],
        )?;
        Ok(())
    }
}

fn in_flight(conn: &rusqlite::Connection, backend: &str) -> Result<BTreeSet<String>> {
    let mut statement = conn.prepare_cached(
        "SELECT i.contact_key FROM outbox_item i JOIN outbox_batch b ON b.id = i.batch_id
         WHERE b.backend = ?1 AND b.state = 'sent'",
    )?;
    let rows = statement.query_map([backend], |row| row.get::<_, String>(0))?;
    rows.map(|r| r.map_err(Into::into)).collect()
}

/// Moves an account row with its mirror and batches to another key. The row moves whole:
/// every column a later migration adds (the forgetting flag, a pause, a stop) goes with it.
/// The mirror and the batches reference the account, so the foreign keys are checked when
/// the transaction commits, once all three have moved.
fn rename_account(tx: &rusqlite::Transaction<'_>, from: &str, to: &str) -> Result<()> {
    tx.pragma_update(None, "defer_foreign_keys", true)?;
    for table in ["account", "mirror", "outbox_batch"] {
        tx.execute(
            &format!("UPDATE {table} SET backend = ?2 WHERE backend = ?1"),
            params![from, to],
        )?;
    }
    Ok(())
}

/// A new planned batch with its items: (number, names, client_id).
fn insert_batch<'a>(
    tx: &rusqlite::Transaction<'_>,
    backend: &str,
    kind: BatchKind,
    now: Timestamp,
    items: impl IntoIterator<Item = (&'a str, &'a Names, Option<i64>)>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO outbox_batch (backend, kind, state, created_at) VALUES (?1, ?2, 'planned', ?3)",
    )?
    .execute(params![backend, kind.as_str(), now])?;
    let id = tx.last_insert_rowid();
    let mut new_item = tx.prepare_cached(
        "INSERT INTO outbox_item (batch_id, contact_key, first_name, last_name, client_id) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (e164, names, client_id) in items {
        new_item.execute(params![id, e164, names.first, names.last, client_id])?;
    }
    Ok(())
}

/// Records the results of some items of an import batch (all of them, or those a cut
/// batch applied) in the caller's transaction.
fn record_import_results(
    tx: &rusqlite::Transaction<'_>,
    batch: &Batch,
    items: &[OutboxItem],
    results: &[(i64, ImportResult)],
    now: Timestamp,
    retry_delay: &dyn Fn(u32) -> i64,
) -> Result<ImportTally> {
    let mut tally = ImportTally::default();
    {
        let mut attempts_of =
            tx.prepare("SELECT attempts FROM mirror WHERE backend = ?1 AND contact_key = ?2")?;
        let mut confirm = tx.prepare(
            "INSERT INTO mirror (backend, contact_key, first_name, last_name, state, user_id, access_hash, client_id, attempts, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9)
             ON CONFLICT(backend, contact_key) DO UPDATE SET first_name = excluded.first_name,
               last_name = excluded.last_name, state = excluded.state,
               user_id = coalesce(excluded.user_id, mirror.user_id),
               access_hash = coalesce(excluded.access_hash, mirror.access_hash),
               client_id = excluded.client_id, hold_first_name = NULL, hold_last_name = NULL,
               hold_until = NULL, hold_reason = NULL, hold_rejected = 0,
               delete_hold_until = NULL, delete_hold_reason = NULL,
               attempts = 0, updated_at = excluded.updated_at",
        )?;
        let mut set_importers =
            tx.prepare("UPDATE mirror SET importers = ?3 WHERE backend = ?1 AND contact_key = ?2")?;
        let mut hold = tx.prepare(
            "INSERT INTO mirror (backend, contact_key, first_name, last_name, state, client_id, hold_first_name, hold_last_name, hold_until, hold_reason, attempts, updated_at, hold_rejected)
             VALUES (?1, ?2, '', '', 'not_imported', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(backend, contact_key) DO UPDATE SET client_id = excluded.client_id,
               hold_first_name = excluded.hold_first_name, hold_last_name = excluded.hold_last_name,
               hold_until = excluded.hold_until, hold_reason = excluded.hold_reason,
               hold_rejected = excluded.hold_rejected,
               attempts = excluded.attempts, updated_at = excluded.updated_at",
        )?;
        for item in items {
            let client_id = item.client_id.unwrap_or_default();
            let result = results
                .iter()
                .find(|(id, _)| *id == client_id)
                .map(|(_, r)| r.clone())
                // No word on an item is no proof it arrived: try again later.
                .unwrap_or(ImportResult::Retry);
            match result {
                ImportResult::Imported {
                    user_id,
                    access_hash,
                } => {
                    tally.imported += 1;
                    confirm.execute(params![
                        batch.backend,
                        item.e164,
                        item.names.first,
                        item.names.last,
                        "imported",
                        user_id,
                        access_hash,
                        client_id,
                        now
                    ])?;
                }
                ImportResult::Saved { importers } => {
                    tally.saved += 1;
                    if importers.is_some() {
                        tally.popular += 1;
                    }
                    confirm.execute(params![
                        batch.backend,
                        item.e164,
                        item.names.first,
                        item.names.last,
                        "saved",
                        None::<i64>,
                        None::<i64>,
                        client_id,
                        now
                    ])?;
                    set_importers.execute(params![batch.backend, item.e164, importers])?;
                }
                ImportResult::SavedByUser => {
                    tally.by_user += 1;
                    super::ownership::record_saved_by_user(
                        tx,
                        &batch.backend,
                        &item.e164,
                        &item.names,
                        client_id,
                        batch.id,
                        now,
                    )?;
                }
                ImportResult::Retry | ImportResult::Rejected(_) => {
                    let attempts: u32 = attempts_of
                        .query_row(params![batch.backend, item.e164], |r| r.get(0))
                        .optional()?
                        .unwrap_or(0)
                        + 1;
                    let (until, reason, rejected) = match &result {
                        // Tried again when the card changes, or after a day.
                        ImportResult::Rejected(reason) => {
                            tally.rejected += 1;
                            (now + REJECTED_RETRY, reason.clone(), true)
                        }
                        _ => {
                            tally.retrying += 1;
                            (
                                now + retry_delay(attempts),
                                "retry later (server limit)".to_owned(),
                                false,
                            )
                        }
                    };
                    hold.execute(params![
                        batch.backend,
                        item.e164,
                        client_id,
                        item.names.first,
                        item.names.last,
                        until,
                        reason,
                        attempts,
                        now,
                        rejected
                    ])?;
                }
            }
        }
    }
    Ok(tally)
}

fn finish_batch(
    tx: &rusqlite::Transaction<'_>,
    batch: &Batch,
    outcome: &str,
    now: Timestamp,
) -> Result<()> {
    tx.execute(
        "UPDATE outbox_batch SET state = 'applied', applied_at = ?2, outcome = ?3 WHERE id = ?1",
        params![batch.id, now, outcome],
    )?;
    Ok(())
}

fn account_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AccountState> {
    Ok(AccountState {
        backend: row.get(0)?,
        next_client_id: row.get(1)?,
        paused_until: row.get(2)?,
        pause_reason: row.get(3)?,
        auth_required: row.get::<_, i64>(4)? != 0,
        last_success: row.get(5)?,
        last_error: row.get(6)?,
        forgetting: row.get::<_, i64>(7)? != 0,
    })
}

fn batch_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Batch> {
    let kind: String = row.get(2)?;
    let state: String = row.get(3)?;
    Ok(Batch {
        id: row.get(0)?,
        backend: row.get(1)?,
        kind: if kind == "delete" {
            BatchKind::Delete
        } else {
            BatchKind::Import
        },
        state: BatchState::parse(&state),
        created_at: row.get(4)?,
        sent_at: row.get(5)?,
        applied_at: row.get(6)?,
        send_count: row.get(7)?,
        outcome: row.get(8)?,
        items: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{ImportReason, Names, PlannedImport};

    /// A login to another account and back: the first account's row comes back whole
    /// (forgetting, pause, counter), with its mirror and its queue.
    #[test]
    fn an_account_set_aside_and_taken_back_keeps_every_column() {
        let mut store = Store::open_in_memory().unwrap();
        store.adopt_remote_user("telegram", 1, None, 0).unwrap();
        let import = PlannedImport {
            e164: "+4930123456".into(),
            names: Names {
                first: "Anna".into(),
                last: String::new(),
            },
            reason: ImportReason::New,
        };
        store
            .queue_plan("telegram", None, &[import], &[], &[], 100, 0)
            .unwrap();
        store.set_forgetting("telegram", true).unwrap();
        store
            .set_pause("telegram", 5000, "FLOOD_WAIT_5000")
            .unwrap();

        let aside = store
            .adopt_remote_user("telegram", 2, None, 10)
            .unwrap()
            .unwrap();
        assert_eq!(aside.key, "telegram@1");
        let other = store.account("telegram").unwrap().unwrap();
        assert!(
            !other.forgetting && other.paused_until.is_none(),
            "{other:?}"
        );
        assert_eq!(store.open_batch_count("telegram").unwrap(), 0);

        store.adopt_remote_user("telegram", 1, None, 20).unwrap();
        let back = store.account("telegram").unwrap().unwrap();
        assert!(back.forgetting, "{back:?}");
        assert_eq!(back.paused_until, Some(5000));
        assert_eq!(store.open_batch_count("telegram").unwrap(), 1);
        assert!(store.account("telegram@1").unwrap().is_none());
    }
}
