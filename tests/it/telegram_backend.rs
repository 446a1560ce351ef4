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

struct Setup {
    _dir: tempfile::TempDir,
    config: Config,
    server: TestServer,
}

impl Setup {
    async fn new(batch_size: usize, timeout: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("book")).unwrap();
        let text = format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n\n[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\nbatch_size = {batch_size}\nrequest_timeout = {timeout}\n"
        );
        let config = config::parse(&text, &dir.path().join("config.toml")).unwrap();
        let server = TestServer::start(ServerOptions::default()).await;
        server.state().account.rule = Registration::All;
        drop(Store::open_for_writing(&config.state_dir).unwrap());
        TelegramSession::import(&config.state_dir, &server.session_data()).unwrap();
        let session = TelegramSession::open(&config.state_dir).unwrap();
        session
            .set_logged_in(&LoggedIn {
                user_id: 1,
                phone: Some("15550000000".into()),
                first_name: Some("Test".into()),
            })
            .unwrap();
        Self {
            _dir: dir,
            config,
            server,
        }
    }

    fn book(&self) -> std::path::PathBuf {
        self.config.sources[0].path.clone()
    }

    /// One pass as `sync --once` runs it: a fresh store, session and connection each time,
    /// as after a restart of the process.
    async fn sync(&self, clock: &ManualClock) -> PassReport {
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
