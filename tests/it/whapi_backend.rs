//! The WhatsApp backend against the local Whapi stand-in, driven by the real sync pass.

use std::time::Duration;

use contactsyncd::backend::Backend;
use contactsyncd::backend::whapi::WhapiBackend;
use contactsyncd::config::{self, Config};
use contactsyncd::store::Store;
use contactsyncd::sync::{self, PassReport, Stop, SyncOptions};

use crate::sync::{ManualClock, card, write_vdir};
use crate::whapi::{WhapiFault, WhapiServer};

const TOKEN: &str = "test-token-123";

struct Setup {
    _dir: tempfile::TempDir,
    config: Config,
    server: WhapiServer,
}

impl Setup {
    async fn new(rate: f64, policy: &str) -> Self {
        Self::with(rate, policy, "").await
    }

    /// `extra`: more `[whatsapp]` keys.
    async fn with(rate: f64, policy: &str, extra: &str) -> Self {
        let server = WhapiServer::start(TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("book")).unwrap();
        let config = config_for(dir.path(), &server.base_url(), TOKEN, rate, policy, extra);
        Self {
            _dir: dir,
            config,
            server,
        }
    }

    /// The same state and book, another `[whatsapp]` section.
    fn reconfigure(&mut self, base_url: &str, token: &str, extra: &str) {
        self.config = config_for(self._dir.path(), base_url, token, 500.0, "reimport", extra);
    }

    fn store(&self) -> Store {
        Store::open_read_only(&self.config.state_dir).unwrap()
    }

    fn book(&self) -> std::path::PathBuf {
        self.config.sources[0].path.clone()
    }

    async fn sync_with(&self, clock: &ManualClock, options: SyncOptions) -> PassReport {
        let mut store = Store::open_for_writing(&self.config.state_dir).unwrap();
        let whatsapp = self.config.whatsapp.as_ref().unwrap();
        let mut backends: Vec<Box<dyn Backend>> =
            vec![Box::new(WhapiBackend::new(whatsapp).unwrap())];
        sync::sync_once(&self.config, &mut store, &mut backends, clock, &options)
            .await
            .unwrap()
    }

    async fn sync(&self, clock: &ManualClock) -> PassReport {
        self.sync_with(clock, SyncOptions::default()).await
    }
}

fn config_for(
    dir: &std::path::Path,
    base_url: &str,
    token: &str,
    rate: f64,
    policy: &str,
    extra: &str,
) -> Config {
    let text = format!(
        "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n\n[whatsapp]\nbase_url = \"{base_url}\"\ntoken = \"{token}\"\nrequests_per_second = {rate}\nrequest_timeout = 2\non_remote_delete = \"{policy}\"\n{extra}\n"
    );
    std::fs::write(dir.join("config.toml"), &text).unwrap();
    config::parse(&text, &dir.join("config.toml")).unwrap()
}

fn digits(i: usize) -> String {
    format!("49151{i:08}")
}

#[tokio::test]
async fn five_hundred_contacts_paced_at_the_configured_rate() {
    let setup = Setup::new(250.0, "reimport").await;
    write_vdir(&setup.book(), 0..500);
    let started = std::time::Instant::now();
    let report = setup.sync(&ManualClock::new()).await;
    let elapsed = started.elapsed();
    assert_eq!(report.accounts[0].imported, 500, "{report:?}");
    let saved = setup.server.saved();
    assert_eq!(saved.len(), 500);
    assert_eq!(saved[&digits(7)], "Person 7");
    let puts = setup.server.requests("PUT");
    assert_eq!(puts.len(), 500);
    // Never a burst: any 20 consecutive requests span at least 19 intervals of 4 ms (less
    // a little for the jitter between sending and arrival).
    let all = setup.server.state().requests.clone();
    let tightest = all
        .windows(20)
        .map(|w| w[19].at.duration_since(w[0].at))
        .min()
        .unwrap();
    assert!(
        tightest >= Duration::from_millis(19 * 4 * 9 / 10),
        "a burst: {tightest:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(2),
        "500 requests at 250/s take 2 s: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_rename_patches_and_a_removal_deletes_only_ours() {
    let setup = Setup::new(500.0, "reimport").await;
    // Ten, so that one removal stays under the guard's 20%.
    write_vdir(&setup.book(), 0..10);
    // The user's own contact, not in the address book: never touched.
    setup.server.state().contacts.insert(
        "4930999999".into(),
        crate::whapi::Entry {
            name: "Mine".into(),
            saved: true,
        },
    );
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    std::fs::write(setup.book().join("00001.vcf"), card("Renamed", 1)).unwrap();
    std::fs::remove_file(setup.book().join("00002.vcf")).unwrap();
    setup.sync(&clock).await;
    let patches = setup.server.requests("PATCH");
    assert_eq!(patches.len(), 1, "{:#?}", setup.server.state().requests);
    assert_eq!(patches[0].path, format!("/contacts/{}", digits(1)));
    let deletes = setup.server.requests("DELETE");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].path, format!("/contacts/{}", digits(2)));
    let saved = setup.server.saved();
    assert_eq!(saved[&digits(1)], "Renamed");
    assert!(!saved.contains_key(&digits(2)));
    assert_eq!(saved["4930999999"], "Mine");
}

