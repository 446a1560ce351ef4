//! A CardDAV source: the client that polls the server into the state's cache, and the scan
//! of that cache (a card is examined like a file, keyed by its URL).
//!
//! The WebDAV requests are written here on reqwest (already linked for Whapi) with quick-xml
//! as the XML parser, not with libdav: libdav 0.11 hides what an incremental, bounded sync
//! must see — the `Retry-After` of a 429/503, the 507 row of a truncated sync report, an
//! invalid token answered with 412, each answer's size — and sends every href in one
//! multiget; working around that needed raw requests anyway (README, "Dependency notes").

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};

use crate::config::{CardDavConfig, PasswordSource, SourceConfig};
use crate::store::{
    self, BookPoll, CachedCard, CardDavBook, CardDavPoll, FetchedCard, FileRecord, FileState, Store,
};

use super::{Derivation, Examined, FileChange, Scan};

mod auth;
mod cache;
mod discovery;
mod http;
pub mod oauth;
mod password;
mod requests;
mod sync;
#[cfg(test)]
mod tests;
mod tls;
mod xml;

use auth::Auth;
pub use cache::*;
pub use discovery::FoundBook;
use discovery::*;
pub use http::Traffic;
use http::*;
use password::*;
use requests::*;
use sync::*;
use xml::*;

/// One card may be at most this large; a larger one is reported with its URL and skipped
/// (Baïkal refuses cards over 1 MB; a 161 MB card broke DAVx5).
pub const MAX_CARD_BYTES: usize = 1024 * 1024;
/// At most this many hrefs per addressbook-multiget (as Evolution sends).
pub const MULTIGET_BATCH: usize = 100;
/// One answer may be at most this large: a multiget beyond it is split, a sync-collection
/// asked again without the cards. Small in unit tests, so that a book can outgrow it there.
const MAX_ANSWER_BYTES: usize = if cfg!(test) {
    256 * 1024
} else {
    64 * 1024 * 1024
};
/// A truncated sync report (507) is asked again at most this often in one poll.
const MAX_ROUNDS: usize = 1000;
/// A 429/503 whose Retry-After is at most this long is waited out within the poll.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(30);
/// A longer `Retry-After` is taken as this: the source is polled again after an hour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// One poll of a source ends by then, whatever the server does (slow answers, many rounds,
/// waits): it then fails, storing nothing, and the next poll starts afresh.
const POLL_DEADLINE: Duration = if cfg!(test) {
    Duration::from_secs(5)
} else {
    Duration::from_secs(15 * 60)
};
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 5;

const DAV: &str = "DAV:";
const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";

/// Why a poll could not complete: the source counts as unknown, nothing of it is deleted.
/// The texts hold no card URL, user name or password.
#[derive(Debug, thiserror::Error)]
pub enum CardDavError {
    #[error("wrong user name or password for source {name} (the server answered 401)")]
    Unauthorized { name: String },
    #[error("cannot reach the server of source {name}: {reason}")]
    Unreachable { name: String, reason: String },
    #[error("the server of source {name} answered {status} to {what}")]
    Status {
        name: String,
        status: StatusCode,
        what: &'static str,
    },
    #[error(
        "the server of source {name} asks to wait {seconds} s ({status}); polled again after that"
    )]
    Wait {
        name: String,
        status: StatusCode,
        seconds: u64,
    },
    #[error("the server of source {name} gave an answer to {what} that is not CardDAV: {reason}")]
    Garbage {
        name: String,
        what: &'static str,
        reason: String,
    },
    #[error("source {name}: {reason}")]
    Setup { name: String, reason: String },
    /// OAuth 2.0: no usable authorization (none yet, or `invalid_grant`: revoked, expired).
    #[error("source {name} needs authorizing: {reason}; run `contactsyncd authorize {name}`")]
    NeedsAuthorization { name: String, reason: String },
    /// A bearer token refused again right after a fresh one was obtained.
    #[error("wrong authorization for source {name}: the server refused a fresh access token (401)")]
    TokenRefused { name: String },
}

impl CardDavError {
    /// Seconds the server asked to wait, when it did.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Wait { seconds, .. } => Some(*seconds),
            _ => None,
        }
    }

    /// Whether only the user can mend it: a refused password or token, or an OAuth
    /// authorization to give again.
    pub fn needs_the_user(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. } | Self::TokenRefused { .. } | Self::NeedsAuthorization { .. }
        )
    }
}

