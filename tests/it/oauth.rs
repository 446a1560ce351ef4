//! Issue 26: a CardDAV source with OAuth 2.0 (the `google` preset, its endpoints pointed at
//! a local authorization server) through the real binary: `authorize` (headless and with
//! the loopback listener) → sync → an access token that expires early (401, refresh, retry)
//! → one that expires on time (refreshed before use) → revocation (`invalid_grant`: the
//! source is unknown, nothing deleted, exit 5, "run `contactsyncd authorize`") → authorize
//! again. The CardDAV server is Radicale behind a proxy in this test that accepts only the
//! authorization server's live bearer tokens. Every run logs at trace level, and no token
//! may appear in any of it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::dav::{self, DavServer};
use crate::support::{stderr, stdout};
use crate::telegram::account::Registration;
use crate::telegram::{ServerOptions, TestServer};

const CLIENT_ID: &str = "test-client.apps.example";
const CLIENT_SECRET: &str = "client-secret-3f9a";

#[derive(Default)]
struct AuthState {
    /// code → (PKCE challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    /// access token → when it stops being accepted
    access: HashMap<String, Instant>,
    /// Refresh tokens that work now (a used one is replaced: rotation).
    refresh: HashSet<String>,
    /// Every token and code handed out, to look for in the logs.
    issued: Vec<String>,
    /// How long an access token really works, and what `expires_in` says.
    real_lifetime: Duration,
    said_lifetime: u64,
    /// grant_type of each token request.
    grants: Vec<String>,
    /// DAV requests refused with 401 although they carried a token.
    refused_with_token: usize,
    /// The DAV server refuses every token (an account without access to it).
    refuse_all: bool,
    /// Authorization requests: (scope, access_type, login_hint).
    asked: Vec<HashMap<String, String>>,
}

/// The authorization server and the checking proxy in front of Radicale, on one port.
#[derive(Clone)]
struct AuthServer {
    port: u16,
    state: Arc<Mutex<AuthState>>,
    radicale: String,
}

