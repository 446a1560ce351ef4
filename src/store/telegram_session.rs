//! grammers' `Session` trait on our own state database (grammers' libsql storage clashes
//! with bundled rusqlite). Reads come from memory, as grammers asks on every request; every
//! change is written through to SQLite at once.

use std::net::{SocketAddrV4, SocketAddrV6};
use std::path::Path;
use std::sync::Mutex;

use grammers_session::storages::MemorySession;
use grammers_session::types::{DcOption, PeerId, PeerInfo, UpdateState, UpdatesState};
use grammers_session::{BoxFuture, Session, SessionData};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, StoreError};

#[derive(Debug, thiserror::Error)]
#[error("telegram session: {0}")]
pub struct SessionError(String);

/// The account a session is logged in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    pub user_id: i64,
    pub phone: Option<String>,
    pub first_name: Option<String>,
}

pub struct TelegramSession {
    memory: MemorySession,
    conn: Mutex<Connection>,
}

impl TelegramSession {
    /// Opens the session kept in `state.db` (the store must have been opened once, so the
    /// schema exists). A state without a session starts from grammers' defaults.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let conn = Connection::open(super::Store::path(state_dir))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let data = load(&conn)?;
        Ok(Self {
            memory: MemorySession::from(data),
            conn: Mutex::new(conn),
        })
    }

    /// Replaces the whole session (tests seed one that points at the local server).
    pub fn import(state_dir: &Path, data: &SessionData) -> Result<()> {
        let mut conn = Connection::open(super::Store::path(state_dir))?;
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM telegram_dc", [])?;
        tx.execute("DELETE FROM telegram_session", [])?;
        for dc in data.dc_options.values() {
            write_dc(&tx, dc)?;
        }
        tx.execute(
            "INSERT INTO telegram_session (id, home_dc) VALUES (1, ?1)",
            [data.home_dc],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets the session: keys, DCs and the account (`contactsyncd logout`).
    pub fn forget(state_dir: &Path) -> Result<()> {
        let conn = Connection::open(super::Store::path(state_dir))?;
        conn.execute_batch("DELETE FROM telegram_dc; DELETE FROM telegram_session;")?;
        Ok(())
    }

    pub fn logged_in(state_dir: &Path) -> Result<Option<LoggedIn>> {
        let path = super::Store::path(state_dir);
        // A fresh state (no sync, no login yet) has no database: nobody is logged in, which
        // is no error (`remote list` said "ERROR … unable to open database file" first).
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open(path)?;
        Ok(conn
            .query_row(
                "SELECT user_id, phone, first_name FROM telegram_session WHERE id = 1 AND user_id IS NOT NULL",
                [],
                |row| {
                    Ok(LoggedIn {
                        user_id: row.get(0)?,
                        phone: row.get(1)?,
                        first_name: row.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records who logged in.
    pub fn set_logged_in(&self, account: &LoggedIn) -> Result<()> {
        let conn = self.lock()?;
        ensure_row(&conn, self.memory.home_dc_id().unwrap_or(2))?;
        conn.execute(
            "UPDATE telegram_session SET user_id = ?1, phone = ?2, first_name = ?3 WHERE id = 1",
            params![account.user_id, account.phone, account.first_name],
        )?;
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Sqlite(rusqlite::Error::InvalidQuery))
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> std::result::Result<T, SessionError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| SessionError("session lock poisoned".into()))?;
        f(&conn).map_err(|e| SessionError(e.to_string()))
    }
}

fn ensure_row(conn: &Connection, home_dc: i32) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO telegram_session (id, home_dc) VALUES (1, ?1)",
        [home_dc],
    )?;
    Ok(())
}

fn write_dc(conn: &Connection, dc: &DcOption) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO telegram_dc (id, ipv4, ipv6, auth_key) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET ipv4 = excluded.ipv4, ipv6 = excluded.ipv6, auth_key = excluded.auth_key",
        params![
            dc.id,
            dc.ipv4.to_string(),
            dc.ipv6.to_string(),
            dc.auth_key.map(|k| k.to_vec())
        ],
    )?;
    Ok(())
}

fn load(conn: &Connection) -> Result<SessionData> {
    let mut data = SessionData::default();
    let mut statement = conn.prepare("SELECT id, ipv4, ipv6, auth_key FROM telegram_dc")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, i32>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, Option<Vec<u8>>>(3)?,
        ))
    })?;
    for row in rows {
        let (id, ipv4, ipv6, key) = row?;
        let (Ok(ipv4), Ok(ipv6)) = (ipv4.parse::<SocketAddrV4>(), ipv6.parse::<SocketAddrV6>())
        else {
            continue;
        };
        let auth_key = key.and_then(|k| <[u8; 256]>::try_from(k.as_slice()).ok());
        data.dc_options.insert(
            id,
            DcOption {
                id,
                ipv4,
                ipv6,
                auth_key,
            },
        );
    }
    if let Some((home, pts, qts, date, seq)) = conn
        .query_row(
            "SELECT home_dc, pts, qts, date, seq FROM telegram_session WHERE id = 1",
            [],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .optional()?
    {
        data.home_dc = home;
        data.updates_state = UpdatesState {
            pts,
            qts,
            date,
            seq,
            channels: Vec::new(),
        };
    }
    Ok(data)
}

