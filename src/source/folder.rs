//! A folder source: a vdir, a tree of folders, or one file. Listing its vCard files, their
//! fingerprints, and examining each (read only what moved, parse only what changed, defer
//! a half-written file).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::SourceConfig;
use crate::store::{FileRecord, FileState, Fingerprint};

use super::{Derivation, Examined, FileChange, INCOMPLETE_GRACE_SECS, Scan, understand_reader};

/// The files a source consists of, and what could not be looked at.
#[derive(Debug, Default)]
pub struct Listing {
    /// Sorted, so every run visits files in the same order.
    pub files: Vec<PathBuf>,
    pub errors: Vec<(PathBuf, std::io::Error)>,
}

/// What to do about a source contactsyncd may not read (issue 16.6: a system service
/// cannot enter a 0700 or 0750 home directory); nothing for other errors.
pub(super) fn access_hint(err: &std::io::Error) -> &'static str {
    if err.kind() == std::io::ErrorKind::PermissionDenied {
        ": the user contactsyncd runs as needs read access to it and search (x) access to every directory above it. The system service runs as its own user and cannot enter a home directory of mode 0700 or 0750: for an address book in your home use the user unit (README, \"Running as a service\")"
    } else {
        ""
    }
}

/// Lists a source. A file is taken as it is, whatever its name; a directory is walked,
/// following symlinks but never into a directory twice (no loops), taking `*.vcf` and
/// `*.vcard` and skipping hidden, editor and temporary files.
pub fn list_files(root: &Path) -> Listing {
    let mut files = Vec::new();
    let errors = walk(root, false, &mut |path, _| files.push(path));
    // Byte order, not Path's component order: as deterministic and much cheaper.
    files.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Listing { files, errors }
}

/// What the walk hands each file it lists to: its path and fingerprint (`None`: it could not
/// be looked at, or was not asked for).
type Found<'a> = dyn FnMut(PathBuf, Option<Fingerprint>) + 'a;

/// Each file `list_files` lists, with its fingerprint, in the order the directories give
/// them (not sorted, nor held: what takes them needs neither); what could not be looked at
/// is returned. Each file is stat'ed while its directory is open, relative to it, as `find`
/// does: a stat by the full path resolves every component of it again (at 100k files that
/// was a seventh of a no-op pass, perf).
pub(super) fn visit_fingerprints(
    root: &Path,
    found: &mut Found<'_>,
) -> Vec<(PathBuf, std::io::Error)> {
    walk(root, true, found)
}

fn walk(
    root: &Path,
    with_fingerprints: bool,
    found: &mut Found<'_>,
) -> Vec<(PathBuf, std::io::Error)> {
    let mut errors = Vec::new();
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {
            let mut visited = HashSet::new();
            let mut walk = Walk {
                visited: &mut visited,
                found,
                errors: &mut errors,
                with_fingerprints,
            };
            walk.dir(root);
        }
        Ok(meta) => found(root.to_owned(), Some(fingerprint(&meta))),
        Err(err) => errors.push((root.to_owned(), err)),
    }
    errors
}

struct Walk<'a, 'f> {
    visited: &'a mut HashSet<(u64, u64)>,
    found: &'a mut Found<'f>,
    errors: &'a mut Vec<(PathBuf, std::io::Error)>,
    with_fingerprints: bool,
}

