//! The state database: one SQLite file (WAL, mode 0600) in the state directory (mode 0700).
//!
//! It holds the source files' fingerprints and the phones their cards yielded, per backend
//! account the mirror of what the remote has, the outbox, the account's pause and client_id
//! counter, and the run history. Writers hold `state.lock`; readers never need it.

mod carddav;
mod files;
mod history;
mod mirror;
mod oauth;
mod ownership;
pub mod telegram_session;

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{M, Migrations, SchemaVersion};

pub use carddav::{BookPoll, CachedCard, CardDavBook, CardDavPoll, FetchedCard};
pub use files::{FileRecord, FileRecords, FileState, FilesDigest, Fingerprint, StoredPhone};
pub use history::{RunRecord, SourceStatus};
pub use mirror::{
    AccountState, Batch, BatchKind, BatchState, Claimed, CutDone, DesiredOf, ImportTally,
    OutboxItem, PlanRecord, QueueChange, Rejection, SetAside,
};
pub use oauth::OAuthTokens;
pub use ownership::{ListingOutcome, ListingPolicy, Owner, OwnershipCounts};

pub const DATABASE_FILE: &str = "state.db";
pub const LOCK_FILE: &str = "state.lock";

/// Append-only: a released migration is never edited, only followed by a new one.
const MIGRATION_LIST: &[M<'static>] = &[
    M::up(include_str!("migrations/001_initial.sql")),
    M::up(include_str!("migrations/002_telegram_session.sql")),
    M::up(include_str!("migrations/003_reconcile.sql")),
    M::up(include_str!("migrations/004_phone_index.sql")),
    M::up(include_str!("migrations/005_plan_epoch.sql")),
    M::up(include_str!("migrations/006_derivation.sql")),
    M::up(include_str!("migrations/007_whapi_ownership.sql")),
    M::up(include_str!("migrations/008_telegram_account.sql")),
    M::up(include_str!("migrations/009_forget_all.sql")),
    M::up(include_str!("migrations/010_contact_key.sql")),
    M::up(include_str!("migrations/011_carddav.sql")),
    M::up(include_str!("migrations/012_batch_resend.sql")),
    M::up(include_str!("migrations/013_carddav_full_check.sql")),
    M::up(include_str!("migrations/014_started_over.sql")),
    M::up(include_str!("migrations/015_source_usernames.sql")),
    M::up(include_str!("migrations/016_oauth_token.sql")),
    M::up(include_str!("migrations/017_planned_files.sql")),
    M::up(include_str!("migrations/018_mirror_user.sql")),
];
pub const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_LIST);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {}: {source}", .path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing to write the state into {}: {why}. contactsyncd leaves a directory it did not create as it is; point state_dir at a directory of your own that only you may write to (or one that does not exist yet: it is created with mode 0700)",
        .dir.display()
    )]
    UnsafeDir { dir: PathBuf, why: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another contactsyncd (pid {pid}) is using the state in {}; stop it first, or use a read-only command (status, history, plan)",
        .dir.display()
    )]
    Locked { dir: PathBuf, pid: String },
    #[error("no state yet in {}: run `contactsyncd sync --once` first", .dir.display())]
    Missing { dir: PathBuf },
    #[error(
        "cannot read the state in {}: {source}; the state is private to the user that writes it: for the system service's, run the command as root (sudo)",
        .dir.display()
    )]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the state database {} was written by a newer contactsyncd (schema {found}, this version knows {known}); upgrade contactsyncd or point state_dir elsewhere",
        .path.display()
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error(
        "the state in {} was written by an older contactsyncd, and the process holding it (pid {pid}) keeps it so: restart that process (a new contactsyncd updates the state when it starts), then try again",
        .dir.display()
    )]
    Outdated { dir: PathBuf, pid: String },
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The exclusive right to write the state; released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

#[derive(Debug)]
pub struct Store {
    conn: Connection,
    _lock: Option<StateLock>,
}

