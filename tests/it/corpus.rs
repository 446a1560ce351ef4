//! The shared corpus of 77 public test vCards (ez-vcard, Android, khard, DAVx5), when present.

use std::path::PathBuf;

use crate::support::{corpus, name, parse, pushed, understand};
use contactsyncd::contact::PhoneOutcome;
use contactsyncd::source;

fn file(relative: &str) -> Option<PathBuf> {
    corpus().map(|dir| dir.join(relative))
}

/// Skips quietly when the corpus is not next to this checkout.
macro_rules! corpus_file {
    ($relative:expr) => {
        match file($relative) {
            Some(path) => path,
            None => {
                eprintln!("skipped: ../shared/vcard-corpus not present");
                return;
            }
        }
    };
}

#[test]
fn every_corpus_file_is_read_without_panic() {
    let Some(dir) = corpus() else {
        eprintln!("skipped: ../shared/vcard-corpus not present");
        return;
    };
    let listing = source::list_files(&dir);
    assert!(listing.errors.is_empty(), "{:?}", listing.errors);
    assert_eq!(listing.files.len(), 77, "the corpus has 77 vCard files");
    let mut cards = 0;
    for path in &listing.files {
        match contactsyncd::vcard::parse_path(path) {
            Ok(parsed) => cards += parsed.cards.len(),
            Err(err) => panic!("{}: {err}", path.display()),
        }
    }
    assert!(cards >= 85, "only {cards} cards read");
}

#[test]
fn shift_jis_with_0x5c_trail_byte_is_not_an_escape() {
    // 能 is 0x94 0x5C in Shift_JIS: the 0x5C must not be read as a backslash escape.
    let cards = understand(&corpus_file!("aosp/v21_japanese_3.vcf"), "JP");
    assert_eq!(name(&cards[0]), ("圭一 伊予", "伊能"));
}

#[test]
fn shift_jis_charset_in_plain_8bit_value() {
    let cards = understand(&corpus_file!("aosp/v21_japanese_2.vcf"), "JP");
    assert_eq!(name(&cards[0]), ("ロイド1", "安藤"));
}

#[test]
fn nested_agent_cards_are_flattened_like_android() {
    let parsed = parse(&corpus_file!("aosp/v21_nest.vcf"));
    let names: Vec<_> = parsed
        .good_cards()
        .map(|c| c.name.as_ref().unwrap().family.clone())
        .collect();
    assert_eq!(names, ["parent", "nest1", "nest2"]);
    assert_eq!(
        parsed.cards.iter().map(|c| c.line).collect::<Vec<_>>(),
        [1, 4, 8]
    );
    // The parent's TEL comes after the nested cards and still belongs to the parent.
    assert_eq!(parsed.good_cards().next().unwrap().phones.len(), 1);
}

#[test]
fn quoted_printable_continuation_starting_with_hash_is_not_a_comment() {
    let parsed = parse(&corpus_file!("aosp/v21_invalid_comment_line.vcf"));
    let card = parsed.good_cards().next().unwrap();
    assert_eq!(card.uid.as_deref(), Some("357"));
    assert_eq!(card.formatted_name.as_deref(), Some("Conference Call"));
    assert!(parsed.incomplete.is_none());
}

#[test]
fn iphone_export_with_double_cr_and_item_groups() {
    let cards = understand(&corpus_file!("ezvcard/John_Doe_IPHONE.vcf"), "US");
    assert_eq!(name(&cards[0]), ("John Richter James", "Doe"));
    // Two faxes and a pager skipped; the item2 assistant phone kept.
    assert_eq!(
        pushed(&cards[0]),
        [
            "+19055551234",
            "+19056661234",
            "+19057771234",
            "+19052221234"
        ]
    );
}

#[test]
fn rfc6350_tel_uri_with_extension() {
    let cards = understand(&corpus_file!("ezvcard/rfc6350-example.vcf"), "DE");
    assert_eq!(name(&cards[0]), ("Simon", "Perreault"));
    assert_eq!(pushed(&cards[0]), ["+14186569254", "+14182626501"]);
    assert!(matches!(
        &cards[0].phones[0].outcome,
        PhoneOutcome::Accepted { extension: Some(e), .. } if e == "102"
    ));
}

#[test]
fn khard_unparsable_file_is_incomplete_not_empty() {
    let parsed = parse(&corpus_file!("khard/vcards_unparsable.vcf"));
    assert!(parsed.incomplete.is_some());
    assert!(parsed.cards.is_empty());
}

#[test]
fn android_quoted_printable_soft_line_breaks() {
    let parsed = parse(&corpus_file!("ezvcard/John_Doe_ANDROID.vcf"));
    assert_eq!(parsed.cards.len(), 6);
    let fourth = parsed.good_cards().nth(3).unwrap();
    let family = &fourth.name.as_ref().unwrap().family;
    assert_eq!(family.matches('Ñ').count(), 11, "{family:?}");
}

#[test]
fn davx5_all_fields_middle_names_and_fax() {
    let cards = understand(&corpus_file!("vcard4android/allfields-vcard3.vcf"), "DE");
    assert_eq!(
        name(&cards[0]),
        ("Firstname Middlename1 Middlename2", "Lastname")
    );
    assert_eq!(pushed(&cards[0]), ["+49123456788"]);
}

#[test]
fn outlook_placeholder_numbers_are_rejected_not_pushed() {
    let cards = understand(&corpus_file!("ezvcard/outlook-2003.vcf"), "US");
    assert_eq!(name(&cards[0]), ("John", "Doe"));
    assert!(pushed(&cards[0]).is_empty());
    assert!(
        cards[0]
            .phones
            .iter()
            .all(|p| !matches!(p.outcome, PhoneOutcome::Accepted { .. }))
    );
}

#[test]
fn formatted_name_only_card_in_hangul() {
    let cards = understand(&corpus_file!("khard/vcards_korean-c.vcf"), "KR");
    assert_eq!(name(&cards[0]), ("최유림", ""));
}

#[test]
fn dial_pauses_and_overlong_numbers_are_rejected() {
    let cards = understand(&corpus_file!("aosp/v30_pause_wait.vcf"), "US");
    assert!(pushed(&cards[0]).is_empty());
    let cards = understand(&corpus_file!("ezvcard/John_Doe_LOTUS_NOTES.vcf"), "US");
    assert!(matches!(
        cards[0].phones[0].outcome,
        PhoneOutcome::Rejected(_)
    ));
}
