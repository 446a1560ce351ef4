//! The Telegram backend with the real grammers client against the local test server, driven
//! by the real sync pass on real files and a real state database.

use std::sync::Arc;

use contactsyncd::backend::Backend;
use contactsyncd::backend::telegram::TelegramBackend;
use contactsyncd::config::{self, Config};
use contactsyncd::store::Store;
use contactsyncd::store::telegram_session::{LoggedIn, TelegramSession};
use contactsyncd::sync::{self, PassReport, Stop, SyncOptions};

use crate::sync::{ManualClock, card, phone, write_vdir};
use crate::telegram::account::Registration;
use crate::telegram::{Fault, ServerOptions, TestServer};

pub(crate) struct Setup {
    _dir: tempfile::TempDir,
    pub(crate) config: Config,
    pub(crate) server: TestServer,
}

impl Setup {
    pub(crate) async fn new(batch_size: usize, timeout: u64) -> Self {
        Self::with(batch_size, timeout, "reimport", ServerOptions::default()).await
    }

    /// A config with `[telegram]`, a server, and the state seeded with a session for it
    /// (logged in unless `options.login` says otherwise).
    pub(crate) async fn with(
        batch_size: usize,
        timeout: u64,
        on_remote_delete: &str,
        options: ServerOptions,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("book")).unwrap();
        let text = format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n\n[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\nbatch_size = {batch_size}\nrequest_timeout = {timeout}\non_remote_delete = \"{on_remote_delete}\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), &text).unwrap();
        let config = config::parse(&text, &dir.path().join("config.toml")).unwrap();
        let logged_in = options.login.is_none();
        let server = TestServer::start(options).await;
        server.state().account.rule = Registration::All;
        drop(Store::open_for_writing(&config.state_dir).unwrap());
        TelegramSession::import(&config.state_dir, &server.session_data()).unwrap();
        if logged_in {
            TelegramSession::open(&config.state_dir)
                .unwrap()
                .set_logged_in(&LoggedIn {
                    user_id: 1,
                    phone: Some("15550000000".into()),
                    first_name: Some("Test".into()),
                })
                .unwrap();
        }
        Self {
            _dir: dir,
            config,
            server,
        }
    }

    pub(crate) fn book(&self) -> std::path::PathBuf {
        self.config.sources[0].path.clone()
    }

    /// One pass as `sync --once` runs it: a fresh store, session and connection each time,
    /// as after a restart of the process.
    pub(crate) async fn sync(&self, clock: &ManualClock) -> PassReport {
        let mut store = Store::open_for_writing(&self.config.state_dir).unwrap();
        let session = Arc::new(TelegramSession::open(&self.config.state_dir).unwrap());
        let telegram = self.config.telegram.as_ref().unwrap();
        let mut backends: Vec<Box<dyn Backend>> =
            vec![Box::new(TelegramBackend::connect(telegram, session))];
        sync::sync_once(
            &self.config,
            &mut store,
            &mut backends,
            clock,
            &SyncOptions::default(),
        )
        .await
        .unwrap()
    }

    fn imports(&self) -> Vec<Vec<(String, String)>> {
        self.server
            .calls_to("contacts.importContacts")
            .iter()
            .map(|call| {
                let request: grammers_tl_types::functions::contacts::ImportContacts = call.decode();
                request
                    .contacts
                    .into_iter()
                    .map(
                        |grammers_tl_types::enums::InputContact::InputPhoneContact(c)| {
                            (c.phone, c.first_name)
                        },
                    )
                    .collect()
            })
            .collect()
    }
}

#[tokio::test]
async fn a_thousand_contacts_in_ten_calls() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..1000);
    let clock = ManualClock::new();
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].imported, 1000, "{report:?}");
    assert_eq!(setup.imports().len(), 10);
    let state = setup.server.state();
    let mut remote: Vec<String> = state
        .account
        .contacts
        .values()
        .map(|c| format!("+{}", c.phone))
        .collect();
    remote.sort();
    let desired: Vec<String> = (0..1000).map(phone).collect();
    assert_eq!(remote, desired);
    drop(state);
    let mirror = Store::open_for_writing(&setup.config.state_dir)
        .unwrap()
        .mirror("telegram")
        .unwrap();
    assert_eq!(mirror.len(), 1000);
}

#[tokio::test]
async fn rename_and_delete_send_exactly_one_call_each() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..5);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    std::fs::write(setup.book().join("00001.vcf"), card("New Name", 1)).unwrap();
    std::fs::remove_file(setup.book().join("00003.vcf")).unwrap();
    setup.sync(&clock).await;
    let imports = setup.imports();
    assert_eq!(imports.len(), 2);
    assert_eq!(imports[1], [(phone(1), "New Name".to_owned())]);
    let deletes = setup.server.calls_to("contacts.deleteByPhones");
    assert_eq!(deletes.len(), 1);
    let request: grammers_tl_types::functions::contacts::DeleteByPhones = deletes[0].decode();
    assert_eq!(request.phones, [phone(3)], "the exact string imported");
    let state = setup.server.state();
    assert_eq!(state.account.contacts.len(), 4);
    assert!(
        state
            .account
            .contacts
            .values()
            .any(|c| c.first_name == "New Name")
    );
}

#[tokio::test]
async fn quota_and_flood_wait_converge_and_survive_restarts() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..10);
    setup.server.state().account.import_quota = Some(4);
    let clock = ManualClock::new();
    let first = setup.sync(&clock).await;
    assert_eq!(
        (first.accounts[0].imported, first.accounts[0].retrying),
        (4, 6)
    );
    setup.server.state().account.import_quota = None;
    clock.advance(6 * 60 + 1);
    setup.sync(&clock).await;
    assert_eq!(
        setup.server.state().account.contacts.len(),
        10,
        "retries converge"
    );

    write_vdir(&setup.book(), 10..11);
    setup.server.fail_next(
        "contacts.importContacts",
        Fault::rpc(420, "FLOOD_WAIT_3600"),
    );
    let flooded = setup.sync(&clock).await;
    assert!(
        matches!(flooded.accounts[0].stop, Some(Stop::Paused { .. })),
        "{flooded:?}"
    );
    let calls = setup.server.calls_to("contacts.importContacts").len();
    clock.advance(3000);
    setup.sync(&clock).await;
    assert_eq!(
        setup.server.calls_to("contacts.importContacts").len(),
        calls,
        "no call during the wait"
    );
    clock.advance(601);
    setup.sync(&clock).await;
    assert_eq!(
        setup.server.calls_to("contacts.importContacts").len(),
        calls + 1
    );
    assert_eq!(setup.server.state().account.contacts.len(), 11);
}

#[tokio::test]
async fn a_silent_server_times_out_and_the_batch_goes_again() {
    let setup = Setup::new(100, 1).await;
    write_vdir(&setup.book(), 0..3);
    setup
        .server
        .fail_next("contacts.importContacts", Fault::Silent);
    let clock = ManualClock::new();
    let started = std::time::Instant::now();
    let first = setup.sync(&clock).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "no hang"
    );
    assert!(
        matches!(first.accounts[0].stop, Some(Stop::Network { .. })),
        "{first:?}"
    );
    let second = setup.sync(&clock).await;
    assert_eq!(second.accounts[0].imported, 3);
    assert_eq!(setup.server.state().account.contacts.len(), 3);
}

