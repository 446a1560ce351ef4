//! The requests of a poll: sync-collection, the PROPFIND etag listing and the multiget.

#[allow(unused_imports)]
use super::*;

/// What a listing of a book found (sync-collection or PROPFIND).
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// URL → etag of members changed (or, for a full listing, all members).
    pub(super) members: Vec<(String, Option<String>)>,
    /// The members whose card came with the listing (sync-collection asks for
    /// `address-data`), by URL: they need no multiget.
    pub(super) cards: HashMap<String, FetchedCard>,
    pub(super) deleted: Vec<String>,
    /// A full listing: every member is named, so a cached card not named is gone.
    pub(super) complete: bool,
    pub(super) token: Option<String>,
    pub(super) truncated: bool,
}

pub(super) enum SyncAnswer {
    Listing(Listing),
    InvalidToken,
}

/// The sync-collection request; `with_cards`: ask for each changed member's card too
/// (RFC 6578 §3.2 lets the client name any properties), so that a first read is one request
/// rather than a listing and then multigets.
pub(super) fn sync_body(token: Option<&str>, with_cards: bool) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<D:sync-collection xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:sync-token>{}</D:sync-token><D:sync-level>1</D:sync-level><D:prop><D:getetag/>{}</D:prop></D:sync-collection>"#,
        xml_escape(token.unwrap_or_default()),
        if with_cards { "<C:address-data/>" } else { "" }
    )
}

/// sync-collection from `token` (None: the initial listing of every member), asking for the
/// cards with it. An answer larger than one answer may be (a book of more than
/// `MAX_ANSWER_BYTES` of cards) is dropped unread and asked again without the cards: the
/// etags alone are a few hundred bytes a member, and the cards then come by multigets. A cut
/// answer is never read, so it never passes for a complete listing.
pub(super) async fn sync_collection(
    client: &mut Client,
    book: &Url,
    token: Option<&str>,
) -> Result<SyncAnswer, CardDavError> {
    const WHAT: &str = "REPORT sync-collection";
    let report = Method::from_bytes(b"REPORT").unwrap_or(Method::GET);
    let mut with_cards = true;
    let answer = loop {
        match client
            .send(
                &report,
                book,
                None,
                Some(&sync_body(token, with_cards)),
                WHAT,
                MAX_ANSWER_BYTES,
            )
            .await
        {
            Err(Failure::TooLarge) if with_cards => {
                tracing::debug!(
                    source = %client.source,
                    "the listing with the cards is too large for one answer: listing etags, then multigets"
                );
                with_cards = false;
            }
            answer => break answer.map_err(|f| too_large(f, client, WHAT))?,
        }
    };
    parse_sync_answer(answer.status, &answer.body, &answer.url, book, token).map_err(|failure| {
        match failure {
            SyncFailure::Status(status) => CardDavError::Status {
                name: client.source.clone(),
                status,
                what: WHAT,
            },
            SyncFailure::Garbage(reason) => client.garbage(WHAT, reason),
        }
    })
}

/// A book's first read where the server allows it, for books with sync-collection: the
/// book's `DAV:sync-token` (PROPFIND depth 0, RFC 6578 §4), then every card by one
/// `addressbook-query` without a filter. Measured on Radicale 3.9 with 10,000 cards, this
/// costs the server about 0.6 s + 1.4-1.9 s, where a tokenless sync-collection with the
/// cards costs 2.7-3.0 s (it checks each name against a list of the folder, quadratic) and
/// vdirsyncer's PROPFIND and multiget 3.4-4.0 s. The token is taken before the cards, so a
/// change made in between is reported again by the next sync-collection, never lost.
///
/// None when the server does not give it: no token, a refusal (RFC 6352 makes the filter
/// mandatory; a server may answer 400), a truncated (507) or too large answer, a member
/// without its card, or no member at all (a server that reads the missing filter as "match
/// nothing" would list none): then the sync-collection listing is read instead.
pub(super) async fn read_whole_book(
    client: &mut Client,
    book: &Url,
) -> Result<Option<Listing>, CardDavError> {
    const TOKEN: &str = "PROPFIND (sync-token)";
    const TOKEN_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:sync-token/></D:prop></D:propfind>"#;
    const QUERY: &str = "REPORT addressbook-query";
    const QUERY_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:prop><D:getetag/><C:address-data/></D:prop></C:addressbook-query>"#;
    let propfind = Method::from_bytes(b"PROPFIND").unwrap_or(Method::GET);
    let token = match client
        .multistatus(&propfind, book, Some("0"), TOKEN_BODY, TOKEN)
        .await
    {
        Ok((_, answer)) => answer
            .responses
            .iter()
            .find_map(|r| r.prop(DAV, "sync-token"))
            .map(|t| t.trimmed().to_owned())
            .filter(|t| !t.is_empty()),
        Err(Failure::TooLarge)
        | Err(Failure::Error(CardDavError::Status { .. }))
        | Err(Failure::Error(CardDavError::Garbage { .. })) => None,
        Err(Failure::Error(err)) => return Err(err),
    };
    let Some(token) = token else {
        return Ok(None);
    };
    let report = Method::from_bytes(b"REPORT").unwrap_or(Method::GET);
    let answer = match client
        .send(
            &report,
            book,
            Some("1"),
            Some(QUERY_BODY),
            QUERY,
            MAX_ANSWER_BYTES,
        )
        .await
    {
        Ok(answer) => answer,
        Err(Failure::TooLarge) | Err(Failure::Error(CardDavError::Status { .. })) => {
            return Ok(None);
        }
        Err(Failure::Error(err)) => return Err(err),
    };
    let listing = query_listing(answer.status, &answer.body, &answer.url, book);
    if listing.is_none() {
        tracing::debug!(source = %client.source, "the address book query gave no full listing; reading the sync-collection listing");
    }
    Ok(listing.map(|listing| Listing {
        token: Some(token),
        ..listing
    }))
}

