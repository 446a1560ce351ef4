//! Issue 21: a batch the other side stops part-way, through the real binary against the
//! project's test servers. A wait or a 429 refuses the call it answers, not the items earlier
//! calls of the same batch applied: those are recorded before the pause, the rest goes back
//! to the outbox as never sent, and only a send without a known outcome is a resend.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{stderr, stdout};
use crate::sync::{card, phone, write_file, write_vdir};
use crate::telegram::Fault;
use crate::telegram::account::Registration;
use crate::telegram_backend::{Setup, binary};
use crate::whapi::{WhapiFault, WhapiServer};
use crate::whapi_ownership::run;

/// A Telegram pass through the binary that must not fail; `--max-wait 0`: a FLOOD_WAIT
/// pauses the account and ends the pass instead of being waited out.
async fn telegram_pass(setup: &Setup) -> String {
    let output = binary(setup, &["sync", "--once", "--max-wait", "0"]).await;
    // 75 (EX_TEMPFAIL): a pause or a 429 left work queued, which these passes expect.
    assert!(
        matches!(output.status.code(), Some(0 | 75)),
        "{:?}: {}",
        output.status,
        stderr(&output)
    );
    stdout(&output)
}

fn on_telegram(setup: &Setup, i: usize) -> bool {
    setup
        .server
        .state()
        .account
        .contacts
        .values()
        .any(|c| c.phone == phone(i)[1..])
}

/// The phones of every call of `method` (importContacts or deleteByPhones).
fn phones_sent(setup: &Setup, method: &str) -> Vec<Vec<String>> {
    use grammers_tl_types as tl;
    setup
        .server
        .calls_to(method)
        .iter()
        .map(|call| match method {
            "contacts.importContacts" => call
                .decode::<tl::functions::contacts::ImportContacts>()
                .contacts
                .into_iter()
                .map(|tl::enums::InputContact::InputPhoneContact(c)| c.phone)
                .collect(),
            _ => {
                call.decode::<tl::functions::contacts::DeleteByPhones>()
                    .phones
            }
        })
        .collect()
}

fn username_card(name: &str, i: usize, username: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nTEL;TYPE=CELL:+49 151 {i:08}\r\nIMPP:telegram:{username}\r\nEND:VCARD\r\n"
    )
}

