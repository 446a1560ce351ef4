//! A contact's key: how the desired set, the diff, the mirror and the outbox know a contact.
//!
//! Two kinds, told apart by the first character so that one string column and one ordered
//! map serve both:
//! - a phone number in E.164, `+4915…` (every phone the address book yields);
//! - a Telegram username, `@` and the username in lower case (Telegram compares usernames
//!   case-insensitively), for a card that has a username and no number we push.
//!
//! `+` sorts before `@`, so a sorted plan lists every number before every username.

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Phone,
    Username,
}

/// The kind of `key`. Anything not a username key is a phone (state written by versions
/// before usernames holds only E.164).
pub fn kind(key: &str) -> KeyKind {
    if key.starts_with('@') {
        KeyKind::Username
    } else {
        KeyKind::Phone
    }
}

pub fn is_username(key: &str) -> bool {
    kind(key) == KeyKind::Username
}

/// The key of a Telegram username (given without `@`, in any case).
pub fn of_username(username: &str) -> String {
    format!("@{}", username.to_ascii_lowercase())
}

/// The username a username key names (lower case, without `@`).
pub fn username(key: &str) -> Option<&str> {
    key.strip_prefix('@')
}

/// A key as logs and `status` may show it: `+49…34`, `@al…ce`.
pub fn redact(key: &str) -> String {
    crate::phone::redact(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::phone("+491701234567", KeyKind::Phone)]
    #[case::username("@alice_b", KeyKind::Username)]
    fn tells_the_kinds_apart(#[case] key: &str, #[case] expected: KeyKind) {
        assert_eq!(kind(key), expected);
    }

    #[test]
    fn usernames_compare_without_case() {
        assert_eq!(of_username("Alice_B"), of_username("alice_b"));
        assert_eq!(username(&of_username("Alice_B")), Some("alice_b"));
    }

    #[test]
    fn numbers_sort_before_usernames() {
        let mut keys = vec![of_username("aaaaa"), "+999".to_owned(), "+1".to_owned()];
        keys.sort();
        assert_eq!(keys, ["+1", "+999", "@aaaaa"]);
    }

    #[test]
    fn redacts_both_kinds() {
        assert_eq!(redact("+491701234567"), "+49…67");
        assert_eq!(redact("@alice_b"), "@a…_b");
    }
}
