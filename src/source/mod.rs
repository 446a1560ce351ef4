//! The scan contract of every source, whatever its kind: what a scan finds (`Scan`, each
//! source's status), the derivation key, and how a card's bytes become the per-card records
//! the store keeps (`card_phone` rows under a file path or a card URL). The kinds beside it:
//! `folder` (a vdir, a tree of folders, or one file: fingerprints, half-written files) and
//! `carddav` (a server's address books, polled into the state's cache).

pub mod carddav;
mod folder;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, SourceConfig};
use crate::contact::{self, CardRef, DesiredSet, DesiredSetBuilder, PersonName};
use crate::phone::{DefaultRegion, Purpose};
use crate::store::{self, FileRecord, FileState, SourceStatus, Store, StoredPhone, Timestamp};
use crate::vcard::{self, FileError};

pub use folder::{Listing, is_hidden_or_temporary, is_vcard_name, list_files, redact_path};
use folder::{access_hint, examine_file, examine_files, source_lists, visit_fingerprints};

/// How a scan changes the stored state of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Read completely. `phones: None` when only the fingerprint moved (same content).
    Updated {
        record: FileRecord,
        phones: Option<Vec<StoredPhone>>,
    },
    /// Not usable now (incomplete, changed while read, unreadable): its previous cards stay
    /// in effect and it is read again next time.
    Deferred {
        path: PathBuf,
        source: String,
        state: FileState,
        error: String,
    },
    /// Gone from a source that is known to be complete.
    Removed { path: PathBuf },
}

/// What a scan found: the changes to store and the desired set they lead to
/// (`take_desired`).
#[derive(Debug, Default)]
pub struct Scan {
    /// Boxed: a parsed file's change is the box its examination made (see
    /// `Examined::parsed`), moved here, not copied into a vector of changes beside it.
    pub changes: Vec<Box<FileChange>>,
    pub statuses: Vec<SourceStatus>,
    /// The desired set of the files whose stored phones stand. The parsed files' phones
    /// are only in `changes` until `take_desired` moves them here: a copy of each beside
    /// it was a quarter of the peak of 1M cards in one export (their names and numbers).
    kept: DesiredSetBuilder,
    /// The configured sources' names in order: a change's source gives its cards' rank.
    source_names: Vec<String>,
    pub files_seen: u64,
    pub files_read: u64,
    pub files_parsed: u64,
    pub files_deferred: u64,
    /// Per unknown source (by name), its reason as logs may say it: the file redacted, the
    /// error without a path. The full reason is in its status.
    pub redacted_reasons: HashMap<String, String>,
    /// Files that end inside a card and have not changed for longer than
    /// `INCOMPLETE_GRACE_SECS`: exports that stopped half-way.
    pub stalled: Vec<StalledFile>,
    /// Files that could not be read: named after a pass, not only counted.
    pub unreadable: Vec<UnreadableFile>,
    /// Pushed numbers with a doubt about them (`unknown_range`, `other_region`), from the
    /// files this scan parsed: `plan` shows them, `inspect` shows every file's.
    pub flagged: Vec<FlaggedNumber>,
}

/// A number that is pushed but worth a look.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FlaggedNumber {
    pub path: PathBuf,
    pub card: u32,
    pub raw: String,
    pub e164: String,
    pub flags: Vec<&'static str>,
    pub other_regions: Vec<crate::phone::OtherReading>,
}

/// A file that stays incomplete past the grace period.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StalledFile {
    pub source: String,
    pub path: PathBuf,
    /// The path as logs may show it (`redact_path`).
    #[serde(skip)]
    pub redacted: String,
}

/// A file of a source that could not be read; its previous cards (if any) stay in effect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnreadableFile {
    pub source: String,
    pub path: PathBuf,
    pub reason: String,
    /// Cards of its last complete read, kept (0: it was never read).
    pub cards_in_effect: u64,
}

/// How long a file may end inside a card before it counts as an export that stopped
/// half-way (still deferred, but said so in `status`, the log and the STATUS line). A
/// writer at work changes the file far more often than this.
pub const INCOMPLETE_GRACE_SECS: i64 = 10 * 60;

impl Scan {
    /// Sources whose contacts are kept as they were because they could not be read fully.
    pub fn unknown_sources(&self) -> impl Iterator<Item = &SourceStatus> {
        self.statuses.iter().filter(|s| s.state == SOURCE_UNKNOWN)
    }

