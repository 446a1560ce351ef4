//! The remote's contacts as vCard 4.0, one card per contact, for `contactsyncd remote
//! export`: a vdir that vdirsyncer, khard or a source of our own can read. Pure: the files'
//! names and texts; writing them is the CLI's.

use crate::backend::RemoteContact;

/// The category that marks contacts contactsyncd did not create (added in the app, or
/// already saved on the phone): exported, and easy to leave out with `exclude_categories`.
pub const NOT_OURS_CATEGORY: &str = "Added in the app";

/// Every exported file's name starts so: a re-export replaces and removes only these.
pub fn file_prefix(account: &str) -> String {
    format!("contactsyncd-{}-", safe_name(account))
}

/// One exported card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedCard {
    /// `contactsyncd-ACCOUNT-KEY.vcf`: stable for the contact, so a re-export updates it.
    pub file_name: String,
    pub text: String,
}

/// The card of one remote contact. `ours`: the key contactsyncd created it under (`None`:
/// not ours, marked with [`NOT_OURS_CATEGORY`]). `None` for a contact with neither a number
/// nor a user id (nothing stable to name it by).
///
/// A contact of ours added by username is written without its number, as the address book
/// had it: a source pointed at the export then knows it by the same key (a number would take
/// the number path, and the contact would be planned anew).
pub fn card(account: &str, contact: &RemoteContact, ours: Option<&str>) -> Option<ExportedCard> {
    let by_username = ours.is_some_and(crate::contact_key::is_username);
    // A UID from the user id where there is one (it survives a number change), else the
    // number: the same contact gets the same UID and file on every export.
    let key = match (contact.user_id, contact.e164.trim_start_matches('+')) {
        (Some(id), _) => format!("user-{id}"),
        (None, digits) if !digits.is_empty() => format!("tel-{digits}"),
        _ => return None,
    };
    let uid = format!("urn:contactsyncd:{}:{key}", safe_name(account));
    let first = contact.first_name.trim();
    let last = contact.last_name.trim();
    let full = [first, last]
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let mut text = String::from("BEGIN:VCARD\r\nVERSION:4.0\r\n");
    push(&mut text, "UID", &escape(&uid));
    push(
        &mut text,
        "FN",
        &escape(if full.is_empty() {
            contact.e164.as_str()
        } else {
            &full
        }),
    );
    push(
        &mut text,
        "N",
        &format!("{};{};;;", escape(last), escape(first)),
    );
    if !contact.e164.is_empty() && !by_username {
        push(
            &mut text,
            "TEL;VALUE=uri;TYPE=cell",
            &format!("tel:{}", contact.e164),
        );
    }
    if let Some(username) = contact.username.as_deref().filter(|u| !u.is_empty()) {
        push(
            &mut text,
            "IMPP;X-SERVICE-TYPE=Telegram",
            &format!("telegram:{username}"),
        );
    }
    if ours.is_none() {
        push(&mut text, "CATEGORIES", &escape(NOT_OURS_CATEGORY));
    }
    text.push_str("END:VCARD\r\n");
    Some(ExportedCard {
        file_name: format!("{}{key}.vcf", file_prefix(account)),
        text,
    })
}

/// Appends a content line, folded at 75 octets as RFC 6350 §3.2 asks (on a character
/// boundary, continuation lines start with a space).
fn push(text: &mut String, name: &str, value: &str) {
    let line = format!("{name}:{value}");
    let mut width = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        if width + len > 75 {
            text.push_str("\r\n ");
            width = 1;
        }
        text.push(c);
        width += len;
    }
    text.push_str("\r\n");
}

/// RFC 6350 §3.4: backslash, comma, semicolon and newline are escaped in text values.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Account names (`telegram`, `telegram@123`) as they may appear in a file name.
fn safe_name(account: &str) -> String {
    account
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CardFilter;
    use crate::contact;
    use crate::vcard;

    fn remote(e164: &str, first: &str, last: &str, user_id: Option<i64>) -> RemoteContact {
        RemoteContact {
            e164: e164.into(),
            first_name: first.into(),
            last_name: last.into(),
            user_id,
            username: None,
        }
    }

    /// What we export, our own reader reads back as the same contact.
    #[test]
    fn an_exported_card_reads_back_as_the_same_contact() {
        let mut contact = remote("+4915123456789", "María, José", "García; Jr.", Some(77));
        contact.username = Some("maria_g".into());
        let card = card("telegram", &contact, Some("+4915123456789")).unwrap();
        assert_eq!(card.file_name, "contactsyncd-telegram-user-77.vcf");
        let parsed = vcard::parse_bytes(card.text.as_bytes()).unwrap();
        assert_eq!(parsed.cards.len(), 1);
        let raw = parsed.cards[0].result.as_ref().unwrap();
        let understood = contact::understand(raw, None, &CardFilter::default());
        let name = understood.name.as_ref().unwrap();
        assert_eq!(
            (name.first.as_str(), name.last.as_str()),
            ("María, José", "García; Jr.")
        );
        assert_eq!(
            understood.pushed_numbers().collect::<Vec<_>>(),
            ["+4915123456789"]
        );
        assert!(
            card.text
                .contains("IMPP;X-SERVICE-TYPE=Telegram:telegram:maria_g\r\n")
        );
        assert!(!card.text.contains("CATEGORIES"));
    }

    /// Issue 15: one of ours added by username comes back as the same key (the username,
    /// no number), so a source pointed at the export plans nothing for it.
    #[test]
    fn a_contact_added_by_username_is_exported_by_username() {
        let mut contact = remote("+4915123456789", "Maria", "", Some(78));
        contact.username = Some("Maria_G".into());
        let card = card("telegram", &contact, Some("@maria_g")).unwrap();
        assert!(!card.text.contains("TEL"), "{}", card.text);
        let parsed = vcard::parse_bytes(card.text.as_bytes()).unwrap();
        let raw = parsed.cards[0].result.as_ref().unwrap();
        let understood = contact::understand(raw, None, &CardFilter::default());
        assert_eq!(understood.contact_keys(), ["@maria_g"]);
    }

    #[test]
    fn contacts_not_ours_are_marked_and_keyed_by_number_without_a_user() {
        let card = card("whatsapp", &remote("+4930123456", "Mum", "", None), None).unwrap();
        assert_eq!(card.file_name, "contactsyncd-whatsapp-tel-4930123456.vcf");
        assert!(card.text.contains("CATEGORIES:Added in the app\r\n"));
        assert!(
            card.text
                .contains("UID:urn:contactsyncd:whatsapp:tel-4930123456\r\n")
        );
        assert!(super::card("telegram", &remote("", "Ghost", "", None), Some("+1")).is_none());
    }

    #[test]
    fn long_lines_are_folded_on_character_boundaries() {
        let long = "Ä".repeat(60);
        let card = card(
            "telegram",
            &remote("+4930123456", &long, "", Some(1)),
            Some("+4930123456"),
        )
        .unwrap();
        for line in card.text.split("\r\n") {
            assert!(line.len() <= 75, "{line:?}");
        }
        let parsed = vcard::parse_bytes(card.text.as_bytes()).unwrap();
        let raw = parsed.cards[0].result.as_ref().unwrap();
        let understood = contact::understand(raw, None, &CardFilter::default());
        // Names are cut to 64 characters when read; the card itself keeps them whole.
        assert!(understood.name.unwrap().first.starts_with("ÄÄÄÄ"));
    }
}