#[tokio::test]
async fn a_lost_reply_is_sent_once_more_and_names_stay_right() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..4);
    setup
        .server
        .fail_next("contacts.importContacts", Fault::ApplyThenDrop);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    setup.sync(&clock).await;
    let imports = setup.imports();
    assert_eq!(imports.len(), 2, "re-sent once");
    assert_eq!(imports[0], imports[1]);
    let state = setup.server.state();
    assert_eq!(state.account.contacts.len(), 4);
    for contact in state.account.contacts.values() {
        let i: usize = contact.phone[5..].parse().unwrap();
        assert_eq!(contact.first_name, format!("Person {i}"));
    }
}

#[tokio::test]
async fn a_revoked_session_requires_login_and_stops_calling() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..2);
    setup.server.state().authorized = false;
    let clock = ManualClock::new();
    let first = setup.sync(&clock).await;
    assert!(first.login_required(), "{first:?}");
    let calls = setup.server.calls_to("contacts.importContacts").len();
    let second = setup.sync(&clock).await;
    assert!(second.login_required());
    assert_eq!(
        setup.server.calls_to("contacts.importContacts").len(),
        calls
    );
}

/// Answers login questions from a script, as a person at the terminal would.
struct ScriptedPrompt {
    answers: std::collections::VecDeque<&'static str>,
    secrets: std::collections::VecDeque<&'static str>,
    told: Vec<String>,
    asked: Vec<String>,
}

impl contactsyncd::backend::login::Prompt for ScriptedPrompt {
    fn ask(&mut self, question: &str) -> std::io::Result<String> {
        self.asked.push(question.to_owned());
        Ok(self
            .answers
            .pop_front()
            .expect("a scripted answer")
            .to_owned())
    }

    fn ask_secret(&mut self, question: &str) -> std::io::Result<String> {
        self.asked.push(question.to_owned());
        Ok(self
            .secrets
            .pop_front()
            .expect("a scripted secret")
            .to_owned())
    }

    fn tell(&mut self, message: &str) {
        self.told.push(message.to_owned());
    }
}

#[tokio::test]
async fn login_with_code_and_password_through_the_prompt_survives_a_reopen() {
    let options = ServerOptions {
        login: Some(crate::telegram::login::LoginSetup {
            code: "24680".into(),
            password: Some(("open sesame".into(), "cave".into())),
        }),
        ..ServerOptions::default()
    };
    let setup = Setup::with(100, 30, "reimport", options).await;
    let mut prompt = ScriptedPrompt {
        answers: ["+15550000000", "11111", "24680"].into(),
        secrets: ["closed sesame", "open sesame"].into(),
        told: Vec::new(),
        asked: Vec::new(),
    };
    let telegram = setup.config.telegram.as_ref().unwrap();
    let account =
        contactsyncd::backend::login::login(telegram, &setup.config.state_dir, &mut prompt)
            .await
            .expect("logged in");
    assert_eq!(account.account.user_id, 1);
    assert_eq!(account.set_aside, None, "a first login sets nothing aside");
    assert!(
        prompt.told.iter().any(|t| t.contains("not right")),
        "{:?}",
        prompt.told
    );
    assert!(
        prompt.asked.iter().any(|q| q.contains("hint: cave")),
        "{:?}",
        prompt.asked
    );
    assert!(
        !prompt.told.iter().any(|t| t.contains("15550000000")),
        "phone redacted"
    );

    // A new process: the session comes back from the state database, logged in.
    let reopened = TelegramSession::logged_in(&setup.config.state_dir).unwrap();
    assert_eq!(reopened.map(|a| a.user_id), Some(1));
    write_vdir(&setup.book(), 0..2);
    let report = setup.sync(&ManualClock::new()).await;
    assert_eq!(report.accounts[0].imported, 2, "{report:?}");
}

async fn remote_delete(policy: &str) -> (Setup, Vec<Vec<(String, String)>>) {
    let setup = Setup::with(100, 30, policy, ServerOptions::default()).await;
    write_vdir(&setup.book(), 0..3);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    {
        let mut state = setup.server.state();
        // The user deletes one of ours in the app, and adds someone by hand.
        let ours = state
            .account
            .contacts
            .values()
            .find(|c| c.phone.ends_with("00000001"))
            .unwrap()
            .user_id;
        state.account.contacts.remove(&ours);
        state.account.add_by_hand("+4930123456", "Added By Hand");
    }
    clock.advance(6 * 3600 + 1);
    setup.sync(&clock).await;
    let imports = setup.imports();
    (setup, imports)
}

#[tokio::test]
async fn a_contact_deleted_in_the_app_is_reimported_and_hand_added_ones_are_untouched() {
    let (setup, imports) = remote_delete("reimport").await;
    assert_eq!(imports.len(), 2);
    assert_eq!(imports[1], [(phone(1), "Person 1".to_owned())]);
    assert!(setup.server.calls_to("contacts.deleteByPhones").is_empty());
    let state = setup.server.state();
    assert_eq!(state.account.contacts.len(), 4);
    assert!(
        state
            .account
            .contacts
            .values()
            .any(|c| c.first_name == "Added By Hand")
    );
}

#[tokio::test]
async fn under_keep_a_contact_deleted_in_the_app_stays_deleted() {
    let (setup, imports) = remote_delete("keep").await;
    assert_eq!(imports.len(), 1, "no re-import");
    assert!(setup.server.calls_to("contacts.deleteByPhones").is_empty());
    assert_eq!(setup.server.state().account.contacts.len(), 3);
}

#[tokio::test]
async fn the_binary_syncs_to_the_server_and_shows_the_account() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..3);
    let config = setup.config.file.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        let owned: Vec<String> = all.iter().map(|s| (*s).to_owned()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
                crate::support::contactsyncd(&refs, &[])
            })
            .await
            .unwrap()
        }
    };
    let sync = run(&["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", crate::support::stderr(&sync));
    assert!(
        crate::support::stdout(&sync).contains("telegram: planned 3 new"),
        "{}",
        crate::support::stdout(&sync)
    );
    assert_eq!(setup.server.state().account.contacts.len(), 3);

    let status = crate::support::stdout(&run(&["status"]).await);
    assert!(
        status.contains("telegram: logged in as Test (+15…00)"),
        "{status}"
    );
    assert!(status.contains("3 in sync"), "{status}");
    assert!(
        !status.contains("15550000000"),
        "phones are redacted: {status}"
    );

    let list = run(&["remote", "list", "--json"]).await;
    assert!(list.status.success(), "{}", crate::support::stderr(&list));
    let rows: Vec<serde_json::Value> = crate::support::stdout(&list)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["in_address_book"] == true));
    assert!(rows[0]["phone"].as_str().unwrap().contains('…'));
}

