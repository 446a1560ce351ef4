//! The OAuth 2.0 tokens of CardDAV sources (`contactsyncd authorize`, then every refresh).

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, Timestamp};

/// What the state holds for a source. `Debug` leaves the tokens out: a stray `{:?}` in a
/// log line must not print them.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthTokens {
    pub client_id: String,
    pub refresh_token: Option<String>,
    pub access_token: Option<String>,
    pub access_expires_at: Option<Timestamp>,
    pub authorized_at: Timestamp,
    pub refresh_expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("client_id", &self.client_id)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "…"))
            .field("access_token", &self.access_token.as_ref().map(|_| "…"))
            .field("access_expires_at", &self.access_expires_at)
            .field("authorized_at", &self.authorized_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
}

impl Store {
    pub fn oauth_tokens(&self, source: &str) -> Result<Option<OAuthTokens>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT client_id, refresh_token, access_token, access_expires_at, authorized_at, refresh_expires_at
                 FROM oauth_token WHERE source = ?1",
                [source],
                |row| {
                    Ok(OAuthTokens {
                        client_id: row.get(0)?,
                        refresh_token: row.get(1)?,
                        access_token: row.get(2)?,
                        access_expires_at: row.get(3)?,
                        authorized_at: row.get(4)?,
                        refresh_expires_at: row.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Replaces what is kept for `source` (after `authorize`, or a refresh: a refresh that
    /// rotates the refresh token must have the new one stored before it is used).
    pub fn set_oauth_tokens(&mut self, source: &str, tokens: &OAuthTokens) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO oauth_token
             (source, client_id, refresh_token, access_token, access_expires_at, authorized_at, refresh_expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                source,
                tokens.client_id,
                tokens.refresh_token,
                tokens.access_token,
                tokens.access_expires_at,
                tokens.authorized_at,
                tokens.refresh_expires_at
            ],
        )?;
        Ok(())
    }

    /// Drops the tokens of sources the configuration no longer has: credentials are not
    /// kept for nothing.
    pub fn forget_oauth_tokens_except(&mut self, configured: &[&str]) -> Result<usize> {
        let known: Vec<String> = {
            let mut statement = self.conn().prepare("SELECT source FROM oauth_token")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut forgotten = 0;
        for name in known.iter().filter(|n| !configured.contains(&n.as_str())) {
            forgotten += self
                .conn()
                .execute("DELETE FROM oauth_token WHERE source = ?1", [name])?;
        }
        Ok(forgotten)
    }

    /// After a new authorization (perhaps of another account): the next poll discovers the
    /// address books again. The cards stay until that poll replaces them, so nothing is
    /// deleted meanwhile.
    pub fn rediscover_carddav_source(&mut self, source: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE carddav_source SET discovered_for = 0 WHERE source = ?1",
            [source],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_debug_hides_them() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.oauth_tokens("g").unwrap(), None);
        let tokens = OAuthTokens {
            client_id: "c".into(),
            refresh_token: Some("refresh-secret".into()),
            access_token: Some("access-secret".into()),
            access_expires_at: Some(100),
            authorized_at: 50,
            refresh_expires_at: None,
        };
        store.set_oauth_tokens("g", &tokens).unwrap();
        assert_eq!(store.oauth_tokens("g").unwrap(), Some(tokens.clone()));
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(store.forget_oauth_tokens_except(&["g"]).unwrap(), 0);
        assert_eq!(store.forget_oauth_tokens_except(&["other"]).unwrap(), 1);
        assert_eq!(store.oauth_tokens("g").unwrap(), None);
    }
}
