//! Our own fixtures, one per exporter dialect, with the names and E.164s they must give.

use crate::support::{fixture, name, parse, pushed, understand};
use contactsyncd::contact::PhoneOutcome;

#[test]
fn google_contacts_3_0() {
    let cards = understand(&fixture("google.vcf"), "DE");
    assert_eq!(cards.len(), 2);
    assert_eq!(name(&cards[0]), ("Anna", "Schmidt"));
    // The work fax is skipped by default.
    assert_eq!(pushed(&cards[0]), ["+4915123456789", "+493012345678"]);
    // Escaped comma in FN, escaped semicolon in ORG, trunk "(0)" after the country code.
    assert_eq!(name(&cards[1]), ("Jörg", "Müller"));
    assert_eq!(pushed(&cards[1]), ["+491701234567"]);
    let parsed = parse(&fixture("google.vcf"));
    let second = parsed.good_cards().nth(1).unwrap();
    assert_eq!(second.formatted_name.as_deref(), Some("Müller, Jörg"));
    assert_eq!(second.organization.as_deref(), Some("Example GmbH; Berlin"));
    let first = parsed.good_cards().next().unwrap();
    assert_eq!(first.categories, ["myContacts", "Family"]);
}

#[test]
fn icloud_item_groups_and_double_cr() {
    let parsed = parse(&fixture("icloud.vcf"));
    let card = parsed.good_cards().next().unwrap();
    let labels: Vec<_> = card.phones.iter().map(|p| p.label.as_deref()).collect();
    assert_eq!(
        labels,
        [
            Some("_$!<Mobile>!$_"),
            Some("_$!<HomeFAX>!$_"),
            Some("Boat")
        ]
    );
    let cards = understand(&fixture("icloud.vcf"), "US");
    assert_eq!(name(&cards[0]), ("Johnny", "Appleseed"));
    // The HomeFAX label marks a fax even without TYPE=fax.
    assert_eq!(pushed(&cards[0]), ["+12025550173", "+14155552671"]);
}

#[test]
fn android_2_1_quoted_printable_with_charset_and_soft_breaks() {
    let cards = understand(&fixture("android21.vcf"), "TR");
    assert_eq!(name(&cards[0]), ("Ayşe", "Öztürk"));
    assert_eq!(pushed(&cards[0]), ["+905321234567", "+902125551234"]);
    let parsed = parse(&fixture("android21.vcf"));
    let card = parsed.good_cards().next().unwrap();
    assert_eq!(card.formatted_name.as_deref(), Some("Ayşe Öztürk"));
    assert_eq!(card.phones[0].types, ["cell", "pref"]);
}

#[test]
fn outlook_windows_1252_without_charset() {
    let cards = understand(&fixture("outlook.vcf"), "FR");
    assert_eq!(name(&cards[0]), ("Renée", "Großmann"));
    assert_eq!(pushed(&cards[0]), ["+33142685300", "+33612345678"]);
}

#[test]
fn utf16_with_bom() {
    let cards = understand(&fixture("utf16.vcf"), "PL");
    assert_eq!(name(&cards[0]), ("Zofia", "Kowalska"));
    assert_eq!(pushed(&cards[0]), ["+48512345678"]);
}

#[test]
fn nextcloud_4_0_tel_uris_with_bom_and_extension() {
    let cards = understand(&fixture("nextcloud.vcf"), "US");
    assert_eq!(name(&cards[0]), ("Carlos", "Pérez"));
    assert_eq!(pushed(&cards[0]), ["+34612345678", "+34911234567"]);
    assert!(matches!(
        &cards[0].phones[1].outcome,
        PhoneOutcome::Accepted { extension: Some(ext), .. } if ext == "204"
    ));
    let parsed = parse(&fixture("nextcloud.vcf"));
    let card = parsed.good_cards().next().unwrap();
    assert_eq!(
        card.uid.as_deref(),
        Some("1f0c6a34-2f0e-4b61-8d2a-7c3a9d5f7e10")
    );
    assert_eq!(card.phones[0].types, ["cell", "voice"]);
}