#[tokio::test]
async fn an_unchanged_remote_list_costs_only_contacts_not_modified() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..3);
    setup.sync(&ManualClock::new()).await;
    let session = Arc::new(TelegramSession::open(&setup.config.state_dir).unwrap());
    let mut backend = TelegramBackend::connect(setup.config.telegram.as_ref().unwrap(), session);
    let first = backend.remote_contacts().await.unwrap();
    assert_eq!(first.map(|list| list.len()), Some(3));
    // Our 64-bit hash over (saved_count, sorted user ids) matches the server's: not modified.
    let second = backend.remote_contacts().await.unwrap();
    assert!(second.is_none());
    let calls = setup.server.calls_to("contacts.getContacts");
    let request: grammers_tl_types::functions::contacts::GetContacts =
        calls.last().unwrap().decode();
    assert_eq!(request.hash, setup.server.state().account.contacts_hash());
}

#[tokio::test]
async fn popular_invites_are_recorded_for_status() {
    let setup = Setup::new(100, 30).await;
    {
        let mut state = setup.server.state();
        state.account.rule = Registration::Explicit;
        state.account.popular.insert(phone(1)[1..].to_owned(), 12);
    }
    write_vdir(&setup.book(), 0..3);
    let report = setup.sync(&ManualClock::new()).await;
    assert_eq!(report.accounts[0].saved, 3);
    let counts = Store::open_for_writing(&setup.config.state_dir)
        .unwrap()
        .mirror_counts("telegram")
        .unwrap();
    assert_eq!((counts.saved, counts.popular), (3, 1));
}

#[tokio::test]
async fn logout_ends_the_session_at_the_server_and_here() {
    let setup = Setup::new(100, 30).await;
    let telegram = setup.config.telegram.as_ref().unwrap();
    contactsyncd::backend::login::logout(telegram, &setup.config.state_dir)
        .await
        .expect("logged out");
    assert_eq!(setup.server.calls_to("auth.logOut").len(), 1);
    assert!(!setup.server.state().authorized);
    assert!(
        TelegramSession::logged_in(&setup.config.state_dir)
            .unwrap()
            .is_none()
    );
    // Nothing is sent for a logged-out account.
    write_vdir(&setup.book(), 0..2);
    let config = setup.config.clone();
    let backends =
        tokio::task::spawn_blocking(move || contactsyncd::backend::configured_names(&config))
            .await
            .unwrap();
    assert_eq!(backends, ["telegram"], "still configured");
    let store = Store::open_for_writing(&setup.config.state_dir).unwrap();
    assert!(store.account("telegram").unwrap().unwrap().auth_required);
}

#[test]
fn login_without_a_terminal_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n[[source]]\npath = \"book\"\n[telegram]\napi_id = 1\napi_hash = \"0123456789abcdef0123456789abcdef\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_contactsyncd"))
        .args(["--config", config.to_str().unwrap(), "login"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("needs a terminal"), "{message}");
}

/// (method, DC) of every call after the first `skip`, connection set-up left out.
fn calls_by_dc(server: &TestServer, skip: usize) -> Vec<(String, i32)> {
    server.calls()[skip..]
        .iter()
        .filter(|c| c.method != "help.getConfig")
        .map(|c| (c.method.clone(), c.dc))
        .collect()
}

fn home_dc(setup: &Setup) -> i32 {
    let session = TelegramSession::open(&setup.config.state_dir).unwrap();
    grammers_session::Session::home_dc_id(&session).unwrap()
}

#[tokio::test]
async fn user_migrate_carries_the_login_over_and_the_next_process_starts_on_the_new_dc() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..3);
    // Telegram moves the account from DC 1 to DC 4: every query on DC 1 now answers
    // USER_MIGRATE_4, and DC 4's own key is not logged in yet.
    setup.server.state().dcs.account_dc = 4;
    let report = setup.sync(&ManualClock::new()).await;
    assert_eq!(report.accounts[0].imported, 3, "{report:?}");
    // The pass reconciles first: its getContacts meets the move.
    let calls = calls_by_dc(&setup.server, 0);
    assert_eq!(
        calls,
        [
            ("contacts.getContacts".to_owned(), 1),
            ("auth.exportAuthorization".to_owned(), 1),
            ("auth.importAuthorization".to_owned(), 4),
            ("contacts.getContacts".to_owned(), 4),
            ("contacts.importContacts".to_owned(), 4),
        ],
        "exported on the old DC, imported on the new one, then asked again there"
    );
    let export: grammers_tl_types::functions::auth::ExportAuthorization =
        setup.server.calls_to("auth.exportAuthorization")[0].decode();
    assert_eq!(export.dc_id, 4);
    assert_eq!(setup.server.state().account.contacts.len(), 3);
    assert_eq!(home_dc(&setup), 4, "the new home DC is kept");

    // A new process starts on DC 4 with DC 4's key, still logged in: no second copy.
    let seen = setup.server.calls().len();
    write_vdir(&setup.book(), 3..5);
    let report = setup.sync(&ManualClock::new()).await;
    assert_eq!(report.accounts[0].imported, 2, "{report:?}");
    let calls = calls_by_dc(&setup.server, seen);
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|(_, dc)| *dc == 4), "{calls:?}");
    assert_eq!(setup.server.calls_to("auth.exportAuthorization").len(), 1);
    assert_eq!(setup.server.state().account.contacts.len(), 5);
}

#[tokio::test]
async fn phone_migrate_on_an_import_carries_the_login_over_and_the_batch_goes_through() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..3);
    // Reconciled first, so that the move meets the import.
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    write_vdir(&setup.book(), 3..4);
    setup.server.state().dcs.account_dc = 2;
    setup.server.fail_next(
        "contacts.importContacts",
        Fault::rpc(303, "PHONE_MIGRATE_2"),
    );
    let seen = setup.server.calls().len();
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].imported, 1, "{report:?}");
    assert_eq!(
        calls_by_dc(&setup.server, seen),
        [
            ("contacts.importContacts".to_owned(), 1),
            ("auth.exportAuthorization".to_owned(), 1),
            ("auth.importAuthorization".to_owned(), 2),
            ("contacts.importContacts".to_owned(), 2),
        ]
    );
    // The new home DC is kept for the next process.
    assert_eq!(home_dc(&setup), 2);
}

#[tokio::test]
async fn a_refused_copy_of_the_login_requires_login_and_rejects_no_contact() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..3);
    setup.server.state().dcs.account_dc = 2;
    setup.server.fail_next(
        "auth.importAuthorization",
        Fault::rpc(400, "AUTH_BYTES_INVALID"),
    );
    let report = setup.sync(&ManualClock::new()).await;
    assert!(report.login_required(), "{report:?}");
    assert_eq!(report.accounts[0].rejected, 0, "{report:?}");
    assert_eq!(home_dc(&setup), 1, "the home DC moves only with the login");
    assert!(setup.server.state().account.contacts.is_empty());
}

