//! Bytes → cards. A byte-level pre-pass makes real-world exports palatable to calcard, then
//! calcard parses each card on its own so that one bad card never costs its neighbours.
//!
//! The pre-pass:
//! - strips a UTF-8 BOM and transcodes UTF-16 (with or without BOM);
//! - splits lines on LF, CRLF, `\r\r\n` (iOS) or bare CR (classic Mac);
//! - splits the file at `BEGIN:VCARD` / `END:VCARD`, flattening nested 2.1 cards (AGENT) the
//!   way Android's importer does, and notices a file that ends inside a card;
//! - keeps only the properties a messenger contact needs (N, FN, ORG, TEL, …): a 5 MB inline
//!   PHOTO is skipped line by line instead of being base64-decoded;
//! - follows quoted-printable soft line breaks, so a continuation starting with `#` or `END`
//!   is not mistaken for a comment or the end of the card;
//! - drops `#` comment lines;
//! - decodes 8-bit values by their CHARSET parameter, falling back to windows-1252;
//! - rewrites the 2.1 bare `QUOTED-PRINTABLE` parameter as `ENCODING=QUOTED-PRINTABLE`.

use std::borrow::Cow;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use calcard::Entry;
use calcard::vcard::{
    VCard, VCardEntry, VCardParameterName, VCardParameterValue, VCardProperty, VCardType,
    VCardValue,
};

/// Properties whose values we use. Everything else is skipped by the pre-pass.
const KEPT_PROPERTIES: &[&str] = &[
    "VERSION",
    "UID",
    "N",
    "FN",
    "ORG",
    "NICKNAME",
    "TEL",
    "CATEGORIES",
    "KIND",
    "X-ADDRESSBOOKSERVER-KIND",
    "X-ABLABEL",
];

/// Errors that make a whole file unusable.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("no vCard in this file (no BEGIN:VCARD line)")]
    NoCards,
}

/// Why one card could not be used. The card's neighbours are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("calcard could not parse the card: {0}")]
    Unparsable(String),
    #[error("the parser crashed on this card; please report it with the card attached")]
    ParserPanic,
}

/// A card as far as the messenger is concerned: names, phones, categories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawCard {
    /// 1-based position of the card in its file (nested cards count in order of appearance).
    pub index: usize,
    /// 1-based line of the card's `BEGIN:VCARD`.
    pub line: usize,
    pub version: Option<String>,
    pub uid: Option<String>,
    pub name: Option<StructuredName>,
    pub formatted_name: Option<String>,
    pub organization: Option<String>,
    pub nickname: Option<String>,
    pub categories: Vec<String>,
    /// `KIND:group` (4.0) or `X-ADDRESSBOOKSERVER-KIND:group` (Apple): a list, not a person.
    pub is_group: bool,
    pub phones: Vec<RawPhone>,
}

/// The N property, components in vCard order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StructuredName {
    pub family: String,
    pub given: String,
    pub additional: String,
    pub prefix: String,
    pub suffix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawPhone {
    /// The TEL value as written (after unescaping), e.g. `+49 (0)30 1234-5`, `tel:+1-555-0100`.
    pub value: String,
    /// TYPE values, lower-cased: `cell`, `home`, `fax`, … (2.1 bare types included).
    pub types: Vec<String>,
    /// iCloud's `itemN.X-ABLabel` for this TEL, e.g. `_$!<Mobile>!$_` or `Boat`.
    pub label: Option<String>,
}

/// One card's outcome: parsed, or the reason it was not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardOutcome {
    pub index: usize,
    pub line: usize,
    pub result: Result<RawCard, CardError>,
}

/// A file that ends inside a card: probably still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete {
    /// Index the unfinished card would have had.
    pub card: usize,
    /// Line of its `BEGIN:VCARD`.
    pub line: usize,
}

/// Something odd about the file that did not stop any card from being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNotice {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFile {
    pub cards: Vec<CardOutcome>,
    pub incomplete: Option<Incomplete>,
    pub notices: Vec<FileNotice>,
}

impl ParsedFile {
    pub fn good_cards(&self) -> impl Iterator<Item = &RawCard> {
        self.cards.iter().filter_map(|c| c.result.as_ref().ok())
    }
}

