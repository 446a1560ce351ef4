//! Opening the files contactsyncd reads (cards, secret files) so that nothing can block or
//! flood it: only regular files are read, after following links. A FIFO named `x.vcf` would
//! block `open` until a writer came; `/dev/zero` behind a symlink never ends; a socket or a
//! device is no address book either. Each is refused like an unreadable file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most a secret file (`api_hash_file`, `token_file`, `password_file`) may hold: a
/// secret is a line; anything much longer is the wrong file.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Opens `path` for reading if it is a regular file (a symlink is followed). Never blocks:
/// the file is opened with `O_NONBLOCK`, so a FIFO without a writer opens at once and is
/// then refused by its type; for a regular file the flag means nothing.
pub fn open(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    // A directory keeps its own kind, so that callers can hint (`--config` takes the file).
    let error_kind = if kind.is_dir() {
        io::ErrorKind::IsADirectory
    } else {
        io::ErrorKind::InvalidInput
    };
    Err(io::Error::new(
        error_kind,
        format!("{}, not a regular file: not read", describe(kind)),
    ))
}

/// What a non-regular file is, in words.
fn describe(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// Reads a regular file of at most `cap` bytes as UTF-8 text; a longer file is refused
/// (after reading `cap + 1` bytes, never more).
pub fn read_to_string_capped(path: &Path, cap: u64) -> io::Result<String> {
    let file = open(path)?;
    let mut text = String::new();
    file.take(cap + 1).read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "larger than {} KiB, more than such a file holds (wrong path?)",
                cap / 1024
            ),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.vcf");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let err = open(&fifo).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
    }

    #[test]
    fn a_link_to_a_device_is_refused_and_a_link_to_a_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero.vcf");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(open(&zero).unwrap_err().to_string().contains("device"));
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "secret\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_to_string_capped(&link, 64).unwrap(), "secret\n");
    }

    #[test]
    fn a_file_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        std::fs::write(&file, vec![b'a'; 2049]).unwrap();
        assert!(read_to_string_capped(&file, 2048).is_err());
        assert!(read_to_string_capped(&file, 4096).is_ok());
    }
}
