//! Whose a contact is, for remotes whose contact list also holds the user's own contacts
//! (WhatsApp's phone book): the reconcile that derives it from the listing, the contacts
//! recorded as the user's, and the stop of an account whose configuration does not work.
//!
//! Mirror states here: `imported`/`saved` are ours; `user` is a number the user had saved
//! before we added it (never renamed or deleted); `unverified` may be ours but is not shown
//! to be (an add whose reply was lost came back as "already saved", or an old version
//! recorded it): the next reconcile decides by the name the phone shows.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, Timestamp};
use crate::backend::RemoteContact;
use crate::backend::whapi::contact_name;
use crate::diff::{self, DeleteLimits, Held, Names, Plan};

/// How a listing is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListingPolicy {
    /// `on_remote_delete = "reimport"`: ours deleted on the phone are imported again.
    pub reimport: bool,
    /// `adopt_existing`: numbers the user saved are taken over (added again as ours).
    pub adopt_existing: bool,
    pub limits: DeleteLimits,
    /// `--force-delete`: apply a listing that lacks more of ours than the limits allow.
    pub force: bool,
}

/// What applying a listing did (or, `held`, why it did nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListingOutcome {
    /// Ours that the phone no longer has (deleted on the phone).
    pub gone: usize,
    /// Unverified contacts confirmed as ours.
    pub confirmed: usize,
    /// Contacts recorded (or confirmed) as the user's.
    pub users: usize,
    /// Rows dropped: not on the phone (never arrived), or given up to `adopt_existing`.
    pub dropped: usize,
    pub held: Option<Held>,
}

/// Per account, for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OwnershipCounts {
    /// Numbers of the address book the user had already saved on the phone: left alone.
    pub saved_by_user: u64,
    /// Recorded, not yet checked against the phone's list.
    pub unverified: u64,
}

/// Who a remote contact belongs to, for `remote list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    Contactsyncd,
    User,
    Unverified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    state: String,
    names: Names,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    gone: Vec<String>,
    /// Unverified rows the phone shows with our name.
    confirmed: Vec<String>,
    /// (number, the phone's name) to record as the user's.
    users: Vec<(String, String)>,
    dropped: Vec<String>,
}

/// Pure: what a listing (number → the name the phone shows) means for the mirror.
fn resolve(
    rows: &BTreeMap<String, Row>,
    listing: &BTreeMap<String, String>,
    in_flight: &BTreeSet<String>,
    adopt_existing: bool,
) -> Changes {
    let mut changes = Changes::default();
    for (e164, row) in rows {
        let shown = listing.get(e164);
        match (row.state.as_str(), shown) {
            ("imported" | "saved", None) => changes.gone.push(e164.clone()),
            ("unverified", Some(name)) if *name == contact_name(&row.names) => {
                changes.confirmed.push(e164.clone());
            }
            // Taken over: the row goes, the next plan adds the number, and the add's 409
            // renames it (only numbers still in the address book are planned).
            ("unverified" | "user", Some(_)) if adopt_existing => {
                changes.dropped.push(e164.clone())
            }
            ("unverified", Some(name)) => changes.users.push((e164.clone(), name.clone())),
            ("user", Some(name)) if *name != row.names.first => {
                changes.users.push((e164.clone(), name.clone()));
            }
            // Never arrived (an old version took a 404 for success), or the user deleted
            // their contact: the number is free, and added as ours if the book wants it.
            ("unverified" | "user", None) => changes.dropped.push(e164.clone()),
            _ => {}
        }
    }
    if !adopt_existing {
        // Saved on the phone before we added them: the user's. A number of a batch still
        // in flight may be our own add whose reply is pending: its batch decides.
        for (e164, name) in listing {
            if !rows.contains_key(e164) && !in_flight.contains(e164) {
                changes.users.push((e164.clone(), name.clone()));
            }
        }
    }
    changes
}

