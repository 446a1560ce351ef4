//! The HTTP client: redirects followed by hand, statuses judged, answers bounded, a short
//! Retry-After waited out.

use super::auth::{Auth, Refused, Secret};
#[allow(unused_imports)]
use super::*;

pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) url: Url,
    pub(super) body: Vec<u8>,
}

/// Counts of what a poll cost, for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub requests: u64,
    pub bytes_received: u64,
}

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) source: String,
    pub(super) auth: Auth,
    pub(super) traffic: Traffic,
}

pub(super) enum Failure {
    /// The answer was too large to take whole.
    TooLarge,
    Error(CardDavError),
}

impl From<CardDavError> for Failure {
    fn from(err: CardDavError) -> Self {
        Self::Error(err)
    }
}

impl Client {
    pub(super) fn new(source: &SourceConfig, config: &CardDavConfig) -> Result<Self, CardDavError> {
        let auth = new_auth(source, config)?;
        Self::with_auth(source, auth)
    }

    /// `auth`: what [`new_auth`] made (the daemon's poller keeps it between polls, with
    /// what the server asked for).
    pub(super) fn with_auth(source: &SourceConfig, auth: Auth) -> Result<Self, CardDavError> {
        let setup = |reason: String| CardDavError::Setup {
            name: source.name.clone(),
            reason,
        };
        // Redirects are followed by hand: reqwest turns a redirected PROPFIND into a GET.
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("contactsyncd/", env!("CARGO_PKG_VERSION")));
        let config = source.carddav.as_ref();
        let builder = super::tls::configure(
            builder,
            config.and_then(|c| c.ca_file.as_deref()),
            config.and_then(|c| c.verify_fingerprint.as_deref()),
        )
        .map_err(setup)?;
        let http = builder
            .build()
            .map_err(|err| setup(format!("cannot set up HTTP: {err}")))?;
        Ok(Self {
            http,
            source: source.name.clone(),
            auth,
            traffic: Traffic::default(),
        })
    }

    /// One request, following redirects (same method and body), waiting out a short
    /// Retry-After. 401 and 5xx are errors; other statuses are the caller's to judge.
    pub(super) async fn send(
        &mut self,
        method: &Method,
        url: &Url,
        depth: Option<&str>,
        body: Option<&str>,
        what: &'static str,
        limit: usize,
    ) -> Result<Answer, Failure> {
        let mut url = url.clone();
        let mut redirects = 0;
        let mut waits = 0;
        let mut challenge_answers = 0;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            let authorization = self.auth.header(method.as_str(), &url, &self.source);
            let sent_credentials = authorization.is_some();
            if let Some(authorization) = authorization {
                request = request.header(reqwest::header::AUTHORIZATION, authorization);
            }
            if let Some(depth) = depth {
                request = request.header("Depth", depth);
            }
            if let Some(body) = body {
                request = request
                    .header("Content-Type", "application/xml; charset=utf-8")
                    .body(body.to_owned());
            }
            self.traffic.requests += 1;
            let mut response = request
                .send()
                .await
                .map_err(|err| CardDavError::Unreachable {
                    name: self.source.clone(),
                    reason: describe_reqwest(&err),
                })?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                // The password goes with every request: never to a plain-http downgrade.
                let location =
                    location.filter(|next| !(url.scheme() == "https" && next.scheme() != "https"));
                match location {
                    Some(next) if redirects < MAX_REDIRECTS => {
                        redirects += 1;
                        url = next;
                        continue;
                    }
                    _ => {
                        return Err(CardDavError::Status {
                            name: self.source.clone(),
                            status,
                            what,
                        }
                        .into());
                    }
                }
            }
            if status == StatusCode::UNAUTHORIZED {
                let challenges: Vec<String> = response
                    .headers()
                    .get_all(reqwest::header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect();
                match self.auth.challenged(&url, sent_credentials, &challenges) {
                    // Answered the challenge: the same request once more (at most twice,
                    // for a Digest nonce gone stale).
                    Ok(()) if challenge_answers < 2 => {
                        challenge_answers += 1;
                        continue;
                    }
                    Err(Refused::NoScheme(schemes)) => {
                        return Err(CardDavError::Setup {
                            name: self.source.clone(),
                            reason: format!(
                                "the server asks for authentication contactsyncd does not speak ({schemes}; it speaks Basic and Digest)"
                            ),
                        }
                        .into());
                    }
                    Err(Refused::NotHere) => {
                        return Err(CardDavError::Setup {
                            name: self.source.clone(),
                            reason: "a redirect or link of the server leads to another server that asks for the password; it goes only to the configured server (over https also to another host of the same site): configure the URL it leads to".into(),
                        }
                        .into());
                    }
                    _ => {
                        return Err(CardDavError::Unauthorized {
                            name: self.source.clone(),
                        }
                        .into());
                    }
                }
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                let seconds = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after_seconds(v, std::time::SystemTime::now()));
                match seconds {
                    Some(s) if Duration::from_secs(s) <= MAX_INLINE_WAIT && waits < 3 => {
                        waits += 1;
                        tracing::debug!(source = %self.source, seconds = s, "the server asks to wait");
                        tokio::time::sleep(Duration::from_secs(s)).await;
                        continue;
                    }
                    Some(seconds) => {
                        return Err(CardDavError::Wait {
                            name: self.source.clone(),
                            status,
                            seconds,
                        }
                        .into());
                    }
                    None => {}
                }
            }
            if status.is_server_error() {
                return Err(CardDavError::Status {
                    name: self.source.clone(),
                    status,
                    what,
                }
                .into());
            }
            let mut body = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        self.traffic.bytes_received += chunk.len() as u64;
                        if body.len() + chunk.len() > limit {
                            return Err(Failure::TooLarge);
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(err) => {
                        return Err(CardDavError::Unreachable {
                            name: self.source.clone(),
                            reason: describe_reqwest(&err),
                        }
                        .into());
                    }
                }
            }
            return Ok(Answer { status, url, body });
        }
    }

    /// A request whose answer must be a multistatus (207).
    pub(super) async fn multistatus(
        &mut self,
        method: &Method,
        url: &Url,
        depth: Option<&str>,
        body: &str,
        what: &'static str,
    ) -> Result<(Url, Multistatus), Failure> {
        let answer = self
            .send(method, url, depth, Some(body), what, MAX_ANSWER_BYTES)
            .await?;
        if answer.status != StatusCode::MULTI_STATUS {
            return Err(CardDavError::Status {
                name: self.source.clone(),
                status: answer.status,
                what,
            }
            .into());
        }
        let answer_rows =
            parse_multistatus(&answer.body).map_err(|reason| self.garbage(what, reason))?;
        Ok((answer.url, answer_rows))
    }

    pub(super) fn garbage(&self, what: &'static str, reason: String) -> CardDavError {
        CardDavError::Garbage {
            name: self.source.clone(),
            what,
            reason,
        }
    }
}