#[test]
fn shift_jis_8bit_value() {
    let cards = understand(&fixture("shift_jis.vcf"), "JP");
    assert_eq!(name(&cards[0]), ("太郎", "山田"));
    assert_eq!(pushed(&cards[0]), ["+819012345678"]);
}

#[test]
fn a_bad_card_costs_only_itself() {
    let parsed = parse(&fixture("broken_middle.vcf"));
    assert_eq!(parsed.cards.len(), 4);
    assert_eq!(
        parsed.cards.iter().map(|c| c.line).collect::<Vec<_>>(),
        [1, 6, 11, 17]
    );
    let cards = understand(&fixture("broken_middle.vcf"), "GB");
    assert_eq!(pushed(&cards[0]), ["+442079460958"]);
    assert!(!cards[1].is_pushed(), "nameless card must not be pushed");
    assert!(pushed(&cards[2]).is_empty());
    assert!(matches!(
        cards[2].phones[0].outcome,
        PhoneOutcome::Rejected(_)
    ));
    assert!(matches!(
        cards[2].phones[1].outcome,
        PhoneOutcome::Rejected(_)
    ));
    assert_eq!(pushed(&cards[3]), ["+447700900123"]);
}

#[test]
fn a_file_ending_inside_a_card_is_incomplete_but_keeps_its_complete_cards() {
    let parsed = parse(&fixture("truncated.vcf"));
    let incomplete = parsed.incomplete.expect("reported as incomplete");
    assert_eq!((incomplete.card, incomplete.line), (2, 6));
    assert_eq!(parsed.cards.len(), 1);
    assert_eq!(
        parsed
            .good_cards()
            .next()
            .unwrap()
            .formatted_name
            .as_deref(),
        Some("Complete Card")
    );
}

#[test]
fn a_file_without_cards_is_an_error() {
    let err = contactsyncd::vcard::parse_path(&fixture("no_cards.vcf")).unwrap_err();
    assert!(err.to_string().contains("no vCard"), "{err}");
}

#[test]
fn huge_inline_photo_is_skipped_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.vcf");
    let mut text =
        String::from("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Big Photo\r\nPHOTO;ENCODING=b;TYPE=JPEG:");
    for _ in 0..100_000 {
        text.push_str(
            "\r\n /9j/4AAQSkZJRgABAQAAAQABAAD/4QBYRXhpZgAATU0AKgAAAAgAAgESAAMAAAABAAEAAIdp",
        );
    }
    text.push_str("\r\nTEL:+1 202 555 0123\r\nEND:VCARD\r\n");
    std::fs::write(&path, &text).unwrap();
    assert!(text.len() > 7_000_000);
    let started = std::time::Instant::now();
    let cards = understand(&path, "US");
    let elapsed = started.elapsed();
    assert_eq!(pushed(&cards[0]), ["+12025550123"]);
    // Debug build; release is ~10x faster. Decoding the photo would cost far more.
    assert!(elapsed.as_secs() < 5, "took {elapsed:?}");
}

/// A 2.1 export folded inside quoted-printable escapes (read as vobject does: unfold, then
/// decode), and a 3.0 card with escaped commas, which are text and not list separators.
#[test]
fn folded_quoted_printable_and_escaped_commas() {
    let cards = understand(&fixture("folded_escaped.vcf"), "ES");
    assert_eq!(name(&cards[0]), ("José", "García"));
    assert_eq!(pushed(&cards[0]), ["+34691234567"]);
    assert_eq!(name(&cards[1]), ("Aarav", "García, Jr."));
    let parsed = parse(&fixture("folded_escaped.vcf"));
    let first = parsed.good_cards().next().unwrap();
    assert_eq!(first.formatted_name.as_deref(), Some("José García"));
    let second = parsed.good_cards().nth(1).unwrap();
    assert_eq!(second.formatted_name.as_deref(), Some("Aarav García, Jr."));
    assert_eq!(
        second.organization.as_deref(),
        Some("García, Hijos & Co, Ventas")
    );
    assert_eq!(second.categories, ["Familia, Madrid", "Work"]);
}

