//! An in-memory messenger account that follows Telegram's documented contacts semantics:
//! numbers with an account are imported (unless their owner hides them from importers),
//! others are saved; an import quota sends the excess back in `retry_contacts`; faults are
//! scripted per call. Every call is recorded (`calls`); what the oracle may take as a resend
//! is only what was delivered (`delivered_imports`, `delivered_deletes`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use contactsyncd::backend::{
    Backend, BackendError, BoxFuture, Cut, DeleteCut, ImportCut, ImportResult, RemoteContact,
};
use contactsyncd::batch::ImportItem;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Import(Vec<(i64, String, String, String)>),
    Delete(Vec<String>),
}

/// What the next call does instead of (or besides) its normal work.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Refuse with FLOOD_WAIT_N before doing anything.
    FloodWait(u64),
    /// Do the work, then lose the reply (the connection drops before it arrives).
    ApplyThenDropReply,
    /// The session is revoked.
    AuthKeyUnregistered,
    /// The call's items are applied one step each (WhatsApp's one PUT per item, Telegram's
    /// addContact after importContacts): the first `applied` go through, the next step is
    /// answered FLOOD_WAIT_`seconds` and neither it nor any later step happens. `applied`
    /// 0 is [`Fault::FloodWait`].
    FloodWaitAfter { applied: usize, seconds: u64 },
    /// The first `applied` items go through with their answers; the next step is applied
    /// too but the connection drops before its answer (its outcome unknown to the client);
    /// later steps never happen. `applied` at or past the call's length is
    /// [`Fault::ApplyThenDropReply`].
    DropAfter { applied: usize },
}

/// Where a fault cuts a call of `len` steps (one step per item).
struct Steps {
    /// Steps applied, from the first.
    applied: usize,
    /// Steps that reached the server (`applied`, and a step whose answer was lost).
    delivered: usize,
    /// Steps answered (`..answered`): what the client knows was applied.
    answered: usize,
    error: Option<BackendError>,
}

impl Fault {
    fn cut(fault: Option<&Fault>, len: usize) -> Steps {
        let wait = |seconds: u64| BackendError::Wait {
            seconds,
            reason: format!("FLOOD_WAIT_{seconds}"),
        };
        let dropped = || BackendError::Temporary("connection reset before the reply".into());
        let refused = |error| Steps {
            applied: 0,
            delivered: 0,
            answered: 0,
            error: Some(error),
        };
        match fault {
            Some(Fault::FloodWait(seconds)) => refused(wait(*seconds)),
            Some(Fault::AuthKeyUnregistered) => {
                refused(BackendError::Auth("AUTH_KEY_UNREGISTERED".into()))
            }
            // One call for the whole batch, its answer lost.
            Some(Fault::ApplyThenDropReply) => Steps {
                applied: len,
                delivered: len,
                answered: 0,
                error: Some(dropped()),
            },
            Some(Fault::DropAfter { applied }) if *applied >= len => Steps {
                applied: len,
                delivered: len,
                answered: 0,
                error: Some(dropped()),
            },
            Some(Fault::DropAfter { applied }) => Steps {
                applied: applied + 1,
                delivered: applied + 1,
                answered: *applied,
                error: Some(dropped()),
            },
            // A cut past the last step is no cut: the call went through.
            Some(Fault::FloodWaitAfter { applied, seconds }) if *applied < len => Steps {
                applied: *applied,
                delivered: *applied,
                answered: *applied,
                error: Some(wait(*seconds)),
            },
            None | Some(Fault::FloodWaitAfter { .. }) => Steps {
                applied: len,
                delivered: len,
                answered: len,
                error: None,
            },
        }
    }
}

