//! The trait every messenger backend implements, and how its answers are classified.

use std::future::Future;
use std::pin::Pin;

use crate::batch::ImportItem;

pub mod login;
pub mod telegram;
pub mod whapi;

/// A boxed future, so that backends can be used as `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The outcome for one item of an import call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportResult {
    /// The number has an account and is now a contact.
    Imported {
        user_id: Option<i64>,
        access_hash: Option<i64>,
    },
    /// Accepted, but no account is visible behind it (none, or hidden by privacy).
    /// `importers`: how many Telegram users have this number saved too (Telegram's
    /// `popular_invites`: a friend worth inviting).
    Saved { importers: Option<i32> },
    /// A server-side limit: try again later (Telegram's `retry_contacts`).
    Retry,
    /// Refused for good (e.g. an invalid number); not retried until the card changes.
    Rejected(String),
    /// The number was already in the phone book, saved by the user (WhatsApp: `PUT` answered
    /// 409): left as it is, and recorded as the user's, never renamed or deleted.
    SavedByUser,
}

/// Why a whole call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Network, timeout, 5xx: nothing is known about the call; send it again later.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// FLOOD_WAIT_N, 429 Retry-After: the server wants a pause.
    #[error("the server asks to wait {seconds} s ({reason})")]
    Wait { seconds: u64, reason: String },
    /// The session is gone: nothing more is sent until `contactsyncd login`.
    #[error("login required: {0}")]
    Auth(String),
    /// The request itself is refused; sending it again would fail again.
    #[error("refused: {0}")]
    Permanent(String),
    /// The account's configuration does not work (e.g. a `base_url` that answers 404):
    /// nothing more is sent until the configuration changes.
    #[error("{0}")]
    Setup(String),
}

/// A batch the other side stopped part-way: a wait, a refusal, a lost connection or a login
/// error answered one call, while earlier calls of the same batch were applied. The refusal
/// covers the call it answers, never what came before it: `done` is what the other side
/// applied (results, or the keys deleted), so that the state records it before it records
/// the wait. Items in neither `done` nor `unknown` were not applied (refused before any
/// work, or never tried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut<Done, Key> {
    pub done: Done,
    /// Items of the call that ended without an answer (`Temporary`: the request may have
    /// arrived and been applied): sent again as they were, unchecked.
    pub unknown: Vec<Key>,
    pub error: BackendError,
}

/// An import batch cut part-way: the results of the items applied before the cut, and the
/// client ids of the items whose call has no known outcome.
pub type ImportCut = Cut<Vec<(i64, ImportResult)>, i64>;

/// A delete batch cut part-way: the phone strings deleted before the cut, and those whose
/// call has no known outcome.
pub type DeleteCut = Cut<Vec<String>, String>;

impl<Done: Default, Key> Cut<Done, Key> {
    /// Nothing applied, nothing unknown: the first call was refused (or never answered:
    /// then `unknown` names its items, see `unanswered`).
    pub fn nothing_done(error: BackendError) -> Self {
        Self {
            done: Done::default(),
            unknown: Vec::new(),
            error,
        }
    }
}

impl<Done, Key> Cut<Done, Key> {
    /// `error` answered the call carrying `call`: for a temporary failure (no answer),
    /// those items have an unknown outcome; any other error refused the call before it
    /// did anything.
    pub fn at(done: Done, call: impl IntoIterator<Item = Key>, error: BackendError) -> Self {
        let unknown = if matches!(error, BackendError::Temporary(_)) {
            call.into_iter().collect()
        } else {
            Vec::new()
        };
        Self {
            done,
            unknown,
            error,
        }
    }
}

/// A messenger account the sync pushes to.
pub trait Backend: Send {
    /// The account's name in the state and in `status`, e.g. `telegram`.
    fn name(&self) -> &str;

    /// Most items one call may carry.
    fn batch_size(&self) -> usize;

    /// Imports a batch; answers with an outcome per client_id, or, when a call of the batch
    /// fails, with what the calls before it applied (`ImportCut`).
    fn import<'a>(
        &'a mut self,
        items: &'a [ImportItem],
    ) -> BoxFuture<'a, Result<Vec<(i64, ImportResult)>, ImportCut>>;

    /// Deletes contacts by the exact phone strings that were imported; a failing call
    /// answers with the phones deleted before it (`DeleteCut`).
    fn delete<'a>(&'a mut self, phones: &'a [String]) -> BoxFuture<'a, Result<(), DeleteCut>>;

    /// Deletes contacts by user (id, access hash), for ours whose phone may no longer
    /// identify them (Telegram: `contacts.deleteContacts`). Backends without users: nothing.
    fn delete_users<'a>(
        &'a mut self,
        _users: &'a [(i64, i64)],
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    /// Empties the account's list of imported numbers that have no account behind them
    /// (Telegram: `contacts.resetSaved`; also those the official apps imported). Only on
    /// the user's request (`remote forget-all --reset-saved`). Backends without one: nothing.
    fn reset_saved(&mut self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    /// How often to reconcile with the remote list (seconds), and whether contacts deleted
    /// in the app are imported again (`on_remote_delete`); `None`: this backend does not.
    fn reconcile_policy(&self) -> Option<(u64, bool)> {
        None
    }

    /// The contacts the remote has, for reconciling; `None` when the backend cannot list
    /// them (or has nothing new: Telegram's `contactsNotModified`).
    fn remote_contacts(
        &mut self,
    ) -> BoxFuture<'_, Result<Option<Vec<RemoteContact>>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    /// For a remote whose contact list also holds contacts the user saved (WhatsApp's phone
    /// book): `Some(adopt_existing)`, and the reconcile derives from the listing which
    /// contacts are ours and which the user's (taken over when `adopt_existing`). `None`:
    /// contacts not in the mirror are simply none of our business.
    fn adopts_existing(&self) -> Option<bool> {
        None
    }

    /// Identifies the configuration the account runs with (a hash, never a secret), for
    /// `BackendError::Setup`: a stop lasts until this changes. `None`: no such stops.
    fn setup_key(&self) -> Option<String> {
        None
    }

    /// What covers the list `remote_contacts` last returned in full (Telegram's getContacts
    /// hash), for the state to keep; `None`: nothing.
    fn remote_hash(&self) -> Option<i64> {
        None
    }

    /// The hash the state kept (dropped by every batch sent since): `remote_contacts` asks
    /// with it, so an unchanged list costs one "not modified", also in a new process.
    fn set_remote_hash(&mut self, _hash: Option<i64>) {}

    /// `Some(reason)`: the account is configured but has no session (never logged in, or
    /// logged out). Its work is planned and queued, nothing is sent, and the pass says
    /// "login required" (exit code 5), as for a session revoked at the server.
    fn login_required(&self) -> Option<String> {
        None
    }
}