#[tokio::test]
async fn login_follows_phone_migrate_to_the_accounts_dc_without_copying_a_login() {
    let options = ServerOptions {
        login: Some(crate::telegram::login::LoginSetup {
            code: "24680".into(),
            password: None,
        }),
        ..ServerOptions::default()
    };
    let setup = Setup::with(100, 30, "reimport", options).await;
    // The number belongs to an account on DC 3; the session starts on DC 1.
    setup.server.state().dcs.account_dc = 3;
    let mut prompt = ScriptedPrompt {
        answers: ["+15550000000", "24680"].into(),
        secrets: [].into(),
        told: Vec::new(),
        asked: Vec::new(),
    };
    let telegram = setup.config.telegram.as_ref().unwrap();
    let account =
        contactsyncd::backend::login::login(telegram, &setup.config.state_dir, &mut prompt)
            .await
            .expect("logged in");
    assert_eq!(account.account.user_id, 1);
    let logins: Vec<(String, i32)> = calls_by_dc(&setup.server, 0)
        .into_iter()
        .filter(|(method, _)| method.starts_with("auth."))
        .collect();
    // grammers follows PHONE_MIGRATE on auth.sendCode itself; the login happens on DC 3, so
    // there is nothing to carry over.
    assert_eq!(
        logins,
        [
            ("auth.sendCode".to_owned(), 1),
            ("auth.sendCode".to_owned(), 3),
            ("auth.signIn".to_owned(), 3),
        ]
    );
    assert_eq!(home_dc(&setup), 3);
    write_vdir(&setup.book(), 0..2);
    let seen = setup.server.calls().len();
    let report = setup.sync(&ManualClock::new()).await;
    assert_eq!(report.accounts[0].imported, 2, "{report:?}");
    assert!(
        calls_by_dc(&setup.server, seen)
            .iter()
            .all(|(_, dc)| *dc == 3)
    );
}

/// Runs the real binary on the setup's configuration (on a blocking thread: the test server
/// lives on this runtime).
pub(crate) async fn binary(setup: &Setup, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "--config".to_owned(),
        setup.config.file.to_str().unwrap().to_owned(),
    ];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::support::contactsyncd(&refs, &[])
    })
    .await
    .unwrap()
}

impl Setup {
    /// Adds lines to `[telegram]` (the last table of the configuration).
    pub(crate) fn with_telegram_lines(mut self, lines: &str) -> Self {
        let mut text = std::fs::read_to_string(&self.config.file).unwrap();
        text.push_str(lines);
        std::fs::write(&self.config.file, &text).unwrap();
        self.config = config::parse(&text, &self.config.file).unwrap();
        self
    }

    pub(crate) fn calls_since(&self, from: usize) -> Vec<crate::telegram::Call> {
        self.server.calls().split_off(from)
    }
}

/// Issue 17.4 / 12.4 from the CLI: the list hash survives the process, and our own writes
/// drop it: a contact deleted in the app right after our import, which brings the list back
/// to the one the kept hash describes, is still noticed. With nothing changed, a pass costs
/// one getContacts answered "not modified".
#[tokio::test]
async fn sync_once_keeps_the_list_hash_and_our_own_imports_drop_it() {
    let setup = Setup::new(100, 30)
        .await
        .with_telegram_lines("reconcile_interval = 1\n");
    let ours = phone(0)[1..].to_owned();
    // Someone added by hand: the list before our import has a hash (not 0).
    setup
        .server
        .state()
        .account
        .add_by_hand("+4930123456", "Added By Hand");
    // Two of ours: one deleted in the app is a change, not an emptied list (that is held).
    write_vdir(&setup.book(), 0..2);
    let hash_of = |call: &crate::telegram::Call| {
        call.decode::<grammers_tl_types::functions::contacts::GetContacts>()
            .hash
    };
    let has_ours = || {
        setup
            .server
            .state()
            .account
            .contacts
            .values()
            .any(|c| c.phone == ours)
    };
    let pass = || async {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let before = setup.server.call_count();
        let output = binary(&setup, &["sync", "--once"]).await;
        assert!(
            output.status.success(),
            "{}",
            crate::support::stderr(&output)
        );
        setup.calls_since(before)
    };
    let first = pass().await;
    assert!(has_ours());
    assert_ne!(
        first
            .iter()
            .find(|c| c.method == "contacts.getContacts")
            .map(hash_of),
        None
    );
    // Deleted in the app: the list is again the one before our import.
    setup
        .server
        .state()
        .account
        .contacts
        .retain(|_, c| c.phone != ours);
    let second = pass().await;
    let asked: Vec<i64> = second
        .iter()
        .filter(|c| c.method == "contacts.getContacts")
        .map(hash_of)
        .collect();
    assert_eq!(asked, [0], "after our own import the whole list is read");
    assert!(
        has_ours(),
        "the contact deleted in the app is imported again"
    );
    // Our re-import dropped the hash again; then nothing changes.
    pass().await;
    let calls = pass().await;
    let contacts_calls: Vec<&crate::telegram::Call> = calls
        .iter()
        .filter(|c| c.method.starts_with("contacts."))
        .collect();
    assert_eq!(
        contacts_calls.len(),
        1,
        "{:?}",
        calls.iter().map(|c| &c.method).collect::<Vec<_>>()
    );
    assert_eq!(contacts_calls[0].method, "contacts.getContacts");
    let server_hash = setup.server.state().account.contacts_hash();
    assert_eq!(hash_of(contacts_calls[0]), server_hash, "not modified");
}

/// Issue 17.1: a FLOOD_WAIT on getContacts pauses the account, persisted; nothing of it is
/// called before the wait ends, then everything goes through.
#[tokio::test]
async fn a_flood_wait_on_get_contacts_pauses_the_account() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..2);
    setup
        .server
        .fail_next("contacts.getContacts", Fault::rpc(420, "FLOOD_WAIT_3600"));
    let clock = ManualClock::new();
    let first = setup.sync(&clock).await;
    assert!(
        matches!(first.accounts[0].stop, Some(Stop::Paused { .. })),
        "{first:?}"
    );
    assert_eq!(setup.server.calls_to("contacts.getContacts").len(), 1);
    assert!(setup.server.calls_to("contacts.importContacts").is_empty());
    let before = setup.server.call_count();
    clock.advance(3000);
    let second = setup.sync(&clock).await;
    assert!(
        matches!(second.accounts[0].stop, Some(Stop::Paused { .. })),
        "{second:?}"
    );
    assert_eq!(
        setup.server.call_count(),
        before,
        "nothing is called during the wait"
    );
    clock.advance(601);
    let third = setup.sync(&clock).await;
    assert_eq!(third.accounts[0].imported, 2, "{third:?}");
    assert_eq!(setup.server.calls_to("contacts.getContacts").len(), 2);
}