/// One card's Telegram usernames, and the values it ignored with why.
type CardUsernames = (Vec<String>, Vec<(String, String)>);

/// Per card of a fixture: the Telegram usernames read, and the values ignored with why.
fn usernames_of(file: &str) -> Vec<CardUsernames> {
    parse(&fixture(file))
        .good_cards()
        .map(|card| {
            (
                card.telegram_usernames.clone(),
                card.ignored_telegram_usernames
                    .iter()
                    .map(|i| (i.value.clone(), i.problem.to_string()))
                    .collect(),
            )
        })
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn telegram_usernames_nextcloud_impp_type_telegram() {
    let cards = usernames_of("telegram_nextcloud.vcf");
    assert_eq!(
        cards[0],
        (names(&["Alice_Adams"]), vec![]),
        "@name, case kept"
    );
    // name.t.me and the t.me link are one username; Skype is no concern of ours.
    assert_eq!(cards[1], (names(&["bobbybrown"]), vec![]));
    assert_eq!(
        cards[2],
        (
            vec![],
            vec![(
                "@1carol".to_owned(),
                "starts with '1'; a Telegram username starts with a letter".to_owned()
            )]
        )
    );
    // An ignored username is no error of the card: Carol's number still syncs.
    let understood = understand(&fixture("telegram_nextcloud.vcf"), "DE");
    assert_eq!(pushed(&understood[2]), ["+491707654321"]);
    assert!(
        understood[2].problems.is_empty(),
        "{:?}",
        understood[2].problems
    );
}

#[test]
fn telegram_usernames_davx5_telegram_scheme() {
    let cards = usernames_of("telegram_davx5.vcf");
    assert_eq!(cards[0], (names(&["dora_diaz"]), vec![]), "xmpp is ignored");
    assert_eq!(
        cards[1],
        (
            vec![],
            vec![(
                "telegram:+46701234567".to_owned(),
                "a phone number, not a username (numbers are read from TEL)".to_owned()
            )]
        )
    );
}

#[test]
fn telegram_usernames_apple_and_google_x_service_type() {
    let apple = usernames_of("telegram_apple.vcf");
    assert_eq!(
        apple,
        [(names(&["frida_f"]), vec![])],
        "x-apple: stripped, Skype ignored"
    );
    let card = parse(&fixture("telegram_apple.vcf"));
    let card = card.good_cards().next().unwrap();
    assert_eq!(card.phones[0].label.as_deref(), Some("_$!<Mobile>!$_"));
    // Google: the same username twice in two spellings is one, the first spelling kept.
    let google = usernames_of("telegram_google.vcf");
    assert_eq!(google, [(names(&["gus_gomez"]), vec![])]);
}

#[test]
fn telegram_usernames_from_urls_and_the_links_that_are_none() {
    let cards = usernames_of("telegram_url.vcf");
    let (found, ignored) = &cards[0];
    assert_eq!(found, &names(&["hana_hoff", "HanaHoff2"]));
    let ignored: Vec<(&str, &str)> = ignored
        .iter()
        .map(|(value, why)| (value.as_str(), why.as_str()))
        .collect();
    assert_eq!(
        ignored,
        [
            (
                "https://t.me/+AbCdEfGh123",
                "an invite link, not a username"
            ),
            (
                "https://t.me/joinchat/AbCdEf",
                "an invite link, not a username"
            ),
            (
                "https://t.me/c/1234567/89",
                "a link to a message in a private group or channel, not to a user"
            ),
            (
                "https://t.me/s/hanachannel",
                "a link to a channel's preview, not to a user"
            ),
            (
                "https://t.me/hanabot?start=ref42",
                "a bot link with a start parameter (?start=…), not a person's username"
            ),
            (
                "https://t.me/hana__hoff",
                "contains __, which a Telegram username cannot"
            ),
        ],
        "example.org is no Telegram link and not reported"
    );
}
