//! A CardDAV source: the client that polls the server into the state's cache, and the scan
//! of that cache (a card is examined like a file, keyed by its URL).
//!
//! The WebDAV requests are written here on reqwest (already linked for Whapi) with quick-xml
//! as the XML parser, not with libdav: libdav 0.11 hides what an incremental, bounded sync
//! must see — the `Retry-After` of a 429/503, the 507 row of a truncated sync report, an
//! invalid token answered with 412, each answer's size — and sends every href in one
//! multiget; working around that needed raw requests anyway (README, "Dependency notes").

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};

use crate::config::{CardDavConfig, PasswordSource, SourceConfig};
use crate::store::{
    self, BookPoll, CachedCard, CardDavBook, CardDavPoll, FetchedCard, FileRecord, FileState, Store,
};

use super::{Derivation, Examined, FileChange, Scan};

/// One card may be at most this large; a larger one is reported with its URL and skipped
/// (Baïkal refuses cards over 1 MB; a 161 MB card broke DAVx5).
pub const MAX_CARD_BYTES: usize = 1024 * 1024;
/// At most this many hrefs per addressbook-multiget (as Evolution sends).
pub const MULTIGET_BATCH: usize = 100;
/// One answer may be at most this large; a multiget beyond it is split.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// A truncated sync report (507) is asked again at most this often in one poll.
const MAX_ROUNDS: usize = 1000;
/// A 429/503 whose Retry-After is at most this long is waited out within the poll.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 5;

const DAV: &str = "DAV:";
const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";

/// Why a poll could not complete: the source counts as unknown, nothing of it is deleted.
/// The texts hold no card URL, user name or password.
#[derive(Debug, thiserror::Error)]
pub enum CardDavError {
    #[error("wrong user name or password for source {name} (the server answered 401)")]
    Unauthorized { name: String },
    #[error("cannot reach the server of source {name}: {reason}")]
    Unreachable { name: String, reason: String },
    #[error("the server of source {name} answered {status} to {what}")]
    Status {
        name: String,
        status: StatusCode,
        what: &'static str,
    },
    #[error(
        "the server of source {name} asks to wait {seconds} s ({status}); polled again after that"
    )]
    Wait {
        name: String,
        status: StatusCode,
        seconds: u64,
    },
    #[error("the server of source {name} gave an answer to {what} that is not CardDAV: {reason}")]
    Garbage {
        name: String,
        what: &'static str,
        reason: String,
    },
    #[error("source {name}: {reason}")]
    Setup { name: String, reason: String },
}

impl CardDavError {
    /// Seconds the server asked to wait, when it did.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Wait { seconds, .. } => Some(*seconds),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// XML: a small namespace-resolved tree of an answer (quick-xml does the parsing).

#[derive(Debug, Default, Clone)]
struct Node {
    ns: String,
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    fn child(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    fn children_named<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Node> {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The first descendant so named, depth first.
    fn find(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find_map(|c| {
            if c.is(ns, name) {
                Some(c)
            } else {
                c.find(ns, name)
            }
        })
    }

    fn trimmed(&self) -> &str {
        self.text.trim()
    }
}

fn parse_xml(bytes: &[u8]) -> Result<Node, String> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let text = std::str::from_utf8(bytes).map_err(|_| "the XML is not UTF-8".to_owned())?;
    let mut reader = quick_xml::NsReader::from_str(text);
    let mut stack: Vec<Node> = vec![Node::default()];
    let namespace = |resolved: ResolveResult<'_>| match resolved {
        ResolveResult::Bound(ns) => ns.as_ref().to_owned(),
        _ => String::new(),
    };
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|err| format!("malformed XML: {err}"))?;
        match event {
            Event::Start(start) => {
                let node = Node {
                    ns: namespace(resolved),
                    name: start.local_name().as_ref().to_owned(),
                    ..Node::default()
                };
                stack.push(node);
            }
            Event::Empty(start) => {
                let node = Node {
                    ns: namespace(resolved),
                    name: start.local_name().as_ref().to_owned(),
                    ..Node::default()
                };
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced XML")?;
                let parent = stack.last_mut().ok_or("unbalanced XML")?;
                parent.children.push(node);
            }
            Event::Text(text) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&data.into_inner());
                }
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
                if let Some(node) = stack.last_mut() {
                    node.text.push(resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err("the XML ends inside an element".into());
    }
    let mut root = stack.pop().unwrap_or_default();
    root.children.pop().ok_or_else(|| "no XML element".into())
}

/// The status code of a `<D:status>HTTP/1.1 404 Not Found</D:status>` line.
fn status_of(node: &Node) -> Option<u16> {
    node.child(DAV, "status")?
        .trimmed()
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A `<D:response>` of a multistatus: its href, its status (when the response has one
/// rather than propstats) and the properties found with 200.
#[derive(Debug)]
struct DavResponse<'a> {
    href: String,
    status: Option<u16>,
    props: Vec<&'a Node>,
}

fn multistatus(root: &Node) -> Result<Vec<DavResponse<'_>>, String> {
    if !root.is(DAV, "multistatus") {
        return Err(format!("expected a DAV multistatus, got <{}>", root.name));
    }
    let mut responses = Vec::new();
    for response in root.children_named(DAV, "response") {
        let href = response
            .child(DAV, "href")
            .map(|h| h.trimmed().to_owned())
            .filter(|h| !h.is_empty())
            .ok_or("a response without href")?;
        let mut props = Vec::new();
        for propstat in response.children_named(DAV, "propstat") {
            if status_of(propstat) == Some(200)
                && let Some(prop) = propstat.child(DAV, "prop")
            {
                props.extend(prop.children.iter());
            }
        }
        responses.push(DavResponse {
            href,
            status: status_of(response),
            props,
        });
    }
    Ok(responses)
}

impl DavResponse<'_> {
    fn prop(&self, ns: &str, name: &str) -> Option<&Node> {
        self.props.iter().copied().find(|p| p.is(ns, name))
    }
}

/// An href as a URL in one spelling: servers write the same card as `a%40b.vcf` in one
/// answer and `a@b.vcf` in another, or `%3a` and `%3A`. Percent-encoded unreserved
/// characters and `@` are decoded, other escapes upper-cased (RFC 3986 §6.2.2).
fn card_url(base: &Url, href: &str) -> Option<Url> {
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

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// ---------------------------------------------------------------------------------------
// HTTP

struct Answer {
    status: StatusCode,
    url: Url,
    body: Vec<u8>,
}

/// Counts of what a poll cost, for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub requests: u64,
    pub bytes_received: u64,
}

struct Client {
    http: reqwest::Client,
    source: String,
    auth: Option<(String, Option<String>)>,
    traffic: Traffic,
}

enum Failure {
    /// The answer was too large to take whole.
    TooLarge,
    Error(CardDavError),
}

impl From<CardDavError> for Failure {
    fn from(err: CardDavError) -> Self {
        Self::Error(err)
    }
}

impl Client {
    fn new(source: &SourceConfig, config: &CardDavConfig) -> Result<Self, CardDavError> {
        let password =
            read_password(&config.password, config.username.is_some()).map_err(|reason| {
                CardDavError::Setup {
                    name: source.name.clone(),
                    reason,
                }
            })?;
        Self::with_password(source, config, password)
    }

    /// `password`: as `read_password` gave it (the daemon's poller keeps it between polls).
    fn with_password(
        source: &SourceConfig,
        config: &CardDavConfig,
        password: Option<String>,
    ) -> Result<Self, CardDavError> {
        let setup = |reason: String| CardDavError::Setup {
            name: source.name.clone(),
            reason,
        };
        let auth = match (&config.username, password) {
            (Some(user), password) => Some((user.clone(), password)),
            (None, Some(password)) => Some((String::new(), Some(password))),
            (None, None) => None,
        };
        // Redirects are followed by hand: reqwest turns a redirected PROPFIND into a GET.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("contactsyncd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| setup(format!("cannot set up HTTP: {err}")))?;
        Ok(Self {
            http,
            source: source.name.clone(),
            auth,
            traffic: Traffic::default(),
        })
    }