/// Every member of a book and its card, from an `addressbook-query` answer (pure: tested on
/// byte strings); None when the answer is not a complete listing with every card.
pub(super) fn query_listing(
    status: StatusCode,
    body: &[u8],
    answered: &Url,
    book: &Url,
) -> Option<Listing> {
    if status != StatusCode::MULTI_STATUS {
        return None;
    }
    let answer = parse_multistatus(body).ok()?;
    let book = card_url(book, book.as_str()).unwrap_or_else(|| book.clone());
    let mut listing = Listing {
        complete: true,
        ..Listing::default()
    };
    for response in &answer.responses {
        let url = card_url(answered, &response.href)?;
        let is_collection =
            url.as_str().trim_end_matches('/') == book.as_str().trim_end_matches('/');
        if is_collection || url.as_str().ends_with('/') {
            // A 507 on the collection: the server cut the answer (RFC 6352 §8.6.1).
            if response.status.is_some_and(|s| s != 200) {
                return None;
            }
            continue;
        }
        if response.status.is_some_and(|s| s != 200) {
            return None;
        }
        let etag = response
            .prop(DAV, "getetag")
            .map(|e| e.trimmed().to_owned());
        let data = response.prop(CARDDAV, "address-data")?;
        let card = fetched_card(url.to_string(), etag.clone(), data);
        listing.cards.insert(url.to_string(), card);
        listing.members.push((url.to_string(), etag));
    }
    if listing.members.is_empty() {
        return None;
    }
    Some(listing)
}

/// Why a sync-collection answer is not one.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SyncFailure {
    Status(StatusCode),
    Garbage(String),
}

/// What a sync-collection answer says, from its status and body alone (pure: tested on byte
/// strings). `answered`: the URL that answered (after redirects), `book` the one asked,
/// `token` the token sent.
pub(super) fn parse_sync_answer(
    status: StatusCode,
    body: &[u8],
    answered: &Url,
    book: &Url,
    token: Option<&str>,
) -> Result<SyncAnswer, SyncFailure> {
    // RFC 6578 §3.2: an invalid or expired token is 403 with DAV:valid-sync-token; Xandikos
    // answers 412 (Precondition Failed).
    let names_valid_token = || names_element(body, DAV, "valid-sync-token");
    if status == StatusCode::PRECONDITION_FAILED
        || (status == StatusCode::FORBIDDEN && names_valid_token())
    {
        return Ok(SyncAnswer::InvalidToken);
    }
    if status != StatusCode::MULTI_STATUS {
        return Err(SyncFailure::Status(status));
    }
    let answer = parse_multistatus(body).map_err(SyncFailure::Garbage)?;
    let responses = answer.responses;
    let mut listing = Listing {
        complete: token.is_none(),
        ..Listing::default()
    };
    let book = card_url(book, book.as_str()).unwrap_or_else(|| book.clone());
    for response in &responses {
        let url = card_url(answered, &response.href)
            .ok_or_else(|| SyncFailure::Garbage("an href that is no URL".into()))?;
        let is_collection =
            url.as_str().trim_end_matches('/') == book.as_str().trim_end_matches('/');
        match response.status {
            // RFC 6578 §3.6: the collection itself with 507: more changes than one answer.
            Some(507) if is_collection => listing.truncated = true,
            Some(404) => listing.deleted.push(url.to_string()),
            _ if is_collection || url.as_str().ends_with('/') => {}
            Some(status) if status != 200 => {
                return Err(SyncFailure::Garbage(format!(
                    "a member answered with status {status}"
                )));
            }
            _ => {
                let etag = response
                    .prop(DAV, "getetag")
                    .map(|e| e.trimmed().to_owned());
                // A server may leave a property out (Xandikos names only what changed) or
                // answer it 404: that member's card comes by multiget.
                if let Some(data) = response.prop(CARDDAV, "address-data") {
                    let card = fetched_card(url.to_string(), etag.clone(), data);
                    listing.cards.insert(url.to_string(), card);
                }
                listing.members.push((url.to_string(), etag));
            }
        }
    }
    listing.token = answer.sync_token;
    if listing.token.is_none() {
        return Err(SyncFailure::Garbage("no sync-token in the answer".into()));
    }
    Ok(SyncAnswer::Listing(listing))
}

