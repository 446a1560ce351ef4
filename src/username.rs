//! Telegram usernames as address books write them (pure): which vCard values name one, and
//! whether it follows Telegram's rules.
//!
//! Exporters write a username as `@alice`, `alice`, `t.me/alice`, `https://t.me/alice`,
//! `alice.t.me`, `tg://resolve?domain=alice`, behind a scheme of their own (`telegram:alice`,
//! Apple's `x-apple:alice`): Nextcloud, DAVx5, Apple and Google each use one of these. A
//! Telegram link that names something else (an invite, a message, a bot's start parameter) is
//! no username.
//!
//! The rule is tdlib's `is_valid_username` (what a username can be): a letter first, then
//! ASCII letters, digits and `_`, no `__`, no `_` at the end, at most 32 characters; and at
//! least 4 — 5 is the minimum for a username one sets in the app, but collectible usernames
//! bought on Fragment have 4, and those resolve like any other.

/// Shortest username that exists (collectible usernames; 5 for ones set in the app).
pub const MIN_LENGTH: usize = 4;
/// Longest username.
pub const MAX_LENGTH: usize = 32;

/// Why a value that points at Telegram names no username we can use. Not an error of the
/// card: its phones still sync; `inspect` shows the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameProblem {
    #[error("empty")]
    Empty,
    #[error("{0} characters; a Telegram username has {MIN_LENGTH} to {MAX_LENGTH}")]
    Length(usize),
    #[error("starts with {0:?}; a Telegram username starts with a letter")]
    Start(char),
    #[error("contains {0:?}; a Telegram username has only letters a-z, digits and _")]
    Character(char),
    #[error("ends with _, which a Telegram username cannot")]
    TrailingUnderscore,
    #[error("contains __, which a Telegram username cannot")]
    DoubleUnderscore,
    #[error("a phone number, not a username (numbers are read from TEL)")]
    PhoneNumber,
    #[error("an invite link, not a username")]
    InviteLink,
    #[error("a link to {0}, not to a user")]
    NotAUserLink(&'static str),
    #[error("a bot link with a start parameter (?{0}=…), not a person's username")]
    BotLink(String),
}

/// Checks `name` (without `@`) against Telegram's rules; case does not matter.
pub fn validate(name: &str) -> Result<(), UsernameProblem> {
    let mut chars = name.chars();
    let first = chars.next().ok_or(UsernameProblem::Empty)?;
    if looks_like_phone(name) {
        return Err(UsernameProblem::PhoneNumber);
    }
    if !first.is_ascii_alphabetic() {
        return Err(UsernameProblem::Start(first));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && *c != '_')
    {
        return Err(UsernameProblem::Character(bad));
    }
    // Only ASCII from here on: the length in bytes is the length in characters.
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&name.len()) {
        return Err(UsernameProblem::Length(name.len()));
    }
    if name.contains("__") {
        return Err(UsernameProblem::DoubleUnderscore);
    }
    if name.ends_with('_') {
        return Err(UsernameProblem::TrailingUnderscore);
    }
    Ok(())
}

/// The same username, as Telegram compares them (case-insensitively).
pub fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The username an IMPP value names. `telegram_typed`: the property says it is Telegram's
/// (`TYPE=TELEGRAM`, `X-SERVICE-TYPE=Telegram`, `SERVICE-TYPE=Telegram`), so any handle
/// counts; otherwise only the `telegram:` scheme or a Telegram link does. `None`: the value
/// is not about Telegram (another messenger) and is not reported.
pub fn from_impp(value: &str, telegram_typed: bool) -> Option<Result<String, UsernameProblem>> {
    let value = value.trim();
    if let Some(rest) = strip_prefix_ignore_case(value, "telegram:") {
        return Some(from_handle(rest.trim_start_matches('/')));
    }
    if telegram_typed {
        // Apple and Google put their own scheme in front of the handle.
        let handle = strip_prefix_ignore_case(value, "x-apple:").unwrap_or(value);
        return Some(from_handle(handle));
    }
    telegram_link(value)
}

/// The username a URL names, if it is a Telegram link (`https://t.me/alice`,
/// `alice.t.me`, `tg://resolve?domain=alice`, …); `None` for a link elsewhere.
pub fn from_url(value: &str) -> Option<Result<String, UsernameProblem>> {
    telegram_link(value.trim())
}

/// A handle in any of the forms exporters write: `@alice`, `alice`, or a Telegram link.
pub fn from_handle(value: &str) -> Result<String, UsernameProblem> {
    let value = value.trim();
    if let Some(link) = telegram_link(value) {
        return link;
    }
    let name = value.strip_prefix('@').unwrap_or(value);
    validate(name).map(|()| name.to_owned())
}

