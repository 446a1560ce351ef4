//! WhatsApp through the Whapi.Cloud gateway: one request per add, rename or delete, paced by
//! a token bucket; reconciliation by paging `GET /contacts`.
//!
//! Only what we created is ours: a `PUT` answered 409 is a number the user had already
//! saved, recorded as theirs and left alone (unless `adopt_existing`). No answer is taken for
//! success unless it is one: nothing is written before the gateway has answered a listing
//! of the documented shape, a 404 is "already gone" only for a `DELETE`, and anywhere else
//! it stops the account with a message naming `base_url`.

use std::time::Duration;

use serde::Deserialize;

use super::{
    Backend, BackendError, BoxFuture, Cut, DeleteCut, ImportCut, ImportResult, RemoteContact,
};
use crate::batch::ImportItem;
use crate::config::{OnRemoteDelete, WhatsAppConfig};
use crate::diff::Names;

/// Adds per outbox batch: each is its own request, and a batch cut by a 429 or a lost reply
/// hands back the adds before it (`Cut`), so only the request without an answer goes again.
const BATCH_SIZE: usize = 10;
const PAGE: usize = 100;

pub struct WhapiBackend {
    http: reqwest::Client,
    base_url: String,
    token: String,
    pacer: Pacer,
    reconcile: (u64, bool),
    adopt_existing: bool,
    setup_key: String,
    /// The gateway answered a listing of the documented shape: its 2xx and 404 mean what
    /// Whapi documents (a wrong base_url may answer 200 with a web page, or 404 to all).
    confirmed: bool,
}

/// A token bucket of one: requests at most every `interval`, never a burst.
struct Pacer {
    interval: Duration,
    next: tokio::time::Instant,
}

impl Pacer {
    async fn wait(&mut self) {
        let now = tokio::time::Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
        self.next = self.next.max(now) + self.interval;
    }
}

/// `GET /contacts` as documented: `contacts` and `total` are required; anything else is not
/// the listing, and must never read as "no contacts".
#[derive(Debug, Deserialize)]
struct ContactsPage {
    contacts: Vec<GatewayContact>,
    total: usize,
}

#[derive(Debug, Deserialize)]
struct GatewayContact {
    id: String,
    #[serde(default)]
    name: Option<String>,
    saved: bool,
}

/// The name a contact gets in the phone book: first and last name, as one.
pub fn contact_name(names: &Names) -> String {
    format!("{} {}", names.first, names.last).trim().to_owned()
}