impl Session for TelegramSession {
    type Error = SessionError;

    fn home_dc_id(&self) -> std::result::Result<i32, SessionError> {
        self.memory
            .home_dc_id()
            .map_err(|e| SessionError(e.to_string()))
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, std::result::Result<(), SessionError>> {
        Box::pin(async move {
            self.memory
                .set_home_dc_id(dc_id)
                .await
                .map_err(|e| SessionError(e.to_string()))?;
            self.write(|conn| {
                ensure_row(conn, dc_id)?;
                conn.execute(
                    "UPDATE telegram_session SET home_dc = ?1 WHERE id = 1",
                    [dc_id],
                )?;
                Ok(())
            })
        })
    }

    fn dc_option(&self, dc_id: i32) -> std::result::Result<Option<DcOption>, SessionError> {
        self.memory
            .dc_option(dc_id)
            .map_err(|e| SessionError(e.to_string()))
    }

    fn set_dc_option(
        &self,
        dc_option: &DcOption,
    ) -> BoxFuture<'_, std::result::Result<(), SessionError>> {
        let dc_option = dc_option.clone();
        Box::pin(async move {
            self.memory
                .set_dc_option(&dc_option)
                .await
                .map_err(|e| SessionError(e.to_string()))?;
            self.write(|conn| write_dc(conn, &dc_option))
        })
    }

    fn peer(
        &self,
        peer: PeerId,
    ) -> BoxFuture<'_, std::result::Result<Option<PeerInfo>, SessionError>> {
        Box::pin(async move {
            self.memory
                .peer(peer)
                .await
                .map_err(|e| SessionError(e.to_string()))
        })
    }

    // Peers stay in memory: the sync keeps user ids and access hashes in its own mirror.
    fn cache_peer(&self, peer: PeerInfo) -> BoxFuture<'_, std::result::Result<(), SessionError>> {
        Box::pin(async move {
            self.memory
                .cache_peer(peer)
                .await
                .map_err(|e| SessionError(e.to_string()))
        })
    }

    fn updates_state(&self) -> BoxFuture<'_, std::result::Result<UpdatesState, SessionError>> {
        Box::pin(async move {
            self.memory
                .updates_state()
                .await
                .map_err(|e| SessionError(e.to_string()))
        })
    }

    fn set_update_state(
        &self,
        update: UpdateState,
    ) -> BoxFuture<'_, std::result::Result<(), SessionError>> {
        Box::pin(async move {
            self.memory
                .set_update_state(update)
                .await
                .map_err(|e| SessionError(e.to_string()))?;
            let state = self
                .memory
                .updates_state()
                .await
                .map_err(|e| SessionError(e.to_string()))?;
            let home = self.home_dc_id()?;
            self.write(|conn| {
                ensure_row(conn, home)?;
                conn.execute(
                    "UPDATE telegram_session SET pts = ?1, qts = ?2, date = ?3, seq = ?4 WHERE id = 1",
                    params![state.pts, state.qts, state.date, state.seq],
                )?;
                Ok(())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a migration on real Telegram the new DC's key is one grammers just created (the
    /// test server's are seeded): it and the new home DC must both reach the next process.
    #[tokio::test]
    async fn a_new_dcs_key_and_the_new_home_dc_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        drop(super::super::Store::open_for_writing(&state).unwrap());
        let session = TelegramSession::open(&state).unwrap();
        let option = DcOption {
            id: 4,
            ipv4: "127.0.0.1:4444".parse().unwrap(),
            ipv6: "[::1]:4444".parse().unwrap(),
            auth_key: Some([4; 256]),
        };
        session.set_dc_option(&option).await.unwrap();
        session.set_home_dc_id(4).await.unwrap();
        drop(session);
        let reopened = TelegramSession::open(&state).unwrap();
        assert_eq!(reopened.home_dc_id().unwrap(), 4);
        assert_eq!(reopened.dc_option(4).unwrap(), Some(option));
    }
}
