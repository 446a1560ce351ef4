//! Real CardDAV servers for the tests: Radicale and Xandikos from PyPI, each started on a
//! 127.0.0.1 port chosen by the OS with its storage in a temporary directory, killed on drop.
//!
//! Which Python runs them: `CONTACTSYNCD_DAV_PYTHON`, else `.venv-dav/bin/python` under the
//! repository root, else `python3` on PATH (`.ci/run` installs them and sets the variable).
//! When a server cannot start, a test fails with the reason under `CI=true`, and elsewhere
//! prints a loud "skipped" with the install command and returns (`start` gives `None`).
//!
//! Radicale runs with htpasswd plain authentication (`alice:secret`), address books under
//! `/alice/NAME/`; Xandikos with `--defaults` and no authentication, address books under
//! `/user/contacts/NAME/` (`addressbook` exists from the start). Both answer
//! `sync-collection`; a token they no longer know is 403 with `valid-sync-token` on Radicale
//! and 412 on Xandikos (`invalidate_sync_token` makes one).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user Radicale knows (plain htpasswd).
pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";

/// Radicale started from Python rather than `python -m radicale`: its fsync after every
/// written file is an internal option (`_filesystem_fsync`) that only code can turn off, and
/// with it on, uploading 500 cards takes 40 s on this machine's disk instead of 1 s. The
/// server's durability is not what these tests are about; Radicale's own test suite turns it
/// off the same way.
const RADICALE_LAUNCHER: &str = r#"
import sys
from radicale import config, log, server
log.setup()
configuration = config.load([(sys.argv[1], False)])
configuration.update({"storage": {"_filesystem_fsync": "False"}}, "tests", privileged=True)
log.set_level(configuration.get("logging", "level"), False)
server.serve(configuration)
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Radicale,
    Xandikos,
    /// SabreDAV 1.8 (Debian's `php-sabre-dav`) under `php -S`, with its stock PDO
    /// authentication: HTTP Digest (MD5, `qop=auth`). No sync-collection: polls list etags.
    SabreDigest,
    /// The same with Basic authentication.
    SabreBasic,
}

impl Kind {
    fn module(self) -> &'static str {
        match self {
            Kind::Radicale => "radicale",
            Kind::Xandikos => "xandikos",
            Kind::SabreDigest | Kind::SabreBasic => "sabredav",
        }
    }
}

pub struct DavServer {
    kind: Kind,
    python: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    http: reqwest::Client,
    /// Served over https with this certificate, made at start.
    tls: Option<Tls>,
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, made at test time (rcgen).
#[derive(Clone)]
pub struct Tls {
    pub cert_pem: String,
    key_pem: String,
    /// The certificate and its key in DER, for a server of the test's own (rustls).
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    /// SHA-256 of the certificate, as `AB:CD:…`.
    pub fingerprint: String,
}

impl Tls {
    pub fn new() -> Self {
        use sha2::Digest as _;
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("a certificate");
        let fingerprint = sha2::Sha256::digest(made.cert.der())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        Self {
            cert_pem: made.cert.pem(),
            key_pem: made.key_pair.serialize_pem(),
            cert_der: made.cert.der().to_vec(),
            key_der: made.key_pair.serialize_der(),
            fingerprint,
        }
    }
}

impl DavServer {
    /// Radicale with `alice:secret` and no address book yet; `None`: skipped (not in CI).
    pub async fn radicale() -> Option<Self> {
        Self::start(Kind::Radicale).await
    }

    /// Xandikos with its default address book `/user/contacts/addressbook/`; `None`: skipped.
    pub async fn xandikos() -> Option<Self> {
        Self::start(Kind::Xandikos).await
    }

