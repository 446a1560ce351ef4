//! The CardDAV cache: per CardDAV source its address books with their sync-tokens, and the
//! cards as the server last gave them. Planning reads only this (offline-first); a poll
//! (`source::carddav`) writes what changed, the token last, in one transaction.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, Timestamp};

/// An address book read for a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardDavBook {
    pub url: String,
    /// Its display name, or the last segment of its URL.
    pub name: String,
    pub supports_sync: bool,
    pub sync_token: Option<String>,
    /// When it was last listed in full (authoritatively); `None`: never.
    pub full_listed_at: Option<Timestamp>,
}

/// A cached card, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCard {
    pub url: String,
    pub etag: Option<String>,
    pub content_hash: u64,
    pub size: u64,
    /// Why the card was refused (its bytes were not kept).
    pub error: Option<String>,
}

/// A card the server sent: its bytes, or why they were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedCard {
    pub url: String,
    pub etag: Option<String>,
    pub body: Result<Vec<u8>, String>,
    pub size: u64,
}

/// What one address book's poll found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookPoll {
    pub book: String,
    pub changed: Vec<FetchedCard>,
    pub deleted: Vec<String>,
    /// The token to store: the server's new one, or `None` to clear it (no sync support).
    pub sync_token: Option<String>,
    /// Set when this poll listed the book in full (at that time).
    pub full_listed_at: Option<Timestamp>,
}

impl BookPoll {
    /// Whether storing it would change nothing (`token_before` is the stored token).
    pub fn is_noop(&self, token_before: Option<&str>) -> bool {
        self.changed.is_empty()
            && self.deleted.is_empty()
            && self.full_listed_at.is_none()
            && self.sync_token.as_deref() == token_before
    }
}

/// A complete poll of a source, stored by [`Store::apply_carddav_poll`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardDavPoll {
    pub source: String,
    pub discovered_for: u64,
    /// `Some` after a discovery: the address books now read (others are dropped with their
    /// cards; those that stay keep their token unless `books` says otherwise).
    pub books: Option<Vec<CardDavBook>>,
    pub book_polls: Vec<BookPoll>,
}

