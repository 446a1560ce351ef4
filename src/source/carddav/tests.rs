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
    /// Answer a request without `Authorization` with 401 and this `WWW-Authenticate`.
    challenge: Option<String>,
    /// Every request's `Authorization` header (None: it had none).
    authorizations: Vec<Option<String>>,
    /// Answer a token it does not know as DAViCal does: 207 with a full listing and a new
    /// token, rather than 403.
    davical: bool,
    /// Tokens of versions below this are forgotten (DAViCal drops old ones by itself).
    forgotten_before: u64,
    /// Extra rows of the PROPFIND listing: (href, etag), as Calypso lists an href twice.
    extra_rows: Vec<(String, String)>,
    /// Leave `address-data` out of sync reports even when asked for it (a server may): the
    /// cards then come by multiget.
    sync_without_cards: bool,
    /// Collections inside the book that call themselves address books (Calypso's `/alice/`
    /// calls itself one and holds the user's books).
    nested_books: Vec<String>,
    /// Collections inside the book typed as calendars only: how Calypso 2.1 lists the books
    /// in its user collection `/alice/`, which itself claims to be an address book.
    nested_calendars: Vec<String>,
    /// Refuse an addressbook-query without a filter (400), as RFC 6352 allows.
    query_refused: bool,
    /// Answer an addressbook-query with only this many cards and no 507: a server outside
    /// RFC 6352 that cuts a query silently.
    query_cut_silently: Option<usize>,
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
                "/home/" if self.last_head.contains("depth: 0") => {
                    return multistatus(response(
                        "/home/",
                        "<D:resourcetype><D:collection/></D:resourcetype><D:current-user-principal><D:href>/principal/</D:href></D:current-user-principal>",
                    ));
                }
                "/home/" => {
                    let book = "<D:resourcetype><D:collection/><C:addressbook/></D:resourcetype>";
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
            ("PROPFIND", body) if body.contains("<D:sync-token/>") && self.sync_support => {
                ok(format!(
                    r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/book/</D:href><D:propstat><D:prop><D:sync-token>t{}</D:sync-token></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#,
                    self.version
                ))
            }
            ("REPORT", body) if body.contains("addressbook-query") => {
                if self.query_refused {
                    return Scripted {
                        status: 400,
                        headers: Vec::new(),
                        body: "filter required".into(),
                    };
                }
                let mut xml = String::from(
                    r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">"#,
                );
                let limit = self.page.unwrap_or(usize::MAX);
                let silent = self.query_cut_silently.unwrap_or(usize::MAX);
                for (href, (etag, card)) in self.cards.iter().take(limit.min(silent)) {
                    xml.push_str(&format!(
                        "<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:getetag>{etag}</D:getetag><C:address-data>{}</C:address-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>",
                        xml_escape(card)
                    ));
                }
                if self.cards.len() > limit {
                    xml.push_str("<D:response><D:href>/book/</D:href><D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>");
                }
                xml.push_str("</D:multistatus>");
                ok(xml)
            }
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
                for href in &self.nested_books {
                    xml.push_str(&format!(
                        r#"<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:resourcetype><D:collection/><C:addressbook xmlns:C="urn:ietf:params:xml:ns:carddav"/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#
                    ));
                }
                for href in &self.nested_calendars {
                    xml.push_str(&format!(
                        r#"<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:resourcetype><C:calendar xmlns:C="urn:ietf:params:xml:ns:caldav"/><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#
                    ));
                }
                let extra = self.extra_rows.iter().map(|(h, e)| (h, e));
                let rows = self.cards.iter().map(|(h, (e, _))| (h, e)).chain(extra);
                for (href, etag) in rows {
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
        let forgotten = |v: u64| !token.is_empty() && v < self.forgotten_before;
        let parsed = match parsed {
            Some((v, _)) if self.davical && (v > self.version || forgotten(v)) => Some((0, 0)),
            other => other,
        };
        let full = token.is_empty() || parsed == Some((0, 0));
        let Some((since, skip)) =
            parsed.filter(|(v, _)| *v <= self.version && !forgotten(*v) || full)
        else {
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
        if full {
            changed = self.cards.keys().cloned().collect();
        }
        changed.sort();
        changed.dedup();
        let rest = &changed[skip.min(changed.len())..];
        let (rows, truncated) = match self.page {
            Some(page) if rest.len() > page => (&rest[..page], true),
            _ => (rest, false),
        };
        let with_cards = body.contains("address-data") && !self.sync_without_cards;
        let mut xml = String::from(
            r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">"#,
        );
        for href in rows {
            match self.cards.get(href) {
                Some((etag, card)) => xml.push_str(&format!(
                    "<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:getetag>{etag}</D:getetag>{}</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>",
                    if with_cards {
                        format!("<C:address-data>{}</C:address-data>", xml_escape(card))
                    } else {
                        String::new()
                    }
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
                    let authorization = head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().to_owned())
                    });
                    book.authorizations.push(authorization.clone());
                    match &book.challenge {
                        Some(challenge) if authorization.is_none() => Scripted {
                            status: 401,
                            headers: vec![("WWW-Authenticate", challenge.clone())],
                            body: String::new(),
                        },
                        _ => book.answer(&method, &path, &body),
                    }
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

/// The first poll reads the book's sync token and then every card by one addressbook-query;
/// a poll that finds nothing new is one request and writes nothing. Seen failing: without
/// the query, the sync report and (without `address-data` in it) 3 multigets.
#[tokio::test]
async fn a_first_poll_is_the_token_and_one_query_and_a_poll_with_nothing_new_is_one_request_and_no_write()
 {
    let book = book_with(250);
    let (config, mut store, _dir) = served(&book).await;
    let outcome = poll(&config.sources[0], &mut store, 1).await.unwrap();
    assert!(outcome.changed);
    assert_eq!(outcome.cards_changed, 250);
    assert_eq!(cached(&store).len(), 250);
    let seen = requests(&book);
    let kinds: Vec<&str> = seen.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(
        kinds,
        ["PROPFIND", "PROPFIND", "REPORT"],
        "discovery, the token, the query"
    );
    assert!(seen[1].2.contains("<D:sync-token/>"), "{seen:?}");
    assert!(seen[2].2.contains("addressbook-query"), "{seen:?}");
    assert_eq!(
        store.carddav_books("dav").unwrap()[0].sync_token.as_deref(),
        Some("t250"),
        "the token read before the cards"
    );
    let head = book.lock().unwrap().last_head.clone();
    assert!(
        head.contains("accept-encoding: gzip"),
        "servers compress when asked: {head}"
    );
    let body = store
        .carddav_card_body("dav", &served_card_url(&config, "c0249.vcf"))
        .unwrap()
        .unwrap();
    assert_eq!(body, card(249).replace("\r\n", "\n").as_bytes());

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

/// A server that refuses the query without a filter is read by one sync-collection with the
/// cards. Seen failing when a query that gave no full listing ended the poll instead.
#[tokio::test]
async fn a_refused_query_falls_back_to_the_sync_report_with_the_cards() {
    let book = book_with(250);
    book.lock().unwrap().query_refused = true;
    let (config, mut store, _dir) = served(&book).await;
    let outcome = poll(&config.sources[0], &mut store, 1).await.unwrap();
    assert_eq!(outcome.cards_changed, 250);
    assert_eq!(cached(&store).len(), 250);
    let seen = requests(&book);
    assert_eq!(
        seen.len(),
        4,
        "discovery, token, refused query, sync report: {seen:?}"
    );
    assert!(seen[3].2.contains("sync-collection") && seen[3].2.contains("address-data"));
}

/// A server that refuses the query and leaves the cards out of its sync report: they come by
/// multigets of at most `MULTIGET_BATCH`.
#[tokio::test]
async fn cards_left_out_of_the_sync_report_come_by_multigets_in_batches() {
    let book = book_with(250);
    book.lock().unwrap().sync_without_cards = true;
    book.lock().unwrap().query_refused = true;
    let (config, mut store, _dir) = served(&book).await;
    let outcome = poll(&config.sources[0], &mut store, 1).await.unwrap();
    assert_eq!(outcome.cards_changed, 250);
    assert_eq!(cached(&store).len(), 250);
    let multigets: Vec<usize> = requests(&book)
        .iter()
        .filter(|(_, _, body)| body.contains("addressbook-multiget"))
        .map(|(_, _, body)| between_all(body, "<D:href>", "</D:href>").len())
        .collect();
    assert_eq!(multigets, [100, 100, 50], "batches of at most 100");
}

/// With the token: the changed cards come with the sync report (one request), or, from a
/// server that leaves them out, by a multiget of only those.
#[rstest::rstest]
#[case::cards_in_the_report(false)]
#[case::cards_left_out(true)]
#[tokio::test]
async fn changes_and_deletions_arrive_with_the_token_and_only_changed_cards_are_fetched(
    #[case] sync_without_cards: bool,
) {
    let book = book_with(5);
    book.lock().unwrap().sync_without_cards = sync_without_cards;
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
    if sync_without_cards {
        assert_eq!(fetched, ["/book/c0001.vcf", "/book/new.vcf"]);
        assert_eq!(seen.len(), 2, "the report, one multiget");
    } else {
        assert!(fetched.is_empty(), "{seen:?}");
        assert_eq!(seen.len(), 1, "the report alone");
    }
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

/// The filterless query reads a first book only: a server that cut it silently (no 507)
/// would look like a complete listing, so after a refused token the full listing that
/// decides what is gone is the sync report's.
#[tokio::test]
async fn a_query_cut_silently_never_decides_what_is_gone() {
    let book = book_with(4);
    let (config, mut store, _dir) = served(&book).await;
    poll(&config.sources[0], &mut store, 1).await.unwrap();
    assert_eq!(cached(&store).len(), 4);
    {
        let mut book = book.lock().unwrap();
        book.query_cut_silently = Some(1);
        book.script.push_back(Scripted {
            status: 403,
            headers: Vec::new(),
            body: r#"<D:error xmlns:D="DAV:"><D:valid-sync-token/></D:error>"#.into(),
        });
    }
    let outcome = poll(&config.sources[0], &mut store, 2).await.unwrap();
    assert_eq!(outcome.cards_deleted, 0);
    assert_eq!(cached(&store).len(), 4);
    // The first poll was discovery, the token and the query; the second reads no query.
    let seen = requests(&book);
    assert!(
        !seen
            .iter()
            .skip(3)
            .any(|(_, _, body)| body.contains("addressbook-query")),
        "{seen:?}"
    );
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
    // Issue 22, point 9: ten years is an hour.
    assert_eq!(retry_after_seconds("315360000", now), Some(3600));
    assert_eq!(
        retry_after_seconds("Sun, 21 Oct 2035 07:28:00 GMT", now),
        Some(3600)
    );
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

    let mut scan =
        super::super::scan(&config, &store, 2, false, crate::phone::Purpose::Push).unwrap();
    let deferred: Vec<&FileChange> = scan
        .changes
        .iter()
        .map(|c| c.as_ref())
        .filter(|c| matches!(c, FileChange::Deferred { .. }))
        .collect();
    assert!(
        matches!(deferred.as_slice(), [FileChange::Deferred { path, .. }] if path.to_string_lossy() == big.url),
        "{deferred:?}"
    );
    assert_eq!(scan.take_desired().contacts.len(), 3, "the neighbours sync");
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
    let scan = super::super::scan(&config, &store, 1, false, crate::phone::Purpose::Push).unwrap();
    assert_eq!(scan.unknown_sources().count(), 1);
    poll(&config.sources[0], &mut store, 1).await.unwrap();
    let scan = super::super::scan(&config, &store, 2, false, crate::phone::Purpose::Push).unwrap();
    assert_eq!(scan.unknown_sources().count(), 0);
    store.apply_scan(&scan.changes, 2).unwrap();
    let url = served_card_url(&config, "c0001.vcf");
    let record = store
        .file_record(std::path::Path::new(&url))
        .unwrap()
        .unwrap();
    assert_eq!((record.source.as_str(), record.cards), ("dav", 1));
    assert_eq!(
        &*store.phones_of(std::path::Path::new(&url)).unwrap()[0].e164,
        "+491700000001"
    );
    // Unchanged cards are neither read nor parsed again, and the pass may be skipped.
    let again = super::super::scan(&config, &store, 3, false, crate::phone::Purpose::Push).unwrap();
    assert_eq!((again.files_seen, again.files_parsed), (2, 0));
    let planned = store.settled_files_digest().unwrap().unwrap().text();
    assert_eq!(
        super::super::unchanged(&config, &store, &planned).unwrap(),
        Some(2)
    );
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
    let checked = check(&config.sources[0], std::path::Path::new("/nonexistent"))
        .await
        .unwrap();
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
    let answer = parse_multistatus(
        br#"<?xml version="1.0"?><m:multistatus xmlns:m="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><m:response><m:href>/b/a%20b.vcf</m:href><m:propstat><m:prop><m:getetag>"1"</m:getetag><c:address-data>BEGIN:VCARD&#13;
FN:A &amp; B<![CDATA[<x>]]>&#13;
</c:address-data></m:prop><m:status>HTTP/1.1 200 OK</m:status></m:propstat></m:response></m:multistatus>"#,
    )
    .unwrap();
    let responses = answer.responses;
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].href, "/b/a%20b.vcf");
    let data = responses[0].prop(CARDDAV, "address-data").unwrap();
    assert_eq!(data.text, "BEGIN:VCARD\r\nFN:A & B<x>\r\n");
    assert!(parse_multistatus(br#"<D:multistatus xmlns:D="DAV:"><b></D:multistatus>"#).is_err());
    assert!(
        parse_multistatus(br#"<D:multistatus xmlns:D="DAV:">&bogus;</D:multistatus>"#).is_err()
    );
}

/// A configuration with user and password for a source at `url`.
fn config_with_password(url: &str, dir: &std::path::Path) -> Config {
    std::fs::write(dir.join("password"), "sesame\n").unwrap();
    let text = format!(
        "state_dir = \"{}\"\n[[source]]\nname = \"dav\"\ncarddav = \"{url}\"\nusername = \"me\"\npassword_file = \"{}\"\n",
        dir.display(),
        dir.join("password").display()
    );
    crate::config::parse(&text, &dir.join("config.toml")).unwrap()
}

/// Issue 22, point 1: the configured server gets the password after its challenge, over plain
/// http never unasked; a redirect (or an href) to another origin, here `localhost` on another
/// port, gets it never, not even when that server asks.
#[rstest::rstest]
#[case::redirect(true)]
#[case::discovery_href(false)]
#[tokio::test]
async fn credentials_never_reach_a_second_server(#[case] redirect: bool) {
    let second = book_with(2);
    second.lock().unwrap().challenge = Some(r#"Basic realm="second""#.into());
    let second_port = serve(Arc::clone(&second)).await;
    let elsewhere = format!("http://localhost:{second_port}/book/");
    let first = book_with(0);
    {
        let mut first = first.lock().unwrap();
        first.challenge = Some(r#"Basic realm="first""#.into());
        first.script.push_back(if redirect {
            Scripted {
                status: 307,
                headers: vec![("Location", elsewhere.clone())],
                body: String::new(),
            }
        } else {
            // The configured URL is a principal whose home set is on the other server.
            Scripted {
                status: 207,
                headers: Vec::new(),
                body: format!(
                    r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:response><D:href>/principal/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/><D:principal/></D:resourcetype><C:addressbook-home-set><D:href>{elsewhere}</D:href></C:addressbook-home-set></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#
                ),
            }
        });
    }
    let first_port = serve(Arc::clone(&first)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_password(
        &format!("http://127.0.0.1:{first_port}/principal/"),
        dir.path(),
    );
    let mut store = Store::open_in_memory().unwrap();
    let err = poll(&config.sources[0], &mut store, 1).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("leads to another server that asks for the password"),
        "{err}"
    );

    let first_seen = std::mem::take(&mut first.lock().unwrap().authorizations);
    assert_eq!(
        first_seen[0], None,
        "unasked over plain http: {first_seen:?}"
    );
    assert!(
        first_seen[1]
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "the challenge is answered: {first_seen:?}"
    );
    let second_seen = std::mem::take(&mut second.lock().unwrap().authorizations);
    assert!(!second_seen.is_empty(), "the second server was asked");
    assert!(
        second_seen.iter().all(Option::is_none),
        "the second server saw credentials: {second_seen:?}"
    );
}

/// Issue 22, point 3: DAViCal answers a token it forgot with 207, a full listing and a new
/// token, which reads like a delta: a card deleted meanwhile would stay cached for good. The
/// etag listing at `full_check_interval` (default a day) finds it, whatever the token says.
#[tokio::test]
async fn a_forgotten_token_answered_with_a_full_listing_loses_no_deletion() {
    let book = book_with(4);
    book.lock().unwrap().davical = true;
    let (config, mut store, _dir) = served(&book).await;
    poll(&config.sources[0], &mut store, 1).await.unwrap();
    {
        let mut book = book.lock().unwrap();
        book.forget("/book/c0001.vcf");
        book.put("/book/c0004.vcf", &card(4));
        book.forgotten_before = book.version + 1;
    }
    requests(&book);
    let outcome = poll(&config.sources[0], &mut store, 2).await.unwrap();
    assert_eq!(
        (outcome.cards_changed, outcome.cards_deleted),
        (1, 0),
        "within the interval the answer reads like a delta"
    );
    let seen = requests(&book);
    assert_eq!(seen.len(), 1, "a sync report with the card: {seen:?}");

    let a_day_later = 1 + 86_400;
    let outcome = poll(&config.sources[0], &mut store, a_day_later)
        .await
        .unwrap();
    assert_eq!((outcome.cards_changed, outcome.cards_deleted), (0, 1));
    assert_eq!(
        cached(&store),
        [
            "/book/c0000.vcf",
            "/book/c0002.vcf",
            "/book/c0003.vcf",
            "/book/c0004.vcf"
        ]
    );
    let seen: Vec<String> = requests(&book)
        .into_iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        seen,
        ["REPORT /book/", "PROPFIND /book/"],
        "the sync report, then the etag listing"
    );
    // Checked: the next poll within the interval is one request again.
    poll(&config.sources[0], &mut store, a_day_later + 300)
        .await
        .unwrap();
    assert_eq!(requests(&book).len(), 1);
}

/// Issue 22, point 4: Calypso lists one href twice with two etags; the poll after the first
/// finds nothing changed instead of "changed=1" every time.
#[tokio::test]
async fn an_href_listed_twice_settles() {
    let book = book_with(3);
    {
        let mut book = book.lock().unwrap();
        book.sync_support = false;
        book.extra_rows
            .push(("/book/c0001.vcf".into(), "\"calypso\"".into()));
    }
    let (config, mut store, _dir) = served(&book).await;
    let first = poll(&config.sources[0], &mut store, 1).await.unwrap();
    assert_eq!(first.cards_changed, 3);
    let second = poll(&config.sources[0], &mut store, 2).await.unwrap();
    assert_eq!((second.cards_changed, second.changed), (0, false));
}

/// Issue 22, point 5: a full listing still truncated (507) when the rounds run out names only
/// part of the book: it deletes nothing, and it is not taken for a full listing.
#[tokio::test]
async fn a_listing_still_truncated_after_the_last_round_deletes_nothing() {
    let book = book_with(7);
    let (config, mut store, _dir) = served(&book).await;
    poll(&config.sources[0], &mut store, 1).await.unwrap();
    book.lock().unwrap().page = Some(3);
    let source = &config.sources[0];
    let mut client = Client::new(source, source.carddav.as_ref().unwrap()).unwrap();
    let mut stored = store.carddav_books("dav").unwrap().remove(0);
    stored.sync_token = None;
    let cached = store.carddav_etags("dav", &stored.url).unwrap();
    let rounds = Rounds {
        now: 2,
        full_check_interval: 86_400,
        max_rounds: 2,
    };
    let polled = poll_book(&mut client, "dav", &stored, cached, rounds)
        .await
        .unwrap();
    assert_eq!(polled.deleted, Vec::<String>::new());
    assert_eq!(polled.full_listed_at, None);
}

/// Issue 22, point 9: a poll has a deadline (5 s in tests, 15 min otherwise); a server that
/// keeps it waiting fails the poll instead of holding the source, and nothing is stored.
#[tokio::test]
async fn a_poll_that_overruns_its_deadline_fails_and_stores_nothing() {
    let book = book_with(2);
    let (config, mut store, _dir) = served(&book).await;
    for _ in 0..3 {
        book.lock().unwrap().script.push_back(Scripted {
            status: 503,
            headers: vec![("Retry-After", "2".into())],
            body: String::new(),
        });
    }
    let started = std::time::Instant::now();
    let err = poll(&config.sources[0], &mut store, 1).await.unwrap_err();
    assert!(
        err.to_string().contains("the poll took longer than 5 s"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(cached(&store).is_empty());
}

/// Issue 22, point 13: hostile answers are refused with a reason, quickly, without
/// expanding anything or recursing.
#[rstest::rstest]
#[case::deep_nesting(
    format!("<D:multistatus xmlns:D=\"DAV:\">{}{}</D:multistatus>", "<D:x>".repeat(100_000), "</D:x>".repeat(100_000)).into_bytes(),
    "nested deeper than 64"
)]
#[case::entity_declarations(
    br#"<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><D:multistatus xmlns:D="DAV:"><D:response><D:href>&b;</D:href></D:response></D:multistatus>"#.to_vec(),
    "unknown XML entity &b;"
)]
#[case::external_entity(
    br#"<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><D:multistatus xmlns:D="DAV:">&x;</D:multistatus>"#.to_vec(),
    "unknown XML entity &x;"
)]
#[case::not_utf8(b"<D:multistatus xmlns:D=\"DAV:\">\xff\xfe</D:multistatus>".to_vec(), "not UTF-8")]
#[case::unclosed(b"<D:multistatus xmlns:D=\"DAV:\"><D:response>".to_vec(), "ends inside an element")]
#[case::empty(Vec::new(), "no XML element")]
fn hostile_xml_is_refused(#[case] bytes: Vec<u8>, #[case] reason: &str) {
    let started = std::time::Instant::now();
    let err = parse_multistatus(&bytes).unwrap_err();
    assert!(err.contains(reason), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A huge flat document of empty elements parses without failing: it is the body cap (64 MiB)
/// that bounds it, the depth cap does not refuse breadth.
#[test]
fn a_wide_document_is_not_taken_for_a_deep_one() {
    let rows = "<D:response><D:href>/b/a.vcf</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>".repeat(10_000);
    let xml = format!(r#"<D:multistatus xmlns:D="DAV:">{rows}</D:multistatus>"#);
    assert_eq!(
        parse_multistatus(xml.as_bytes()).unwrap().responses.len(),
        10_000
    );
}

/// Issue 22, point 8: a multistatus is read as a stream, so 60 MB of empty elements (a tree
/// of them took 1.9 GB) costs almost nothing beyond the body itself: the body and the
/// parse stay within 100 MB. Measured in a child process (this test binary, re-run on this
/// test alone), where the peak RSS is the parse's and no other test's.
/// Seen failing: keeping every element, as the tree did, peaked at 2661 MiB.
#[cfg(target_os = "linux")]
#[test]
fn a_60_mb_multistatus_of_empty_elements_is_read_in_bounded_memory() {
    const CHILD: &str = "CONTACTSYNCD_TEST_MULTISTATUS_MEMORY";
    const TEST: &str = "a_60_mb_multistatus_of_empty_elements_is_read_in_bounded_memory";
    let status_kib = |field: &str| -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    if std::env::var_os(CHILD).is_some() {
        let head = r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/b/a.vcf</D:href><D:propstat><D:prop><D:getetag>"1"</D:getetag>"#;
        let tail = "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>";
        let empty = "<D:x/>";
        let count = 60_000_000 / empty.len();
        // Exactly sized, so building the body leaves no higher peak than the body itself.
        let mut body = String::with_capacity(head.len() + empty.len() * count + tail.len());
        body.push_str(head);
        for _ in 0..count {
            body.push_str(empty);
        }
        body.push_str(tail);
        // Resets the peak RSS to the current RSS (Linux ≥ 4.0).
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = status_kib("VmRSS:");
        let answer = parse_multistatus(body.as_bytes()).unwrap();
        let peak = status_kib("VmHWM:");
        assert_eq!(answer.responses.len(), 1);
        let etag = answer.responses[0].prop(DAV, "getetag").unwrap();
        assert_eq!(etag.trimmed(), "\"1\"");
        println!(
            "body {} MiB, parse peak {} MiB",
            body.len() >> 20,
            (peak - before) >> 10
        );
        println!("peak RSS {} MiB", peak >> 10);
        return;
    }
    let module = module_path!().split_once("::").unwrap().1;
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("{module}::{TEST}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let peak_mib: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak RSS "))
        .and_then(|l| l.strip_suffix(" MiB"))
        .unwrap_or_else(|| panic!("no measurement in {stdout}"))
        .parse()
        .unwrap();
    assert!(peak_mib <= 100, "{stdout}");
}

#[rstest::rstest]
#[case::lower_plus("/c/a%2bb.vcf", "/c/a%2Bb.vcf")]
#[case::upper_plus("/c/a%2Bb.vcf", "/c/a%2Bb.vcf")]
#[case::encoded_question_mark("/c/a%3fb.vcf", "/c/a%3Fb.vcf")]
fn odd_hrefs_get_one_spelling(#[case] href: &str, #[case] path: &str) {
    let base = Url::parse("https://dav.example.org/c/").unwrap();
    assert_eq!(card_url(&base, href).unwrap().path(), path);
}

/// A raw `?` in an href is a query: kept, so that the multiget asks for the same resource
/// and its answer matches.
#[tokio::test]
async fn a_card_whose_href_has_a_query_is_fetched() {
    let book = book_with(1);
    book.lock().unwrap().put("/book/odd?name.vcf", &card(7));
    let (config, mut store, _dir) = served(&book).await;
    poll(&config.sources[0], &mut store, 1).await.unwrap();
    let urls: Vec<String> = store
        .carddav_cards("dav")
        .unwrap()
        .into_iter()
        .map(|c| c.url)
        .collect();
    assert!(
        urls.iter().any(|u| u.ends_with("/book/odd?name.vcf")),
        "{urls:?}"
    );
}

/// A book whose cards outgrow one answer (`MAX_ANSWER_BYTES`, 256 KiB in unit tests): the
/// sync report with the cards is dropped unread, asked again with etags alone, and the cards
/// come by multigets. Seen failing: without the second report the poll failed with "the
/// answer is larger than 256 KiB".
#[tokio::test]
async fn a_book_larger_than_one_answer_is_listed_without_its_cards_then_multigot() {
    let book = book_with(1000);
    let (config, mut store, _dir) = served(&book).await;
    let outcome = poll(&config.sources[0], &mut store, 1).await.unwrap();
    assert_eq!(outcome.cards_changed, 1000);
    assert_eq!(cached(&store).len(), 1000);
    let seen = requests(&book);
    let kinds: Vec<&str> = seen
        .iter()
        .map(|(_, _, body)| {
            if body.contains("propfind") {
                "propfind"
            } else if body.contains("addressbook-query") {
                "query"
            } else if body.contains("addressbook-multiget") {
                "multiget"
            } else if body.contains("address-data") {
                "sync with cards"
            } else {
                "sync"
            }
        })
        .collect();
    // Discovery, the token, the query (too large), then the sync reports.
    let mut expected = vec!["propfind", "propfind", "query", "sync with cards", "sync"];
    expected.extend(["multiget"; 10]);
    assert_eq!(kinds, expected);
}

/// A full listing larger than one answer is never read in part: the poll fails, the source
/// counts as unknown, and no cached card is deleted, not even one the server deleted
/// meanwhile. Seen failing: an answer cut at the cap taken as a complete (empty) listing
/// deleted all 1,000 cached cards.
#[tokio::test]
async fn a_listing_cut_by_the_answer_cap_is_not_authoritative() {
    let book = book_with(1000);
    let (config, mut store, _dir) = served(&book).await;
    poll(&config.sources[0], &mut store, 1).await.unwrap();
    {
        let mut book = book.lock().unwrap();
        for n in 1000..2000 {
            book.put(&format!("/book/c{n:04}.vcf"), &card(n));
        }
        // Gone without a change row: only a full listing can tell; and our token is lost.
        book.forget("/book/c0001.vcf");
        book.script.push_back(Scripted {
            status: 403,
            headers: Vec::new(),
            body: r#"<D:error xmlns:D="DAV:"><D:valid-sync-token/></D:error>"#.into(),
        });
    }
    let err = poll(&config.sources[0], &mut store, 2).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the answer is larger than 256 KiB"),
        "{err}"
    );
    assert_eq!(cached(&store).len(), 1000, "nothing of it is deleted");
    assert!(cached(&store).contains(&"/book/c0001.vcf".to_owned()));
    let reason = unknown_reason(&store, &config.sources[0]).unwrap();
    assert_eq!(reason, Some(err.to_string()));
}

/// Issue 22, point 6: a configured URL below the server's root that the server does not
/// have is an error that says so, not a reason to read what `/.well-known/carddav` leads to.
/// Seen failing: the 404 was passed over and the user's books read instead.
#[tokio::test]
async fn a_configured_url_not_on_the_server_is_named_so() {
    let book = book_with(2);
    book.lock().unwrap().discovery = true;
    let port = serve(Arc::clone(&book)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_url(&format!("http://127.0.0.1:{port}/gone/"), dir.path());
    book.lock().unwrap().script.push_back(Scripted {
        status: 404,
        headers: Vec::new(),
        body: String::new(),
    });
    let err = check(&config.sources[0], std::path::Path::new("/nonexistent"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the configured URL is not on the server (404 Not Found): check `carddav`"),
        "{err}"
    );
    let paths: Vec<String> = requests(&book).into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(paths, ["/gone/"], "nothing else is asked");
}

/// Issue 22, point 6: a collection that is neither an address book nor a principal but
/// holds address books (here the home set; Xandikos' `/user/contacts/`, SabreDAV's
/// `/addressbooks/USER/`) is named with the books in it. Seen failing: the principal every
/// resource names was followed and every book read.
#[tokio::test]
async fn a_collection_holding_address_books_is_named_with_them() {
    let book = book_with(2);
    book.lock().unwrap().discovery = true;
    let port = serve(Arc::clone(&book)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_url(&format!("http://127.0.0.1:{port}/home/"), dir.path());
    let err = check(&config.sources[0], std::path::Path::new("/nonexistent"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            r#"the configured URL is a collection that holds address books, not an address book; the address books in it: book/ ("Book"), other/ ("Other"): set `carddav` to the URL of one of them"#
        ),
        "{err}"
    );
    let mut store = Store::open_in_memory().unwrap();
    let polled = poll(&config.sources[0], &mut store, 1).await.unwrap_err();
    assert_eq!(polled.to_string(), err.to_string());
    assert_eq!(
        unknown_reason(&store, &config.sources[0]).unwrap(),
        Some(err.to_string())
    );
}

/// Issue 22, point 6: a collection that calls itself an address book but holds address
/// books (Calypso's `/alice/`) is not read as an empty book: the poll fails with the books
/// named, the source is unknown and no cached card goes. Seen failing: read as a book with
/// no cards, every cached card was deleted.
#[rstest::rstest]
#[case::typed_as_books(false)]
#[case::typed_as_calendars_as_calypso_does(true)]
#[tokio::test]
async fn a_book_that_holds_address_books_is_not_read_as_an_empty_book(#[case] calypso: bool) {
    let book = book_with(2);
    book.lock().unwrap().sync_support = false;
    let (config, mut store, _dir) = served(&book).await;
    poll(&config.sources[0], &mut store, 1).await.unwrap();
    assert_eq!(cached(&store).len(), 2);
    {
        let mut book = book.lock().unwrap();
        book.forget("/book/c0000.vcf");
        book.forget("/book/c0001.vcf");
        let inside = vec!["/book/contacts/".into(), "/book/work/".into()];
        if calypso {
            book.nested_calendars = inside;
        } else {
            book.nested_books = inside;
        }
    }
    let err = poll(&config.sources[0], &mut store, 2).await.unwrap_err();
    assert!(
        err.to_string().contains(
            "holds address books, not an address book; the address books in it: contacts/, work/"
        ),
        "{err}"
    );
    assert_eq!(cached(&store).len(), 2, "nothing of it is deleted");
    assert_eq!(
        unknown_reason(&store, &config.sources[0]).unwrap(),
        Some(err.to_string())
    );
    let checked = check(&config.sources[0], std::path::Path::new("/nonexistent"))
        .await
        .unwrap_err();
    assert_eq!(checked.to_string(), err.to_string());
}

fn config_with_url(url: &str, dir: &std::path::Path) -> Config {
    let text = format!(
        "state_dir = \"{}\"\n[[source]]\nname = \"dav\"\ncarddav = \"{url}\"\n",
        dir.display()
    );
    crate::config::parse(&text, &dir.join("config.toml")).unwrap()
}
