//! Whatever bytes come in, nothing panics and every card is accounted for.

use contactsyncd::config::CardFilter;
use contactsyncd::contact;
use contactsyncd::phone::{self, DefaultRegion};
use contactsyncd::vcard;
use proptest::prelude::*;

/// Lines that look like vCard, in any order: the parser's hard cases.
fn vcard_like_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("BEGIN:VCARD".to_owned()),
        Just("END:VCARD".to_owned()),
        Just("VERSION:2.1".to_owned()),
        Just("N;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:=C3=96=".to_owned()),
        Just("TEL;CELL;QUOTED-PRINTABLE:+49=".to_owned()),
        Just(" folded".to_owned()),
        Just("#comment".to_owned()),
        Just("item1.X-ABLabel:Boat".to_owned()),
        "[A-Z;=:.,\\\\ -]{0,20}",
        "TEL[;A-Z=]{0,10}:[0-9+() pw-]{0,20}",
        "FN:.{0,10}",
        "N:[^\r\n]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = vcard::parse_bytes(&bytes);
    }

    #[test]
    fn vcard_like_input_never_panics_and_cards_are_numbered_in_order(
        lines in proptest::collection::vec(vcard_like_line(), 0..40),
        separator in prop_oneof![Just("\r\n"), Just("\n"), Just("\r\r\n"), Just("\r")],
    ) {
        let text = lines.join(separator);
        if let Ok(parsed) = vcard::parse_bytes(text.as_bytes()) {
            let indexes: Vec<usize> = parsed.cards.iter().map(|c| c.index).collect();
            let mut sorted = indexes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(&indexes, &sorted);
            let region = DefaultRegion::parse("DE").ok();
            for card in parsed.good_cards() {
                let understood = contact::understand(card, region, &CardFilter::default());
                if let Some(name) = &understood.name {
                    prop_assert!(!name.first.is_empty());
                    prop_assert!(name.first.chars().count() <= 64);
                }
            }
        }
    }

    #[test]
    fn arbitrary_phone_text_never_panics(raw in "\\PC{0,40}") {
        if let Ok(n) = phone::normalize(&raw, DefaultRegion::parse("US").ok()) {
            prop_assert!(n.e164.starts_with('+'));
            prop_assert!(n.e164[1..].chars().all(|c| c.is_ascii_digit()));
        }
    }
}