// SQLite integers are i64; hashes are stored bit for bit.
fn to_sql(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

fn from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

impl Store {
    /// The key the source's address books were discovered with, and the last poll's error.
    pub fn carddav_source(&self, source: &str) -> Result<Option<(u64, Option<String>)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT discovered_for, last_error FROM carddav_source WHERE source = ?1",
                [source],
                |row| Ok((from_sql(row.get(0)?), row.get(1)?)),
            )
            .optional()?)
    }

    pub fn carddav_books(&self, source: &str) -> Result<Vec<CardDavBook>> {
        let mut statement = self.conn().prepare_cached(
            "SELECT url, name, supports_sync, sync_token, full_listed_at FROM carddav_book WHERE source = ?1 ORDER BY url",
        )?;
        let rows = statement.query_map([source], |row| {
            Ok(CardDavBook {
                url: row.get(0)?,
                name: row.get(1)?,
                supports_sync: row.get(2)?,
                sync_token: row.get(3)?,
                full_listed_at: row.get(4)?,
            })
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// A book's cached cards: URL → etag.
    pub fn carddav_etags(
        &self,
        source: &str,
        book: &str,
    ) -> Result<HashMap<String, Option<String>>> {
        let mut statement = self
            .conn()
            .prepare_cached("SELECT url, etag FROM carddav_card WHERE source = ?1 AND book = ?2")?;
        let rows = statement.query_map([source, book], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// Every cached card of a source, by URL, without the bytes.
    pub fn carddav_cards(&self, source: &str) -> Result<Vec<CachedCard>> {
        let mut statement = self.conn().prepare_cached(
            "SELECT url, etag, content_hash, size, error FROM carddav_card WHERE source = ?1 ORDER BY url",
        )?;
        let rows = statement.query_map([source], |row| {
            Ok(CachedCard {
                url: row.get(0)?,
                etag: row.get(1)?,
                content_hash: from_sql(row.get(2)?),
                size: from_sql(row.get(3)?),
                error: row.get(4)?,
            })
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// A cached card's bytes.
    pub fn carddav_card_body(&self, source: &str, url: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT body FROM carddav_card WHERE source = ?1 AND url = ?2",
                [source, url],
                |row| row.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Stores a complete poll in one transaction: the cards first, each book's token after
    /// them, the source's error cleared. Writes nothing when the poll found nothing new.
    pub fn apply_carddav_poll(&mut self, poll: &CardDavPoll) -> Result<bool> {
        let before = self.carddav_source(&poll.source)?;
        let books_before = self.carddav_books(&poll.source)?;
        let token_of = |url: &str| {
            books_before
                .iter()
                .find(|b| b.url == url)
                .and_then(|b| b.sync_token.as_deref())
        };
        let quiet = before == Some((poll.discovered_for, None))
            && poll.books.as_ref().is_none_or(|books| {
                books.len() == books_before.len()
                    && books.iter().all(|b| {
                        books_before.iter().any(|o| {
                            o.url == b.url && o.name == b.name && o.supports_sync == b.supports_sync
                        })
                    })
            })
            && poll.book_polls.iter().all(|p| p.is_noop(token_of(&p.book)));
        if quiet {
            return Ok(false);
        }
        let cards_move = before.as_ref().is_none_or(|(_, error)| error.is_some())
            || poll.books.is_some()
            || poll
                .book_polls
                .iter()
                .any(|p| !p.changed.is_empty() || !p.deleted.is_empty());
        let tx = self.conn_mut().transaction()?;
        if cards_move {
            // What was planned from the old cards (or the old error) no longer tells what a
            // pass would do.
            tx.execute("UPDATE plan_epoch SET planned_epoch = NULL", [])?;
        }
        tx.execute(
            "INSERT INTO carddav_source (source, discovered_for, last_error, failed_at) VALUES (?1, ?2, NULL, NULL)
             ON CONFLICT(source) DO UPDATE SET discovered_for = excluded.discovered_for, last_error = NULL, failed_at = NULL",
            params![poll.source, to_sql(poll.discovered_for)],
        )?;
        if let Some(books) = &poll.books {
            let mut keep = tx.prepare(
                "INSERT INTO carddav_book (source, url, name, supports_sync, sync_token) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(source, url) DO UPDATE SET name = excluded.name, supports_sync = excluded.supports_sync",
            )?;
            for book in books {
                keep.execute(params![
                    poll.source,
                    book.url,
                    book.name,
                    book.supports_sync,
                    book.sync_token
                ])?;
            }
            let urls: Vec<&str> = books.iter().map(|b| b.url.as_str()).collect();
            for old in &books_before {
                if !urls.contains(&old.url.as_str()) {
                    tx.execute(
                        "DELETE FROM carddav_card WHERE source = ?1 AND book = ?2",
                        params![poll.source, old.url],
                    )?;
                    tx.execute(
                        "DELETE FROM carddav_book WHERE source = ?1 AND url = ?2",
                        params![poll.source, old.url],
                    )?;
                }
            }
        }
        {
            let mut upsert = tx.prepare(
                "INSERT INTO carddav_card (source, book, url, etag, content_hash, size, body, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(source, url) DO UPDATE SET book = excluded.book, etag = excluded.etag,
                   content_hash = excluded.content_hash, size = excluded.size, body = excluded.body,
                   error = excluded.error",
            )?;
            let mut delete =
                tx.prepare("DELETE FROM carddav_card WHERE source = ?1 AND url = ?2")?;
            let mut token = tx.prepare(
                "UPDATE carddav_book SET sync_token = ?3 WHERE source = ?1 AND url = ?2",
            )?;
            let mut listed = tx.prepare(
                "UPDATE carddav_book SET full_listed_at = ?3 WHERE source = ?1 AND url = ?2",
            )?;
            for book in &poll.book_polls {
                for card in &book.changed {
                    let (hash, body, error) = match &card.body {
                        Ok(body) => (
                            xxhash_rust::xxh3::xxh3_64(body),
                            Some(body.as_slice()),
                            None,
                        ),
                        Err(error) => (0, None, Some(error.as_str())),
                    };
                    upsert.execute(params![
                        poll.source,
                        book.book,
                        card.url,
                        card.etag,
                        to_sql(hash),
                        to_sql(card.size),
                        body,
                        error
                    ])?;
                }
                for url in &book.deleted {
                    delete.execute(params![poll.source, url])?;
                }
                // Last: a token stands for every card before it.
                token.execute(params![poll.source, book.book, book.sync_token])?;
                if let Some(at) = book.full_listed_at {
                    listed.execute(params![poll.source, book.book, at])?;
                }
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// Drops the cache of CardDAV sources no longer configured (their cards are contact
    /// data the user took out of the sync). Writes only when there is something to drop.
    pub fn forget_carddav_sources_except(&mut self, configured: &[&str]) -> Result<usize> {
        let known: Vec<String> = {
            let mut statement = self.conn().prepare("SELECT source FROM carddav_source")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let gone: Vec<&String> = known
            .iter()
            .filter(|name| !configured.contains(&name.as_str()))
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let tx = self.conn_mut().transaction()?;
        for name in &gone {
            tx.execute("DELETE FROM carddav_card WHERE source = ?1", [name])?;
            tx.execute("DELETE FROM carddav_book WHERE source = ?1", [name])?;
            tx.execute("DELETE FROM carddav_source WHERE source = ?1", [name])?;
        }
        tx.commit()?;
        Ok(gone.len())
    }

    /// Records why a poll failed: the source counts as unknown until a poll completes.
    /// Written only when the reason changed.
    pub fn record_carddav_failure(
        &mut self,
        source: &str,
        error: &str,
        now: Timestamp,
    ) -> Result<()> {
        let before = self.carddav_source(source)?;
        if before
            .as_ref()
            .is_some_and(|(_, last)| last.as_deref() == Some(error))
        {
            return Ok(());
        }
        let tx = self.conn_mut().transaction()?;
        tx.execute("UPDATE plan_epoch SET planned_epoch = NULL", [])?;
        tx.execute(
            "INSERT INTO carddav_source (source, discovered_for, last_error, failed_at) VALUES (?1, 0, ?2, ?3)
             ON CONFLICT(source) DO UPDATE SET last_error = excluded.last_error, failed_at = excluded.failed_at",
            params![source, error, now],
        )?;
        tx.commit()?;
        Ok(())
    }
}
