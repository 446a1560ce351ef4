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
//! - unfolds lines that start with white space before anything is decoded (vobject's order:
//!   a quoted-printable escape may be folded in the middle, `Jos=` + ` C3=A9`);
//! - drops `#` comment lines;
//! - decodes 8-bit values by their CHARSET parameter, falling back to windows-1252;
//! - rewrites the 2.1 bare `QUOTED-PRINTABLE` parameter as `ENCODING=QUOTED-PRINTABLE`.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};
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
    // Telegram usernames (see `username`).
    "IMPP",
    "URL",
];

/// The most a card may keep of what contactsyncd uses (names, numbers, usernames,
/// categories: the properties in `KEPT_PROPERTIES`, as written). 1 MiB, the size CardDAV
/// servers cap a card at (Radicale's and Nextcloud's defaults are larger; iCloud's is 256 KiB
/// for the whole card). A card over it is refused alone; what is dropped (a PHOTO, NOTEs)
/// does not count and is never held in memory.
pub const MAX_CARD_KEPT_BYTES: usize = 1 << 20;

/// The most cards open at once (a `BEGIN:VCARD` read, its `END:VCARD` not yet): vCard 2.1
/// nests a card in an AGENT property, never more than a level or two deep. Deeper, the open
/// cards lack their END and are refused, so that a file of `BEGIN:VCARD` lines costs a small
/// constant, not a card each.
pub const MAX_OPEN_CARDS: usize = 4;

/// Unreadable lines listed per card; more are counted.
const MAX_UNREADABLE_LINES_LISTED: usize = 10;

/// A line read from a stream is kept up to this length; the rest of a longer line is read
/// past. Longer than a kept card may be, so that a kept property on such a line still makes
/// its card too large; a dropped property's line (a PHOTO on one line) costs no more.
const MAX_LINE_KEPT_BYTES: usize = MAX_CARD_KEPT_BYTES + 1;

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
    #[error("the parser thread crashed; please report this with the file attached")]
    ParserThread,
}

/// Why one card could not be used. The card's neighbours are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("calcard could not parse the card: {0}")]
    Unparsable(String),
    #[error("the parser crashed on this card; please report it with the card attached")]
    ParserPanic,
    /// A card with no `END:VCARD` before the next card's `BEGIN:VCARD`: a broken card, not
    /// a half-written file. Skipped; the cards after it are read as usual.
    #[error(
        "no END:VCARD: the next BEGIN:VCARD (line {next_begin}) starts before this card ends; the card is skipped (add its END:VCARD line to use it)"
    )]
    Unterminated {
        next_begin: usize,
        /// The card's FN or N as far as it was read, to tell which card lacks its END.
        name: Option<String>,
    },
    /// The card keeps more than [`MAX_CARD_KEPT_BYTES`]: refused, its neighbours are read.
    #[error(
        "the card is too large: {kept_bytes} bytes of names, numbers, usernames and categories, over the limit of {} bytes (MAX_CARD_KEPT_BYTES); the card is refused (a PHOTO or NOTE does not count: the card repeats a property?)",
        MAX_CARD_KEPT_BYTES
    )]
    TooLarge {
        kept_bytes: usize,
        name: Option<String>,
    },
}

impl CardError {
    /// The name of a card refused before it was parsed (FN, else N, as written).
    pub fn card_name(&self) -> Option<&str> {
        match self {
            CardError::Unterminated { name, .. } | CardError::TooLarge { name, .. } => {
                name.as_deref()
            }
            CardError::Unparsable(_) | CardError::ParserPanic => None,
        }
    }
}

/// A line of a card that could not be read as a property: skipped, the rest of the card is
/// used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreadableLine {
    /// 1-based line in the file.
    pub line: usize,
    pub reason: UnreadableReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnreadableReason {
    #[error("no colon: a property is NAME:value (or NAME;PARAMS:value)")]
    NoColon,
    #[error("a quoted parameter value is not closed (no second \")")]
    UnclosedQuote,
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
    /// The property that says so, as the user would look for it.
    pub group: Option<&'static str>,
    pub phones: Vec<RawPhone>,
    /// Telegram usernames the card names (IMPP, URL t.me/…), valid by Telegram's rules,
    /// without the `@`, as written; one per username compared case-insensitively.
    pub telegram_usernames: Vec<String>,
    /// Values that point at Telegram but name no usable username, with the reason. Not an
    /// error of the card (its phones still sync); `inspect` shows them.
    pub ignored_telegram_usernames: Vec<IgnoredUsername>,
    /// Lines that are no property (the first `MAX_UNREADABLE_LINES_LISTED`): skipped.
    pub unreadable_lines: Vec<UnreadableLine>,
    /// How many unreadable lines the card had in all.
    pub unreadable_line_count: usize,
}

/// A Telegram IMPP or t.me URL that names no usable username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredUsername {
    /// The property's value as written, e.g. `https://t.me/+AbCd` or `telegram:1alice`.
    pub value: String,
    pub problem: crate::username::UsernameProblem,
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
    fn assemble(cards: Vec<CardOutcome>, summary: FileSummary) -> Self {
        Self {
            cards,
            incomplete: summary.incomplete,
            notices: summary.notices,
        }
    }

    pub fn good_cards(&self) -> impl Iterator<Item = &RawCard> {
        self.cards.iter().filter_map(|c| c.result.as_ref().ok())
    }
}

/// What a file held besides its cards, when the cards were handed out one by one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub cards: usize,
    pub incomplete: Option<Incomplete>,
    pub notices: Vec<FileNotice>,
}

