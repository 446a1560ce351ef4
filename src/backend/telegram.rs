//! Telegram over MTProto with grammers: `contacts.importContacts` and
//! `contacts.deleteByPhones`, every call under a timeout (grammers has none), errors
//! classified for the sync.

use std::sync::Arc;
use std::time::Duration;

use grammers_client::Client;
use grammers_mtsender::{
    AutoSleep, ConnectionParams, InvocationError, SenderPool, SenderPoolHandle,
};
use grammers_tl_types as tl;

use super::{
    Backend, BackendError, BoxFuture, Cut, DeleteCut, ImportCut, ImportResult, RemoteContact,
};
use crate::batch::ImportItem;
use crate::config::TelegramConfig;
use crate::contact_key;
use crate::store::telegram_session::TelegramSession;

/// grammers may sleep on FLOOD_WAIT by itself only this long; longer waits pause the
/// account (persisted) so the daemon can do other work meanwhile.
const GRAMMERS_SLEEP_THRESHOLD: Duration = Duration::from_secs(5);

pub struct TelegramBackend {
    client: Client,
    session: Arc<TelegramSession>,
    pool: tokio::task::JoinHandle<()>,
    /// To close the connection to a DC the account left.
    pool_handle: SenderPoolHandle,
    batch_size: usize,
    timeout: Duration,
    contacts_hash: i64,
    reconcile: (u64, bool),
    add_phone_privacy_exception: bool,
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
        let pool_handle = handle.thin.clone();
        let client = Client::new(handle);
        let pool = tokio::spawn(async move {
            runner.run().await;
        });
        Self {
            client,
            session,
            pool,
            pool_handle,
            batch_size: config.batch_size,
            timeout: Duration::from_secs(config.request_timeout),
            contacts_hash: 0,
            reconcile: (
                config.reconcile_interval,
                config.on_remote_delete == crate::config::OnRemoteDelete::Reimport,
            ),
            add_phone_privacy_exception: config.add_phone_privacy_exception,
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
                // A raw invoke does not follow *_MIGRATE_X itself: carry the login over to the
                // new DC, move the home DC there (kept in the session) and ask once more.
                Ok(Err(InvocationError::Rpc(rpc))) if rpc.code == 303 && !migrated => {
                    let dc = rpc
                        .value
                        .and_then(|v| i32::try_from(v).ok())
                        .ok_or_else(|| {
                            BackendError::Temporary(format!("303 {} without a DC", rpc.name))
                        })?;
                    self.migrate(dc).await?;
                    migrated = true;
                }
                // Moved on again at once: nothing is wrong with the request; try later.
                Ok(Err(InvocationError::Rpc(rpc))) if rpc.code == 303 => {
                    return Err(BackendError::Temporary(format!(
                        "Telegram moved the account again ({}_{})",
                        rpc.name,
                        rpc.value.unwrap_or_default()
                    )));
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

impl TelegramBackend {
    /// `USER_MIGRATE_X` (or `PHONE_MIGRATE_X`, `NETWORK_MIGRATE_X`) for a logged-in account,
    /// as core.telegram.org/api/datacenter documents it: each DC has its own auth key, and
    /// the new DC's key is logged in only once the authorization is exported on the current
    /// DC (`auth.exportAuthorization`) and imported on the new one
    /// (`auth.importAuthorization`). Only then does the home DC change, persisted in the
    /// session together with the new DC's key, so that the next process starts there. A raw
    /// `invoke` in grammers 0.11 does none of this (its own copy is crate-private).
    async fn migrate(&self, to: i32) -> Result<(), BackendError> {
        let from = grammers_session::Session::home_dc_id(self.session.as_ref())
            .map_err(|e| BackendError::Temporary(e.to_string()))?;
        if to == from {
            return Err(BackendError::Temporary(format!(
                "Telegram moved the account to DC {to}, where it already is"
            )));
        }
        tracing::info!(
            from,
            to,
            "Telegram moved the account to another data centre; carrying the login over"
        );
        let tl::enums::auth::ExportedAuthorization::Authorization(exported) = self
            .call_in_dc(
                from,
                &tl::functions::auth::ExportAuthorization { dc_id: to },
            )
            .await
            .map_err(|e| migration_failed(to, e))?;
        self.call_in_dc(
            to,
            &tl::functions::auth::ImportAuthorization {
                id: exported.id,
                bytes: exported.bytes,
            },
        )
        .await
        .map_err(|e| migration_failed(to, e))?;
        grammers_session::Session::set_home_dc_id(self.session.as_ref(), to)
            .await
            .map_err(|e| BackendError::Temporary(e.to_string()))?;
        self.pool_handle.disconnect_from_dc(from);
        Ok(())
    }

    /// One call to a given DC, under the timeout.
    async fn call_in_dc<R: tl::RemoteCall>(
        &self,
        dc: i32,
        request: &R,
    ) -> Result<R::Return, BackendError> {
        match tokio::time::timeout(self.timeout, self.client.invoke_in_dc(dc, request)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(classify(err)),
            Err(_) => Err(BackendError::Temporary(format!(
                "no answer within {} s",
                self.timeout.as_secs()
            ))),
        }
    }
}

impl TelegramBackend {
    /// `contacts.importContacts` for numbers, one call for the batch.
    async fn import_numbers(
        &self,
        items: &[&ImportItem],
    ) -> Result<Vec<(i64, ImportResult)>, BackendError> {
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
        let tl::enums::contacts::ImportedContacts::Contacts(answer) = self.call(&request).await?;
        Ok(map_import(items.iter().copied(), &answer))
    }

    /// A contact known by username (`key`, `@name`): the user from an earlier add (`known`,
    /// kept in the mirror), or `contacts.resolveUsername`; then `contacts.addContact` with
    /// the item's names, which adds the contact or renames it. A username nobody has, or one of a channel or group,
    /// is refused for this contact alone (tried again in a day or when the card changes).
    async fn add_by_username(
        &self,
        key: &str,
        item: &ImportItem,
        known: Option<(i64, i64)>,
    ) -> Result<ImportResult, BackendError> {
        let Some(username) = contact_key::username(key) else {
            return Ok(ImportResult::Rejected("not a Telegram username".into()));
        };
        if let Some(user) = known {
            match self.add_user(item, user).await {
                // The user kept from an earlier add is no longer valid (an access hash may
                // change): resolve the username again, once.
                Err(BackendError::Permanent(reason)) if is_stale_user(&reason) => {}
                other => return other,
            }
        }
        match self.resolve_username(username).await? {
            Ok(user) => match self.add_user(item, user).await {
                Err(BackendError::Permanent(reason)) => Ok(ImportResult::Rejected(reason)),
                other => other,
            },
            Err(refusal) => Ok(ImportResult::Rejected(refusal)),
        }
    }

    /// `contacts.addContact` for a resolved user.
    async fn add_user(
        &self,
        item: &ImportItem,
        (user_id, access_hash): (i64, i64),
    ) -> Result<ImportResult, BackendError> {
        self.call(&tl::functions::contacts::AddContact {
            add_phone_privacy_exception: self.add_phone_privacy_exception,
            id: tl::enums::InputUser::User(tl::types::InputUser {
                user_id,
                access_hash,
            }),
            first_name: item.names.first.clone(),
            last_name: item.names.last.clone(),
            // Empty: the contact is added as Telegram shows them, by their account.
            phone: String::new(),
            note: None,
        })
        .await?;
        Ok(ImportResult::Imported {
            user_id: Some(user_id),
            access_hash: Some(access_hash),
        })
    }

    /// The user behind a username; `Ok(Err(reason))` when it names no person (unknown,
    /// malformed, or a channel or group): a refusal of this contact, not of the call.
    async fn resolve_username(
        &self,
        username: &str,
    ) -> Result<Result<(i64, i64), String>, BackendError> {
        let answer = self
            .call(&tl::functions::contacts::ResolveUsername {
                username: username.to_owned(),
                referer: None,
            })
            .await;
        let tl::enums::contacts::ResolvedPeer::Peer(resolved) = match answer {
            Ok(resolved) => resolved,
            Err(BackendError::Permanent(reason)) if reason.contains("USERNAME_NOT_OCCUPIED") => {
                return Ok(Err(format!(
                    "no Telegram user has this username ({reason})"
                )));
            }
            Err(BackendError::Permanent(reason)) => return Ok(Err(reason)),
            Err(other) => return Err(other),
        };
        let tl::enums::Peer::User(peer) = resolved.peer else {
            return Ok(Err(
                "the username belongs to a channel or a group, not a person".into(),
            ));
        };
        Ok(resolved
            .users
            .iter()
            .find_map(|user| match user {
                tl::enums::User::User(u) if u.id == peer.user_id => {
                    u.access_hash.map(|hash| (u.id, hash))
                }
                _ => None,
            })
            .ok_or_else(|| "the server named a user it did not send".to_owned()))
    }
}

/// A refusal that says the user we kept is not valid any more (not the contact).
fn is_stale_user(reason: &str) -> bool {
    [
        "CONTACT_ID_INVALID",
        "ACCESS_HASH_INVALID",
        "USER_ID_INVALID",
        "PEER_ID_INVALID",
    ]
    .iter()
    .any(|code| reason.contains(code))
}

/// A refused export or import says nothing about the contacts being sent (they must not be
/// rejected): the account cannot be used on the new DC until it logs in again there.
fn migration_failed(to: i32, err: BackendError) -> BackendError {
    match err {
        BackendError::Permanent(reason) => BackendError::Auth(format!(
            "the login could not be carried over to data centre {to} ({reason})"
        )),
        other => other,
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

/// Permanent, temporary, wait, or login required (core.telegram.org/api/errors).
///
/// Only 400, 403 and 404 say that the request itself is refused (permanent; the sync
/// finds the refused item by splitting the batch). 420 is a wait; 401 needs a login; 303
/// beyond the one migration `call` follows, 406 (shown to the user through a service
/// notification, not tied to an item), 5xx, −503 "Timeout" and every code the docs do not
/// list are temporary: "handled like 500".
pub fn classify(err: InvocationError) -> BackendError {
    match err {
        InvocationError::Rpc(rpc) => match rpc.code {
            420 => BackendError::Wait {
                seconds: u64::from(rpc.value.unwrap_or(60)),
                reason: format!("{}_{}", rpc.name, rpc.value.unwrap_or(60)),
            },
            401 => BackendError::Auth(rpc.name),
            400 | 403 | 404 => BackendError::Permanent(format!("{} {}", rpc.code, rpc.name)),
            code => BackendError::Temporary(format!("{code} {}", rpc.name)),
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
    ) -> BoxFuture<'a, Result<Vec<(i64, ImportResult)>, ImportCut>> {
        Box::pin(async move {
            let (by_username, by_number): (Vec<&ImportItem>, Vec<&ImportItem>) = items
                .iter()
                .partition(|item| contact_key::is_username(&item.e164));
            let mut results = Vec::with_capacity(items.len());
            if !by_number.is_empty() {
                let imported = self.import_numbers(&by_number).await.map_err(|error| {
                    Cut::at(Vec::new(), by_number.iter().map(|i| i.client_id), error)
                })?;
                results.extend(imported);
                // A number without an account whose card names a username: the person is
                // found by the username instead, and the number's contact is that user.
                for (index, item) in by_number.iter().enumerate() {
                    let Some(username) = item.fallback_username.as_deref() else {
                        continue;
                    };
                    if !matches!(results[index].1, ImportResult::Saved { .. }) {
                        continue;
                    }
                    match self
                        .add_by_username(&contact_key::of_username(username), item, None)
                        .await
                    {
                        Ok(added @ ImportResult::Imported { .. }) => results[index].1 = added,
                        Ok(_) => {}
                        // importContacts applied every number of the call: the cut refuses
                        // the username's call only, so those results are handed back (a
                        // wait leaves this number saved). Without an answer the user may
                        // have been added: this number's outcome is unknown.
                        Err(error @ BackendError::Temporary(_)) => {
                            results.remove(index);
                            return Err(Cut::at(results, [item.client_id], error));
                        }
                        Err(error) => return Err(Cut::at(results, [], error)),
                    }
                }
            }
            for item in by_username {
                match self.add_by_username(&item.e164, item, item.user).await {
                    Ok(added) => results.push((item.client_id, added)),
                    Err(error) => return Err(Cut::at(results, [item.client_id], error)),
                }
            }
            Ok(results)
        })
    }

    fn delete<'a>(&'a mut self, phones: &'a [String]) -> BoxFuture<'a, Result<(), DeleteCut>> {
        Box::pin(async move {
            // One call: all of it or none of it.
            self.call(&tl::functions::contacts::DeleteByPhones {
                phones: phones.to_vec(),
            })
            .await
            .map_err(|error| Cut::at(Vec::new(), phones.iter().cloned(), error))?;
            Ok(())
        })
    }

    fn delete_users<'a>(
        &'a mut self,
        users: &'a [(i64, i64)],
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.call(&tl::functions::contacts::DeleteContacts {
                id: users
                    .iter()
                    .map(|&(user_id, access_hash)| {
                        tl::enums::InputUser::User(tl::types::InputUser {
                            user_id,
                            access_hash,
                        })
                    })
                    .collect(),
            })
            .await?;
            Ok(())
        })
    }

    fn reset_saved(&mut self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.call(&tl::functions::contacts::ResetSaved {}).await?;
            Ok(())
        })
    }