/// Defect 1: importContacts applied the whole batch, then a FLOOD_WAIT answered addContact
/// for a number's fallback username. The imported contacts are recorded before the pause,
/// so the two cards the user removes during it are deleted from Telegram afterwards, and the
/// usernames are asked again. (The old sender treated the batch as never sent: those two
/// stayed on Telegram for good.)
#[tokio::test]
async fn telegram_contacts_imported_before_a_flood_wait_are_deleted_with_their_cards() {
    let setup = Setup::new(100, 30).await;
    let (dora, emil) = {
        let mut state = setup.server.state();
        state.account.rule = Registration::Explicit;
        for i in 0..3 {
            state.account.register(&phone(i), false);
        }
        // Numbers 3 and 4 have no account; their cards name users found by username.
        (
            state
                .account
                .register_username(Some("+4930999301"), "dora_d"),
            state
                .account
                .register_username(Some("+4930999302"), "emil_e"),
        )
    };
    let name_of = |user_id: i64| {
        setup
            .server
            .state()
            .account
            .contacts
            .get(&user_id)
            .map(|c| c.first_name.clone())
    };
    write_vdir(&setup.book(), 0..3);
    write_file(
        setup.book().join("00003.vcf"),
        username_card("Dora", 3, "dora_d"),
    )
    .unwrap();
    write_file(
        setup.book().join("00004.vcf"),
        username_card("Emil", 4, "emil_e"),
    )
    .unwrap();
    // Past grammers' own sleep threshold (5 s): the account pauses.
    setup
        .server
        .fail_next("contacts.addContact", Fault::rpc(420, "FLOOD_WAIT_7"));
    telegram_pass(&setup).await;
    assert_eq!(phones_sent(&setup, "contacts.importContacts").len(), 1);
    assert!((0..3).all(|i| on_telegram(&setup, i)));

    // The user removes two of the imported cards during the pause.
    for i in 0..2 {
        std::fs::remove_file(setup.book().join(format!("{i:05}.vcf"))).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    telegram_pass(&setup).await;
    assert!(
        !on_telegram(&setup, 0) && !on_telegram(&setup, 1),
        "contacts of removed cards left on Telegram; calls: {:?}",
        setup
            .server
            .calls()
            .iter()
            .map(|c| c.method.clone())
            .collect::<Vec<_>>()
    );
    assert!(on_telegram(&setup, 2));
    let deleted: Vec<String> = phones_sent(&setup, "contacts.deleteByPhones").concat();
    assert_eq!(deleted, [phone(0), phone(1)]);
    // The usernames the wait refused are asked again once it is over; the numbers that
    // were imported are not imported twice.
    assert_eq!(name_of(dora).as_deref(), Some("Dora"));
    assert_eq!(name_of(emil).as_deref(), Some("Emil"));
    assert_eq!(
        phones_sent(&setup, "contacts.importContacts"),
        [
            (0..5).map(phone).collect::<Vec<_>>(),
            vec![phone(3), phone(4)]
        ]
    );
    let status = stdout(&binary(&setup, &["status"]).await);
    assert!(status.contains("3 in sync"), "{status}");
}

/// Defect 3: a delete batch refused twice by FLOOD_WAIT was never applied, so it goes back
/// to the outbox as never sent both times: the card restored meanwhile cancels it, and
/// nothing that contradicts the address book is sent. (The old sender reverted only a
/// batch sent once: the second refusal left it "in flight", and it went out unchecked,
/// deleting and importing the restored person again.)
#[tokio::test]
async fn a_delete_refused_twice_is_still_checked_against_the_address_book() {
    let setup = Setup::new(100, 30).await;
    write_vdir(&setup.book(), 0..5);
    telegram_pass(&setup).await;
    assert!((0..5).all(|i| on_telegram(&setup, i)));
    let file = setup.book().join("00002.vcf");
    let text = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    for _ in 0..2 {
        setup
            .server
            .fail_next("contacts.deleteByPhones", Fault::rpc(420, "FLOOD_WAIT_6"));
    }
    telegram_pass(&setup).await;
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    telegram_pass(&setup).await;
    assert_eq!(phones_sent(&setup, "contacts.deleteByPhones").len(), 2);

    write_file(&file, text).unwrap();
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let imports_before = phones_sent(&setup, "contacts.importContacts").len();
    telegram_pass(&setup).await;
    assert_eq!(
        phones_sent(&setup, "contacts.deleteByPhones").len(),
        2,
        "a delete of a restored card went out"
    );
    assert!(setup.server.calls_to("contacts.deleteContacts").is_empty());
    assert_eq!(
        phones_sent(&setup, "contacts.importContacts").len(),
        imports_before,
        "the restored person was imported again"
    );
    assert!(on_telegram(&setup, 2));
    let status = stdout(&binary(&setup, &["status"]).await);
    assert!(status.contains("5 in sync"), "{status}");
}

/// A delete batch cut after deleteByPhones applied, at deleteContacts: the contact is gone
/// by its number, so the batch is not "never sent" — it goes out again as it was, and the
/// card restored during the pause brings the contact back. (The old sender treated the
/// batch as never sent and dropped it: the mirror kept a contact Telegram no longer had.)
#[tokio::test]
async fn a_delete_cut_after_delete_by_phones_is_not_taken_back() {
    let setup = Setup::new(100, 30)
        .await
        .with_telegram_lines("reconcile_interval = 3600\n");
    write_vdir(&setup.book(), 0..5);
    telegram_pass(&setup).await;
    let file = setup.book().join("00002.vcf");
    let text = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    setup
        .server
        .fail_next("contacts.deleteContacts", Fault::rpc(420, "FLOOD_WAIT_6"));
    telegram_pass(&setup).await;
    assert_eq!(setup.server.calls_to("contacts.deleteContacts").len(), 1);
    assert!(!on_telegram(&setup, 2), "deleteByPhones was applied");

    write_file(&file, text).unwrap();
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    telegram_pass(&setup).await;
    assert!(
        on_telegram(&setup, 2),
        "the restored card's contact is missing"
    );
    let status = stdout(&binary(&setup, &["status"]).await);
    assert!(status.contains("5 in sync"), "{status}");
}

const TOKEN: &str = "test-token-123";

fn digits(i: usize) -> String {
    phone(i)[1..].to_owned()
}

/// A WhatsApp setup for the binary: config, book, and the stand-in gateway. Reconciles
/// only when the state asks for it (an hour apart otherwise).
async fn whapi_setup(dir: &Path) -> (WhapiServer, PathBuf) {
    let server = WhapiServer::start(TOKEN).await;
    std::fs::create_dir(dir.join("book")).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n\n[whatsapp]\nbase_url = \"{}\"\ntoken = \"{TOKEN}\"\nrequests_per_second = 500\nreconcile_interval = 3600\n",
            server.base_url()
        ),
    )
    .unwrap();
    (server, config)
}

async fn whapi_pass(config: &Path) {
    let output = run(config, &["sync", "--once", "--max-wait", "0"]).await;
    // 75 (EX_TEMPFAIL): a pause or a 429 left work queued, which these passes expect.
    assert!(
        matches!(output.status.code(), Some(0 | 75)),
        "{:?}: {}",
        output.status,
        stderr(&output)
    );
}

fn requests_to(server: &WhapiServer, method: &str, i: usize) -> usize {
    server
        .requests(method)
        .iter()
        .filter(|r| r.path.ends_with(&digits(i)) || r.body.contains(&digits(i)))
        .count()
}

