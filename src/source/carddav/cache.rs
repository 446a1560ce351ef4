//! The scan side: the cached cards, examined like files.

#[allow(unused_imports)]
use super::*;

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
pub(in crate::source) fn fingerprint(card: &CachedCard) -> (u64, i64, u64) {
    (card.size, 0, card.content_hash)
}

/// The cached cards of a source, sorted by URL (the "files" of the source).
pub fn cards(store: &Store, source: &SourceConfig) -> Result<Vec<CachedCard>, store::StoreError> {
    store.carddav_cards(&source.name)
}

/// `examine_file` for a cached card: unchanged when its record has the same fingerprint and
/// derivation; else its bytes are read from the cache and parsed.
pub(in crate::source) fn examine_card(
    store: &Store,
    card: &CachedCard,
    previous: Option<&FileRecord>,
    derivation: Derivation<'_>,
    scan: &mut Scan,
) -> Result<Examined, store::StoreError> {
    let Derivation { source, key, .. } = derivation;
    let path = PathBuf::from(&card.url);
    let mut defer = |state: FileState, error: String| {
        scan.files_deferred += 1;
        Examined::deferred(FileChange::Deferred {
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
    Ok(match super::super::understand_file(&bytes, derivation) {
        Ok(contribution) => Examined::parsed(
            FileRecord {
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
            contribution,
        ),
        // The server's answer is complete: a card that ends early will not be finished by
        // waiting, so it is bad, not incomplete.
        Err((FileState::Incomplete, error)) => defer(FileState::Unreadable, error),
        Err((state, error)) => defer(state, error),
    })
}