#[tokio::test]
async fn mass_deletion_is_held_until_forced() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..20);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    for i in 0..10 {
        std::fs::remove_file(setup.book().join(format!("{i:05}.vcf"))).unwrap();
    }
    let held = setup.sync(&clock).await;
    assert!(held.accounts[0].held.is_some());
    assert!(setup.server.requests("DELETE").is_empty());
    setup
        .sync_with(
            &clock,
            SyncOptions {
                force_delete: true,
                ..SyncOptions::default()
            },
        )
        .await;
    assert_eq!(setup.server.requests("DELETE").len(), 10);
    assert_eq!(setup.server.saved().len(), 10);
}

#[tokio::test]
async fn a_reset_connection_mid_sync_loses_nothing_and_repeats_little() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..25);
    {
        let mut state = setup.server.state();
        // The first GET (reconcile) and 14 PUTs go through, then the connection breaks.
        for _ in 0..15 {
            state.faults.push_back(WhapiFault::Slow(Duration::ZERO));
        }
        state.faults.push_back(WhapiFault::Reset);
    }
    let clock = ManualClock::new();
    let first = setup.sync(&clock).await;
    assert!(
        matches!(first.accounts[0].stop, Some(Stop::Network { .. })),
        "{first:?}"
    );
    let gets_before = setup.server.requests("GET").len();
    let second = setup.sync(&clock).await;
    assert!(second.accounts[0].stop.is_none(), "{second:?}");
    assert_eq!(setup.server.saved().len(), 25, "nothing lost");
    // Only the PUT whose reply the reset lost is repeated: the interrupted batch's four
    // adds before it were handed back with the error and recorded, its five adds after it
    // were never tried (issue 21). 1 GET + 14 PUTs + the reset one, then 1 + 5 + 5.
    let puts = setup.server.requests("PUT").len();
    assert_eq!(puts, 25 + 1, "{puts} PUTs");
    for (id, name) in setup.server.saved() {
        let i: usize = id[5..].parse().unwrap();
        assert_eq!(name, format!("Person {i}"));
    }
    // The repeated add answered 409: maybe ours (reply lost), maybe the user's. Not taken
    // for either until the listing shows our names: the pass lists the phone book again
    // before it plans a second time (a batch was resent), so it is decided in the same
    // pass, and a card removed meanwhile has its number deleted there too.
    let listed = setup.server.requests("GET")[gets_before..]
        .iter()
        .any(|r| r.path.contains("count=100"));
    assert!(
        listed,
        "the second pass listed the phone book after the resend"
    );
    let store = setup.store();
    assert_eq!(store.ownership_counts("whatsapp").unwrap().unverified, 0);
    assert_eq!(
        store.mirror_counts("whatsapp").unwrap().imported,
        25,
        "all ours"
    );
}