impl Store {
    /// Applies the phone's listing (saved contacts only): ours that are gone were deleted on
    /// the phone (`reimport` or hold, as `apply_reconcile`); unverified rows are decided by
    /// the name shown; every other saved number is the user's. A listing that lacks more of
    /// ours than the limits allow changes nothing and is held (until `force`).
    pub fn apply_listing(
        &mut self,
        backend: &str,
        listing: &[RemoteContact],
        policy: ListingPolicy,
        now: Timestamp,
    ) -> Result<ListingOutcome> {
        let listing: BTreeMap<String, String> = listing
            .iter()
            .map(|c| {
                let name = format!("{} {}", c.first_name, c.last_name);
                (c.e164.clone(), name.trim().to_owned())
            })
            .collect();
        let rows = self.ownership_rows(backend)?;
        let in_flight = self.in_flight(backend)?;
        let changes = resolve(&rows, &listing, &in_flight, policy.adopt_existing);
        let ours = rows
            .values()
            .filter(|r| matches!(r.state.as_str(), "imported" | "saved"))
            .count();
        let gone_plan = Plan {
            deletes: changes.gone.clone(),
            ..Plan::default()
        };
        if let Some(held) = diff::guard(&gone_plan, ours, policy.limits, policy.force) {
            let held = Held {
                deletes: held.deletes,
                reason: format!(
                    "the phone's contact list lacks {} of our {ours} contacts, so nothing of it was applied: {}",
                    held.deletes,
                    held.reason.replace("deletions", "missing contacts")
                ),
            };
            self.conn().execute(
                "UPDATE account SET last_reconcile = ?2, reconcile_held = ?3,
                   reconcile_held_reason = ?4 WHERE backend = ?1",
                params![backend, now, held.deletes, held.reason],
            )?;
            return Ok(ListingOutcome {
                held: Some(held),
                ..ListingOutcome::default()
            });
        }
        let tx = self.conn_mut().transaction()?;
        {
            let mut remove =
                tx.prepare("DELETE FROM mirror WHERE backend = ?1 AND contact_key = ?2")?;
            let mut keep_deleted = tx.prepare(
                "UPDATE mirror SET state = 'not_imported', hold_first_name = first_name,
                   hold_last_name = last_name, hold_until = NULL,
                   hold_reason = 'deleted on the phone (on_remote_delete = keep)', updated_at = ?3
                 WHERE backend = ?1 AND contact_key = ?2",
            )?;
            for e164 in &changes.gone {
                if policy.reimport {
                    remove.execute(params![backend, e164])?;
                } else {
                    keep_deleted.execute(params![backend, e164, now])?;
                }
            }
            for e164 in &changes.dropped {
                remove.execute(params![backend, e164])?;
            }
            let mut confirm = tx.prepare(
                "UPDATE mirror SET state = 'imported', updated_at = ?3 WHERE backend = ?1 AND contact_key = ?2",
            )?;
            for e164 in &changes.confirmed {
                confirm.execute(params![backend, e164, now])?;
            }
            let mut user = tx.prepare(
                "INSERT INTO mirror (backend, contact_key, first_name, last_name, state, attempts, updated_at)
                 VALUES (?1, ?2, ?3, '', 'user', 0, ?4)
                 ON CONFLICT(backend, contact_key) DO UPDATE SET first_name = excluded.first_name,
                   last_name = '', state = 'user', hold_first_name = NULL, hold_last_name = NULL,
                   hold_until = NULL, hold_reason = NULL, updated_at = excluded.updated_at",
            )?;
            for (e164, name) in &changes.users {
                user.execute(params![backend, e164, name, now])?;
            }
        }
        tx.execute(
            "UPDATE account SET last_reconcile = ?2, reconcile_held = NULL,
               reconcile_held_reason = NULL WHERE backend = ?1",
            params![backend, now],
        )?;
        tx.commit()?;
        Ok(ListingOutcome {
            gone: changes.gone.len(),
            confirmed: changes.confirmed.len(),
            users: changes.users.len(),
            dropped: changes.dropped.len(),
            held: None,
        })
    }

    fn ownership_rows(&self, backend: &str) -> Result<BTreeMap<String, Row>> {
        let mut statement = self.conn().prepare(
            "SELECT contact_key, state, first_name, last_name FROM mirror WHERE backend = ?1",
        )?;
        let rows = statement.query_map([backend], |row| {
            Ok((
                row.get::<_, String>(0)?,
                Row {
                    state: row.get(1)?,
                    names: Names {
                        first: row.get(2)?,
                        last: row.get(3)?,
                    },
                },
            ))
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// The reconcile the safety limits hold, if any (shown like held deletions).
    pub fn reconcile_hold(&self, backend: &str) -> Result<Option<Held>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT reconcile_held, reconcile_held_reason FROM account
                 WHERE backend = ?1 AND reconcile_held IS NOT NULL",
                [backend],
                |r| {
                    Ok(Held {
                        deletes: r.get::<_, usize>(0)?,
                        reason: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    })
                },
            )
            .optional()?)
    }

    /// Who each number of the account's mirror belongs to (numbers not in it: the user's).
    pub fn owners(&self, backend: &str) -> Result<BTreeMap<String, Owner>> {
        Ok(self
            .ownership_rows(backend)?
            .into_iter()
            .filter_map(|(e164, row)| {
                let owner = match row.state.as_str() {
                    "imported" | "saved" => Owner::Contactsyncd,
                    "user" => Owner::User,
                    "unverified" => Owner::Unverified,
                    _ => return None,
                };
                Some((e164, owner))
            })
            .collect())
    }