/// Reads and parses one vCard file.
pub fn parse_path(path: &Path) -> Result<ParsedFile, FileError> {
    let mut cards = Vec::new();
    let summary = parse_path_with(path, |card| cards.push(card))?;
    Ok(ParsedFile::assemble(cards, summary))
}

/// Files at least this large are parsed on a second thread while the caller consumes the
/// cards: a big export then costs about max(parse, consume) instead of their sum.
const PIPELINE_MIN_BYTES: u64 = 1 << 20;
const PIPELINE_BATCH: usize = 256;

/// Like [`parse_path`], handing each card to `on_card` as soon as it is complete, so a
/// 100,000-card export never sits in memory whole.
pub fn parse_path_with(
    path: &Path,
    mut on_card: impl FnMut(CardOutcome),
) -> Result<FileSummary, FileError> {
    let with_path = |err: FileError| match err {
        FileError::Read { source, .. } => FileError::Read {
            path: path.to_owned(),
            source,
        },
        other => other,
    };
    let file = crate::regular_file::open(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size < PIPELINE_MIN_BYTES {
        return parse_reader_with(file, on_card).map_err(with_path);
    }
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<CardOutcome>>(8);
        let parser = scope.spawn(move || {
            let mut batch = Vec::with_capacity(PIPELINE_BATCH);
            let summary = parse_reader_with(file, |card| {
                batch.push(card);
                if batch.len() == PIPELINE_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(PIPELINE_BATCH));
                    // The receiver lives until every batch is consumed.
                    let _ = sender.send(full);
                }
            });
            if !batch.is_empty() {
                let _ = sender.send(batch);
            }
            summary
        });
        for batch in receiver {
            batch.into_iter().for_each(&mut on_card);
        }
        parser
            .join()
            .unwrap_or(Err(FileError::ParserThread))
            .map_err(with_path)
    })
}

/// Reads everything from `reader` and parses it.
pub fn parse_reader(reader: impl Read) -> Result<ParsedFile, FileError> {
    let mut cards = Vec::new();
    let summary = parse_reader_with(reader, |card| cards.push(card))?;
    Ok(ParsedFile::assemble(cards, summary))
}

/// Parses the contents of one file. Never panics.
pub fn parse_bytes(bytes: &[u8]) -> Result<ParsedFile, FileError> {
    let mut cards = Vec::new();
    let mut on_card = |card| cards.push(card);
    let mut splitter = CardSplitter::default();
    let summary = if looks_like_utf16(bytes) {
        for line in transcode_utf16(bytes).split(|&b| b == b'\n') {
            splitter.push_physical_line(line, &mut on_card);
        }
        splitter.finish(&mut on_card)?
    } else {
        // Lines straight from the buffer: no copy through a reader.
        let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        if !body.is_empty() {
            for line in body.split(|&b| b == b'\n') {
                splitter.push_physical_line(line, &mut on_card);
            }
        }
        splitter.finish(&mut on_card)?
    };
    Ok(ParsedFile::assemble(cards, summary))
}

/// Streams `reader` line by line through the pre-pass; cards reach `on_card` in file order.
pub fn parse_reader_with(
    reader: impl Read,
    mut on_card: impl FnMut(CardOutcome),
) -> Result<FileSummary, FileError> {
    let read_error = |source| FileError::Read {
        path: std::path::PathBuf::new(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let head = reader.fill_buf().map_err(read_error)?;
    let mut splitter = CardSplitter::default();
    if looks_like_utf16(head) {
        // Rare (Outlook, some Windows tools) and small: transcode the whole file.
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map_err(read_error)?;
        let text = transcode_utf16(&bytes);
        for line in text.split(|&b| b == b'\n') {
            splitter.push_physical_line(line, &mut on_card);
        }
        return splitter.finish(&mut on_card);
    }
    if head.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
    }
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let read =
            read_line_capped(&mut reader, &mut line, MAX_LINE_KEPT_BYTES).map_err(read_error)?;
        if read == 0 {
            break;
        }
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        splitter.push_physical_line(content, &mut on_card);
    }
    splitter.finish(&mut on_card)
}

/// Reads one line (up to and with its LF) into `line`, keeping at most `cap` bytes of it:
/// the rest of a longer line is read past, never buffered. Returns the bytes read, 0 at the
/// end of the input.
fn read_line_capped(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(read);
        }
        let (chunk, line_ends) = match available.iter().position(|&b| b == b'\n') {
            Some(lf) => (&available[..=lf], true),
            None => (available, false),
        };
        let room = cap.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let taken = chunk.len();
        reader.consume(taken);
        read += taken;
        if line_ends {
            return Ok(read);
        }
    }
}

fn looks_like_utf16(head: &[u8]) -> bool {
    matches!(
        head,
        [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..] | [_, 0, ..] | [0, _, ..]
    ) && !matches!(head, [0, 0, ..])
}

/// UTF-16 (LE or BE, with or without BOM) → UTF-8.
fn transcode_utf16(bytes: &[u8]) -> Vec<u8> {
    let (encoding, body) = match bytes {
        [0xFF, 0xFE, rest @ ..] => (encoding_rs::UTF_16LE, rest),
        [0xFE, 0xFF, rest @ ..] => (encoding_rs::UTF_16BE, rest),
        // No BOM: "B\0E\0G\0" is little-endian, "\0B\0E\0G" big-endian.
        [_, 0, ..] => (encoding_rs::UTF_16LE, bytes),
        _ => (encoding_rs::UTF_16BE, bytes),
    };
    let (decoded, _) = encoding.decode_without_bom_handling(body);
    decoded.into_owned().into_bytes()
}

