//! Source files, their fingerprints, and the phones their cards yielded.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, Timestamp};
use crate::source::FileChange;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    Ok,
    /// Ends inside a card, or changed while being read: its previous cards stay in effect.
    Incomplete,
    /// Could not be read or holds no card: its previous cards stay in effect too.
    Unreadable,
    /// Ends inside a card and has not changed for longer than the grace period: an export
    /// that stopped half-way. Deferred like `Incomplete`, and said so.
    Stalled,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Incomplete => "incomplete",
            Self::Unreadable => "unreadable",
            Self::Stalled => "stalled",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "ok" => Self::Ok,
            "incomplete" => Self::Incomplete,
            "stalled" => Self::Stalled,
            _ => Self::Unreadable,
        }
    }
}

/// What we know of a file from its last scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub path: PathBuf,
    pub source: String,
    /// (size, mtime_ns, inode) of the last complete read.
    pub stat: Option<(u64, i64, u64)>,
    pub content_hash: Option<u64>,
    pub state: FileState,
    pub last_error: Option<String>,
    pub cards: u32,
    pub card_errors: u32,
    /// The key of what the phones were derived with (`source::derivation_key`).
    pub derived_with: Option<u64>,
    /// The mtime was not clearly older than the read: the next pass reads the file again.
    pub racy: bool,
}

/// (size, mtime_ns, inode).
pub type Fingerprint = (u64, i64, u64);

/// What a set of files was as a plan's input, in one value: for every file its path, the
/// source it belongs to, its fingerprint and the key it was derived with, each file hashed
/// (xxh3-128) and the hashes added up, with their count. A sum does not depend on the order
/// the files come in: the listing is taken as the directory gives it, never sorted, and
/// compared with the stored records' digest without reading them (issue 24.4: reading and
/// looking up 100k records was most of a no-op pass's own CPU). Two different sets of files
/// give the same digest only by a collision of 128-bit hashes; xxh3 is no cryptographic
/// hash, but whoever could craft names and fingerprints to collide could write the cards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FilesDigest {
    count: u64,
    sum: u128,
}

impl FilesDigest {
    /// What a source's files are hashed with: its name and derivation key.
    pub fn seed(source: &str, derived_with: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(source.as_bytes(), derived_with)
    }

    /// Adds a file by its path as stored (`path_text`), its source's `seed` and fingerprint.
    pub fn add(&mut self, path: &str, seed: u64, (size, mtime_ns, inode): Fingerprint) {
        let named = xxhash_rust::xxh3::xxh3_128_with_seed(path.as_bytes(), seed);
        let mut entry = [0u8; 40];
        entry[..16].copy_from_slice(&named.to_le_bytes());
        entry[16..24].copy_from_slice(&size.to_le_bytes());
        entry[24..32].copy_from_slice(&mtime_ns.to_le_bytes());
        entry[32..].copy_from_slice(&inode.to_le_bytes());
        self.count += 1;
        self.sum = self.sum.wrapping_add(xxhash_rust::xxh3::xxh3_128(&entry));
    }