/// Issue 17.1 through the binary: two `sync --once` within a FLOOD_WAIT on getContacts; the
/// second calls nothing at all.
#[tokio::test]
async fn two_sync_once_within_a_flood_wait_on_get_contacts_the_second_calls_nothing() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..2);
    setup
        .server
        .fail_next("contacts.getContacts", Fault::rpc(420, "FLOOD_WAIT_3600"));
    let first = binary(&setup, &["sync", "--once"]).await;
    // Issue 25.8: work stays queued for the pause: 75, not "done".
    assert_eq!(
        first.status.code(),
        Some(75),
        "{}",
        crate::support::stderr(&first)
    );
    let out = crate::support::stdout(&first);
    assert!(out.contains("paused until"), "{out}");
    // Issue 16.11: the pass ends with the next step.
    assert!(
        out.contains("queued 1 batch; Telegram asked to wait until ")
            && out.contains("run `contactsyncd run`"),
        "{out}"
    );
    let before = setup.server.call_count();
    let second = binary(&setup, &["sync", "--once"]).await;
    assert_eq!(
        second.status.code(),
        Some(75),
        "{}",
        crate::support::stderr(&second)
    );
    assert!(
        crate::support::stdout(&second).contains("paused until"),
        "{}",
        crate::support::stdout(&second)
    );
    assert_eq!(
        setup
            .calls_since(before)
            .iter()
            .map(|c| c.method.clone())
            .collect::<Vec<_>>(),
        Vec::<String>::new(),
        "the second pass calls nothing"
    );
    // Nor does `remote list`, which says so and exits 75: the list is not the account's.
    let list = binary(&setup, &["remote", "list"]).await;
    assert_eq!(
        list.status.code(),
        Some(75),
        "{}",
        crate::support::stderr(&list)
    );
    assert!(
        crate::support::stdout(&list).contains("paused until"),
        "{}",
        crate::support::stdout(&list)
    );
    assert_eq!(setup.server.call_count(), before, "nor does `remote list`");
    assert!(setup.server.calls_to("contacts.importContacts").is_empty());
}

/// Issue 12.5: a batch refused as a whole is split until the refused number is alone; the
/// others go through; the refused one is held a day (or until its card changes) and
/// listed, redacted, by `status`.
#[tokio::test]
async fn a_refused_import_is_found_by_splitting_and_held_alone() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..5);
    setup
        .server
        .state()
        .account
        .refuse
        .insert(phone(2)[1..].to_owned(), "PHONE_NUMBER_INVALID".into());
    let clock = ManualClock::new();
    let report = setup.sync(&clock).await;
    assert_eq!(
        (report.accounts[0].imported, report.accounts[0].rejected),
        (4, 1),
        "{report:?}"
    );
    assert_eq!(report.accounts[0].queued_batches, 0);
    let sizes: Vec<usize> = setup.imports().iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [5, 3, 2, 2, 1],
        "halves until the refused one is alone"
    );
    assert_eq!(setup.server.state().account.contacts.len(), 4);

    let status = crate::support::stdout(&binary(&setup, &["status"]).await);
    let redacted = contactsyncd::phone::redact(&phone(2));
    assert!(
        status.contains(&format!(
            "rejected import {redacted}: 400 PHONE_NUMBER_INVALID"
        )),
        "{status}"
    );
    assert!(!status.contains(&phone(2)), "redacted: {status}");

    // Not again on the next pass; again after a day.
    let calls = setup.imports().len();
    clock.advance(3600);
    setup.sync(&clock).await;
    assert_eq!(setup.imports().len(), calls);
    clock.advance(24 * 3600);
    setup.server.state().account.refuse.clear();
    setup.sync(&clock).await;
    assert_eq!(setup.imports().len(), calls + 1);
    assert_eq!(setup.imports().last().unwrap()[0].0, phone(2));
    assert_eq!(setup.server.state().account.contacts.len(), 5);
}

/// Issue 12.5: a refused delete is held, not planned again on every pass.
#[tokio::test]
async fn a_refused_delete_is_not_planned_again_every_pass() {
    let setup = Setup::new(100, 30).await;
    // One delete of five stays within the guard's limits.
    write_vdir(&setup.book(), 0..5);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    std::fs::remove_file(setup.book().join("00001.vcf")).unwrap();
    setup
        .server
        .state()
        .account
        .refuse
        .insert(phone(1)[1..].to_owned(), "PHONE_NUMBER_INVALID".into());
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].rejected, 1, "{report:?}");
    assert_eq!(setup.server.calls_to("contacts.deleteByPhones").len(), 1);
    clock.advance(3600);
    let again = setup.sync(&clock).await;
    assert_eq!(again.accounts[0].planned.deletes, 0, "{again:?}");
    assert_eq!(setup.server.calls_to("contacts.deleteByPhones").len(), 1);
    let status = crate::support::stdout(&binary(&setup, &["status"]).await);
    assert!(status.contains("rejected delete +49…01"), "{status}");
    clock.advance(24 * 3600);
    setup.server.state().account.refuse.clear();
    setup.sync(&clock).await;
    assert_eq!(setup.server.calls_to("contacts.deleteByPhones").len(), 2);
    assert_eq!(setup.server.state().account.contacts.len(), 4);
}

/// Issue 12.5: codes Telegram does not list as a refusal (−503 "Timeout", 406, 5xx) are
/// temporary: the batch stays queued whole and goes through later; nothing is rejected.
#[tokio::test]
async fn unknown_error_codes_are_temporary() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..3);
    let clock = ManualClock::new();
    for (code, name) in [(-503, "Timeout"), (406, "SOMETHING_NOT_ACCEPTABLE")] {
        setup
            .server
            .fail_next("contacts.importContacts", Fault::rpc(code, name));
        let report = setup.sync(&clock).await;
        assert!(
            matches!(report.accounts[0].stop, Some(Stop::Network { .. })),
            "{code}: {report:?}"
        );
        assert_eq!(report.accounts[0].rejected, 0);
        assert_eq!(report.accounts[0].queued_batches, 1);
    }
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].imported, 3, "{report:?}");
}

/// Issue 17.5: a rename that is queued, or came back for retry, is pending, not in sync.
#[tokio::test]
async fn status_counts_queued_and_retrying_renames_as_pending() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..3);
    setup.sync(&ManualClock::new()).await;
    std::fs::write(setup.book().join("00001.vcf"), card("New Name", 1)).unwrap();
    let offline = binary(&setup, &["sync", "--once", "--offline"]).await;
    assert!(
        offline.status.success(),
        "{}",
        crate::support::stderr(&offline)
    );
    let status = crate::support::stdout(&binary(&setup, &["status"]).await);
    // Issue 25.6: the figures add up (3 + 0 - 1 pending = 2).
    assert!(
        status.contains("2 in sync (3 imported, 0 saved, less 1 pending)"),
        "{status}"
    );
    assert!(status.contains("1 pending"), "{status}");
    setup.server.fail_next(
        "contacts.importContacts",
        Fault::RetryPhones(vec![phone(1)]),
    );
    let retried = binary(&setup, &["sync", "--once"]).await;
    // Issue 25.8: a number the server asked to retry later stays queued: 75, not "done".
    assert_eq!(
        retried.status.code(),
        Some(75),
        "{}",
        crate::support::stderr(&retried)
    );
    // Issue 16.11: the next step for a number the server asked to retry later.
    let out = crate::support::stdout(&retried);
    assert!(
        out.contains("1 number waits for a retry time; Telegram asked to wait until ")
            && out.contains("run `contactsyncd run`"),
        "{out}"
    );
    let status = crate::support::stdout(&binary(&setup, &["status", "--json"]).await);
    let value: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    let account = &value["accounts"][0];
    assert_eq!(account["retrying"], 1, "{account}");
    assert_eq!(
        (account["in_sync"].as_u64(), account["pending"].as_u64()),
        (Some(2), Some(1)),
        "{account}"
    );
}