    /// One request, following redirects (same method and body), waiting out a short
    /// Retry-After. 401 and 5xx are errors; other statuses are the caller's to judge.
    async fn send(
        &mut self,
        method: &Method,
        url: &Url,
        depth: Option<&str>,
        body: Option<&str>,
        what: &'static str,
        limit: usize,
    ) -> Result<Answer, Failure> {
        let mut url = url.clone();
        let mut redirects = 0;
        let mut waits = 0;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some((user, password)) = &self.auth {
                request = request.basic_auth(user, password.as_ref());
            }
            if let Some(depth) = depth {
                request = request.header("Depth", depth);
            }
            if let Some(body) = body {
                request = request
                    .header("Content-Type", "application/xml; charset=utf-8")
                    .body(body.to_owned());
            }
            self.traffic.requests += 1;
            let mut response = request
                .send()
                .await
                .map_err(|err| CardDavError::Unreachable {
                    name: self.source.clone(),
                    reason: describe_reqwest(&err),
                })?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                // The password goes with every request: never to a plain-http downgrade.
                let location =
                    location.filter(|next| !(url.scheme() == "https" && next.scheme() != "https"));
                match location {
                    Some(next) if redirects < MAX_REDIRECTS => {
                        redirects += 1;
                        url = next;
                        continue;
                    }
                    _ => {
                        return Err(CardDavError::Status {
                            name: self.source.clone(),
                            status,
                            what,
                        }
                        .into());
                    }
                }
            }
            if status == StatusCode::UNAUTHORIZED {
                return Err(CardDavError::Unauthorized {
                    name: self.source.clone(),
                }
                .into());
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                let seconds = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after_seconds(v, std::time::SystemTime::now()));
                match seconds {
                    Some(s) if Duration::from_secs(s) <= MAX_INLINE_WAIT && waits < 3 => {
                        waits += 1;
                        tracing::debug!(source = %self.source, seconds = s, "the server asks to wait");
                        tokio::time::sleep(Duration::from_secs(s)).await;
                        continue;
                    }
                    Some(seconds) => {
                        return Err(CardDavError::Wait {
                            name: self.source.clone(),
                            status,
                            seconds,
                        }
                        .into());
                    }
                    None => {}
                }
            }
            if status.is_server_error() {
                return Err(CardDavError::Status {
                    name: self.source.clone(),
                    status,
                    what,
                }
                .into());
            }
            let mut body = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        self.traffic.bytes_received += chunk.len() as u64;
                        if body.len() + chunk.len() > limit {
                            return Err(Failure::TooLarge);
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(err) => {
                        return Err(CardDavError::Unreachable {
                            name: self.source.clone(),
                            reason: describe_reqwest(&err),
                        }
                        .into());
                    }
                }
            }
            return Ok(Answer { status, url, body });
        }
    }

    /// A request whose answer must be a multistatus (207).
    async fn multistatus(
        &mut self,
        method: &Method,
        url: &Url,
        depth: Option<&str>,
        body: &str,
        what: &'static str,
    ) -> Result<(Url, Node), Failure> {
        let answer = self
            .send(method, url, depth, Some(body), what, MAX_ANSWER_BYTES)
            .await?;
        if answer.status != StatusCode::MULTI_STATUS {
            return Err(CardDavError::Status {
                name: self.source.clone(),
                status: answer.status,
                what,
            }
            .into());
        }
        let root = parse_xml(&answer.body).map_err(|reason| self.garbage(what, reason))?;
        Ok((answer.url, root))
    }

    fn garbage(&self, what: &'static str, reason: String) -> CardDavError {
        CardDavError::Garbage {
            name: self.source.clone(),
            what,
            reason,
        }
    }
}

fn too_large(failure: Failure, client: &Client, what: &'static str) -> CardDavError {
    match failure {
        Failure::Error(err) => err,
        Failure::TooLarge => client.garbage(
            what,
            format!("the answer is larger than {} MiB", MAX_ANSWER_BYTES >> 20),
        ),
    }
}

/// reqwest's error without the URL (it may name the user's principal).
fn describe_reqwest(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Reads the password from where the configuration says, now. `None`: no password (a
/// credential that is not there, for a source without a user name).
fn read_password(source: &PasswordSource, has_user: bool) -> Result<Option<String>, String> {
    match source {
        PasswordSource::File(path) => std::fs::read_to_string(path)
            .map(|text| Some(text.trim_end_matches(['\r', '\n']).to_owned()))
            .map_err(|err| format!("cannot read password_file {}: {err}", path.display())),
        PasswordSource::Command(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return Err("password_command is empty".into());
            };
            let output = std::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .map_err(|err| format!("cannot run password_command {program:?}: {err}"))?;
            if !output.status.success() {
                return Err(format!(
                    "password_command {program:?} failed ({})",
                    output.status
                ));
            }
            let text = String::from_utf8_lossy(&output.stdout);
            Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
        }
        PasswordSource::Credential(name) => {
            let path =
                std::env::var_os("CREDENTIALS_DIRECTORY").map(|dir| PathBuf::from(dir).join(name));
            match path.map(std::fs::read_to_string) {
                Some(Ok(text)) => Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned())),
                _ if has_user => Err(format!(
                    "no password: set password_file, password_command, or the systemd credential {name}"
                )),
                _ => Ok(None),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Discovery

/// An address book as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundBook {
    pub url: String,
    pub name: String,
    pub supports_sync: bool,
}

const PROPFIND_DISCOVERY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:prop><D:resourcetype/><D:displayname/><D:current-user-principal/><C:addressbook-home-set/><D:supported-report-set/></D:prop></D:propfind>"#;

fn book_of(response: &DavResponse<'_>, base: &Url) -> Option<FoundBook> {
    let is_book = response
        .prop(DAV, "resourcetype")
        .is_some_and(|t| t.child(CARDDAV, "addressbook").is_some());
    if !is_book {
        return None;
    }
    let url = card_url(base, &response.href)?;
    let supports_sync = response
        .prop(DAV, "supported-report-set")
        .is_some_and(|set| set.find(DAV, "sync-collection").is_some());
    let name = response
        .prop(DAV, "displayname")
        .map(|n| n.trimmed().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| last_segment(&url));
    Some(FoundBook {
        url: url.to_string(),
        name,
        supports_sync,
    })
}

fn last_segment(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        .unwrap_or_default()
        .to_owned()
}

fn href_in(response: &DavResponse<'_>, ns: &str, name: &str, base: &Url) -> Option<Url> {
    let href = response.prop(ns, name)?.child(DAV, "href")?.trimmed();
    base.join(href).ok()
}

/// Finds the address books: the URL itself when it is one; else its (or the well-known
/// URL's) current-user-principal → addressbook-home-set → the address books in it.
async fn discover(client: &mut Client, start: &Url) -> Result<Vec<FoundBook>, CardDavError> {
    const WHAT: &str = "PROPFIND (discovery)";
    let propfind = Method::from_bytes(b"PROPFIND").unwrap_or(Method::GET);
    let mut home: Option<Url> = None;
    let mut principal: Option<Url> = None;
    let mut candidates = vec![start.clone()];
    if let Ok(well_known) = start.join("/.well-known/carddav") {
        candidates.push(well_known);
    }
    for url in candidates {
        let (answered, root) = match client
            .multistatus(&propfind, &url, Some("0"), PROPFIND_DISCOVERY, WHAT)
            .await
        {
            Ok(found) => found,
            // Not every URL is a DAV resource: a 404 or 405 here means try the next.
            Err(Failure::Error(CardDavError::Status { status, .. }))
                if status.is_client_error() =>
            {
                continue;
            }
            Err(failure) => return Err(too_large(failure, client, WHAT)),
        };
        let responses = multistatus(&root).map_err(|r| client.garbage(WHAT, r))?;
        for response in &responses {
            if let Some(book) = book_of(response, &answered) {
                return Ok(vec![book]);
            }
            home = home.or_else(|| href_in(response, CARDDAV, "addressbook-home-set", &answered));
            principal =
                principal.or_else(|| href_in(response, DAV, "current-user-principal", &answered));
        }
        if home.is_some() || principal.is_some() {
            break;
        }
    }
    if home.is_none()
        && let Some(principal) = &principal
    {
        let (answered, root) = client
            .multistatus(&propfind, principal, Some("0"), PROPFIND_DISCOVERY, WHAT)
            .await
            .map_err(|f| too_large(f, client, WHAT))?;
        let responses = multistatus(&root).map_err(|r| client.garbage(WHAT, r))?;
        home = responses
            .iter()
            .find_map(|r| href_in(r, CARDDAV, "addressbook-home-set", &answered));
    }
    let Some(home) = home else {
        return Err(CardDavError::Setup {
            name: client.source.clone(),
            reason: "no address book found at the configured URL (neither an address book, nor a principal or server that names an addressbook-home-set); give the address book's URL".into(),
        });
    };
    let (answered, root) = client
        .multistatus(&propfind, &home, Some("1"), PROPFIND_DISCOVERY, WHAT)
        .await
        .map_err(|f| too_large(f, client, WHAT))?;
    let responses = multistatus(&root).map_err(|r| client.garbage(WHAT, r))?;
    let mut books: Vec<FoundBook> = responses
        .iter()
        .filter_map(|r| book_of(r, &answered))
        .collect();
    books.sort_by(|a, b| a.url.cmp(&b.url));
    books.dedup_by(|a, b| a.url == b.url);
    Ok(books)
}

/// The address books the configuration asks for, of those found.
fn choose_books(
    source: &str,
    config: &CardDavConfig,
    found: Vec<FoundBook>,
) -> Result<Vec<FoundBook>, CardDavError> {
    if found.is_empty() {
        return Err(CardDavError::Setup {
            name: source.to_owned(),
            reason: "the server lists no address book for this user".into(),
        });
    }
    if config.address_books.is_empty() {
        return Ok(found);
    }
    let matches = |book: &FoundBook, wanted: &str| {
        book.name == wanted || Url::parse(&book.url).is_ok_and(|u| last_segment(&u) == wanted)
    };
    for wanted in &config.address_books {
        if !found.iter().any(|b| matches(b, wanted)) {
            let names: Vec<String> = found.iter().map(|b| format!("{:?}", b.name)).collect();
            return Err(CardDavError::Setup {
                name: source.to_owned(),
                reason: format!(
                    "no address book {wanted:?} on the server; it has {} (address_books takes display names or the last part of the URL; `contactsyncd check-source` lists them)",
                    names.join(", ")
                ),
            });
        }
    }
    Ok(found
        .into_iter()
        .filter(|b| config.address_books.iter().any(|w| matches(b, w)))
        .collect())
}

/// The key of what discovery depends on: another URL, user or choice of address books
/// means discovering again.
fn discovery_key(config: &CardDavConfig) -> u64 {
    let inputs = serde_json::to_vec(&(&config.url, &config.username, &config.address_books))
        .unwrap_or_default();
    // 0 is what a failure row stores before any discovery.
    xxhash_rust::xxh3::xxh3_64(&inputs).max(1)
}

// ---------------------------------------------------------------------------------------
// Polling one address book

/// What a listing of a book found (sync-collection or PROPFIND).
#[derive(Debug, Default)]
struct Listing {
    /// URL → etag of members changed (or, for a full listing, all members).
    members: Vec<(String, Option<String>)>,
    deleted: Vec<String>,
    /// A full listing: every member is named, so a cached card not named is gone.
    complete: bool,
    token: Option<String>,
    truncated: bool,
}

enum SyncAnswer {
    Listing(Listing),
    InvalidToken,
}

fn sync_body(token: Option<&str>) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<D:sync-collection xmlns:D="DAV:"><D:sync-token>{}</D:sync-token><D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"#,
        xml_escape(token.unwrap_or_default())
    )
}