/// PROPFIND depth 1 with getetag: every member, for servers without sync-collection.
pub(super) async fn list_members(client: &mut Client, book: &Url) -> Result<Listing, CardDavError> {
    const WHAT: &str = "PROPFIND (listing)";
    const BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>"#;
    let propfind = Method::from_bytes(b"PROPFIND").unwrap_or(Method::GET);
    let (answered, answer) = client
        .multistatus(&propfind, book, Some("1"), BODY, WHAT)
        .await
        .map_err(|f| too_large(f, client, WHAT))?;
    let responses = answer.responses;
    let mut listing = Listing {
        complete: true,
        ..Listing::default()
    };
    let mut books_inside = Vec::new();
    let mut other_collections = Vec::new();
    for response in &responses {
        let url = card_url(&answered, &response.href)
            .ok_or_else(|| client.garbage(WHAT, "an href that is no URL".into()))?;
        let resourcetype = response.prop(DAV, "resourcetype");
        let is_collection = resourcetype.is_some_and(|t| t.child(DAV, "collection").is_some())
            || url.as_str().ends_with('/');
        if is_collection {
            let is_book = resourcetype.is_some_and(|t| t.child(CARDDAV, "addressbook").is_some());
            let is_itself =
                url.as_str().trim_end_matches('/') == answered.as_str().trim_end_matches('/');
            if is_book && !is_itself {
                books_inside.push((url.to_string(), None));
            } else if !is_itself {
                other_collections.push((url.to_string(), None));
            }
            continue;
        }
        let etag = response
            .prop(DAV, "getetag")
            .map(|e| e.trimmed().to_owned());
        listing.members.push((url.to_string(), etag));
    }
    // An address book holds no collections (RFC 6352 §5.2): one that holds address books is
    // a user's collection that calls itself a book (Calypso's `/alice/`). Read as a book it
    // would be empty, and its cards would seem deleted.
    if !books_inside.is_empty() {
        return Err(holds_books(&client.source, &answered, &books_inside));
    }
    // Calypso 2.1 (Debian's) calls `/alice/` an address book and lists the books in it as
    // calendar collections only. A book may hold plain collections beside its cards, but one
    // with no card and collections inside is such a user's collection: read as a book it
    // would be empty.
    if listing.members.is_empty() && !other_collections.is_empty() {
        return Err(holds_books(&client.source, &answered, &other_collections));
    }
    Ok(listing)
}