/// Drops the cached cards of CardDAV sources the configuration no longer has (what
/// `sync --once` and the daemon do before they poll). A failure only delays it: the next
/// pass tries again, and nothing depends on it.
pub fn forget_unconfigured(config: &crate::config::Config, store: &mut Store) {
    let configured: Vec<&str> = config
        .sources
        .iter()
        .filter(|s| s.is_carddav())
        .map(|s| s.name.as_str())
        .collect();
    if let Err(err) = store.forget_carddav_sources_except(&configured) {
        tracing::warn!("cannot drop the cache of CardDAV sources no longer configured: {err}");
    }
    if let Err(err) = store.forget_oauth_tokens_except(&configured) {
        tracing::warn!("cannot drop the tokens of CardDAV sources no longer configured: {err}");
    }
}

/// What a poll of a source did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollOutcome {
    /// Whether anything was stored (a change the planner must see).
    pub changed: bool,
    pub cards_changed: u64,
    pub cards_deleted: u64,
    pub traffic: Traffic,
}

impl PollOutcome {
    /// The debug line of a poll, the same from `sync --once` and the daemon.
    pub fn log(&self, source: &str) {
        tracing::debug!(
            source,
            changed = self.cards_changed,
            deleted = self.cards_deleted,
            requests = self.traffic.requests,
            bytes = self.traffic.bytes_received,
            "polled the CardDAV server"
        );
    }
}

/// Asks the server what changed since the last poll and stores it: discovery when the
/// configuration changed or nothing is known, then per address book sync-collection from
/// the stored token (or a PROPFIND listing), the changed cards by multiget, the token last,
/// all in one transaction. A poll that finds nothing new writes nothing. A failure is
/// recorded (the source counts as unknown) and returned.
pub async fn poll(
    source: &SourceConfig,
    store: &mut Store,
    now: store::Timestamp,
) -> Result<PollOutcome, CardDavError> {
    Poller::new(source.clone()).poll(store, now).await
}

/// Polls one source again and again (the daemon), reading its password once rather than
/// running a `password_command` (which may ask a password manager) every poll; read again
/// after the server refused it. What the server asked for (Basic or Digest) is kept too, so
/// that a poll is not a 401 and a second request each time.
pub struct Poller {
    source: SourceConfig,
    auth: Option<Auth>,
}

impl Poller {
    pub fn new(source: SourceConfig) -> Self {
        Self { source, auth: None }
    }

    /// [`poll`] with the password kept.
    pub async fn poll(
        &mut self,
        store: &mut Store,
        now: store::Timestamp,
    ) -> Result<PollOutcome, CardDavError> {
        let source = &self.source;
        let Some(config) = &source.carddav else {
            return Ok(PollOutcome::default());
        };
        let auth = match self.auth.take() {
            Some(auth) => auth,
            None => match new_auth(source, config) {
                Ok(auth) => auth,
                Err(err) => return finish(source, store, now, Err(err)),
            },
        };
        let bearer = config.bearer.as_ref();
        let mut auth = auth;
        if let Some(bearer) = bearer {
            match oauth::access_token(source, bearer, store, now, false).await {
                Ok(token) => auth.set_bearer(token),
                Err(err) => return finish(source, store, now, Err(err)),
            }
        }
        let mut client = match Client::with_auth(source, auth) {
            Ok(client) => client,
            Err(err) => return finish(source, store, now, Err(err)),
        };
        let mut result = poll_within_deadline(&mut client, source, config, store, now).await;
        // A bearer token refused: it expired early or was revoked; one fresh token, one
        // more try (a poll stores nothing until it completes, so trying again is safe).
        if let Some(bearer) = bearer
            && matches!(result, Err(CardDavError::Unauthorized { .. }))
        {
            result = match oauth::access_token(source, bearer, store, now, true).await {
                Ok(token) => {
                    client.auth.set_bearer(token);
                    match poll_within_deadline(&mut client, source, config, store, now).await {
                        Err(CardDavError::Unauthorized { name }) => {
                            Err(CardDavError::TokenRefused { name })
                        }
                        other => other,
                    }
                }
                Err(err) => Err(err),
            };
        }
        if !result.as_ref().is_err_and(CardDavError::needs_the_user) {
            self.auth = Some(client.auth);
        }
        finish(source, store, now, result)
    }
}

/// One poll, stopped at [`POLL_DEADLINE`].
async fn poll_within_deadline(
    client: &mut Client,
    source: &SourceConfig,
    config: &CardDavConfig,
    store: &mut Store,
    now: store::Timestamp,
) -> Result<PollOutcome, CardDavError> {
    match tokio::time::timeout(
        POLL_DEADLINE,
        poll_inner(client, source, config, store, now),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(CardDavError::Unreachable {
            name: source.name.clone(),
            reason: format!(
                "the poll took longer than {} s and was stopped; nothing of it is stored",
                POLL_DEADLINE.as_secs()
            ),
        }),
    }
}