impl Store {
    /// Opens (creating if needed) the state for writing, holding the lock.
    pub fn open_for_writing(state_dir: &Path) -> Result<Self> {
        create_private_dir(state_dir)?;
        let lock = acquire_lock(state_dir)?;
        let path = state_dir.join(DATABASE_FILE);
        // Not refused: a first start that crashed leaves such a file. But what it held (the
        // session, the fingerprints, the mirror) is gone: said in the log and in `status`.
        let empty_before = std::fs::metadata(&path).is_ok_and(|meta| meta.len() == 0);
        create_private_file(&path)?;
        let mut conn = Connection::open(&path)?;
        configure(&conn)?;
        migrate(&mut conn, &path)?;
        restrict_sidecar_files(&path);
        if empty_before {
            tracing::warn!(
                "the state database was empty (0 bytes: truncated, or left by a first start that crashed): the state started over. Log in again; every contact is imported again, which changes nothing on the messenger"
            );
            conn.execute(
                "INSERT OR REPLACE INTO started_over (id, at) VALUES (1, ?1)",
                [crate::sync::Clock::now(&crate::sync::SystemClock)],
            )?;
        }
        Ok(Self {
            conn,
            _lock: Some(lock),
        })
    }

    /// Another writing connection to state that `open_for_writing` holds the lock of: the
    /// daemon's planner and each sender keep their own (SQLite serializes their writes).
    pub fn open_connection(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(DATABASE_FILE);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        check_version(&conn, &path)?;
        Ok(Self { conn, _lock: None })
    }

    /// Runs `read` on one snapshot: what it reads in several queries belongs together even
    /// while another connection applies a batch in between.
    pub fn snapshot<T>(&self, read: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        let tx = self.conn.unchecked_transaction()?;
        let value = read(self)?;
        tx.commit()?;
        Ok(value)
    }

    /// Opens existing state read-only; works while a daemon writes (WAL).
    pub fn open_read_only(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(DATABASE_FILE);
        // A state directory we may not enter is not "no state yet" (issue 16.8).
        if let Err(source) = std::fs::File::open(&path) {
            return Err(match source.kind() {
                std::io::ErrorKind::NotFound => StoreError::Missing {
                    dir: state_dir.to_owned(),
                },
                _ => StoreError::Unreadable {
                    dir: state_dir.to_owned(),
                    source,
                },
            });
        }
        let conn = match open_reader(&path, false) {
            // A WAL database is read through its `-shm` file, which a reader creates when
            // it is missing: impossible on a read-only file system (or in a directory the
            // reader may not write). Nothing can write there either, so the file is read
            // as it is, without the shared memory or locks.
            Err(StoreError::Sqlite(err))
                if matches!(
                    err.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
                ) =>
            {
                open_reader(&path, true)?
            }
            other => other?,
        };
        if let SchemaVersion::Inside(found) = MIGRATIONS.current_version(&conn)?
            && found.get() < MIGRATION_LIST.len()
        {
            // Written by an older contactsyncd, no write since the upgrade: its tables lack
            // the new columns every reader asks for. Bring it up to date as a writer would,
            // unless another process holds it (an older daemon still running).
            drop(conn);
            return match Self::open_for_writing(state_dir) {
                Ok(writer) => {
                    drop(writer);
                    Self::open_read_only(state_dir)
                }
                Err(StoreError::Locked { pid, .. }) => Err(StoreError::Outdated {
                    dir: state_dir.to_owned(),
                    pid,
                }),
                Err(err) => Err(err),
            };
        }
        Ok(Self { conn, _lock: None })
    }

    /// The pid of the process that holds the state's write lock now (`run`, or a `sync`
    /// or `login` in progress), or `None`. Read-only: the lock file is opened for reading,
    /// never created or written; a shared lock is tried and dropped at once.
    pub fn writer(state_dir: &Path) -> Result<Option<String>> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io(err)),
        };
        match file.try_lock_shared() {
            Ok(()) => {
                file.unlock().map_err(io)?;
                Ok(None)
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path).map_err(io)?;
                let pid = pid.trim();
                Ok(Some(if pid.is_empty() {
                    "unknown".to_owned()
                } else {
                    pid.to_owned()
                }))
            }
            Err(std::fs::TryLockError::Error(err)) => Err(io(err)),
        }
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn)?;
        migrate(&mut conn, Path::new(":memory:"))?;
        Ok(Self { conn, _lock: None })
    }

    /// When the state was last found empty and started over (`open_for_writing`), if ever.
    pub fn started_over(&self) -> Result<Option<Timestamp>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row("SELECT at FROM started_over WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()?)
    }

    /// The database file, for a second connection (the Telegram session keeps its own).
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(DATABASE_FILE)
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// A read-only connection to the database at `path`, its schema version checked; `immutable`:
/// without locks or the WAL's shared memory (SQLite's `immutable=1`), for a file nothing
/// can change.
fn open_reader(path: &Path, immutable: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        let uri = format!("file:{}?immutable=1", uri_escape(path));
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?
    } else {
        Connection::open_with_flags(path, flags)?
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The first read opens the file (and the WAL's shared memory): its error is SQLite's.
    conn.pragma_query_value(None, "schema_version", |row| row.get::<_, i64>(0))?;
    check_version(&conn, path)?;
    Ok(conn)
}

/// A path as the path of a `file:` URI (RFC 3986): `%`, `?` and `#` and anything not
/// printable ASCII percent-encoded.
fn uri_escape(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_graphic() && !matches!(byte, b'%' | b'?' | b'#') {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

/// PRAGMAs stay outside migrations: they are per connection, not per schema.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn check_version(conn: &Connection, path: &Path) -> Result<()> {
    if let SchemaVersion::Outside(found) = MIGRATIONS.current_version(conn)? {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: found.get(),
            known: MIGRATION_LIST.len(),
        });
    }
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    check_version(conn, path)?;
    MIGRATIONS.to_latest(conn)?;
    Ok(())
}

