//! The offline core end to end: real files, real SQLite on disk, the sync pass, and the fake
//! backend in `fake_backend.rs` standing in for the messenger.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use contactsyncd::backend::BoxFuture;
use contactsyncd::config::{self, Config};
use contactsyncd::store::Store;
use contactsyncd::sync::{self, Clock, PassReport, Stop, SyncOptions};

use crate::fake_backend::{FakeBackend, Fault};

/// A clock that only moves when told to (or when the pass sleeps).
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new() -> Self {
        Self(AtomicI64::new(1_800_000_000))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    fn sleep(&self, seconds: u64) -> BoxFuture<'_, ()> {
        self.advance(seconds as i64);
        Box::pin(async {})
    }
}

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub config: Config,
}

impl Setup {
    /// A config with one source (`book`, a vdir or a file) and a state dir, all in a temp dir.
    pub fn new(source_file: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let source = match source_file {
            Some(name) => {
                write_file(dir.path().join(name), "").unwrap();
                name.to_owned()
            }
            None => {
                std::fs::create_dir(dir.path().join("book")).unwrap();
                "book".to_owned()
            }
        };
        let text = format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"{source}\"\nname = \"book\"\n"
        );
        let config = config::parse(&text, &dir.path().join("config.toml")).unwrap();
        Self { _dir: dir, config }
    }

    pub fn book(&self) -> PathBuf {
        self.config.sources[0].path.clone()
    }

    pub fn store(&self) -> Store {
        Store::open_for_writing(&self.config.state_dir).unwrap()
    }

    pub async fn sync(
        &self,
        backend: &FakeBackend,
        clock: &ManualClock,
        options: SyncOptions,
    ) -> PassReport {
        let mut store = self.store();
        let mut backends = vec![backend.boxed()];
        sync::sync_once(&self.config, &mut store, &mut backends, clock, &options)
            .await
            .unwrap()
    }
}

/// Writes a file as an address book tool would have written it a minute ago. A file written
/// this very moment is "racily clean" (its mtime is not clearly older than the read) and is
/// read again by the next pass; tests about other things write files that have settled.
pub fn write_file(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    std::fs::write(&path, contents)?;
    let a_minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&path)?
        .set_modified(a_minute_ago)
}

/// Writes `contents` over `file` and puts its mtime back: a rewrite within the file
/// system's timestamp granularity, which size, mtime and inode do not tell apart.
pub fn rewrite_keeping_mtime(
    file: &Path,
    contents: impl AsRef<[u8]>,
    mtime: std::time::SystemTime,
) {
    std::fs::write(file, contents).unwrap();
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

pub fn phone(i: usize) -> String {
    format!("+49151{i:08}")
}

pub fn card(name: &str, i: usize) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nTEL;TYPE=CELL:+49 151 {i:08}\r\nEND:VCARD\r\n"
    )
}

pub fn write_vdir(dir: &Path, range: std::ops::Range<usize>) {
    for i in range {
        write_file(
            dir.join(format!("{i:05}.vcf")),
            card(&format!("Person {i}"), i),
        )
        .unwrap();
    }
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(phone).collect()
}

#[tokio::test]
async fn two_thousand_contacts_are_imported_once_in_batches() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..2000);
    let phones = users(2000);
    let backend = FakeBackend::new(100).with_users(phones.iter().map(String::as_str));
    let clock = ManualClock::new();
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(report.contacts, 2000);
    let state = backend.state();
    let imports = state.import_calls();
    assert_eq!(imports.len(), 20, "⌈2000/100⌉ calls");
    let mut sent: Vec<&str> = imports
        .iter()
        .flat_map(|c| c.iter().map(|i| i.1.as_str()))
        .collect();
    sent.sort_unstable();
    let before = sent.len();
    sent.dedup();
    assert_eq!(
        (before, sent.len()),
        (2000, 2000),
        "every phone exactly once"
    );
    let mut client_ids: Vec<i64> = imports.iter().flat_map(|c| c.iter().map(|i| i.0)).collect();
    client_ids.sort_unstable();
    client_ids.dedup();
    assert_eq!(client_ids.len(), 2000, "client_ids never repeat");
    let remote: Vec<&String> = state.contacts.keys().collect();
    assert_eq!(remote, phones.iter().collect::<Vec<_>>());
    assert_eq!(
        state.contacts[&phone(7)],
        ("Person 7".to_owned(), String::new())
    );
}

