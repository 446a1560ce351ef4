//! XML: a small namespace-resolved tree of an answer (quick-xml does the parsing), the
//! multistatus reading and the one spelling of hrefs. Pure: tested on byte strings.

#[allow(unused_imports)]
use super::*;

/// A kept property of a multistatus row, with the few descendants the client reads
/// (`href`, `collection`, `addressbook`, `sync-collection` and the elements that hold it).
#[derive(Debug, Default, Clone)]
pub(super) struct Node {
    pub(super) ns: String,
    pub(super) name: String,
    /// The text, up to `MAX_CARD_BYTES` (a card's address-data is refused above it).
    pub(super) text: String,
    /// How many bytes of text the element had, kept or not.
    pub(super) text_len: usize,
    pub(super) children: Vec<Node>,
}

impl Node {
    pub(super) fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub(super) fn child(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// The first descendant so named, depth first.
    pub(super) fn find(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find_map(|c| {
            if c.is(ns, name) {
                Some(c)
            } else {
                c.find(ns, name)
            }
        })
    }

    pub(super) fn trimmed(&self) -> &str {
        self.text.trim()
    }
}

/// How deep an answer's elements may nest (a multistatus with a vCard property needs 6).
pub(super) const MAX_XML_DEPTH: usize = 64;

/// The longest href, status line or sync-token accepted: real ones are a few hundred bytes.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// How many elements one property may keep (a supported-report-set lists a dozen reports
/// of three elements each); more is a hostile answer.
const MAX_PROP_ELEMENTS: usize = 1024;

/// The properties the client reads; every other property is skipped unread.
const KEPT_PROPS: &[(&str, &str)] = &[
    (DAV, "resourcetype"),
    (DAV, "displayname"),
    (DAV, "current-user-principal"),
    (DAV, "supported-report-set"),
    (DAV, "getetag"),
    (DAV, "sync-token"),
    (CARDDAV, "addressbook-home-set"),
    (CARDDAV, "address-data"),
];

/// The elements kept inside a kept property.
const KEPT_INSIDE_PROPS: &[(&str, &str)] = &[
    (DAV, "href"),
    (DAV, "collection"),
    (DAV, "supported-report"),
    (DAV, "report"),
    (DAV, "sync-collection"),
    (CARDDAV, "addressbook"),
];

/// A `<D:response>` of a multistatus: its href, its status (when the response has one
/// rather than propstats) and the properties found with 200.
#[derive(Debug, Default)]
pub(super) struct DavResponse {
    pub(super) href: String,
    pub(super) status: Option<u16>,
    pub(super) props: Vec<Node>,
}

impl DavResponse {
    pub(super) fn prop(&self, ns: &str, name: &str) -> Option<&Node> {
        self.props.iter().find(|p| p.is(ns, name))
    }
}

/// What a multistatus answer says: its rows and, for sync-collection, its token.
#[derive(Debug, Default)]
pub(super) struct Multistatus {
    pub(super) responses: Vec<DavResponse>,
    pub(super) sync_token: Option<String>,
}

/// Where the reader is in a multistatus; one per open element, so at most `MAX_XML_DEPTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Multistatus,
    SyncToken,
    Response,
    Href,
    ResponseStatus,
    Propstat,
    PropstatStatus,
    Prop,
    /// A kept property or a kept element inside one (the top of `Reading::kept`).
    Kept,
    /// An element the client does not read, and everything in it.
    Skipped,
}

#[derive(Default)]
struct Reading {
    answer: Multistatus,
    response: DavResponse,
    response_status: String,
    propstat_status: String,
    propstat_props: Vec<Node>,
    sync_token: String,
    /// The open kept elements, the property first.
    kept: Vec<Node>,
    kept_in_prop: usize,
}