impl WhapiBackend {
    pub fn new(config: &WhatsAppConfig) -> Result<Self, BackendError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout_duration())
            .user_agent(concat!("contactsyncd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BackendError::Permanent(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: config.base_url.clone(),
            token: config.token.expose().to_owned(),
            pacer: Pacer {
                interval: config.request_interval(),
                next: tokio::time::Instant::now(),
            },
            reconcile: (
                config.reconcile_interval,
                config.on_remote_delete == OnRemoteDelete::Reimport,
            ),
            adopt_existing: config.adopt_existing,
            setup_key: format!(
                "{:016x}",
                xxhash_rust::xxh3::xxh3_64(
                    format!(
                        "{}\n{}\n{}",
                        config.base_url,
                        config.token.expose(),
                        config.adopt_existing
                    )
                    .as_bytes()
                )
            ),
            confirmed: false,
        })
    }

    /// A 404 where the gateway has the path: the base_url does not lead to it.
    fn not_the_gateway(&self, what: &str) -> BackendError {
        BackendError::Setup(format!(
            "whatsapp.base_url = {} answered 404 Not Found to {what}: it does not lead to the Whapi gateway; check whatsapp.base_url (the default is https://gate.whapi.cloud)",
            self.base_url
        ))
    }

    async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BackendError> {
        self.pacer.wait().await;
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            BackendError::Temporary(format!("gateway unreachable: {}", without_url(&e)))
        })?;
        let status = response.status();
        // The callers decide what a 404 or 409 means for their call.
        if status.is_success()
            || status == reqwest::StatusCode::NOT_FOUND
            || status == reqwest::StatusCode::CONFLICT
        {
            return Ok(response);
        }
        Err(match status.as_u16() {
            401 | 403 => BackendError::Auth(format!(
                "the gateway refused the token ({status}); check whatsapp.token"
            )),
            429 => BackendError::Wait {
                seconds: response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(60),
                reason: "429 Too Many Requests".into(),
            },
            500..=599 => BackendError::Temporary(format!("gateway error {status}")),
            _ => BackendError::Permanent(format!(
                "gateway answered {status}: {}",
                excerpt(&response.text().await.unwrap_or_default())
            )),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Adds a contact. When the phone book has the number already (409), it is renamed only
    /// if it is ours (`item.rename`) or `adopt_existing` takes it over; otherwise it is the
    /// user's and left as it is.
    async fn upsert(&mut self, item: &ImportItem) -> Result<ImportResult, BackendError> {
        let digits: String = item.e164.chars().filter(char::is_ascii_digit).collect();
        let name = contact_name(&item.names);
        let added = self
            .send(
                self.http
                    .put(self.url("/contacts"))
                    .json(&serde_json::json!({"phone": digits, "name": name})),
            )
            .await?;
        let imported = ImportResult::Imported {
            user_id: None,
            access_hash: None,
        };
        match added.status() {
            status if status.is_success() => return Ok(imported),
            reqwest::StatusCode::NOT_FOUND => return Err(self.not_the_gateway("PUT /contacts")),
            reqwest::StatusCode::CONFLICT if !item.rename && !self.adopt_existing => {
                return Ok(ImportResult::SavedByUser);
            }
            reqwest::StatusCode::CONFLICT => {}
            status => return Err(BackendError::Permanent(format!("add answered {status}"))),
        }
        let renamed = self
            .send(
                self.http
                    .patch(self.url(&format!("/contacts/{digits}")))
                    .json(&serde_json::json!({"name": name})),
            )
            .await?;
        match renamed.status() {
            status if status.is_success() => Ok(imported),
            reqwest::StatusCode::NOT_FOUND => {
                Err(self.not_the_gateway("PATCH /contacts/{ContactID}"))
            }
            status => Err(BackendError::Permanent(format!("rename answered {status}"))),
        }
    }

    /// One page of `GET /contacts`, which must have the documented shape.
    async fn page(&mut self, offset: usize, count: usize) -> Result<ContactsPage, BackendError> {
        let response = self
            .send(
                self.http
                    .get(self.url("/contacts"))
                    .query(&[("count", count), ("offset", offset)]),
            )
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(self.not_the_gateway("GET /contacts"));
        }
        if !response.status().is_success() {
            return Err(BackendError::Temporary(format!(
                "the contact list answered {}",
                response.status()
            )));
        }
        let body = response
            .text()
            .await
            .map_err(|e| BackendError::Temporary(without_url(&e)))?;
        let page: ContactsPage = serde_json::from_str(&body).map_err(|e| {
            BackendError::Temporary(format!(
                "{}, not the documented {{contacts: [...], total}}; nothing of it is used",
                malformed_contact_list(&e, &body)
            ))
        })?;
        self.confirmed = true;
        Ok(page)
    }

    /// Before the first write: the gateway is the gateway (one listing of one entry).
    async fn confirm_gateway(&mut self) -> Result<(), BackendError> {
        if !self.confirmed {
            self.page(0, 1).await?;
        }
        Ok(())
    }
}

/// reqwest errors name the URL; keep the message, drop the query string and host details.
fn without_url(error: &reqwest::Error) -> String {
    let text = error.to_string();
    match text.find(" for url") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Why a contact list could not be read. serde's text quotes the offending value (a number,
/// a name) and the body holds names: the message, which is logged, says what kind of error
/// and where, unless `log.show_personal_data`.
fn malformed_contact_list(error: &serde_json::Error, body: &str) -> String {
    if crate::phone::show_personal_data() {
        return format!("malformed contact list ({error}): {}", excerpt(body));
    }
    let kind = match error.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "an entry of an unexpected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!(
        "malformed contact list: {kind} at line {}, column {} of {} bytes",
        error.line(),
        error.column(),
        body.len()
    )
}

/// A gateway's answer, for an error message (logged, and kept for `status`). A body may
/// echo what was sent (numbers, names): unless `log.show_personal_data`, only its size and,
/// for a JSON object, its keys are shown.
fn excerpt(body: &str) -> String {
    if crate::phone::show_personal_data() {
        return body.chars().take(200).collect();
    }
    let shape = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => format!(
            "a JSON object with {}",
            map.keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Ok(_) => "JSON".to_owned(),
        Err(_) => "a body".to_owned(),
    };
    format!(
        "{shape} of {} bytes (log.show_personal_data = true shows it)",
        body.len()
    )
}