    /// Sources that hold no vCard file at all (and never held one): most likely a wrong path.
    pub fn empty_sources(&self) -> impl Iterator<Item = &SourceStatus> {
        self.statuses.iter().filter(|s| s.state == SOURCE_EMPTY)
    }

    /// The desired set, its parsed files' phones moved out of `changes`, which it empties:
    /// store the changes first. Taken from the back and shrunk as it goes, so that the
    /// phones given up and the set they move into are not both held whole.
    pub fn take_desired(&mut self) -> DesiredSet {
        let mut desired = std::mem::take(&mut self.kept);
        let mut changes = std::mem::take(&mut self.changes);
        while let Some(change) = pop_shrinking(&mut changes) {
            if let FileChange::Updated {
                record,
                phones: Some(phones),
            } = *change
            {
                let order = self
                    .source_names
                    .iter()
                    .position(|name| *name == record.source)
                    .map_or(u32::MAX, |order| u32::try_from(order).unwrap_or(u32::MAX));
                add_to_desired(&mut desired, order, &record.path, Shrinking(phones));
            }
        }
        desired.finish()
    }

    /// Why `source` counts as unknown, without a file name, path or value: for logs.
    pub fn redacted_reason(&self, source: &str) -> Option<&str> {
        self.redacted_reasons.get(source).map(String::as_str)
    }
}

/// `SourceStatus::state`: every file read as it is.
pub const SOURCE_OK: &str = "ok";
/// Some files are deferred (incomplete, unreadable, no card): their previous cards stay.
pub const SOURCE_DEFERRED: &str = "deferred";
/// The source holds no vCard file, and held none before.
pub const SOURCE_EMPTY: &str = "empty";
/// Missing, unreadable or suddenly empty: its contacts are kept as they were.
pub const SOURCE_UNKNOWN: &str = "unknown";

/// Scans every configured source against the stored fingerprints. Reads nothing it does not
/// have to: an unchanged (size, mtime_ns, inode) is not read, an unchanged content hash is
/// not parsed. Writes nothing: the caller stores `changes` (or, for `plan`, does not).
///
/// `accept_empty`: a source that became empty is taken at its word (`--force-delete`)
/// instead of counting as unknown. `purpose`: `Show` (for `plan`) collects the flagged
/// numbers of the files parsed (`Scan::flagged`); a sync's scan, `Push`, has none.
pub fn scan(
    config: &Config,
    store: &Store,
    now: Timestamp,
    accept_empty: bool,
    purpose: Purpose,
) -> Result<Scan, store::StoreError> {
    // What the scan compiles to normalize numbers goes with it (see `phone::hold_rules`).
    let _rules = crate::phone::hold_rules();
    let known = store.file_records()?;
    let mut stored = StoredPhones::default();
    let mut scan = Scan {
        source_names: config.sources.iter().map(|s| s.name.clone()).collect(),
        ..Scan::default()
    };
    let mut desired = DesiredSetBuilder::default();
    let mut listings = Vec::with_capacity(config.sources.len());
    for (order, source) in config.sources.iter().enumerate() {
        let order = u32::try_from(order).unwrap_or(u32::MAX);
        listings.push(scan_source(
            source,
            order,
            Derivation::of(source, config.default_region, purpose),
            store,
            &known,
            &mut stored,
            now,
            accept_empty,
            &mut scan,
            &mut desired,
        )?);
    }
    // Files of sources no longer configured: the user took them out of the sync.
    let configured: HashSet<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    let listed_anywhere = |path: &Path| listings.iter().any(|files| is_listed(files, path));
    scan.changes.extend(
        known
            .values()
            .filter(|r| !configured.contains(r.source.as_str()))
            .filter(|r| !listed_anywhere(&r.path))
            .map(|r| {
                Box::new(FileChange::Removed {
                    path: r.path.clone(),
                })
            }),
    );
    scan.kept = desired;
    Ok(scan)
}

/// The phones one file contributes to the desired set, and its card counts.
struct FileContribution {
    phones: Vec<StoredPhone>,
    cards: u64,
    card_errors: u64,
    /// `FlaggedNumber`s without their path.
    flagged: Vec<FlaggedNumber>,
}

