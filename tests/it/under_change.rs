//! Correct under change: what is queued, cached or stored follows the address book as it
//! is now (issue 12, cases 1–3), with the real store and sync code and the fake backend.

use contactsyncd::config;
use contactsyncd::store::Store;
use contactsyncd::sync::{self, AccountSpec, Clock, SyncOptions};

use crate::fake_backend::{Call, FakeBackend, Fault};
use crate::sync::{ManualClock, Setup, phone, write_file};

fn card_text(name: &str, tel: &str, extra: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nTEL;TYPE=CELL:{tel}\r\n{extra}END:VCARD\r\n"
    )
}

fn write_card(setup: &Setup, file: &str, name: &str, i: usize) {
    write_file(setup.book().join(file), card_text(name, &phone(i), "")).unwrap();
}

fn offline() -> SyncOptions {
    SyncOptions {
        offline: true,
        ..SyncOptions::default()
    }
}

/// Every import item the backend was sent for `number`, in order, with its first name.
fn imports_of(backend: &FakeBackend, number: &str) -> Vec<String> {
    backend
        .state()
        .import_calls()
        .iter()
        .flat_map(|items| items.iter())
        .filter(|(_, e164, _, _)| e164 == number)
        .map(|(_, _, first, _)| first.clone())
        .collect()
}

fn deletes_of(backend: &FakeBackend, number: &str) -> usize {
    backend
        .state()
        .delete_calls()
        .iter()
        .filter(|phones| phones.iter().any(|p| p == number))
        .count()
}

/// A planner pass of the daemon, sending nothing: scan, plan, queue.
fn queue_offline(setup: &Setup, store: &mut Store, clock: &ManualClock) -> sync::PassReport {
    let accounts = [AccountSpec {
        name: "fake".into(),
        batch_size: 100,
    }];
    sync::plan_pass(&setup.config, store, &accounts, clock.now(), &offline()).unwrap()
}

/// A sender round of the daemon: what is queued, sent, nothing planned first.
async fn send_queue(
    setup: &Setup,
    store: &mut Store,
    backend: &FakeBackend,
    clock: &ManualClock,
) -> sync::AccountReport {
    let mut report = sync::AccountReport::default();
    let mut fake = backend.boxed();
    sync::send_account(
        &setup.config,
        store,
        fake.as_mut(),
        clock,
        &SyncOptions::default(),
        &mut 0,
        &tokio_util::sync::CancellationToken::new(),
        &mut report,
    )
    .await
    .unwrap();
    report
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(phone).collect()
}

/// The fake Telegram where the first `n` test numbers have an account.
fn fake_with_users(n: usize) -> FakeBackend {
    FakeBackend::new(100).with_users(users(n).iter().map(String::as_str))
}

/// `{i}.vcf` for each `i`: "Person {i}" with the test number `i`.
fn write_people(setup: &Setup, people: std::ops::Range<usize>) {
    for i in people {
        write_card(setup, &format!("{i}.vcf"), &format!("Person {i}"), i);
    }
}

/// A book of `n` people (`write_people`), each with an account, synced once.
async fn people_synced(n: usize) -> (Setup, FakeBackend, ManualClock) {
    let setup = Setup::new(None);
    write_people(&setup, 0..n);
    let backend = fake_with_users(n);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    (setup, backend, clock)
}

#[tokio::test]
async fn a_card_restored_while_its_delete_was_queued_is_never_deleted() {
    let (setup, backend, clock) = people_synced(5).await;

    let file = setup.book().join("2.vcf");
    let text = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let queued = setup.sync(&backend, &clock, offline()).await;
    assert_eq!(queued.accounts[0].planned.deletes, 1);
    assert_eq!(queued.accounts[0].queued_batches, 1);

    write_file(&file, text).unwrap();
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(
        deletes_of(&backend, &phone(2)),
        0,
        "a wanted number was deleted"
    );
    assert_eq!(report.accounts[0].superseded, 1);
    assert_eq!(report.accounts[0].queued_batches, 0);
    assert_eq!(backend.state().contacts[&phone(2)].0, "Person 2");
}