/// Reads a multistatus as a stream of events, keeping only its rows (href, status, the
/// properties the client reads): memory grows with what is kept, not with the answer's
/// size or element count. The 64 MiB body cap bounds bytes, not elements; a tree of a
/// 60 MB answer of empty elements took 1.9 GB.
pub(super) fn parse_multistatus(bytes: &[u8]) -> Result<Multistatus, String> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let text = std::str::from_utf8(bytes).map_err(|_| "the XML is not UTF-8".to_owned())?;
    let mut reader = quick_xml::NsReader::from_str(text);
    let mut frames: Vec<Frame> = Vec::new();
    let mut reading = Reading::default();
    let mut seen_root = false;
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|err| format!("malformed XML: {err}"))?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => ns.into_inner(),
            _ => "",
        };
        match event {
            Event::Start(start) => {
                open(
                    &mut frames,
                    &mut reading,
                    &mut seen_root,
                    ns,
                    start.local_name().as_ref(),
                )?;
            }
            Event::Empty(start) => {
                open(
                    &mut frames,
                    &mut reading,
                    &mut seen_root,
                    ns,
                    start.local_name().as_ref(),
                )?;
                close(&mut frames, &mut reading)?;
            }
            Event::End(_) => close(&mut frames, &mut reading)?,
            Event::Text(text) => append(&frames, &mut reading, &text.xml10_content())?,
            Event::CData(data) => {
                append(&frames, &mut reading, &data.into_inner())?;
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*reference {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(format!("unknown XML entity &{other};")),
                    },
                    Err(err) => return Err(format!("bad character reference: {err}")),
                };
                append(&frames, &mut reading, resolved.encode_utf8(&mut [0; 4]))?;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !frames.is_empty() {
        return Err("the XML ends inside an element".into());
    }
    if !seen_root {
        return Err("no XML element".into());
    }
    Ok(reading.answer)
}

fn open(
    frames: &mut Vec<Frame>,
    reading: &mut Reading,
    seen_root: &mut bool,
    ns: &str,
    name: &str,
) -> Result<(), String> {
    // A multistatus is six levels deep; a document nested thousands deep is hostile.
    if frames.len() >= MAX_XML_DEPTH {
        return Err(format!(
            "the XML is nested deeper than {MAX_XML_DEPTH} elements"
        ));
    }
    let is = |want_ns: &str, want: &str| ns == want_ns && name == want;
    let frame = match frames.last() {
        None if *seen_root => Frame::Skipped,
        None => {
            *seen_root = true;
            if !is(DAV, "multistatus") {
                return Err(format!("expected a DAV multistatus, got <{name}>"));
            }
            Frame::Multistatus
        }
        Some(Frame::Multistatus) if is(DAV, "response") => {
            reading.response = DavResponse::default();
            reading.response_status.clear();
            Frame::Response
        }
        Some(Frame::Multistatus) if is(DAV, "sync-token") => Frame::SyncToken,
        Some(Frame::Response) if is(DAV, "href") => Frame::Href,
        Some(Frame::Response) if is(DAV, "status") => Frame::ResponseStatus,
        Some(Frame::Response) if is(DAV, "propstat") => {
            reading.propstat_status.clear();
            reading.propstat_props.clear();
            Frame::Propstat
        }
        Some(Frame::Propstat) if is(DAV, "status") => Frame::PropstatStatus,
        Some(Frame::Propstat) if is(DAV, "prop") => Frame::Prop,
        Some(Frame::Prop) if KEPT_PROPS.iter().any(|(n, l)| is(n, l)) => {
            reading.kept_in_prop = 0;
            reading.kept.push(kept_node(ns, name));
            Frame::Kept
        }
        Some(Frame::Kept) if KEPT_INSIDE_PROPS.iter().any(|(n, l)| is(n, l)) => {
            reading.kept_in_prop += 1;
            if reading.kept_in_prop > MAX_PROP_ELEMENTS {
                return Err(format!(
                    "a property with more than {MAX_PROP_ELEMENTS} elements"
                ));
            }
            reading.kept.push(kept_node(ns, name));
            Frame::Kept
        }
        Some(_) => Frame::Skipped,
    };
    frames.push(frame);
    Ok(())
}