/// addressbook-multiget of `urls` (at most `MULTIGET_BATCH`); a batch whose answer is too
/// large is split, and a single card too large is refused with its own error.
pub(super) async fn multiget(
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
            // The path, and a query when the server's href had one (a raw `?` in a name).
            let path = Url::parse(url).map_or_else(
                |_| url.clone(),
                |u| match u.query() {
                    Some(query) => format!("{}?{query}", u.path()),
                    None => u.path().to_owned(),
                },
            );
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
        let responses = parse_multistatus(&answer.body)
            .map_err(|r| client.garbage(WHAT, r))?
            .responses;
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
            fetched.push(fetched_card(url, etag, data));
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

/// A card as an answer's `address-data` gives it; refused when larger than one card may be.
fn fetched_card(url: String, etag: Option<String>, data: &Node) -> FetchedCard {
    let size = data.text_len;
    FetchedCard {
        url,
        etag,
        body: if size > MAX_CARD_BYTES {
            Err(too_big_card(size))
        } else {
            Ok(data.text.clone().into_bytes())
        },
        size: size as u64,
    }
}

pub(super) fn too_big_card(size: usize) -> String {
    format!(
        "the card is {:.1} MiB, more than the {} MiB one card may have (a large photo?); it is skipped",
        size as f64 / (1024.0 * 1024.0),
        MAX_CARD_BYTES >> 20
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(status: u16, body: &str, token: Option<&str>) -> Result<SyncAnswer, SyncFailure> {
        let book = Url::parse("https://dav.example.org/b/").unwrap();
        let status = StatusCode::from_u16(status).unwrap();
        parse_sync_answer(status, body.as_bytes(), &book, &book, token)
    }

    fn listing(answer: Result<SyncAnswer, SyncFailure>) -> Listing {
        match answer {
            Ok(SyncAnswer::Listing(listing)) => listing,
            Ok(SyncAnswer::InvalidToken) => panic!("taken as an invalid token"),
            Err(failure) => panic!("{failure:?}"),
        }
    }

    const ERROR: &str = r#"<D:error xmlns:D="DAV:"><D:valid-sync-token/></D:error>"#;

    #[test]
    fn an_invalid_token_is_403_with_valid_sync_token_or_412() {
        assert!(matches!(
            parse(403, ERROR, Some("t1")),
            Ok(SyncAnswer::InvalidToken)
        ));
        assert!(matches!(
            parse(412, "", Some("t1")),
            Ok(SyncAnswer::InvalidToken)
        ));
        // A 403 for another reason is no token matter.
        assert_eq!(
            parse(403, "<p>forbidden</p>", Some("t1")).err(),
            Some(SyncFailure::Status(StatusCode::FORBIDDEN))
        );
        assert_eq!(
            parse(200, "<p>hi</p>", None).err(),
            Some(SyncFailure::Status(StatusCode::OK))
        );
    }

    #[test]
    fn rows_become_members_deletions_and_a_truncation() {
        let body = r#"<D:multistatus xmlns:D="DAV:">
<D:response><D:href>/b/a.vcf</D:href><D:propstat><D:prop><D:getetag>"1"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
<D:response><D:href>/b/gone.vcf</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>
<D:response><D:href>/b/</D:href><D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>
<D:sync-token>t2</D:sync-token></D:multistatus>"#;
        let listing = listing(parse(207, body, Some("t1")));
        assert_eq!(
            listing.members,
            [(
                "https://dav.example.org/b/a.vcf".to_owned(),
                Some("\"1\"".to_owned())
            )]
        );
        assert_eq!(listing.deleted, ["https://dav.example.org/b/gone.vcf"]);
        assert!(listing.truncated);
        assert!(!listing.complete, "an answer to a token is a delta");
        assert_eq!(listing.token.as_deref(), Some("t2"));
        assert!(listing_of_no_token_is_complete());
    }

    fn listing_of_no_token_is_complete() -> bool {
        let body =
            r#"<D:multistatus xmlns:D="DAV:"><D:sync-token>t1</D:sync-token></D:multistatus>"#;
        listing(parse(207, body, None)).complete
    }

    #[test]
    fn a_query_answer_is_a_full_listing_only_when_complete_with_every_card() {
        let book = Url::parse("https://dav.example.org/b/").unwrap();
        let query = |body: &str| {
            query_listing(StatusCode::MULTI_STATUS, body.as_bytes(), &book, &book)
                .map(|l| (l.members.len(), l.cards.len(), l.complete))
        };
        let card = r#"<D:response><D:href>/b/a.vcf</D:href><D:propstat><D:prop><D:getetag>"1"</D:getetag><C:address-data>BEGIN:VCARD</C:address-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#;
        let wrap = |rows: &str| {
            format!(
                r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">{rows}</D:multistatus>"#
            )
        };
        assert_eq!(query(&wrap(card)), Some((1, 1, true)));
        let cut = r#"<D:response><D:href>/b/</D:href><D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>"#;
        assert_eq!(query(&wrap(&format!("{card}{cut}"))), None, "cut");
        assert_eq!(query(&wrap("")), None, "no member: the filter read as none");
        let bare = card.replace("<C:address-data>BEGIN:VCARD</C:address-data>", "");
        assert_eq!(query(&wrap(&bare)), None, "a member without its card");
        assert!(
            query_listing(StatusCode::BAD_REQUEST, b"", &book, &book).is_none(),
            "refused"
        );
    }

    #[rstest::rstest]
    #[case::member_error(
        r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/b/a.vcf</D:href><D:status>HTTP/1.1 500 Oops</D:status></D:response><D:sync-token>t</D:sync-token></D:multistatus>"#,
        "a member answered with status 500"
    )]
    #[case::no_token(r#"<D:multistatus xmlns:D="DAV:"></D:multistatus>"#, "no sync-token")]
    #[case::no_href(
        r#"<D:multistatus xmlns:D="DAV:"><D:response></D:response></D:multistatus>"#,
        "a response without href"
    )]
    #[case::not_multistatus(r#"<D:error xmlns:D="DAV:"/>"#, "expected a DAV multistatus")]
    fn a_bad_answer_says_why(#[case] body: &str, #[case] reason: &str) {
        match parse(207, body, Some("t1")) {
            Err(SyncFailure::Garbage(said)) => assert!(said.contains(reason), "{said}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
