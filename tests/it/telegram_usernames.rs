//! Issue 15: contacts known by a Telegram username, with the real grammers client against the
//! local test server, through the same sync pass (and the binary) as numbers.

use contactsyncd::store::Store;
use grammers_tl_types as tl;

use crate::sync::{ManualClock, phone, write_vdir};
use crate::telegram_backend::{Setup, binary};

const DAY: i64 = 86_400;

/// A card with a name and the given property lines (IMPP, URL, TEL …).
fn card_with(name: &str, lines: &[&str]) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\n{}\r\nEND:VCARD\r\n",
        lines.join("\r\n")
    )
}

fn write(setup: &Setup, file: &str, text: &str) {
    std::fs::write(setup.book().join(file), text).unwrap();
}

fn added(setup: &Setup) -> Vec<(i64, String, bool)> {
    setup
        .server
        .calls_to("contacts.addContact")
        .iter()
        .map(|call| {
            let request: tl::functions::contacts::AddContact = call.decode();
            let tl::enums::InputUser::User(user) = request.id else {
                panic!("addContact without a user: {:?}", request.id)
            };
            (
                user.user_id,
                request.first_name,
                request.add_phone_privacy_exception,
            )
        })
        .collect()
}

fn resolved(setup: &Setup) -> Vec<String> {
    setup
        .server
        .calls_to("contacts.resolveUsername")
        .iter()
        .map(|call| {
            call.decode::<tl::functions::contacts::ResolveUsername>()
                .username
        })
        .collect()
}

fn contact_name(setup: &Setup, user_id: i64) -> Option<String> {
    setup
        .server
        .state()
        .account
        .contacts
        .get(&user_id)
        .map(|c| c.first_name.clone())
}

/// A user with this username (and number, if any) on the test server: their user id.
fn register(setup: &Setup, phone: Option<&str>, username: &str) -> i64 {
    setup
        .server
        .state()
        .account
        .register_username(phone, username)
}

/// Since call number `calls`, nothing was asked but the contact list.
fn asked_only_the_list_since(setup: &Setup, calls: usize) {
    let since = setup.calls_since(calls);
    assert!(
        since.iter().all(|c| c.method == "contacts.getContacts"),
        "{since:?}"
    );
}