#[allow(clippy::too_many_arguments)]
fn scan_source(
    source: &SourceConfig,
    order: u32,
    derivation: Derivation<'_>,
    store: &Store,
    known: &store::FileRecords,
    stored: &mut StoredPhones,
    now: Timestamp,
    accept_empty: bool,
    scan: &mut Scan,
    desired: &mut DesiredSetBuilder,
) -> Result<Vec<PathBuf>, store::StoreError> {
    let mut status = SourceStatus {
        name: source.name.clone(),
        path: source.path.display().to_string(),
        state: SOURCE_OK.into(),
        scanned_at: now,
        ..SourceStatus::default()
    };
    // A CardDAV source's "files" are the cards its server last gave, by URL, from the
    // state's cache; from here on both kinds are one.
    let (listing, examined, mut unknown_reason, redacted_reason) = if source.is_carddav() {
        let cards = carddav::cards(store, source)?;
        let mut examined = Vec::with_capacity(cards.len());
        for card in &cards {
            let previous = known.get(std::ffi::OsStr::new(&card.url));
            examined.push(carddav::examine_card(
                store, card, previous, derivation, scan,
            )?);
        }
        // Its reasons name no card and no user: fit for logs as they are.
        let reason = carddav::unknown_reason(store, source)?;
        let listing = Listing {
            files: cards.into_iter().map(|c| PathBuf::from(c.url)).collect(),
            errors: Vec::new(),
        };
        (listing, examined, reason.clone(), reason)
    } else {
        let mut listing = list_files(&source.path);
        // Held through the scan: the listing is collected in the room of the walk's
        // (path, fingerprint) pairs, 56 bytes each, and kept 7 MB at 100k files for 2.4.
        listing.files.shrink_to_fit();
        let unknown_reason: Option<String> = listing.errors.first().map(|(path, err)| {
            format!("cannot read {}: {err}{}", path.display(), access_hint(err))
        });
        // io::Error's text has no path; the path is redacted.
        let redacted_reason = listing.errors.first().map(|(path, err)| {
            format!(
                "cannot read {}: {err}{}",
                redact_path(&source.path, path),
                access_hint(err)
            )
        });
        tracing::info!(target: crate::progress::TARGET, source = %source.name, files = listing.files.len(), "scanning");
        let examined = examine_files(&listing.files, known, derivation, scan);
        (listing, examined, unknown_reason, redacted_reason)
    };
    // Sized once: grown by doubling, each held up to twice what it needed while copied.
    let parsed_files = examined
        .iter()
        .filter(|e| matches!(e, Examined::Parsed(..)))
        .count();
    let changed_files = examined
        .iter()
        .filter(|e| !matches!(e, Examined::Unchanged))
        .count();
    let mut changes: Vec<Box<FileChange>> = Vec::with_capacity(changed_files);
    let mut contributions: Vec<(&Path, FileContribution)> =
        Vec::with_capacity(examined.len() - parsed_files);
    // The parsed files' cards: their phones are in their changes and the desired set.
    let mut parsed_cards: u64 = 0;
    let previous_files: Vec<&FileRecord> =
        known.values().filter(|r| r.source == source.name).collect();
    let previous_cards: u64 = previous_files.iter().map(|r| u64::from(r.cards)).sum();

    let kept_files = examined
        .iter()
        .filter(|e| !matches!(e, Examined::Parsed(..)))
        .count();
    stored.prepare(
        store,
        kept_files + previous_files.len().saturating_sub(examined.len()),
    )?;
    for (path, examined) in listing.files.iter().zip(examined) {
        scan.files_seen += 1;
        let previous = known.get(path.as_os_str());
        // Each file's stored phones are taken once: no copies for the common unchanged case.
        let mut kept = || -> Result<FileContribution, store::StoreError> {
            Ok(FileContribution {
                phones: stored.take(store, path)?,
                cards: previous.map_or(0, |r| u64::from(r.cards)),
                card_errors: previous.map_or(0, |r| u64::from(r.card_errors)),
                flagged: Vec::new(),
            })
        };
        match examined {
            Examined::Unchanged => contributions.push((path, kept()?)),
            Examined::Touched(change) | Examined::Deferred(change) => {
                changes.push(change);
                contributions.push((path, kept()?));
            }
            Examined::Parsed(change, flagged) => {
                if let Some(flagged) = flagged {
                    scan.flagged
                        .extend(flagged.into_iter().map(|f| FlaggedNumber {
                            path: path.clone(),
                            ..f
                        }));
                }
                // Its phones join the desired set when the scan is taken apart
                // (`Scan::take_desired`), moved, not copied.
                count_phones(&mut status, parsed_phones(&change));
                if let FileChange::Updated { record, .. } = change.as_ref() {
                    status.cards += u64::from(record.cards);
                    status.card_errors += u64::from(record.card_errors);
                    parsed_cards += u64::from(record.cards);
                }
                changes.push(change);
                status.files += 1;
            }
        }
    }

    let removed: Vec<&FileRecord> = previous_files
        .iter()
        .copied()
        .filter(|r| !is_listed(&listing.files, &r.path))
        .collect();
    let cards_now: u64 = parsed_cards + contributions.iter().map(|(_, c)| c.cards).sum::<u64>();
    if unknown_reason.is_none() && previous_cards > 0 && cards_now == 0 && !accept_empty {
        unknown_reason = Some(format!(
            "the source is empty now ({} files with {previous_cards} cards before); its contacts are kept. If you really emptied it, run `contactsyncd sync --once --force-delete`",
            previous_files.len()
        ));
    }
    match &unknown_reason {
        // Unknown: nothing of it is taken as deleted; what it had stays in effect.
        Some(reason) => {
            status.state = SOURCE_UNKNOWN.into();
            status.reason = Some(reason.clone());
            // The emptied source's reason has counts only.
            scan.redacted_reasons.insert(
                source.name.clone(),
                redacted_reason.unwrap_or_else(|| reason.clone()),
            );
            for record in removed {
                contributions.push((
                    &record.path,
                    FileContribution {
                        phones: stored.take(store, &record.path)?,
                        cards: u64::from(record.cards),
                        card_errors: u64::from(record.card_errors),
                        flagged: Vec::new(),
                    },
                ));
            }
        }
        None => changes.extend(removed.into_iter().map(|r| {
            Box::new(FileChange::Removed {
                path: r.path.clone(),
            })
        })),
    }

    for (path, contribution) in contributions {
        status.files += 1;
        status.cards += contribution.cards;
        status.card_errors += contribution.card_errors;
        count_phones(&mut status, &contribution.phones);
        add_to_desired(desired, order, path, contribution.phones);
    }
    for change in &changes {
        if let FileChange::Deferred {
            path, state, error, ..
        } = change.as_ref()
        {
            status.deferred += 1;
            if *state == FileState::Unreadable {
                scan.unreadable.push(UnreadableFile {
                    source: source.name.clone(),
                    path: path.clone(),
                    reason: error.clone(),
                    cards_in_effect: known
                        .get(path.as_os_str())
                        .map_or(0, |r| u64::from(r.cards)),
                });
            }
            if *state == FileState::Stalled {
                scan.stalled.push(StalledFile {
                    source: source.name.clone(),
                    path: path.clone(),
                    redacted: redact_path(&source.path, path),
                });
            }
        }
    }
    if status.state == SOURCE_OK {
        if status.deferred > 0 {
            status.state = SOURCE_DEFERRED.into();
        } else if status.files == 0 {
            status.state = SOURCE_EMPTY.into();
        }
    }
    // Moved, not copied, when it is the first source's: a copy held both (17.6 MB each at
    // 100k files, heaptrack).
    if scan.changes.is_empty() {
        scan.changes = changes;
    } else {
        scan.changes.extend(changes);
    }
    scan.statuses.push(status);
    Ok(listing.files)
}