    /// Adds a file by its path as listed (stored as `path_text`, lossy where not UTF-8).
    pub fn add_path(&mut self, path: &Path, seed: u64, stat: Fingerprint) {
        match path.to_str() {
            Some(text) => self.add(text, seed, stat),
            None => self.add(&path.to_string_lossy(), seed, stat),
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// As stored in `plan_epoch.planned_files`.
    pub fn text(&self) -> String {
        format!("{} {:032x}", self.count, self.sum)
    }
}

/// A phone a card contributes, as stored. Its texts are boxed `str`s (8 bytes less each
/// than a `String`, which keeps room to grow that these never use): a pass holds every
/// parsed phone until it is stored, 1M of them for 1M cards in one export (104 MB as
/// `String`s, 72 MB so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPhone {
    pub card: u32,
    /// The contact key (`contact_key`): a number in E.164, or `@username`.
    pub e164: Box<str>,
    pub first_name: Box<str>,
    pub last_name: Box<str>,
    /// On a number's row: the card's Telegram username, tried when the number turns out to
    /// have no Telegram account (the number wins; the username is the way to the person).
    pub telegram_username: Option<Box<str>>,
}

/// A stored phone from a row whose columns from `first` on are card, contact_key,
/// first_name, last_name, telegram_username.
fn stored_phone(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<StoredPhone> {
    Ok(StoredPhone {
        card: row.get(first)?,
        e164: row.get::<_, String>(first + 1)?.into(),
        first_name: row.get::<_, String>(first + 2)?.into(),
        last_name: row.get::<_, String>(first + 3)?.into(),
        telegram_username: row.get::<_, Option<String>>(first + 4)?.map(Into::into),
    })
}

const FILE_COLUMNS: &str = "path, source, size, mtime_ns, inode, content_hash, state, last_error, cards, card_errors, derived_with, racy";

fn file_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    let size: Option<i64> = row.get(2)?;
    let mtime: Option<i64> = row.get(3)?;
    let inode: Option<i64> = row.get(4)?;
    let state: String = row.get(6)?;
    Ok(FileRecord {
        path: PathBuf::from(row.get::<_, String>(0)?),
        source: row.get(1)?,
        stat: match (size, mtime, inode) {
            (Some(size), Some(mtime), Some(inode)) => {
                Some((from_sql(size), mtime, from_sql(inode)))
            }
            _ => None,
        },
        content_hash: row.get::<_, Option<i64>>(5)?.map(from_sql),
        state: FileState::parse(&state),
        last_error: row.get(7)?,
        cards: row.get(8)?,
        card_errors: row.get(9)?,
        derived_with: row.get::<_, Option<i64>>(10)?.map(from_sql),
        racy: row.get::<_, i64>(11)? != 0,
    })
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

// SQLite integers are i64; u64 fingerprints are stored bit for bit.
fn to_sql(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

fn from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// Every stored file's record, found by its path's bytes. Each path is held once, in its
/// record: a map keyed by a copy of it held it twice (a re-derivation of 100k files holds
/// every record through its scan). A vector sorted by path, sized once: a hash set of them
/// kept room for 131,072 records at 100,000 (20 MB for 15), and a file is found in 17
/// comparisons of paths.
#[derive(Debug, Default)]
pub struct FileRecords(Vec<FileRecord>);

impl FileRecords {
    pub fn get(&self, path: &OsStr) -> Option<&FileRecord> {
        self.0
            .binary_search_by(|r| r.path.as_os_str().cmp(path))
            .ok()
            .map(|at| &self.0[at])
    }

    pub fn values(&self) -> impl Iterator<Item = &FileRecord> {
        self.0.iter()
    }
}

/// A file not usable now: (source, path, state, reason, cards of its last complete read,
/// which stay in effect; 0 for a file never read).
pub type DeferredFile = (String, PathBuf, FileState, String, u32);

impl Store {
    /// Sorted by the path's bytes (comparing `Path`s walks their components: far slower).
    pub fn file_records(&self) -> Result<FileRecords> {
        let count: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM source_file", [], |row| row.get(0))?;
        let mut records = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut statement = self
            .conn()
            .prepare(&format!("SELECT {FILE_COLUMNS} FROM source_file"))?;
        for record in statement.query_map([], file_record)? {
            records.push(record?);
        }
        // Paths are unique (the table's key), so the order is total.
        records.sort_unstable_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
        Ok(FileRecords(records))
    }

    pub fn file_record(&self, path: &Path) -> Result<Option<FileRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {FILE_COLUMNS} FROM source_file WHERE path = ?1"),
                [path_text(path)],
                file_record,
            )
            .optional()?)
    }