    /// Radicale over https (`ssl = True`) with a self-signed certificate made now.
    pub async fn radicale_tls() -> Option<Self> {
        match Self::try_start(Kind::Radicale, Some(Tls::new())).await {
            Ok(server) => Some(server),
            Err(reason) => unavailable(Kind::Radicale, &reason),
        }
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    pub async fn start(kind: Kind) -> Option<Self> {
        match Self::try_start(kind, None).await {
            Ok(server) => Some(server),
            Err(reason) => unavailable(kind, &reason),
        }
    }

    async fn try_start(kind: Kind, tls: Option<Tls>) -> Result<Self, String> {
        let python = python();
        if kind.is_sabre() {
            check_sabre()?;
        }
        let import = Command::new(&python)
            .args(["-c", &format!("import {}", kind.module())])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        if !import.status.success() && !kind.is_sabre() {
            return Err(format!(
                "{} cannot import {}: {}",
                python.display(),
                kind.module(),
                String::from_utf8_lossy(&import.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            ));
        }
        let mut dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("users"), format!("{USER}:{PASSWORD}\n"))
            .map_err(|e| e.to_string())?;
        if kind.is_sabre() {
            create_sabre_database(dir.path())?;
        }
        let mut http = reqwest::Client::builder();
        if let Some(tls) = &tls {
            std::fs::write(dir.path().join("cert.pem"), &tls.cert_pem)
                .map_err(|e| e.to_string())?;
            std::fs::write(dir.path().join("key.pem"), &tls.key_pem).map_err(|e| e.to_string())?;
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(tls.cert_pem.as_bytes())
                    .map_err(|e| e.to_string())?,
            );
        }
        let http = http.build().map_err(|e| e.to_string())?;
        // A port freed just before the server binds it can be taken in between: try again
        // with another one then.
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut server = Self {
                kind,
                python: python.clone(),
                port: free_port(),
                dir,
                child: None,
                http: http.clone(),
                tls: tls.clone(),
            };
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_error = e;
                    server.stop();
                    dir = server.into_dir();
                }
            }
        }
        Err(last_error)
    }

    fn into_dir(mut self) -> tempfile::TempDir {
        self.stop();
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// Starts the server process on `self.port` and waits until it answers HTTP.
    async fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.python);
        match self.kind {
            Kind::Radicale => {
                // `delay = 0`: Radicale waits a second before every 401, and a client's first
                // request of a process goes without the password (it answers the challenge),
                // so each poll would take a second more: the model test polls hundreds of times.
                let config = self.dir.path().join("radicale.conf");
                std::fs::write(
                    &config,
                    format!(
                        "[server]\nhosts = 127.0.0.1:{port}\n{ssl}\
                         [auth]\ntype = htpasswd\nhtpasswd_filename = {users}\nhtpasswd_encryption = plain\ndelay = 0\n\
                         [storage]\nfilesystem_folder = {storage}\n\
                         [logging]\nlevel = info\n",
                        ssl = match &self.tls {
                            Some(_) => format!(
                                "ssl = True\ncertificate = {}\nkey = {}\n",
                                self.dir.path().join("cert.pem").display(),
                                self.dir.path().join("key.pem").display()
                            ),
                            None => String::new(),
                        },
                        port = self.port,
                        users = self.dir.path().join("users").display(),
                        storage = self.storage().display(),
                    ),
                )
                .map_err(|e| e.to_string())?;
                command.args(["-c", RADICALE_LAUNCHER]).arg(config);
            }
            Kind::SabreDigest | Kind::SabreBasic => {
                std::fs::write(self.dir.path().join("server.php"), SABRE_SERVER)
                    .map_err(|e| e.to_string())?;
                command = Command::new("php");
                command
                    .current_dir(self.dir.path())
                    .args(["-S", &format!("127.0.0.1:{}", self.port), "server.php"])
                    .env("SABRE_DB", self.dir.path().join("sabre.sqlite"))
                    .env(
                        "SABRE_AUTH",
                        if self.kind == Kind::SabreBasic {
                            "basic"
                        } else {
                            "digest"
                        },
                    )
                    .env("SABRE_PASSWORD", PASSWORD);
            }
            Kind::Xandikos => {
                command
                    .args(["-m", "xandikos", "-d"])
                    .arg(self.storage())
                    .args(["--defaults", "-l", "127.0.0.1", "-p"])
                    .arg(self.port.to_string());
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.python.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "{:?} exited with {status} on port {}; its log:\n{}",
                    self.kind,
                    self.port,
                    self.log()
                ));
            }
            // Over TLS a plain-text probe gets no HTTP answer: a listening port will do.
            let ready = match self.tls {
                Some(_) => TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok(),
                None => answers_http(self.port),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{:?} did not answer on port {} within 20 s; its log:\n{}",
                    self.kind,
                    self.port,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (https with TLS) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// The path of address book `name`: `/alice/NAME/` or `/user/contacts/NAME/`.
    pub fn book_path(&self, name: &str) -> String {
        match self.kind {
            Kind::Radicale => format!("/{USER}/{name}/"),
            Kind::Xandikos => format!("/user/contacts/{name}/"),
            Kind::SabreDigest | Kind::SabreBasic => format!("/addressbooks/{USER}/{name}/"),
        }
    }

    pub fn book_url(&self, name: &str) -> String {
        self.url(&self.book_path(name))
    }

    /// Username and password the server wants, if any.
    pub fn credentials(&self) -> Option<(&'static str, &'static str)> {
        (self.kind != Kind::Xandikos).then_some((USER, PASSWORD))
    }

    fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Everything the server process printed, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The requests Radicale logged (`PROPFIND /alice/book/`, …), in order: what a client
    /// asked, counted without a proxy in between. Xandikos logs no requests.
    pub fn requests(&self) -> Vec<String> {
        assert_eq!(self.kind, Kind::Radicale, "only Radicale logs requests");
        // [INFO] REPORT request for '/alice/book/' with depth '1' received from 127.0.0.1 …
        self.log()
            .lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once("] [INFO] ")?;
                let (method, rest) = rest.split_once(" request for '")?;
                let (path, _) = rest.split_once('\'')?;
                Some(format!("{method} {path}"))
            })
            .collect()
    }

    /// Kills the server (its storage stays): a source that cannot be reached.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same storage.
    pub async fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch().await {
            panic!("restarting {:?}: {e}", self.kind);
        }
    }

    fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let request = self.http.request(method, self.url(path));
        match self.credentials() {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> reqwest::Response {
        let mut request = request.build().unwrap_or_else(|e| panic!("{what}: {e}"));
        if self.kind == Kind::SabreDigest {
            request.headers_mut().remove(reqwest::header::AUTHORIZATION);
        }
        let again = request
            .try_clone()
            .expect("a request with a body in memory");
        let mut response = self
            .http
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // Digest: the server's challenge first, then the request again with the answer.
        if self.kind == Kind::SabreDigest && response.status() == 401 {
            let challenge = response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let mut prompt = digest_auth::parse(&challenge).expect("a Digest challenge");
            let mut again = again;
            let context = digest_auth::AuthContext::new_with_method(
                USER,
                PASSWORD,
                again.url().path().to_owned(),
                Option::<&[u8]>::None,
                digest_auth::HttpMethod::from(again.method().as_str().to_owned()),
            );
            let answer = prompt
                .respond(&context)
                .expect("a Digest answer")
                .to_header_string();
            again.headers_mut().insert(
                reqwest::header::AUTHORIZATION,
                answer.parse().expect("a header value"),
            );
            response = self
                .http
                .execute(again)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            panic!("{what}: {status}: {body}\nserver log:\n{}", self.log());
        }
        response
    }

    /// Creates an empty address book `name` (MKCOL, RFC 5689).
    pub async fn create_address_book(&self, name: &str) {
        let body = r#"<?xml version="1.0" encoding="utf-8"?>
<create xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><set><prop><resourcetype><collection/><CR:addressbook/></resourcetype><displayname>"#
            .to_owned()
            + name
            + "</displayname></prop></set></create>";
        self.send(
            self.request("MKCOL", &self.book_path(name))
                .header("Content-Type", "application/xml")
                .body(body),
            &format!("MKCOL {name}"),
        )
        .await;
    }

    /// Creates address book `name` holding `cards` (each one vCard with a UID). Radicale
    /// takes them in one PUT of the collection and names them `UID.vcf`; Xandikos gets one
    /// PUT per card, named `UID.vcf` too.
    pub async fn create_address_book_with(&self, name: &str, cards: &[String]) {
        match self.kind {
            Kind::Radicale => {
                self.send(
                    self.request("PUT", &self.book_path(name))
                        .header("Content-Type", "text/vcard")
                        .body(cards.concat()),
                    &format!("PUT collection {name}"),
                )
                .await;
            }
            Kind::Xandikos | Kind::SabreDigest | Kind::SabreBasic => {
                let exists = match self.kind {
                    Kind::Xandikos => "addressbook",
                    _ => "contacts",
                };
                if name != exists {
                    self.create_address_book(name).await;
                }
                for card in cards {
                    let uid = uid_of(card);
                    self.put_card(name, &format!("{uid}.vcf"), card).await;
                }
            }
        }
    }

    /// Creates or replaces card `file` in address book `book`; returns its new etag.
    pub async fn put_card(&self, book: &str, file: &str, vcard: &str) -> String {
        let path = format!("{}{file}", self.book_path(book));
        let response = self
            .send(
                self.request("PUT", &path)
                    .header("Content-Type", "text/vcard; charset=utf-8")
                    .body(vcard.to_owned()),
                &format!("PUT {path}"),
            )
            .await;
        response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn delete_card(&self, book: &str, file: &str) {
        let path = format!("{}{file}", self.book_path(book));
        self.send(self.request("DELETE", &path), &format!("DELETE {path}"))
            .await;
    }

    /// The address book's current sync token (PROPFIND depth 0).
    pub async fn sync_token(&self, book: &str) -> String {
        let path = self.book_path(book);
        let body = self
            .send(
                self.request("PROPFIND", &path)
                    .header("Depth", "0")
                    .header("Content-Type", "application/xml")
                    .body(r#"<propfind xmlns="DAV:"><prop><sync-token/></prop></propfind>"#),
                &format!("PROPFIND {path}"),
            )
            .await
            .text()
            .await
            .expect("PROPFIND body");
        element_text(&body, "sync-token")
            .unwrap_or_else(|| panic!("no sync-token in {body}"))
            .to_owned()
    }

    /// Makes `token` of address book `book` unknown to the server, as an expired token or a
    /// server that lost its change log would be, so that a `sync-collection` with it is
    /// refused (Radicale 403, Xandikos 412).
    ///
    /// Radicale keeps each token's state in `.Radicale.cache/sync-token/NAME` inside the
    /// collection's folder: all of them are removed. Radicale looks the old token up only
    /// when the collection changed since (an unchanged collection gives back the same token
    /// without reading it), so change the book before the next poll. Xandikos's tokens name
    /// git tree objects in the book's repository: the server is stopped, that tree's loose
    /// object removed, and the server started again on the same port.
    pub async fn invalidate_sync_token(&mut self, book: &str, token: &str) {
        match self.kind {
            Kind::SabreDigest | Kind::SabreBasic => panic!("SabreDAV 1.8 has no sync tokens"),
            Kind::Radicale => {
                let tokens = self
                    .storage()
                    .join("collection-root")
                    .join(USER)
                    .join(book)
                    .join(".Radicale.cache/sync-token");
                let name = token.rsplit('/').next().unwrap_or(token);
                assert!(
                    tokens.join(name).is_file(),
                    "Radicale keeps token {token} in {}",
                    tokens.display()
                );
                std::fs::remove_dir_all(&tokens).unwrap();
            }
            Kind::Xandikos => {
                self.stop();
                let object = self
                    .storage()
                    .join("user/contacts")
                    .join(book)
                    .join(".git/objects")
                    .join(&token[..2])
                    .join(&token[2..]);
                std::fs::remove_file(&object)
                    .unwrap_or_else(|e| panic!("{}: {e}", object.display()));
                self.restart().await;
            }
        }
    }
}

impl Drop for DavServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Python that runs the servers: `CONTACTSYNCD_DAV_PYTHON`, the repository's
/// `.venv-dav`, or `python3`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("CONTACTSYNCD_DAV_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-dav/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// In CI a server that cannot start fails the test; elsewhere it is skipped, loudly.
fn unavailable(kind: Kind, reason: &str) -> Option<DavServer> {
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if in_ci {
        panic!(
            "the {kind:?} CardDAV test server cannot start (CI is set, so this fails): {reason}"
        );
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing
    // tests, and a skip nobody sees is a pass nobody earned.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** skipped: the {kind:?} CardDAV test server cannot start: {reason}\n\
         *** install the servers with `python3 -m venv .venv-dav && .venv-dav/bin/pip install \
         radicale==3.9.0 xandikos==0.4.10` (or set CONTACTSYNCD_DAV_PYTHON to a python that has them)\n"
    );
    None
}

/// The SabreDAV server script `php -S` runs (tests/support/sabredav.php).
const SABRE_SERVER: &str = include_str!("sabredav.php");

impl Kind {
    fn is_sabre(self) -> bool {
        matches!(self, Kind::SabreDigest | Kind::SabreBasic)
    }
}

/// Whether PHP with SQLite and Debian's SabreDAV is installed.
fn check_sabre() -> Result<(), String> {
    let check = Command::new("php")
        .args([
            "-r",
            "set_include_path('/usr/share/php'); require 'Sabre/autoload.php'; new PDO('sqlite::memory:'); echo Sabre\\DAV\\Version::VERSION;",
        ])
        .output()
        .map_err(|e| format!("cannot run php: {e} (apt-get install php-cli php-sqlite3 php-xml php-mbstring php-sabre-dav)"))?;
    if !check.status.success() {
        return Err(format!(
            "php has no SabreDAV or SQLite (apt-get install php-cli php-sqlite3 php-xml php-mbstring php-sabre-dav): {}",
            String::from_utf8_lossy(&check.stdout)
                .lines()
                .last()
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// SabreDAV's tables (its examples/sql/sqlite.*.sql) with user alice (Digest's A1 for realm
/// SabreDAV) and her address book `contacts`.
fn create_sabre_database(dir: &Path) -> Result<(), String> {
    let a1 = digest_auth::Algorithm::new(digest_auth::AlgorithmType::MD5, false)
        .hash(format!("{USER}:SabreDAV:{PASSWORD}").as_bytes());
    let schema = format!(
        "CREATE TABLE users (id integer primary key asc, username TEXT, digesta1 TEXT, UNIQUE(username));
         INSERT INTO users (username, digesta1) VALUES ('{USER}', '{a1}');
         CREATE TABLE principals (id INTEGER PRIMARY KEY ASC, uri TEXT, email TEXT, displayname TEXT, vcardurl TEXT, UNIQUE(uri));
         CREATE TABLE groupmembers (id INTEGER PRIMARY KEY ASC, principal_id INTEGER, member_id INTEGER, UNIQUE(principal_id, member_id));
         INSERT INTO principals (uri, email, displayname) VALUES ('principals/{USER}', NULL, 'Alice');
         CREATE TABLE addressbooks (id integer primary key asc, principaluri text, displayname text, uri text, description text, ctag integer);
         CREATE TABLE cards (id integer primary key asc, addressbookid integer, carddata blob, uri text, lastmodified integer);
         INSERT INTO addressbooks (principaluri, displayname, uri, description, ctag) VALUES ('principals/{USER}', 'Contacts', 'contacts', '', 1);"
    );
    let connection =
        rusqlite::Connection::open(dir.join("sabre.sqlite")).map_err(|e| e.to_string())?;
    connection.execute_batch(&schema).map_err(|e| e.to_string())
}

/// A port the OS picked as free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether something on the port answers an HTTP request with a status line.
fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"OPTIONS / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// The text of the first element named `local` (any namespace prefix).
fn element_text<'a>(xml: &'a str, local: &str) -> Option<&'a str> {
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>')?;
        let tag = &rest[..end];
        let name = tag.split_whitespace().next().unwrap_or("");
        let name = name.rsplit(':').next().unwrap_or(name);
        if name == local && !tag.starts_with('/') && !tag.ends_with('/') {
            let body = &rest[end + 1..];
            return body.find('<').map(|close| &body[..close]);
        }
        rest = &rest[end + 1..];
    }
    None
}

fn uid_of(card: &str) -> &str {
    card.lines()
        .find_map(|line| line.strip_prefix("UID:"))
        .map(str::trim)
        .expect("the card has a UID")
}

/// A vCard 3.0 with UID `uid`, name `first last` and one mobile number.
pub fn card(uid: &str, first: &str, last: &str, phone: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{first} {last}\r\nN:{last};{first};;;\r\nTEL;TYPE=CELL:{phone}\r\nEND:VCARD\r\n"
    )
}