impl Walk<'_, '_> {
    fn dir(&mut self, dir: &Path) {
        match std::fs::metadata(dir) {
            Ok(meta) => {
                if !self.visited.insert((meta.dev(), meta.ino())) {
                    return;
                }
            }
            Err(err) => {
                self.errors.push((dir.to_owned(), err));
                return;
            }
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) => {
                self.errors.push((dir.to_owned(), err));
                return;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    self.errors.push((dir.to_owned(), err));
                    continue;
                }
            };
            let name = entry.file_name();
            if is_hidden_or_temporary(&name) {
                continue;
            }
            let path = entry.path();
            // A symlink's target, stat'd by its path (followed), as the scan reads it.
            let (is_dir, target) = match entry.file_type() {
                Ok(t) if t.is_symlink() => match std::fs::metadata(&path) {
                    Ok(meta) => (meta.is_dir(), Some(meta)),
                    // A dangling symlink is no contact file: skip it quietly if it is not one.
                    Err(err) => {
                        if is_vcard_name(&name) {
                            self.errors.push((path, err));
                        }
                        continue;
                    }
                },
                Ok(t) => (t.is_dir(), None),
                Err(err) => {
                    self.errors.push((path, err));
                    continue;
                }
            };
            if is_dir {
                self.dir(&path);
            } else if is_vcard_name(&name) {
                let stat = if !self.with_fingerprints {
                    None
                } else if let Some(meta) = target {
                    Some(fingerprint(&meta))
                } else {
                    // Not a symlink: the entry's own stat (relative to the open directory)
                    // is the file's.
                    entry.metadata().ok().map(|meta| fingerprint(&meta))
                };
                (self.found)(path, stat);
            }
        }
    }
}

/// `.hidden`, `.#emacs-lock`, `backup~`, `x.tmp`, `.x.swp`: files a vdir never means.
/// On the name's bytes: its ASCII marks are the same whether or not the rest is UTF-8, and
/// no copy is made for each of 100k names.
pub fn is_hidden_or_temporary(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b".")
        || name.ends_with(b"~")
        || name.ends_with(b".tmp")
        || name.ends_with(b".swp")
        || name.ends_with(b".part")
}