#[tokio::test]
async fn nothing_changed_means_no_backend_call() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..50);
    let backend = FakeBackend::new(100).with_users(users(50).iter().map(String::as_str));
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    let calls = backend.state().calls.len();
    let second = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(backend.state().calls.len(), calls);
    assert_eq!((second.files_read, second.files_parsed), (0, 0));
    // Touching a file without changing it re-reads but does not re-parse or send.
    let file = setup.book().join("00003.vcf");
    let text = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    write_file(&file, text).unwrap();
    let third = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!((third.files_read, third.files_parsed), (1, 0));
    assert_eq!(backend.state().calls.len(), calls);
}

#[tokio::test]
async fn a_rename_is_one_import_and_a_removed_card_one_delete() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..10);
    let backend = FakeBackend::new(100).with_users(users(10).iter().map(String::as_str));
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    backend.state().calls.clear();

    write_file(setup.book().join("00002.vcf"), card("Renamed Person", 2)).unwrap();
    std::fs::remove_file(setup.book().join("00005.vcf")).unwrap();
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(report.accounts[0].planned.renames, 1);
    let state = backend.state();
    let imports = state.import_calls();
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].len(), 1);
    assert_eq!(imports[0][0].1, phone(2));
    assert_eq!(imports[0][0].2, "Renamed Person");
    assert_eq!(state.delete_calls(), vec![&vec![phone(5)]]);
    assert_eq!(state.contacts[&phone(2)].0, "Renamed Person");
    assert!(!state.contacts.contains_key(&phone(5)));
}

#[tokio::test]
async fn a_truncated_export_deletes_nothing() {
    let setup = Setup::new(Some("contacts.vcf"));
    let full: String = (0..20).map(|i| card(&format!("Person {i}"), i)).collect();
    write_file(setup.book(), &full).unwrap();
    let backend = FakeBackend::new(100).with_users(users(20).iter().map(String::as_str));
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(backend.state().contacts.len(), 20);

    // The exporter is halfway through rewriting the file: it ends inside card 6.
    let cut = full.match_indices("BEGIN:VCARD").nth(5).unwrap().0 + 30;
    write_file(setup.book(), &full[..cut]).unwrap();
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(report.files_deferred, 1);
    assert_eq!(report.accounts[0].planned.deletes, 0);
    assert!(backend.state().delete_calls().is_empty());
    assert_eq!(backend.state().contacts.len(), 20);

    // Once the file is whole again, real removals go through.
    let shorter: String = (0..19).map(|i| card(&format!("Person {i}"), i)).collect();
    write_file(setup.book(), &shorter).unwrap();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(backend.state().delete_calls(), vec![&vec![phone(19)]]);
}

#[tokio::test]
async fn an_emptied_or_unmounted_source_deletes_nothing_and_status_says_why() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..10);
    let backend = FakeBackend::new(100).with_users(users(10).iter().map(String::as_str));
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;

    for entry in std::fs::read_dir(setup.book()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let emptied = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(emptied.unknown_sources.len(), 1);
    assert!(
        emptied.unknown_sources[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("empty")
    );
    assert_eq!(emptied.contacts, 10, "its contacts are kept");

    std::fs::remove_dir(setup.book()).unwrap();
    let unmounted = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(unmounted.unknown_sources.len(), 1);
    assert!(backend.state().delete_calls().is_empty());
    assert_eq!(backend.state().contacts.len(), 10);

    let statuses = setup.store().source_statuses().unwrap();
    assert_eq!(statuses[0].state, "unknown");
    assert!(
        statuses[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("cannot read")
    );
}

/// Issue 16.14: one card leaving a 4-contact book is deleted without --force-delete;
/// the whole book leaving it is still held.
#[tokio::test]
async fn a_small_book_may_lose_a_card_but_not_every_card() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..4);
    let backend = FakeBackend::new(100).with_users(users(4).iter().map(String::as_str));
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    std::fs::remove_file(setup.book().join("00000.vcf")).unwrap();
    let one = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(one.accounts[0].held.is_none(), "{one:?}");
    assert_eq!(one.accounts[0].deleted, 1, "{one:?}");
    assert_eq!(backend.state().all_numbers().len(), 3);

    // A file that keeps none of the three (an export replaced by a wrong one).
    for i in 1..4 {
        std::fs::remove_file(setup.book().join(format!("{i:05}.vcf"))).unwrap();
    }
    write_vdir(&setup.book(), 10..11);
    let all = setup.sync(&backend, &clock, SyncOptions::default()).await;
    let held = all.accounts[0].held.as_ref().expect("emptying is held");
    assert_eq!(held.deletes, 3);
    assert!(
        held.reason.contains("every synced contact"),
        "{}",
        held.reason
    );
}

