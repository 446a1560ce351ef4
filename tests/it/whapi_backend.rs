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
        let server = WhapiServer::start(TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("book")).unwrap();
        let text = format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n\n[whatsapp]\nbase_url = \"{}\"\ntoken = \"{TOKEN}\"\nrequests_per_second = {rate}\nrequest_timeout = 2\non_remote_delete = \"{policy}\"\n",
            server.base_url()
        );
        std::fs::write(dir.path().join("config.toml"), &text).unwrap();
        let config = config::parse(&text, &dir.path().join("config.toml")).unwrap();
        Self {
            _dir: dir,
            config,
            server,
        }
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
    let second = setup.sync(&clock).await;
    assert!(second.accounts[0].stop.is_none(), "{second:?}");
    assert_eq!(setup.server.saved().len(), 25, "nothing lost");
    // Only the interrupted batch (10 items) is repeated: its done items answer 409 and
    // become renames to the same name.
    let puts = setup.server.requests("PUT").len();
    assert!(puts <= 25 + 10 + 1, "{puts} PUTs");
    for (id, name) in setup.server.saved() {
        let i: usize = id[5..].parse().unwrap();
        assert_eq!(name, format!("Person {i}"));
    }
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

#[tokio::test]
async fn a_bad_token_stops_the_account_once() {
    let setup = Setup::new(500.0, "reimport").await;
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
    let run = |args: Vec<&'static str>| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = vec!["--config", config.as_str()];
            all.extend(args);
            crate::support::contactsyncd(&all, &[])
        })
    };
    let sync = run(vec!["sync", "--once"]).await.unwrap();
    assert!(sync.status.success(), "{}", crate::support::stderr(&sync));
    assert_eq!(telegram.state().account.contacts.len(), 6);
    assert_eq!(whapi.saved().len(), 6);

    let status = crate::support::stdout(&run(vec!["status"]).await.unwrap());
    assert!(status.contains("telegram: 6 in sync"), "{status}");
    assert!(status.contains("whatsapp: 6 in sync"), "{status}");
    let list = run(vec!["remote", "list", "--json"]).await.unwrap();
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