#[tokio::test]
async fn too_many_requests_pauses_the_account_across_restarts() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..3);
    {
        let mut state = setup.server.state();
        state.faults.push_back(WhapiFault::Slow(Duration::ZERO)); // the reconcile GET
        state
            .faults
            .push_back(WhapiFault::TooManyRequests { retry_after: 600 });
    }
    let clock = ManualClock::new();
    let first = setup.sync(&clock).await;
    assert!(
        matches!(first.accounts[0].stop, Some(Stop::Paused { .. })),
        "{first:?}"
    );
    let count = setup.server.state().requests.len();
    setup.sync(&clock).await;
    assert_eq!(
        setup.server.state().requests.len(),
        count,
        "no request while paused"
    );
    clock.advance(601);
    setup.sync(&clock).await;
    assert_eq!(setup.server.saved().len(), 3);
}

/// ... until the token is changed in the configuration.
#[tokio::test]
async fn a_bad_token_stops_the_account_once() {
    let mut setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..2);
    setup.server.state().token = "another".into();
    let clock = ManualClock::new();
    let first = setup.sync(&clock).await;
    assert!(first.login_required(), "{first:?}");
    let count = setup.server.state().requests.len();
    let second = setup.sync(&clock).await;
    assert!(second.login_required());
    assert_eq!(
        setup.server.state().requests.len(),
        count,
        "reported once, not retried"
    );
    let base_url = setup.server.base_url();
    setup.reconfigure(&base_url, "another", "");
    let fixed = setup.sync(&clock).await;
    assert!(!fixed.login_required(), "{fixed:?}");
    assert_eq!(setup.server.saved().len(), 2);
}

#[tokio::test]
async fn a_malformed_answer_is_an_error_not_a_crash() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..2);
    setup.server.state().faults.push_back(WhapiFault::Malformed);
    let clock = ManualClock::new();
    let report = setup.sync(&clock).await;
    // The reconcile failed and was skipped; the sync itself went on.
    assert_eq!(report.accounts[0].imported, 2, "{report:?}");
    let mut backend = WhapiBackend::new(setup.config.whatsapp.as_ref().unwrap()).unwrap();
    setup.server.state().faults.push_back(WhapiFault::Malformed);
    let err = backend.remote_contacts().await.unwrap_err().to_string();
    assert!(err.contains("malformed"), "{err}");
    assert!(
        !err.contains("4915100000001"),
        "digits are masked in excerpts: {err}"
    );
}

/// 150 contacts, so the reconcile pages (100 a page); the one deleted on the phone is on
/// the second page.
async fn remote_delete(policy: &str) -> Setup {
    let setup = Setup::new(1000.0, policy).await;
    write_vdir(&setup.book(), 0..150);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    setup
        .server
        .state()
        .contacts
        .get_mut(&digits(120))
        .unwrap()
        .saved = false;
    clock.advance(6 * 3600 + 1);
    setup.sync(&clock).await;
    setup
}

#[tokio::test]
async fn a_remote_delete_is_reimported_under_reimport() {
    let setup = remote_delete("reimport").await;
    assert_eq!(setup.server.saved().len(), 150);
    assert_eq!(setup.server.requests("PUT").len(), 151);
    let pages = setup.server.requests("GET");
    assert!(
        pages.iter().any(|r| r.path.contains("offset=100")),
        "paged: {pages:?}"
    );
}

#[tokio::test]
async fn a_remote_delete_stays_under_keep() {
    let setup = remote_delete("keep").await;
    assert_eq!(setup.server.saved().len(), 149);
    assert_eq!(setup.server.requests("PUT").len(), 150);
}