/// What the splitter knows about the property a physical line belongs to.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Current {
    /// Outside any property (between cards, or after a dropped line).
    #[default]
    None,
    /// A property we skip; its continuation lines are skipped too. `base64`: a 2.1 writer
    /// may continue such a value on lines without leading white space (until a blank line).
    Skipped {
        quoted_printable: bool,
        base64: bool,
    },
    /// A property we keep (its bytes are in `CardSplitter::pending`).
    Kept { quoted_printable: bool },
}

struct OpenCard {
    index: usize,
    line: usize,
    text: String,
    /// VERSION:3.0 or 4.0 seen: such a card never holds a nested card (3.0's AGENT value is
    /// escaped text, 4.0 has no AGENT), so a BEGIN:VCARD inside it means it lacks its END.
    nesting_impossible: bool,
    /// Line of the first BEGIN:VCARD inside this card (a nested 2.1 card, or the next card
    /// of a file where this one lacks its END: which of the two is decided at the end).
    nested_begin: Option<usize>,
    /// Property lines read so far, kept or dropped: a card without any that meets another
    /// BEGIN:VCARD was a stray BEGIN line, not a card.
    property_lines: usize,
    /// Bytes of the kept properties as written, counted on once over the cap.
    kept_bytes: usize,
    /// Over [`MAX_CARD_KEPT_BYTES`]: `text` is let go, the card will be refused.
    too_large: bool,
    /// The card's name from `text`, taken when `text` is let go.
    name_when_too_large: Option<String>,
    unreadable_lines: Vec<UnreadableLine>,
    unreadable_line_count: usize,
}

impl OpenCard {
    fn new(index: usize, line: usize) -> Self {
        Self {
            index,
            line,
            nesting_impossible: false,
            nested_begin: None,
            property_lines: 0,
            kept_bytes: 0,
            too_large: false,
            name_when_too_large: None,
            unreadable_lines: Vec::new(),
            unreadable_line_count: 0,
            text: {
                // Room for a typical card's kept properties: no regrowth per line.
                let mut text = String::with_capacity(512);
                text.push_str("BEGIN:VCARD\r\n");
                text
            },
        }
    }

    /// The card's name as read so far (FN, else N), for a card refused before parsing.
    fn name(&self) -> Option<String> {
        if self.too_large {
            return self.name_when_too_large.clone();
        }
        name_in(&self.text)
    }

    fn unreadable(&mut self, line: usize, reason: UnreadableReason) {
        self.unreadable_line_count += 1;
        if self.unreadable_lines.len() < MAX_UNREADABLE_LINES_LISTED {
            self.unreadable_lines.push(UnreadableLine { line, reason });
        }
    }
}

/// FN's value, else N's parts, from a card's pre-passed text; cut to a few dozen characters.
fn name_in(text: &str) -> Option<String> {
    let value_of = |wanted: &str| {
        text.lines().find_map(|line| {
            let header_end = line.find(':')?;
            let name = property_name(&line.as_bytes()[..header_end]);
            name.eq_ignore_ascii_case(wanted.as_bytes())
                .then(|| line[header_end + 1..].trim())
        })
    };
    let name = match value_of("FN").filter(|v| !v.is_empty()) {
        Some(formatted) => formatted.to_owned(),
        None => value_of("N")?
            .split(';')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    };
    let name: String = name.chars().take(64).collect();
    (!name.is_empty()).then_some(name)
}

/// The kept property being read: its lines are unfolded here, raw, and decoded once the
/// property is complete, so that a fold inside a UTF-8 character (RFC 6350 §3.2) or a
/// quoted-printable escape costs nothing.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Where `NAME;PARAMS` ends in `bytes` (at the `:`).
    header_end: usize,
    charset: Option<&'static encoding_rs::Encoding>,
    /// 2.1's bare `QUOTED-PRINTABLE` parameter, to be written `ENCODING=QUOTED-PRINTABLE`.
    rewrite_quoted_printable: bool,
}

#[derive(Default)]
struct CardSplitter {
    /// Cards being read; more than one while inside nested (2.1 AGENT) cards.
    open: Vec<OpenCard>,
    current: Current,
    pending: Pending,
    previous_ended_with_soft_break: bool,
    line_number: usize,
    next_index: usize,
    /// Finished cards held back while an enclosing card is still open, so that cards are
    /// handed out in file order even when nested cards finish before their parent.
    finished: Vec<CardOutcome>,
    /// Every finished card comes before every open one (the open ones were refused or
    /// closed): `finished` may be handed out although a card is open.
    finished_before_open: bool,
    emitted: usize,
    notices: Vec<FileNotice>,
    stray_lines: usize,
    first_stray_line: Option<usize>,
    /// BEGIN:VCARD lines with no property before the next BEGIN:VCARD: not cards.
    empty_begins: usize,
    first_empty_begin: Option<usize>,
    /// The last BEGIN/END line was an END:VCARD, and no property followed it. A file that
    /// ends so with cards still open ends *between* cards: the open ones lack their END.
    clean_after_end: bool,
}

impl CardSplitter {
    /// A line as read up to LF. `\r\r\n` (iOS) ends in CRs that are dropped; a CR inside
    /// the line is a line end too (classic Mac files have nothing else).
    fn push_physical_line(&mut self, line: &[u8], on_card: &mut impl FnMut(CardOutcome)) {
        let mut line = line;
        while let [rest @ .., b'\r'] = line {
            line = rest;
        }
        for part in line.split(|&b| b == b'\r') {
            self.line_number += 1;
            self.push_line(self.line_number, part);
            if (self.open.is_empty() || self.finished_before_open) && !self.finished.is_empty() {
                self.finished.sort_by_key(|c| c.index);
                for card in self.finished.drain(..) {
                    self.emitted += 1;
                    on_card(card);
                }
            }
            self.finished_before_open = false;
        }
    }