/// Added by username (resolved once, the user kept for the rename), renamed with one
/// addContact, deleted by user; a card with a number and a username goes by number only;
/// an unknown username is refused alone, shown by `status`, and asked again only after a
/// day; the contact added by hand is never touched.
#[tokio::test]
async fn username_cards_are_added_renamed_and_removed_by_user() {
    let setup = Setup::new(100, 30).await;
    let (alice, bob) = {
        let mut state = setup.server.state();
        (
            state.account.register_username(None, "Alice_W"),
            state
                .account
                .register_username(Some("+4930999001"), "bob_b"),
        )
    };
    let friend = setup
        .server
        .state()
        .account
        .add_by_hand("+4930123456", "Added By Hand");
    write_vdir(&setup.book(), 0..2);
    write(
        &setup,
        "alice.vcf",
        &card_with("Alice W", &["IMPP;TYPE=TELEGRAM:telegram:alice_w"]),
    );
    write(
        &setup,
        "bob.vcf",
        &card_with("Bob B", &["TEL:+49 30 999001", "URL:https://t.me/bob_b"]),
    );
    write(
        &setup,
        "nobody.vcf",
        &card_with("No Body", &["IMPP:telegram:@nobody_here"]),
    );
    let clock = ManualClock::new();

    let report = setup.sync(&clock).await;
    let account = &report.accounts[0];
    assert_eq!(account.imported, 4, "{report:?}");
    assert_eq!(account.rejected, 1, "{report:?}");
    assert_eq!(
        resolved(&setup),
        ["alice_w", "nobody_here"],
        "bob goes by number"
    );
    assert_eq!(added(&setup), [(alice, "Alice W".to_owned(), false)]);
    assert_eq!(contact_name(&setup, alice).as_deref(), Some("Alice W"));
    assert_eq!(contact_name(&setup, bob).as_deref(), Some("Bob B"));
    let imported: Vec<String> = setup
        .server
        .calls_to("contacts.importContacts")
        .iter()
        .flat_map(|call| {
            call.decode::<tl::functions::contacts::ImportContacts>()
                .contacts
                .into_iter()
                .map(|tl::enums::InputContact::InputPhoneContact(c)| c.phone)
        })
        .collect();
    assert_eq!(imported, [phone(0), phone(1), "+4930999001".to_owned()]);

    let status = binary(&setup, &["status"]).await;
    let out = crate::support::stdout(&status);
    assert!(
        out.contains("rejected import @n…re: no Telegram user has this username"),
        "{out}"
    );
    assert!(
        !out.contains("nobody_here"),
        "usernames are redacted: {out}"
    );
    // inspect, on the configured sources, says so at the card (it is the user's own view
    // of their address book: the username is shown as written).
    let inspect = crate::support::stdout(&binary(&setup, &["inspect"]).await);
    assert!(
        inspect.lines().any(|l| l.contains("@nobody_here")
            && l.contains("refused by Telegram: no Telegram user has this username")),
        "{inspect}"
    );
    let json = crate::support::stdout(&binary(&setup, &["inspect", "--json"]).await);
    assert!(
        json.contains("\"username_refused\":\"no Telegram user"),
        "{json}"
    );
    // Alice has no number Telegram shows: `remote list` names her by username, redacted.
    let list = crate::support::stdout(&binary(&setup, &["remote", "list"]).await);
    assert!(
        list.lines()
            .any(|l| l.contains("@A…_W") && l.contains("Alice W") && !l.contains("not in")),
        "{list}"
    );
    assert!(!list.to_lowercase().contains("alice_w"), "{list}");

    // Nothing changed: nothing asked, the unknown username included.
    let calls = setup.server.call_count();
    setup.sync(&clock).await;
    assert!(resolved(&setup).len() == 2 && added(&setup).len() == 1);
    asked_only_the_list_since(&setup, calls);

    // Renamed: one addContact under the new name, without resolving again.
    write(
        &setup,
        "alice.vcf",
        &card_with("Alice Wonder", &["IMPP;TYPE=TELEGRAM:telegram:alice_w"]),
    );
    setup.sync(&clock).await;
    assert_eq!(resolved(&setup).len(), 2);
    assert_eq!(added(&setup).last().unwrap().1, "Alice Wonder");
    assert_eq!(contact_name(&setup, alice).as_deref(), Some("Alice Wonder"));

    // Removed: deleted by user, never by a phone string.
    std::fs::remove_file(setup.book().join("alice.vcf")).unwrap();
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].deleted, 1, "{report:?}");
    assert_eq!(contact_name(&setup, alice), None);
    let deleted_users: Vec<i64> = setup
        .server
        .calls_to("contacts.deleteContacts")
        .iter()
        .flat_map(|call| {
            call.decode::<tl::functions::contacts::DeleteContacts>()
                .id
                .into_iter()
                .map(|id| match id {
                    tl::enums::InputUser::User(u) => u.user_id,
                    other => panic!("{other:?}"),
                })
        })
        .collect();
    assert_eq!(deleted_users, [alice]);
    for call in setup.server.calls_to("contacts.deleteByPhones") {
        let phones = call
            .decode::<tl::functions::contacts::DeleteByPhones>()
            .phones;
        assert!(!phones.iter().any(|p| p.starts_with('@')), "{phones:?}");
    }

    // A day later the unknown username is asked once more (and still unknown).
    clock.advance(DAY + 1);
    setup.sync(&clock).await;
    assert_eq!(resolved(&setup), ["alice_w", "nobody_here", "nobody_here"]);
    assert_eq!(
        contact_name(&setup, friend).as_deref(),
        Some("Added By Hand")
    );
    assert_eq!(contact_name(&setup, bob).as_deref(), Some("Bob B"));
}

/// A FLOOD_WAIT on resolveUsername pauses the account like one on an import: nothing is
/// lost, the contact is added once the wait is over, and the config's privacy flag is sent.
#[tokio::test]
async fn a_flood_wait_on_resolve_username_pauses_and_the_contact_comes_later() {
    let setup = Setup::new(100, 30)
        .await
        .with_telegram_lines("add_phone_privacy_exception = true\n");
    let carol = register(&setup, None, "carol_c");
    write(
        &setup,
        "carol.vcf",
        &card_with("Carol", &["URL:https://t.me/carol_c"]),
    );
    setup.server.fail_next(
        "contacts.resolveUsername",
        crate::telegram::Fault::rpc(420, "FLOOD_WAIT_600"),
    );
    let clock = ManualClock::new();
    let report = setup.sync(&clock).await;
    assert!(report.accounts[0].stop.is_some(), "{report:?}");
    assert_eq!(contact_name(&setup, carol), None);
    assert!(added(&setup).is_empty());

    // Within the wait: nothing is asked.
    let calls = setup.server.call_count();
    setup.sync(&clock).await;
    assert_eq!(setup.server.call_count(), calls);

    clock.advance(601);
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].imported, 1, "{report:?}");
    assert_eq!(added(&setup), [(carol, "Carol".to_owned(), true)]);
    assert!(
        setup
            .server
            .state()
            .account
            .phone_privacy_exceptions
            .contains(&carol)
    );
}