/// One config with both backends: `sync --once` (the real binary) converges both, and
/// `status` and `remote list` show both.
#[tokio::test]
async fn telegram_and_whatsapp_side_by_side_from_one_config() {
    use crate::telegram::{ServerOptions, TestServer};
    let telegram = TestServer::start(ServerOptions::default()).await;
    telegram.state().account.rule = crate::telegram::account::Registration::All;
    let whapi = WhapiServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    write_vdir(&dir.path().join("book"), 0..6);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n\n[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\n\n[whatsapp]\nbase_url = \"{}\"\ntoken = \"{TOKEN}\"\nrequests_per_second = 500\n",
            whapi.base_url()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    crate::support::seed_telegram_session(&state, &telegram);
    let config = config.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["--config".to_owned(), config.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        tokio::task::spawn_blocking(move || {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            crate::support::contactsyncd(&all, &[])
        })
    };
    let sync = run(&["sync", "--once"]).await.unwrap();
    assert!(sync.status.success(), "{}", crate::support::stderr(&sync));
    assert_eq!(telegram.state().account.contacts.len(), 6);
    assert_eq!(whapi.saved().len(), 6);

    let status = crate::support::stdout(&run(&["status"]).await.unwrap());
    assert!(status.contains("telegram: 6 in sync"), "{status}");
    assert!(status.contains("whatsapp: 6 in sync"), "{status}");
    let list = run(&["remote", "list", "--json"]).await.unwrap();
    assert!(list.status.success(), "{}", crate::support::stderr(&list));
    let backends: Vec<String> = crate::support::stdout(&list)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["backend"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(backends.iter().filter(|b| *b == "telegram").count(), 6);
    assert_eq!(backends.iter().filter(|b| *b == "whatsapp").count(), 6);

    // WhatsApp's gateway asks for a pause: `remote list` and `remote export` do Telegram,
    // name the account they left out, and exit 75, not 0 (an export is not whole).
    write_vdir(&dir.path().join("book"), 0..7);
    whapi
        .state()
        .faults
        .push_back(WhapiFault::TooManyRequests { retry_after: 600 });
    let sync = run(&["sync", "--once"]).await.unwrap();
    assert_eq!(
        sync.status.code(),
        Some(75),
        "{}",
        crate::support::stderr(&sync)
    );
    let requests = whapi.state().requests.len();
    let list = run(&["remote", "list", "--json"]).await.unwrap();
    assert_eq!(
        list.status.code(),
        Some(75),
        "{}",
        crate::support::stderr(&list)
    );
    let listed = crate::support::stdout(&list);
    assert_eq!(listed.lines().count(), 7, "{listed}");
    assert!(
        listed
            .lines()
            .all(|l| l.contains("\"backend\":\"telegram\"")),
        "{listed}"
    );
    let why = crate::support::stderr(&list);
    assert!(why.contains("whatsapp: paused until"), "{why}");
    let export = dir.path().join("export");
    let exported = run(&["remote", "export", export.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(
        exported.status.code(),
        Some(75),
        "{}",
        crate::support::stderr(&exported)
    );
    assert!(
        crate::support::stdout(&exported).contains("telegram: 7 contacts"),
        "{}",
        crate::support::stdout(&exported)
    );
    assert_eq!(std::fs::read_dir(&export).unwrap().count(), 7);
    assert_eq!(
        whapi.state().requests.len(),
        requests,
        "not asked while paused"
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_and_the_batch_goes_again() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..2);
    {
        let mut state = setup.server.state();
        state.faults.push_back(WhapiFault::Slow(Duration::ZERO)); // the reconcile GET
        state
            .faults
            .push_back(WhapiFault::Slow(Duration::from_secs(3)));
    }
    let clock = ManualClock::new();
    let first = setup.sync(&clock).await;
    assert!(
        matches!(first.accounts[0].stop, Some(Stop::Network { .. })),
        "{first:?}"
    );
    setup.sync(&clock).await;
    assert_eq!(setup.server.saved().len(), 2);
}

/// A full sync to both backends with debug logging for contactsyncd: not one log line may
/// carry a pushed number, in any format, or a name; nor a file name holding them (an
/// unreadable "Jane Doe +49 170 1234567.vcf" makes the source unknown), nor a value serde
/// quotes from a malformed contact list.
#[tokio::test]
async fn logs_never_show_numbers_or_names() {
    use crate::telegram::{ServerOptions, TestServer};
    let telegram = TestServer::start(ServerOptions::default()).await;
    telegram.state().account.rule = crate::telegram::account::Registration::All;
    let whapi = WhapiServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book");
    std::fs::create_dir(&book).unwrap();
    write_vdir(&book, 0..20);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n\n[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\nbatch_size = 7\n\n[whatsapp]\nbase_url = \"{}\"\ntoken = \"{TOKEN}\"\nrequests_per_second = 1000\n",
            whapi.base_url()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    crate::support::seed_telegram_session(&state, &telegram);
    // The first reconciliation reads a contact list serde refuses, quoting a number.
    whapi.state().faults.push_back(WhapiFault::Reply {
        status: 200,
        body: r#"{"contacts":[{"id":4915100000003,"name":"Person 3","saved":true}],"total":1}"#
            .to_owned(),
    });
    // Remove some, rename some, so deletes and renames are logged too; then a file named
    // after a person that cannot be read.
    let config_arg = config.to_str().unwrap().to_owned();
    let book_dir = book.clone();
    let logs = tokio::task::spawn_blocking(move || {
        let mut all = String::new();
        for round in 0..3 {
            if round == 1 {
                std::fs::remove_file(book_dir.join("00003.vcf")).unwrap();
                std::fs::write(
                    book_dir.join("00004.vcf"),
                    crate::sync::card("Renamed Person", 4),
                )
                .unwrap();
            }
            if round == 2 {
                // A dangling link: unreadable even for root.
                std::os::unix::fs::symlink(
                    "gone.vcf",
                    book_dir.join("Jane Doe +49 170 1234567.vcf"),
                )
                .unwrap();
            }
            for level in ["info,contactsyncd=debug", "info"] {
                let output = std::process::Command::new(env!("CARGO_BIN_EXE_contactsyncd"))
                    .args(["--config", &config_arg, "sync", "--once"])
                    .env("CONTACTSYNCD_LOG", level)
                    .output()
                    .unwrap();
                all.push_str(&String::from_utf8_lossy(&output.stderr));
            }
        }
        all
    })
    .await
    .unwrap();
    assert!(logs.contains("sending"), "debug logs were captured: {logs}");
    assert!(
        logs.contains("malformed contact list"),
        "the malformed list was logged: {logs}"
    );
    assert!(
        logs.contains("source counts as unknown") && logs.contains("J….vcf"),
        "the unreadable file was logged, redacted: {logs}"
    );
    assert_eq!(telegram.state().account.contacts.len(), 19);
    assert_eq!(whapi.saved().len(), 19);
    for i in 0..20 {
        let digits = format!("49151{i:08}");
        for form in [
            format!("+{digits}"),
            digits.clone(),
            format!("0151{i:08}"),
            format!("151 {i:08}"),
            format!("Person {i}"),
        ] {
            assert!(
                !logs.contains(&form),
                "{form:?} leaked into the logs:\n{logs}"
            );
        }
    }
    assert!(!logs.contains("Renamed Person"));
    assert!(!logs.contains(TOKEN), "the token leaked");
    for form in ["Jane", "Doe", "1234567", "+49 170", "491701234567"] {
        assert!(
            !logs.contains(form),
            "{form:?} from a file name leaked into the logs:\n{logs}"
        );
    }
}

/// A number the user saves on the phone after the reconcile, before our add: the add
/// answers 409, and it is the user's from then on, across restarts: no rename when the
/// card is renamed, no delete when it goes.
#[tokio::test]
async fn a_number_the_user_saved_answers_409_and_is_never_touched() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..10);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    write_vdir(&setup.book(), 10..11);
    setup.server.save_by_user(&digits(10), "Neighbour");
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].by_user, 1, "{report:?}");
    assert!(report.accounts[0].stop.is_none(), "{report:?}");
    std::fs::write(setup.book().join("00010.vcf"), card("Renamed", 10)).unwrap();
    setup.sync(&clock).await;
    std::fs::remove_file(setup.book().join("00010.vcf")).unwrap();
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].planned.deletes, 0, "{report:?}");
    assert!(setup.server.requests("PATCH").is_empty());
    assert!(setup.server.requests("DELETE").is_empty());
    assert_eq!(setup.server.saved()[&digits(10)], "Neighbour");
    let puts = setup.server.requests("PUT");
    assert_eq!(puts.len(), 11, "one add was tried, once: {puts:?}");
    assert_eq!(
        setup.store().owners("whatsapp").unwrap()[&format!("+{}", digits(10))],
        contactsyncd::store::Owner::User
    );
}