#[tokio::test]
async fn a_name_changed_again_while_queued_goes_out_as_it_is_now() {
    let setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    write_card(&setup, "other.vcf", "Other", 2);
    let backend = fake_with_users(3);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;

    write_card(&setup, "anna.vcf", "Annabel", 1);
    setup.sync(&backend, &clock, offline()).await;
    write_card(&setup, "anna.vcf", "Anne", 1);
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(imports_of(&backend, &phone(1)), ["Anna", "Anne"]);
    assert_eq!(backend.state().contacts[&phone(1)].0, "Anne");
}

/// The same, while the account is paused by a FLOOD_WAIT rather than offline: the queue
/// waits through several passes and the address book changes under it.
#[tokio::test]
async fn a_queue_held_by_a_flood_wait_follows_the_address_book() {
    let setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    let backend = fake_with_users(3);
    backend.state().faults.push_back(Fault::FloodWait(3600));
    let clock = ManualClock::new();
    let paused = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(matches!(
        paused.accounts[0].stop,
        Some(sync::Stop::Paused { .. })
    ));
    write_card(&setup, "anna.vcf", "Annabel", 1);
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    std::fs::remove_file(setup.book().join("anna.vcf")).unwrap();
    write_card(&setup, "bob.vcf", "Bob", 2);
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    clock.advance(3601);
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    // Only the refused first call ever carried Anna; Annabel never left; Bob arrived.
    assert_eq!(imports_of(&backend, &phone(1)), ["Anna"]);
    assert_eq!(imports_of(&backend, &phone(2)), ["Bob"]);
    assert!(!backend.state().contacts.contains_key(&phone(1)));
}

/// The check right before sending: the state moved (a scan stored the new card) after the
/// batch was queued, and no plan ran in between (the daemon's planner is mid-pass).
#[tokio::test]
async fn a_batch_is_checked_against_the_stored_cards_right_before_it_is_sent() {
    let setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    write_card(&setup, "bob.vcf", "Bob", 2);
    let backend = fake_with_users(3);
    let clock = ManualClock::new();
    let mut store = setup.store();
    queue_offline(&setup, &mut store, &clock);

    write_card(&setup, "anna.vcf", "Annabel", 1);
    std::fs::remove_file(setup.book().join("bob.vcf")).unwrap();
    write_card(&setup, "bob2.vcf", "Bobby", 2);
    let scan = contactsyncd::source::scan(
        &setup.config,
        &store,
        clock.now(),
        false,
        contactsyncd::phone::Purpose::Push,
    )
    .unwrap();
    store.apply_scan(&scan.changes, clock.now()).unwrap();

    let report = send_queue(&setup, &mut store, &backend, &clock).await;
    assert_eq!(report.superseded, 2, "{report:?}");
    assert_eq!(report.batches_sent, 0);
    assert!(
        backend.state().calls.is_empty(),
        "{:?}",
        backend.state().calls
    );
}

/// A batch that was sent and whose reply was lost goes out once more as it was (the server
/// may have applied it; client_ids map the reply back), then the same pass corrects it.
#[tokio::test]
async fn a_lost_reply_is_sent_again_as_it_was_then_corrected_in_the_same_pass() {
    let setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    let backend = fake_with_users(3);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    write_card(&setup, "anna.vcf", "Annabel", 1);
    backend.state().faults.push_back(Fault::ApplyThenDropReply);
    let lost = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(matches!(
        lost.accounts[0].stop,
        Some(sync::Stop::Network { .. })
    ));

    write_card(&setup, "anna.vcf", "Anne", 1);
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(report.accounts[0].stop.is_none());
    let calls = backend
        .state()
        .import_calls()
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    // Anna; Annabel (reply lost); Annabel again with the same client_id; Anne.
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls[1], calls[2], "the resend is the batch as it was");
    assert_eq!(
        imports_of(&backend, &phone(1)),
        ["Anna", "Annabel", "Annabel", "Anne"]
    );
    assert_eq!(backend.state().contacts[&phone(1)].0, "Anne");
    let client_ids: Vec<i64> = calls.iter().flatten().map(|(id, ..)| *id).collect();
    let mut unique = client_ids.clone();
    unique.dedup();
    assert_eq!(unique, [client_ids[0], client_ids[1], client_ids[3]]);
    assert!(unique.windows(2).all(|w| w[0] < w[1]), "never reused");
}

