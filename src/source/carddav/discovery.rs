//! Discovery: from the configured URL to its address books.

#[allow(unused_imports)]
use super::*;

/// An address book as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundBook {
    pub url: String,
    pub name: String,
    pub supports_sync: bool,
}

pub(super) const PROPFIND_DISCOVERY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:prop><D:resourcetype/><D:displayname/><D:current-user-principal/><C:addressbook-home-set/><D:supported-report-set/></D:prop></D:propfind>"#;

pub(super) fn book_of(response: &DavResponse, base: &Url) -> Option<FoundBook> {
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

pub(super) fn last_segment(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        .unwrap_or_default()
        .to_owned()
}

pub(super) fn href_in(response: &DavResponse, ns: &str, name: &str, base: &Url) -> Option<Url> {
    let href = response.prop(ns, name)?.child(DAV, "href")?.trimmed();
    base.join(href).ok()
}

/// Finds the address books: the URL itself when it is one; else its (or the well-known
/// URL's) current-user-principal → addressbook-home-set → the address books in it.
///
/// A configured URL below the server's root is taken at its word: one the server does not
/// have (404, 410) or refuses (403) is an error, not a reason to read whatever the
/// well-known URL leads to; and a collection that is neither an address book nor a
/// principal but holds address books (a home set, Calypso's user collection, a plain
/// WebDAV folder) is named with them, for the user to choose one.
pub(super) async fn discover(
    client: &mut Client,
    start: &Url,
) -> Result<Vec<FoundBook>, CardDavError> {
    const WHAT: &str = "PROPFIND (discovery)";
    let propfind = Method::from_bytes(b"PROPFIND").unwrap_or(Method::GET);
    let mut home: Option<Url> = None;
    let mut principal: Option<Url> = None;
    let below_root = !matches!(start.path(), "" | "/");
    let mut candidates = vec![start.clone()];
    if let Ok(well_known) = start.join("/.well-known/carddav") {
        candidates.push(well_known);
    }
    for (index, url) in candidates.into_iter().enumerate() {
        let configured = index == 0;
        let (answered, answer) = match client
            .multistatus(&propfind, &url, Some("0"), PROPFIND_DISCOVERY, WHAT)
            .await
        {
            Ok(found) => found,
            Err(Failure::Error(CardDavError::Status { status, .. }))
                if configured && below_root && matches!(status.as_u16(), 403 | 404 | 410) =>
            {
                return Err(not_there(&client.source, status));
            }
            // Not every URL is a DAV resource (a server's root may answer 404 or 405): try
            // the next.
            Err(Failure::Error(CardDavError::Status { status, .. }))
                if status.is_client_error() =>
            {
                continue;
            }
            Err(failure) => return Err(too_large(failure, client, WHAT)),
        };
        let responses = answer.responses;
        let mut is_principal = false;
        for response in &responses {
            if let Some(book) = book_of(response, &answered) {
                return Ok(vec![book]);
            }
            is_principal |= response
                .prop(DAV, "resourcetype")
                .is_some_and(|t| t.child(DAV, "principal").is_some());
            home = home.or_else(|| href_in(response, CARDDAV, "addressbook-home-set", &answered));
            principal =
                principal.or_else(|| href_in(response, DAV, "current-user-principal", &answered));
        }
        if configured && below_root && !is_principal && home.is_none() {
            // Servers name the user's principal on every resource, so that alone does not
            // make this URL a starting point: a collection that holds address books is the
            // user's mistake to be told about (one PROPFIND, at discovery only).
            let (listed, listing) = client
                .multistatus(&propfind, &answered, Some("1"), PROPFIND_DISCOVERY, WHAT)
                .await
                .map_err(|f| too_large(f, client, WHAT))?;
            let inside: Vec<FoundBook> = listing
                .responses
                .iter()
                .filter_map(|r| book_of(r, &listed))
                .filter(|b| b.url.trim_end_matches('/') != listed.as_str().trim_end_matches('/'))
                .collect();
            if !inside.is_empty() {
                let named: Vec<(String, Option<String>)> = inside
                    .iter()
                    .map(|b| (b.url.clone(), Some(b.name.clone())))
                    .collect();
                return Err(holds_books(&client.source, &listed, &named));
            }
        }
        if home.is_some() || principal.is_some() {
            break;
        }
    }
    if home.is_none()
        && let Some(principal) = &principal
    {
        let (answered, answer) = client
            .multistatus(&propfind, principal, Some("0"), PROPFIND_DISCOVERY, WHAT)
            .await
            .map_err(|f| too_large(f, client, WHAT))?;
        let responses = answer.responses;
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
    let (answered, answer) = client
        .multistatus(&propfind, &home, Some("1"), PROPFIND_DISCOVERY, WHAT)
        .await
        .map_err(|f| too_large(f, client, WHAT))?;
    let responses = answer.responses;
    let mut books: Vec<FoundBook> = responses
        .iter()
        .filter_map(|r| book_of(r, &answered))
        .collect();
    books.sort_by(|a, b| a.url.cmp(&b.url));
    books.dedup_by(|a, b| a.url == b.url);
    Ok(books)
}

/// The configured URL is not on the server, or not for this user.
pub(super) fn not_there(source: &str, status: StatusCode) -> CardDavError {
    let what = if status == StatusCode::FORBIDDEN {
        "the server refuses the configured URL"
    } else {
        "the configured URL is not on the server"
    };
    CardDavError::Setup {
        name: source.to_owned(),
        reason: format!(
            "{what} ({status}): check `carddav` (an address book's URL, your principal's, or the server's root, from which the address books are found; `contactsyncd check-source` lists what a URL finds)"
        ),
    }
}

/// The configured URL is a collection that holds address books rather than one of them:
/// `books` are their URLs (with display names when known), named relative to `collection`
/// (the texts hold no user name, which the URL's path often has).
pub(super) fn holds_books(
    source: &str,
    collection: &Url,
    books: &[(String, Option<String>)],
) -> CardDavError {
    let base = collection.as_str().trim_end_matches('/');
    let names: Vec<String> = books
        .iter()
        .map(|(url, name)| {
            let relative = url
                .strip_prefix(base)
                .map(|rest| rest.trim_start_matches('/').to_owned())
                .filter(|rest| !rest.is_empty())
                .unwrap_or_else(|| {
                    Url::parse(url).map_or_else(|_| url.clone(), |u| last_segment(&u) + "/")
                });
            match name {
                Some(name) if name.trim_end_matches('/') != relative.trim_end_matches('/') => {
                    format!("{relative} ({name:?})")
                }
                _ => relative,
            }
        })
        .collect();
    CardDavError::Setup {
        name: source.to_owned(),
        reason: format!(
            "the configured URL is a collection that holds address books, not an address book; the address books in it: {}: set `carddav` to the URL of one of them",
            names.join(", ")
        ),
    }
}

/// The address books the configuration asks for, of those found.
pub(super) fn choose_books(
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
pub(super) fn discovery_key(config: &CardDavConfig) -> u64 {
    let inputs = serde_json::to_vec(&(&config.url, &config.username, &config.address_books))
        .unwrap_or_default();
    // 0 is what a failure row stores before any discovery.
    xxhash_rust::xxh3::xxh3_64(&inputs).max(1)
}
