//! Finding the vCard files of a source: a vdir, a tree of folders, or one file.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The files a source consists of, and what could not be looked at.
#[derive(Debug, Default)]
pub struct Listing {
    /// Sorted, so every run visits files in the same order.
    pub files: Vec<PathBuf>,
    pub errors: Vec<(PathBuf, std::io::Error)>,
}

/// Lists a source. A file is taken as it is, whatever its name; a directory is walked,
/// following symlinks but never into a directory twice (no loops), taking `*.vcf` and
/// `*.vcard` and skipping hidden, editor and temporary files.
pub fn list_files(root: &Path) -> Listing {
    let mut listing = Listing::default();
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {
            let mut visited = HashSet::new();
            walk(root, &mut visited, &mut listing);
        }
        Ok(_) => listing.files.push(root.to_owned()),
        Err(err) => listing.errors.push((root.to_owned(), err)),
    }
    listing.files.sort();
    listing
}

fn walk(dir: &Path, visited: &mut HashSet<(u64, u64)>, listing: &mut Listing) {
    match std::fs::metadata(dir) {
        Ok(meta) => {
            if !visited.insert((meta.dev(), meta.ino())) {
                return;
            }
        }
        Err(err) => {
            listing.errors.push((dir.to_owned(), err));
            return;
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            listing.errors.push((dir.to_owned(), err));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                listing.errors.push((dir.to_owned(), err));
                continue;
            }
        };
        let name = entry.file_name();
        if is_hidden_or_temporary(&name) {
            continue;
        }
        let path = entry.path();
        let is_dir = match entry.file_type() {
            Ok(t) if t.is_symlink() => match std::fs::metadata(&path) {
                Ok(meta) => meta.is_dir(),
                // A dangling symlink is no contact file: skip it quietly if it is not one.
                Err(err) => {
                    if is_vcard_name(&name) {
                        listing.errors.push((path, err));
                    }
                    continue;
                }
            },
            Ok(t) => t.is_dir(),
            Err(err) => {
                listing.errors.push((path, err));
                continue;
            }
        };
        if is_dir {
            walk(&path, visited, listing);
        } else if is_vcard_name(&name) {
            listing.files.push(path);
        }
    }
}

/// `.hidden`, `.#emacs-lock`, `backup~`, `x.tmp`, `.x.swp`: files a vdir never means.
pub fn is_hidden_or_temporary(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".tmp")
        || name.ends_with(".swp")
        || name.ends_with(".part")
}

pub fn is_vcard_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_lowercase();
    (name.ends_with(".vcf") || name.ends_with(".vcard")) && !is_hidden_or_temporary(name.as_ref())
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
}