#[derive(Debug, Default)]
pub struct Account {
    /// Phones that have a Telegram account: user id.
    pub users: BTreeMap<String, i64>,
    /// Users who hide their number from importers: imported, but not shown as a contact.
    pub private: BTreeSet<String>,
    /// The account's contact list: phone → (first, last).
    pub contacts: BTreeMap<String, (String, String)>,
    /// Numbers saved without an account behind them.
    pub saved: BTreeMap<String, (String, String)>,
    /// How many more numbers may be imported before `retry_contacts` starts.
    pub import_quota: Option<usize>,
    pub faults: VecDeque<Fault>,
    pub calls: Vec<Call>,
    /// When set, every call is checked against it the moment it arrives (the model-based
    /// test's oracle): number → names the address book wants now.
    pub expected: Option<BTreeMap<String, (String, String)>>,
    /// Numbers the user added by hand in the app: never ours to rename or delete.
    pub hand_added: BTreeSet<String>,
    /// What the checks found wrong, for the test to report.
    pub violations: Vec<String>,
    /// Import items that reached the server (applied, or sent in a call whose reply was
    /// lost): `(client_id, number, first, last)`. A client_id is never reused, so an item
    /// sent again with the same one repeats a delivered item of the same batch.
    pub delivered_imports: BTreeSet<(i64, String, String, String)>,
    /// Delete keys that reached the server, with the outbox batch that carried them.
    pub delivered_deletes: BTreeSet<(i64, String)>,
    /// The state database the sender claims from: delete calls carry no ids, so the fake
    /// learns which batch a delete belongs to there (the one sent with that key). `None`:
    /// no delete counts as a resend.
    pub outbox: Option<PathBuf>,
    /// The account's name in that state (`""`: any): with two accounts, client ids and
    /// batches are looked up in this account's outbox only.
    pub backend: String,
    /// `on_remote_delete = keep`: contacts deleted in the app (key → their names then)
    /// while their card has not changed since; importing one again with those names
    /// is a violation.
    pub kept_deleted: BTreeMap<String, (String, String)>,
    /// Numbers the server refuses (an invalid number): a call carrying one is refused as a
    /// whole, naming no item, and nothing of it is applied.
    pub refused: BTreeSet<String>,
    /// `calls[process_start..]` were made by the process running now (see `crashed`).
    pub process_start: usize,
    /// Delete keys sent that were no resend, for the model to hold against the guard.
    pub fresh_deletes: usize,
    /// `(interval, reimport)` for `reconcile_policy`; `None`: the backend cannot list.
    pub reconcile: Option<(u64, bool)>,
}

impl Account {
    /// One import call: checked, recorded, then applied item by item up to the scripted
    /// fault. Returns the results the client gets, the client ids of items whose answer was
    /// lost, and the fault's answer, if any.
    fn import(
        &mut self,
        items: &[ImportItem],
    ) -> (Vec<(i64, ImportResult)>, Vec<i64>, Option<BackendError>) {
        let call = Call::Import(
            items
                .iter()
                .map(|i| {
                    (
                        i.client_id,
                        i.e164.clone(),
                        i.names.first.clone(),
                        i.names.last.clone(),
                    )
                })
                .collect(),
        );
        self.check(&call);
        self.calls.push(call);
        if let Some(bad) = items.iter().find(|i| self.refused.contains(&i.e164)) {
            let reason = format!("PHONE_NUMBER_INVALID ({})", bad.e164);
            return (
                Vec::new(),
                Vec::new(),
                Some(BackendError::Permanent(reason)),
            );
        }
        let fault = self.faults.pop_front();
        let cut = Fault::cut(fault.as_ref(), items.len());
        for item in &items[..cut.delivered] {
            self.delivered_imports.insert((
                item.client_id,
                item.e164.clone(),
                item.names.first.clone(),
                item.names.last.clone(),
            ));
        }
        let mut results = Vec::new();
        for item in &items[..cut.applied] {
            if let Some(quota) = self.import_quota.as_mut() {
                if *quota == 0 {
                    results.push((item.client_id, ImportResult::Retry));
                    continue;
                }
                *quota -= 1;
            }
            let names = (item.names.first.clone(), item.names.last.clone());
            let result = match self.users.get(&item.e164).copied() {
                Some(user_id) if !self.private.contains(&item.e164) => {
                    // One person, one contact: Telegram names the person, whichever of
                    // their keys (a number, a username) the import came by.
                    for twin in self.person(&item.e164) {
                        if let Some(shown) = self.contacts.get_mut(&twin) {
                            *shown = names.clone();
                        }
                    }
                    self.contacts.insert(item.e164.clone(), names);
                    ImportResult::Imported {
                        user_id: Some(user_id),
                        access_hash: Some(user_id * 7),
                    }
                }
                _ => {
                    self.saved.insert(item.e164.clone(), names);
                    ImportResult::Saved { importers: None }
                }
            };
            results.push((item.client_id, result));
        }
        results.truncate(cut.answered);
        let unknown = items[cut.answered..cut.delivered]
            .iter()
            .map(|i| i.client_id)
            .collect();
        (results, unknown, cut.error)
    }

    /// One delete-by-phone call: checked, recorded, applied number by number up to the
    /// scripted fault; with a fault: the numbers the client knows deleted, those whose answer
    /// was lost, and the fault's answer.
    fn delete(&mut self, phones: &[String]) -> Option<(Vec<String>, Vec<String>, BackendError)> {
        let call = Call::Delete(phones.to_vec());
        self.check(&call);
        self.calls.push(call);
        let fault = self.faults.pop_front();
        let cut = Fault::cut(fault.as_ref(), phones.len());
        self.deliver_deletes(&phones[..cut.delivered]);
        for phone in &phones[..cut.applied] {
            // Telegram deletes the person whose number it is, however they were added.
            for key in self.person(phone) {
                self.contacts.remove(&key);
            }
            self.saved.remove(phone);
        }
        cut.error.map(|error| {
            (
                phones[..cut.answered].to_vec(),
                phones[cut.answered..cut.delivered].to_vec(),
                error,
            )
        })
    }