/// Defect 2, imports: one PUT per item, a 429 on the third. The first two are ours
/// before the pause is recorded, so removing its card deletes it from the phone. (The old
/// sender forgot it: it stayed on the phone, counted as the user's own.)
#[tokio::test]
async fn whatsapp_contacts_added_before_a_429_are_deleted_with_their_cards() {
    let dir = tempfile::tempdir().unwrap();
    let (server, config) = whapi_setup(dir.path()).await;
    write_vdir(&dir.path().join("book"), 0..4);
    server.fail_nth("PUT", 3, WhapiFault::TooManyRequests { retry_after: 1 });
    whapi_pass(&config).await;
    assert_eq!(server.saved().len(), 2, "the 429 refused the third PUT");

    std::fs::remove_file(dir.path().join("book/00000.vcf")).unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    whapi_pass(&config).await;
    assert_eq!(
        requests_to(&server, "DELETE", 0),
        1,
        "{:#?}",
        server.state().requests
    );
    let saved = server.saved();
    assert!(!saved.contains_key(&digits(0)), "{saved:?}");
    assert_eq!(saved.get(&digits(1)).map(String::as_str), Some("Person 1"));
    assert_eq!(saved.get(&digits(2)).map(String::as_str), Some("Person 2"));
    assert_eq!(saved.get(&digits(3)).map(String::as_str), Some("Person 3"));
    let list = stdout(&run(&config, &["remote", "list", "--json", "--show-phones"]).await);
    assert!(!list.contains(&digits(0)), "{list}");
}

/// Defect 2, deletes: one DELETE per item, a 429 on the second. The first is gone from the
/// mirror before the pause, so its card, restored during it, is added again. (The old
/// sender kept it in the mirror: the phone lacked it while the state said it was there.)
#[tokio::test]
async fn a_whatsapp_delete_cut_by_a_429_records_the_contact_it_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, config) = whapi_setup(dir.path()).await;
    let book = dir.path().join("book");
    write_vdir(&book, 0..4);
    whapi_pass(&config).await;
    assert_eq!(server.saved().len(), 4);

    let texts: Vec<Vec<u8>> = (0..2)
        .map(|i| std::fs::read(book.join(format!("{i:05}.vcf"))).unwrap())
        .collect();
    for i in 0..2 {
        std::fs::remove_file(book.join(format!("{i:05}.vcf"))).unwrap();
    }
    server.fail_nth("DELETE", 2, WhapiFault::TooManyRequests { retry_after: 1 });
    whapi_pass(&config).await;
    assert!(!server.saved().contains_key(&digits(0)));
    assert!(
        server.saved().contains_key(&digits(1)),
        "refused by the 429"
    );

    // Both cards come back during the pause.
    for (i, text) in texts.iter().enumerate() {
        write_file(book.join(format!("{i:05}.vcf")), text).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    whapi_pass(&config).await;
    let saved = server.saved();
    assert_eq!(saved.get(&digits(0)).map(String::as_str), Some("Person 0"));
    assert_eq!(saved.get(&digits(1)).map(String::as_str), Some("Person 1"));
    assert_eq!(requests_to(&server, "DELETE", 1), 1, "only the refused one");
}

/// Defect 4: a PUT refused by a 429 was never applied, so sending it again is no resend:
/// the 409 it then gets is the user's own contact (saved on the phone meanwhile, under the
/// card's very name), never "maybe ours", and removing the card leaves it on the phone.
/// (The old sender read send_count > 1 as "our reply was lost": the next reconcile took the
/// user's contact for ours, and removing the card deleted it from the phone.)
#[tokio::test]
async fn a_429_never_turns_the_users_own_whatsapp_contact_into_ours() {
    let dir = tempfile::tempdir().unwrap();
    let (server, config) = whapi_setup(dir.path()).await;
    let book = dir.path().join("book");
    write_vdir(&book, 0..3);
    server.fail_nth("PUT", 1, WhapiFault::TooManyRequests { retry_after: 1 });
    whapi_pass(&config).await;
    assert!(server.saved().is_empty());

    // The user saves the first number on the phone themselves, as the card names it.
    server.save_by_user(&digits(0), "Person 0");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    whapi_pass(&config).await;
    assert_eq!(server.saved().len(), 3);

    std::fs::remove_file(book.join("00000.vcf")).unwrap();
    write_file(book.join("00001.vcf"), card("Renamed", 1)).unwrap();
    whapi_pass(&config).await;
    // Whatever a reconcile decides now: it is the user's.
    let output = run(&config, &["sync", "--once", "--force-delete"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        requests_to(&server, "DELETE", 0),
        0,
        "the user's contact deleted"
    );
    assert_eq!(
        server.saved().get(&digits(0)).map(String::as_str),
        Some("Person 0")
    );
    assert_eq!(
        server.saved().get(&digits(1)).map(String::as_str),
        Some("Renamed"),
        "ours are still renamed"
    );
}