/// The stored phones of the files whose phones stand (unchanged, touched, deferred, or
/// kept for an unknown source): read in one query when many files need them, file by file
/// when few do. A pass that derives every file again (a new region or filter) parses nearly
/// every file; holding every stored phone beside the new ones doubled its memory.
#[derive(Default)]
struct StoredPhones {
    all: Option<HashMap<OsString, Vec<StoredPhone>>>,
}

/// From this many files on, one query over every stored phone is faster than a query each.
const STORED_PHONES_BULK_FILES: usize = 512;

impl StoredPhones {
    fn prepare(&mut self, store: &Store, files: usize) -> Result<(), store::StoreError> {
        if self.all.is_none() && files >= STORED_PHONES_BULK_FILES {
            self.all = Some(store.stored_phones()?);
        }
        Ok(())
    }

    /// Each file's phones are taken once.
    fn take(&mut self, store: &Store, path: &Path) -> Result<Vec<StoredPhone>, store::StoreError> {
        match &mut self.all {
            Some(all) => Ok(all.remove(path.as_os_str()).unwrap_or_default()),
            None => store.phones_of(path),
        }
    }
}

/// The last element, giving back the vector's room as it empties (at half its capacity):
/// taking a large vector apart this way holds its elements and what they move into about
/// once, where `into_iter` keeps the whole buffer to the end.
fn pop_shrinking<T>(items: &mut Vec<T>) -> Option<T> {
    let item = items.pop();
    if items.capacity() > 1024 && items.len() < items.capacity() / 2 {
        items.shrink_to_fit();
    }
    item
}

