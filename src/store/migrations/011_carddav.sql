-- CardDAV sources (issue 14). What the server last gave is kept here, so that planning
-- reads only the state (offline-first) and a poll asks only for what changed. A card of
-- the cache becomes a `source_file` row keyed by its URL, like a file by its path: the
-- planner, the diff and `card_phone` do not know which kind a card came from.

-- Per CardDAV source: the configuration its address books were discovered with, and why
-- the last poll failed (NULL after a complete one). A poll that finds nothing new writes
-- nothing, not even here.
CREATE TABLE carddav_source (
    source TEXT PRIMARY KEY NOT NULL,
    -- Key of (URL, username, address_books): another one means discover again.
    discovered_for INTEGER NOT NULL,
    last_error TEXT,
    failed_at INTEGER
);

-- The address books read for a source, and the sync-token of the last complete poll
-- (stored in the same transaction as the cards it covers).
CREATE TABLE carddav_book (
    source TEXT NOT NULL REFERENCES carddav_source(source) ON DELETE CASCADE,
    url TEXT NOT NULL,
    name TEXT NOT NULL,
    supports_sync INTEGER NOT NULL,
    sync_token TEXT,
    PRIMARY KEY (source, url)
);

-- The cards as the server last gave them. `body` is NULL and `error` says why when a card
-- was refused (larger than one card may be).
CREATE TABLE carddav_card (
    source TEXT NOT NULL,
    book TEXT NOT NULL,
    url TEXT NOT NULL,
    etag TEXT,
    content_hash INTEGER NOT NULL,
    size INTEGER NOT NULL,
    body BLOB,
    error TEXT,
    PRIMARY KEY (source, url),
    FOREIGN KEY (source, book) REFERENCES carddav_book(source, url) ON DELETE CASCADE
);