    /// Adds raw bytes of the kept property being read, counting them against the card's cap.
    fn keep(&mut self, bytes: &[u8]) {
        let Some(card) = self.open.last_mut() else {
            return;
        };
        card.kept_bytes = card.kept_bytes.saturating_add(bytes.len());
        if card.kept_bytes <= MAX_CARD_KEPT_BYTES {
            self.pending.bytes.extend_from_slice(bytes);
            return;
        }
        if !card.too_large {
            card.too_large = true;
            card.name_when_too_large = name_in(&card.text);
            // What is over the cap is never held: the card is refused at its END.
            card.text = String::new();
        }
        self.pending.bytes = Vec::new();
    }

    /// The kept property read so far, decoded into its card's text.
    fn flush_pending(&mut self) {
        if self.pending.bytes.is_empty() {
            return;
        }
        let Pending {
            bytes,
            header_end,
            charset,
            rewrite_quoted_printable,
        } = &self.pending;
        if let Some(card) = self.open.last_mut().filter(|card| !card.too_large) {
            let header_end = (*header_end).min(bytes.len());
            match std::str::from_utf8(bytes) {
                Ok(text) if !rewrite_quoted_printable => card.text.push_str(text),
                _ => {
                    let header_text = decode_line(&bytes[..header_end], None);
                    if *rewrite_quoted_printable {
                        card.text
                            .push_str(&rewrite_bare_quoted_printable(&header_text));
                    } else {
                        card.text.push_str(&header_text);
                    }
                    card.text
                        .push_str(&decode_line(&bytes[header_end..], *charset));
                }
            }
            card.text.push_str("\r\n");
        }
        self.pending.bytes.clear();
    }

    fn push_line(&mut self, number: usize, line: &[u8]) {
        // A quoted-printable value that wrongly ends in `=` right before END:VCARD must not
        // swallow the end of the card (that would make the file look half-written forever).
        let is_continuation = matches!(line.first(), Some(b' ' | b'\t'))
            || (self.previous_ended_with_soft_break && !is_end_vcard(line.trim_ascii()));
        if is_continuation {
            let quoted_printable = match self.current {
                Current::Kept { quoted_printable } => {
                    match line {
                        // A folded line: unfolded here, before anything is decoded, as
                        // vobject does. Left to calcard, a quoted-printable value folded
                        // inside an escape (`Jos=` + ` C3=A9`) lost its text.
                        [b' ' | b'\t', rest @ ..] => self.keep(rest),
                        // A quoted-printable soft line break: calcard joins those.
                        _ => {
                            self.keep(b"\r\n");
                            self.keep(line);
                        }
                    }
                    quoted_printable
                }
                Current::Skipped {
                    quoted_printable, ..
                } => quoted_printable,
                Current::None => false,
            };
            self.previous_ended_with_soft_break = quoted_printable && line.ends_with(b"=");
            return;
        }
        self.previous_ended_with_soft_break = false;
        self.flush_pending();

        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            self.current = Current::None;
            return;
        }
        let may_be_begin_or_end = matches!(trimmed.first(), Some(b'B' | b'b' | b'E' | b'e'));
        if may_be_begin_or_end && is_begin_vcard(trimmed) {
            self.begin_card(number);
            return;
        }
        if may_be_begin_or_end && is_end_vcard(trimmed) {
            match self.open.pop() {
                Some(card) if card.too_large => {
                    let name = card.name();
                    self.finished.push(CardOutcome {
                        index: card.index,
                        line: card.line,
                        result: Err(CardError::TooLarge {
                            kept_bytes: card.kept_bytes,
                            name,
                        }),
                    });
                    self.clean_after_end = true;
                }
                Some(mut card) => {
                    card.text.push_str("END:VCARD\r\n");
                    self.finished.push(parse_card(card));
                    self.clean_after_end = true;
                }
                None => self.notices.push(FileNotice {
                    line: number,
                    message: "END:VCARD without a BEGIN:VCARD; line ignored".into(),
                }),
            }
            self.current = Current::None;
            return;
        }
        let current = self.current;
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
        self.clean_after_end = false;