fn kept_node(ns: &str, name: &str) -> Node {
    Node {
        ns: ns.to_owned(),
        name: name.to_owned(),
        ..Node::default()
    }
}

fn close(frames: &mut Vec<Frame>, reading: &mut Reading) -> Result<(), String> {
    match frames.pop().ok_or("unbalanced XML")? {
        Frame::Response => {
            let mut response = std::mem::take(&mut reading.response);
            response.href = response.href.trim().to_owned();
            if response.href.is_empty() {
                return Err("a response without href".into());
            }
            response.status = status_code(&reading.response_status);
            reading.answer.responses.push(response);
        }
        Frame::Propstat if status_code(&reading.propstat_status) == Some(200) => {
            reading.response.props.append(&mut reading.propstat_props);
        }
        Frame::SyncToken => {
            let token = std::mem::take(&mut reading.sync_token);
            let token = token.trim();
            if reading.answer.sync_token.is_none() && !token.is_empty() {
                reading.answer.sync_token = Some(token.to_owned());
            }
        }
        Frame::Kept => {
            let node = reading.kept.pop().ok_or("unbalanced XML")?;
            match reading.kept.last_mut() {
                Some(parent) => parent.children.push(node),
                None => reading.propstat_props.push(node),
            }
        }
        _ => {}
    }
    Ok(())
}

/// Adds text to the element being kept, if any; text elsewhere is dropped unread.
fn append(frames: &[Frame], reading: &mut Reading, text: &str) -> Result<(), String> {
    let line = match frames.last() {
        Some(Frame::Href) => &mut reading.response.href,
        Some(Frame::ResponseStatus) => &mut reading.response_status,
        Some(Frame::PropstatStatus) => &mut reading.propstat_status,
        Some(Frame::SyncToken) => &mut reading.sync_token,
        Some(Frame::Kept) => {
            if let Some(node) = reading.kept.last_mut() {
                node.text_len += text.len();
                // Above the cap the card is refused by its size; its text is not needed.
                if node.text_len <= MAX_CARD_BYTES {
                    node.text.push_str(text);
                }
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    if line.len() + text.len() > MAX_LINE_BYTES {
        return Err(format!(
            "an href, status or sync-token longer than {} KiB",
            MAX_LINE_BYTES >> 10
        ));
    }
    line.push_str(text);
    Ok(())
}

/// The status code of a `HTTP/1.1 404 Not Found` line.
fn status_code(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether an error body names the element (e.g. a 403's `DAV:valid-sync-token`), read as
/// a stream like a multistatus; a body that is no XML names nothing.
pub(super) fn names_element(bytes: &[u8], want_ns: &str, want: &str) -> bool {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let mut reader = quick_xml::NsReader::from_str(text);
    loop {
        match reader.read_resolved_event() {
            Ok((ResolveResult::Bound(ns), Event::Start(e) | Event::Empty(e)))
                if ns.into_inner() == want_ns && e.local_name().as_ref() == want =>
            {
                return true;
            }
            Ok((_, Event::Eof)) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

/// An href as a URL in one spelling: servers write the same card as `a%40b.vcf` in one
/// answer and `a@b.vcf` in another, or `%3a` and `%3A`. Percent-encoded unreserved
/// characters and `@` are decoded, other escapes upper-cased (RFC 3986 §6.2.2).
pub(super) fn card_url(base: &Url, href: &str) -> Option<Url> {
    let mut url = base.join(href).ok()?;
    let path = url.path().as_bytes();
    let mut canonical = String::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if path[i] == b'%'
            && i + 2 < path.len()
            && let (Some(high), Some(low)) = (hex(path[i + 1]), hex(path[i + 2]))
        {
            let byte = u8::try_from(high * 16 + low).unwrap_or(b'%');
            if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
                canonical.push(char::from(byte));
            } else {
                canonical.push_str(&format!("%{byte:02X}"));
            }
            i += 3;
        } else {
            canonical.push(char::from(path[i]));
            i += 1;
        }
    }
    url.set_path(&canonical);
    Some(url)
}

pub(super) fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