#[tokio::test]
async fn a_new_filter_takes_effect_on_files_that_did_not_change() {
    let mut setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    write_people(&setup, 2..8);
    write_file(
        setup.book().join("work.vcf"),
        card_text("Boss", &phone(9), "CATEGORIES:Work\r\n"),
    )
    .unwrap();
    let backend = fake_with_users(10);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(backend.state().contacts.contains_key(&phone(9)));

    let config_path = setup.book().with_file_name("config.toml");
    setup.config = config::parse(
        "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\nname = \"book\"\nexclude_categories = [\"Work\"]\n",
        &config_path,
    )
    .unwrap();
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(report.files_parsed, 8, "every file derived again");
    assert_eq!(report.accounts[0].deleted, 1);
    assert!(!backend.state().contacts.contains_key(&phone(9)));
    let again = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!((again.files_read, again.files_parsed), (0, 0));
}

#[tokio::test]
async fn a_new_default_region_takes_effect_on_files_that_did_not_change() {
    let mut setup = Setup::new(None);
    write_file(
        setup.book().join("anna.vcf"),
        card_text("Anna", "0151 23456789", ""),
    )
    .unwrap();
    write_people(&setup, 2..8);
    let backend = FakeBackend::new(100);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert!(backend.state().saved.contains_key("+4915123456789"));

    let config_path = setup.book().with_file_name("config.toml");
    setup.config = config::parse(
        "state_dir = \"state\"\ndefault_region = \"AT\"\n[[source]]\npath = \"book\"\nname = \"book\"\n",
        &config_path,
    )
    .unwrap();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    let state = backend.state();
    assert!(
        state.saved.contains_key("+4315123456789"),
        "{:?}",
        state.saved
    );
    assert!(!state.saved.contains_key("+4915123456789"));
}

/// A rewrite of the same size within the file system's timestamp granularity leaves size,
/// mtime and inode as they were: the read that recorded a fresh mtime must not vouch for it.
#[tokio::test]
async fn a_racily_clean_file_is_read_again() {
    let setup = Setup::new(None);
    let file = setup.book().join("anna.vcf");
    std::fs::write(&file, card_text("Anna", &phone(1), "")).unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let backend = fake_with_users(3);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;

    // Same size, same inode, and the mtime put back: on a 1-second file system, the same
    // second.
    crate::sync::rewrite_keeping_mtime(&file, card_text("Ella", &phone(1), ""), mtime);
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(report.files_parsed, 1);
    assert_eq!(backend.state().contacts[&phone(1)].0, "Ella");
    assert!(matches!(
        backend.state().calls.last(),
        Some(Call::Import(items)) if items[0].2 == "Ella"
    ));
}

/// Planning again makes the queue equal to the new plan: an item still wanted exactly so
/// keeps its place and client_id, a stale one is superseded, the new names are queued.
#[tokio::test]
async fn planning_again_supersedes_what_was_queued_and_not_sent() {
    let setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    write_card(&setup, "bob.vcf", "Bob", 2);
    let backend = fake_with_users(3);
    let clock = ManualClock::new();
    let first = setup.sync(&backend, &clock, offline()).await;
    assert_eq!(first.accounts[0].planned.new, 2);
    let queued = |setup: &Setup| {
        let store = setup.store();
        store
            .open_batches("fake")
            .unwrap()
            .into_iter()
            .flat_map(|b| b.items)
            .map(|i| (i.e164, i.names.first, i.client_id))
            .collect::<Vec<_>>()
    };
    let before = queued(&setup);
    let bob_id = before.iter().find(|(e, ..)| *e == phone(2)).unwrap().2;

    write_card(&setup, "anna.vcf", "Anne", 1);
    let second = setup.sync(&backend, &clock, offline()).await;
    assert_eq!(second.accounts[0].superseded, 1);
    assert_eq!(second.accounts[0].planned.new, 1, "only Anne is news");
    let after = queued(&setup);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&(phone(2), "Bob".into(), bob_id)));
    let anne = after.iter().find(|(e, ..)| *e == phone(1)).unwrap();
    assert_eq!(anne.1, "Anne");
    assert!(
        anne.2 > before.iter().map(|i| i.2).max().unwrap(),
        "a fresh client_id"
    );

    // Nothing changed: the queue stays as it is, and the pass says nothing is new.
    let third = setup.sync(&backend, &clock, offline()).await;
    assert_eq!(
        third.accounts[0].planned.new + third.accounts[0].superseded,
        0
    );
    assert_eq!(queued(&setup), after);
}

