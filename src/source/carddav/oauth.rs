//! OAuth 2.0 for CardDAV sources (Google's CardDAV takes nothing else): the
//! authorization-code flow with PKCE (RFC 7636, S256) and a loopback redirect (RFC 8252) for
//! `contactsyncd authorize`, and the access token every poll sends, refreshed before it
//! expires (RFC 6749 §6), the refresh token stored at once when the server rotates it.
//!
//! Written on reqwest, serde_json, sha2 and base64, all in the tree already: the `oauth2`
//! crate would bring its own HTTP abstraction and a dozen crates for four requests.
//!
//! No token, code or verifier is ever logged or put in an error text: errors say the
//! server's `error` code and description only.

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::mpsc;

use base64::Engine as _;
use sha2::Digest as _;

use crate::config::{BearerSource, OAuthConfig};

#[allow(unused_imports)]
use super::*;

/// Refreshed when it has less than this left, so that it does not expire mid-poll.
const REFRESH_MARGIN_SECONDS: i64 = 60;
/// A token answer is a small JSON object.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
/// What the loopback listener reads of a request: its first line and headers.
const MAX_REDIRECT_REQUEST_BYTES: usize = 16 * 1024;

/// `n` random bytes from the kernel, base64url without padding (RFC 7636 §4.1: 32 bytes
/// make the 43-character verifier it recommends). The kernel's generator, not `fastrand`:
/// the verifier and `state` must not be guessable.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled rest of `bytes`.
        let got = unsafe {
            libc::getrandom(
                bytes[filled..].as_mut_ptr().cast::<libc::c_void>(),
                n - filled,
                0,
            )
        };
        if got > 0 {
            filled += got as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7636 §4.2: `S256` challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// One authorization in progress: what the URL carries and what must come back.
pub struct Authorization {
    pub url: String,
    pub redirect_uri: String,
    state: String,
    verifier: String,
}

impl Authorization {
    /// The URL to open, for a redirect to `redirect_uri`.
    pub fn new(config: &OAuthConfig, redirect_uri: &str) -> Result<Self, String> {
        let state = random_token(16);
        let verifier = random_token(32);
        let mut url =
            Url::parse(&config.auth_url).map_err(|_| "oauth_auth_url does not parse".to_owned())?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("state", &state)
                .append_pair("code_challenge", &pkce_challenge(&verifier))
                .append_pair("code_challenge_method", "S256");
            if let Some(scope) = &config.scope {
                query.append_pair("scope", scope);
            }
            if let Some(account) = &config.google {
                // Google gives a refresh token only with access_type=offline, and again
                // (after an earlier consent) only with prompt=consent.
                query
                    .append_pair("access_type", "offline")
                    .append_pair("prompt", "consent")
                    .append_pair("login_hint", account);
            }
        }
        Ok(Self {
            url: url.to_string(),
            redirect_uri: redirect_uri.to_owned(),
            state,
            verifier,
        })
    }

    /// The code from the URL the browser was sent back to (or its query alone), once its
    /// `state` is this authorization's.
    pub fn code_from(&self, redirected: &str) -> Result<String, String> {
        let pairs = query_of(redirected);
        if let Some(error) = pairs.get("error") {
            return Err(format!(
                "the authorization was refused ({error}{})",
                pairs
                    .get("error_description")
                    .map(|d| format!(": {}", brief(d)))
                    .unwrap_or_default()
            ));
        }
        if pairs.get("state") != Some(&self.state) {
            return Err(
                "that is not the answer to this authorization (its state differs): use the URL printed now, from the start"
                    .into(),
            );
        }
        pairs
            .get("code")
            .filter(|c| !c.is_empty())
            .cloned()
            .ok_or_else(|| "the URL holds no code".into())
    }
}

impl Authorization {
    /// Whether a request to the listener is this authorization's answer (its `state`):
    /// anything else reaching the port (another local program) is ignored.
    pub fn is_answer(&self, redirected: &str) -> bool {
        query_of(redirected).get("state") == Some(&self.state)
    }
}

