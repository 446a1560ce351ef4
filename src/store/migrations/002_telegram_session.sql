-- The Telegram session (grammers' Session trait on our own database): data centres with
-- their auth keys, the home DC, the logged-in account, the updates state.
CREATE TABLE telegram_dc (
    id INTEGER PRIMARY KEY NOT NULL,
    ipv4 TEXT NOT NULL,
    ipv6 TEXT NOT NULL,
    auth_key BLOB
);

CREATE TABLE telegram_session (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    home_dc INTEGER NOT NULL,
    pts INTEGER NOT NULL DEFAULT 0,
    qts INTEGER NOT NULL DEFAULT 0,
    date INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0,
    -- Who logged in (for status; phone shown redacted).
    user_id INTEGER,
    phone TEXT,
    first_name TEXT
);