/// Reads and parses one vCard file.
pub fn parse_path(path: &Path) -> Result<ParsedFile, FileError> {
    let file = std::fs::File::open(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_reader(file).map_err(|err| match err {
        FileError::Read { source, .. } => FileError::Read {
            path: path.to_owned(),
            source,
        },
        other => other,
    })
}

/// Reads everything from `reader` and parses it.
pub fn parse_reader(mut reader: impl Read) -> Result<ParsedFile, FileError> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Read {
            path: std::path::PathBuf::new(),
            source,
        })?;
    parse_bytes(&bytes)
}

/// Parses the contents of one file. Never panics.
pub fn parse_bytes(bytes: &[u8]) -> Result<ParsedFile, FileError> {
    let text = transcode_utf16(bytes);
    let bytes: &[u8] = text.as_deref().unwrap_or(bytes);
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);

    let mut splitter = CardSplitter::default();
    for (number, line) in split_lines(bytes).enumerate() {
        splitter.push_line(number + 1, line);
    }
    splitter.finish()
}

/// UTF-16 exports (Outlook, some Windows tools) become UTF-8; everything else is left alone.
fn transcode_utf16(bytes: &[u8]) -> Option<Vec<u8>> {
    let (encoding, body) = match bytes {
        [0xFF, 0xFE, rest @ ..] => (encoding_rs::UTF_16LE, rest),
        [0xFE, 0xFF, rest @ ..] => (encoding_rs::UTF_16BE, rest),
        // No BOM: "B\0E\0G\0" or "\0B\0E\0G".
        [first, 0, ..] if *first != 0 => (encoding_rs::UTF_16LE, bytes),
        [0, second, ..] if *second != 0 => (encoding_rs::UTF_16BE, bytes),
        _ => return None,
    };
    let (decoded, _) = encoding.decode_without_bom_handling(body);
    Some(decoded.into_owned().into_bytes())
}

/// Physical lines without their terminators. `\r\r\n` counts as one line end.
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let has_lf = bytes.contains(&b'\n');
    let separator = if has_lf { b'\n' } else { b'\r' };
    let mut lines = bytes.split(move |&b| b == separator);
    let mut pending_last_empty = bytes.last() == Some(&separator);
    std::iter::from_fn(move || {
        let line = lines.next()?;
        if lines.size_hint().1 == Some(0) && pending_last_empty && line.is_empty() {
            pending_last_empty = false;
            return None;
        }
        let mut line = line;
        while let [rest @ .., b'\r'] = line {
            line = rest;
        }
        Some(line)
    })
}

/// What the splitter knows about the property a physical line belongs to.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Current {
    /// Outside any property (between cards, or after a dropped line).
    #[default]
    None,
    /// A property we skip; its continuation lines are skipped too.
    Skipped { quoted_printable: bool },
    /// A property we keep, with the charset its 8-bit bytes are in.
    Kept {
        quoted_printable: bool,
        charset: Option<&'static encoding_rs::Encoding>,
    },
}

struct OpenCard {
    index: usize,
    line: usize,
    text: String,
}

#[derive(Default)]
struct CardSplitter {
    /// Cards being read; more than one while inside nested (2.1 AGENT) cards.
    open: Vec<OpenCard>,
    current: Current,
    previous_ended_with_soft_break: bool,
    next_index: usize,
    cards: Vec<CardOutcome>,
    notices: Vec<FileNotice>,
    stray_lines: usize,
    first_stray_line: Option<usize>,
}