/// A vector taken apart from the back with `pop_shrinking` (the order of a file's phones
/// does not matter to the desired set, which sorts what it needs).
struct Shrinking<T>(Vec<T>);

impl<T> Iterator for Shrinking<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        pop_shrinking(&mut self.0)
    }
}

/// A file's phones into its source's counts: numbers and usernames apart.
fn count_phones(status: &mut SourceStatus, phones: &[StoredPhone]) {
    let usernames = phones
        .iter()
        .filter(|p| crate::contact_key::is_username(&p.e164))
        .count() as u64;
    status.usernames += usernames;
    status.phones += phones.len() as u64 - usernames;
}

/// `files` is a sorted listing.
fn is_listed(files: &[PathBuf], path: &Path) -> bool {
    files
        .binary_search_by(|p| p.as_os_str().cmp(path.as_os_str()))
        .is_ok()
}

/// What looking at one file found.
enum Examined {
    /// Same fingerprint as the last complete read: the stored phones stand.
    Unchanged,
    /// Nothing to parse, but the record moves: a new fingerprint with the same content, or
    /// the file now belongs to another source.
    Touched(Box<FileChange>),
    /// Read and parsed: the change (`Updated`) holds the file's phones and, in its record,
    /// its counts; beside it the numbers flagged, if any (see `Examined::parsed`). Boxed
    /// into a thin pointer: a pass holds one `Examined` per listed file, and few files
    /// flag a number.
    #[allow(clippy::box_collection)]
    Parsed(Box<FileChange>, Option<Box<Vec<FlaggedNumber>>>),
    /// Not usable now: its previous cards stay in effect.
    Deferred(Box<FileChange>),
}

impl Examined {
    /// A parsed file: its phones move into the change that stores them; the desired set
    /// and the counts read them there. One copy of every phone through the pass: the copy
    /// each file kept beside it was a sixth of a first pass's peak. The box is the one the
    /// scan's changes keep (`Scan::changes`): copied into a vector of changes, every parsed
    /// file's change was held twice while the scan moved them (17.6 MB at 100k files).
    /// `record` has the contribution's counts.
    fn parsed(record: FileRecord, contribution: FileContribution) -> Self {
        let FileContribution {
            phones, flagged, ..
        } = contribution;
        Examined::Parsed(
            Box::new(FileChange::Updated {
                record,
                phones: Some(phones),
            }),
            (!flagged.is_empty()).then(|| Box::new(flagged)),
        )
    }

    /// Boxed, each variant with content: a pass holds one `Examined` per listed file until
    /// all are examined, and unboxed each was the size of its largest variant (a file record
    /// and its counts, about 240 bytes: 24 MB of a 100k-file first pass, unchanged files
    /// included), moved on into the changes beside them.
    fn touched(change: FileChange) -> Self {
        Examined::Touched(Box::new(change))
    }

    fn deferred(change: FileChange) -> Self {
        Examined::Deferred(Box::new(change))
    }
}

/// The phones a parsed file's change holds (see `Examined::parsed`).
fn parsed_phones(change: &FileChange) -> &[StoredPhone] {
    match change {
        FileChange::Updated {
            phones: Some(phones),
            ..
        } => phones,
        _ => &[],
    }
}

/// What a source's files are derived with, and its key: computed once per source, not per
/// file (the key serializes the filters). `purpose` is not in the key: the phones are the
/// same for both.
#[derive(Clone, Copy)]
struct Derivation<'a> {
    source: &'a SourceConfig,
    region: Option<DefaultRegion>,
    key: u64,
    purpose: Purpose,
}

impl<'a> Derivation<'a> {
    fn of(source: &'a SourceConfig, region: Option<DefaultRegion>, purpose: Purpose) -> Self {
        Self {
            source,
            region,
            key: derivation_key(source, region),
            purpose,
        }
    }
}