pub(super) fn too_large(failure: Failure, client: &Client, what: &'static str) -> CardDavError {
    match failure {
        Failure::Error(err) => err,
        Failure::TooLarge => client.garbage(
            what,
            format!("the answer is larger than {} KiB", MAX_ANSWER_BYTES >> 10),
        ),
    }
}

/// reqwest's error without the URL (it may name the user's principal).
pub(super) fn describe_reqwest(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    if text.contains("UnknownIssuer") || text.contains("NotValidForName") {
        text.push_str(" (a private CA or a self-signed certificate: set ca_file to its PEM file, or pin the certificate with verify_fingerprint)");
    }
    text
}

/// A `Retry-After` value in seconds: delay-seconds, or an HTTP date (RFC 9110 §10.2.3), a
/// date already past meaning at once; at most [`MAX_RETRY_AFTER`] (a server asking for ten
/// years would otherwise stall the source until a restart).
pub(super) fn retry_after_seconds(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    let seconds = value.parse::<u64>().ok().or_else(|| {
        let at = httpdate::parse_http_date(value).ok()?;
        Some(at.duration_since(now).map_or(0, |wait| wait.as_secs()))
    })?;
    Some(seconds.min(MAX_RETRY_AFTER.as_secs()))
}

/// The credentials of a source as its configuration gives them, read now.
pub(super) fn new_auth(
    source: &SourceConfig,
    config: &CardDavConfig,
) -> Result<Auth, CardDavError> {
    let setup = |reason: String| CardDavError::Setup {
        name: source.name.clone(),
        reason,
    };
    let url =
        Url::parse(&config.url).map_err(|_| setup("the carddav URL does not parse".into()))?;
    // A bearer token is set by the caller, which may need the state to get it.
    if config.bearer.is_some() {
        return Ok(Auth::new(&url, None));
    }
    let password = read_password(&config.password, config.username.is_some()).map_err(setup)?;
    let secret = match (&config.username, password) {
        (Some(user), password) => Some(Secret::Password {
            user: user.clone(),
            password: password.unwrap_or_default(),
        }),
        (None, Some(password)) => Some(Secret::Password {
            user: String::new(),
            password,
        }),
        (None, None) => None,
    };
    Ok(Auth::new(&url, secret))
}