#[tokio::test]
async fn mass_deletion_is_held_until_forced() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..100);
    let backend = FakeBackend::new(100).with_users(users(100).iter().map(String::as_str));
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    backend.state().calls.clear();

    for i in 0..30 {
        std::fs::remove_file(setup.book().join(format!("{i:05}.vcf"))).unwrap();
    }
    write_vdir(&setup.book(), 100..101);
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    let held = report.accounts[0].held.as_ref().expect("deletions held");
    assert_eq!(held.deletes, 30);
    assert!(held.reason.contains("--force-delete"), "{}", held.reason);
    assert!(backend.state().delete_calls().is_empty());
    assert_eq!(backend.state().import_calls().len(), 1, "imports go ahead");

    let forced = setup
        .sync(
            &backend,
            &clock,
            SyncOptions {
                force_delete: true,
                ..SyncOptions::default()
            },
        )
        .await;
    assert!(forced.accounts[0].held.is_none());
    assert_eq!(backend.state().delete_calls()[0].len(), 30);
    assert_eq!(backend.state().all_numbers().len(), 71);
}

#[tokio::test]
async fn a_lost_reply_is_sent_again_after_restart_and_ends_right() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..5);
    let backend = FakeBackend::new(100).with_users(users(5).iter().map(String::as_str));
    backend.state().faults.push_back(Fault::ApplyThenDropReply);
    let clock = ManualClock::new();
    let first = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(matches!(first.accounts[0].stop, Some(Stop::Network { .. })));
    assert_eq!(first.accounts[0].queued_batches, 1);
    // The server has the contacts, we do not know it yet.
    assert_eq!(backend.state().contacts.len(), 5);
    assert!(setup.store().mirror("fake").unwrap().is_empty());

    // "Restart": a new store on the same file, a new pass.
    let second = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(second.accounts[0].planned.new, 0, "nothing planned twice");
    assert_eq!(second.accounts[0].imported, 5);
    {
        let state = backend.state();
        let imports = state.import_calls();
        assert_eq!(imports.len(), 2);
        assert_eq!(imports[0], imports[1], "the same batch, same client_ids");
        assert_eq!(state.contacts.len(), 5);
    }
    let mirror = setup.store().mirror("fake").unwrap();
    assert_eq!(mirror.len(), 5);
    let third = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(third.accounts[0].batches_sent, 0);
}