/// Issue 12.6: logging in to another Telegram account sets the old one's mirror and queue
/// aside: nothing of it deletes or skips anything on the new account, which gets the whole
/// address book.
#[tokio::test]
async fn a_login_to_another_account_sets_the_old_mirror_aside() {
    let options = ServerOptions {
        login: Some(crate::telegram::login::LoginSetup {
            code: "24680".into(),
            password: None,
        }),
        ..ServerOptions::default()
    };
    let setup = Setup::with(100, 30, "reimport", options).await;
    let bea = setup.server.add_user("+15550000002", "Bea");
    {
        // Bea has a friend at phone(1) she added by hand.
        let mut state = setup.server.state();
        let (_, account) = state
            .others
            .iter_mut()
            .find(|(me, _)| me.user_id == bea)
            .unwrap();
        let friend = account.register(&phone(1), false);
        account.contacts.insert(
            friend,
            crate::telegram::ContactEntry {
                user_id: friend,
                phone: phone(1)[1..].to_owned(),
                first_name: "Friend of Bea".into(),
                last_name: String::new(),
            },
        );
    }
    let telegram = setup.config.telegram.as_ref().unwrap();
    let state_dir = &setup.config.state_dir;
    let prompt = |phone: &'static str| ScriptedPrompt {
        answers: [phone, "24680"].into(),
        secrets: Default::default(),
        told: Vec::new(),
        asked: Vec::new(),
    };
    let first =
        contactsyncd::backend::login::login(telegram, state_dir, &mut prompt("+15550000000"))
            .await
            .unwrap();
    assert_eq!((first.account.user_id, first.set_aside), (1, None));
    write_vdir(&setup.book(), 0..3);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    assert_eq!(setup.server.state().account.contacts.len(), 3);

    let kept = contactsyncd::backend::login::logout(telegram, state_dir)
        .await
        .unwrap();
    assert_eq!(kept.contacts, 3);
    // A new login would make a new key with Telegram; the test server knows only its own.
    TelegramSession::import(state_dir, &setup.server.session_data()).unwrap();
    // Card 1 leaves the address book: with A's mirror, B's own contact there would go.
    std::fs::remove_file(setup.book().join("00001.vcf")).unwrap();
    let second =
        contactsyncd::backend::login::login(telegram, state_dir, &mut prompt("+15550000002"))
            .await
            .unwrap();
    assert_eq!(second.account.user_id, bea);
    let aside = second.set_aside.expect("A's mirror set aside");
    assert_eq!((aside.key.as_str(), aside.contacts), ("telegram@1", 3));

    clock.advance(60);
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].imported, 2, "{report:?}");
    assert!(setup.server.calls_to("contacts.deleteByPhones").is_empty());
    {
        let state = setup.server.state();
        assert_eq!(state.me.user_id, bea);
        let mut names: Vec<&str> = state
            .account
            .contacts
            .values()
            .map(|c| c.first_name.as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["Friend of Bea", "Person 0", "Person 2"]);
    }

    let status = crate::support::stdout(&binary(&setup, &["status"]).await);
    assert!(status.contains("telegram@1: 3 in sync"), "{status}");
    assert!(status.contains("set aside"), "{status}");
}

/// Issue 17.2: reconciliation matches by user. A contact who changed their number on
/// Telegram, or hides it, is not "deleted in the app" (no re-import of the old number); the
/// change is reported; when the card leaves, the person is deleted by user.
#[tokio::test]
async fn a_contact_who_changes_or_hides_their_number_is_matched_by_user() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..5);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    let moved = {
        let mut state = setup.server.state();
        state.account.change_phone(&phone(1), "+4917099999999");
        let hidden = state
            .account
            .contacts
            .values()
            .find(|c| c.phone == phone(2)[1..])
            .unwrap()
            .user_id;
        state.account.phone_hidden.insert(hidden);
        state
            .account
            .contacts
            .values()
            .find(|c| c.phone == "4917099999999")
            .unwrap()
            .user_id
    };
    clock.advance(6 * 3600 + 1);
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].planned.new, 0, "{report:?}");
    assert_eq!(
        setup.imports().len(),
        1,
        "no re-import of the old or hidden number"
    );
    let status = crate::support::stdout(&binary(&setup, &["status"]).await);
    assert!(
        status.contains("number changed on Telegram: +49…01 now shows +49…99"),
        "{status}"
    );
    assert!(!status.contains("4917099999999"), "redacted: {status}");

    std::fs::remove_file(setup.book().join("00001.vcf")).unwrap();
    setup.sync(&clock).await;
    assert_eq!(setup.server.calls_to("contacts.deleteContacts").len(), 1);
    let state = setup.server.state();
    assert!(
        !state.account.contacts.contains_key(&moved),
        "the person is gone, not only the old string"
    );
    assert_eq!(state.account.contacts.len(), 4);
}