/// A configured account without a session: plans and queues like any other, sends nothing.
pub struct LoggedOut {
    name: &'static str,
    batch_size: usize,
}

impl LoggedOut {
    const REASON: &'static str = "not logged in to Telegram";

    pub fn telegram(config: &crate::config::TelegramConfig) -> Self {
        Self {
            name: "telegram",
            batch_size: config.batch_size,
        }
    }
}

impl Backend for LoggedOut {
    fn name(&self) -> &str {
        self.name
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn import<'a>(
        &'a mut self,
        _items: &'a [ImportItem],
    ) -> BoxFuture<'a, Result<Vec<(i64, ImportResult)>, ImportCut>> {
        Box::pin(async { Err(Cut::nothing_done(BackendError::Auth(Self::REASON.into()))) })
    }

    fn delete<'a>(&'a mut self, _phones: &'a [String]) -> BoxFuture<'a, Result<(), DeleteCut>> {
        Box::pin(async { Err(Cut::nothing_done(BackendError::Auth(Self::REASON.into()))) })
    }

    fn remote_contacts(
        &mut self,
    ) -> BoxFuture<'_, Result<Option<Vec<RemoteContact>>, BackendError>> {
        Box::pin(async { Err(BackendError::Auth(Self::REASON.into())) })
    }

    fn login_required(&self) -> Option<String> {
        Some(Self::REASON.into())
    }
}

/// Whether an account adds contacts known only by a Telegram username (`@name` keys):
/// Telegram does (`contacts.resolveUsername` + `contacts.addContact`); WhatsApp knows
/// people only by number, so its plans leave those keys out.
pub fn adds_by_username(account: &str) -> bool {
    account == "telegram"
}

/// A contact as the remote lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteContact {
    /// Empty when the remote shows no number (Telegram: a user hiding theirs).
    pub e164: String,
    pub first_name: String,
    pub last_name: String,
    pub user_id: Option<i64>,
    /// The contact's public username (Telegram), when the remote shows one.
    pub username: Option<String>,
}

/// The accounts the configuration sets up, connected (needs a tokio runtime). Telegram
/// without a session is a [`LoggedOut`] account: planned and queued, "login required".
pub fn configured(config: &crate::config::Config) -> Vec<Box<dyn Backend>> {
    let mut backends: Vec<Box<dyn Backend>> = Vec::new();
    if let Some(telegram) = &config.telegram {
        match crate::store::telegram_session::TelegramSession::logged_in(&config.state_dir) {
            Ok(Some(_)) => {
                match crate::store::telegram_session::TelegramSession::open(&config.state_dir) {
                    Ok(session) => backends.push(Box::new(telegram::TelegramBackend::connect(
                        telegram,
                        std::sync::Arc::new(session),
                    ))),
                    Err(err) => tracing::error!("cannot open the Telegram session: {err}"),
                }
            }
            Ok(None) => backends.push(Box::new(LoggedOut::telegram(telegram))),
            Err(err) => tracing::error!("cannot read the Telegram session: {err}"),
        }
    }
    if let Some(whatsapp) = &config.whatsapp {
        match whapi::WhapiBackend::new(whatsapp) {
            Ok(backend) => backends.push(Box::new(backend)),
            Err(err) => tracing::error!("cannot set up WhatsApp: {err}"),
        }
    }
    backends
}

/// The names of the configured accounts, without connecting (for `plan`).
pub fn configured_names(config: &crate::config::Config) -> Vec<String> {
    let mut names = Vec::new();
    if config.telegram.is_some() {
        names.push("telegram".to_owned());
    }
    if config.whatsapp.is_some() {
        names.push("whatsapp".to_owned());
    }
    names
}

/// Back-off before the n-th retry of a number the server asked to retry later: 5 minutes,
/// doubling, capped at a day, ±20% jitter so that numbers spread out (the official clients
/// wait minutes to a day).
pub fn retry_delay(attempt: u32) -> i64 {
    const BASE: i64 = 5 * 60;
    const CAP: i64 = 24 * 60 * 60;
    let exponent = attempt.saturating_sub(1).min(16);
    let delay = BASE.saturating_mul(1 << exponent).min(CAP);
    let jitter = 0.8 + fastrand::f64() * 0.4;
    ((delay as f64) * jitter).round() as i64
}

/// How long an account pauses when every item of a call came back for retry (tdlib answers
/// "retry after 3600" in that case).
pub const ALL_RETRY_PAUSE: i64 = 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        for _ in 0..100 {
            let first = retry_delay(1);
            assert!((240..=360).contains(&first), "{first}");
            let late = retry_delay(40);
            assert!((69_120..=103_680).contains(&late), "{late}");
        }
        assert!(retry_delay(3) > retry_delay(1));
    }
}