#[tokio::test]
async fn retry_contacts_and_flood_wait_survive_a_restart_and_are_honoured() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..10);
    let backend = FakeBackend::new(100).with_users(users(10).iter().map(String::as_str));
    backend.state().import_quota = Some(6);
    let clock = ManualClock::new();
    let first = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(
        (first.accounts[0].imported, first.accounts[0].retrying),
        (6, 4)
    );

    // Restart right away: the 4 wait for their retry time, nothing is sent.
    backend.state().import_quota = None;
    let calls = backend.state().calls.len();
    let early = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(early.accounts[0].planned.waiting, 4);
    assert_eq!(backend.state().calls.len(), calls);

    // After the back-off (at most 6 minutes for a first retry) they go out once more.
    clock.advance(6 * 60 + 1);
    let later = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(later.accounts[0].planned.retries, 4);
    assert_eq!(later.accounts[0].imported, 4);
    assert_eq!(backend.state().contacts.len(), 10);

    // A long FLOOD_WAIT pauses the account, persisted across restarts.
    write_vdir(&setup.book(), 10..12);
    backend.state().faults.push_back(Fault::FloodWait(3600));
    let flooded = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(matches!(
        flooded.accounts[0].stop,
        Some(Stop::Paused { .. })
    ));
    let calls = backend.state().calls.len();
    clock.advance(1800);
    let paused = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(matches!(paused.accounts[0].stop, Some(Stop::Paused { .. })));
    assert_eq!(backend.state().calls.len(), calls, "no call while paused");
    clock.advance(1801);
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(backend.state().calls.len(), calls + 1);
    assert_eq!(backend.state().all_numbers().len(), 12);

    // A short one is waited out within the pass.
    write_vdir(&setup.book(), 12..13);
    backend.state().faults.push_back(Fault::FloodWait(30));
    let short = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(short.accounts[0].stop.is_none());
    assert_eq!(backend.state().all_numbers().len(), 13);
}

#[tokio::test]
async fn every_contact_in_retry_pauses_the_account_for_an_hour() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..3);
    let backend = FakeBackend::new(100).with_users(users(3).iter().map(String::as_str));
    backend.state().import_quota = Some(0);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    let account = setup.store().account("fake").unwrap().unwrap();
    assert_eq!(account.paused_until, Some(clock.now() + 3600));
}

#[tokio::test]
async fn login_required_stops_sending_and_is_remembered() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..3);
    let backend = FakeBackend::new(100).with_users(users(3).iter().map(String::as_str));
    backend.state().faults.push_back(Fault::AuthKeyUnregistered);
    let clock = ManualClock::new();
    let first = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(first.login_required());
    let calls = backend.state().calls.len();
    let second = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(second.login_required());
    assert_eq!(
        backend.state().calls.len(),
        calls,
        "no retry loop against a dead session"
    );
}

#[tokio::test]
async fn numbers_without_account_are_saved_and_private_users_too() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..3);
    let backend = FakeBackend::new(100).with_users([phone(0).as_str(), phone(1).as_str()]);
    backend.state().private.insert(phone(1));
    let clock = ManualClock::new();
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(
        (report.accounts[0].imported, report.accounts[0].saved),
        (1, 2)
    );
    let counts = setup.store().mirror_counts("fake").unwrap();
    assert_eq!((counts.imported, counts.saved), (1, 2));
}

#[tokio::test]
async fn offline_queues_and_the_next_pass_sends() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..5);
    let backend = FakeBackend::new(2).with_users(users(5).iter().map(String::as_str));
    let clock = ManualClock::new();
    let offline = setup
        .sync(
            &backend,
            &clock,
            SyncOptions {
                offline: true,
                ..SyncOptions::default()
            },
        )
        .await;
    assert_eq!(offline.accounts[0].queued_batches, 3);
    assert!(backend.state().calls.is_empty());
    let online = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(online.accounts[0].batches_sent, 3);
    assert_eq!(
        online.accounts[0].planned.new, 0,
        "queued work is not planned twice"
    );
    assert_eq!(backend.state().contacts.len(), 5);
}

#[tokio::test]
async fn renaming_a_source_in_the_config_changes_nothing_remote() {
    let mut setup = Setup::new(None);
    write_vdir(&setup.book(), 0..5);
    let backend = FakeBackend::new(100).with_users(users(5).iter().map(String::as_str));
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    let calls = backend.state().calls.len();
    setup.config.sources[0].name = "renamed".into();
    for _ in 0..2 {
        let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
        assert_eq!(report.files_parsed, 0);
        assert_eq!(report.contacts, 5);
    }
    assert_eq!(backend.state().calls.len(), calls);
    let statuses = setup.store().source_statuses().unwrap();
    assert_eq!(statuses[0].name, "renamed");
    assert_eq!(statuses[0].files, 5);
}