    pub fn ownership_counts(&self, backend: &str) -> Result<OwnershipCounts> {
        Ok(self.conn().query_row(
            "SELECT
               coalesce(sum(state = 'user' AND EXISTS (SELECT 1 FROM card_phone c WHERE c.contact_key = m.contact_key)), 0),
               coalesce(sum(state = 'unverified'), 0)
             FROM mirror m WHERE backend = ?1",
            [backend],
            |r| {
                Ok(OwnershipCounts {
                    saved_by_user: r.get(0)?,
                    unverified: r.get(1)?,
                })
            },
        )?)
    }

    /// Called before an account's pass with the configuration it runs with: when that
    /// changed (a fixed base_url or token, adopt_existing flipped), a setup stop and a
    /// refused token are lifted and the remote list is read again at once.
    pub fn note_setup(&self, backend: &str, key: Option<&str>) -> Result<()> {
        let Some(key) = key else {
            return Ok(());
        };
        self.conn().execute(
            "UPDATE account SET setup_key = ?2, setup_error = NULL, auth_required = 0,
               last_reconcile = NULL
             WHERE backend = ?1 AND setup_key IS NOT ?2",
            params![backend, key],
        )?;
        Ok(())
    }

    /// Stops the account until its configuration changes.
    pub fn set_setup_error(&self, backend: &str, reason: &str) -> Result<()> {
        self.ensure_account(backend)?;
        self.conn().execute(
            "UPDATE account SET setup_error = ?2, last_error = ?2 WHERE backend = ?1",
            params![backend, reason],
        )?;
        Ok(())
    }

    pub fn setup_error(&self, backend: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT setup_error FROM account WHERE backend = ?1",
                [backend],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }
}