    /// Every key of the person behind `key` (one user under a number and a username), or
    /// `key` alone when no user is known behind it.
    pub fn person(&self, key: &str) -> Vec<String> {
        match self.users.get(key) {
            Some(user) => self
                .users
                .iter()
                .filter(|(_, id)| *id == user)
                .map(|(key, _)| key.clone())
                .collect(),
            None => vec![key.to_owned()],
        }
    }

    pub fn import_calls(&self) -> Vec<&Vec<(i64, String, String, String)>> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Import(items) => Some(items),
                Call::Delete(_) => None,
            })
            .collect()
    }

    /// Checks a call the moment it arrives: nothing the address book contradicts is sent,
    /// except an item delivered before in the same batch (sent again after a lost reply or a
    /// crash), and nothing added by hand is touched. A call refused before it was applied
    /// (a wait, a revoked session) delivered nothing: sending it again is sending it anew.
    fn check(&mut self, call: &Call) {
        let Some(expected) = &self.expected else {
            return;
        };
        let mut found = Vec::new();
        let mut fresh = 0;
        match call {
            Call::Import(items) => {
                for (client_id, e164, first, last) in items {
                    if self.hand_added.contains(e164) {
                        found.push(format!("import touches the hand-added {e164}"));
                    }
                    let resend = self.delivered_imports.contains(&(
                        *client_id,
                        e164.clone(),
                        first.clone(),
                        last.clone(),
                    ));
                    let wanted = expected.get(e164);
                    if !resend && wanted != Some(&(first.clone(), last.clone())) {
                        found.push(format!(
                            "import of {e164} as {first:?} {last:?} while the address book wants {wanted:?}"
                        ));
                    }
                    if !resend
                        && self.kept_deleted.get(e164) == Some(&(first.clone(), last.clone()))
                    {
                        found.push(format!(
                            "import of {e164}, deleted in the app under on_remote_delete = keep, its card unchanged"
                        ));
                    }
                }
            }
            Call::Delete(phones) => {
                for e164 in phones {
                    if self.hand_added.contains(e164) {
                        found.push(format!("delete of the hand-added {e164}"));
                    }
                    let resend = self.delete_batch(e164).is_some_and(|batch| {
                        self.delivered_deletes.contains(&(batch, e164.clone()))
                    });
                    if !resend && expected.contains_key(e164) {
                        found.push(format!("delete of {e164}, which the address book wants"));
                    }
                    for twin in self.person(e164) {
                        if !resend
                            && twin != *e164
                            && expected.contains_key(&twin)
                            && self.contacts.contains_key(&twin)
                        {
                            found.push(format!(
                                "delete of {e164} deletes the person the address book wants as {twin}"
                            ));
                        }
                    }
                    fresh += usize::from(!resend);
                }
            }
        }
        self.fresh_deletes += fresh;
        self.violations.extend(found);
    }

    /// The delete batch in flight (claimed, `sent`) that carries `key`, read from the state
    /// the sender claimed it in.
    fn delete_batch(&self, key: &str) -> Option<i64> {
        let path = self.outbox.as_ref()?;
        let conn =
            rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()?;
        conn.query_row(
            "SELECT b.id FROM outbox_batch b JOIN outbox_item i ON i.batch_id = b.id
             WHERE b.kind = 'delete' AND b.state = 'sent' AND i.contact_key = ?1
               AND (?2 = '' OR b.backend = ?2)
             ORDER BY b.id DESC LIMIT 1",
            [key, self.backend.as_str()],
            |r| r.get(0),
        )
        .ok()
    }

    /// The process died: an answer it got but did not record is unknown to the next one,
    /// which reads the state. Each item of its calls that the state still shows in flight
    /// (its batch `sent`) may go out again as it was: it counts as delivered.
    pub fn crashed(&mut self) {
        let Some(path) = self.outbox.clone() else {
            return;
        };
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let backend = self.backend.clone();
        let in_flight = |client_id: i64| -> bool {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox_item i JOIN outbox_batch b ON b.id = i.batch_id
                 WHERE b.state = 'sent' AND i.client_id = ?1 AND (?2 = '' OR b.backend = ?2))",
                rusqlite::params![client_id, backend],
                |r| r.get(0),
            )
            .unwrap()
        };
        let calls = self.calls[self.process_start.min(self.calls.len())..].to_vec();
        for call in calls {
            match call {
                Call::Import(items) => {
                    for item in items {
                        if in_flight(item.0) {
                            self.delivered_imports.insert(item);
                        }
                    }
                }
                Call::Delete(keys) => self.deliver_deletes(&keys),
            }
        }
        self.process_start = self.calls.len();
    }

    /// Records delete keys as delivered, each with its batch.
    fn deliver_deletes<'k>(&mut self, keys: impl IntoIterator<Item = &'k String>) {
        for key in keys {
            if let Some(batch) = self.delete_batch(key) {
                self.delivered_deletes.insert((batch, key.clone()));
            }
        }
    }

    pub fn delete_calls(&self) -> Vec<&Vec<String>> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Delete(phones) => Some(phones),
                Call::Import(_) => None,
            })
            .collect()
    }

    /// Everything the account knows by phone: contacts and saved numbers.
    pub fn all_numbers(&self) -> BTreeMap<String, (String, String)> {
        let mut all = self.saved.clone();
        all.extend(self.contacts.clone());
        all
    }
}