async fn sync_collection(
    client: &mut Client,
    book: &Url,
    token: Option<&str>,
) -> Result<SyncAnswer, CardDavError> {
    const WHAT: &str = "REPORT sync-collection";
    let report = Method::from_bytes(b"REPORT").unwrap_or(Method::GET);
    let answer = client
        .send(
            &report,
            book,
            None,
            Some(&sync_body(token)),
            WHAT,
            MAX_ANSWER_BYTES,
        )
        .await
        .map_err(|f| too_large(f, client, WHAT))?;
    // RFC 6578 §3.2: an invalid or expired token is 403 with DAV:valid-sync-token; Xandikos
    // answers 412 (Precondition Failed).
    let names_valid_token = || {
        parse_xml(&answer.body).ok().is_some_and(|root| {
            root.is(DAV, "valid-sync-token") || root.find(DAV, "valid-sync-token").is_some()
        })
    };
    if answer.status == StatusCode::PRECONDITION_FAILED
        || (answer.status == StatusCode::FORBIDDEN && names_valid_token())
    {
        return Ok(SyncAnswer::InvalidToken);
    }
    if answer.status != StatusCode::MULTI_STATUS {
        return Err(CardDavError::Status {
            name: client.source.clone(),
            status: answer.status,
            what: WHAT,
        });
    }
    let root = parse_xml(&answer.body).map_err(|r| client.garbage(WHAT, r))?;
    let responses = multistatus(&root).map_err(|r| client.garbage(WHAT, r))?;
    let mut listing = Listing {
        complete: token.is_none(),
        ..Listing::default()
    };
    for response in &responses {
        let url = card_url(&answer.url, &response.href)
            .ok_or_else(|| client.garbage(WHAT, "an href that is no URL".into()))?;
        let book = card_url(book, book.as_str()).unwrap_or_else(|| book.clone());
        let is_collection =
            url.as_str().trim_end_matches('/') == book.as_str().trim_end_matches('/');
        match response.status {
            // RFC 6578 §3.6: the collection itself with 507: more changes than one answer.
            Some(507) if is_collection => listing.truncated = true,
            Some(404) => listing.deleted.push(url.to_string()),
            _ if is_collection || url.as_str().ends_with('/') => {}
            Some(status) if status != 200 => {
                return Err(client.garbage(WHAT, format!("a member answered with status {status}")));
            }
            _ => {
                let etag = response
                    .prop(DAV, "getetag")
                    .map(|e| e.trimmed().to_owned());
                listing.members.push((url.to_string(), etag));
            }
        }
    }
    listing.token = root
        .child(DAV, "sync-token")
        .map(|t| t.trimmed().to_owned())
        .filter(|t| !t.is_empty());
    if listing.token.is_none() {
        return Err(client.garbage(WHAT, "no sync-token in the answer".into()));
    }
    Ok(SyncAnswer::Listing(listing))
}

/// PROPFIND depth 1 with getetag: every member, for servers without sync-collection.
async fn list_members(client: &mut Client, book: &Url) -> Result<Listing, CardDavError> {
    const WHAT: &str = "PROPFIND (listing)";
    const BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>"#;
    let propfind = Method::from_bytes(b"PROPFIND").unwrap_or(Method::GET);
    let (answered, root) = client
        .multistatus(&propfind, book, Some("1"), BODY, WHAT)
        .await
        .map_err(|f| too_large(f, client, WHAT))?;
    let responses = multistatus(&root).map_err(|r| client.garbage(WHAT, r))?;
    let mut listing = Listing {
        complete: true,
        ..Listing::default()
    };
    for response in &responses {
        let url = card_url(&answered, &response.href)
            .ok_or_else(|| client.garbage(WHAT, "an href that is no URL".into()))?;
        let is_collection = response
            .prop(DAV, "resourcetype")
            .is_some_and(|t| t.child(DAV, "collection").is_some())
            || url.as_str().ends_with('/');
        if is_collection {
            continue;
        }
        let etag = response
            .prop(DAV, "getetag")
            .map(|e| e.trimmed().to_owned());
        listing.members.push((url.to_string(), etag));
    }
    Ok(listing)
}

/// addressbook-multiget of `urls` (at most `MULTIGET_BATCH`); a batch whose answer is too
/// large is split, and a single card too large is refused with its own error.
async fn multiget(
    client: &mut Client,
    book: &Url,
    urls: &[String],
    fetched: &mut Vec<FetchedCard>,
    gone: &mut Vec<String>,
) -> Result<(), CardDavError> {
    const WHAT: &str = "REPORT addressbook-multiget";
    let report = Method::from_bytes(b"REPORT").unwrap_or(Method::GET);
    let mut pending: Vec<&[String]> = urls.chunks(MULTIGET_BATCH).rev().collect();
    while let Some(batch) = pending.pop() {
        let mut body = String::from(
            r#"<?xml version="1.0" encoding="utf-8"?>
<C:addressbook-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:prop><D:getetag/><C:address-data/></D:prop>"#,
        );
        for url in batch {
            let path = Url::parse(url).map_or_else(|_| url.clone(), |u| u.path().to_owned());
            body.push_str(&format!("<D:href>{}</D:href>", xml_escape(&path)));
        }
        body.push_str("</C:addressbook-multiget>");
        let limit = if batch.len() == 1 {
            // One card: its limit plus room for the XML around it and escaping.
            MAX_CARD_BYTES * 2 + 64 * 1024
        } else {
            MAX_ANSWER_BYTES
        };
        let answer = match client
            .send(&report, book, Some("1"), Some(&body), WHAT, limit)
            .await
        {
            Ok(answer) => answer,
            Err(Failure::TooLarge) if batch.len() > 1 => {
                let (first, second) = batch.split_at(batch.len() / 2);
                pending.push(second);
                pending.push(first);
                continue;
            }
            Err(Failure::TooLarge) => {
                fetched.push(FetchedCard {
                    url: batch[0].clone(),
                    etag: None,
                    body: Err(too_big_card(limit)),
                    size: limit as u64,
                });
                continue;
            }
            Err(Failure::Error(err)) => return Err(err),
        };
        if answer.status != StatusCode::MULTI_STATUS {
            return Err(CardDavError::Status {
                name: client.source.clone(),
                status: answer.status,
                what: WHAT,
            });
        }
        let root = parse_xml(&answer.body).map_err(|r| client.garbage(WHAT, r))?;
        let responses = multistatus(&root).map_err(|r| client.garbage(WHAT, r))?;
        let mut answered: HashSet<String> = HashSet::new();
        for response in &responses {
            let Some(url) = card_url(&answer.url, &response.href) else {
                return Err(client.garbage(WHAT, "an href that is no URL".into()));
            };
            let url = url.to_string();
            answered.insert(url.clone());
            if response.status == Some(404) {
                gone.push(url);
                continue;
            }
            let Some(data) = response.prop(CARDDAV, "address-data") else {
                if response.status.is_some_and(|s| s != 200) {
                    return Err(client.garbage(
                        WHAT,
                        format!(
                            "a card answered with status {}",
                            response.status.unwrap_or(0)
                        ),
                    ));
                }
                return Err(client.garbage(WHAT, "a card without address-data".into()));
            };
            let etag = response
                .prop(DAV, "getetag")
                .map(|e| e.trimmed().to_owned());
            let size = data.text.len();
            fetched.push(FetchedCard {
                url,
                etag,
                body: if size > MAX_CARD_BYTES {
                    Err(too_big_card(size))
                } else {
                    Ok(data.text.clone().into_bytes())
                },
                size: size as u64,
            });
        }
        if batch.iter().any(|u| !answered.contains(u)) {
            return Err(client.garbage(
                WHAT,
                "the answer leaves out a card that was asked for".into(),
            ));
        }
    }
    Ok(())
}