impl CardSplitter {
    fn push_line(&mut self, number: usize, line: &[u8]) {
        // A quoted-printable value that wrongly ends in `=` right before END:VCARD must not
        // swallow the end of the card (that would make the file look half-written forever).
        let is_continuation = matches!(line.first(), Some(b' ' | b'\t'))
            || (self.previous_ended_with_soft_break && !is_end_vcard(line.trim_ascii()));
        if is_continuation {
            let quoted_printable = match self.current {
                Current::Kept {
                    quoted_printable,
                    charset,
                } => {
                    if let Some(card) = self.open.last_mut() {
                        card.text.push_str(&decode_line(line, charset));
                        card.text.push_str("\r\n");
                    }
                    quoted_printable
                }
                Current::Skipped { quoted_printable } => quoted_printable,
                Current::None => false,
            };
            self.previous_ended_with_soft_break = quoted_printable && line.ends_with(b"=");
            return;
        }
        self.previous_ended_with_soft_break = false;

        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            self.current = Current::None;
            return;
        }
        if is_begin_vcard(trimmed) {
            self.next_index += 1;
            self.open.push(OpenCard {
                index: self.next_index,
                line: number,
                text: String::from("BEGIN:VCARD\r\n"),
            });
            self.current = Current::None;
            return;
        }
        if is_end_vcard(trimmed) {
            match self.open.pop() {
                Some(mut card) => {
                    card.text.push_str("END:VCARD\r\n");
                    self.cards.push(parse_card(card));
                }
                None => self.notices.push(FileNotice {
                    line: number,
                    message: "END:VCARD without a BEGIN:VCARD; line ignored".into(),
                }),
            }
            self.current = Current::None;
            return;
        }
        let Some(card) = self.open.last_mut() else {
            self.stray_lines += 1;
            self.first_stray_line.get_or_insert(number);
            self.current = Current::None;
            return;
        };
        if trimmed.first() == Some(&b'#') {
            self.current = Current::None;
            return;
        }

        let header_end = property_header_end(line);
        let header = &line[..header_end];
        let quoted_printable = header_has_quoted_printable(header);
        self.previous_ended_with_soft_break = quoted_printable && line.ends_with(b"=");
        if !is_kept_property(header) {
            self.current = Current::Skipped { quoted_printable };
            return;
        }
        let charset = header_charset(header);
        self.current = Current::Kept {
            quoted_printable,
            charset,
        };
        let header_text = decode_line(header, None);
        if quoted_printable && !contains_ignore_ascii_case(header, b"ENCODING=") {
            card.text
                .push_str(&rewrite_bare_quoted_printable(&header_text));
        } else {
            card.text.push_str(&header_text);
        }
        card.text
            .push_str(&decode_line(&line[header_end..], charset));
        card.text.push_str("\r\n");
    }

    fn finish(mut self) -> Result<ParsedFile, FileError> {
        // The outermost unfinished card is the one the writer was in the middle of; nested
        // ones still open inside it are part of the same unfinished write.
        let incomplete = self.open.first().map(|card| Incomplete {
            card: card.index,
            line: card.line,
        });
        if self.next_index == 0 {
            return Err(FileError::NoCards);
        }
        if let Some(line) = self.first_stray_line {
            self.notices.push(FileNotice {
                line,
                message: format!(
                    "{} line(s) of text outside of any BEGIN:VCARD … END:VCARD ignored",
                    self.stray_lines
                ),
            });
            self.notices.sort_by_key(|n| n.line);
        }
        self.cards.sort_by_key(|c| c.index);
        Ok(ParsedFile {
            cards: self.cards,
            incomplete,
            notices: self.notices,
        })
    }
}

fn is_begin_vcard(line: &[u8]) -> bool {
    property_is(line, b"BEGIN", b"VCARD")
}

fn is_end_vcard(line: &[u8]) -> bool {
    property_is(line, b"END", b"VCARD")
}

fn property_is(line: &[u8], name: &[u8], value: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    line[..colon].trim_ascii().eq_ignore_ascii_case(name)
        && line[colon + 1..].trim_ascii().eq_ignore_ascii_case(value)
}

/// End of `group.NAME;PARAMS` — the first `:` outside a quoted parameter value.
fn property_header_end(line: &[u8]) -> usize {
    let mut in_quotes = false;
    for (i, &b) in line.iter().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b':' if !in_quotes => return i,
            _ => {}
        }
    }
    line.len()
}

fn property_name(header: &[u8]) -> &[u8] {
    let name_end = header
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(header.len());
    let name = &header[..name_end];
    let name = match name.iter().rposition(|&b| b == b'.') {
        Some(dot) => &name[dot + 1..],
        None => name,
    };
    name.trim_ascii()
}

fn is_kept_property(header: &[u8]) -> bool {
    let name = property_name(header);
    KEPT_PROPERTIES
        .iter()
        .any(|kept| name.eq_ignore_ascii_case(kept.as_bytes()))
}

fn params(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header.split(|&b| b == b';').skip(1).map(<[u8]>::trim_ascii)
}