        let header_end = property_header_end(line);
        if header_end == line.len() {
            // 2.1 base64 (a PHOTO) may go on without indentation: part of what is dropped.
            if matches!(current, Current::Skipped { base64: true, .. }) {
                return;
            }
            card.property_lines += 1;
            let reason = if line.contains(&b':') {
                UnreadableReason::UnclosedQuote
            } else {
                UnreadableReason::NoColon
            };
            card.unreadable(number, reason);
            self.current = Current::None;
            return;
        }
        card.property_lines += 1;
        let header = &line[..header_end];
        let has_params = header.contains(&b';');
        let quoted_printable = has_params && header_has_quoted_printable(header);
        self.previous_ended_with_soft_break = quoted_printable && line.ends_with(b"=");
        let name = property_name(header);
        if !is_kept_property(name) {
            self.current = Current::Skipped {
                quoted_printable,
                base64: has_params && header_has_base64(header),
            };
            return;
        }
        if name.eq_ignore_ascii_case(b"VERSION") {
            let value = line[(header_end + 1).min(line.len())..].trim_ascii();
            card.nesting_impossible = value == b"3.0" || value == b"4.0";
        }
        self.current = Current::Kept { quoted_printable };
        self.pending.header_end = header_end;
        self.pending.charset = if has_params {
            header_charset(header)
        } else {
            None
        };
        self.pending.rewrite_quoted_printable =
            quoted_printable && !contains_ignore_ascii_case(header, b"ENCODING=");
        self.keep(line);
    }

    fn begin_card(&mut self, number: usize) {
        self.clean_after_end = false;
        self.current = Current::None;
        // A BEGIN:VCARD with no property before this one: a stray line, not a card. Counted
        // in a notice; the new card takes its place (and number).
        if self
            .open
            .last()
            .is_some_and(|card| card.property_lines == 0)
            && let Some(empty) = self.open.pop()
        {
            self.empty_begins += 1;
            self.first_empty_begin.get_or_insert(empty.line);
            self.next_index -= 1;
        }
        match self.open.last_mut() {
            // A 3.0/4.0 card cannot nest: it lacks its END. Reported, skipped.
            Some(card) if card.nesting_impossible => {
                if let Some(card) = self.open.pop() {
                    self.finished.push(unterminated(&card, number));
                }
            }
            Some(card) => {
                card.nested_begin.get_or_insert(number);
            }
            None => {}
        }
        if self.open.len() >= MAX_OPEN_CARDS {
            // Deeper than any 2.1 AGENT nesting: the open cards lack their END.
            for card in std::mem::take(&mut self.open) {
                let next_begin = card.nested_begin.unwrap_or(number);
                self.finished.push(unterminated(&card, next_begin));
            }
        }
        self.finished_before_open = self.open.is_empty();
        self.next_index += 1;
        self.open.push(OpenCard::new(self.next_index, number));
    }

    fn finish(mut self, on_card: &mut impl FnMut(CardOutcome)) -> Result<FileSummary, FileError> {
        self.flush_pending();
        // Cards still open after a last END:VCARD with nothing after it are not a file cut
        // short: each lacks its END (its next BEGIN:VCARD was read as a nested 2.1 card, which
        // then closed). They are broken cards, and the file is complete.
        let incomplete = if self.clean_after_end {
            for card in std::mem::take(&mut self.open) {
                let next_begin = card.nested_begin.unwrap_or(card.line);
                self.finished.push(unterminated(&card, next_begin));
            }
            None
        } else {
            // The innermost unfinished card is where the file stops.
            self.open.last().map(|card| Incomplete {
                card: card.index,
                line: card.line,
            })
        };
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
        }
        if let Some(line) = self.first_empty_begin {
            self.notices.push(FileNotice {
                line,
                message: format!(
                    "{} BEGIN:VCARD line(s) with no property and no END:VCARD before the next BEGIN:VCARD ignored",
                    self.empty_begins
                ),
            });
        }
        self.notices.sort_by_key(|n| n.line);
        // Nested cards that finished inside an unfinished parent still count.
        self.finished.sort_by_key(|c| c.index);
        for card in self.finished.drain(..) {
            self.emitted += 1;
            on_card(card);
        }
        Ok(FileSummary {
            cards: self.emitted,
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

fn is_kept_property(name: &[u8]) -> bool {
    KEPT_PROPERTIES
        .iter()
        .any(|kept| kept.len() == name.len() && name.eq_ignore_ascii_case(kept.as_bytes()))
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

fn header_has_base64(header: &[u8]) -> bool {
    params(header).any(|param| {
        let value = match param.iter().position(|&b| b == b'=') {
            Some(eq) if param[..eq].eq_ignore_ascii_case(b"ENCODING") => &param[eq + 1..],
            Some(_) => return false,
            None => param,
        };
        value.eq_ignore_ascii_case(b"BASE64") || value.eq_ignore_ascii_case(b"B")
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

/// A card that lacks its END:VCARD: reported, its content not used.
fn unterminated(card: &OpenCard, next_begin: usize) -> CardOutcome {
    CardOutcome {
        index: card.index,
        line: card.line,
        result: Err(CardError::Unterminated {
            next_begin,
            name: card.name(),
        }),
    }
}

fn parse_card(card: OpenCard) -> CardOutcome {
    let OpenCard {
        index,
        line,
        text,
        unreadable_lines,
        unreadable_line_count,
        ..
    } = card;
    // calcard forbids unsafe code but may still hit an index bug on hostile input; one card's
    // bad luck must not take the whole file (or the daemon) down with it.
    let parsed = catch_unwind(AssertUnwindSafe(|| VCard::parse(&text)));
    let result = match parsed {
        Ok(Ok(vcard)) => Ok(RawCard {
            unreadable_lines,
            unreadable_line_count,
            ..extract(vcard, index, line)
        }),
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
    // iCloud's `itemN.X-ABLabel` by group, the first one of a group standing: a map, as a
    // card may have tens of thousands of TELs.
    let mut labels: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut phone_groups: Vec<Option<String>> = Vec::new();
    let mut structured: Option<VCardEntry> = None;
    for entry in vcard.entries {
        match &entry.name {
            VCardProperty::Version => card.version = first_text(&entry),
            VCardProperty::Uid => card.uid = card.uid.take().or_else(|| first_text(&entry)),
            // Read once VERSION is known: 2.1 has no lists in N.
            VCardProperty::N if structured.is_none() => structured = Some(entry),
            VCardProperty::Fn if card.formatted_name.is_none() => {
                card.formatted_name = joined_text(&entry, " ")
            }
            VCardProperty::Org if card.organization.is_none() => {
                card.organization = joined_text(&entry, ", ")
            }
            VCardProperty::Nickname if card.nickname.is_none() => {
                card.nickname = first_text(&entry)
            }
            // calcard splits the list at bare commas; a comma left in a value was escaped.
            VCardProperty::Categories => card.categories.extend(
                all_texts(&entry)
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty()),
            ),
            VCardProperty::Kind if says_group(&entry) => card.group = Some("KIND:group"),
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
            VCardProperty::Impp => {
                if let Some(value) = first_text(&entry) {
                    let found = crate::username::from_impp(&value, names_telegram(&entry));
                    add_username(&mut card, value, found);
                }
            }
            VCardProperty::Url => {
                if let Some(value) = first_text(&entry) {
                    let found = crate::username::from_url(&value);
                    add_username(&mut card, value, found);
                }
            }
            VCardProperty::Other(name) if name.eq_ignore_ascii_case("X-ABLABEL") => {
                if let (Some(group), Some(label)) = (&entry.group, first_text(&entry)) {
                    labels.entry(group.to_ascii_lowercase()).or_insert(label);
                }
            }
            VCardProperty::Other(name)
                if name.eq_ignore_ascii_case("X-ADDRESSBOOKSERVER-KIND") && says_group(&entry) =>
            {
                card.group.get_or_insert("X-ADDRESSBOOKSERVER-KIND:group");
            }
            _ => {}
        }
    }
    for (phone, group) in card.phones.iter_mut().zip(phone_groups) {
        if let Some(group) = group.map(|g| g.to_ascii_lowercase()) {
            phone.label = labels.get(&group).cloned();
        }
    }
    let lists_in_n = !matches!(card.version.as_deref(), Some("2.1" | "2.0"));
    card.name = structured.map(|entry| structured_name(&entry, lists_in_n));
    card
}

/// Whether an IMPP's parameters say it is Telegram's: Nextcloud's `TYPE=TELEGRAM`, Apple's
/// and Google's `X-SERVICE-TYPE=Telegram`, RFC 9554's `SERVICE-TYPE=Telegram`.
fn names_telegram(entry: &VCardEntry) -> bool {
    entry.params.iter().any(|param| {
        let service = match &param.name {
            VCardParameterName::Type | VCardParameterName::ServiceType => true,
            VCardParameterName::Other(name) => name.eq_ignore_ascii_case("X-SERVICE-TYPE"),
            _ => false,
        };
        service
            && matches!(&param.value, VCardParameterValue::Text(t)
                if t.split(',').any(|t| t.trim().eq_ignore_ascii_case("telegram")))
    })
}

/// Records what a Telegram value named: a username once (compared case-insensitively, the
/// first spelling kept), or why it was ignored; values not about Telegram are not recorded.
fn add_username(
    card: &mut RawCard,
    value: String,
    found: Option<Result<String, crate::username::UsernameProblem>>,
) {
    match found {
        None => {}
        Some(Ok(username))
            if !card
                .telegram_usernames
                .iter()
                .any(|known| crate::username::same(known, &username)) =>
        {
            card.telegram_usernames.push(username);
        }
        // The same username again, perhaps in another spelling: the first one stands.
        Some(Ok(_)) => {}
        Some(Err(problem)) => card
            .ignored_telegram_usernames
            .push(IgnoredUsername { value, problem }),
    }
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

/// N's five parts. A part that is a list (`Jean,Paul`: calcard's `Component`) is joined with
/// spaces; a comma inside a part's text was escaped (`García\, Jr.`) and stays a comma.
/// vCard 2.1 has no lists (`lists: false`): there every comma is text (`García, Jr.`).
fn structured_name(entry: &VCardEntry, lists: bool) -> StructuredName {
    let component = |i: usize| -> String {
        match entry.values.get(i) {
            Some(VCardValue::Component(items)) if !lists => items.join(",").trim().to_owned(),
            Some(VCardValue::Component(items)) => items
                .iter()
                .map(|item| item.trim())
                .filter(|item| !item.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            Some(value) => value_text(value)
                .map(|t| t.trim().to_owned())
                .unwrap_or_default(),
            None => String::new(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn names(parsed: &ParsedFile) -> Vec<String> {
        parsed
            .good_cards()
            .map(|c| c.formatted_name.clone().unwrap_or_default())
            .collect()
    }

    const TWO_CARDS: &str = "BEGIN:VCARD\nVERSION:3.0\nFN:One\nEND:VCARD\nBEGIN:VCARD\nVERSION:3.0\nFN:Two\nEND:VCARD\n";

    #[rstest]
    #[case::lf("\n")]
    #[case::crlf("\r\n")]
    #[case::ios_double_cr("\r\r\n")]
    #[case::classic_mac_cr("\r")]
    fn every_line_ending_splits_the_same(#[case] ending: &str) {
        let text = TWO_CARDS.replace('\n', ending);
        let parsed = parse_bytes(text.as_bytes()).unwrap();
        assert_eq!(names(&parsed), ["One", "Two"]);
        assert_eq!(parsed.cards[1].line, 5);
    }

    #[rstest]
    #[case::le_bom(encoding_rs::UTF_16LE, true)]
    #[case::be_bom(encoding_rs::UTF_16BE, true)]
    #[case::le_no_bom(encoding_rs::UTF_16LE, false)]
    #[case::be_no_bom(encoding_rs::UTF_16BE, false)]
    fn utf16_is_transcoded(#[case] encoding: &'static encoding_rs::Encoding, #[case] bom: bool) {
        let mut bytes = Vec::new();
        let little = encoding == encoding_rs::UTF_16LE;
        if bom {
            bytes.extend_from_slice(if little { &[0xFF, 0xFE] } else { &[0xFE, 0xFF] });
        }
        for unit in TWO_CARDS.replace("One", "Öne").encode_utf16() {
            bytes.extend_from_slice(&if little {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            });
        }
        assert_eq!(names(&parse_bytes(&bytes).unwrap()), ["Öne", "Two"]);
    }

    #[test]
    fn stray_text_and_lonely_end_are_noticed_not_fatal() {
        let text = format!("garbage\nmore garbage\nEND:VCARD\n{TWO_CARDS}");
        let parsed = parse_bytes(text.as_bytes()).unwrap();
        assert_eq!(names(&parsed), ["One", "Two"]);
        assert_eq!(parsed.notices.len(), 2);
        assert_eq!(parsed.notices[0].line, 1);
        assert!(parsed.notices[0].message.starts_with("2 line(s)"));
        assert_eq!(parsed.notices[1].line, 3);
    }

    #[test]
    fn quoted_printable_ending_in_equals_before_end_does_not_swallow_the_end() {
        let text =
            "BEGIN:VCARD\nVERSION:2.1\nFN:A\nNOTE;ENCODING=QUOTED-PRINTABLE:abc=\nEND:VCARD\n";
        let parsed = parse_bytes(text.as_bytes()).unwrap();
        assert!(parsed.incomplete.is_none());
        assert_eq!(names(&parsed), ["A"]);
    }

    #[test]
    fn bare_quoted_printable_parameter_is_decoded() {
        let text =
            "BEGIN:VCARD\nVERSION:2.1\nFN;CHARSET=UTF-8;QUOTED-PRINTABLE:J=C3=B6rg\nEND:VCARD\n";
        assert_eq!(names(&parse_bytes(text.as_bytes()).unwrap()), ["Jörg"]);
    }

    #[test]
    fn eight_bit_value_uses_its_charset_else_windows_1252() {
        let mut text = b"BEGIN:VCARD\nVERSION:2.1\nFN;CHARSET=ISO-8859-7:".to_vec();
        text.extend_from_slice(&[0xC1, 0xEB, 0xDD, 0xEE]); // Αλέξ
        text.extend_from_slice(b"\nN:Gro\xDF;;;;\nEND:VCARD\n");
        let parsed = parse_bytes(&text).unwrap();
        let card = parsed.good_cards().next().unwrap();
        assert_eq!(card.formatted_name.as_deref(), Some("Αλέξ"));
        assert_eq!(card.name.as_ref().unwrap().family, "Groß");
    }

    fn family(card: &RawCard) -> String {
        card.name.clone().unwrap_or_default().family
    }
    fn given(card: &RawCard) -> String {
        card.name.clone().unwrap_or_default().given
    }
    fn formatted(card: &RawCard) -> String {
        card.formatted_name.clone().unwrap_or_default()
    }
    fn organization(card: &RawCard) -> String {
        card.organization.clone().unwrap_or_default()
    }
    fn nickname(card: &RawCard) -> String {
        card.nickname.clone().unwrap_or_default()
    }
    fn categories(card: &RawCard) -> String {
        card.categories.join("|")
    }

    /// `\,` is a comma in the text; a bare `,` separates the items of a list (N's parts,
    /// CATEGORIES, NICKNAME). Lines are joined with CRLF inside one 3.0 card.
    #[rstest]
    #[case::n_family_escaped_comma(&["N:García\\, Jr.;Aarav;;;"], family, "García, Jr.")]
    #[case::n_given_after_escaped_comma(&["N:García\\, Jr.;Aarav;;;"], given, "Aarav")]
    #[case::n_list_comma_joins_with_space(&["N:Doe;Jean,Paul;;;"], given, "Jean Paul")]
    #[case::n_escaped_and_list_comma(&["N:Doe;Jean\\, Jr.,Paul;;;"], given, "Jean, Jr. Paul")]
    #[case::n_escaped_semicolon(&["N:Doe\\;Roe;Jane;;;"], family, "Doe;Roe")]
    #[case::n_folded(&["N:García\\, J", " r.;Aarav;;;"], family, "García, Jr.")]
    #[case::fn_escaped_comma(&["FN:Doe\\, John"], formatted, "Doe, John")]
    #[case::org_escaped_comma(&["ORG:Smith\\, Jones & Co;Sales"], organization, "Smith, Jones & Co, Sales")]
    #[case::nickname_escaped_comma(&["NICKNAME:Bob\\, Jr.,Bobby"], nickname, "Bob, Jr.")]
    #[case::categories_escaped_comma(&["CATEGORIES:Friends\\, Berlin,Work"], categories, "Friends, Berlin|Work")]
    #[case::qp_n_escaped_comma(&["N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Garc=C3=ADa\\, Jr.;Aarav;;;"], family, "García, Jr.")]
    fn escaped_commas_are_text(
        #[case] lines: &[&str],
        #[case] field: fn(&RawCard) -> String,
        #[case] expected: &str,
    ) {
        let text = format!(
            "BEGIN:VCARD\r\nVERSION:3.0\r\n{}\r\nEND:VCARD\r\n",
            lines.join("\r\n")
        );
        let parsed = parse_bytes(text.as_bytes()).unwrap();
        let card = parsed.good_cards().next().unwrap();
        assert_eq!(field(card), expected, "{text}");
    }

    /// A 2.1 quoted-printable value folded by a line that starts with white space is unfolded
    /// first and decoded after, as vobject reads it: `Jos=` + ` C3=A9` is `Jos=C3=A9`.
    #[rstest]
    #[case::n_folded_in_an_escape(&["N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:;Jos=", " C3=A9;;;"], given, "José")]
    #[case::n_folded_by_a_tab(&["N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:;Jos=", "\tC3=A9;;;"], given, "José")]
    #[case::n_folded_bare_parameter(&["N;CHARSET=UTF-8;QUOTED-PRINTABLE:Garc=C3=ADa;Jos=", " C3=A9;;;"], family, "García")]
    #[case::n_folded_bare_parameter_given(&["N;CHARSET=UTF-8;QUOTED-PRINTABLE:Garc=C3=ADa;Jos=", " C3=A9;;;"], given, "José")]
    #[case::n_folded_between_escapes(&["N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:;Jos=C3=A9=", " 20Luis;;;"], given, "José Luis")]
    #[case::soft_break_still_works(&["N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:;Jos=", "=C3=A9;;;"], given, "José")]
    #[case::fn_folded(&["FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Jos=", " C3=A9 Garc=C3=ADa"], formatted, "José García")]
    #[case::folded_without_quoted_printable(&["FN:José", "  García"], formatted, "José García")]
    fn quoted_printable_is_unfolded_then_decoded(
        #[case] lines: &[&str],
        #[case] field: fn(&RawCard) -> String,
        #[case] expected: &str,
    ) {
        let text = format!(
            "BEGIN:VCARD\r\nVERSION:2.1\r\n{}\r\nEND:VCARD\r\n",
            lines.join("\r\n")
        );
        let parsed = parse_bytes(text.as_bytes()).unwrap();
        let card = parsed.good_cards().next().unwrap();
        assert_eq!(field(card), expected, "{text:?}");
    }

    /// Seven cards of `version`, card 5 without its END:VCARD.
    fn seven_cards_fifth_unterminated(version: &str) -> String {
        let mut text = String::new();
        for i in 1..=7 {
            text.push_str(&format!(
                "BEGIN:VCARD\r\nVERSION:{version}\r\nFN:Card {i}\r\nTEL:+1 202 555 01{i:02}\r\n"
            ));
            if i != 5 {
                text.push_str("END:VCARD\r\n");
            }
        }
        text
    }

    #[rstest]
    #[case::v3_0("3.0")]
    #[case::v4_0("4.0")]
    #[case::v2_1("2.1")]
    fn a_card_without_end_is_broken_and_its_neighbours_are_read(#[case] version: &str) {
        let parsed = parse_bytes(seven_cards_fifth_unterminated(version).as_bytes()).unwrap();
        assert_eq!(
            parsed.incomplete, None,
            "the file does not end inside a card"
        );
        assert_eq!(
            names(&parsed),
            ["Card 1", "Card 2", "Card 3", "Card 4", "Card 6", "Card 7"]
        );
        assert_eq!(
            parsed.cards.iter().map(|c| c.index).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        let fifth = &parsed.cards[4];
        assert_eq!(fifth.line, 21);
        assert_eq!(
            fifth.result,
            Err(CardError::Unterminated {
                next_begin: 25,
                name: Some("Card 5".into())
            })
        );
        assert!(
            fifth
                .result
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("line 25"),
            "{:?}",
            fifth.result
        );
    }

    #[test]
    fn a_file_cut_short_after_a_broken_card_ends_inside_the_last_card() {
        let mut text = seven_cards_fifth_unterminated("3.0");
        text.truncate(text.rfind("FN:Card 7").unwrap());
        let parsed = parse_bytes(text.as_bytes()).unwrap();
        let incomplete = parsed.incomplete.expect("ends inside card 7");
        assert_eq!((incomplete.card, incomplete.line), (7, 30));
        // A 3.0 card never nests: card 5 is known broken at card 6's BEGIN already.
        assert_eq!(
            parsed.cards[4].result,
            Err(CardError::Unterminated {
                next_begin: 25,
                name: Some("Card 5".into())
            })
        );
    }

    /// vCard 2.1 nests cards (AGENT) without any marker: a balanced nest is flattened, as
    /// Android reads it; an unbalanced one that ends with a property, not an END, is a file
    /// cut short.
    #[test]
    fn nested_2_1_cards_are_flattened_and_a_cut_nest_is_incomplete() {
        let nest = "BEGIN:VCARD\nVERSION:2.1\nN:parent\nBEGIN:VCARD\nVERSION:2.1\nN:nest1\nEND:VCARD\nBEGIN:VCARD\nVERSION:2.1\nN:nest2\nEND:VCARD\nTEL:1\n";
        let parsed = parse_bytes(format!("{nest}END:VCARD\n").as_bytes()).unwrap();
        assert_eq!(parsed.incomplete, None);
        let families: Vec<_> = parsed.good_cards().map(family).collect();
        assert_eq!(families, ["parent", "nest1", "nest2"]);
        assert_eq!(parsed.good_cards().next().unwrap().phones.len(), 1);

        let cut = parse_bytes(nest.as_bytes()).unwrap();
        let incomplete = cut.incomplete.expect("the parent never ended");
        assert_eq!((incomplete.card, incomplete.line), (1, 1));
    }

    #[test]
    fn empty_input_has_no_cards() {
        assert!(matches!(parse_bytes(b""), Err(FileError::NoCards)));
    }

    #[test]
    fn large_files_stream_in_order_through_the_parser_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.vcf");
        let mut text = String::new();
        for i in 1..=3000 {
            text.push_str(&format!(
                "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Card {i}\r\nNOTE:{}\r\nEND:VCARD\r\n",
                "x".repeat(400)
            ));
        }
        assert!(text.len() as u64 > PIPELINE_MIN_BYTES);
        std::fs::write(&path, &text).unwrap();
        let mut indexes = Vec::new();
        let summary = parse_path_with(&path, |card| indexes.push(card.index)).unwrap();
        assert_eq!(summary.cards, 3000);
        assert_eq!(indexes, (1..=3000).collect::<Vec<_>>());
        assert_eq!(
            parse_path(&path).unwrap(),
            parse_bytes(text.as_bytes()).unwrap()
        );
    }
}