/// The query of a URL, or of a path with a query, or a bare query, as pairs.
fn query_of(redirected: &str) -> HashMap<String, String> {
    let redirected = redirected.trim();
    let query = match Url::parse(redirected) {
        Ok(url) => url.query().unwrap_or_default().to_owned(),
        Err(_) => redirected
            .rsplit_once('?')
            .map_or(redirected, |(_, q)| q)
            .to_owned(),
    };
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// At most 200 characters of a server's text, on one line.
fn brief(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A listener on 127.0.0.1 with a port the system chose (RFC 8252 §7.3), and its redirect
/// URI.
pub fn loopback_listener() -> std::io::Result<(TcpListener, String)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    Ok((listener, format!("http://127.0.0.1:{port}/")))
}

/// Serves the loopback redirect: each request's target is sent to `found` (the caller
/// checks it); the browser is told to go back to the terminal. Runs until the process ends.
pub fn serve_loopback(listener: TcpListener, found: mpsc::Sender<(bool, String)>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        let mut reader = std::io::BufReader::new((&stream).take(MAX_REDIRECT_REQUEST_BYTES as u64));
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        // Drain the headers so that the browser reads the answer.
        let mut header = String::new();
        while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
            header.clear();
        }
        let target = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let is_answer = target.contains("code=") || target.contains("error=");
        let body = if is_answer {
            "<!doctype html><title>contactsyncd</title><p>contactsyncd received the answer. You can close this page and return to the terminal.</p>"
        } else {
            "<!doctype html><title>contactsyncd</title><p>Waiting for the authorization.</p>"
        };
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if is_answer && found.send((true, target)).is_err() {
            return;
        }
    }
}

/// What a token endpoint answered.
#[derive(serde::Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Google: the refresh token's remaining lifetime, when it is limited.
    #[serde(default)]
    pub refresh_token_expires_in: Option<i64>,
}

#[derive(serde::Deserialize)]
struct TokenErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// `invalid_grant`: the code or refresh token is revoked, expired, or not this client's.
    InvalidGrant(String),
    /// Another refusal (a wrong client id or secret: `invalid_client`).
    Refused(String),
    Unreachable(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidGrant(text) | Self::Refused(text) | Self::Unreachable(text) => {
                f.write_str(text)
            }
        }
    }
}

/// The certificates a token request trusts: the source's `ca_file` (added to the system's
/// roots, so a public endpoint such as Google's still verifies), and its pinned certificate
/// only when the token endpoint is the CardDAV server itself (same scheme, host and port):
/// a pin names that server's certificate, no other's.
fn token_tls<'a>(source: &'a SourceConfig, token_url: &str) -> (Option<&'a Path>, Option<&'a str>) {
    let Some(carddav) = source.carddav.as_ref() else {
        return (None, None);
    };
    let origin = |url: &str| {
        url::Url::parse(url).ok().map(|u| {
            (
                u.scheme().to_owned(),
                u.host_str().map(str::to_owned),
                u.port_or_known_default(),
            )
        })
    };
    let same_server = origin(token_url).is_some() && origin(token_url) == origin(&carddav.url);
    (
        carddav.ca_file.as_deref(),
        carddav
            .verify_fingerprint
            .as_deref()
            .filter(|_| same_server),
    )
}