/// `remote export DIR`: the account's contacts as a vdir of vCard 4.0 files (ours plain,
/// one added by hand marked), rewritten only when changed, files of contacts that left
/// removed and nothing else touched; pointing a source at the export plans nothing new.
#[tokio::test]
async fn remote_export_writes_a_vdir_that_reads_back_as_the_address_book() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..3);
    let synced = binary(&setup, &["sync", "--once"]).await;
    assert!(
        synced.status.success(),
        "{}",
        crate::support::stderr(&synced)
    );
    setup
        .server
        .state()
        .account
        .add_by_hand("+4930123456", "Added By Hand");
    let root = setup.book().with_file_name("export");
    let export = root.to_str().unwrap().to_owned();
    let first = binary(&setup, &["remote", "export", &export]).await;
    assert!(first.status.success(), "{}", crate::support::stderr(&first));
    assert!(
        crate::support::stdout(&first).contains("4 contacts in"),
        "{}",
        crate::support::stdout(&first)
    );
    let files = |root: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let exported = files(&root);
    assert_eq!(exported.len(), 4, "{exported:?}");
    assert!(
        exported
            .iter()
            .all(|n| n.starts_with("contactsyncd-telegram-user-"))
    );
    let texts: Vec<String> = exported
        .iter()
        .map(|n| std::fs::read_to_string(root.join(n)).unwrap())
        .collect();
    let marked: Vec<&String> = texts
        .iter()
        .filter(|t| t.contains("CATEGORIES:Added in the app"))
        .collect();
    assert_eq!(marked.len(), 1);
    assert!(marked[0].contains("FN:Added By Hand"), "{}", marked[0]);
    assert!(
        texts
            .iter()
            .any(|t| t.contains(&format!("TEL;VALUE=uri;TYPE=cell:tel:{}", phone(1))))
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join(&exported[0])), 0o600);

    // Pointing a source at the export (without the hand-added one) plans nothing new.
    let round_trip = setup.book().with_file_name("round-trip.toml");
    let text = std::fs::read_to_string(&setup.config.file)
        .unwrap()
        .replace(
            "path = \"book\"\n",
            "path = \"export\"\nexclude_categories = [\"Added in the app\"]\n",
        );
    std::fs::write(&round_trip, text).unwrap();
    let plan = tokio::task::spawn_blocking(move || {
        crate::support::contactsyncd(
            &["--config", round_trip.to_str().unwrap(), "plan", "--json"],
            &[],
        )
    })
    .await
    .unwrap();
    assert!(plan.status.success(), "{}", crate::support::stderr(&plan));
    let plan_text = crate::support::stdout(&plan);
    assert!(plan_text.contains("\"contacts\":3"), "{plan_text}");
    for counter in ["new", "renames", "deletes"] {
        assert!(
            plan_text.contains(&format!("\"{counter}\":0")),
            "{counter}: {plan_text}"
        );
    }

    // Again: nothing rewritten. A contact gone from the account leaves; other files stay.
    std::fs::write(root.join("notes.vcf"), "not ours").unwrap();
    let mtimes = |names: &[String]| -> Vec<std::time::SystemTime> {
        names
            .iter()
            .map(|n| std::fs::metadata(root.join(n)).unwrap().modified().unwrap())
            .collect()
    };
    let before = mtimes(&exported);
    let again = binary(&setup, &["remote", "export", &export]).await;
    assert!(
        crate::support::stdout(&again).contains("(0 written, 4 unchanged, 0 removed)"),
        "{}",
        crate::support::stdout(&again)
    );
    assert_eq!(mtimes(&exported), before);
    let ours = phone(2)[1..].to_owned();
    setup
        .server
        .state()
        .account
        .contacts
        .retain(|_, c| c.phone != ours);
    let after = binary(
        &setup,
        &["remote", "export", &export, "--account", "telegram"],
    )
    .await;
    assert!(
        crate::support::stdout(&after).contains("(0 written, 3 unchanged, 1 removed)"),
        "{}",
        crate::support::stdout(&after)
    );
    assert_eq!(files(&root).len(), 4, "three contacts and notes.vcf");
    assert!(root.join("notes.vcf").exists());
    let unknown = binary(
        &setup,
        &["remote", "export", &export, "--account", "signal"],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(2));
}

/// `remote forget-all`: refuses without --yes and a terminal; killed half-way (a delete on
/// the wire) and run again, it leaves no contact of ours and the hand-added one untouched;
/// the account then gets nothing until `remote resume`.
#[tokio::test]
async fn forget_all_deletes_only_ours_survives_a_kill_and_adds_nothing_until_resumed() {
    let setup = Setup::new(2, 30).await;
    write_vdir(&setup.book(), 0..5);
    let synced = binary(&setup, &["sync", "--once"]).await;
    assert!(
        synced.status.success(),
        "{}",
        crate::support::stderr(&synced)
    );
    let friend_phone = "4930123456".to_owned();
    setup
        .server
        .state()
        .account
        .add_by_hand("+4930123456", "Added By Hand");
    let contacts = |setup: &Setup| setup.server.state().account.contacts.len();
    assert_eq!(contacts(&setup), 6);

    let refused = binary(&setup, &["remote", "forget-all"]).await;
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        crate::support::stderr(&refused)
    );
    assert!(crate::support::stdout(&refused).contains("5 contacts contactsyncd added"));
    assert_eq!(contacts(&setup), 6, "nothing changed without --yes");

    // The first delete goes through, the second is never answered: killed while it waits.
    setup
        .server
        .fail_next("contacts.deleteByPhones", Fault::RetryPhones(Vec::new()));
    setup
        .server
        .fail_next("contacts.deleteByPhones", Fault::Silent);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_contactsyncd"))
        .args([
            "--config",
            setup.config.file.to_str().unwrap(),
            "remote",
            "forget-all",
            "--yes",
        ])
        .env_clear()
        .env("HOME", setup.book().parent().unwrap())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while setup.server.calls_to("contacts.deleteByPhones").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no second delete");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        contacts(&setup),
        4,
        "two of ours gone, the rest still there"
    );

    let resumed = binary(&setup, &["remote", "forget-all", "--yes"]).await;
    assert!(
        resumed.status.success(),
        "{}",
        crate::support::stderr(&resumed)
    );
    assert!(
        crate::support::stdout(&resumed).contains("nothing of contactsyncd's is left"),
        "{}",
        crate::support::stdout(&resumed)
    );
    let left: Vec<String> = setup
        .server
        .state()
        .account
        .contacts
        .values()
        .map(|c| c.phone.clone())
        .collect();
    assert_eq!(left, std::slice::from_ref(&friend_phone));
    for call in setup.server.calls_to("contacts.deleteByPhones") {
        let phones = call
            .decode::<grammers_tl_types::functions::contacts::DeleteByPhones>()
            .phones;
        assert!(
            !phones.iter().any(|p| p.contains(&friend_phone)),
            "{phones:?}"
        );
    }

    // Forgotten: a sync adds nothing; status says why; resume brings the book back.
    let imports = setup.server.calls_to("contacts.importContacts").len();
    let quiet = binary(&setup, &["sync", "--once"]).await;
    assert!(quiet.status.success(), "{}", crate::support::stderr(&quiet));
    assert_eq!(
        setup.server.calls_to("contacts.importContacts").len(),
        imports
    );
    let status = binary(&setup, &["status"]).await;
    assert!(
        crate::support::stdout(&status).contains("FORGOTTEN"),
        "{}",
        crate::support::stdout(&status)
    );
    let resume = binary(&setup, &["remote", "resume"]).await;
    assert!(
        resume.status.success(),
        "{}",
        crate::support::stderr(&resume)
    );
    let back = binary(&setup, &["sync", "--once"]).await;
    assert!(back.status.success(), "{}", crate::support::stderr(&back));
    assert_eq!(contacts(&setup), 6);
}

/// Issue 16.10: `[telegram]` configured but never logged in, or logged out: `sync --once`
/// plans and queues, sends nothing, says "login required" and exits with 5.
#[tokio::test]
async fn sync_once_without_a_session_says_login_required() {
    let options = ServerOptions {
        login: Some(crate::telegram::login::LoginSetup {
            code: "24680".into(),
            password: None,
        }),
        ..ServerOptions::default()
    };
    let setup = Setup::with(100, 30, "reimport", options).await;
    write_vdir(&setup.book(), 0..2);
    let never = binary(&setup, &["sync", "--once"]).await;
    let out = crate::support::stdout(&never);
    assert_eq!(never.status.code(), Some(5), "{out}");
    assert!(!out.contains("no backend configured"), "{out}");
    assert!(out.contains("telegram: planned 2 new"), "{out}");
    assert!(out.contains("login required"), "{out}");
    assert!(out.contains("run `contactsyncd login`"), "{out}");
    assert!(setup.server.calls_to("contacts.importContacts").is_empty());
    let list = binary(&setup, &["remote", "list"]).await;
    assert_eq!(list.status.code(), Some(5));

    let logout = binary(&setup, &["logout"]).await;
    assert!(
        logout.status.success(),
        "{}",
        crate::support::stderr(&logout)
    );
    let after = binary(&setup, &["sync", "--once"]).await;
    assert_eq!(
        after.status.code(),
        Some(5),
        "{}",
        crate::support::stdout(&after)
    );
    assert!(crate::support::stdout(&after).contains("login required"));
    assert!(setup.server.calls_to("contacts.importContacts").is_empty());
}