/// Deleted in the app, a username contact is added again (on_remote_delete = reimport),
/// found by user although the list shows it by number.
#[tokio::test]
async fn a_username_contact_deleted_in_the_app_is_added_again() {
    let setup = Setup::new(100, 30)
        .await
        .with_telegram_lines("reconcile_interval = 60\n");
    let dave = register(&setup, Some("+4930999002"), "dave_d");
    write(
        &setup,
        "dave.vcf",
        &card_with("Dave", &["IMPP:telegram:dave_d"]),
    );
    // Another of ours: one deleted in the app is a change, not an emptied list (held).
    write_vdir(&setup.book(), 0..2);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    assert_eq!(contact_name(&setup, dave).as_deref(), Some("Dave"));
    // Listed with a number: no "number changed" for a contact we added by username.
    clock.advance(61);
    setup.sync(&clock).await;
    let status = crate::support::stdout(&binary(&setup, &["status"]).await);
    assert!(!status.contains("number changed"), "{status}");

    setup.server.state().account.contacts.remove(&dave);
    clock.advance(61);
    setup.sync(&clock).await;
    assert_eq!(contact_name(&setup, dave).as_deref(), Some("Dave"));
    assert_eq!(added(&setup).len(), 2);
}

/// One person on two cards, by number and by username, under two names: Telegram keeps one
/// contact, named by whichever call came last (the username's). Once the username's card
/// goes, the person stays for the number's card, without a delete, and is named as that
/// card names them.
#[tokio::test]
async fn a_person_on_two_cards_keeps_the_name_of_the_card_that_stays() {
    let setup = Setup::new(100, 30).await;
    let bob = register(&setup, Some("+4930999004"), "bob_b");
    write(
        &setup,
        "bob.vcf",
        &card_with("Bob B", &["TEL:+49 30 999004"]),
    );
    write(
        &setup,
        "robert.vcf",
        &card_with("Robert", &["IMPP:telegram:bob_b"]),
    );
    write_vdir(&setup.book(), 0..2);
    let clock = ManualClock::new();
    setup.sync(&clock).await;
    assert_eq!(contact_name(&setup, bob).as_deref(), Some("Robert"));

    std::fs::remove_file(setup.book().join("robert.vcf")).unwrap();
    let calls = setup.server.call_count();
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].deleted, 1, "{report:?}");
    assert_eq!(contact_name(&setup, bob).as_deref(), Some("Bob B"));
    let methods: Vec<String> = setup
        .calls_since(calls)
        .iter()
        .map(|c| c.method.clone())
        .collect();
    assert!(
        !methods.iter().any(|m| m.starts_with("contacts.delete")),
        "{methods:?}"
    );
    // Settled: the next pass asks nothing but the list.
    let calls = setup.server.call_count();
    setup.sync(&clock).await;
    asked_only_the_list_since(&setup, calls);
}