/// The daemon's sender reconciles before it sends: a contact the user deleted in the app
/// (and may have added again by hand) after its delete was queued is no longer ours to
/// delete; the check before sending drops the delete.
#[tokio::test]
async fn a_queued_delete_of_a_contact_no_longer_ours_is_dropped_before_sending() {
    let setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    write_people(&setup, 2..8);
    let backend = fake_with_users(8);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    std::fs::remove_file(setup.book().join("anna.vcf")).unwrap();
    let mut store = setup.store();
    let planned = queue_offline(&setup, &mut store, &clock);
    assert_eq!(planned.accounts[0].planned.deletes, 1);

    // Deleted in the app, found so by the sender's reconciliation, then added by hand.
    backend.state().contacts.remove(&phone(1));
    let remote = (2..8).map(phone).collect();
    store
        .apply_reconcile("fake", &remote, true, clock.now())
        .unwrap();
    backend
        .state()
        .contacts
        .insert(phone(1), ("Anna (mine)".into(), String::new()));

    let report = send_queue(&setup, &mut store, &backend, &clock).await;
    assert_eq!(report.superseded, 1);
    assert_eq!(deletes_of(&backend, &phone(1)), 0);
    assert_eq!(backend.state().contacts[&phone(1)].0, "Anna (mine)");
}

/// Two cards, room for one: the second number comes back in `retry_contacts` and waits.
async fn one_number_waiting_for_a_retry() -> (Setup, FakeBackend, ManualClock) {
    let setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    write_card(&setup, "bob.vcf", "Bob", 2);
    let backend = fake_with_users(3);
    backend.state().import_quota = Some(1);
    let clock = ManualClock::new();
    let first = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(first.accounts[0].retrying, 1, "{first:?}");
    // Numbers go out in order: Anna took the room.
    assert_eq!(
        backend.state().contacts.keys().collect::<Vec<_>>(),
        [&phone(1)]
    );
    backend.state().import_quota = None;
    (setup, backend, clock)
}

/// A number the server sent back for later is not sent again before its wait is over, and
/// is sent once it is (nothing else changed: only the clock).
#[tokio::test]
async fn a_number_sent_back_for_later_is_imported_when_its_wait_is_over() {
    let (setup, backend, clock) = one_number_waiting_for_a_retry().await;
    let waiting = backend.state().import_calls().len();
    let early = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(backend.state().import_calls().len(), waiting, "{early:?}");

    clock.advance(2 * 24 * 3600);
    let due = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(due.accounts[0].planned.retries, 1, "{due:?}");
    assert_eq!(backend.state().contacts.len(), 2);
}

/// The wait holds the names the server sent back, not the number: renamed meanwhile, the
/// card goes out at once under its new names.
#[tokio::test]
async fn a_number_waiting_for_a_retry_goes_out_at_once_when_its_card_changes() {
    let (setup, backend, clock) = one_number_waiting_for_a_retry().await;
    write_card(&setup, "bob.vcf", "Bobby", 2);
    let report = setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(report.accounts[0].planned.new, 1, "{report:?}");
    assert_eq!(backend.state().contacts[&phone(2)].0, "Bobby");
}

/// Passes with these deletion limits (the CLI takes them from `[safety]`).
fn limited(limits: contactsyncd::diff::DeleteLimits) -> SyncOptions {
    SyncOptions {
        limits,
        ..SyncOptions::default()
    }
}

