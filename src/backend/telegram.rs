//! Telegram over MTProto with grammers: `contacts.importContacts` and
//! `contacts.deleteByPhones`, every call under a timeout (grammers has none), errors
//! classified for the sync.

use std::sync::Arc;
use std::time::Duration;

use grammers_client::Client;
use grammers_mtsender::{AutoSleep, ConnectionParams, InvocationError, SenderPool};
use grammers_tl_types as tl;

use super::{Backend, BackendError, BoxFuture, ImportResult, RemoteContact};
use crate::batch::ImportItem;
use crate::config::TelegramConfig;
use crate::store::telegram_session::TelegramSession;

/// grammers may sleep on FLOOD_WAIT by itself only this long; longer waits pause the
/// account (persisted) so the daemon can do other work meanwhile.
const GRAMMERS_SLEEP_THRESHOLD: Duration = Duration::from_secs(5);

pub struct TelegramBackend {
    client: Client,
    session: Arc<TelegramSession>,
    pool: tokio::task::JoinHandle<()>,
    batch_size: usize,
    timeout: Duration,
    contacts_hash: i64,
    reconcile: (u64, bool),
}

impl Drop for TelegramBackend {
    fn drop(&mut self) {
        self.pool.abort();
    }
}

impl TelegramBackend {
    /// Starts the connection pool on the current tokio runtime.
    pub fn connect(config: &TelegramConfig, session: Arc<TelegramSession>) -> Self {
        let SenderPool { runner, handle, .. } = SenderPool::with_configuration(
            Arc::clone(&session),
            config.api_id,
            connection_params(),
        );
        let client = Client::new(handle);
        let pool = tokio::spawn(async move {
            runner.run().await;
        });
        Self {
            client,
            session,
            pool,
            batch_size: config.batch_size,
            timeout: Duration::from_secs(config.request_timeout),
            contacts_hash: 0,
            reconcile: (
                config.reconcile_interval,
                config.on_remote_delete == crate::config::OnRemoteDelete::Reimport,
            ),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn call<R: tl::RemoteCall>(&self, request: &R) -> Result<R::Return, BackendError> {
        let mut migrated = false;
        loop {
            match tokio::time::timeout(self.timeout, self.client.invoke(request)).await {
                Ok(Ok(value)) => return Ok(value),
                // A raw invoke does not follow *_MIGRATE_X itself: move the home DC (kept in
                // the session) and ask once more there.
                Ok(Err(InvocationError::Rpc(rpc))) if rpc.code == 303 && !migrated => {
                    let dc = rpc
                        .value
                        .and_then(|v| i32::try_from(v).ok())
                        .ok_or_else(|| {
                            BackendError::Permanent(format!("303 {} without a DC", rpc.name))
                        })?;
                    tracing::info!(dc, "Telegram moved the account to another data centre");
                    grammers_session::Session::set_home_dc_id(self.session.as_ref(), dc)
                        .await
                        .map_err(|e| BackendError::Temporary(e.to_string()))?;
                    migrated = true;
                }
                Ok(Err(err)) => return Err(classify(err)),
                Err(_) => {
                    return Err(BackendError::Temporary(format!(
                        "no answer within {} s",
                        self.timeout.as_secs()
                    )));
                }
            }
        }
    }
}

/// What every connection tells Telegram in `initConnection` (shown under the account's
/// active sessions). Every field is set here: grammers' `ConnectionParams::default()` asks
/// `os_info`, which runs `lsb_release -a` (a Python script), `getconf` and `uname` on each
/// call, and a hardened service should never fork a helper to say which OS it runs on.
fn connection_params() -> ConnectionParams {
    ConnectionParams {
        device_model: "contactsyncd".into(),
        system_version: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        app_version: env!("CARGO_PKG_VERSION").into(),
        system_lang_code: "en".into(),
        lang_code: "en".into(),
        use_ipv6: false,
        retry_policy: Box::new(AutoSleep {
            tries: std::num::NonZeroU32::new(2).unwrap_or(std::num::NonZeroU32::MIN),
            threshold: GRAMMERS_SLEEP_THRESHOLD,
            io_errors_as_flood_of: None,
        }),
        updates_channel_capacity: std::num::NonZeroUsize::new(100)
            .unwrap_or(std::num::NonZeroUsize::MIN),
        // Hidden by grammers "to encourage the struct update syntax with a default", which
        // is exactly what must not run here.
        __non_exhaustive: (),
    }
}

/// Permanent, temporary, wait, or login required.
pub fn classify(err: InvocationError) -> BackendError {
    match err {
        InvocationError::Rpc(rpc) => match rpc.code {
            420 => BackendError::Wait {
                seconds: u64::from(rpc.value.unwrap_or(60)),
                reason: format!("{}_{}", rpc.name, rpc.value.unwrap_or(60)),
            },
            401 => BackendError::Auth(rpc.name),
            500..=599 => BackendError::Temporary(rpc.name),
            _ => BackendError::Permanent(format!("{} {}", rpc.code, rpc.name)),
        },
        other => BackendError::Temporary(other.to_string()),
    }
}

impl Backend for TelegramBackend {
    fn name(&self) -> &str {
        "telegram"
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn import<'a>(
        &'a mut self,
        items: &'a [ImportItem],
    ) -> BoxFuture<'a, Result<Vec<(i64, ImportResult)>, BackendError>> {
        Box::pin(async move {
            let request = tl::functions::contacts::ImportContacts {
                contacts: items
                    .iter()
                    .map(|item| {
                        tl::enums::InputContact::InputPhoneContact(tl::types::InputPhoneContact {
                            client_id: item.client_id,
                            phone: item.e164.clone(),
                            first_name: item.names.first.clone(),
                            last_name: item.names.last.clone(),
                            note: None,
                        })
                    })
                    .collect(),
            };
            let tl::enums::contacts::ImportedContacts::Contacts(answer) =
                self.call(&request).await?;
            Ok(map_import(items, &answer))
        })
    }

    fn delete<'a>(&'a mut self, phones: &'a [String]) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.call(&tl::functions::contacts::DeleteByPhones {
                phones: phones.to_vec(),
            })
            .await?;
            Ok(())
        })
    }

    fn reconcile_policy(&self) -> Option<(u64, bool)> {
        Some(self.reconcile)
    }

    fn remote_contacts(
        &mut self,
    ) -> BoxFuture<'_, Result<Option<Vec<RemoteContact>>, BackendError>> {
        Box::pin(async move {
            let answer = self
                .call(&tl::functions::contacts::GetContacts {
                    hash: self.contacts_hash,
                })
                .await?;
            let tl::enums::contacts::Contacts::Contacts(list) = answer else {
                return Ok(None);
            };
            let mut ids: Vec<i64> = list
                .contacts
                .iter()
                .map(|tl::enums::Contact::Contact(c)| c.user_id)
                .collect();
            ids.sort_unstable();
            let mut values = vec![i64::from(list.saved_count)];
            values.extend(ids);
            self.contacts_hash = list_hash(&values);
            Ok(Some(
                list.users
                    .iter()
                    .filter_map(|user| match user {
                        tl::enums::User::User(u) => Some(RemoteContact {
                            e164: u
                                .phone
                                .as_ref()
                                .map(|p| format!("+{}", p.trim_start_matches('+')))?,
                            first_name: u.first_name.clone().unwrap_or_default(),
                            last_name: u.last_name.clone().unwrap_or_default(),
                            user_id: Some(u.id),
                        }),
                        tl::enums::User::Empty(_) => None,
                    })
                    .collect(),
            ))
        })
    }
}