fn too_big_card(size: usize) -> String {
    format!(
        "the card is {:.1} MiB, more than the {} MiB one card may have (a large photo?); it is skipped",
        size as f64 / (1024.0 * 1024.0),
        MAX_CARD_BYTES >> 20
    )
}

/// Polls one address book from its stored token; returns what to store.
/// `cached`: the book's cached cards (URL → etag), read before any request (the store is
/// not held across the network).
async fn poll_book(
    client: &mut Client,
    source: &str,
    book: &CardDavBook,
    mut cached: HashMap<String, Option<String>>,
) -> Result<BookPoll, CardDavError> {
    let url =
        Url::parse(&book.url).map_err(|_| client.garbage("discovery", "a bad book URL".into()))?;
    let mut poll = BookPoll {
        book: book.url.clone(),
        ..BookPoll::default()
    };
    let mut token = book.sync_token.clone().filter(|_| book.supports_sync);
    let mut full_listing_seen: Option<HashSet<String>> = None;
    // URL → the card as last fetched, or None: deleted. Sorted, so the store's writes come
    // in URL order.
    let mut outcome: std::collections::BTreeMap<String, Option<FetchedCard>> =
        std::collections::BTreeMap::new();
    let mut retried_token = false;
    for _ in 0..MAX_ROUNDS {
        let listing = if book.supports_sync {
            match sync_collection(client, &url, token.as_deref()).await? {
                SyncAnswer::Listing(listing) => listing,
                SyncAnswer::InvalidToken if token.is_some() && !retried_token => {
                    // Expired or invalid: a full listing, which is authoritative.
                    tracing::info!(
                        source,
                        "the server no longer knows our sync-token: reading the address book's full listing"
                    );
                    retried_token = true;
                    token = None;
                    continue;
                }
                SyncAnswer::InvalidToken => list_members(client, &url).await?,
            }
        } else {
            list_members(client, &url).await?
        };
        let to_fetch: Vec<String> = listing
            .members
            .iter()
            .filter(|(member, etag)| {
                // Without an etag there is nothing to compare: fetch it.
                etag.is_none() || cached.get(member) != Some(etag)
            })
            .map(|(member, _)| member.clone())
            .collect();
        let mut fetched = Vec::new();
        let mut gone = Vec::new();
        multiget(client, &url, &to_fetch, &mut fetched, &mut gone).await?;
        // The rounds after a truncated full listing continue it: their members belong to it.
        if listing.complete || full_listing_seen.is_some() {
            let seen = full_listing_seen.get_or_insert_with(HashSet::new);
            seen.extend(listing.members.iter().map(|(m, _)| m.clone()));
        }
        // A later round's word on a card replaces an earlier one's (deleted, then created
        // again while the answers were truncated).
        for url in listing.deleted.into_iter().chain(gone) {
            cached.remove(&url);
            outcome.insert(url, None);
        }
        for card in fetched {
            cached.insert(card.url.clone(), card.etag.clone());
            outcome.insert(card.url.clone(), Some(card));
        }
        poll.sync_token = listing.token.clone();
        token = listing.token;
        if !listing.truncated {
            break;
        }
    }
    // An authoritative listing: what the cache has and the listing did not name is gone
    // (deletions made while our token was invalid are found so).
    if let Some(seen) = full_listing_seen {
        let missing: Vec<String> = cached
            .keys()
            .filter(|url| !seen.contains(*url))
            .cloned()
            .collect();
        for url in missing {
            outcome.insert(url, None);
        }
    }
    for (url, card) in outcome {
        match card {
            Some(card) => poll.changed.push(card),
            None => poll.deleted.push(url),
        }
    }
    Ok(poll)
}

/// Drops the cached cards of CardDAV sources the configuration no longer has (what
/// `sync --once` and the daemon do before they poll). A failure only delays it: the next
/// pass tries again, and nothing depends on it.
pub fn forget_unconfigured(config: &crate::config::Config, store: &mut Store) {
    let configured: Vec<&str> = config
        .sources
        .iter()
        .filter(|s| s.is_carddav())
        .map(|s| s.name.as_str())
        .collect();
    if let Err(err) = store.forget_carddav_sources_except(&configured) {
        tracing::warn!("cannot drop the cache of CardDAV sources no longer configured: {err}");
    }
}

/// A `Retry-After` value in seconds: delay-seconds, or an HTTP date (RFC 9110 §10.2.3), a
/// date already past meaning at once.
fn retry_after_seconds(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    value.parse::<u64>().ok().or_else(|| {
        let at = httpdate::parse_http_date(value).ok()?;
        Some(at.duration_since(now).map_or(0, |wait| wait.as_secs()))
    })
}

/// What a poll of a source did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollOutcome {
    /// Whether anything was stored (a change the planner must see).
    pub changed: bool,
    pub cards_changed: u64,
    pub cards_deleted: u64,
    pub traffic: Traffic,
}

impl PollOutcome {
    /// The debug line of a poll, the same from `sync --once` and the daemon.
    pub fn log(&self, source: &str) {
        tracing::debug!(
            source,
            changed = self.cards_changed,
            deleted = self.cards_deleted,
            requests = self.traffic.requests,
            bytes = self.traffic.bytes_received,
            "polled the CardDAV server"
        );
    }
}

/// Asks the server what changed since the last poll and stores it: discovery when the
/// configuration changed or nothing is known, then per address book sync-collection from
/// the stored token (or a PROPFIND listing), the changed cards by multiget, the token last,
/// all in one transaction. A poll that finds nothing new writes nothing. A failure is
/// recorded (the source counts as unknown) and returned.
pub async fn poll(
    source: &SourceConfig,
    store: &mut Store,
    now: store::Timestamp,
) -> Result<PollOutcome, CardDavError> {
    Poller::new(source.clone()).poll(store, now).await
}

/// Polls one source again and again (the daemon), reading its password once rather than
/// running a `password_command` (which may ask a password manager) every poll; read again
/// after the server refused it.
pub struct Poller {
    source: SourceConfig,
    password: Option<Option<String>>,
}

impl Poller {
    pub fn new(source: SourceConfig) -> Self {
        Self {
            source,
            password: None,
        }
    }

    /// [`poll`] with the password kept.
    pub async fn poll(
        &mut self,
        store: &mut Store,
        now: store::Timestamp,
    ) -> Result<PollOutcome, CardDavError> {
        let source = &self.source;
        let Some(config) = &source.carddav else {
            return Ok(PollOutcome::default());
        };
        let password = match &self.password {
            Some(password) => password.clone(),
            None => match read_password(&config.password, config.username.is_some()) {
                Ok(password) => password,
                Err(reason) => {
                    let err = CardDavError::Setup {
                        name: source.name.clone(),
                        reason,
                    };
                    return finish(source, store, now, Err(err));
                }
            },
        };
        let result = match Client::with_password(source, config, password.clone()) {
            Ok(mut client) => poll_inner(&mut client, source, config, store).await,
            Err(err) => Err(err),
        };
        self.password = match &result {
            Err(CardDavError::Unauthorized { .. }) => None,
            _ => Some(password),
        };
        finish(source, store, now, result)
    }
}

/// Records a failure with the source (it counts as unknown until a poll completes).
fn finish(
    source: &SourceConfig,
    store: &mut Store,
    now: store::Timestamp,
    result: Result<PollOutcome, CardDavError>,
) -> Result<PollOutcome, CardDavError> {
    let record = match &result {
        Ok(_) => Ok(()),
        Err(err) => store.record_carddav_failure(&source.name, &err.to_string(), now),
    };
    if let Err(err) = record {
        return Err(CardDavError::Setup {
            name: source.name.clone(),
            reason: format!("state database: {err}"),
        });
    }
    result
}