impl AuthServer {
    async fn start(radicale: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            port: listener.local_addr().unwrap().port(),
            state: Arc::new(Mutex::new(AuthState {
                real_lifetime: Duration::from_secs(3),
                said_lifetime: 3600,
                ..AuthState::default()
            })),
            radicale,
        };
        let serving = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let server = serving.clone();
                tokio::spawn(async move { server.serve(stream).await });
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state.lock().unwrap()
    }

    /// The user revokes the access (Google: "Remove access" in the account's settings).
    fn revoke(&self) {
        let mut state = self.state();
        state.refresh.clear();
        state.access.clear();
    }

    fn token(&self, state: &mut AuthState) -> serde_json::Value {
        let access = format!("at-{}", fastrand::u64(..));
        let refresh = format!("rt-{}", fastrand::u64(..));
        state
            .access
            .insert(access.clone(), Instant::now() + state.real_lifetime);
        state.refresh.insert(refresh.clone());
        state.issued.push(access.clone());
        state.issued.push(refresh.clone());
        serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": state.said_lifetime,
            "refresh_token": refresh,
            "scope": "https://www.googleapis.com/auth/carddav",
        })
    }

    async fn serve(&self, mut stream: TcpStream) {
        let Some((method, target, headers, body)) = read_request(&mut stream).await else {
            return;
        };
        let (status, extra, content) = self.answer(&method, &target, &headers, body).await;
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            content.len()
        );
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&content).await;
    }

    async fn answer(
        &self,
        method: &str,
        target: &str,
        headers: &HashMap<String, String>,
        body: Vec<u8>,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let json = |status: u16, value: serde_json::Value| {
            (
                status,
                vec![("Content-Type".into(), "application/json".into())],
                value.to_string().into_bytes(),
            )
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        match (method, path) {
            ("GET", "/authorize") => {
                assert_eq!(query["client_id"], CLIENT_ID);
                assert_eq!(query["response_type"], "code");
                assert_eq!(query["code_challenge_method"], "S256");
                let redirect = query["redirect_uri"].clone();
                assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
                let code = format!("code-{}", fastrand::u64(..));
                let mut state = self.state();
                state.asked.push(query.clone());
                state.issued.push(code.clone());
                state.codes.insert(
                    code.clone(),
                    (query["code_challenge"].clone(), redirect.clone()),
                );
                let location = format!(
                    "{redirect}?state={}&code={code}&scope=carddav",
                    url::form_urlencoded::byte_serialize(query["state"].as_bytes())
                        .collect::<String>()
                );
                (302, vec![("Location".into(), location)], Vec::new())
            }
            ("POST", "/token") => {
                let form: HashMap<String, String> =
                    url::form_urlencoded::parse(&body).into_owned().collect();
                let mut state = self.state();
                state.grants.push(form["grant_type"].clone());
                if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                    || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
                {
                    return json(401, serde_json::json!({"error": "invalid_client"}));
                }
                let grant_ok = match form["grant_type"].as_str() {
                    "authorization_code" => {
                        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(sha2::Sha256::digest(verifier.as_bytes()));
                        state.codes.remove(&form["code"]).is_some_and(|(c, r)| {
                            c == challenge && Some(&r) == form.get("redirect_uri")
                        })
                    }
                    // Rotation: the refresh token used is spent.
                    "refresh_token" => state.refresh.remove(&form["refresh_token"]),
                    _ => false,
                };
                if !grant_ok {
                    return json(
                        400,
                        serde_json::json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
                    );
                }
                let answer = self.token(&mut state);
                json(200, answer)
            }
            _ => self.proxy(method, target, headers, body).await,
        }
    }

    /// DAV: only with a live token, forwarded to Radicale with its own password.
    async fn proxy(
        &self,
        method: &str,
        target: &str,
        headers: &HashMap<String, String>,
        body: Vec<u8>,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let token = headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_owned);
        let live = {
            let mut state = self.state();
            let live = token
                .as_ref()
                .and_then(|t| state.access.get(t))
                .is_some_and(|until| Instant::now() < *until)
                && !state.refuse_all;
            if token.is_some() && !live {
                state.refused_with_token += 1;
            }
            live
        };
        if !live {
            return (
                401,
                vec![(
                    "WWW-Authenticate".into(),
                    "Bearer realm=\"test\", error=\"invalid_token\"".into(),
                )],
                Vec::new(),
            );
        }
        let client = reqwest::Client::new();
        let mut request = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{target}", self.radicale),
            )
            .basic_auth(dav::USER, Some(dav::PASSWORD))
            .body(body);
        for name in ["depth", "content-type"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let mut extra = Vec::new();
        for name in ["content-type", "etag"] {
            if let Some(value) = response.headers().get(name) {
                extra.push((name.to_owned(), value.to_str().unwrap().to_owned()));
            }
        }
        (status, extra, response.bytes().await.unwrap().to_vec())
    }
}

type Request = (String, String, HashMap<String, String>, Vec<u8>);

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 || data.len() > 1 << 20 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buffer[..n]);
    }
    Some((method, target, headers, body))
}

struct Setup {
    dir: tempfile::TempDir,
    telegram: TestServer,
    config: PathBuf,
    /// Everything every run printed, stdout and stderr, at log level trace.
    printed: Mutex<String>,
}