/// A pass over unchanged files may skip planning only while the state and the settings it
/// planned from are unchanged too: each of these changes no file and still needs a plan.
#[tokio::test]
async fn unchanged_files_are_planned_again_when_the_state_or_the_source_order_moved() {
    let mut setup = Setup::new(None);
    write_vdir(&setup.book(), 0..5);
    let second_book = setup.book().with_file_name("second");
    std::fs::create_dir(&second_book).unwrap();
    write_file(second_book.join("a.vcf"), card("Other Name", 3)).unwrap();
    let backend = FakeBackend::new(100).with_users(users(5).iter().map(String::as_str));
    let clock = ManualClock::new();
    let config_path = setup.book().with_file_name("config.toml");
    let two_sources = |first: &str, second: &str| {
        let text = format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"{first}\"\n[[source]]\npath = \"{second}\"\n"
        );
        config::parse(&text, &config_path).unwrap()
    };
    let options = SyncOptions::default;
    setup.config = two_sources("book", "second");
    setup.sync(&backend, &clock, options()).await;
    setup.sync(&backend, &clock, options()).await;
    assert_eq!(backend.state().contacts[&phone(3)].0, "Person 3");

    // The mirror lost a number (as a reconciliation finds a contact deleted in the app).
    {
        let mut store = setup.store();
        let remote = users(5).into_iter().filter(|p| *p != phone(1)).collect();
        store
            .apply_reconcile("fake", &remote, true, clock.now())
            .unwrap();
    }
    let replanned = setup.sync(&backend, &clock, options()).await;
    assert_eq!(replanned.accounts[0].planned.new, 1, "re-imported");
    setup.sync(&backend, &clock, options()).await;

    // The first source names the number: swapping the sources renames it.
    setup.config = two_sources("second", "book");
    let swapped = setup.sync(&backend, &clock, options()).await;
    assert_eq!(swapped.accounts[0].planned.renames, 1);
    assert_eq!(backend.state().contacts[&phone(3)].0, "Other Name");
    let settled = setup.sync(&backend, &clock, options()).await;
    assert_eq!((settled.contacts, settled.files_read), (5, 0));
    assert_eq!(settled.accounts[0].batches_sent, 0);
}

/// A pass over unchanged files is skipped on one digest of the listing, compared with the
/// stored files' (issue 24.4): each way a file can change that a stat shows still makes the
/// next pass look at the files, as the per-file comparison did.
#[rstest::rstest]
#[case::mtime_moved("touched", (1, 0))]
#[case::replaced_by_a_new_inode("replaced", (1, 0))]
#[case::removed("removed", (0, 1))]
#[case::added("added", (1, 0))]
#[case::renamed("renamed", (1, 1))]
#[tokio::test]
async fn a_pass_over_unchanged_files_is_skipped_until_one_moves(
    #[case] change: &str,
    #[case] read_and_removed: (u64, u64),
) {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..5);
    let backend = FakeBackend::new(100).with_users(users(6).iter().map(String::as_str));
    let clock = ManualClock::new();
    let first = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(first.files_read, 5);
    let skipped = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!((skipped.files_read, skipped.files_removed), (0, 0));

    let file = setup.book().join("00003.vcf");
    let meta = std::fs::metadata(&file).unwrap();
    match change {
        "touched" => std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(meta.modified().unwrap() - std::time::Duration::from_secs(30))
            .unwrap(),
        "replaced" => {
            // The same bytes, size and mtime under a new inode (written beside, renamed over).
            let beside = setup.book().join("00003.vcf.tmp");
            write_file(&beside, std::fs::read(&file).unwrap()).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&beside)
                .unwrap()
                .set_modified(meta.modified().unwrap())
                .unwrap();
            std::fs::rename(&beside, &file).unwrap();
        }
        "removed" => std::fs::remove_file(&file).unwrap(),
        "added" => write_vdir(&setup.book(), 5..6),
        "renamed" => std::fs::rename(&file, setup.book().join("00003-renamed.vcf")).unwrap(),
        _ => unreachable!(),
    }
    let after = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(
        (after.files_read, after.files_removed),
        read_and_removed,
        "{change}"
    );
    let settled = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!((settled.files_read, settled.files_removed), (0, 0));
}