/// Whether a full scan would change nothing and find every source as before: each listed
/// file has its last complete read's fingerprint, in the same source and derived the same
/// way; every stored file is still listed; every listing worked. `planned_files` is the
/// stored files' digest when the last settled plan was made (`Store::settled_files_digest`,
/// made only when every stored file could vouch for its content): the listing's digest
/// equals it exactly when each listed file matches a stored one and no stored file is left
/// over. Reads no file and no file record, one stat each (like `find`). Returns the number
/// of files when so.
pub fn unchanged(
    config: &Config,
    store: &Store,
    planned_files: &str,
) -> Result<Option<u64>, store::StoreError> {
    let mut listed = store::FilesDigest::default();
    for source in &config.sources {
        let key = derivation_key(source, config.default_region);
        let seed = store::FilesDigest::seed(&source.name, key);
        if source.is_carddav() {
            // Its cache moves only by a poll, which also clears the settled plan; this
            // checks that every cached card was derived as it is now.
            if carddav::unknown_reason(store, source)?.is_some() {
                return Ok(None);
            }
            for card in carddav::cards(store, source)? {
                if card.error.is_some() {
                    return Ok(None);
                }
                listed.add(&card.url, seed, carddav::fingerprint(&card));
            }
            continue;
        }
        let mut unstatted = false;
        let errors = visit_fingerprints(&source.path, &mut |path, stat| match stat {
            Some(stat) => listed.add_path(&path, seed, stat),
            None => unstatted = true,
        });
        if !errors.is_empty() || unstatted {
            return Ok(None);
        }
    }
    Ok((listed.text() == planned_files).then_some(listed.count()))
}

/// Beyond these the change pass would look up so many numbers one by one that the full
/// pass is faster: a whole export rewritten (one big file), or a folder synced anew.
const QUICK_PASS_MAX_FILES: usize = 1_000;
const QUICK_PASS_MAX_BYTES: u64 = 256 * 1024;

/// What the daemon's change pass found in the paths that events named.
#[derive(Debug, Default)]
pub struct ChangedFiles {
    pub changes: Vec<FileChange>,
    /// Numbers the changed files had or have now: the only ones whose plan can differ.
    pub numbers: BTreeSet<String>,
    pub files_read: u64,
    pub files_parsed: u64,
    pub files_removed: u64,
}

/// Reads just `paths` (what events named: files written, added or removed) against their
/// stored records. `None` when the events are the full scan's to decide, with its checks
/// over whole sources: a directory added, moved or removed; a source's own path; a source
/// missing, or not known to be complete at its last full scan (unknown, empty); a removal
/// that would leave a source without a card (an emptied source counts as unknown); a path
/// in two sources; a file not usable yet or read before as not usable; more than a few
/// small files. Paths outside every source are ignored.
pub fn scan_changed(
    config: &Config,
    store: &Store,
    paths: &BTreeSet<PathBuf>,
) -> Result<Option<ChangedFiles>, store::StoreError> {
    let mut changed = ChangedFiles::default();
    if paths.len() > QUICK_PASS_MAX_FILES {
        return Ok(None);
    }
    // No rules of its own (`phone::hold_rules`): building them costs 15-60 ms, most of an
    // edit's way to the outbox. A change pass normalizes the numbers of a few cards with
    // the process-wide rules, which then keep what those numbers needed (a few regions).
    // Per source, the paths this pass changed and whether one of them still holds a card.
    let mut touched: HashMap<&str, (HashSet<&Path>, bool, bool)> = HashMap::new();
    for path in paths {
        let mut owners = config
            .sources
            .iter()
            .filter(|s| !s.is_carddav() && path.starts_with(&s.path));
        let Some(source) = owners.next() else {
            continue;
        };
        if owners.next().is_some() || path == &source.path {
            return Ok(None);
        }
        let hidden = path.strip_prefix(&source.path).is_ok_and(|inside| {
            inside
                .components()
                .any(|c| is_hidden_or_temporary(c.as_os_str()))
        });
        if hidden {
            continue;
        }
        let entry = touched.entry(source.name.as_str()).or_default();
        if !entry.2 {
            // Checked once per source and pass: whether the last full scan found it whole.
            let state = store.source_state(&source.name)?;
            let complete = matches!(state.as_deref(), Some(SOURCE_OK | SOURCE_DEFERRED));
            if !complete || !std::fs::metadata(&source.path).is_ok_and(|m| m.is_dir()) {
                return Ok(None);
            }
            entry.2 = true;
        }
        let meta = match std::fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => return Ok(None),
        };
        let Some(meta) = meta else {
            // Gone: a file of ours is removed; a folder of ours is the full scan's.
            match store.file_record(path)? {
                Some(previous) if previous.source == source.name => {
                    if previous.state != FileState::Ok {
                        return Ok(None);
                    }
                    changed
                        .numbers
                        .extend(store.phones_of(path)?.into_iter().map(|p| p.e164.into()));
                    changed
                        .changes
                        .push(FileChange::Removed { path: path.clone() });
                    changed.files_removed += 1;
                    entry.0.insert(path);
                }
                Some(_) => return Ok(None),
                None if store.has_files_under(path)? => return Ok(None),
                None => {}
            }
            continue;
        };
        if meta.is_dir() {
            return Ok(None);
        }
        if !source_lists(source, path) {
            continue;
        }
        if !meta.is_file() || meta.len() > QUICK_PASS_MAX_BYTES {
            return Ok(None);
        }
        let previous = store.file_record(path)?;
        if previous
            .as_ref()
            .is_some_and(|p| p.state != FileState::Ok || p.source != source.name)
        {
            return Ok(None);
        }
        entry.0.insert(path);
        let mut counts = Scan::default();
        match examine_file(
            path,
            previous.as_ref(),
            Derivation::of(source, config.default_region, Purpose::Push),
            &mut counts,
        ) {
            Examined::Unchanged => entry.1 |= previous.is_some_and(|p| p.cards > 0),
            Examined::Touched(change) => {
                entry.1 |= previous.is_some_and(|p| p.cards > 0);
                changed.changes.push(*change);
            }
            Examined::Deferred(_) => return Ok(None),
            Examined::Parsed(change, _) => {
                entry.1 |= matches!(change.as_ref(), FileChange::Updated { record, .. } if record.cards > 0);
                if previous.is_some() {
                    let before = store.phones_of(path)?;
                    changed
                        .numbers
                        .extend(before.into_iter().map(|p| p.e164.into()));
                }
                changed
                    .numbers
                    .extend(parsed_phones(&change).iter().map(|p| p.e164.to_string()));
                changed.changes.push(*change);
            }
        }
        changed.files_read += counts.files_read;
        changed.files_parsed += counts.files_parsed;
    }
    // A source that removals would leave without a card counts as unknown: the full scan's.
    for (source, (paths, holds_a_card, _)) in &touched {
        if *holds_a_card || changed.files_removed == 0 {
            continue;
        }
        let others = store.files_with_cards(source, paths.len() + 1)?;
        if others.iter().all(|p| paths.contains(p.as_path())) {
            return Ok(None);
        }
    }
    Ok(Some(changed))
}