/// 20 cards, synced; then the cards `removed` taken out of the book and a pass: what it held.
async fn remove_from_twenty(removed: std::ops::Range<usize>) -> (sync::AccountReport, FakeBackend) {
    let setup = Setup::new(None);
    let options = limited(contactsyncd::diff::DeleteLimits {
        max_deletes: 100,
        ..Default::default()
    });
    write_people(&setup, 0..20);
    let backend = fake_with_users(20);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, options).await;
    for i in removed {
        std::fs::remove_file(setup.book().join(format!("{i}.vcf"))).unwrap();
    }
    let report = setup.sync(&backend, &clock, options).await;
    (report.accounts[0].clone(), backend)
}

/// From `fraction_min_contacts` synced contacts on, deleting more than
/// `max_delete_fraction` of them is held, however far under `max_deletes`.
#[tokio::test]
async fn the_guard_holds_a_large_share_of_the_synced_contacts() {
    let (report, backend) = remove_from_twenty(0..5).await;
    let held = report.held.expect("5 of 20 is over 20%");
    assert_eq!(held.deletes, 5);
    assert!(held.reason.contains("max_delete_fraction"), "{held:?}");
    assert!(backend.state().delete_calls().is_empty());
}

/// A small share goes through: the fraction is a share, not a size.
#[tokio::test]
async fn the_guard_lets_a_small_share_of_the_synced_contacts_go() {
    let (report, backend) = remove_from_twenty(0..1).await;
    assert_eq!(report.held, None);
    assert_eq!(report.deleted, 1);
    assert_eq!(deletes_of(&backend, &phone(0)), 1);
}

/// `max_delete_fraction = 1.0` turns the share off, the emptied account included: every
/// synced contact may go (the book keeps a card without a number, so it is not emptied).
#[tokio::test]
async fn a_fraction_of_one_lets_every_synced_contact_go() {
    let setup = Setup::new(None);
    let options = limited(contactsyncd::diff::DeleteLimits {
        max_delete_fraction: 1.0,
        ..Default::default()
    });
    write_people(&setup, 0..3);
    write_file(
        setup.book().join("nonumber.vcf"),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No Number\r\nEMAIL:x@example.org\r\nEND:VCARD\r\n",
    )
    .unwrap();
    let backend = fake_with_users(3);
    let clock = ManualClock::new();
    setup.sync(&backend, &clock, options).await;
    for i in 0..3 {
        std::fs::remove_file(setup.book().join(format!("{i}.vcf"))).unwrap();
    }
    let report = setup.sync(&backend, &clock, options).await;
    assert_eq!(report.accounts[0].held, None, "{report:?}");
    assert_eq!(report.accounts[0].deleted, 3);
    assert!(backend.state().contacts.is_empty());
}

/// The daemon's change pass plans only the numbers of the files it read: the queue follows
/// it for those numbers and keeps every other queued item as it was (place and client_id).
#[tokio::test]
async fn a_change_pass_touches_only_the_queued_items_of_the_files_it_read() {
    let setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    write_card(&setup, "bob.vcf", "Bob", 2);
    let clock = ManualClock::new();
    let mut store = setup.store();
    queue_offline(&setup, &mut store, &clock);
    let queued = |store: &Store| {
        let mut items: Vec<_> = store
            .open_batches("fake")
            .unwrap()
            .into_iter()
            .flat_map(|b| b.items)
            .map(|i| (i.e164, i.names.first, i.client_id))
            .collect();
        items.sort();
        items
    };
    let before = queued(&store);

    write_card(&setup, "anna.vcf", "Anne", 1);
    let accounts = [AccountSpec {
        name: "fake".into(),
        batch_size: 100,
    }];
    let paths = [setup.book().join("anna.vcf")].into_iter().collect();
    let mut window = sync::DeletionWindow::new(std::time::Duration::from_secs(300));
    let report = sync::change_pass(
        &setup.config,
        &mut store,
        &accounts,
        &paths,
        clock.now(),
        &offline(),
        &mut window,
    )
    .unwrap()
    .expect("a change pass over one rewritten file");
    assert_eq!(report.accounts[0].superseded, 1, "{report:?}");
    assert_eq!(report.accounts[0].planned.new, 1);
    let after = queued(&store);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1], before[1], "Bob's item kept as it was");
    assert_eq!(after[0].1, "Anne");
}

