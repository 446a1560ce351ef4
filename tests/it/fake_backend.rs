//! An in-memory messenger account that follows Telegram's documented contacts semantics:
//! numbers with an account are imported (unless their owner hides them from importers),
//! others are saved; an import quota sends the excess back in `retry_contacts`; faults are
//! scripted per call. Every call is recorded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
    /// `(interval, reimport)` for `reconcile_policy`; `None`: the backend cannot list.
    pub reconcile: Option<(u64, bool)>,
}

impl Account {
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
    /// except a call sent before exactly as it is (a resend after a lost reply), and nothing
    /// added by hand is touched.
    fn check(&mut self, call: &Call) {
        let resend = self.calls.contains(call);
        let Some(expected) = &self.expected else {
            return;
        };
        let mut found = Vec::new();
        match call {
            Call::Import(items) => {
                for (_, e164, first, last) in items {
                    if self.hand_added.contains(e164) {
                        found.push(format!("import touches the hand-added {e164}"));
                    }
                    let wanted = expected.get(e164);
                    if !resend && wanted != Some(&(first.clone(), last.clone())) {
                        found.push(format!(
                            "import of {e164} as {first:?} {last:?} while the address book wants {wanted:?}"
                        ));
                    }
                }
            }
            Call::Delete(phones) => {
                for e164 in phones {
                    if self.hand_added.contains(e164) {
                        found.push(format!("delete of the hand-added {e164}"));
                    }
                    if !resend && expected.contains_key(e164) {
                        found.push(format!("delete of {e164}, which the address book wants"));
                    }
                }
            }
        }
        self.violations.extend(found);
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
            let mut account = self.account.lock().unwrap();
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
            account.check(&call);
            account.calls.push(call);
            let fault = account.faults.pop_front();
            match fault {
                Some(Fault::FloodWait(seconds)) => {
                    return Err(Cut::nothing_done(BackendError::Wait {
                        seconds,
                        reason: format!("FLOOD_WAIT_{seconds}"),
                    }));
                }
                Some(Fault::AuthKeyUnregistered) => {
                    return Err(Cut::nothing_done(BackendError::Auth(
                        "AUTH_KEY_UNREGISTERED".into(),
                    )));
                }
                _ => {}
            }
            let mut results = Vec::new();
            for item in items {
                if let Some(quota) = account.import_quota.as_mut() {
                    if *quota == 0 {
                        results.push((item.client_id, ImportResult::Retry));
                        continue;
                    }
                    *quota -= 1;
                }
                let names = (item.names.first.clone(), item.names.last.clone());
                let result = match account.users.get(&item.e164).copied() {
                    Some(user_id) if !account.private.contains(&item.e164) => {
                        account.contacts.insert(item.e164.clone(), names);
                        ImportResult::Imported {
                            user_id: Some(user_id),
                            access_hash: Some(user_id * 7),
                        }
                    }
                    _ => {
                        account.saved.insert(item.e164.clone(), names);
                        ImportResult::Saved { importers: None }
                    }
                };
                results.push((item.client_id, result));
            }
            if matches!(fault, Some(Fault::ApplyThenDropReply)) {
                return Err(Cut::at(
                    Vec::new(),
                    items.iter().map(|i| i.client_id),
                    BackendError::Temporary("connection reset before the reply".into()),
                ));
            }
            Ok(results)
        })
    }

    fn delete<'a>(&'a mut self, phones: &'a [String]) -> BoxFuture<'a, Result<(), DeleteCut>> {
        Box::pin(async move {
            let mut account = self.account.lock().unwrap();
            let call = Call::Delete(phones.to_vec());
            account.check(&call);
            account.calls.push(call);
            let fault = account.faults.pop_front();
            if let Some(Fault::FloodWait(seconds)) = fault {
                return Err(Cut::nothing_done(BackendError::Wait {
                    seconds,
                    reason: format!("FLOOD_WAIT_{seconds}"),
                }));
            }
            for phone in phones {
                account.contacts.remove(phone);
                account.saved.remove(phone);
            }
            if matches!(fault, Some(Fault::ApplyThenDropReply)) {
                return Err(Cut::at(
                    Vec::new(),
                    phones.iter().cloned(),
                    BackendError::Temporary("connection reset before the reply".into()),
                ));
            }
            Ok(())
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