/// `adopt_existing = true` (switched on after a first sync): the user's contact for a card
/// is renamed to the card's name, and deleted when the card goes; the user's contact that
/// is not in the address book stays untouched.
#[tokio::test]
async fn adopt_existing_takes_over_only_the_address_books_numbers() {
    let mut setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..10);
    setup.server.save_by_user(&digits(3), "Mum");
    setup.server.save_by_user("4930999999", "Grandma");
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    assert_eq!(
        setup.server.saved()[&digits(3)],
        "Mum",
        "not adopted by default"
    );
    let base_url = setup.server.base_url();
    setup.reconfigure(&base_url, TOKEN, "adopt_existing = true");
    setup.sync(&clock).await;
    assert_eq!(setup.server.saved()[&digits(3)], "Person 3", "taken over");
    std::fs::remove_file(setup.book().join("00003.vcf")).unwrap();
    setup.sync(&clock).await;
    let saved = setup.server.saved();
    assert!(!saved.contains_key(&digits(3)), "deleted with its card");
    assert_eq!(saved["4930999999"], "Grandma");
    let deletes = setup.server.requests("DELETE");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
}

/// A listing that is not the documented shape aborts the reconcile and changes nothing:
/// the contact deleted on the phone is not noticed (not imported again), nothing of ours
/// is taken as deleted, no add or delete goes out.
#[tokio::test]
async fn a_listing_of_the_wrong_shape_changes_nothing() {
    use crate::whapi::Listing;
    for shape in [
        Listing::WithoutContacts,
        Listing::ContactsNotAnArray,
        Listing::WithoutTotal,
        Listing::StopsShort,
    ] {
        let setup = Setup::new(1000.0, "reimport").await;
        write_vdir(&setup.book(), 0..150);
        let clock = ManualClock::new();
        setup.sync(&clock).await;
        setup
            .server
            .state()
            .contacts
            .get_mut(&digits(7))
            .unwrap()
            .saved = false;
        let mirror = setup.store().mirror("whatsapp").unwrap();
        setup.server.state().listing = shape;
        clock.advance(6 * 3600 + 1);
        let report = setup.sync(&clock).await;
        assert!(report.accounts[0].planned.new == 0, "{shape:?}: {report:?}");
        assert_eq!(
            setup.store().mirror("whatsapp").unwrap(),
            mirror,
            "{shape:?}"
        );
        assert_eq!(setup.server.requests("PUT").len(), 150, "{shape:?}");
        assert!(setup.server.requests("DELETE").is_empty(), "{shape:?}");
        // The documented shape again: the deletion on the phone is seen and repaired.
        setup.server.state().listing = Listing::Documented;
        setup.sync(&clock).await;
        assert_eq!(setup.server.requests("PUT").len(), 151, "{shape:?}");
    }
}