async fn poll_inner(
    client: &mut Client,
    source: &SourceConfig,
    config: &CardDavConfig,
    store: &mut Store,
) -> Result<PollOutcome, CardDavError> {
    let state_error = |err: store::StoreError| CardDavError::Setup {
        name: source.name.clone(),
        reason: format!("state database: {err}"),
    };
    let key = discovery_key(config);
    let known = store.carddav_source(&source.name).map_err(state_error)?;
    let mut books = store.carddav_books(&source.name).map_err(state_error)?;
    let mut discovered = None;
    if known.as_ref().is_none_or(|(k, _)| *k != key) || books.is_empty() {
        let start = Url::parse(&config.url).map_err(|_| CardDavError::Setup {
            name: source.name.clone(),
            reason: "the carddav URL does not parse".into(),
        })?;
        let found = choose_books(&source.name, config, discover(client, &start).await?)?;
        books = found
            .into_iter()
            .map(|f| {
                let before = books.iter().find(|b| b.url == f.url);
                CardDavBook {
                    sync_token: before.and_then(|b| b.sync_token.clone()),
                    url: f.url,
                    name: f.name,
                    supports_sync: f.supports_sync,
                }
            })
            .collect();
        discovered = Some(books.clone());
    }
    let mut outcome = PollOutcome::default();
    let mut book_polls = Vec::with_capacity(books.len());
    for book in &books {
        let cached = store
            .carddav_etags(&source.name, &book.url)
            .map_err(state_error)?;
        let polled = poll_book(client, &source.name, book, cached).await?;
        outcome.cards_changed += polled.changed.len() as u64;
        outcome.cards_deleted += polled.deleted.len() as u64;
        book_polls.push(polled);
    }
    let poll = CardDavPoll {
        source: source.name.clone(),
        discovered_for: key,
        books: discovered,
        book_polls,
    };
    outcome.changed = store.apply_carddav_poll(&poll).map_err(state_error)?;
    outcome.traffic = client.traffic;
    Ok(outcome)
}

/// `check-source`: what discovery finds, with each chosen book's card count. Stores nothing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceCheck {
    pub books: Vec<CheckedBook>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckedBook {
    pub url: String,
    pub name: String,
    pub supports_sync: bool,
    pub cards: usize,
    /// Whether `address_books` selects it (every book when the key is not set).
    pub read: bool,
}

pub async fn check(source: &SourceConfig) -> Result<SourceCheck, CardDavError> {
    let Some(config) = &source.carddav else {
        return Ok(SourceCheck { books: Vec::new() });
    };
    let mut client = Client::new(source, config)?;
    let start = Url::parse(&config.url).map_err(|_| CardDavError::Setup {
        name: source.name.clone(),
        reason: "the carddav URL does not parse".into(),
    })?;
    let found = discover(&mut client, &start).await?;
    let chosen = choose_books(&source.name, config, found.clone())?;
    let mut books = Vec::new();
    for book in found {
        let url = Url::parse(&book.url)
            .map_err(|_| client.garbage("discovery", "a bad book URL".into()))?;
        let cards = list_members(&mut client, &url).await?.members.len();
        books.push(CheckedBook {
            read: chosen.iter().any(|c| c.url == book.url),
            url: book.url,
            name: book.name,
            supports_sync: book.supports_sync,
            cards,
        });
    }
    Ok(SourceCheck { books })
}

// ---------------------------------------------------------------------------------------
// The scan side: the cache, examined like files.

/// The start of the reason of a CardDAV source that was never polled: not a problem at a
/// daemon's first start (its poll follows at once), so logs say it at info, not as a warning.
pub const NOT_POLLED_YET: &str = "not read from the server yet";

/// Why a CardDAV source is unknown now, from the state alone: never polled, or the last
/// poll failed. `None`: the cache holds what the server last gave completely.
pub fn unknown_reason(
    store: &Store,
    source: &SourceConfig,
) -> Result<Option<String>, store::StoreError> {
    let Some(config) = &source.carddav else {
        return Ok(None);
    };
    Ok(match store.carddav_source(&source.name)? {
        None => Some(format!("{NOT_POLLED_YET}: `contactsyncd sync --once` (or the running daemon) polls it")),
        Some((_, Some(error))) => Some(error),
        Some((key, None)) if key != discovery_key(config) => Some(
            "its carddav URL, username or address_books changed since the last poll: the next poll reads it anew".into(),
        ),
        Some((_, None)) => None,
    })
}

/// A card's fingerprint in its `source_file` row: a card has no mtime or inode, so its
/// (size, 0, content hash) stands for them; the content hash decides.
fn fingerprint(card: &CachedCard) -> (u64, i64, u64) {
    (card.size, 0, card.content_hash)
}

/// The cached cards of a source, sorted by URL (the "files" of the source).
pub fn cards(store: &Store, source: &SourceConfig) -> Result<Vec<CachedCard>, store::StoreError> {
    store.carddav_cards(&source.name)
}

/// Whether every cached card has its stored record (same source, fingerprint and
/// derivation): the CardDAV half of `source::unchanged`.
pub fn unchanged_cards(
    cards: &[CachedCard],
    source: &SourceConfig,
    key: u64,
    stored: &HashMap<String, store::StoredFingerprint>,
) -> bool {
    cards.iter().all(|card| {
        card.error.is_none()
            && stored.get(&card.url).is_some_and(|(owner, settled)| {
                *owner == source.name && *settled == Some((fingerprint(card), key))
            })
    })
}

/// `examine_file` for a cached card: unchanged when its record has the same fingerprint and
/// derivation; else its bytes are read from the cache and parsed.
pub(super) fn examine_card(
    store: &Store,
    card: &CachedCard,
    previous: Option<&FileRecord>,
    derivation: Derivation<'_>,
    scan: &mut Scan,
) -> Result<Examined, store::StoreError> {
    let Derivation {
        source,
        region,
        key,
    } = derivation;
    let path = PathBuf::from(&card.url);
    let mut defer = |state: FileState, error: String| {
        scan.files_deferred += 1;
        Examined::Deferred(FileChange::Deferred {
            path: path.clone(),
            source: source.name.clone(),
            state,
            error,
        })
    };
    if let Some(error) = &card.error {
        return Ok(defer(FileState::Unreadable, error.clone()));
    }
    let stat = fingerprint(card);
    // A card recorded under another source (one renamed) is parsed again under this one.
    let settled = previous.is_some_and(|p| {
        p.state == FileState::Ok
            && p.stat == Some(stat)
            && p.derived_with == Some(key)
            && p.source == source.name
    });
    if settled {
        return Ok(Examined::Unchanged);
    }
    scan.files_read += 1;
    let Some(bytes) = store.carddav_card_body(&source.name, &card.url)? else {
        return Ok(defer(
            FileState::Unreadable,
            "the card's bytes are missing from the cache".into(),
        ));
    };
    scan.files_parsed += 1;
    Ok(match super::understand_file(&bytes, source, region) {
        Ok(contribution) => Examined::Parsed(
            FileChange::Updated {
                record: FileRecord {
                    path: path.clone(),
                    source: source.name.clone(),
                    stat: Some(stat),
                    content_hash: Some(card.content_hash),
                    state: FileState::Ok,
                    last_error: None,
                    cards: u32::try_from(contribution.cards).unwrap_or(u32::MAX),
                    card_errors: u32::try_from(contribution.card_errors).unwrap_or(u32::MAX),
                    derived_with: Some(key),
                    racy: false,
                },
                phones: Some(contribution.phones.clone()),
            },
            contribution,
        ),
        // The server's answer is complete: a card that ends early will not be finished by
        // waiting, so it is bad, not incomplete.
        Err((FileState::Incomplete, error)) => defer(FileState::Unreadable, error),
        Err((state, error)) => defer(state, error),
    })
}

#[cfg(test)]
mod tests {
    //! The client against a small in-process CardDAV server whose answers can be scripted:
    //! what real servers cannot be made to answer on demand (403/412 for a token, 507, 401,
    //! 503 with Retry-After, garbage). Radicale and Xandikos themselves are in tests/it.

    use std::collections::{BTreeMap, VecDeque};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::Config;

    /// One scripted answer, used before the server's own behaviour.
    #[derive(Clone)]
    struct Scripted {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    }

    #[derive(Default)]
    struct FakeBook {
        /// href → (etag, body)
        cards: BTreeMap<String, (String, String)>,
        /// (version, href) of every change; the token is `t{version}`.
        history: Vec<(u64, String)>,
        version: u64,
        /// Answer at most this many rows per sync report, then a 507 row.
        page: Option<usize>,
        sync_support: bool,
        /// Serve discovery as a server root: `/` is no DAV resource, `/.well-known/carddav`
        /// redirects to the principal `/principal/`, whose home set `/home/` holds `/book/`
        /// and an empty `/other/`.
        discovery: bool,
        script: VecDeque<Scripted>,
        /// (method, path, body) of every request.
        requests: Vec<(String, String, String)>,
        /// The head (request line and headers, lower case) of the last request.
        last_head: String,
    }