impl Setup {
    async fn new(auth: &AuthServer) -> Self {
        let telegram = TestServer::start(ServerOptions::default()).await;
        telegram.state().account.rule = Registration::All;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\nname = \"google\"\ngoogle = \"me@gmail.com\"\ncarddav = \"{}\"\noauth_client_id = \"{CLIENT_ID}\"\noauth_client_secret_file = \"{}\"\noauth_auth_url = \"{}\"\noauth_token_url = \"{}\"\n[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\n",
                auth.url("/"),
                secret.display(),
                auth.url("/authorize"),
                auth.url("/token"),
            ),
        )
        .unwrap();
        crate::support::seed_telegram_session(&dir.path().join("state"), &telegram);
        Self {
            dir,
            telegram,
            config,
            printed: Mutex::new(String::new()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_contactsyncd"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CONTACTSYNCD_LOG", "trace");
        command
    }

    fn keep(&self, output: &Output) {
        let mut printed = self.printed.lock().unwrap();
        printed.push_str(&stdout(output));
        printed.push_str(&stderr(output));
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        self.keep(&output);
        output
    }

    /// `authorize google`, the test acting as the browser: it opens the printed URL, and
    /// pastes where that ends (`headless`) or lets the browser follow it to the listener.
    async fn authorize(&self, headless: bool) -> Output {
        let mut args = vec!["authorize", "google"];
        if headless {
            args.push("--no-browser");
        }
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (url, mut reader, mut shown) = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(out);
            let mut shown = String::new();
            loop {
                let mut line = String::new();
                assert!(reader.read_line(&mut line).unwrap() > 0, "no URL: {shown}");
                shown.push_str(&line);
                if line.starts_with("http://") {
                    return (line.trim().to_owned(), reader, shown);
                }
            }
        })
        .await
        .unwrap();
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let consent = browser.get(&url).send().await.unwrap();
        assert_eq!(consent.status(), 302);
        let back = consent.headers()["location"].to_str().unwrap().to_owned();
        if headless {
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{back}").unwrap();
        } else {
            // Another local program reaching the port first is not taken for the answer.
            let listener = back.split('?').next().unwrap();
            browser
                .get(format!("{listener}?state=forged&code=stolen"))
                .send()
                .await
                .unwrap();
            let page = browser.get(&back).send().await.unwrap();
            assert!(
                page.text()
                    .await
                    .unwrap()
                    .contains("return to the terminal")
            );
        }
        let output = tokio::task::spawn_blocking(move || {
            std::io::Read::read_to_string(&mut reader, &mut shown).unwrap();
            let mut output = child.wait_with_output().unwrap();
            output.stdout = shown.into_bytes();
            output
        })
        .await
        .unwrap();
        self.keep(&output);
        assert!(
            output.status.success(),
            "{}\n{}",
            stdout(&output),
            stderr(&output)
        );
        output
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn telegram_phones(&self) -> BTreeSet<String> {
        self.telegram
            .state()
            .account
            .contacts
            .values()
            .map(|c| c.phone.clone())
            .collect()
    }
}

/// The authorization server behind TLS with a self-signed certificate, as on a self-hosted
/// server (its CardDAV and its token endpoint under one private certificate): a thread per
/// connection ends TLS (rustls) and passes the one request (`Connection: close`) on to the
/// plain server, and its answer back.
struct TlsFront {
    port: u16,
    tls: dav::Tls,
}

impl TlsFront {
    fn start(auth: &AuthServer) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use std::io::Read;
        let tls = dav::Tls::new();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(tls.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls.key_der.clone())),
            )
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let backend = auth.port;
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let config = Arc::clone(&config);
                std::thread::spawn(move || {
                    let connection = rustls::ServerConnection::new(config).unwrap();
                    let mut stream = rustls::StreamOwned::new(connection, tcp);
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&chunk[..n]),
                        }
                        let text = String::from_utf8_lossy(&request).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length: usize = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let mut plain = std::net::TcpStream::connect(("127.0.0.1", backend)).unwrap();
                    plain.write_all(&request).unwrap();
                    let mut answer = Vec::new();
                    let _ = plain.read_to_end(&mut answer);
                    let _ = stream.write_all(&answer);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                });
            }
        });
        Self { port, tls }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

/// Radicale with an address book of three people, read through the authorization
/// server's bearer tokens; `None`: skipped (no Radicale, not in CI).
async fn three_people_behind_oauth() -> Option<(DavServer, AuthServer)> {
    let radicale = DavServer::radicale().await?;
    radicale
        .create_address_book_with("contacts", &(0..3).map(person).collect::<Vec<_>>())
        .await;
    let auth = AuthServer::start(radicale.url("")).await;
    Some((radicale, auth))
}