/// The racy-clean rule holds for a pass that could be skipped: a plan made while a file's
/// read could not vouch for it (its mtime not clearly older than the read) records no digest
/// of the files, so a rewrite of the same size that keeps the mtime and the inode (within
/// a file system's timestamp granularity) is read by the next pass, not skipped.
#[tokio::test]
async fn a_racily_clean_file_keeps_the_next_pass_from_being_skipped() {
    let setup = Setup::new(None);
    let file = setup.book().join("anna.vcf");
    std::fs::write(&file, card("Anna", 1)).unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let backend = FakeBackend::new(100).with_users(users(3).iter().map(String::as_str));
    let clock = ManualClock::new();
    let offline = || SyncOptions {
        offline: true,
        ..SyncOptions::default()
    };
    // Offline: the plan is queued and nothing moves the state after it (a settled plan).
    let first = setup.sync(&backend, &clock, offline()).await;
    assert_eq!(first.accounts[0].planned.new, 1);

    rewrite_keeping_mtime(&file, card("Ella", 1), mtime);
    let second = setup.sync(&backend, &clock, offline()).await;
    assert_eq!(second.files_parsed, 1, "the rewrite was not read");
    assert_eq!(second.accounts[0].planned.new, 1, "Ella replaces Anna");
}

/// A pass that derives every file again (a new default region) supersedes the imports it
/// had queued under the old one; the pass after it finds nothing changed and is skipped, as
/// after any plan that left nothing to do. Before, the queueing's own changes moved the plan
/// epoch past the one the plan was recorded at, and the pass after it planned again for
/// nothing (1.2 s at 100k files). Through the binary: its debug log says which pass it was.
#[tokio::test]
async fn the_pass_after_a_change_of_region_is_skipped() {
    use crate::support::{contactsyncd, stderr, stdout};
    let server = crate::daemon::registering_server(Default::default()).await;
    let daemon = crate::daemon::Daemon::prepare(&server, 0..0, "", "", "");
    for i in 0..5 {
        // National numbers: +49 151 … in Germany, +43 151 … in Austria.
        let card = format!(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Person {i}\r\nTEL;TYPE=CELL:0151 {i:08}\r\nEND:VCARD\r\n"
        );
        write_file(daemon.book.join(format!("{i}.vcf")), card).unwrap();
    }
    let config = daemon.config.to_str().unwrap();
    let pass = || {
        let output = contactsyncd(
            &["--config", config, "sync", "--once", "--offline", "--json"],
            &[("CONTACTSYNCD_LOG", Path::new("contactsyncd=debug"))],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        let skipped = stderr(&output).contains("nothing changed since the last settled plan");
        (report, skipped)
    };
    let (first, skipped) = pass();
    assert_eq!(
        (first["accounts"][0]["planned"]["new"].as_u64(), skipped),
        (Some(5), false)
    );
    assert!(pass().1, "nothing changed: skipped");

    let austrian = daemon.config_text.replace("\"DE\"", "\"AT\"");
    assert_ne!(austrian, daemon.config_text);
    std::fs::write(&daemon.config, austrian).unwrap();
    let (rederived, skipped) = pass();
    assert!(!skipped);
    assert_eq!(rederived["files_parsed"].as_u64(), Some(5));
    assert_eq!(rederived["accounts"][0]["superseded"].as_u64(), Some(5));
    assert_eq!(rederived["accounts"][0]["planned"]["new"].as_u64(), Some(5));
    let (after, skipped) = pass();
    assert!(
        skipped,
        "the pass after the re-derivation planned again: {after}"
    );
    assert_eq!(after["contacts"].as_u64(), Some(5));
}

/// The daemon's change pass over the files an event named queues what the full pass would:
/// the full pass right after it finds nothing left to plan.
#[tokio::test]
async fn a_change_pass_queues_what_the_full_pass_would() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..20);
    // Number 7 is on two cards; the file that sorts first (00007.vcf) names it.
    write_file(setup.book().join("00009b.vcf"), card("Second Seven", 7)).unwrap();
    let backend = FakeBackend::new(100).with_users(users(20).iter().map(String::as_str));
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(backend.state().contacts[&phone(7)].0, "Person 7");

    let accounts = [sync::AccountSpec {
        name: "fake".into(),
        batch_size: 100,
    }];
    let options = SyncOptions::default();
    let mut store = setup.store();
    // One file renamed and given a second number; the naming holder of number 7 drops it.
    let renamed = setup.book().join("00003.vcf");
    write_file(
        &renamed,
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:New Three\r\nTEL:+49 151 00000003\r\nTEL:+49 151 00000099\r\nEND:VCARD\r\n",
    )
    .unwrap();
    let seven = setup.book().join("00007.vcf");
    write_file(&seven, card("Person 7", 1234)).unwrap();
    let ignored = setup.book().join("notes.txt");
    write_file(&ignored, "not a card").unwrap();
    let paths = [renamed, seven, ignored].into_iter().collect();
    let now = clock.now();
    let mut window = sync::DeletionWindow::new(std::time::Duration::from_secs(300));
    let mut change_pass = |store: &mut Store, paths: &std::collections::BTreeSet<PathBuf>| {
        sync::change_pass(
            &setup.config,
            store,
            &accounts,
            paths,
            now,
            &options,
            &mut window,
        )
        .unwrap()
    };
    let quick = change_pass(&mut store, &paths).expect("written files are the change pass's");
    let planned = &quick.accounts[0].planned;
    assert_eq!(
        (
            quick.files_parsed,
            planned.new,
            planned.renames,
            planned.deletes
        ),
        (2, 2, 2, 0),
        "new: 99 and 1234; renamed: 3 and 7"
    );
    let queued: Vec<(String, String)> = store
        .open_batches("fake")
        .unwrap()
        .iter()
        .flat_map(|b| b.items.iter())
        .map(|i| (i.e164.clone(), i.names.first.clone()))
        .collect();
    for expected in [
        (phone(3), "New Three"),
        (phone(99), "New Three"),
        (phone(1234), "Person 7"),
        // The other card names number 7 now: the name rule reads every card that has it.
        (phone(7), "Second Seven"),
    ] {
        let expected = (expected.0, expected.1.to_owned());
        assert!(queued.contains(&expected), "{expected:?} in {queued:?}");
    }

    let after = sync::plan_pass(&setup.config, &mut store, &accounts, now, &options).unwrap();
    assert_eq!(after.files_parsed, 0, "the change pass stored what it read");
    assert_eq!(
        after.accounts[0].planned,
        Default::default(),
        "nothing left to plan"
    );

    // A removed file is the change pass's too: its numbers are deleted.
    std::fs::remove_file(setup.book().join("00004.vcf")).unwrap();
    let gone = [setup.book().join("00004.vcf")].into_iter().collect();
    let removed = change_pass(&mut store, &gone).expect("a removed file is the change pass's");
    assert_eq!(
        (removed.files_removed, removed.accounts[0].planned.deletes),
        (1, 1)
    );
    let after = sync::plan_pass(&setup.config, &mut store, &accounts, now, &options).unwrap();
    assert_eq!(after.accounts[0].planned, Default::default());

    // A folder moved away is the full pass's (its files were not named one by one).
    let family = setup.book().join("family");
    std::fs::create_dir(&family).unwrap();
    write_file(family.join("f.vcf"), card("Family", 77)).unwrap();
    let found = change_pass(&mut store, &[family.join("f.vcf")].into_iter().collect())
        .expect("a new file in a subfolder");
    assert_eq!(found.accounts[0].planned.new, 1);
    std::fs::rename(&family, setup._dir.path().join("family.away")).unwrap();
    assert!(change_pass(&mut store, &[family].into_iter().collect()).is_none());

    // So is a big file (an export rewritten whole): looking its numbers up one by one
    // would be slower than the full pass.
    let big = setup.book().join("big.vcf");
    let cards: String = (500..5000)
        .map(|i| card(&format!("Person {i}"), i))
        .collect();
    assert!(cards.len() > 256 * 1024);
    write_file(&big, cards).unwrap();
    let paths = [big].into_iter().collect();
    assert!(change_pass(&mut store, &paths).is_none());
}