/// A token request (RFC 6749 §4.1.3, §6): `form` plus the client's id and secret, over TLS
/// as the source trusts it (`token_tls`).
async fn token_request(
    source: &SourceConfig,
    config: &OAuthConfig,
    form: &[(&str, &str)],
) -> Result<TokenAnswer, TokenError> {
    let secret = match &config.client_secret_file {
        Some(path) => Some(
            crate::regular_file::read_to_string_capped(
                path,
                crate::regular_file::MAX_SECRET_FILE_BYTES,
            )
            .map(|text| text.trim().to_owned())
            .map_err(|err| {
                TokenError::Refused(format!(
                    "cannot read oauth_client_secret_file {}: {err}",
                    path.display()
                ))
            })?,
        ),
        None => None,
    };
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    fields.push(("client_id", &config.client_id));
    if let Some(secret) = &secret {
        fields.push(("client_secret", secret));
    }
    let (ca_file, pin) = token_tls(source, &config.token_url);
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(15))
        .user_agent(concat!("contactsyncd/", env!("CARGO_PKG_VERSION")));
    let http = super::tls::configure(builder, ca_file, pin)
        .map_err(TokenError::Refused)?
        .build()
        .map_err(|err| TokenError::Unreachable(format!("cannot set up HTTP: {err}")))?;
    let mut response = http
        .post(&config.token_url)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&fields)
        .send()
        .await
        .map_err(|err| {
            TokenError::Unreachable(format!(
                "cannot reach the token endpoint: {}",
                describe_reqwest(&err)
            ))
        })?;
    let status = response.status();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_TOKEN_ANSWER_BYTES => {
                body.extend_from_slice(&chunk);
            }
            Ok(Some(_)) => {
                return Err(TokenError::Refused(
                    "the token endpoint's answer is larger than a token answer can be".into(),
                ));
            }
            Ok(None) => break,
            Err(err) => {
                return Err(TokenError::Unreachable(format!(
                    "the token endpoint's answer broke off: {}",
                    describe_reqwest(&err)
                )));
            }
        }
    }
    if status.is_success() {
        return serde_json::from_slice::<TokenAnswer>(&body).map_err(|_| {
            TokenError::Refused(format!(
                "the token endpoint answered {status} without an access token"
            ))
        });
    }
    if status.is_server_error() {
        return Err(TokenError::Unreachable(format!(
            "the token endpoint answered {status}"
        )));
    }
    match serde_json::from_slice::<TokenErrorAnswer>(&body) {
        Ok(answer) => {
            let text = format!(
                "the token endpoint answered {}{}",
                answer.error,
                answer
                    .error_description
                    .map(|d| format!(" ({})", brief(&d)))
                    .unwrap_or_default()
            );
            if answer.error == "invalid_grant" {
                Err(TokenError::InvalidGrant(text))
            } else {
                Err(TokenError::Refused(text))
            }
        }
        Err(_) => Err(TokenError::Refused(format!(
            "the token endpoint answered {status}"
        ))),
    }
}

/// Exchanges the code (RFC 6749 §4.1.3) with the PKCE verifier.
pub async fn exchange_code(
    source: &SourceConfig,
    config: &OAuthConfig,
    authorization: &Authorization,
    code: &str,
) -> Result<TokenAnswer, TokenError> {
    token_request(
        source,
        config,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &authorization.redirect_uri),
            ("code_verifier", &authorization.verifier),
        ],
    )
    .await
}

/// The tokens to store after an answer: a refresh token not sent again stays the one kept.
pub fn tokens_after(
    before: Option<&store::OAuthTokens>,
    client_id: &str,
    answer: TokenAnswer,
    now: store::Timestamp,
) -> store::OAuthTokens {
    store::OAuthTokens {
        client_id: client_id.to_owned(),
        refresh_token: answer
            .refresh_token
            .or_else(|| before.and_then(|b| b.refresh_token.clone())),
        access_expires_at: answer.expires_in.map(|s| now.saturating_add(s)),
        access_token: Some(answer.access_token),
        authorized_at: before.map_or(now, |b| b.authorized_at),
        refresh_expires_at: answer
            .refresh_token_expires_in
            .map(|s| now.saturating_add(s))
            .or_else(|| before.and_then(|b| b.refresh_expires_at)),
    }
}

