-- Source files and what their cards yielded, so an unchanged file is never parsed again.
CREATE TABLE source_file (
    path TEXT PRIMARY KEY NOT NULL,
    source TEXT NOT NULL,
    -- Fingerprint of the last complete read; NULL until there was one.
    size INTEGER,
    mtime_ns INTEGER,
    inode INTEGER,
    content_hash INTEGER,
    -- 'ok' | 'incomplete' (ends inside a card: deferred) | 'unreadable'
    state TEXT NOT NULL,
    last_error TEXT,
    cards INTEGER NOT NULL DEFAULT 0,
    card_errors INTEGER NOT NULL DEFAULT 0,
    scanned_at INTEGER NOT NULL
);

CREATE TABLE card_phone (
    path TEXT NOT NULL REFERENCES source_file(path) ON DELETE CASCADE,
    card INTEGER NOT NULL,
    e164 TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    PRIMARY KEY (path, card, e164)
) WITHOUT ROWID;

-- Per source, the outcome of the last scan: 'ok', or 'unknown' with the reason.
CREATE TABLE source_status (
    name TEXT PRIMARY KEY NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    files INTEGER NOT NULL,
    cards INTEGER NOT NULL,
    phones INTEGER NOT NULL,
    card_errors INTEGER NOT NULL,
    deferred INTEGER NOT NULL,
    scanned_at INTEGER NOT NULL
);

-- One row per backend account.
CREATE TABLE account (
    backend TEXT PRIMARY KEY NOT NULL,
    -- Never reused: every import item gets the next one, so a reply maps back to its row.
    next_client_id INTEGER NOT NULL DEFAULT 1,
    paused_until INTEGER,
    pause_reason TEXT,
    auth_required INTEGER NOT NULL DEFAULT 0,
    last_success INTEGER,
    last_error TEXT
);

-- What the remote has, as far as we know: only confirmed results land here.
CREATE TABLE mirror (
    backend TEXT NOT NULL REFERENCES account(backend),
    e164 TEXT NOT NULL,
    -- Names the remote has (as sent), empty while never imported.
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    -- 'imported' | 'saved' (no account behind the number) | 'not_imported'
    state TEXT NOT NULL,
    user_id INTEGER,
    access_hash INTEGER,
    -- client_id of the last send.
    client_id INTEGER,
    -- The last attempt failed: for these names, retry at hold_until, or (NULL) not until
    -- the card changes (rejected).
    hold_first_name TEXT,
    hold_last_name TEXT,
    hold_until INTEGER,
    hold_reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (backend, e164)
) WITHOUT ROWID;

-- Work written before anything is sent: planned -> sent -> applied.
CREATE TABLE outbox_batch (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    backend TEXT NOT NULL REFERENCES account(backend),
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    sent_at INTEGER,
    applied_at INTEGER,
    send_count INTEGER NOT NULL DEFAULT 0,
    outcome TEXT
);
CREATE INDEX outbox_batch_open ON outbox_batch (backend, state);

CREATE TABLE outbox_item (
    batch_id INTEGER NOT NULL REFERENCES outbox_batch(id) ON DELETE CASCADE,
    e164 TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    client_id INTEGER,
    PRIMARY KEY (batch_id, e164)
) WITHOUT ROWID;

CREATE TABLE run (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    files_seen INTEGER NOT NULL DEFAULT 0,
    files_parsed INTEGER NOT NULL DEFAULT 0,
    files_deferred INTEGER NOT NULL DEFAULT 0,
    contacts INTEGER NOT NULL DEFAULT 0,
    imports_planned INTEGER NOT NULL DEFAULT 0,
    deletes_planned INTEGER NOT NULL DEFAULT 0,
    deletes_held INTEGER NOT NULL DEFAULT 0,
    batches_sent INTEGER NOT NULL DEFAULT 0,
    imported INTEGER NOT NULL DEFAULT 0,
    saved INTEGER NOT NULL DEFAULT 0,
    retrying INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    message TEXT
);