impl Backend for WhapiBackend {
    fn name(&self) -> &str {
        "whatsapp"
    }

    fn batch_size(&self) -> usize {
        BATCH_SIZE
    }

    fn import<'a>(
        &'a mut self,
        items: &'a [ImportItem],
    ) -> BoxFuture<'a, Result<Vec<(i64, ImportResult)>, ImportCut>> {
        Box::pin(async move {
            self.confirm_gateway().await.map_err(Cut::nothing_done)?;
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                let result = match self.upsert(item).await {
                    Ok(result) => result,
                    // One refused number is that number's problem, not its neighbours'.
                    Err(BackendError::Permanent(reason)) => ImportResult::Rejected(reason),
                    // Each item is its own request: those before this one are applied, and
                    // the error answers this one alone (a 429 refuses it before any work).
                    Err(error) => return Err(Cut::at(results, [item.client_id], error)),
                };
                results.push((item.client_id, result));
            }
            Ok(results)
        })
    }

    fn delete<'a>(&'a mut self, phones: &'a [String]) -> BoxFuture<'a, Result<(), DeleteCut>> {
        Box::pin(async move {
            // Only a confirmed gateway's 404 says "no such contact".
            self.confirm_gateway().await.map_err(Cut::nothing_done)?;
            let mut deleted = Vec::with_capacity(phones.len());
            for phone in phones {
                let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
                let response = self
                    .send(self.http.delete(self.url(&format!("/contacts/{digits}"))))
                    .await
                    .map_err(|error| Cut::at(deleted.clone(), [phone.clone()], error))?;
                let status = response.status();
                // 404: one of ours already gone (deleted on the phone), as wanted.
                if !(status.is_success() || status == reqwest::StatusCode::NOT_FOUND) {
                    return Err(Cut::at(
                        deleted,
                        [],
                        BackendError::Permanent(format!("delete answered {status}")),
                    ));
                }
                deleted.push(phone.clone());
            }
            Ok(())
        })
    }

    fn reconcile_policy(&self) -> Option<(u64, bool)> {
        Some(self.reconcile)
    }

    fn adopts_existing(&self) -> Option<bool> {
        Some(self.adopt_existing)
    }

    fn setup_key(&self) -> Option<String> {
        Some(self.setup_key.clone())
    }

    fn remote_contacts(
        &mut self,
    ) -> BoxFuture<'_, Result<Option<Vec<RemoteContact>>, BackendError>> {
        Box::pin(async move {
            let mut contacts = Vec::new();
            let mut offset = 0;
            loop {
                let page = self.page(offset, PAGE).await?;
                let received = page.contacts.len();
                // Only saved entries are phone-book contacts; the rest are people the number
                // merely sees (group members), which are none of our business. An id that
                // is not a number cannot be one of ours either.
                contacts.extend(
                    page.contacts
                        .into_iter()
                        .filter(|c| c.saved)
                        .filter_map(|c| {
                            let digits = c.id.trim_start_matches('+');
                            (!digits.is_empty() && digits.chars().all(|d| d.is_ascii_digit())).then(
                                || RemoteContact {
                                    e164: format!("+{digits}"),
                                    first_name: c.name.unwrap_or_default(),
                                    last_name: String::new(),
                                    user_id: None,
                                    username: None,
                                },
                            )
                        }),
                );
                offset += received;
                if offset >= page.total {
                    break;
                }
                if received == 0 {
                    // A listing that stops short is not the whole phone book.
                    return Err(BackendError::Temporary(format!(
                        "the contact list ended after {offset} of {} entries; nothing of it is used",
                        page.total
                    )));
                }
            }
            Ok(Some(contacts))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_body_shows_its_shape_not_what_it_echoes() {
        let body = r#"{"error":"cannot save Jane Doe","phone":"4917012345678"}"#;
        let text = super::excerpt(body);
        assert!(!text.contains("Jane") && !text.contains("4917"), "{text}");
        assert!(
            text.contains("error, phone") || text.contains("phone, error"),
            "{text}"
        );
        assert!(super::excerpt("<html>Jane</html>").starts_with("a body of 17 bytes"));
    }
}