/// `remote forget-all --yes --reset-saved`: username contacts go by user, numbers by phone,
/// the saved list is emptied on request only, the hand-added contact stays; `remote export`
/// of the account, pointed at by a source, plans nothing (the username contact comes back
/// as the same key).
#[tokio::test]
async fn export_round_trip_and_forget_all_cover_username_contacts() {
    let setup = Setup::new(100, 30).await;
    let erin = register(&setup, Some("+4930999003"), "erin_e");
    let friend = setup
        .server
        .state()
        .account
        .add_by_hand("+4930123456", "Added By Hand");
    write_vdir(&setup.book(), 0..3);
    write(
        &setup,
        "erin.vcf",
        &card_with("Erin", &["IMPP;X-SERVICE-TYPE=Telegram:erin_e"]),
    );
    let synced = binary(&setup, &["sync", "--once"]).await;
    assert!(
        synced.status.success(),
        "{}",
        crate::support::stderr(&synced)
    );
    assert_eq!(contact_name(&setup, erin).as_deref(), Some("Erin"));

    // Export, then read the export instead of the book: nothing to plan.
    let export = setup.book().parent().unwrap().join("export");
    let exported = binary(&setup, &["remote", "export", export.to_str().unwrap()]).await;
    assert!(
        exported.status.success(),
        "{}",
        crate::support::stderr(&exported)
    );
    let text = std::fs::read_to_string(&setup.config.file).unwrap();
    let round_trip = text.replace(
        "path = \"book\"\n",
        "path = \"export\"\nexclude_categories = [\"Added in the app\"]\n",
    );
    let round_trip_file = setup.config.file.with_file_name("round-trip.toml");
    std::fs::write(&round_trip_file, round_trip).unwrap();
    let plan = tokio::task::spawn_blocking(move || {
        crate::support::contactsyncd(
            &[
                "--config",
                round_trip_file.to_str().unwrap(),
                "plan",
                "--json",
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert!(plan.status.success(), "{}", crate::support::stderr(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        plan["contacts"], 4,
        "three numbers and Erin's username: {plan}"
    );
    let planned = &plan["accounts"][0]["planned"];
    for counter in ["new", "renames", "deletes"] {
        assert_eq!(planned[counter], 0, "{counter}: {plan}");
    }

    setup
        .server
        .state()
        .account
        .saved
        .insert("4930555000".into(), ("From The App".into(), String::new()));
    let forgot = binary(&setup, &["remote", "forget-all", "--yes", "--reset-saved"]).await;
    let out = crate::support::stdout(&forgot);
    assert!(forgot.status.success(), "{out}");
    assert!(out.contains("nothing of contactsyncd's is left"), "{out}");
    let state = setup.server.state();
    let left: Vec<i64> = state.account.contacts.keys().copied().collect();
    assert_eq!(left, [friend]);
    assert!(state.account.saved.is_empty(), "{:?}", state.account.saved);
    drop(state);
    assert_eq!(setup.server.calls_to("contacts.resetSaved").len(), 1);
    let mirror = Store::open_for_writing(&setup.config.state_dir)
        .unwrap()
        .mirror("telegram")
        .unwrap();
    assert!(mirror.values().all(|e| !e.state.is_remote()), "{mirror:?}");
}

/// The number wins, but a number without a Telegram account does not stop the card's
/// username from finding the person: the number is saved, the user added by username under
/// the card's names, renamed with the card, deleted by user with the card; the list showing
/// them under their own number is no "number changed".
#[tokio::test]
async fn a_number_without_an_account_falls_back_to_the_cards_username() {
    let setup = Setup::new(100, 30)
        .await
        .with_telegram_lines("reconcile_interval = 60\n");
    let gina = {
        let mut state = setup.server.state();
        state.account.rule = crate::telegram::account::Registration::Explicit;
        state.account.register("+4930999100", false);
        state
            .account
            .register_username(Some("+4930999200"), "gina_g")
    };
    write(
        &setup,
        "gina.vcf",
        &card_with("Gina", &["TEL:+49 30 999004", "IMPP:telegram:gina_g"]),
    );
    write(
        &setup,
        "other.vcf",
        &card_with("Has Account", &["TEL:+49 30 999100"]),
    );
    let clock = ManualClock::new();
    let report = setup.sync(&clock).await;
    assert_eq!(report.accounts[0].imported, 2, "{report:?}");
    assert_eq!(contact_name(&setup, gina).as_deref(), Some("Gina"));
    assert_eq!(
        resolved(&setup),
        ["gina_g"],
        "only for the number without account"
    );

    clock.advance(61);
    setup.sync(&clock).await;
    let status = crate::support::stdout(&binary(&setup, &["status"]).await);
    assert!(!status.contains("number changed"), "{status}");

    write(
        &setup,
        "gina.vcf",
        &card_with("Gina G", &["TEL:+49 30 999004", "IMPP:telegram:gina_g"]),
    );
    setup.sync(&clock).await;
    assert_eq!(contact_name(&setup, gina).as_deref(), Some("Gina G"));

    std::fs::remove_file(setup.book().join("gina.vcf")).unwrap();
    setup.sync(&clock).await;
    assert_eq!(contact_name(&setup, gina), None);
    assert_eq!(setup.server.state().account.contacts.len(), 1);
}
