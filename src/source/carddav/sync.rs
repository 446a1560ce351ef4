//! Polling one address book: the rounds of listings and multigets, and what they mean.

#[allow(unused_imports)]
use super::*;

/// Polls one address book from its stored token; returns what to store.
/// `cached`: the book's cached cards (URL → etag), read before any request (the store is
/// not held across the network).
pub(super) async fn poll_book(
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
