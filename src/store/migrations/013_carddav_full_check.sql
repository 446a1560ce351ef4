-- Issue 22: when each CardDAV address book was last listed in full (every member with its
-- etag, authoritative: what the cache has beyond it is gone). A server that forgets a
-- sync-token may answer it with a full listing that looks like a delta (DAViCal), so a full
-- listing is made at `full_check_interval` whatever the token says, and at start after the
-- daemon was off longer. NULL: never (the next poll makes one).
ALTER TABLE carddav_book ADD COLUMN full_listed_at INTEGER;