    impl FakeBook {
        fn put(&mut self, href: &str, body: &str) {
            self.version += 1;
            let etag = format!("\"e{}\"", self.version);
            self.cards.insert(href.to_owned(), (etag, body.to_owned()));
            self.history.push((self.version, href.to_owned()));
        }

        fn delete(&mut self, href: &str) {
            self.version += 1;
            self.cards.remove(href);
            self.history.push((self.version, href.to_owned()));
        }

        /// Deletes without a trace in the history: only a full listing can tell.
        fn forget(&mut self, href: &str) {
            self.cards.remove(href);
        }

        fn answer(&mut self, method: &str, path: &str, body: &str) -> Scripted {
            self.requests
                .push((method.to_owned(), path.to_owned(), body.to_owned()));
            if let Some(scripted) = self.script.pop_front() {
                return scripted;
            }
            let ok = |body: String| Scripted {
                status: 207,
                headers: Vec::new(),
                body,
            };
            if self.discovery && method == "PROPFIND" {
                let response = |href: &str, props: &str| {
                    format!(
                        "<D:response><D:href>{href}</D:href><D:propstat><D:prop>{props}</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
                    )
                };
                let multistatus = |responses: String| {
                    ok(format!(
                        r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">{responses}</D:multistatus>"#
                    ))
                };
                match path {
                    "/" => {
                        return Scripted {
                            status: 405,
                            headers: Vec::new(),
                            body: String::new(),
                        };
                    }
                    "/.well-known/carddav" => {
                        return Scripted {
                            status: 301,
                            headers: vec![("Location", "/principal/".into())],
                            body: String::new(),
                        };
                    }
                    "/principal/" => {
                        return multistatus(response(
                            "/principal/",
                            "<D:resourcetype><D:collection/><D:principal/></D:resourcetype><D:current-user-principal><D:href>/principal/</D:href></D:current-user-principal><C:addressbook-home-set><D:href>/home/</D:href></C:addressbook-home-set>",
                        ));
                    }
                    "/home/" => {
                        let book =
                            "<D:resourcetype><D:collection/><C:addressbook/></D:resourcetype>";
                        return multistatus(format!(
                            "{}{}{}",
                            response("/home/", "<D:resourcetype><D:collection/></D:resourcetype>"),
                            response(
                                "/book/",
                                &format!(
                                    "{book}<D:displayname>Book</D:displayname><D:supported-report-set><D:supported-report><D:report><D:sync-collection/></D:report></D:supported-report></D:supported-report-set>"
                                )
                            ),
                            response(
                                "/other/",
                                &format!("{book}<D:displayname>Other</D:displayname>")
                            ),
                        ));
                    }
                    "/other/" => {
                        return multistatus(response(
                            "/other/",
                            "<D:resourcetype><D:collection/></D:resourcetype>",
                        ));
                    }
                    _ => {}
                }
            }
            match (method, body) {
                ("PROPFIND", body) if body.contains("current-user-principal") => {
                    let report = if self.sync_support {
                        "<D:supported-report><D:report><D:sync-collection/></D:report></D:supported-report>"
                    } else {
                        ""
                    };
                    ok(format!(
                        r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:response><D:href>/book/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/><C:addressbook/></D:resourcetype><D:displayname>Book</D:displayname><D:supported-report-set>{report}</D:supported-report-set></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#
                    ))
                }
                ("PROPFIND", _) => {
                    let mut xml = String::from(
                        r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/book/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#,
                    );
                    for (href, (etag, _)) in &self.cards {
                        xml.push_str(&format!(
                            "<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:resourcetype/><D:getetag>{etag}</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
                        ));
                    }
                    xml.push_str("</D:multistatus>");
                    ok(xml)
                }
                ("REPORT", body) if body.contains("sync-collection") => self.sync(body),
                ("REPORT", body) if body.contains("addressbook-multiget") => {
                    let mut xml = String::from(
                        r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">"#,
                    );
                    for href in between_all(body, "<D:href>", "</D:href>") {
                        match self.cards.get(&href) {
                            Some((etag, card)) => xml.push_str(&format!(
                                "<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:getetag>{etag}</D:getetag><C:address-data>{}</C:address-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>",
                                xml_escape(card)
                            )),
                            None => xml.push_str(&format!(
                                "<D:response><D:href>{href}</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>"
                            )),
                        }
                    }
                    xml.push_str("</D:multistatus>");
                    ok(xml)
                }
                _ => Scripted {
                    status: 405,
                    headers: Vec::new(),
                    body: String::new(),
                },
            }
        }

        /// Tokens are `t{version}` or, inside a truncated answer, `t{version}:{rows sent}`.
        fn sync(&mut self, body: &str) -> Scripted {
            let token = between_all(body, "<D:sync-token>", "</D:sync-token>")
                .pop()
                .unwrap_or_default();
            let parsed = if token.is_empty() {
                Some((0, 0))
            } else {
                token.strip_prefix('t').and_then(|t| {
                    let (version, skip) = t.split_once(':').unwrap_or((t, "0"));
                    Some((version.parse::<u64>().ok()?, skip.parse::<usize>().ok()?))
                })
            };
            let Some((since, skip)) = parsed.filter(|(v, _)| *v <= self.version) else {
                return Scripted {
                    status: 403,
                    headers: Vec::new(),
                    body: r#"<D:error xmlns:D="DAV:"><D:valid-sync-token/></D:error>"#.into(),
                };
            };
            let mut changed: Vec<String> = self
                .history
                .iter()
                .filter(|(v, _)| *v > since)
                .map(|(_, h)| h.clone())
                .collect();
            if token.is_empty() {
                changed = self.cards.keys().cloned().collect();
            }
            changed.sort();
            changed.dedup();
            let rest = &changed[skip.min(changed.len())..];
            let (rows, truncated) = match self.page {
                Some(page) if rest.len() > page => (&rest[..page], true),
                _ => (rest, false),
            };
            let mut xml = String::from(r#"<D:multistatus xmlns:D="DAV:">"#);
            for href in rows {
                match self.cards.get(href) {
                    Some((etag, _)) => xml.push_str(&format!(
                        "<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:getetag>{etag}</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
                    )),
                    None => xml.push_str(&format!(
                        "<D:response><D:href>{href}</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>"
                    )),
                }
            }
            let next = if truncated {
                xml.push_str("<D:response><D:href>/book/</D:href><D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>");
                format!("t{since}:{}", skip + rows.len())
            } else {
                format!("t{}", self.version)
            };
            xml.push_str(&format!(
                "<D:sync-token>{next}</D:sync-token></D:multistatus>"
            ));
            Scripted {
                status: 207,
                headers: Vec::new(),
                body: xml,
            }
        }
    }

    fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(open) {
            let after = &rest[start + open.len()..];
            let Some(end) = after.find(close) else { break };
            found.push(after[..end].to_owned());
            rest = &after[end + close.len()..];
        }
        found
    }