/// Issue 15: a contact known only by username is planned for Telegram, which adds by
/// username, and left out of WhatsApp's plan (WhatsApp knows people by number only).
#[test]
fn username_contacts_are_planned_for_telegram_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_for_writing(dir.path()).unwrap();
    let names = |first: &str| contactsyncd::diff::Names {
        first: first.into(),
        last: String::new(),
    };
    let desired: std::collections::BTreeMap<String, contactsyncd::diff::Names> = [
        ("+4915100000001".to_owned(), names("Number")),
        (
            contactsyncd::contact_key::of_username("Alice_W"),
            names("Alice"),
        ),
    ]
    .into();
    let keys = |account: &str| -> Vec<String> {
        let (plan, _) =
            sync::plan_for(&store, account, &desired, &SyncOptions::default(), 0).unwrap();
        plan.imports.into_iter().map(|i| i.e164).collect()
    };
    assert_eq!(keys("telegram"), ["+4915100000001", "@alice_w"]);
    assert_eq!(keys("whatsapp"), ["+4915100000001"]);
}

/// The clock set back (a wrong RTC at boot that NTP corrects, a VM restored) leaves the
/// last reconcile "in the future": it is due at once, not when the clock catches up with
/// it (found by the model test: a contact deleted in the app stayed deleted).
#[tokio::test]
async fn a_reconcile_from_the_future_is_due_at_once() {
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..2);
    let backend = FakeBackend::new(100).with_users(users(2).iter().map(String::as_str));
    // Once a day; deleted in the app: imported again.
    backend.state().reconcile = Some((86_400, true));
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(backend.state().contacts.len(), 2);
    backend.state().contacts.remove(&phone(1));
    clock.advance(-3600);
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(
        backend.state().contacts.contains_key(&phone(1)),
        "the reconcile waited for the clock to catch up"
    );
}