/// Telegram's link hosts (t.me and its older aliases).
const LINK_HOSTS: &[&str] = &["t.me", "telegram.me", "telegram.dog"];

/// The username a Telegram link names; `None` when `value` is no Telegram link.
fn telegram_link(value: &str) -> Option<Result<String, UsernameProblem>> {
    if let Some(rest) = strip_prefix_ignore_case(value, "tg:") {
        return Some(tg_link(rest.trim_start_matches('/')));
    }
    let rest = strip_prefix_ignore_case(value, "https://")
        .or_else(|| strip_prefix_ignore_case(value, "http://"))
        .unwrap_or(value);
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let written_host = &rest[..host_end];
    let written_host = strip_prefix_ignore_case(written_host, "www.").unwrap_or(written_host);
    let host = written_host.to_ascii_lowercase();
    let after_host = &rest[host_end..];
    if LINK_HOSTS.contains(&host.as_str()) {
        return Some(link_path(after_host));
    }
    // `alice.t.me`: the username as a subdomain, nothing after it.
    let subdomain = LINK_HOSTS
        .iter()
        .find_map(|h| host.strip_suffix(h)?.strip_suffix('.'))?;
    if subdomain.contains('.') {
        return None;
    }
    // As written: the case of a username is kept.
    let name = &written_host[..subdomain.len()];
    Some(match after_host.trim_end_matches('/') {
        "" => validate(name).map(|()| name.to_owned()),
        _ => Err(UsernameProblem::NotAUserLink(
            "a page under the user's link",
        )),
    })
}

/// `/alice`, `/alice/`, `/alice?…` after a t.me host.
fn link_path(after_host: &str) -> Result<String, UsernameProblem> {
    let (path, query) = split_query(after_host);
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let first = segments.next().ok_or(UsernameProblem::NotAUserLink(
        "Telegram's home page (no username in it)",
    ))?;
    if first.starts_with('+') || first.eq_ignore_ascii_case("joinchat") {
        return Err(UsernameProblem::InviteLink);
    }
    if let Some(what) = reserved_path(first) {
        return Err(UsernameProblem::NotAUserLink(what));
    }
    if segments.next().is_some() {
        return Err(UsernameProblem::NotAUserLink("a message or post"));
    }
    if let Some(parameter) = bot_parameter(query) {
        return Err(UsernameProblem::BotLink(parameter));
    }
    validate(first).map(|()| first.to_owned())
}

/// `tg://resolve?domain=alice` (after `tg:` and the slashes).
fn tg_link(rest: &str) -> Result<String, UsernameProblem> {
    let (path, query) = split_query(rest);
    if path.eq_ignore_ascii_case("join") {
        return Err(UsernameProblem::InviteLink);
    }
    if !path.trim_end_matches('/').eq_ignore_ascii_case("resolve") {
        return Err(UsernameProblem::NotAUserLink("something other than a user"));
    }
    let mut domain = None;
    for (key, value) in query_pairs(query) {
        match key {
            "domain" => domain = Some(value),
            "phone" => return Err(UsernameProblem::PhoneNumber),
            "post" | "thread" | "comment" => {
                return Err(UsernameProblem::NotAUserLink("a message or post"));
            }
            _ => {}
        }
    }
    if let Some(parameter) = bot_parameter(query) {
        return Err(UsernameProblem::BotLink(parameter));
    }
    let name = domain.ok_or(UsernameProblem::Empty)?;
    validate(name).map(|()| name.to_owned())
}

/// t.me paths that are Telegram's own, not usernames (tdlib's link parser), and what they
/// lead to.
fn reserved_path(segment: &str) -> Option<&'static str> {
    const RESERVED: &[(&str, &str)] = &[
        ("c", "a message in a private group or channel"),
        ("s", "a channel's preview"),
        ("addstickers", "a sticker set"),
        ("addemoji", "an emoji set"),
        ("addtheme", "a theme"),
        ("bg", "a chat background"),
        ("addlist", "a chat folder"),
        ("setlanguage", "a language pack"),
        ("share", "a share link"),
        ("msg", "a share link"),
        ("proxy", "a proxy"),
        ("socks", "a proxy"),
        ("login", "a login code"),
        ("confirmphone", "a phone confirmation"),
        ("invoice", "an invoice"),
        ("$", "an invoice"),
        ("boost", "a boost page"),
        ("giftcode", "a gift code"),
        ("m", "a business chat link"),
        ("contact", "a contact token"),
        ("nft", "a collectible"),
        ("iv", "an Instant View page"),
    ];
    RESERVED
        .iter()
        .find(|(path, _)| path.eq_ignore_ascii_case(segment))
        .map(|(_, what)| *what)
}