/// The import result `SavedByUser` (in apply_import's transaction): the number is the
/// user's, unless this batch is a resend of a send without a known outcome (its reply lost,
/// the process died): then the "already saved" may be our own earlier add, and the next
/// reconcile, made due at once, decides by the name. A batch refused before (a wait, a 429)
/// is no resend: nothing of it was applied, so a 409 is the user's own contact.
pub(super) fn record_saved_by_user(
    tx: &rusqlite::Connection,
    backend: &str,
    e164: &str,
    sent: &Names,
    client_id: i64,
    batch_id: i64,
    now: Timestamp,
) -> Result<()> {
    // Read here, not from the caller's copy: set when the batch was claimed again.
    let resend: bool = tx.query_row(
        "SELECT resend FROM outbox_batch WHERE id = ?1",
        [batch_id],
        |r| r.get(0),
    )?;
    let (state, names) = if resend {
        ("unverified", sent.clone())
    } else {
        (
            "user",
            Names {
                first: String::new(),
                last: String::new(),
            },
        )
    };
    tx.execute(
        "INSERT INTO mirror (backend, contact_key, first_name, last_name, state, client_id, attempts, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)
         ON CONFLICT(backend, contact_key) DO UPDATE SET first_name = excluded.first_name,
           last_name = excluded.last_name, state = excluded.state, client_id = excluded.client_id,
           hold_first_name = NULL, hold_last_name = NULL, hold_until = NULL, hold_reason = NULL,
           attempts = 0, updated_at = excluded.updated_at",
        params![backend, e164, names.first, names.last, state, client_id, now],
    )?;
    if state == "unverified" {
        tx.execute(
            "UPDATE account SET last_reconcile = NULL WHERE backend = ?1",
            [backend],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, first: &str) -> Row {
        Row {
            state: state.into(),
            names: Names {
                first: first.into(),
                last: String::new(),
            },
        }
    }

    fn rows(entries: &[(&str, &str, &str)]) -> BTreeMap<String, Row> {
        entries
            .iter()
            .map(|(e164, state, first)| ((*e164).to_owned(), row(state, first)))
            .collect()
    }

    fn listing(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(e164, name)| ((*e164).to_owned(), (*name).to_owned()))
            .collect()
    }

    #[test]
    fn the_listing_decides_whose_a_contact_is() {
        let mirror = rows(&[
            ("+1", "imported", "Ann"),    // ours, still there
            ("+2", "imported", "Bob"),    // ours, deleted on the phone
            ("+3", "unverified", "Cleo"), // shown with our name: ours
            ("+4", "unverified", "Dan"),  // shown with the user's name: the user's
            ("+5", "unverified", "Eve"),  // not on the phone: never arrived
            ("+6", "user", "Mum"),        // still the user's
            ("+7", "user", "Dad"),        // the user deleted it
            ("+8", "not_imported", ""),   // held: not this listing's business
        ]);
        let phone = listing(&[
            ("+1", "Ann"),
            ("+3", "Cleo"),
            ("+4", "Daniel (work)"),
            ("+6", "Mum"),
            ("+8", "Frank"),
            ("+9", "Grandma"),  // saved by the user, not in the mirror
            ("+10", "Pending"), // in a batch in flight: its reply decides
        ]);
        let in_flight = BTreeSet::from(["+10".to_owned()]);
        let changes = resolve(&mirror, &phone, &in_flight, false);
        assert_eq!(changes.gone, ["+2"]);
        assert_eq!(changes.confirmed, ["+3"]);
        assert_eq!(changes.dropped, ["+5", "+7"]);
        assert_eq!(
            changes.users,
            [
                ("+4".to_owned(), "Daniel (work)".to_owned()),
                ("+9".to_owned(), "Grandma".to_owned())
            ]
        );
    }

    #[test]
    fn adopting_gives_up_the_users_rows_and_records_no_new_ones() {
        let mirror = rows(&[("+3", "unverified", "Cleo"), ("+6", "user", "Mum")]);
        let phone = listing(&[("+3", "Cleo"), ("+6", "Mum"), ("+9", "Grandma")]);
        let changes = resolve(&mirror, &phone, &BTreeSet::new(), true);
        assert_eq!(changes.confirmed, ["+3"]);
        assert_eq!(changes.dropped, ["+6"]);
        assert!(changes.users.is_empty(), "{changes:?}");
    }

    fn store_with(entries: &[(&str, &str, &str)]) -> Store {
        let store = Store::open_in_memory().unwrap();
        store.ensure_account("whatsapp").unwrap();
        for (e164, state, first) in entries {
            store
                .conn()
                .execute(
                    "INSERT INTO mirror (backend, contact_key, first_name, last_name, state, updated_at)
                     VALUES ('whatsapp', ?1, ?2, '', ?3, 0)",
                    params![e164, first, state],
                )
                .unwrap();
        }
        store
    }

    fn remote(e164: &str, name: &str) -> RemoteContact {
        RemoteContact {
            e164: e164.into(),
            first_name: name.into(),
            last_name: String::new(),
            user_id: None,
            username: None,
        }
    }

    fn policy() -> ListingPolicy {
        ListingPolicy {
            reimport: true,
            adopt_existing: false,
            limits: DeleteLimits::default(),
            force: false,
        }
    }

    #[test]
    fn a_listing_lacking_too_many_of_ours_changes_nothing_until_forced() {
        let entries: Vec<(String, &str, &str)> = (0..10)
            .map(|i| (format!("+4930{i}"), "imported", "X"))
            .collect();
        let entries: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|(e, s, f)| (e.as_str(), *s, *f))
            .collect();
        let mut store = store_with(&entries);
        let phone: Vec<RemoteContact> = (0..5).map(|i| remote(&format!("+4930{i}"), "X")).collect();
        let before = store.mirror("whatsapp").unwrap();
        let outcome = store
            .apply_listing("whatsapp", &phone, policy(), 100)
            .unwrap();
        let held = outcome.held.expect("held");
        assert_eq!(held.deletes, 5);
        assert!(held.reason.contains("lacks 5 of our 10"), "{}", held.reason);
        assert_eq!(store.mirror("whatsapp").unwrap(), before, "nothing applied");
        assert_eq!(store.reconcile_hold("whatsapp").unwrap(), Some(held));
        let forced = ListingPolicy {
            force: true,
            ..policy()
        };
        let outcome = store
            .apply_listing("whatsapp", &phone, forced, 200)
            .unwrap();
        assert_eq!(outcome.gone, 5);
        assert_eq!(store.mirror("whatsapp").unwrap().len(), 5);
        assert_eq!(store.reconcile_hold("whatsapp").unwrap(), None);
    }

    #[test]
    fn a_changed_setup_lifts_the_stop() {
        let store = store_with(&[]);
        store.note_setup("whatsapp", Some("a")).unwrap();
        store
            .set_setup_error("whatsapp", "base_url answers 404")
            .unwrap();
        store.note_setup("whatsapp", Some("a")).unwrap();
        assert!(store.setup_error("whatsapp").unwrap().is_some());
        store.note_setup("whatsapp", Some("b")).unwrap();
        assert_eq!(store.setup_error("whatsapp").unwrap(), None);
        assert_eq!(store.last_reconcile("whatsapp").unwrap(), None);
    }
}