fn header_has_quoted_printable(header: &[u8]) -> bool {
    params(header).any(|param| {
        let value = match param.iter().position(|&b| b == b'=') {
            Some(eq) if param[..eq].eq_ignore_ascii_case(b"ENCODING") => &param[eq + 1..],
            Some(_) => return false,
            None => param,
        };
        value.eq_ignore_ascii_case(b"QUOTED-PRINTABLE") || value.eq_ignore_ascii_case(b"Q")
    })
}

fn header_charset(header: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    params(header).find_map(|param| {
        let eq = param.iter().position(|&b| b == b'=')?;
        if !param[..eq].eq_ignore_ascii_case(b"CHARSET") {
            return None;
        }
        encoding_rs::Encoding::for_label(unquote(&param[eq + 1..]))
    })
}

fn unquote(value: &[u8]) -> &[u8] {
    let trimmed = value.trim_ascii();
    trimmed
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .unwrap_or(trimmed)
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// `TEL;CELL;QUOTED-PRINTABLE` → `TEL;CELL;ENCODING=QUOTED-PRINTABLE` (calcard wants the key).
fn rewrite_bare_quoted_printable(header: &str) -> String {
    header
        .split(';')
        .map(|part| {
            if part.trim().eq_ignore_ascii_case("QUOTED-PRINTABLE") {
                "ENCODING=QUOTED-PRINTABLE"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// UTF-8 passes through; other bytes are decoded by the property's CHARSET, else windows-1252
/// (what Outlook and old phones write when they do not say).
fn decode_line<'a>(
    bytes: &'a [u8],
    charset: Option<&'static encoding_rs::Encoding>,
) -> Cow<'a, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let encoding = charset
        .filter(|e| *e != encoding_rs::UTF_8)
        .unwrap_or(encoding_rs::WINDOWS_1252);
    let (decoded, _, _) = encoding.decode(bytes);
    decoded
}

fn parse_card(card: OpenCard) -> CardOutcome {
    let OpenCard { index, line, text } = card;
    // calcard forbids unsafe code but may still hit an index bug on hostile input; one card's
    // bad luck must not take the whole file (or the daemon) down with it.
    let parsed = catch_unwind(AssertUnwindSafe(|| VCard::parse(&text)));
    let result = match parsed {
        Ok(Ok(vcard)) => Ok(extract(vcard, index, line)),
        Ok(Err(entry)) => Err(CardError::Unparsable(describe_entry(&entry))),
        Err(_) => Err(CardError::ParserPanic),
    };
    CardOutcome {
        index,
        line,
        result,
    }
}

fn describe_entry(entry: &Entry) -> String {
    match entry {
        Entry::InvalidLine(line) => format!("invalid line {line:?}"),
        Entry::UnterminatedComponent(name) => format!("unterminated {name}"),
        Entry::Eof => "unexpected end of card".into(),
        other => format!("unexpected content ({other:?})"),
    }
}

fn extract(vcard: VCard, index: usize, line: usize) -> RawCard {
    let mut card = RawCard {
        index,
        line,
        ..RawCard::default()
    };
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut phone_groups: Vec<Option<String>> = Vec::new();
    for entry in vcard.entries {
        match &entry.name {
            VCardProperty::Version => card.version = first_text(&entry),
            VCardProperty::Uid => card.uid = card.uid.take().or_else(|| first_text(&entry)),
            VCardProperty::N if card.name.is_none() => card.name = Some(structured_name(&entry)),
            VCardProperty::Fn if card.formatted_name.is_none() => {
                card.formatted_name = joined_text(&entry, " ")
            }
            VCardProperty::Org if card.organization.is_none() => {
                card.organization = joined_text(&entry, ", ")
            }
            VCardProperty::Nickname if card.nickname.is_none() => {
                card.nickname = first_text(&entry)
            }
            VCardProperty::Categories => card.categories.extend(
                all_texts(&entry)
                    .flat_map(|t| {
                        t.split(',')
                            .map(|c| c.trim().to_owned())
                            .collect::<Vec<_>>()
                    })
                    .filter(|t| !t.is_empty()),
            ),
            VCardProperty::Kind => card.is_group |= says_group(&entry),
            VCardProperty::Tel => {
                if let Some(value) = joined_text(&entry, ",") {
                    card.phones.push(RawPhone {
                        value,
                        types: phone_types(&entry),
                        label: None,
                    });
                    phone_groups.push(entry.group.clone());
                }
            }
            VCardProperty::Other(name) if name.eq_ignore_ascii_case("X-ABLABEL") => {
                if let (Some(group), Some(label)) = (&entry.group, first_text(&entry)) {
                    labels.push((group.to_ascii_lowercase(), label));
                }
            }
            VCardProperty::Other(name) if name.eq_ignore_ascii_case("X-ADDRESSBOOKSERVER-KIND") => {
                card.is_group |= says_group(&entry)
            }
            _ => {}
        }
    }
    for (phone, group) in card.phones.iter_mut().zip(phone_groups) {
        if let Some(group) = group.map(|g| g.to_ascii_lowercase()) {
            phone.label = labels
                .iter()
                .find(|(g, _)| *g == group)
                .map(|(_, label)| label.clone());
        }
    }
    card
}

/// `KIND:group` (calcard parses it) or Apple's `X-ADDRESSBOOKSERVER-KIND:group` (text).
fn says_group(entry: &VCardEntry) -> bool {
    matches!(
        entry.values.first(),
        Some(VCardValue::Kind(calcard::vcard::VCardKind::Group))
    ) || first_text(entry).is_some_and(|t| t.eq_ignore_ascii_case("group"))
}

fn value_text(value: &VCardValue) -> Option<Cow<'_, str>> {
    match value {
        VCardValue::Text(text) => Some(Cow::Borrowed(text.as_str())),
        VCardValue::Component(parts) => Some(Cow::Owned(parts.join(","))),
        VCardValue::Integer(n) => Some(Cow::Owned(n.to_string())),
        VCardValue::Float(f) => Some(Cow::Owned(f.to_string())),
        VCardValue::Binary(data) => String::from_utf8(data.data.clone()).ok().map(Cow::Owned),
        _ => None,
    }
}

fn all_texts(entry: &VCardEntry) -> impl Iterator<Item = Cow<'_, str>> {
    entry.values.iter().filter_map(value_text)
}

fn first_text(entry: &VCardEntry) -> Option<String> {
    all_texts(entry)
        .map(|t| t.trim().to_owned())
        .find(|t| !t.is_empty())
}

fn joined_text(entry: &VCardEntry, separator: &str) -> Option<String> {
    let parts: Vec<String> = all_texts(entry)
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(separator))
}

