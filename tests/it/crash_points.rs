//! Real crashes through the binary: `sync --once` killed with SIGKILL at a fail point
//! (`CONTACTSYNCD_FAILPOINT=NAME:N`, src/failpoint.rs) against the project's Telegram test
//! server, then run again: the next run finishes the work, sends nothing the address book
//! contradicts, and the account ends equal to the address book. The model test crashes at
//! the same points in process, at random; these pin the binary's side of it.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use contactsyncd::failpoint;
use rstest::rstest;

use crate::telegram::account::Registration;
use crate::telegram::{ServerOptions, TestServer};

struct Book {
    dir: tempfile::TempDir,
}

impl Book {
    /// Two cards and a logged-in session for `server`.
    fn new(server: &TestServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("book")).unwrap();
        crate::sync::write_vdir(&dir.path().join("book"), 0..2);
        std::fs::write(
            dir.path().join("config.toml"),
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        crate::support::seed_telegram_session(&dir.path().join("state"), server);
        Self { dir }
    }

    fn card(&self, i: usize) -> PathBuf {
        self.dir.path().join("book").join(format!("{i:05}.vcf"))
    }

    /// `sync --once`, killed at the `nth` pass of `point` when one is given.
    async fn sync(&self, failpoint: Option<(&str, u32)>) -> std::process::Output {
        let config = self.dir.path().join("config.toml");
        let spec = failpoint.map(|(name, nth)| PathBuf::from(format!("{name}:{nth}")));
        tokio::task::spawn_blocking(move || {
            let config = config.to_str().unwrap();
            let mut env: Vec<(&str, &Path)> = Vec::new();
            if let Some(spec) = &spec {
                env.push(("CONTACTSYNCD_FAILPOINT", spec));
            }
            crate::support::contactsyncd(&["--config", config, "sync", "--once"], &env)
        })
        .await
        .unwrap()
    }

    async fn sync_killed_at(&self, point: &str, nth: u32) {
        let killed = self.sync(Some((point, nth))).await;
        assert_eq!(
            killed.status.signal(),
            Some(libc::SIGKILL),
            "the fail point {point}:{nth} was not reached: {}",
            crate::support::stderr(&killed)
        );
    }

    async fn sync_ok(&self) {
        let sync = self.sync(None).await;
        assert!(sync.status.success(), "{}", crate::support::stderr(&sync));
    }
}

/// The server's contact list: phone (digits) → first name.
fn contacts(server: &TestServer) -> Vec<(String, String)> {
    let state = server.state();
    let mut all: Vec<(String, String)> = state
        .account
        .contacts
        .values()
        .map(|c| (c.phone.clone(), c.first_name.clone()))
        .collect();
    all.sort();
    all
}

fn digits(i: usize) -> String {
    crate::sync::phone(i).trim_start_matches('+').to_owned()
}

/// Killed anywhere in the first pass's import: the next run imports what was not recorded
/// (the same batch again, if it may have reached the server) and ends in sync; a second
/// run after that sends nothing.
#[rstest]
#[case::scan_stored(failpoint::APPLY_SCAN, 0)]
#[case::queued(failpoint::QUEUE_PLAN, 0)]
#[case::claimed(failpoint::CLAIM, 0)]
#[case::answered(failpoint::AFTER_SEND, 1)]
#[case::applying(failpoint::APPLY_IMPORT, 1)]
#[tokio::test]
async fn a_sync_killed_in_its_import_is_finished_by_the_next(
    #[case] point: &str,
    #[case] imports_before_the_kill: usize,
) {
    let server = TestServer::start(ServerOptions::default()).await;
    server.state().account.rule = Registration::All;
    let book = Book::new(&server);
    book.sync_killed_at(point, 1).await;
    assert_eq!(
        server.calls_to("contacts.importContacts").len(),
        imports_before_the_kill
    );
    book.sync_ok().await;
    let expected = vec![
        (digits(0), "Person 0".to_owned()),
        (digits(1), "Person 1".to_owned()),
    ];
    assert_eq!(contacts(&server), expected);
    let calls = server.call_count();
    book.sync_ok().await;
    assert_eq!(
        server.calls_to("contacts.importContacts").len(),
        imports_before_the_kill + 1,
        "one import after the kill, then nothing"
    );
    assert!(
        server.calls()[calls..]
            .iter()
            .all(|c| !c.method.starts_with("contacts.import")
                && !c.method.starts_with("contacts.delete")),
        "a settled run sends nothing"
    );
}

/// Killed after the server deleted a contact and before the state recorded it: the next
/// run sends the same delete again (deleting by phone is idempotent) and records it; the
/// card restored after that comes back with a fresh import.
#[rstest]
#[case::answered(failpoint::AFTER_SEND)]
#[case::applying(failpoint::APPLY_DELETE)]
#[tokio::test]
async fn a_sync_killed_in_its_delete_is_finished_by_the_next(#[case] point: &str) {
    let server = TestServer::start(ServerOptions::default()).await;
    server.state().account.rule = Registration::All;
    let book = Book::new(&server);
    book.sync_ok().await;
    let removed = std::fs::read(book.card(1)).unwrap();
    std::fs::remove_file(book.card(1)).unwrap();
    // The first pass of the kill run sends only the delete.
    book.sync_killed_at(point, 1).await;
    assert_eq!(server.calls_to("contacts.deleteByPhones").len(), 1);
    assert_eq!(contacts(&server), vec![(digits(0), "Person 0".to_owned())]);
    book.sync_ok().await;
    assert_eq!(contacts(&server), vec![(digits(0), "Person 0".to_owned())]);
    std::fs::write(book.card(1), removed).unwrap();
    book.sync_ok().await;
    assert_eq!(contacts(&server).len(), 2);
}