/// Issue 16.15: `login` while logged in says so and asks before replacing the session; "no"
/// keeps it and calls nothing.
#[tokio::test]
async fn login_while_logged_in_asks_before_replacing_the_session() {
    let setup = Setup::new(100, 30).await;
    let mut prompt = ScriptedPrompt {
        answers: ["n"].into(),
        secrets: Default::default(),
        told: Vec::new(),
        asked: Vec::new(),
    };
    let telegram = setup.config.telegram.as_ref().unwrap();
    let before = setup.server.call_count();
    let kept =
        contactsyncd::backend::login::login(telegram, &setup.config.state_dir, &mut prompt).await;
    assert!(
        matches!(
            kept,
            Err(contactsyncd::backend::login::LoginError::SessionKept)
        ),
        "{kept:?}"
    );
    assert!(
        prompt
            .told
            .iter()
            .any(|t| t.contains("Already logged in as Test (+15…00)")),
        "{:?}",
        prompt.told
    );
    assert!(
        prompt.asked[0].contains("replace this session"),
        "{:?}",
        prompt.asked
    );
    assert_eq!(
        setup.server.call_count(),
        before,
        "nothing asked of Telegram"
    );
    let still = TelegramSession::logged_in(&setup.config.state_dir).unwrap();
    assert_eq!(still.map(|a| a.user_id), Some(1));
}

/// Issue 16.15: "yes" replaces the session; an empty phone answer is asked again, never sent.
#[tokio::test]
async fn login_again_replaces_the_session_and_asks_again_for_an_empty_phone() {
    let options = ServerOptions {
        login: Some(crate::telegram::login::LoginSetup {
            code: "24680".into(),
            password: None,
        }),
        ..ServerOptions::default()
    };
    let setup = Setup::with(100, 30, "reimport", options).await;
    TelegramSession::open(&setup.config.state_dir)
        .unwrap()
        .set_logged_in(&LoggedIn {
            user_id: 1,
            phone: Some("15550000000".into()),
            first_name: Some("Test".into()),
        })
        .unwrap();
    let mut prompt = ScriptedPrompt {
        answers: ["y", "", "  ", "+15550000000", "24680"].into(),
        secrets: Default::default(),
        told: Vec::new(),
        asked: Vec::new(),
    };
    let telegram = setup.config.telegram.as_ref().unwrap();
    let outcome =
        contactsyncd::backend::login::login(telegram, &setup.config.state_dir, &mut prompt)
            .await
            .expect("logged in again");
    assert_eq!(outcome.account.user_id, 1);
    let phone_questions = prompt
        .asked
        .iter()
        .filter(|q| q.starts_with("Phone number"))
        .count();
    assert_eq!(phone_questions, 3, "{:?}", prompt.asked);
    let sent: Vec<grammers_tl_types::functions::auth::SendCode> = setup
        .server
        .calls_to("auth.sendCode")
        .iter()
        .map(|c| c.decode())
        .collect();
    assert!(!sent.is_empty());
    assert!(
        sent.iter().all(|c| c.phone_number == "+15550000000"),
        "{:?}",
        sent.iter().map(|c| &c.phone_number).collect::<Vec<_>>()
    );
}

/// Issue 16.11: where "saved" is printed, it says what it means.
#[tokio::test]
async fn saved_numbers_are_explained_where_they_are_counted() {
    let setup = Setup::new(100, 30).await;
    setup.server.state().account.rule = Registration::EvenLastDigit;
    write_vdir(&setup.book(), 0..2);
    let sync = binary(&setup, &["sync", "--once"]).await;
    let out = crate::support::stdout(&sync);
    assert!(sync.status.success(), "{out}");
    assert!(
        out.contains("1 imported, 1 saved (numbers without a Telegram account"),
        "{out}"
    );
    assert!(out.contains("sent 1 batch"), "{out}");
    let status = crate::support::stdout(&binary(&setup, &["status"]).await);
    assert!(
        status.contains("1 saved: numbers without a Telegram account"),
        "{status}"
    );
    let history = crate::support::stdout(&binary(&setup, &["history"]).await);
    assert!(
        history.contains("1 saved (without a Telegram account)"),
        "{history}"
    );
}

/// A getContacts list that lacks more of ours than the safety limits allow (a glitch, an
/// account emptied by mistake) is not applied: under `keep` it would mark every contact as
/// deleted in the app for good. Held, said by `status`, applied by `--force-delete`.
#[tokio::test]
async fn a_list_lacking_most_of_ours_holds_the_reconcile() {
    let setup = Setup::with(100, 30, "keep", ServerOptions::default())
        .await
        .with_telegram_lines("reconcile_interval = 60\n");
    write_vdir(&setup.book(), 0..20);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    assert_eq!(setup.server.state().account.contacts.len(), 20);

    // Nineteen of twenty gone at once: over max_delete_fraction (20 %).
    setup
        .server
        .state()
        .account
        .contacts
        .retain(|_, c| c.phone == phone(0)[1..]);
    clock.advance(61);
    let report = setup.sync(&clock).await;
    let held = report.accounts[0].held.as_ref().expect("held");
    assert!(
        held.reason.contains("lacks 19 of our 20 contacts"),
        "{held:?}"
    );
    let store = Store::open_for_writing(&setup.config.state_dir).unwrap();
    let mirror = store.mirror("telegram").unwrap();
    assert!(
        mirror.values().all(|e| e.hold.is_none()),
        "nothing marked as deleted in the app: {mirror:?}"
    );
    drop(store);
    let status = crate::support::stdout(&binary(&setup, &["status"]).await);
    assert!(status.contains("lacks 19 of our 20"), "{status}");

    // `--force-delete` retries the held reconcile at once and applies the list (under
    // `keep`: every contact it lacks stays deleted).
    setup.server.state().account.contacts.clear();
    let mut store = Store::open_for_writing(&setup.config.state_dir).unwrap();
    let options = SyncOptions {
        force_delete: true,
        ..SyncOptions::default()
    };
    let session = Arc::new(TelegramSession::open(&setup.config.state_dir).unwrap());
    let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(TelegramBackend::connect(
        setup.config.telegram.as_ref().unwrap(),
        session,
    ))];
    let forced = sync::sync_once(&setup.config, &mut store, &mut backends, &clock, &options)
        .await
        .unwrap();
    assert!(forced.accounts[0].held.is_none(), "{forced:?}");
    let kept_deleted = store
        .mirror("telegram")
        .unwrap()
        .values()
        .filter(|e| e.hold.is_some())
        .count();
    assert_eq!(kept_deleted, 20, "--force-delete applies the list");
}