/// An empty listing of the documented shape (another account's phone, a reset gateway)
/// would take all of ours as deleted on the phone: held like deletions, until forced.
#[tokio::test]
async fn a_listing_lacking_most_of_ours_is_held_until_forced() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..20);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    for i in 0..15 {
        setup
            .server
            .state()
            .contacts
            .get_mut(&digits(i))
            .unwrap()
            .saved = false;
    }
    clock.advance(6 * 3600 + 1);
    let report = setup.sync(&clock).await;
    let held = report.accounts[0].held.clone().expect("held");
    assert_eq!(held.deletes, 15);
    assert!(held.reason.contains("--force-delete"), "{}", held.reason);
    assert_eq!(
        setup.store().mirror_counts("whatsapp").unwrap().imported,
        20
    );
    assert_eq!(
        setup.server.requests("PUT").len(),
        20,
        "nothing re-imported"
    );
    // Held, and not re-read on every pass.
    let gets = setup.server.requests("GET").len();
    let again = setup.sync(&clock).await;
    assert!(again.accounts[0].held.is_some());
    assert_eq!(setup.server.requests("GET").len(), gets);
    let forced = setup
        .sync_with(
            &clock,
            SyncOptions {
                force_delete: true,
                ..SyncOptions::default()
            },
        )
        .await;
    assert!(forced.accounts[0].held.is_none(), "{forced:?}");
    assert_eq!(setup.server.saved().len(), 20, "re-imported (reimport)");
    assert_eq!(setup.store().reconcile_hold("whatsapp").unwrap(), None);
}

