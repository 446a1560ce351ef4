-- OAuth 2.0 tokens of CardDAV sources that log in with them (issue 26): what
-- `contactsyncd authorize` obtained, kept current by every refresh. In the state database,
-- which is 0600 in a 0700 directory: never in the configuration and never in a log.
CREATE TABLE oauth_token (
    source TEXT PRIMARY KEY NOT NULL,
    -- The client the tokens were issued to: another one in the configuration needs
    -- `authorize` again (a refresh token is bound to its client).
    client_id TEXT NOT NULL,
    refresh_token TEXT,
    access_token TEXT,
    access_expires_at INTEGER,
    -- When the user gave consent: Google ends the refresh tokens of a client in "Testing"
    -- status 7 days after that.
    authorized_at INTEGER NOT NULL,
    -- When the server said the refresh token ends (`refresh_token_expires_in`), if it did.
    refresh_expires_at INTEGER
);