#[derive(Clone)]
pub struct FakeBackend {
    pub name: String,
    pub batch_size: usize,
    pub account: Arc<Mutex<Account>>,
}

impl FakeBackend {
    pub fn new(batch_size: usize) -> Self {
        Self {
            name: "fake".into(),
            batch_size,
            account: Arc::new(Mutex::new(Account::default())),
        }
    }

    /// Every number in `phones` has an account.
    pub fn with_users<'a>(self, phones: impl IntoIterator<Item = &'a str>) -> Self {
        {
            let mut account = self.account.lock().unwrap();
            for (i, phone) in phones.into_iter().enumerate() {
                account.users.insert(phone.to_owned(), 1000 + i as i64);
            }
        }
        self
    }

    pub fn boxed(&self) -> Box<dyn Backend> {
        Box::new(self.clone())
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, Account> {
        self.account.lock().unwrap()
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn import<'a>(
        &'a mut self,
        items: &'a [ImportItem],
    ) -> BoxFuture<'a, Result<Vec<(i64, ImportResult)>, ImportCut>> {
        Box::pin(async move {
            let (results, unknown, error) = self.account.lock().unwrap().import(items);
            match error {
                // What the client knows was applied, the items whose answer was lost.
                Some(error) => Err(Cut {
                    done: results,
                    unknown,
                    error,
                }),
                None => Ok(results),
            }
        })
    }

    fn delete<'a>(&'a mut self, phones: &'a [String]) -> BoxFuture<'a, Result<(), DeleteCut>> {
        Box::pin(async move {
            match self.account.lock().unwrap().delete(phones) {
                Some((done, unknown, error)) => Err(Cut {
                    done,
                    unknown,
                    error,
                }),
                None => Ok(()),
            }
        })
    }

    /// By user: the contacts whose key (a number or a username) belongs to one of them. The
    /// sender deletes numbers by phone first and then by user too: a contact already gone
    /// by phone makes no second call here.
    fn delete_users<'a>(
        &'a mut self,
        users: &'a [(i64, i64)],
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let mut account = self.account.lock().unwrap();
            let keys: Vec<String> = account
                .users
                .iter()
                .filter(|(key, id)| {
                    users.iter().any(|(user, _)| user == *id) && account.contacts.contains_key(*key)
                })
                .map(|(key, _)| key.clone())
                .collect();
            if keys.is_empty() {
                return Ok(());
            }
            let call = Call::Delete(keys.clone());
            account.check(&call);
            account.calls.push(call);
            account.deliver_deletes(&keys);
            for key in &keys {
                account.contacts.remove(key);
            }
            Ok(())
        })
    }

    fn reconcile_policy(&self) -> Option<(u64, bool)> {
        self.account.lock().unwrap().reconcile
    }

    fn remote_contacts(
        &mut self,
    ) -> BoxFuture<'_, Result<Option<Vec<RemoteContact>>, BackendError>> {
        Box::pin(async move {
            let account = self.account.lock().unwrap();
            Ok(Some(
                account
                    .contacts
                    .iter()
                    .map(|(key, (first, last))| RemoteContact {
                        // A contact added by username is listed as Telegram lists a user
                        // who hides their number: by user only.
                        e164: if key.starts_with('@') {
                            String::new()
                        } else {
                            key.clone()
                        },
                        first_name: first.clone(),
                        last_name: last.clone(),
                        user_id: account.users.get(key).copied(),
                        username: None,
                    })
                    .collect(),
            ))
        })
    }
}