/// A DELETE answered 404 by the (confirmed) gateway: one of ours already gone, as wanted.
#[tokio::test]
async fn a_delete_of_ours_already_gone_is_done() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..10);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    setup
        .server
        .state()
        .contacts
        .get_mut(&digits(2))
        .unwrap()
        .saved = false;
    std::fs::remove_file(setup.book().join("00002.vcf")).unwrap();
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].deleted, 1, "{report:?}");
    assert!(report.accounts[0].stop.is_none(), "{report:?}");
    assert_eq!(setup.store().mirror_counts("whatsapp").unwrap().imported, 9);
    // The gateway was confirmed (a one-entry listing) before the DELETE was believed.
    let log = setup.server.state().requests.clone();
    let delete = log.iter().position(|r| r.method == "DELETE").unwrap();
    let before = &log[delete - 1];
    assert!(
        before.method == "GET" && before.path.contains("count=1"),
        "{log:#?}"
    );
}

/// A gateway that starts answering 404 (the address now leads elsewhere): the next write
/// stops the account, once, naming base_url; nothing is recorded as done.
#[tokio::test]
async fn a_404_stops_the_account_once_and_records_nothing() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..3);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    setup.server.state().all_not_found = true;
    write_vdir(&setup.book(), 3..5);
    let report = setup.sync(&clock).await;
    let (account, reason) = report.setup_stop().expect("stopped");
    assert_eq!(account, "whatsapp");
    assert!(reason.contains(&setup.server.base_url()), "{reason}");
    assert!(reason.contains("whatsapp.base_url"), "{reason}");
    assert_eq!(setup.store().mirror("whatsapp").unwrap().len(), 3);
    let count = setup.server.state().requests.len();
    let again = setup.sync(&clock).await;
    assert!(again.setup_stop().is_some());
    assert_eq!(setup.server.state().requests.len(), count, "not retried");
}

/// State written by a version before the fix (schema 5): it recorded 404s and the user's
/// 409s as its own imports. The next reconcile re-derives them from the listing.
#[tokio::test]
async fn an_old_versions_mirror_is_rederived_from_the_listing() {
    let setup = Setup::new(500.0, "reimport").await;
    write_vdir(&setup.book(), 0..10);
    std::fs::create_dir_all(&setup.config.state_dir).unwrap();
    {
        let mut conn = rusqlite::Connection::open(setup.config.state_dir.join("state.db")).unwrap();
        contactsyncd::store::MIGRATIONS
            .to_version(&mut conn, 5)
            .unwrap();
        conn.execute(
            "INSERT INTO account (backend, last_reconcile) VALUES ('whatsapp', 1)",
            [],
        )
        .unwrap();
        for i in 0..10 {
            conn.execute(
                "INSERT INTO mirror (backend, e164, first_name, last_name, state, updated_at)
                 VALUES ('whatsapp', ?1, ?2, '', 'imported', 1)",
                [format!("+{}", digits(i)), format!("Person {i}")],
            )
            .unwrap();
        }
    }
    // On the phone: 0..3 as we named them (ours), 3..5 under the user's names (an old
    // version's 409), 5..10 never arrived (an old version's 404).
    for i in 0..3 {
        setup
            .server
            .save_by_user(&digits(i), &format!("Person {i}"));
    }
    setup.server.save_by_user(&digits(3), "Mum");
    setup.server.save_by_user(&digits(4), "Dad");
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    let saved = setup.server.saved();
    assert_eq!(saved.len(), 10, "the 5 that never arrived were added");
    assert_eq!(saved[&digits(3)], "Mum");
    assert_eq!(saved[&digits(4)], "Dad");
    assert_eq!(setup.server.requests("PUT").len(), 5);
    let store = setup.store();
    assert_eq!(store.mirror_counts("whatsapp").unwrap().imported, 8);
    assert_eq!(store.ownership_counts("whatsapp").unwrap().saved_by_user, 2);
    drop(store);
    // The user's are not deleted with their cards; ours are.
    for i in [0, 3, 4] {
        std::fs::remove_file(setup.book().join(format!("{i:05}.vcf"))).unwrap();
    }
    setup
        .sync_with(
            &clock,
            SyncOptions {
                force_delete: true,
                ..SyncOptions::default()
            },
        )
        .await;
    let deletes = setup.server.requests("DELETE");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].path, format!("/contacts/{}", digits(0)));
    assert!(setup.server.requests("PATCH").is_empty());
}