    /// Serves `book` on a loopback port until the test ends; returns the port.
    async fn serve(book: Arc<Mutex<FakeBook>>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let book = Arc::clone(&book);
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 8192];
                    let (head_end, length) = loop {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (end + 4, length);
                        }
                    };
                    while data.len() < head_end + length {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        data.extend_from_slice(&buf[..n]);
                    }
                    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
                    let body = String::from_utf8_lossy(&data[head_end..]).into_owned();
                    let mut first = head.lines().next().unwrap_or_default().split(' ');
                    let method = first.next().unwrap_or_default().to_owned();
                    let path = first.next().unwrap_or_default().to_owned();
                    let answer = {
                        let mut book = book.lock().unwrap();
                        book.last_head = head.to_lowercase();
                        book.answer(&method, &path, &body)
                    };
                    let mut response = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nContent-Type: application/xml\r\nConnection: close\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    for (name, value) in &answer.headers {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(&answer.body);
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        port
    }

    fn card(n: usize) -> String {
        format!(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Person;P{n};;;\r\nFN:P{n} Person\r\nTEL;TYPE=CELL:+49170{n:07}\r\nEND:VCARD\r\n"
        )
    }

    fn book_with(cards: usize) -> Arc<Mutex<FakeBook>> {
        let mut book = FakeBook {
            sync_support: true,
            ..FakeBook::default()
        };
        for n in 0..cards {
            book.put(&format!("/book/c{n:04}.vcf"), &card(n));
        }
        Arc::new(Mutex::new(book))
    }

    /// The book served on a port of its own, a configuration with one CardDAV source for
    /// it (its state directory lives as long as the returned guard), and an empty store.
    async fn served(book: &Arc<Mutex<FakeBook>>) -> (Config, Store, tempfile::TempDir) {
        let port = serve(Arc::clone(book)).await;
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(port, dir.path());
        (config, Store::open_in_memory().unwrap(), dir)
    }

    /// The URL of a card of the served book.
    fn served_card_url(config: &Config, name: &str) -> String {
        let book = &config.sources[0].carddav.as_ref().unwrap().url;
        format!("{book}{name}")
    }

    fn config_for(port: u16, dir: &std::path::Path) -> Config {
        let text = format!(
            "state_dir = \"{}\"\ndefault_region = \"DE\"\n[[source]]\nname = \"dav\"\ncarddav = \"http://127.0.0.1:{port}/book/\"\n",
            dir.display()
        );
        crate::config::parse(&text, &dir.join("config.toml")).unwrap()
    }

    /// The cached card URLs, by their path.
    fn cached(store: &Store) -> Vec<String> {
        store
            .carddav_cards("dav")
            .unwrap()
            .into_iter()
            .map(|c| Url::parse(&c.url).unwrap().path().to_owned())
            .collect()
    }

    fn requests(book: &Arc<Mutex<FakeBook>>) -> Vec<(String, String, String)> {
        std::mem::take(&mut book.lock().unwrap().requests)
    }

    #[tokio::test]
    async fn a_first_poll_reads_in_batches_of_100_and_a_poll_with_nothing_new_is_one_request_and_no_write()
     {
        let book = book_with(250);
        let (config, mut store, _dir) = served(&book).await;
        let outcome = poll(&config.sources[0], &mut store, 1).await.unwrap();
        assert!(outcome.changed);
        assert_eq!(outcome.cards_changed, 250);
        assert_eq!(cached(&store).len(), 250);
        let seen = requests(&book);
        let multigets: Vec<usize> = seen
            .iter()
            .filter(|(_, _, body)| body.contains("addressbook-multiget"))
            .map(|(_, _, body)| between_all(body, "<D:href>", "</D:href>").len())
            .collect();
        assert_eq!(multigets, [100, 100, 50], "batches of at most 100");
        let head = book.lock().unwrap().last_head.clone();
        assert!(
            head.contains("accept-encoding: gzip"),
            "servers compress when asked: {head}"
        );

        let writes_before = store.conn().total_changes();
        let outcome = poll(&config.sources[0], &mut store, 2).await.unwrap();
        assert!(!outcome.changed);
        assert_eq!(
            outcome.traffic.requests, 1,
            "one sync-collection with the token"
        );
        assert_eq!(requests(&book).len(), 1);
        assert_eq!(
            store.conn().total_changes(),
            writes_before,
            "a poll with nothing new writes nothing"
        );
    }

    #[tokio::test]
    async fn changes_and_deletions_arrive_with_the_token_and_only_changed_cards_are_fetched() {
        let book = book_with(5);
        let (config, mut store, _dir) = served(&book).await;
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        requests(&book);
        {
            let mut book = book.lock().unwrap();
            book.put("/book/c0001.vcf", &card(101));
            book.delete("/book/c0002.vcf");
            book.put("/book/new.vcf", &card(7));
        }
        let outcome = poll(&config.sources[0], &mut store, 2).await.unwrap();
        assert_eq!((outcome.cards_changed, outcome.cards_deleted), (2, 1));
        assert_eq!(
            cached(&store),
            [
                "/book/c0000.vcf",
                "/book/c0001.vcf",
                "/book/c0003.vcf",
                "/book/c0004.vcf",
                "/book/new.vcf"
            ]
        );
        let seen = requests(&book);
        let fetched: Vec<String> = seen
            .iter()
            .flat_map(|(_, _, body)| between_all(body, "<D:href>", "</D:href>"))
            .collect();
        assert_eq!(fetched, ["/book/c0001.vcf", "/book/new.vcf"]);
        let body = store
            .carddav_card_body("dav", &served_card_url(&config, "c0001.vcf"))
            .unwrap()
            .unwrap();
        // XML turns a literal CR LF into LF (servers that keep CR send `&#13;`).
        assert_eq!(body, card(101).replace("\r\n", "\n").as_bytes());
    }

    #[rstest::rstest]
    #[case::forbidden_with_valid_sync_token(
        403,
        r#"<D:error xmlns:D="DAV:"><D:valid-sync-token/></D:error>"#
    )]
    #[case::precondition_failed_as_xandikos(412, "")]
    #[tokio::test]
    async fn an_invalid_token_leads_to_a_full_listing_that_finds_deletions(
        #[case] status: u16,
        #[case] body: &str,
    ) {
        let book = book_with(4);
        let (config, mut store, _dir) = served(&book).await;
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        {
            let mut book = book.lock().unwrap();
            // Gone while our token was lost: no change row says so, only the listing.
            book.forget("/book/c0001.vcf");
            book.script.push_back(Scripted {
                status,
                headers: Vec::new(),
                body: body.to_owned(),
            });
        }
        let outcome = poll(&config.sources[0], &mut store, 2).await.unwrap();
        assert_eq!(outcome.cards_deleted, 1);
        assert_eq!(
            cached(&store),
            ["/book/c0000.vcf", "/book/c0002.vcf", "/book/c0003.vcf"]
        );
        let token = store.carddav_books("dav").unwrap()[0].sync_token.clone();
        assert_eq!(token.as_deref(), Some("t4"), "the new token is stored");
    }

    #[tokio::test]
    async fn a_truncated_answer_is_polled_again_until_complete() {
        let book = book_with(7);
        book.lock().unwrap().page = Some(3);
        let (config, mut store, _dir) = served(&book).await;
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        assert_eq!(cached(&store).len(), 7);
        let syncs = requests(&book)
            .iter()
            .filter(|(_, _, b)| b.contains("sync-collection"))
            .count();
        assert_eq!(syncs, 3, "3 + 3 + 1 rows");
        let token = store.carddav_books("dav").unwrap()[0].sync_token.clone();
        assert_eq!(token.as_deref(), Some("t7"));
    }

    #[rstest::rstest]
    #[case::unauthorized(401, "", "wrong user name or password for source dav")]
    #[case::server_error(
        500,
        "",
        "answered 500 Internal Server Error to REPORT sync-collection"
    )]
    #[case::garbage(207, "<html>oops", "not CardDAV")]
    #[case::not_multistatus(200, "<p>hello</p>", "answered 200 OK to REPORT sync-collection")]
    #[case::no_token(
        207,
        r#"<D:multistatus xmlns:D="DAV:"></D:multistatus>"#,
        "no sync-token"
    )]
    #[tokio::test]
    async fn a_failed_poll_keeps_the_cache_and_makes_the_source_unknown(
        #[case] status: u16,
        #[case] body: &str,
        #[case] expected: &str,
    ) {
        let book = book_with(3);
        let (config, mut store, _dir) = served(&book).await;
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        {
            let mut book = book.lock().unwrap();
            book.delete("/book/c0000.vcf");
            book.script.push_back(Scripted {
                status,
                headers: Vec::new(),
                body: body.to_owned(),
            });
        }
        let err = poll(&config.sources[0], &mut store, 2).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        assert_eq!(cached(&store).len(), 3, "nothing of it is deleted");
        let reason = unknown_reason(&store, &config.sources[0]).unwrap();
        assert_eq!(reason, Some(err.to_string()));
        // The next poll that works ends it, and brings the change.
        poll(&config.sources[0], &mut store, 3).await.unwrap();
        assert_eq!(unknown_reason(&store, &config.sources[0]).unwrap(), None);
        assert_eq!(cached(&store).len(), 2);
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after_seconds(" 120 ", now), Some(120));
        // Wed, 21 Oct 2015 07:28:00 GMT is 1_445_412_480.
        assert_eq!(
            retry_after_seconds("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(120)
        );
        assert_eq!(
            retry_after_seconds("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(0)
        );
        assert_eq!(retry_after_seconds("soon", now), None);
    }

    #[tokio::test]
    async fn retry_after_is_waited_out_when_short_and_reported_when_long() {
        let book = book_with(1);
        let (config, mut store, _dir) = served(&book).await;
        book.lock().unwrap().script.push_back(Scripted {
            status: 503,
            headers: vec![("Retry-After", "1".into())],
            body: String::new(),
        });
        let started = std::time::Instant::now();
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(cached(&store).len(), 1);

        book.lock().unwrap().script.push_back(Scripted {
            status: 429,
            headers: vec![("Retry-After", "600".into())],
            body: String::new(),
        });
        let err = poll(&config.sources[0], &mut store, 2).await.unwrap_err();
        assert_eq!(err.retry_after(), Some(600), "{err}");
    }

    #[tokio::test]
    async fn an_oversized_card_is_refused_alone_and_reported_with_its_url() {
        let book = book_with(3);
        let photo = format!(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Big\r\nTEL:+491701111111\r\nPHOTO;ENCODING=b:{}\r\nEND:VCARD\r\n",
            "A".repeat(MAX_CARD_BYTES + 10)
        );
        book.lock().unwrap().put("/book/big.vcf", &photo);
        let (config, mut store, _dir) = served(&book).await;
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        let cards = store.carddav_cards("dav").unwrap();
        let big = cards.iter().find(|c| c.url.ends_with("/big.vcf")).unwrap();
        assert!(
            big.error
                .as_deref()
                .unwrap()
                .contains("more than the 1 MiB"),
            "{big:?}"
        );
        assert_eq!(store.carddav_card_body("dav", &big.url).unwrap(), None);

        let scan = super::super::scan(&config, &store, 2, false).unwrap();
        assert_eq!(scan.desired.contacts.len(), 3, "the neighbours sync");
        let deferred: Vec<&FileChange> = scan
            .changes
            .iter()
            .filter(|c| matches!(c, FileChange::Deferred { .. }))
            .collect();
        assert!(
            matches!(deferred.as_slice(), [FileChange::Deferred { path, .. }] if path.to_string_lossy() == big.url),
            "{deferred:?}"
        );
    }

    #[tokio::test]
    async fn without_sync_collection_each_poll_lists_etags_and_fetches_only_changes() {
        let book = book_with(3);
        book.lock().unwrap().sync_support = false;
        let (config, mut store, _dir) = served(&book).await;
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        requests(&book);
        {
            let mut book = book.lock().unwrap();
            book.put("/book/c0002.vcf", &card(9));
            book.forget("/book/c0000.vcf");
        }
        let outcome = poll(&config.sources[0], &mut store, 2).await.unwrap();
        assert_eq!((outcome.cards_changed, outcome.cards_deleted), (1, 1));
        let seen = requests(&book);
        assert_eq!(seen.len(), 2, "a PROPFIND and one multiget: {seen:?}");
        assert!(!seen.iter().any(|(_, _, b)| b.contains("sync-collection")));
        assert_eq!(cached(&store), ["/book/c0001.vcf", "/book/c0002.vcf"]);
    }

    #[tokio::test]
    async fn the_cards_become_per_card_records_under_their_url() {
        let book = book_with(2);
        let (config, mut store, _dir) = served(&book).await;
        // Before any poll: unknown, and nothing of it counts as deleted.
        let scan = super::super::scan(&config, &store, 1, false).unwrap();
        assert_eq!(scan.unknown_sources().count(), 1);
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        let scan = super::super::scan(&config, &store, 2, false).unwrap();
        assert_eq!(scan.unknown_sources().count(), 0);
        store.apply_scan(&scan.changes, 2).unwrap();
        let url = served_card_url(&config, "c0001.vcf");
        let record = store
            .file_record(std::path::Path::new(&url))
            .unwrap()
            .unwrap();
        assert_eq!((record.source.as_str(), record.cards), ("dav", 1));
        assert_eq!(
            store.phones_of(std::path::Path::new(&url)).unwrap()[0].e164,
            "+491700000001"
        );
        // Unchanged cards are neither read nor parsed again, and the pass may be skipped.
        let again = super::super::scan(&config, &store, 3, false).unwrap();
        assert_eq!((again.files_seen, again.files_parsed), (2, 0));
        assert_eq!(super::super::unchanged(&config, &store).unwrap(), Some(2));
    }

    #[tokio::test]
    async fn discovery_follows_the_well_known_redirect_to_the_principal_and_its_home_set() {
        let book = book_with(2);
        book.lock().unwrap().discovery = true;
        let port = serve(Arc::clone(&book)).await;
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "state_dir = \"{}\"\n[[source]]\nname = \"dav\"\ncarddav = \"http://127.0.0.1:{port}/\"\naddress_books = [\"Book\"]\n",
            dir.path().display()
        );
        let config = crate::config::parse(&text, &dir.path().join("config.toml")).unwrap();
        let checked = check(&config.sources[0]).await.unwrap();
        let books: Vec<(&str, bool, usize, bool)> = checked
            .books
            .iter()
            .map(|b| (b.name.as_str(), b.supports_sync, b.cards, b.read))
            .collect();
        assert_eq!(books, [("Book", true, 2, true), ("Other", false, 0, false)]);
        let paths: Vec<String> = requests(&book)
            .into_iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect();
        assert_eq!(
            &paths[..4],
            [
                "PROPFIND /",
                "PROPFIND /.well-known/carddav",
                "PROPFIND /principal/",
                "PROPFIND /home/"
            ],
            "a redirected PROPFIND stays a PROPFIND"
        );

        let mut store = Store::open_in_memory().unwrap();
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        assert_eq!(cached(&store), ["/book/c0000.vcf", "/book/c0001.vcf"]);
        // Discovered once: the next poll goes straight to the book.
        requests(&book);
        poll(&config.sources[0], &mut store, 2).await.unwrap();
        let paths: Vec<String> = requests(&book)
            .into_iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect();
        assert_eq!(paths, ["REPORT /book/"]);

        // An address book that is not there is named, with those that are.
        let text = text.replace("[\"Book\"]", "[\"Work\"]");
        let config = crate::config::parse(&text, &dir.path().join("config.toml")).unwrap();
        let err = poll(&config.sources[0], &mut store, 3).await.unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"no address book "Work" on the server; it has "Book", "Other""#),
            "{err}"
        );
        assert_eq!(
            cached(&store).len(),
            2,
            "the cards stay while the configuration is wrong"
        );
    }

    #[tokio::test]
    async fn the_daemons_poller_runs_the_password_command_once_and_again_after_a_401() {
        let book = book_with(1);
        let port = serve(Arc::clone(&book)).await;
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let text = format!(
            "state_dir = \"{}\"\n[[source]]\nname = \"dav\"\ncarddav = \"http://127.0.0.1:{port}/book/\"\nusername = \"me\"\npassword_command = [\"sh\", \"-c\", \"echo run >> {}; echo secret\"]\n",
            dir.path().display(),
            runs.display()
        );
        let config = crate::config::parse(&text, &dir.path().join("config.toml")).unwrap();
        let count = || {
            std::fs::read_to_string(&runs)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let mut store = Store::open_in_memory().unwrap();
        let mut poller = Poller::new(config.sources[0].clone());
        poller.poll(&mut store, 1).await.unwrap();
        poller.poll(&mut store, 2).await.unwrap();
        assert_eq!(count(), 1, "read once for both polls");
        book.lock().unwrap().script.push_back(Scripted {
            status: 401,
            headers: Vec::new(),
            body: String::new(),
        });
        poller.poll(&mut store, 3).await.unwrap_err();
        poller.poll(&mut store, 4).await.unwrap();
        assert_eq!(count(), 2, "read again after the server refused it");
    }

    #[tokio::test]
    async fn the_cache_of_a_source_taken_out_of_the_configuration_is_dropped() {
        let book = book_with(2);
        let (config, mut store, _dir) = served(&book).await;
        poll(&config.sources[0], &mut store, 1).await.unwrap();
        let writes = store.conn().total_changes();
        assert_eq!(store.forget_carddav_sources_except(&["dav"]).unwrap(), 0);
        assert_eq!(
            store.conn().total_changes(),
            writes,
            "nothing to drop: no write"
        );
        assert_eq!(store.forget_carddav_sources_except(&[]).unwrap(), 1);
        assert!(store.carddav_cards("dav").unwrap().is_empty());
        assert!(store.carddav_books("dav").unwrap().is_empty());
        assert_eq!(store.carddav_source("dav").unwrap(), None);
    }

    #[rstest::rstest]
    #[case::encoded_at("/u/me%40example.org/c/a%2db.vcf", "/u/me@example.org/c/a-b.vcf")]
    #[case::lower_hex("/c/x%3ay%2F.vcf", "/c/x%3Ay%2F.vcf")]
    #[case::space_stays_encoded("/c/a%20b.vcf", "/c/a%20b.vcf")]
    #[case::plain("/c/abc.vcf", "/c/abc.vcf")]
    #[case::truncated_escape("/c/a%4", "/c/a%4")]
    fn hrefs_get_one_spelling(#[case] href: &str, #[case] path: &str) {
        let base = Url::parse("https://dav.example.org/c/").unwrap();
        assert_eq!(card_url(&base, href).unwrap().path(), path);
    }

    #[test]
    fn xml_with_prefixes_entities_and_cdata_is_understood() {
        let root = parse_xml(
            br#"<?xml version="1.0"?><m:multistatus xmlns:m="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><m:response><m:href>/b/a%20b.vcf</m:href><m:propstat><m:prop><m:getetag>"1"</m:getetag><c:address-data>BEGIN:VCARD&#13;
FN:A &amp; B<![CDATA[<x>]]>&#13;
</c:address-data></m:prop><m:status>HTTP/1.1 200 OK</m:status></m:propstat></m:response></m:multistatus>"#,
        )
        .unwrap();
        let responses = multistatus(&root).unwrap();
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].href, "/b/a%20b.vcf");
        let data = responses[0].prop(CARDDAV, "address-data").unwrap();
        assert_eq!(data.text, "BEGIN:VCARD\r\nFN:A & B<x>\r\n");
        assert!(parse_xml(b"<a><b></a>").is_err());
        assert!(parse_xml(b"<a>&bogus;</a>").is_err());
    }
}
