//! A local stand-in for the Whapi.Cloud gateway: the contact endpoints with state (saved vs
//! merely seen contacts, ids as digits), bearer-token checks, scripted faults per request,
//! and a request log. HTTP/1.1 with keep-alive, enough for reqwest.
//!
//! Also what a real phone and a wrong address look like: numbers the user saved before any
//! sync, under their own names (`save_by_user`; a `PUT` of a saved number answers 409, as
//! Whapi documents), a mode in which every path answers 404 (`all_not_found`: a base_url
//! that does not lead to the gateway), and listings of the wrong shape (`listing`).

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub name: String,
    /// In the phone book. Deleted contacts stay visible with `saved: false`.
    pub saved: bool,
}

/// What the next request gets instead of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhapiFault {
    TooManyRequests {
        retry_after: u64,
    },
    ServerError,
    Slow(Duration),
    Malformed,
    Reset,
    /// This status and body instead of the real answer.
    Reply {
        status: u16,
        body: String,
    },
}

/// How `GET /contacts` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Listing {
    /// `{contacts, count, total}`, paged.
    #[default]
    Documented,
    /// `{count, total}`: no contacts array.
    WithoutContacts,
    /// `{contacts: {...}, total}`: contacts not an array.
    ContactsNotAnArray,
    /// `{contacts, count}`: no total.
    WithoutTotal,
    /// The first page as documented, then empty pages although `total` says there is more.
    StopsShort,
    /// The documented shape with no contacts at all (an empty phone book, or another
    /// account's).
    Empty,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
    pub at: Instant,
}

/// Sees every request the moment it arrives, before it is answered: the request, whether it
/// reaches the phone book (`false`: refused before any work, by a 429, a wrong token or a
/// wrong address) and the phone book as it is before the request. A model test's oracle.
#[derive(Clone)]
pub struct Observer(pub Arc<ObserveFn>);

pub type ObserveFn = dyn Fn(&Request, bool, &BTreeMap<String, Entry>) + Send + Sync;

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

#[derive(Debug, Default)]
pub struct WhapiState {
    pub token: String,
    pub contacts: BTreeMap<String, Entry>,
    pub faults: VecDeque<WhapiFault>,
    /// Faults for the n-th next request of a method (`fail_nth`): method, requests of it
    /// still to let through, fault.
    pub scheduled: Vec<(String, usize, WhapiFault)>,
    pub requests: Vec<Request>,
    /// Every path answers 404 (what a base_url that is not the gateway gets).
    pub all_not_found: bool,
    pub listing: Listing,
    pub observer: Option<Observer>,
}