/// Creates the state directory 0700 when it does not exist. An existing directory is never
/// chmod-ed: `state_dir` pointed at `/`, `/tmp` or `$HOME` by a typo must not change who can
/// use them. Instead, as OpenSSH's StrictModes does, state is not written into a directory
/// others may write to (they could swap the database or the lock) or that belongs to
/// another user (root's files there would lock the service's user out of its own state).
fn create_private_dir(dir: &Path) -> Result<()> {
    let io = |source| StoreError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(meta) => check_private_dir(dir, &meta),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io),
        Err(err) => Err(io(err)),
    }
}

fn check_private_dir(dir: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_dir = |why: String| StoreError::UnsafeDir {
        dir: dir.to_owned(),
        why,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it belongs to another user (uid {}, this process runs as uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "others may write into it (mode {mode:04o})"
        )));
    }
    Ok(())
}

fn create_private_file(path: &Path) -> Result<()> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)
}

/// SQLite creates `-wal` and `-shm` next to the database; they hold the same data.
fn restrict_sidecar_files(path: &Path) {
    for suffix in ["-wal", "-shm"] {
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(suffix);
        let _ = std::fs::set_permissions(&sidecar, std::fs::Permissions::from_mode(0o600));
    }
}

fn acquire_lock(dir: &Path) -> Result<StateLock> {
    let path = dir.join(LOCK_FILE);
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    // A lock just released can linger for a moment in a child forked by another thread
    // (before its exec closes the descriptor), so a busy lock is tried for a second.
    let mut attempts = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if attempts < 10 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default();
                return Err(StoreError::Locked {
                    dir: dir.to_owned(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid
                    },
                });
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
        }
    }
    file.set_len(0).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(StateLock { _file: file })
}

/// Seconds since the Unix epoch, as stored.
pub type Timestamp = i64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }

    #[test]
    fn state_files_are_private_and_a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = Store::open_for_writing(&state).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(DATABASE_FILE)), 0o600);
        assert_eq!(
            Store::writer(&state).unwrap(),
            Some(std::process::id().to_string()),
            "the writer is seen"
        );
        let err = Store::open_for_writing(&state).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        // Readers are never locked out.
        Store::open_read_only(&state).unwrap();
        drop(store);
        assert_eq!(Store::writer(&state).unwrap(), None, "no writer now");
        Store::open_for_writing(&state).unwrap();
    }

    /// An upgraded binary's first command may be a reader (`status` right after the
    /// upgrade): the state still has the older schema, whose tables lack the new columns.
    #[test]
    fn a_reader_brings_an_older_schema_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        MIGRATIONS.to_version(&mut conn, 5).unwrap();
        drop(conn);
        let store = Store::open_read_only(dir.path()).unwrap();
        assert!(
            !store.is_forgetting("telegram").unwrap(),
            "a column of the newest schema"
        );
        // While another process holds the state (an older daemon still running), a reader
        // cannot update it and says so instead of failing on a missing column.
        let mut conn = Connection::open(dir.path().join("other.db")).unwrap();
        MIGRATIONS.to_version(&mut conn, 5).unwrap();
        drop(conn);
        std::fs::rename(dir.path().join("other.db"), dir.path().join(DATABASE_FILE)).unwrap();
        let _held = acquire_lock(dir.path()).unwrap();
        let err = Store::open_read_only(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Outdated { .. }), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open_for_writing(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open_read_only(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("newer contactsyncd"));
    }
}
