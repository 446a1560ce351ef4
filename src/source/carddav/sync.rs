//! Polling one address book: the rounds of listings and multigets, and what they mean.

use std::collections::BTreeMap;

#[allow(unused_imports)]
use super::*;

/// How one book's poll is run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rounds {
    pub(super) now: store::Timestamp,
    /// A full (authoritative) etag listing is made when the last one is at least this old.
    pub(super) full_check_interval: u64,
    /// A truncated (507) answer is asked again at most this often.
    pub(super) max_rounds: usize,
}

/// The members a listing names to fetch: those whose etag differs from the cached one, or
/// that have none. An href listed more than once (Calypso, after a PUT whose UID differs from
/// its name, lists one href with two etags) counts as unchanged when any of its etags is the
/// cached one; else it is fetched once. So it settles instead of being "changed" every poll.
fn to_fetch(
    members: &[(String, Option<String>)],
    cached: &HashMap<String, Option<String>>,
) -> Vec<String> {
    let mut etags: BTreeMap<&str, Vec<Option<&str>>> = BTreeMap::new();
    for (member, etag) in members {
        etags
            .entry(member.as_str())
            .or_default()
            .push(etag.as_deref());
    }
    etags
        .into_iter()
        .filter(|(member, listed)| {
            let cached = cached.get(*member).and_then(|e| e.as_deref());
            // Without an etag there is nothing to compare: fetch it.
            cached.is_none() || !listed.iter().any(|e| e.is_some() && *e == cached)
        })
        .map(|(member, _)| member.to_owned())
        .collect()
}

/// Polls one address book from its stored token; returns what to store.
/// `cached`: the book's cached cards (URL → etag), read before any request (the store is
/// not held across the network).
pub(super) async fn poll_book(
    client: &mut Client,
    source: &str,
    book: &CardDavBook,
    mut cached: HashMap<String, Option<String>>,
    rounds: Rounds,
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
    let mut outcome: BTreeMap<String, Option<FetchedCard>> = BTreeMap::new();
    let mut retried_token = false;
    let mut finished = false;
    for _ in 0..rounds.max_rounds {
        // A first read reads the whole book at once where the server allows it; else, for
        // deltas, and for a full listing after the token was refused, sync-collection. The
        // query has no filter (RFC 6352 wants one): a server that answered it with part of
        // the book and no 507 would look complete, so it is never the listing that decides
        // which cached cards are gone; on a first read nothing is cached, and the daily
        // authoritative listing (`full_check_interval`) brings any card it left out.
        let whole = if book.supports_sync && token.is_none() && cached.is_empty() {
            read_whole_book(client, &url).await?
        } else {
            None
        };
        let mut listing = if let Some(whole) = whole {
            whole
        } else if book.supports_sync {
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
        // The cards that came with the listing are taken from it; the others (a server that
        // left them out, a listing too large with them) come by multiget.
        let mut fetched = Vec::new();
        let mut fetch = Vec::new();
        for member in to_fetch(&listing.members, &cached) {
            match listing.cards.remove(&member) {
                Some(card) => fetched.push(card),
                None => fetch.push(member),
            }
        }
        let mut gone = Vec::new();
        multiget(client, &url, &fetch, &mut fetched, &mut gone).await?;
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
            finished = true;
            break;
        }
    }
    if !finished {
        // Still truncated after the last round: what was seen is kept and the token goes on
        // from there at the next poll, but a listing that stopped early names only part of
        // the book: it deletes nothing.
        tracing::warn!(
            source,
            rounds = rounds.max_rounds,
            "the server's answers stayed truncated (507); the rest is read at the next poll"
        );
        full_listing_seen = None;
    }
    let full_check_due = book
        .full_listed_at
        .is_none_or(|at| rounds.now.saturating_sub(at) >= rounds.full_check_interval as i64);
    if finished && full_listing_seen.is_none() && full_check_due {
        // Whatever the token said: a server that forgot it may have answered with a full
        // listing that reads like a delta (DAViCal), hiding deletions; an etag listing of
        // every member settles that at this interval.
        let listing = list_members(client, &url).await?;
        let fetch = to_fetch(&listing.members, &cached);
        let mut fetched = Vec::new();
        let mut gone = Vec::new();
        multiget(client, &url, &fetch, &mut fetched, &mut gone).await?;
        for url in gone {
            cached.remove(&url);
            outcome.insert(url, None);
        }
        for card in fetched {
            cached.insert(card.url.clone(), card.etag.clone());
            outcome.insert(card.url.clone(), Some(card));
        }
        full_listing_seen = Some(listing.members.into_iter().map(|(m, _)| m).collect());
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
        // Recorded only when it was due: a book listed in full every poll (no sync-collection)
        // writes its time once an interval, and a poll that finds nothing writes nothing.
        if full_check_due {
            poll.full_listed_at = Some(rounds.now);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn members(rows: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        rows.iter()
            .map(|(u, e)| ((*u).to_owned(), Some((*e).to_owned())))
            .collect()
    }

    #[test]
    fn an_href_listed_twice_settles_on_the_etag_fetched() {
        let listing = members(&[
            ("/b/a.vcf", "\"1\""),
            ("/b/a.vcf", "\"2\""),
            ("/b/c.vcf", "\"3\""),
        ]);
        let empty = HashMap::new();
        assert_eq!(
            to_fetch(&listing, &empty),
            ["/b/a.vcf", "/b/c.vcf"],
            "each once"
        );
        for fetched in ["\"1\"", "\"2\""] {
            let cached = HashMap::from([
                ("/b/a.vcf".to_owned(), Some(fetched.to_owned())),
                ("/b/c.vcf".to_owned(), Some("\"3\"".to_owned())),
            ]);
            assert!(to_fetch(&listing, &cached).is_empty(), "{fetched}");
        }
    }
}