/// The start parameter of a bot link, if the query has one.
fn bot_parameter(query: &str) -> Option<String> {
    const BOT: &[&str] = &[
        "start",
        "startgroup",
        "startchannel",
        "startapp",
        "startattach",
        "game",
    ];
    query_pairs(query)
        .map(|(key, _)| key)
        .find(|key| BOT.contains(key))
        .map(str::to_owned)
}

fn split_query(text: &str) -> (&str, &str) {
    let text = text.split('#').next().unwrap_or_default();
    match text.split_once('?') {
        Some((path, query)) => (path, query),
        None => (text, ""),
    }
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `+49 170 1234567`, `0170/1234567`: a number where a handle was expected.
fn looks_like_phone(text: &str) -> bool {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    digits >= 5
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || " +-()/.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case::plain("alice")]
    #[case::mixed_case_kept("Alice_Smith")]
    #[case::digits_inside("a1b2c3")]
    #[case::collectible_four("jack")]
    #[case::longest("a234567890123456789012345678901b")]
    #[case::single_underscores("a_b_c_d")]
    fn valid(#[case] name: &str) {
        assert_eq!(validate(name), Ok(()));
    }

    #[rstest]
    #[case::empty("", UsernameProblem::Empty)]
    #[case::three("abc", UsernameProblem::Length(3))]
    #[case::thirty_three("a2345678901234567890123456789012b", UsernameProblem::Length(33))]
    #[case::digit_first("1alice", UsernameProblem::Start('1'))]
    #[case::underscore_first("_alice", UsernameProblem::Start('_'))]
    #[case::at_inside("ali@ce", UsernameProblem::Character('@'))]
    #[case::dot("alice.b", UsernameProblem::Character('.'))]
    #[case::hyphen("alice-b", UsernameProblem::Character('-'))]
    #[case::non_ascii_letter("alicé", UsernameProblem::Character('é'))]
    #[case::space("ali ce", UsernameProblem::Character(' '))]
    #[case::trailing_underscore("alice_", UsernameProblem::TrailingUnderscore)]
    #[case::double_underscore("ali__ce", UsernameProblem::DoubleUnderscore)]
    #[case::phone("+49 170 1234567", UsernameProblem::PhoneNumber)]
    fn invalid(#[case] name: &str, #[case] problem: UsernameProblem) {
        assert_eq!(validate(name), Err(problem));
    }

    #[rstest]
    #[case::at("@alice", "alice")]
    #[case::bare("Alice_B", "Alice_B")]
    #[case::padded("  @alice ", "alice")]
    #[case::t_me("t.me/alice", "alice")]
    #[case::https("https://t.me/Alice", "Alice")]
    #[case::http("http://t.me/alice/", "alice")]
    #[case::www("https://www.t.me/alice", "alice")]
    #[case::telegram_me("https://telegram.me/alice", "alice")]
    #[case::telegram_dog("telegram.dog/alice", "alice")]
    #[case::upper_host("HTTPS://T.ME/alice", "alice")]
    #[case::subdomain("alice.t.me", "alice")]
    #[case::subdomain_https("https://Alice.t.me/", "Alice")]
    #[case::tg_resolve("tg://resolve?domain=alice", "alice")]
    #[case::tg_resolve_more("tg://resolve?domain=alice&profile", "alice")]
    #[case::harmless_query("https://t.me/alice?text=hi", "alice")]
    #[case::fragment("https://t.me/alice#about", "alice")]
    fn handles(#[case] value: &str, #[case] username: &str) {
        assert_eq!(from_handle(value), Ok(username.to_owned()));
    }

    #[rstest]
    #[case::invite_plus("https://t.me/+AbCdEf123", UsernameProblem::InviteLink)]
    #[case::joinchat("t.me/joinchat/AbCdEf", UsernameProblem::InviteLink)]
    #[case::tg_join("tg://join?invite=AbCdEf", UsernameProblem::InviteLink)]
    #[case::private_post(
        "https://t.me/c/1234567/89",
        UsernameProblem::NotAUserLink("a message in a private group or channel")
    )]
    #[case::preview(
        "https://t.me/s/durov",
        UsernameProblem::NotAUserLink("a channel's preview")
    )]
    #[case::stickers(
        "https://t.me/addstickers/Animals",
        UsernameProblem::NotAUserLink("a sticker set")
    )]
    #[case::share(
        "https://t.me/share/url?url=x",
        UsernameProblem::NotAUserLink("a share link")
    )]
    #[case::post(
        "https://t.me/durov/123",
        UsernameProblem::NotAUserLink("a message or post")
    )]
    #[case::home(
        "https://t.me/",
        UsernameProblem::NotAUserLink("Telegram's home page (no username in it)")
    )]
    #[case::bot_start("https://t.me/examplebot?start=abc", UsernameProblem::BotLink("start".into()))]
    #[case::bot_startapp("t.me/examplebot?startapp", UsernameProblem::BotLink("startapp".into()))]
    #[case::tg_bot_start("tg://resolve?domain=examplebot&start=abc", UsernameProblem::BotLink("start".into()))]
    #[case::tg_post(
        "tg://resolve?domain=durov&post=5",
        UsernameProblem::NotAUserLink("a message or post")
    )]
    #[case::tg_phone("tg://resolve?phone=491701234567", UsernameProblem::PhoneNumber)]
    #[case::tg_other(
        "tg://settings",
        UsernameProblem::NotAUserLink("something other than a user")
    )]
    #[case::subdomain_path(
        "https://alice.t.me/123",
        UsernameProblem::NotAUserLink("a page under the user's link")
    )]
    #[case::invalid_in_link("https://t.me/ab", UsernameProblem::Length(2))]
    #[case::at_alone("@", UsernameProblem::Empty)]
    fn not_usernames(#[case] value: &str, #[case] problem: UsernameProblem) {
        assert_eq!(from_handle(value), Err(problem));
    }

    #[rstest]
    #[case::nextcloud_at("@alice", true, Some(Ok("alice")))]
    #[case::nextcloud_subdomain("alice.t.me", true, Some(Ok("alice")))]
    #[case::davx5("telegram:alice", false, Some(Ok("alice")))]
    #[case::davx5_upper_scheme("Telegram:@alice", false, Some(Ok("alice")))]
    #[case::davx5_slashes("telegram://alice", false, Some(Ok("alice")))]
    #[case::apple("x-apple:alice", true, Some(Ok("alice")))]
    #[case::apple_link("x-apple:https://t.me/alice", true, Some(Ok("alice")))]
    #[case::untyped_link("https://t.me/alice", false, Some(Ok("alice")))]
    #[case::other_service("xmpp:alice@example.org", false, None)]
    #[case::apple_other_service("x-apple:alice", false, None)]
    #[case::typed_bad("telegram:1alice", false, Some(Err(UsernameProblem::Start('1'))))]
    fn impp(
        #[case] value: &str,
        #[case] typed: bool,
        #[case] expected: Option<Result<&str, UsernameProblem>>,
    ) {
        assert_eq!(
            from_impp(value, typed),
            expected.map(|r| r.map(str::to_owned))
        );
    }

    #[rstest]
    #[case::t_me("https://t.me/alice", Some(Ok("alice")))]
    #[case::elsewhere("https://example.org/alice", None)]
    #[case::lookalike("https://not-t.me/alice", None)]
    #[case::lookalike_suffix("https://t.me.example.org/alice", None)]
    #[case::deep_subdomain("https://a.b.t.me/", None)]
    #[case::plain_word("alice", None)]
    #[case::invite("https://t.me/+abc", Some(Err(UsernameProblem::InviteLink)))]
    fn url(#[case] value: &str, #[case] expected: Option<Result<&str, UsernameProblem>>) {
        assert_eq!(from_url(value), expected.map(|r| r.map(str::to_owned)));
    }

    #[test]
    fn same_ignores_case() {
        assert!(same("Alice_B", "alice_b"));
        assert!(!same("alice", "alice_b"));
    }

    /// The rule, written the other way round: a letter, then groups of letters/digits that
    /// may each be preceded by one `_`.
    fn by_grammar(name: &str) -> bool {
        let bytes = name.as_bytes();
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&bytes.len()) || !bytes[0].is_ascii_alphabetic() {
            return false;
        }
        let mut previous = bytes[0];
        for &b in &bytes[1..] {
            let ok = b.is_ascii_alphanumeric() || (b == b'_' && previous != b'_');
            if !ok {
                return false;
            }
            previous = b;
        }
        previous != b'_'
    }

    proptest! {
        /// validate agrees with the grammar on strings near the edge of the rules.
        #[test]
        fn validate_agrees_with_the_grammar(name in "[a-zA-Z0-9_@.é-]{0,34}") {
            prop_assert_eq!(validate(&name).is_ok(), by_grammar(&name));
        }

        /// Every valid username reads back from every form an exporter writes it in.
        #[test]
        fn every_form_gives_the_username_back(
            name in "[a-zA-Z](_?[a-zA-Z0-9]){3,15}",
        ) {
            for form in [
                name.clone(),
                format!("@{name}"),
                format!("t.me/{name}"),
                format!("https://t.me/{name}/"),
                format!("{name}.t.me"),
                format!("tg://resolve?domain={name}"),
            ] {
                prop_assert_eq!(from_handle(&form), Ok(name.clone()), "{}", form);
            }
        }
    }
}