/// The desired set restricted to `numbers`, from the stored cards: what the full scan would
/// build for them, since a number's name depends only on the cards that carry it.
pub fn desired_for_numbers(
    config: &Config,
    store: &Store,
    numbers: &BTreeSet<String>,
) -> Result<DesiredSet, store::StoreError> {
    let mut desired = DesiredSetBuilder::default();
    let cards = store.cards_with_numbers(numbers)?;
    for file_cards in cards.chunk_by(|a, b| a.0 == b.0) {
        let (path, source, _) = &file_cards[0];
        // Files of a source taken out of the configuration are the full scan's to remove.
        let Some(order) = config.sources.iter().position(|s| s.name == *source) else {
            continue;
        };
        let phones: Vec<StoredPhone> = file_cards.iter().map(|(_, _, p)| p.clone()).collect();
        add_to_desired(
            &mut desired,
            u32::try_from(order).unwrap_or(u32::MAX),
            path,
            phones,
        );
    }
    Ok(desired.finish())
}

fn add_to_desired(
    desired: &mut DesiredSetBuilder,
    order: u32,
    path: &Path,
    phones: impl IntoIterator<Item = StoredPhone>,
) {
    let file: Arc<Path> = path.into();
    let mut last: Option<(u32, Arc<PersonName>)> = None;
    for phone in phones {
        let name = match &last {
            Some((card, name)) if *card == phone.card => Arc::clone(name),
            _ => {
                let name = Arc::new(PersonName {
                    first: phone.first_name.into(),
                    last: phone.last_name.into(),
                    source: contact::NameSource::StructuredName,
                });
                last = Some((phone.card, Arc::clone(&name)));
                name
            }
        };
        desired.add_number(
            CardRef {
                source_order: order,
                file: Arc::clone(&file),
                card: phone.card,
            },
            phone.e164.into(),
            name,
        );
    }
}

/// Bumped whenever parsing, normalizing or the name rules change what a file yields, so
/// that results stored by an older build are derived again (the package version alone
/// would miss a fix between releases).
const DERIVATION_VERSION: u32 = 3;