    fn reconcile_policy(&self) -> Option<(u64, bool)> {
        Some(self.reconcile)
    }

    fn remote_hash(&self) -> Option<i64> {
        (self.contacts_hash != 0).then_some(self.contacts_hash)
    }

    fn set_remote_hash(&mut self, hash: Option<i64>) {
        self.contacts_hash = hash.unwrap_or(0);
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
                        // A user may hide their number: still a contact, matched by user id.
                        tl::enums::User::User(u) => Some(RemoteContact {
                            e164: u
                                .phone
                                .as_ref()
                                .map(|p| format!("+{}", p.trim_start_matches('+')))
                                .unwrap_or_default(),
                            first_name: u.first_name.clone().unwrap_or_default(),
                            last_name: u.last_name.clone().unwrap_or_default(),
                            user_id: Some(u.id),
                            username: u.username.clone(),
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
pub fn map_import<'a>(
    items: impl IntoIterator<Item = &'a ImportItem>,
    answer: &tl::types::contacts::ImportedContacts,
) -> Vec<(i64, ImportResult)> {
    let access_hash = |user_id: i64| {
        answer.users.iter().find_map(|user| match user {
            tl::enums::User::User(u) if u.id == user_id => u.access_hash,
            _ => None,
        })
    };
    items
        .into_iter()
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn rpc(code: i32, message: &str) -> InvocationError {
        InvocationError::Rpc(grammers_mtsender::RpcError::from(tl::types::RpcError {
            error_code: code,
            error_message: message.into(),
        }))
    }

    #[rstest]
    #[case::invalid_number(400, "PHONE_NUMBER_INVALID", "refused")]
    #[case::forbidden(403, "PRIVACY_RESTRICTED", "refused")]
    #[case::not_found(404, "NOT_FOUND", "refused")]
    #[case::not_acceptable(406, "SOMETHING_NOT_ACCEPTABLE", "temporary")]
    #[case::timeout(-503, "Timeout", "temporary")]
    #[case::internal(500, "INTERNAL", "temporary")]
    #[case::unknown_code(418, "IM_A_TEAPOT", "temporary")]
    #[case::migrate(303, "PHONE_MIGRATE_2", "temporary")]
    #[case::flood(420, "FLOOD_WAIT_31", "wait")]
    #[case::auth(401, "AUTH_KEY_UNREGISTERED", "login")]
    fn classifies_as_telegram_documents(
        #[case] code: i32,
        #[case] message: &str,
        #[case] expected: &str,
    ) {
        let kind = match classify(rpc(code, message)) {
            BackendError::Permanent(_) => "refused",
            BackendError::Temporary(_) => "temporary",
            BackendError::Wait { seconds, .. } => {
                assert_eq!(seconds, 31);
                "wait"
            }
            BackendError::Auth(_) => "login",
            BackendError::Setup(_) => "setup",
        };
        assert_eq!(kind, expected);
    }
}