/// Records a failure with the source (it counts as unknown until a poll completes).
fn finish(
    source: &SourceConfig,
    store: &mut Store,
    now: store::Timestamp,
    result: Result<PollOutcome, CardDavError>,
) -> Result<PollOutcome, CardDavError> {
    let record = match &result {
        Ok(_) => Ok(()),
        Err(err) => store.record_carddav_failure(&source.name, &err.to_string(), now),
    };
    if let Err(err) = record {
        return Err(CardDavError::Setup {
            name: source.name.clone(),
            reason: format!("state database: {err}"),
        });
    }
    result
}

async fn poll_inner(
    client: &mut Client,
    source: &SourceConfig,
    config: &CardDavConfig,
    store: &mut Store,
    now: store::Timestamp,
) -> Result<PollOutcome, CardDavError> {
    let state_error = |err: store::StoreError| CardDavError::Setup {
        name: source.name.clone(),
        reason: format!("state database: {err}"),
    };
    let key = discovery_key(config);
    let known = store.carddav_source(&source.name).map_err(state_error)?;
    let mut books = store.carddav_books(&source.name).map_err(state_error)?;
    let mut discovered = None;
    if known.as_ref().is_none_or(|(k, _)| *k != key) || books.is_empty() {
        let start = Url::parse(&config.url).map_err(|_| CardDavError::Setup {
            name: source.name.clone(),
            reason: "the carddav URL does not parse".into(),
        })?;
        let found = choose_books(&source.name, config, discover(client, &start).await?)?;
        books = found
            .into_iter()
            .map(|f| {
                let before = books.iter().find(|b| b.url == f.url);
                CardDavBook {
                    sync_token: before.and_then(|b| b.sync_token.clone()),
                    full_listed_at: before.and_then(|b| b.full_listed_at),
                    url: f.url,
                    name: f.name,
                    supports_sync: f.supports_sync,
                }
            })
            .collect();
        discovered = Some(books.clone());
    }
    let mut outcome = PollOutcome::default();
    let mut book_polls = Vec::with_capacity(books.len());
    for book in &books {
        let cached = store
            .carddav_etags(&source.name, &book.url)
            .map_err(state_error)?;
        let rounds = Rounds {
            now,
            full_check_interval: config.full_check_interval,
            max_rounds: MAX_ROUNDS,
        };
        let polled = poll_book(client, &source.name, book, cached, rounds).await?;
        outcome.cards_changed += polled.changed.len() as u64;
        outcome.cards_deleted += polled.deleted.len() as u64;
        book_polls.push(polled);
    }
    let poll = CardDavPoll {
        source: source.name.clone(),
        discovered_for: key,
        books: discovered,
        book_polls,
    };
    outcome.changed = store.apply_carddav_poll(&poll).map_err(state_error)?;
    outcome.traffic = client.traffic;
    Ok(outcome)
}

/// `check-source`: what discovery finds, with each chosen book's card count. Stores nothing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceCheck {
    pub books: Vec<CheckedBook>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckedBook {
    pub url: String,
    pub name: String,
    pub supports_sync: bool,
    pub cards: usize,
    /// Whether `address_books` selects it (every book when the key is not set).
    pub read: bool,
}

/// `state_dir`: where an OAuth source's tokens are (a refreshed one is stored there).
pub async fn check(
    source: &SourceConfig,
    state_dir: &std::path::Path,
) -> Result<SourceCheck, CardDavError> {
    let Some(config) = &source.carddav else {
        return Ok(SourceCheck { books: Vec::new() });
    };
    let mut client = Client::new(source, config)?;
    if let Some(bearer) = &config.bearer {
        let token = oauth::check_token(source, bearer, state_dir).await?;
        client.auth.set_bearer(token);
    }
    let start = Url::parse(&config.url).map_err(|_| CardDavError::Setup {
        name: source.name.clone(),
        reason: "the carddav URL does not parse".into(),
    })?;
    let found = discover(&mut client, &start).await?;
    let chosen = choose_books(&source.name, config, found.clone())?;
    let mut books = Vec::new();
    for book in found {
        let url = Url::parse(&book.url)
            .map_err(|_| client.garbage("discovery", "a bad book URL".into()))?;
        let cards = list_members(&mut client, &url).await?.members.len();
        books.push(CheckedBook {
            read: chosen.iter().any(|c| c.url == book.url),
            url: book.url,
            name: book.name,
            supports_sync: book.supports_sync,
            cards,
        });
    }
    Ok(SourceCheck { books })
}