/// A queued deletion is queued once: planning again while it waits neither adds a second
/// batch for it nor counts it as news.
#[tokio::test]
async fn planning_again_keeps_a_queued_delete_as_it_is() {
    let (setup, backend, clock) = people_synced(5).await;
    std::fs::remove_file(setup.book().join("2.vcf")).unwrap();
    let queued = setup.sync(&backend, &clock, offline()).await;
    assert_eq!(queued.accounts[0].planned.deletes, 1);
    assert_eq!(queued.accounts[0].queued_batches, 1);

    write_card(&setup, "new.vcf", "Someone New", 7);
    let again = setup.sync(&backend, &clock, offline()).await;
    assert_eq!(again.accounts[0].planned.deletes, 0, "{again:?}");
    assert_eq!(again.accounts[0].superseded, 0);
    assert_eq!(
        again.accounts[0].queued_batches, 2,
        "the delete and the new import"
    );
    let deletes: Vec<_> = setup
        .store()
        .open_batches("fake")
        .unwrap()
        .into_iter()
        .flat_map(|b| b.items)
        .filter(|i| i.e164 == phone(2))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
}

/// Anna, Bob and Carla queued in one batch, then the batch sent with `fault`.
async fn three_queued_then_sent_with(fault: Fault) -> (Setup, Store, FakeBackend, ManualClock) {
    let setup = Setup::new(None);
    write_card(&setup, "anna.vcf", "Anna", 1);
    write_card(&setup, "bob.vcf", "Bob", 2);
    write_card(&setup, "carla.vcf", "Carla", 3);
    let backend = fake_with_users(4);
    let clock = ManualClock::new();
    let mut store = setup.store();
    queue_offline(&setup, &mut store, &clock);
    backend.state().faults.push_back(fault);
    send_queue(&setup, &mut store, &backend, &clock).await;
    (setup, store, backend, clock)
}

/// What the outbox holds: (number, first name, state) of every item, sorted.
fn outbox(store: &Store) -> Vec<(String, String, String)> {
    let mut items: Vec<_> = store
        .open_batches("fake")
        .unwrap()
        .into_iter()
        .flat_map(|b| {
            let state = b.state.as_str().to_owned();
            b.items
                .into_iter()
                .map(move |i| (i.e164, i.names.first, state.clone()))
        })
        .collect();
    items.sort();
    items
}

/// A wait after the first item: Anna is on the remote and in the mirror, Bob and Carla, whom
/// the server refused before applying, are back in the outbox as never sent.
#[tokio::test]
async fn a_batch_cut_by_a_wait_keeps_the_refused_items_queued() {
    let (_setup, store, backend, _clock) = three_queued_then_sent_with(Fault::FloodWaitAfter {
        applied: 1,
        seconds: 60,
    })
    .await;
    assert_eq!(
        backend.state().contacts.keys().collect::<Vec<_>>(),
        [&phone(1)]
    );
    assert!(store.mirror("fake").unwrap()[&phone(1)].state.is_remote());
    assert_eq!(
        outbox(&store),
        [
            (phone(2), "Bob".into(), "planned".into()),
            (phone(3), "Carla".into(), "planned".into()),
        ]
    );
}

/// The connection drops after Anna's answer, while Bob was applied unanswered; Carla never
/// went. Bob stays in flight (sent again as he was); Carla is back as never sent, so that
/// her card, renamed meanwhile, goes out only under its new name.
#[tokio::test]
async fn a_batch_cut_by_a_lost_reply_sends_again_only_what_may_have_arrived() {
    let (setup, mut store, backend, clock) =
        three_queued_then_sent_with(Fault::DropAfter { applied: 1 }).await;
    assert_eq!(
        outbox(&store),
        [
            (phone(2), "Bob".into(), "sent".into()),
            (phone(3), "Carla".into(), "planned".into()),
        ]
    );
    write_card(&setup, "carla.vcf", "Carla Renamed", 3);
    drop(store);
    setup.sync(&backend, &clock, SyncOptions::default()).await;
    assert_eq!(imports_of(&backend, &phone(2)), ["Bob", "Bob"]);
    assert_eq!(imports_of(&backend, &phone(3)), ["Carla", "Carla Renamed"]);
    store = setup.store();
    assert!(outbox(&store).is_empty());
}