fn structured_name(entry: &VCardEntry) -> StructuredName {
    let component = |i: usize| -> String {
        entry
            .values
            .get(i)
            .and_then(value_text)
            .map(|t| t.replace(',', " ").trim().to_owned())
            .unwrap_or_default()
    };
    StructuredName {
        family: component(0),
        given: component(1),
        additional: component(2),
        prefix: component(3),
        suffix: component(4),
    }
}

fn phone_types(entry: &VCardEntry) -> Vec<String> {
    let mut types = Vec::new();
    for param in &entry.params {
        let text = match (&param.name, &param.value) {
            (VCardParameterName::Type, VCardParameterValue::Type(t)) => type_name(t).to_owned(),
            (VCardParameterName::Type, VCardParameterValue::Text(t)) => t.to_ascii_lowercase(),
            // 2.1 bare types calcard does not know (`TEL;ISDN:`), and `TYPE=pref`.
            (VCardParameterName::Other(name), VCardParameterValue::Null) => {
                name.to_ascii_lowercase()
            }
            (VCardParameterName::Pref, _) => "pref".to_owned(),
            _ => continue,
        };
        for t in text.split(',') {
            let t = t.trim().to_owned();
            if !t.is_empty() && !types.contains(&t) {
                types.push(t);
            }
        }
    }
    types
}

fn type_name(t: &VCardType) -> &'static str {
    match t {
        VCardType::Work => "work",
        VCardType::Home => "home",
        VCardType::Text => "text",
        VCardType::Voice => "voice",
        VCardType::Fax => "fax",
        VCardType::Cell => "cell",
        VCardType::Video => "video",
        VCardType::Pager => "pager",
        VCardType::Textphone => "textphone",
        VCardType::MainNumber => "main-number",
        _ => "other",
    }
}