/// `*.vcf` and `*.vcard` in any case, not hidden (no temporary name ends so).
pub fn is_vcard_name(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    let ends_with = |suffix: &[u8]| {
        bytes.len() >= suffix.len()
            && bytes[bytes.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    (ends_with(b".vcf") || ends_with(b".vcard")) && !is_hidden_or_temporary(name)
}

/// A path inside a source as logs show it: every component cut to its first character,
/// vCard extensions kept (`Jane Doe +49 170 1234567.vcf` → `J….vcf`, `Family/Jo.vcf` → `F…/J….vcf`),
/// enough to tell a folder from a file, too little to name anyone. `status` has the path.
pub fn redact_path(root: &Path, path: &Path) -> String {
    let Ok(inside) = path.strip_prefix(root) else {
        return "a file outside the source".to_owned();
    };
    if inside.as_os_str().is_empty() {
        return "the source's own path".to_owned();
    }
    let parts: Vec<String> = inside
        .iter()
        .map(|part| {
            let part = Path::new(part);
            let first: String = part
                .to_string_lossy()
                .chars()
                .next()
                .map(String::from)
                .unwrap_or_default();
            // Only a vCard extension: in "Mr. Jane Doe" everything after the dot would be.
            match part.extension().map(|e| e.to_string_lossy()) {
                Some(ext) if is_vcard_name(part.as_os_str()) => format!("{first}….{ext}"),
                _ => format!("{first}…"),
            }
        })
        .collect();
    parts.join("/")
}

/// `examine_file` for every listed file, in order, on every core when there are many: a
/// first pass over a large vdir is reading and parsing thousands of independent files.
pub(super) fn examine_files(
    files: &[PathBuf],
    known: &crate::store::FileRecords,
    derivation: Derivation<'_>,
    scan: &mut Scan,
) -> Vec<Examined> {
    let examine_chunk = |chunk: &[PathBuf], counts: &mut Scan| -> Vec<Examined> {
        chunk
            .iter()
            .map(|path| examine_file(path, known.get(path.as_os_str()), derivation, counts))
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if threads < 2 || files.len() < PARALLEL_SCAN_MIN_FILES {
        return examine_chunk(files, scan);
    }
    let chunk_size = files.len().div_ceil(threads);
    let results: Vec<(Vec<Examined>, Scan)> = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk_size)
            .map(|chunk| {
                scope.spawn(move || {
                    let mut counts = Scan::default();
                    (examine_chunk(chunk, &mut counts), counts)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let mut examined = Vec::with_capacity(files.len());
    for (part, counts) in results {
        examined.extend(part);
        scan.files_read += counts.files_read;
        scan.files_parsed += counts.files_parsed;
        scan.files_deferred += counts.files_deferred;
    }
    examined
}

/// Below this, threads cost more than they save.
const PARALLEL_SCAN_MIN_FILES: usize = 512;

/// Stat → (if moved) read and hash → (if the content changed) parse, counting into `scan`.
pub(super) fn examine_file(
    path: &Path,
    previous: Option<&FileRecord>,
    derivation: Derivation<'_>,
    scan: &mut Scan,
) -> Examined {
    let Derivation { source, key, .. } = derivation;
    let mut defer = |state: FileState, error: String| {
        scan.files_deferred += 1;
        Examined::deferred(FileChange::Deferred {
            path: path.to_owned(),
            source: source.name.clone(),
            state,
            error,
        })
    };
    let stat = match std::fs::metadata(path) {
        Ok(meta) => fingerprint(&meta),
        Err(err) => return defer(FileState::Unreadable, err.to_string()),
    };
    if let Some(previous) = previous.filter(|p| {
        p.state == FileState::Ok && p.stat == Some(stat) && p.derived_with == Some(key) && !p.racy
    }) {
        if previous.source == source.name {
            return Examined::Unchanged;
        }
        // The same file now belongs to a renamed or another source.
        return Examined::touched(FileChange::Updated {
            record: FileRecord {
                source: source.name.clone(),
                ..previous.clone()
            },
            phones: None,
        });
    }
    scan.files_read += 1;
    let read_at = std::time::SystemTime::now();
    // Read twice if it changed, never held whole: hashed, then parsed a card at a time.
    // Only a regular file is opened (a FIFO or a device is refused, never waited on).
    let (mut file, hash) = match hash_file(path) {
        Ok(read) => read,
        Err(err) => return defer(FileState::Unreadable, err.to_string()),
    };
    // A writer still at work: the file moved under us while we read it.
    let moved = || std::fs::metadata(path).map(|m| fingerprint(&m)).ok() != Some(stat);
    if moved() {
        return defer(
            FileState::Incomplete,
            "changed while being read; will read again".into(),
        );
    }
    let record = |cards: u64, card_errors: u64| FileRecord {
        path: path.to_owned(),
        source: source.name.clone(),
        stat: Some(stat),
        content_hash: Some(hash),
        state: FileState::Ok,
        last_error: None,
        cards: u32::try_from(cards).unwrap_or(u32::MAX),
        card_errors: u32::try_from(card_errors).unwrap_or(u32::MAX),
        derived_with: Some(key),
        racy: is_racy(stat.1, read_at),
    };
    // The same bytes derived the same way give the same phones: no parse.
    if let Some(previous) = previous.filter(|p| {
        p.state == FileState::Ok && p.content_hash == Some(hash) && p.derived_with == Some(key)
    }) {
        return Examined::touched(FileChange::Updated {
            record: record(u64::from(previous.cards), u64::from(previous.card_errors)),
            phones: None,
        });
    }
    scan.files_parsed += 1;
    if let Err(err) = file.rewind() {
        return defer(FileState::Unreadable, err.to_string());
    }
    let understood = understand_reader(std::io::BufReader::new(file), derivation);
    if moved() {
        return defer(
            FileState::Incomplete,
            "changed while being read; will read again".into(),
        );
    }
    match understood {
        Ok(contribution) => {
            let record = record(contribution.cards, contribution.card_errors);
            Examined::parsed(record, contribution)
        }
        Err((FileState::Incomplete, error)) => {
            let age_secs = read_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .saturating_sub(stat.1.div_euclid(1_000_000_000));
            if age_secs > INCOMPLETE_GRACE_SECS {
                defer(
                    FileState::Stalled,
                    format!(
                        "{error} and has not changed for {} minutes: an export that stopped half-way? Export it again (or complete the card)",
                        age_secs / 60
                    ),
                )
            } else {
                defer(
                    FileState::Incomplete,
                    format!("{error}: probably still being written"),
                )
            }
        }
        Err((state, error)) => defer(state, error),
    }
}

/// Opens a regular file and hashes its content (xxh3, as stored), reading it in blocks.
fn hash_file(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    let mut file = crate::regular_file::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    let mut block = vec![0; 1 << 16];
    loop {
        match file.read(&mut block) {
            Ok(0) => break,
            Ok(read) => hasher.update(&block[..read]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok((file, hasher.digest()))
}

/// Whether `list_files(source)` would list `path` (if it exists).
pub(super) fn source_lists(source: &SourceConfig, path: &Path) -> bool {
    if path == source.path {
        return true;
    }
    let Ok(inside) = path.strip_prefix(&source.path) else {
        return false;
    };
    path.file_name().is_some_and(is_vcard_name)
        && inside
            .components()
            .all(|c| !is_hidden_or_temporary(c.as_os_str()))
}

/// File systems keep mtimes at a granularity of up to 2 s (FAT; 1 s for ext3, SMB, many
/// FUSE file systems). A file written within that window of our read could be written
/// again with the same size and mtime: git calls such an entry "racily clean".
const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Whether an mtime is not clearly older than the moment the read started: then the
/// fingerprint cannot vouch for the content, and the next pass reads the file again.
fn is_racy(mtime_ns: i64, read_at: std::time::SystemTime) -> bool {
    let read_ns = read_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    mtime_ns > read_ns.saturating_sub(RACY_WINDOW_NS)
}

pub(super) fn fingerprint(meta: &std::fs::Metadata) -> (u64, i64, u64) {
    let mtime_ns = meta
        .mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec());
    (meta.len(), mtime_ns, meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::vcf("alice.vcf", true)]
    #[case::upper("ALICE.VCF", true)]
    #[case::vcard("bob.vcard", true)]
    #[case::hidden(".alice.vcf", false)]
    #[case::emacs_lock(".#alice.vcf", false)]
    #[case::backup("alice.vcf~", false)]
    #[case::tmp("alice.vcf.tmp", false)]
    #[case::swap(".alice.vcf.swp", false)]
    #[case::other("notes.txt", false)]
    fn recognizes_vcard_files(#[case] name: &str, #[case] expected: bool) {
        assert_eq!(is_vcard_name(OsStr::new(name)), expected);
    }

    #[test]
    fn walks_nested_directories_without_following_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir(root.join(".hidden")).unwrap();
        std::fs::write(root.join("top.vcf"), "").unwrap();
        std::fs::write(root.join("a/b/deep.VCF"), "").unwrap();
        std::fs::write(root.join(".hidden/secret.vcf"), "").unwrap();
        std::fs::write(root.join("a/readme.txt"), "").unwrap();
        std::os::unix::fs::symlink(root, root.join("a/b/loop")).unwrap();
        let listing = list_files(root);
        assert!(listing.errors.is_empty(), "{:?}", listing.errors);
        assert_eq!(
            listing.files,
            vec![root.join("a/b/deep.VCF"), root.join("top.vcf")]
        );
    }

    #[test]
    fn a_file_source_is_taken_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("export.txt");
        std::fs::write(&file, "").unwrap();
        assert_eq!(list_files(&file).files, vec![file]);
    }

    #[test]
    fn a_missing_source_is_an_error_not_an_empty_listing() {
        let listing = list_files(Path::new("/nonexistent/contactsyncd"));
        assert!(listing.files.is_empty());
        assert_eq!(listing.errors.len(), 1);
    }

    #[rstest]
    #[case::file_named_after_a_person("/b/Jane Doe +49 170 1234567.vcf", "J….vcf")]
    #[case::in_a_folder("/b/Family/Jo Roe.vcard", "F…/J….vcard")]
    #[case::folder("/b/Anna Maria", "A…")]
    #[case::the_source_itself("/b", "the source's own path")]
    #[case::outside("/elsewhere/x.vcf", "a file outside the source")]
    #[case::multibyte("/b/Ökan.vcf", "Ö….vcf")]
    #[case::dot_in_a_folder_name("/b/Mr. Jane Doe", "M…")]
    #[case::upper_case_extension("/b/JANE.VCF", "J….VCF")]
    fn paths_are_redacted_for_logs(#[case] path: &str, #[case] expected: &str) {
        assert_eq!(redact_path(Path::new("/b"), Path::new(path)), expected);
    }
}
