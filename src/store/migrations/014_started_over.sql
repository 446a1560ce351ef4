-- When the state database was found empty (0 bytes: truncated, or left by a first start
-- that crashed) and started over: `status` says so, as the session and every stored
-- fingerprint were lost with it. One row at most.
CREATE TABLE started_over (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