pub struct WhapiServer {
    addr: SocketAddr,
    state: Arc<Mutex<WhapiState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WhapiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WhapiServer {
    pub async fn start(token: &str) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(WhapiState {
            token: token.to_owned(),
            ..WhapiState::default()
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Self { addr, state, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> MutexGuard<'_, WhapiState> {
        self.state.lock().expect("whapi state")
    }

    /// The phone book: saved contacts only, digits → name.
    pub fn saved(&self) -> BTreeMap<String, String> {
        self.state()
            .contacts
            .iter()
            .filter(|(_, e)| e.saved)
            .map(|(id, e)| (id.clone(), e.name.clone()))
            .collect()
    }

    /// A number the user saved on the phone themselves, under their own name.
    pub fn save_by_user(&self, digits: &str, name: &str) {
        self.state().contacts.insert(
            digits.to_owned(),
            Entry {
                name: name.to_owned(),
                saved: true,
            },
        );
    }

    /// The `n`-th next request of `method` (1: the next one) gets `fault`.
    pub fn fail_nth(&self, method: &str, n: usize, fault: WhapiFault) {
        assert!(n >= 1, "the first request is n = 1");
        self.state()
            .scheduled
            .push((method.to_owned(), n - 1, fault));
    }

    pub fn requests(&self, method: &str) -> Vec<Request> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == method)
            .cloned()
            .collect()
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<WhapiState>>) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Read one request: head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned();
        buffer.drain(..head_end + length);
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let authorization = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();

        let (fault, reply) = {
            let mut state = state.lock().expect("whapi state");
            state.requests.push(Request {
                method: method.clone(),
                path: target.clone(),
                body: body.clone(),
                at: Instant::now(),
            });
            let mut fault = state.faults.pop_front();
            for (of, before, planned) in &mut state.scheduled {
                if *of == method {
                    if *before == 0 && fault.is_none() {
                        fault = Some(planned.clone());
                    }
                    *before = before.wrapping_sub(1);
                }
            }
            state
                .scheduled
                .retain(|(_, before, _)| *before != usize::MAX);
            let unauthorized = authorization != format!("Bearer {}", state.token);
            if let Some(observer) = state.observer.clone() {
                let delivered = !state.all_not_found
                    && !matches!(fault, Some(WhapiFault::TooManyRequests { .. }))
                    && !unauthorized;
                let request = state.requests.last().expect("just pushed").clone();
                (observer.0)(&request, delivered, &state.contacts);
            }
            let reply = if state.all_not_found {
                (404, r#"{"error":"not found"}"#.to_owned(), None)
            } else if matches!(fault, Some(WhapiFault::TooManyRequests { .. })) {
                // A rate limit refuses the request before any work, as gateways do: the
                // answer below is the 429, and nothing changed.
                (429, String::new(), None)
            } else if unauthorized {
                (
                    401,
                    r#"{"error":{"code":401,"message":"Unauthorized"}}"#.to_owned(),
                    None,
                )
            } else {
                route(&mut state, &method, &target, &body)
            };
            (fault, reply)
        };
        let (status, body, retry_after) = match fault {
            Some(WhapiFault::Reset) => return,
            Some(WhapiFault::TooManyRequests { retry_after }) => (
                429,
                r#"{"error":"too many requests"}"#.to_owned(),
                Some(retry_after),
            ),
            Some(WhapiFault::ServerError) => (500, r#"{"error":"internal"}"#.to_owned(), None),
            Some(WhapiFault::Malformed) => (200, "<html>not json 4915100000001".to_owned(), None),
            Some(WhapiFault::Reply { status, body }) => (status, body, None),
            Some(WhapiFault::Slow(delay)) => {
                tokio::time::sleep(delay).await;
                reply
            }
            None => reply,
        };
        let mut response = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reason(status),
            body.len()
        );
        if let Some(seconds) = retry_after {
            response.push_str(&format!("retry-after: {seconds}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&body);
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        _ => "Error",
    }
}

fn route(
    state: &mut WhapiState,
    method: &str,
    target: &str,
    body: &str,
) -> (u16, String, Option<u64>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let ok = || (200, r#"{"success":true}"#.to_owned(), None);
    let not_found = || (404, r#"{"error":"not found"}"#.to_owned(), None);
    match (method, path) {
        ("GET", "/contacts") => {
            let param = |name: &str| {
                query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, v)| v.parse::<usize>().ok())
            };
            let (count, offset) = (param("count").unwrap_or(100), param("offset").unwrap_or(0));
            let all: Vec<serde_json::Value> = state
                .contacts
                .iter()
                .map(|(id, e)| serde_json::json!({"id": id, "name": e.name, "saved": e.saved}))
                .collect();
            let mut page: Vec<_> = all.iter().skip(offset).take(count).cloned().collect();
            let body = match state.listing {
                Listing::Documented => {
                    serde_json::json!({"contacts": page, "count": page.len(), "total": all.len()})
                }
                Listing::WithoutContacts => serde_json::json!({"count": 0, "total": all.len()}),
                Listing::ContactsNotAnArray => {
                    serde_json::json!({"contacts": {"items": page}, "total": all.len()})
                }
                Listing::WithoutTotal => serde_json::json!({"contacts": page, "count": page.len()}),
                Listing::StopsShort => {
                    if offset > 0 {
                        page.clear();
                    }
                    serde_json::json!({"contacts": page, "count": page.len(), "total": all.len()})
                }
                Listing::Empty => serde_json::json!({"contacts": [], "count": 0, "total": 0}),
            };
            (200, body.to_string(), None)
        }
        ("PUT", "/contacts") => {
            let phone = json["phone"].as_str().unwrap_or_default().to_owned();
            if phone.is_empty() || !phone.chars().all(|c| c.is_ascii_digit()) {
                return (400, r#"{"error":"phone must be digits"}"#.to_owned(), None);
            }
            if state.contacts.get(&phone).is_some_and(|e| e.saved) {
                return (409, r#"{"error":"already saved"}"#.to_owned(), None);
            }
            let name = json["name"].as_str().unwrap_or_default().to_owned();
            state.contacts.insert(phone, Entry { name, saved: true });
            ok()
        }
        ("PATCH", path) if path.starts_with("/contacts/") => {
            let id = &path["/contacts/".len()..];
            match state.contacts.get_mut(id) {
                Some(entry) if entry.saved => {
                    entry.name = json["name"].as_str().unwrap_or_default().to_owned();
                    ok()
                }
                _ => not_found(),
            }
        }
        ("DELETE", path) if path.starts_with("/contacts/") => {
            let id = &path["/contacts/".len()..];
            match state.contacts.get_mut(id) {
                Some(entry) if entry.saved => {
                    entry.saved = false;
                    ok()
                }
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}