/// A sync's scan (`Purpose::Push`) derives the same phones as `plan`'s (`Show`) and does not
/// look for other regions' readings of a national number: only `plan` shows them.
#[test]
fn a_syncs_scan_derives_the_same_phones_without_flagging_numbers() {
    use contactsyncd::phone::Purpose;
    use contactsyncd::source::FileChange;
    let setup = Setup::new(None);
    write_vdir(&setup.book(), 0..3);
    // Valid in DE, but written as a US number; in no range DE knows.
    write_file(
        setup.book().join("us.vcf"),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Sam\r\nTEL;TYPE=CELL:(415) 555-0199\r\nEND:VCARD\r\n",
    )
    .unwrap();
    write_file(
        setup.book().join("jp.vcf"),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Kei\r\nTEL;TYPE=CELL:090-1234-5678\r\nEND:VCARD\r\n",
    )
    .unwrap();
    let store = setup.store();
    let phones = |purpose| {
        let scan = contactsyncd::source::scan(&setup.config, &store, 1, false, purpose).unwrap();
        let mut phones: Vec<(PathBuf, String)> = scan
            .changes
            .iter()
            .flat_map(|change| match change.as_ref() {
                FileChange::Updated {
                    record,
                    phones: Some(phones),
                } => phones
                    .iter()
                    .map(|p| (record.path.clone(), p.e164.to_string()))
                    .collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            })
            .collect();
        phones.sort();
        (phones, scan.flagged)
    };
    let (shown, flagged) = phones(Purpose::Show);
    let (pushed, none) = phones(Purpose::Push);
    assert_eq!(shown.len(), 5);
    assert!(shown.contains(&(setup.book().join("us.vcf"), "+494155550199".to_owned())));
    assert_eq!(pushed, shown);
    assert_eq!(flagged.len(), 2, "{flagged:?}");
    let us = flagged.iter().find(|f| f.e164 == "+494155550199").unwrap();
    assert_eq!(us.other_regions[0].region, "US");
    assert!(none.is_empty(), "{none:?}");
}