/// The access token a request of `source` sends now: a program's output, or the stored
/// one while it has time left, else a refreshed one (stored, with a rotated refresh token,
/// before it is used). `fresh`: the server refused the last one, get another.
pub(super) async fn access_token(
    source: &SourceConfig,
    bearer: &BearerSource,
    store: &mut Store,
    now: store::Timestamp,
    fresh: bool,
) -> Result<String, CardDavError> {
    let name = &source.name;
    let oauth = match bearer {
        BearerSource::Command(argv) => {
            return run_secret_command(argv, "bearer_token_command").map_err(|reason| {
                CardDavError::Setup {
                    name: name.clone(),
                    reason,
                }
            });
        }
        BearerSource::OAuth(oauth) => oauth,
    };
    let needs = |reason: &str| CardDavError::NeedsAuthorization {
        name: name.clone(),
        reason: reason.to_owned(),
    };
    let state_error = |err: store::StoreError| CardDavError::Setup {
        name: name.clone(),
        reason: format!("state database: {err}"),
    };
    let Some(kept) = store.oauth_tokens(name).map_err(state_error)? else {
        return Err(needs("it is not authorized yet"));
    };
    if kept.client_id != oauth.client_id {
        return Err(needs(
            "it was authorized for another OAuth client than oauth_client_id names",
        ));
    }
    if !fresh
        && let Some(token) = &kept.access_token
        && kept
            .access_expires_at
            .is_none_or(|at| at - now > REFRESH_MARGIN_SECONDS)
    {
        return Ok(token.clone());
    }
    let Some(refresh_token) = kept.refresh_token.clone() else {
        return Err(needs(
            "the authorization server gave no refresh token, and the access token has expired",
        ));
    };
    let answer = token_request(
        source,
        oauth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await
    .map_err(|err| match err {
        TokenError::InvalidGrant(text) => needs(&format!(
            "its authorization was revoked or has expired ({text})"
        )),
        TokenError::Refused(reason) => CardDavError::Setup {
            name: name.clone(),
            reason: format!("refreshing the access token: {reason}"),
        },
        TokenError::Unreachable(reason) => CardDavError::Unreachable {
            name: name.clone(),
            reason,
        },
    })?;
    let tokens = tokens_after(Some(&kept), &oauth.client_id, answer, now);
    store.set_oauth_tokens(name, &tokens).map_err(state_error)?;
    tracing::debug!(source = %name, "refreshed the OAuth access token");
    Ok(tokens.access_token.unwrap_or_default())
}

/// `check-source`'s token: as a poll gets it, from the state (which it does not create).
pub(super) async fn check_token(
    source: &SourceConfig,
    bearer: &BearerSource,
    state_dir: &std::path::Path,
) -> Result<String, CardDavError> {
    let now = crate::sync::Clock::now(&crate::sync::SystemClock);
    if let BearerSource::OAuth(_) = bearer
        && !Store::path(state_dir).exists()
    {
        return Err(CardDavError::NeedsAuthorization {
            name: source.name.clone(),
            reason: "it is not authorized yet".into(),
        });
    }
    let opened = match bearer {
        BearerSource::Command(_) => Store::open_in_memory(),
        // Beside a running daemon: it holds the lock, SQLite orders the writes.
        BearerSource::OAuth(_) => match Store::open_for_writing(state_dir) {
            Err(store::StoreError::Locked { .. }) => Store::open_connection(state_dir),
            other => other,
        },
    };
    let mut store = opened.map_err(|err| CardDavError::Setup {
        name: source.name.clone(),
        reason: format!("state database: {err}"),
    })?;
    access_token(source, bearer, &mut store, now, false).await
}

/// Runs `authorize`'s wait: the first redirect to the listener that `is_ours`, or
/// (`paste`) the first line on stdin; `None` when stdin ended or 15 minutes passed.
pub fn wait_for_redirect(
    listener: TcpListener,
    paste: bool,
    is_ours: impl Fn(&str) -> bool,
) -> Option<String> {
    let (found, answers) = mpsc::channel();
    let from_browser = found.clone();
    std::thread::spawn(move || serve_loopback(listener, from_browser));
    if paste {
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            // The pasted address is one line; a stream without a newline stops at the cap.
            let mut stdin = stdin.lock().take(MAX_REDIRECT_REQUEST_BYTES as u64);
            while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
                if !line.trim().is_empty() {
                    let _ = found.send((false, line.trim().to_owned()));
                    return;
                }
                line.clear();
            }
            let _ = found.send((false, String::new()));
        });
    } else {
        drop(found);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15 * 60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match answers.recv_timeout(left) {
            Ok((true, target)) if !is_ours(&target) => {
                eprintln!(
                    "ignored a request to the listener that is not the answer to this authorization"
                );
            }
            Ok((_, answer)) => return Some(answer).filter(|a| !a.is_empty()),
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B's example.
    #[test]
    fn s256_matches_rfc_7636() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let verifier = random_token(32);
        assert_eq!(verifier.len(), 43);
        assert_ne!(verifier, random_token(32));
    }

    /// A pin names the CardDAV server's certificate: trusted for a token endpoint on that
    /// server (same scheme, host and port), never for another (Google's); `ca_file` only
    /// adds roots, so it goes with every token request.
    #[test]
    fn a_token_request_trusts_the_pin_only_on_the_carddav_server() {
        let text = format!(
            "[[source]]\nname = \"dav\"\ncarddav = \"https://dav.example:8443/dav/\"\nauth = \"oauth2\"\noauth_client_id = \"id\"\noauth_auth_url = \"https://dav.example:8443/authorize\"\noauth_token_url = \"https://dav.example:8443/token\"\nca_file = \"/etc/ca.pem\"\nverify_fingerprint = \"{}\"\n",
            ["AB"; 32].join(":")
        );
        let config = crate::config::parse(&text, Path::new("/x/config.toml")).unwrap();
        let source = &config.sources[0];
        let ca_file = Some(Path::new("/etc/ca.pem"));
        let (ca, pin) = token_tls(source, "https://dav.example:8443/token");
        assert_eq!((ca, pin.is_some()), (ca_file, true));
        for other in [
            "https://oauth2.googleapis.com/token",
            "https://dav.example/token",
            "http://dav.example:8443/token",
            "not a url",
        ] {
            assert_eq!(token_tls(source, other), (ca_file, None), "{other}");
        }
    }

    fn config() -> OAuthConfig {
        OAuthConfig {
            google: Some("me@gmail.com".into()),
            client_id: "id".into(),
            client_secret_file: None,
            auth_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            token_url: "https://oauth2.googleapis.com/token".into(),
            scope: Some("https://www.googleapis.com/auth/carddav".into()),
        }
    }

    #[test]
    fn the_url_asks_for_a_code_with_pkce_and_the_answer_must_carry_its_state() {
        let auth = Authorization::new(&config(), "http://127.0.0.1:4711/").unwrap();
        let url = Url::parse(&auth.url).unwrap();
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["code_challenge"], pkce_challenge(&auth.verifier));
        assert_eq!(query["redirect_uri"], "http://127.0.0.1:4711/");
        assert_eq!(query["access_type"], "offline");
        assert!(!auth.url.contains(&auth.verifier));
        let state = &query["state"];
        assert_eq!(
            auth.code_from(&format!(
                "http://127.0.0.1:4711/?state={state}&code=4%2Fabc"
            )),
            Ok("4/abc".into())
        );
        assert_eq!(
            auth.code_from(&format!("/?code=xyz&state={state}")),
            Ok("xyz".into())
        );
        assert!(auth.is_answer(&format!("/?state={state}&code=x")));
        assert!(!auth.is_answer("/?state=other&code=x"));
        assert!(
            auth.code_from("http://127.0.0.1:4711/?state=other&code=abc")
                .unwrap_err()
                .contains("state differs")
        );
        assert!(
            auth.code_from(&format!(
                "http://127.0.0.1:4711/?state={state}&error=access_denied"
            ))
            .unwrap_err()
            .contains("access_denied")
        );
    }

    #[test]
    fn a_refresh_without_a_new_refresh_token_keeps_the_old_one() {
        let before = store::OAuthTokens {
            client_id: "id".into(),
            refresh_token: Some("r1".into()),
            access_token: Some("a1".into()),
            access_expires_at: Some(10),
            authorized_at: 5,
            refresh_expires_at: None,
        };
        let answer = |refresh: Option<&str>| TokenAnswer {
            access_token: "a2".into(),
            expires_in: Some(3600),
            refresh_token: refresh.map(str::to_owned),
            refresh_token_expires_in: None,
        };
        let kept = tokens_after(Some(&before), "id", answer(None), 100);
        assert_eq!(kept.refresh_token.as_deref(), Some("r1"));
        assert_eq!(kept.access_expires_at, Some(3700));
        assert_eq!(kept.authorized_at, 5);
        let rotated = tokens_after(Some(&before), "id", answer(Some("r2")), 100);
        assert_eq!(rotated.refresh_token.as_deref(), Some("r2"));
    }
}