fn person(i: usize) -> String {
    dav::card(
        &format!("p{i}"),
        "Person",
        &i.to_string(),
        &format!("+49 151 {i:08}"),
    )
}

fn phones(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range
        .map(|i| crate::sync::phone(i)[1..].to_owned())
        .collect()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn authorize_sync_refresh_and_revoke_through_the_binary() {
    let Some((radicale, auth)) = three_people_behind_oauth().await else {
        return;
    };
    let setup = Setup::new(&auth).await;

    // Not authorized yet: the source is unknown, the user is told what to run.
    let before = setup.run(&["sync", "--once"]).await;
    assert_eq!(before.status.code(), Some(5), "{}", stderr(&before));
    assert!(
        stderr(&before).contains("run `contactsyncd authorize google`"),
        "{}",
        stderr(&before)
    );

    let check = setup.run(&["check-source", "google"]).await;
    assert_eq!(check.status.code(), Some(5), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("run `contactsyncd authorize google`"),
        "{}",
        stdout(&check)
    );

    // Headless: the URL printed, the address the browser ended at pasted back.
    let authorized = setup.authorize(true).await;
    assert!(stdout(&authorized).contains("source google is authorized"));
    {
        let state = auth.state();
        assert_eq!(state.grants, ["authorization_code"]);
        let asked = &state.asked[0];
        assert_eq!(asked["scope"], "https://www.googleapis.com/auth/carddav");
        assert_eq!(asked["access_type"], "offline");
        assert_eq!(asked["login_hint"], "me@gmail.com");
    }
    let sync = setup.run(&["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", stderr(&sync));
    assert_eq!(setup.telegram_phones(), phones(0..3));
    let check = setup.run(&["check-source", "google"]).await;
    assert!(check.status.success(), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("/alice/contacts/\n    3 cards"),
        "{}",
        stdout(&check)
    );

    // The access token stops working before its announced hour: a 401, one refresh, the
    // same poll again. The new token says its true lifetime.
    auth.state().said_lifetime = 3;
    tokio::time::sleep(Duration::from_secs(4)).await;
    radicale.put_card("contacts", "p3.vcf", &person(3)).await;
    let sync = setup.run(&["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", stderr(&sync));
    assert_eq!(setup.telegram_phones(), phones(0..4));
    {
        let state = auth.state();
        assert_eq!(state.grants, ["authorization_code", "refresh_token"]);
        assert_eq!(state.refused_with_token, 1);
    }

    // Expired as announced: refreshed before the request (no 401), with the refresh token
    // the last refresh rotated to (the old one is spent: using it would be invalid_grant).
    tokio::time::sleep(Duration::from_secs(4)).await;
    radicale.put_card("contacts", "p4.vcf", &person(4)).await;
    let sync = setup.run(&["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", stderr(&sync));
    assert_eq!(setup.telegram_phones(), phones(0..5));
    {
        let state = auth.state();
        assert_eq!(
            state.grants,
            ["authorization_code", "refresh_token", "refresh_token"]
        );
        assert_eq!(state.refused_with_token, 1, "refreshed before it expired");
    }

    let status = setup.run(&["status"]).await;
    assert!(
        stdout(&status).contains("OAuth: authorized 20")
            && stdout(&status).contains(
                "if its OAuth client is in Google's \"Testing\" status, Google ends it 20"
            ),
        "{}",
        stdout(&status)
    );

    let status = setup.run(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let oauth = &status["sources"][0]["oauth"];
    assert_eq!(oauth["authorized"], true, "{status}");
    assert!(
        oauth["authorized_at"].as_i64().unwrap() > 1_700_000_000,
        "{status}"
    );

    // A fresh token refused too: one refresh, then "wrong authorization", exit 5.
    auth.state().refuse_all = true;
    let refusals_before = auth.state().refused_with_token;
    let refused = setup.run(&["sync", "--once"]).await;
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("the server of source google refused a fresh access token"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        auth.state().refused_with_token - refusals_before,
        2,
        "the token, one fresh one, no more"
    );
    auth.state().refuse_all = false;

    // Revoked: invalid_grant. The source is unknown, its contacts stay, the user is told.
    auth.revoke();
    let revoked = setup.run(&["sync", "--once"]).await;
    assert_eq!(revoked.status.code(), Some(5), "{}", stderr(&revoked));
    assert!(
        stderr(&revoked).contains("source google needs you: run `contactsyncd authorize google`"),
        "{}",
        stderr(&revoked)
    );
    assert_eq!(setup.telegram_phones(), phones(0..5), "nothing deleted");
    let status = setup.run(&["status"]).await;
    assert!(
        stdout(&status).contains(
            "UNKNOWN: source google needs authorizing: its authorization was revoked or has expired"
        ),
        "{}",
        stdout(&status)
    );
    assert!(stdout(&status).contains("run `contactsyncd authorize google`"));

    // Authorized again, this time through the loopback listener.
    setup.authorize(false).await;
    let sync = setup.run(&["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", stderr(&sync));
    assert_eq!(setup.telegram_phones(), phones(0..5));

    // At rest: in the state database, 0600 like every file of the 0700 state directory.
    let state_dir = setup.state_dir();
    assert_eq!(mode(&state_dir), 0o700);
    for entry in std::fs::read_dir(&state_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    let database = std::fs::read(state_dir.join("state.db")).unwrap();
    let wal = std::fs::read(state_dir.join("state.db-wal")).unwrap_or_default();
    let issued = auth.state().issued.clone();
    let last_refresh = issued.iter().rev().find(|t| t.starts_with("rt-")).unwrap();
    let holds = |bytes: &[u8], text: &str| bytes.windows(text.len()).any(|w| w == text.as_bytes());
    assert!(
        holds(&database, last_refresh) || holds(&wal, last_refresh),
        "the refresh token is kept in the state"
    );

    // bearer_token_command: its first line is the token, sent by the same rules.
    let token_file = setup.dir.path().join("token");
    let minted = {
        let mut state = auth.state();
        state.real_lifetime = Duration::from_secs(600);
        let answer = auth.token(&mut state);
        answer["access_token"].as_str().unwrap().to_owned()
    };
    std::fs::write(&token_file, format!("{minted}\nsecond line\n")).unwrap();
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let mut replaced = String::new();
    for line in config.lines() {
        if line.starts_with("google = ") {
            replaced.push_str(&format!(
                "bearer_token_command = [\"cat\", \"{}\"]\n",
                token_file.display()
            ));
        } else if !line.starts_with("oauth_") {
            replaced.push_str(line);
            replaced.push('\n');
        }
    }
    std::fs::write(&setup.config, replaced).unwrap();
    radicale.put_card("contacts", "p5.vcf", &person(5)).await;
    let sync = setup.run(&["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", stderr(&sync));
    assert_eq!(setup.telegram_phones(), phones(0..6));
    std::fs::write(&token_file, "a-token-nobody-issued\n").unwrap();
    let refused = setup.run(&["sync", "--once"]).await;
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("the server of source google refused a fresh access token"),
        "{}",
        stderr(&refused)
    );

    // Never in any output, at any log level (all the runs above logged at trace).
    let printed = setup.printed.lock().unwrap().clone();
    assert!(
        printed.contains("TRACE") || printed.contains("DEBUG"),
        "{printed}"
    );
    for secret in issued.iter().map(String::as_str).chain([CLIENT_SECRET]) {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
}

/// A daemon that is killed when the test ends early.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long the daemon may take for what its first pass or its next poll (every 10 s) does:
/// the whole suite runs beside it on two cores, where 20 s was once too short.
const UNDER_LOAD: Duration = Duration::from_secs(45);

/// The daemon with a revoked authorization keeps running and syncs its other source;
/// `authorize` beside it (the daemon holds the state's lock) is taken up by its next poll.
#[tokio::test]
async fn the_daemon_keeps_running_past_a_revoked_authorization() {
    let Some((_radicale, auth)) = three_people_behind_oauth().await else {
        return;
    };
    let setup = Setup::new(&auth).await;
    let folder = setup.dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("x.vcf"), person(100)).unwrap();
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config = config.replace(
        "oauth_client_id =",
        "poll_interval = \"10s\"\noauth_client_id =",
    );
    config.push_str(&format!("[[source]]\npath = \"{}\"\n", folder.display()));
    std::fs::write(&setup.config, config).unwrap();

    setup.authorize(true).await;
    auth.revoke();
    let log_path = setup.dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = Daemon(
        setup
            .command(&["run"])
            .env("CONTACTSYNCD_LOG", "debug")
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let daemon_log = || std::fs::read_to_string(&log_path).unwrap();
    let mut folder_phone = BTreeSet::new();
    folder_phone.insert(crate::sync::phone(100)[1..].to_owned());
    let started = Instant::now();
    while setup.telegram_phones() != folder_phone
        || !daemon_log().contains("run `contactsyncd authorize google`")
    {
        assert!(
            started.elapsed() < UNDER_LOAD,
            "{:?}\n{}",
            setup.telegram_phones(),
            daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon stopped");
    let status = setup.run(&["status"]).await;
    assert!(
        stdout(&status).contains("run `contactsyncd authorize google`"),
        "{}",
        stdout(&status)
    );

    setup.authorize(true).await;
    let mut all = phones(0..3);
    all.extend(folder_phone);
    let authorized = Instant::now();
    while setup.telegram_phones() != all {
        assert!(
            authorized.elapsed() < UNDER_LOAD,
            "the next poll did not use the new authorization: {}",
            daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", daemon_log());
    let log = daemon_log();
    for secret in auth.state().issued.iter() {
        assert!(!log.contains(secret.as_str()), "{secret} logged: {log}");
    }
}

/// A self-hosted server under a private certificate, its CardDAV and its token endpoint
/// alike: the source's `ca_file` (or its `verify_fingerprint` pin, the token endpoint being
/// that same server) is trusted for the token requests too, the code's exchange and each
/// refresh. Before, only CardDAV requests trusted it, and `authorize` could not finish.
#[tokio::test]
async fn a_private_certificate_is_trusted_for_the_token_endpoint_too() {
    let Some((_radicale, auth)) = three_people_behind_oauth().await else {
        return;
    };
    let front = TlsFront::start(&auth);
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &front.tls.cert_pem).unwrap();
    let trusts = [
        format!("ca_file = \"{}\"", ca_file.path().display()),
        format!("verify_fingerprint = \"{}\"", front.tls.fingerprint),
    ];
    for trust in trusts {
        let setup = Setup::new(&auth).await;
        let config = std::fs::read_to_string(&setup.config)
            .unwrap()
            .replace(
                &format!("carddav = \"{}\"", auth.url("/")),
                &format!("carddav = \"{}\"\n{trust}", front.url("/")),
            )
            .replace(
                &format!("oauth_token_url = \"{}\"", auth.url("/token")),
                &format!("oauth_token_url = \"{}\"", front.url("/token")),
            );
        assert!(config.contains(&front.url("/token")), "{config}");
        std::fs::write(&setup.config, config).unwrap();

        setup.authorize(true).await;
        let sync = setup.run(&["sync", "--once"]).await;
        assert!(sync.status.success(), "{trust}: {}", stderr(&sync));
        assert_eq!(setup.telegram_phones(), phones(0..3), "{trust}");
        // The access token expires (3 s, said to last an hour: refused by the server):
        // the refresh goes to the token endpoint over the same trust.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let grants = auth.state().grants.len();
        let sync = setup.run(&["sync", "--once"]).await;
        assert!(sync.status.success(), "{trust}: {}", stderr(&sync));
        assert_eq!(auth.state().grants.len(), grants + 1, "{trust}: refreshed");
        assert_eq!(auth.state().grants.last().unwrap(), "refresh_token");
    }
}