    /// Whether some stored file lies inside the directory `dir` (one that was moved or
    /// removed as a whole).
    pub fn has_files_under(&self, dir: &Path) -> Result<bool> {
        let mut prefix = path_text(dir);
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        // Every path that starts with "dir/" sorts between "dir/" and "dir0" ('0' follows
        // '/'): a range of the primary key, not a scan.
        let mut end = prefix.clone();
        end.pop();
        end.push('0');
        Ok(self
            .conn()
            .prepare_cached("SELECT 1 FROM source_file WHERE path > ?1 AND path < ?2 LIMIT 1")?
            .query_row([&prefix, &end], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Up to `limit` stored files of `source` that hold a card: enough to tell whether any
    /// other than the ones at hand does.
    pub fn files_with_cards(&self, source: &str, limit: usize) -> Result<Vec<PathBuf>> {
        let mut statement = self.conn().prepare_cached(
            "SELECT path FROM source_file WHERE source = ?1 AND cards > 0 LIMIT ?2",
        )?;
        let rows = statement.query_map(
            params![source, i64::try_from(limit).unwrap_or(i64::MAX)],
            |row| row.get::<_, String>(0),
        )?;
        rows.map(|r| r.map(PathBuf::from).map_err(Into::into))
            .collect()
    }

    /// The Telegram username to try for a number without an account: the one on the first
    /// card (by path, then card) that carries the number and a username.
    pub fn fallback_username(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT telegram_username FROM card_phone
                 WHERE contact_key = ?1 AND telegram_username IS NOT NULL
                 ORDER BY path, card LIMIT 1",
            )?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Every number that has a fallback username, with it (as `fallback_username` picks it),
    /// in one read: for the reconcile, which asks about every contact of ours.
    pub fn fallback_usernames(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let mut statement = self.conn().prepare(
            "SELECT contact_key, telegram_username FROM card_phone
             WHERE telegram_username IS NOT NULL ORDER BY contact_key, path DESC, card DESC",
        )?;
        // Ordered so that, per key, the row `fallback_username` would pick comes last and
        // stays in the map.
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The phones one file's cards yielded, in card order.
    pub fn phones_of(&self, path: &Path) -> Result<Vec<StoredPhone>> {
        let mut statement = self.conn().prepare_cached(
            "SELECT card, contact_key, first_name, last_name, telegram_username FROM card_phone WHERE path = ?1 ORDER BY card, contact_key",
        )?;
        let rows = statement.query_map([path_text(path)], |row| stored_phone(row, 0))?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// Every stored card carrying one of `numbers`, with its file and source, in
    /// (path, card) order.
    pub fn cards_with_numbers(
        &self,
        numbers: &BTreeSet<String>,
    ) -> Result<Vec<(PathBuf, String, StoredPhone)>> {
        let mut statement = self.conn().prepare_cached(
            "SELECT p.path, f.source, p.card, p.contact_key, p.first_name, p.last_name, p.telegram_username
             FROM card_phone p JOIN source_file f ON f.path = p.path WHERE p.contact_key = ?1",
        )?;
        let mut found = Vec::new();
        for e164 in numbers {
            let rows = statement.query_map([e164], |row| {
                Ok((
                    PathBuf::from(row.get::<_, String>(0)?),
                    row.get::<_, String>(1)?,
                    stored_phone(row, 2)?,
                ))
            })?;
            for row in rows {
                found.push(row?);
            }
        }
        found.sort_by(|a, b| (&a.0, a.2.card).cmp(&(&b.0, b.2.card)));
        Ok(found)
    }

    /// Every stored phone, grouped by file, each file's in (card, e164) order.
    pub fn stored_phones(&self) -> Result<HashMap<OsString, Vec<StoredPhone>>> {
        let mut statement = self.conn().prepare(
            "SELECT path, card, contact_key, first_name, last_name, telegram_username FROM card_phone ORDER BY path, card, contact_key",
        )?;
        let mut rows = statement.query([])?;
        let mut by_file: HashMap<OsString, Vec<StoredPhone>> = HashMap::new();
        let mut current: Option<(String, Vec<StoredPhone>)> = None;
        while let Some(row) = rows.next()? {
            let phone = stored_phone(row, 1)?;
            // Rows come ordered by path: one allocation per file, not per phone.
            let path = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            match &mut current {
                Some((open, phones)) if open == path => phones.push(phone),
                _ => {
                    if let Some((done, phones)) = current.replace((path.to_owned(), vec![phone])) {
                        by_file.insert(done.into(), phones);
                    }
                }
            }
        }
        if let Some((done, phones)) = current {
            by_file.insert(done.into(), phones);
        }
        Ok(by_file)
    }

    /// The files whose last read was deferred, with their source, state and why, by source
    /// and path: what `status` names.
    /// Files not usable now.
    pub fn deferred_files(&self) -> Result<Vec<DeferredFile>> {
        let mut statement = self.conn().prepare(
            "SELECT source, path, state, last_error, cards FROM source_file WHERE state != 'ok' ORDER BY source, path",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                PathBuf::from(row.get::<_, String>(1)?),
                FileState::parse(&row.get::<_, String>(2)?),
                row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                row.get::<_, u32>(4)?,
            ))
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }

    /// The digest of every stored file (`FilesDigest`), or `None` when one of them cannot
    /// vouch for its content (deferred, or racily clean: it must be read again), as
    /// `file_fingerprints` leaves them without a fingerprint.
    pub fn settled_files_digest(&self) -> Result<Option<FilesDigest>> {
        let mut statement = self.conn().prepare(
            "SELECT path, source, size, mtime_ns, inode, state, derived_with, racy FROM source_file",
        )?;
        let mut rows = statement.query([])?;
        let mut digest = FilesDigest::default();
        while let Some(row) = rows.next()? {
            let ok = row.get_ref(5)?.as_str().map_err(rusqlite::Error::from)? == "ok";
            if !ok || row.get::<_, i64>(7)? != 0 {
                return Ok(None);
            }
            let (Some(size), Some(mtime), Some(inode), Some(key)) =
                (row.get(2)?, row.get(3)?, row.get(4)?, row.get(6)?)
            else {
                return Ok(None);
            };
            let path = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            let source = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            digest.add(
                path,
                FilesDigest::seed(source, from_sql(key)),
                (from_sql(size), mtime, from_sql(inode)),
            );
        }
        Ok(Some(digest))
    }

    /// Applies a scan in one transaction. Its changes boxed (`Scan::changes`) or not (the
    /// daemon's change pass).
    pub fn apply_scan<C: std::borrow::Borrow<FileChange>>(
        &mut self,
        changes: &[C],
        now: Timestamp,
    ) -> Result<()> {
        let tx = self.conn_mut().transaction()?;
        if !changes.is_empty() {
            // What was planned from the old files no longer tells what a pass would do.
            tx.execute("UPDATE plan_epoch SET planned_epoch = NULL", [])?;
        }
        let rebuild_key_index = rewrites_most_phones(&tx, changes)?;
        if rebuild_key_index {
            tx.execute_batch(DROP_CONTACT_KEY_INDEX)?;
        }
        {
            let mut upsert = tx.prepare(
                "INSERT INTO source_file (path, source, size, mtime_ns, inode, content_hash, state, last_error, cards, card_errors, scanned_at, derived_with, racy)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT(path) DO UPDATE SET source = excluded.source, size = excluded.size,
                   mtime_ns = excluded.mtime_ns, inode = excluded.inode, content_hash = excluded.content_hash,
                   state = excluded.state, last_error = excluded.last_error, cards = excluded.cards,
                   card_errors = excluded.card_errors, scanned_at = excluded.scanned_at,
                   derived_with = excluded.derived_with, racy = excluded.racy",
            )?;
            let mut clear_phones = tx.prepare("DELETE FROM card_phone WHERE path = ?1")?;
            let mut insert_phone = tx.prepare(
                "INSERT OR IGNORE INTO card_phone (path, card, contact_key, first_name, last_name, telegram_username) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut defer_existing = tx.prepare(
                "UPDATE source_file SET state = ?2, last_error = ?3, scanned_at = ?4 WHERE path = ?1",
            )?;
            let mut remove = tx.prepare("DELETE FROM source_file WHERE path = ?1")?;
            for change in changes {
                match change.borrow() {
                    FileChange::Updated { record, phones } => {
                        let path = path_text(&record.path);
                        let (size, mtime, inode) = record.stat.unwrap_or_default();
                        upsert.execute(params![
                            path,
                            record.source,
                            to_sql(size),
                            mtime,
                            to_sql(inode),
                            record.content_hash.map(to_sql),
                            record.state.as_str(),
                            record.last_error,
                            record.cards,
                            record.card_errors,
                            now,
                            record.derived_with.map(to_sql),
                            record.racy
                        ])?;
                        if let Some(phones) = phones {
                            clear_phones.execute([&path])?;
                            for phone in phones {
                                insert_phone.execute(params![
                                    path,
                                    phone.card,
                                    phone.e164,
                                    phone.first_name,
                                    phone.last_name,
                                    phone.telegram_username
                                ])?;
                            }
                        }
                    }
                    FileChange::Deferred {
                        path,
                        source,
                        state,
                        error,
                    } => {
                        let text = path_text(path);
                        let updated =
                            defer_existing.execute(params![text, state.as_str(), error, now])?;
                        if updated == 0 {
                            upsert.execute(params![
                                text,
                                source,
                                None::<i64>,
                                None::<i64>,
                                None::<i64>,
                                None::<i64>,
                                state.as_str(),
                                error,
                                0,
                                0,
                                now,
                                None::<i64>,
                                false
                            ])?;
                        }
                    }
                    FileChange::Removed { path } => {
                        remove.execute([path_text(path)])?;
                    }
                }
            }
        }
        if rebuild_key_index {
            tx.execute_batch(CREATE_CONTACT_KEY_INDEX)?;
        }
        crate::failpoint::hit(crate::failpoint::APPLY_SCAN);
        tx.commit()?;
        Ok(())
    }
}

/// The index of `card_phone` by contact key (migration 010), dropped and made again inside
/// `apply_scan`'s transaction when a scan rewrites most of the table: a crash between the
/// two rolls the drop back with everything else.
const DROP_CONTACT_KEY_INDEX: &str = "DROP INDEX card_phone_contact_key";
const CREATE_CONTACT_KEY_INDEX: &str =
    "CREATE INDEX card_phone_contact_key ON card_phone (contact_key)";

/// Below this many phones written, keeping the index row by row costs milliseconds.
const REBUILD_MIN_PHONES: usize = 10_000;

/// Whether a scan writes at least `REBUILD_MIN_PHONES` phones and at least half as many as
/// the table holds (a first pass; every file derived again after a change of region or
/// filter). Phones are written in path order, which is random to the contact-key index:
/// kept row by row, each insert (and each delete of the file's old rows) lands on an index
/// page of its own, and once the index outgrows SQLite's page cache most of those are read
/// back and spilled again. Sorting all keys once to make the index again is cheaper from
/// about there on, and linear: at 100k files (200k phones) `apply_scan` took 1.6–1.9 s
/// keeping the index and 1.0–1.1 s making it again, and grew 1.27× per file from 50k to
/// 100k files kept, 0.86× made again (issue 24.3).
fn rewrites_most_phones<C: std::borrow::Borrow<FileChange>>(
    tx: &rusqlite::Transaction<'_>,
    changes: &[C],
) -> Result<bool> {
    let written: usize = changes
        .iter()
        .map(|change| match change.borrow() {
            FileChange::Updated {
                phones: Some(phones),
                ..
            } => phones.len(),
            _ => 0,
        })
        .sum();
    if written < REBUILD_MIN_PHONES {
        return Ok(false);
    }
    let held: i64 = tx.query_row("SELECT count(*) FROM card_phone", [], |row| row.get(0))?;
    Ok(written >= usize::try_from(held).unwrap_or(usize::MAX) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOK: &str = "/book";

    fn phone(file: usize, card: u32) -> StoredPhone {
        StoredPhone {
            card,
            e164: format!("+491{card}{file:08}").into(),
            first_name: format!("Person {file}").into(),
            last_name: "".into(),
            telegram_username: None,
        }
    }

    /// `files` parsed, two numbers each; `derived_with` tells one derivation from another.
    fn parsed(files: std::ops::Range<usize>, derived_with: u64) -> Vec<FileChange> {
        files
            .map(|file| FileChange::Updated {
                record: FileRecord {
                    path: self::file(file),
                    source: "book".into(),
                    stat: Some((100, 1, file as u64)),
                    content_hash: Some(file as u64),
                    state: FileState::Ok,
                    last_error: None,
                    cards: 1,
                    card_errors: 0,
                    derived_with: Some(derived_with),
                    racy: false,
                },
                phones: Some(vec![phone(file, 0), phone(file, 1)]),
            })
            .collect()
    }

    /// Whether the index is there and a lookup by contact key goes through it.
    fn looked_up_by_index(store: &Store) -> bool {
        let plan: Vec<String> = store
            .conn()
            .prepare("EXPLAIN QUERY PLAN SELECT path FROM card_phone WHERE contact_key = ?1")
            .unwrap()
            .query_map(["+49100000001"], |row| row.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        plan.iter()
            .any(|step| step.contains("card_phone_contact_key"))
    }

    /// The files holding each key, through the index.
    fn files_of(store: &Store, keys: &[StoredPhone]) -> Vec<PathBuf> {
        let keys: BTreeSet<String> = keys.iter().map(|p| p.e164.to_string()).collect();
        let mut files: Vec<PathBuf> = store
            .cards_with_numbers(&keys)
            .unwrap()
            .into_iter()
            .map(|(path, ..)| path)
            .collect();
        files.dedup();
        files
    }

    fn in_austria(e164: &str) -> Box<str> {
        format!("+43{}", &e164[3..]).into()
    }

    fn file(i: usize) -> PathBuf {
        PathBuf::from(format!("{BOOK}/{i:05}.vcf"))
    }

    #[test]
    fn a_scan_rewriting_most_phones_makes_the_key_index_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_for_writing(dir.path()).unwrap();
        let first = parsed(0..12_000, 1);
        let tx = store.conn_mut().transaction().unwrap();
        assert!(
            rewrites_most_phones(&tx, &first).unwrap(),
            "a first pass of 24,000 phones"
        );
        assert!(
            !rewrites_most_phones(&tx, &parsed(0..4_999, 1)).unwrap(),
            "9,998 phones: kept row by row"
        );
        drop(tx);
        store.apply_scan(&first, 1).unwrap();
        assert!(looked_up_by_index(&store));
        assert_eq!(
            files_of(&store, &[phone(17, 0), phone(11_999, 1)]),
            [file(17), file(11_999)]
        );

        // 11,000 of 24,000 phones again: less than half, kept row by row.
        let some = parsed(1_000..6_500, 2);
        let tx = store.conn_mut().transaction().unwrap();
        assert!(!rewrites_most_phones(&tx, &some).unwrap());
        drop(tx);
        store.apply_scan(&some, 2).unwrap();
        assert!(looked_up_by_index(&store));
        assert_eq!(files_of(&store, &[phone(1_000, 1)]), [file(1_000)]);

        // Every file derived again, its phones moved to other keys: the index made again
        // holds the new keys and none of the old.
        let moved: Vec<FileChange> = parsed(0..12_000, 3)
            .into_iter()
            .map(|mut change| {
                if let FileChange::Updated {
                    phones: Some(phones),
                    ..
                } = &mut change
                {
                    for phone in phones {
                        phone.e164 = in_austria(&phone.e164);
                    }
                }
                change
            })
            .collect();
        let tx = store.conn_mut().transaction().unwrap();
        assert!(rewrites_most_phones(&tx, &moved).unwrap());
        drop(tx);
        store.apply_scan(&moved, 3).unwrap();
        assert!(looked_up_by_index(&store));
        assert!(files_of(&store, &[phone(17, 0)]).is_empty());
        let at = StoredPhone {
            e164: in_austria(&phone(17, 0).e164),
            ..phone(17, 0)
        };
        assert_eq!(files_of(&store, &[at]), [file(17)]);
    }

    /// Dropped and made again in one transaction: a crash before it commits (the fail point
    /// comes after the index was made again, inside the transaction) leaves the index and
    /// the rows as they were; with the drop committed on its own, the index would be gone.
    #[cfg(feature = "failpoints")]
    #[test]
    fn a_crash_before_the_scan_commits_rolls_the_drop_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_for_writing(dir.path()).unwrap();
        store.apply_scan(&parsed(0..10, 1), 1).unwrap();
        crate::failpoint::arm(crate::failpoint::APPLY_SCAN, 1);
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.apply_scan(&parsed(10..6_010, 1), 2)
        }));
        assert!(crate::failpoint::disarm(), "the fail point was reached");
        let payload = crashed.unwrap_err();
        assert!(payload.downcast_ref::<crate::failpoint::Crash>().is_some());
        drop(store);
        let store = Store::open_for_writing(dir.path()).unwrap();
        assert!(looked_up_by_index(&store));
        assert_eq!(files_of(&store, &[phone(9, 0)]), [file(9)]);
        assert!(files_of(&store, &[phone(10, 0)]).is_empty());
    }
}