/// The key of everything besides a file's bytes that its phones depend on: the program and
/// parser version, the default region, and the source's filters. Stored with every file; a
/// file derived under another key is read and parsed again.
pub fn derivation_key(source: &SourceConfig, region: Option<DefaultRegion>) -> u64 {
    let inputs = serde_json::to_vec(&(
        env!("CARGO_PKG_VERSION"),
        DERIVATION_VERSION,
        region.map(|r| r.code()),
        &source.filter,
    ))
    .unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&inputs)
}

/// Parses a file's bytes into the phones it contributes; incomplete or cardless files are
/// not usable (their previous state stays in effect).
fn understand_file(
    bytes: &[u8],
    derivation: Derivation<'_>,
) -> Result<FileContribution, (FileState, String)> {
    understand_reader(bytes, derivation)
}

/// [`understand_file`] from a stream: a card at a time, so that memory follows what the
/// cards keep, not the file's size.
fn understand_reader(
    reader: impl std::io::Read,
    derivation: Derivation<'_>,
) -> Result<FileContribution, (FileState, String)> {
    let mut contribution = FileContribution {
        phones: Vec::new(),
        cards: 0,
        card_errors: 0,
        flagged: Vec::new(),
    };
    let summary = vcard::parse_reader_with(reader, |outcome| {
        contribution.cards += 1;
        add_card(&mut contribution, &outcome, derivation);
    })
    .map_err(|err| match err {
        FileError::NoCards => (FileState::Unreadable, err.to_string()),
        other => (FileState::Unreadable, other.to_string()),
    })?;
    if let Some(incomplete) = summary.incomplete {
        return Err((
            FileState::Incomplete,
            format!(
                "ends inside card {} (line {})",
                incomplete.card, incomplete.line
            ),
        ));
    }
    // Held until the pass stores it: a vector grown push by push keeps room for twice the
    // two numbers of a usual card (a fifth of a first pass's peak at 100,000 files). The
    // flagged numbers too: one took room for four (512 bytes), and a new region flags
    // about one file in ten (5 MB of a re-derivation of 100,000 files, heaptrack).
    contribution.phones.shrink_to_fit();
    contribution.flagged.shrink_to_fit();
    Ok(contribution)
}

/// A card's pushed numbers with a doubt about them (see `Scan::flagged`), without their
/// file's path.
fn flagged_numbers(
    understood: &contact::CardContact,
    card: u32,
) -> impl Iterator<Item = FlaggedNumber> + '_ {
    understood
        .phones
        .iter()
        .filter_map(move |phone| match &phone.outcome {
            contact::PhoneOutcome::Accepted {
                e164,
                validity,
                other_regions,
                ..
            } if *validity != crate::phone::Validity::Valid || !other_regions.is_empty() => {
                Some(FlaggedNumber {
                    path: PathBuf::new(),
                    card,
                    raw: phone.raw.clone(),
                    e164: e164.clone(),
                    flags: phone.flags(),
                    other_regions: other_regions.clone(),
                })
            }
            _ => None,
        })
}

/// One card's phones (or username) into its file's contribution.
fn add_card(
    contribution: &mut FileContribution,
    outcome: &vcard::CardOutcome,
    derivation: Derivation<'_>,
) {
    let Ok(card) = &outcome.result else {
        contribution.card_errors += 1;
        return;
    };
    let understood = contact::understand_for(
        card,
        derivation.region,
        &derivation.source.filter,
        derivation.purpose,
    );
    // A card with an unreadable line is still used, and counted as one with problems.
    if !understood.problems.is_empty() || card.unreadable_line_count > 0 {
        contribution.card_errors += 1;
    }
    let Some(name) = understood.name.as_ref().filter(|_| understood.is_pushed()) else {
        return;
    };
    let card_index = u32::try_from(outcome.index).unwrap_or(u32::MAX);
    // Only `plan` shows them: a sync's scan has no use for them.
    if derivation.purpose == Purpose::Show {
        contribution
            .flagged
            .extend(flagged_numbers(&understood, card_index));
    }
    let fallback: Option<Box<str>> = understood.fallback_username().map(Into::into);
    for key in understood.contact_keys() {
        contribution.phones.push(StoredPhone {
            card: card_index,
            e164: key.into(),
            first_name: name.first.as_str().into(),
            last_name: name.last.as_str().into(),
            telegram_username: fallback.clone(),
        });
    }
}