/// `imported` (user_id ↔ client_id, access hash from `users`) → imported; `retry_contacts` →
/// retry; neither → saved without an account (or hidden by privacy), not an error.
pub fn map_import(
    items: &[ImportItem],
    answer: &tl::types::contacts::ImportedContacts,
) -> Vec<(i64, ImportResult)> {
    let access_hash = |user_id: i64| {
        answer.users.iter().find_map(|user| match user {
            tl::enums::User::User(u) if u.id == user_id => u.access_hash,
            _ => None,
        })
    };
    items
        .iter()
        .map(|item| {
            let imported =
                answer
                    .imported
                    .iter()
                    .find_map(|tl::enums::ImportedContact::Contact(c)| {
                        (c.client_id == item.client_id).then_some(c.user_id)
                    });
            let result = match imported {
                Some(user_id) => ImportResult::Imported {
                    user_id: Some(user_id),
                    access_hash: access_hash(user_id),
                },
                None if answer.retry_contacts.contains(&item.client_id) => ImportResult::Retry,
                None => ImportResult::Saved {
                    importers: answer.popular_invites.iter().find_map(
                        |tl::enums::PopularContact::Contact(p)| {
                            (p.client_id == item.client_id).then_some(p.importers)
                        },
                    ),
                },
            };
            (item.client_id, result)
        })
        .collect()
}

/// Telegram's 64-bit list hash (core.telegram.org/api/offsets).
pub fn list_hash(values: &[i64]) -> i64 {
    let mut hash: u64 = 0;
    for &value in values {
        hash ^= hash >> 21;
        hash ^= hash << 35;
        hash ^= hash >> 4;
        hash = hash.wrapping_add(value as u64);
    }
    hash as i64
}
