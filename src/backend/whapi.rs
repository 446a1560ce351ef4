//! WhatsApp through the Whapi.Cloud gateway: one request per add, rename or delete, paced by
//! a token bucket; reconciliation by paging `GET /contacts`.

use std::time::Duration;

use serde::Deserialize;

use super::{Backend, BackendError, BoxFuture, ImportResult, RemoteContact};
use crate::batch::ImportItem;
use crate::config::{OnRemoteDelete, WhatsAppConfig};

/// Adds per outbox batch: each is its own request, so a batch that must go again (the
/// reply to one of them was lost, or a 429 stopped it) repeats little.
const BATCH_SIZE: usize = 10;
const PAGE: usize = 100;

pub struct WhapiBackend {
    http: reqwest::Client,
    base_url: String,
    token: String,
    pacer: Pacer,
    reconcile: (u64, bool),
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

#[derive(Debug, Deserialize)]
struct ContactsPage {
    #[serde(default)]
    contacts: Vec<GatewayContact>,
    #[serde(default)]
    total: usize,
}

#[derive(Debug, Deserialize)]
struct GatewayContact {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    saved: bool,
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
        })
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

    /// Adds a contact, or renames it when the phone book has it already.
    async fn upsert(&mut self, item: &ImportItem) -> Result<ImportResult, BackendError> {
        let digits: String = item.e164.chars().filter(char::is_ascii_digit).collect();
        let name = format!("{} {}", item.names.first, item.names.last)
            .trim()
            .to_owned();
        let added = self
            .send(
                self.http
                    .put(self.url("/contacts"))
                    .json(&serde_json::json!({"phone": digits, "name": name})),
            )
            .await?;
        if added.status() == reqwest::StatusCode::CONFLICT {
            let renamed = self
                .send(
                    self.http
                        .patch(self.url(&format!("/contacts/{digits}")))
                        .json(&serde_json::json!({"name": name})),
                )
                .await?;
            if !renamed.status().is_success() {
                return Err(BackendError::Temporary(format!(
                    "rename answered {}",
                    renamed.status()
                )));
            }
        }
        Ok(ImportResult::Imported {
            user_id: None,
            access_hash: None,
        })
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

/// A short excerpt of a body for an error message, digits masked (it may hold numbers).
fn excerpt(body: &str) -> String {
    let short: String = body.chars().take(80).collect();
    short
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
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
    ) -> BoxFuture<'a, Result<Vec<(i64, ImportResult)>, BackendError>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                results.push((item.client_id, self.upsert(item).await?));
            }
            Ok(results)
        })
    }

    fn delete<'a>(&'a mut self, phones: &'a [String]) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            for phone in phones {
                let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
                // 404: already gone, which is what we wanted.
                self.send(self.http.delete(self.url(&format!("/contacts/{digits}"))))
                    .await?;
            }
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
            let mut contacts = Vec::new();
            let mut offset = 0;
            loop {
                let response = self
                    .send(
                        self.http
                            .get(self.url("/contacts"))
                            .query(&[("count", PAGE), ("offset", offset)]),
                    )
                    .await?;
                let body = response
                    .text()
                    .await
                    .map_err(|e| BackendError::Temporary(without_url(&e)))?;
                let page: ContactsPage = serde_json::from_str(&body)
                    .map_err(|e| BackendError::Temporary(malformed_contact_list(&e, &body)))?;
                let received = page.contacts.len();
                // Only saved entries are phone-book contacts; the rest are people the number
                // merely sees (group members), which are none of our business.
                contacts.extend(page.contacts.into_iter().filter(|c| c.saved).map(|c| {
                    RemoteContact {
                        e164: format!("+{}", c.id.trim_start_matches('+')),
                        first_name: c.name.unwrap_or_default(),
                        last_name: String::new(),
                        user_id: None,
                    }
                }));
                offset += received;
                if received == 0 || offset >= page.total {
                    break;
                }
            }
            Ok(Some(contacts))
        })
    }
}
