//! The one TOML file: where it is found, its schema, defaults, and validation whose messages
//! name the file, line, column and key, and say how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::diff::DeleteLimits;
use crate::phone::DefaultRegion;

/// Phone types skipped unless a source says otherwise: nobody messages a fax machine.
pub const DEFAULT_SKIP_PHONE_TYPES: &[&str] = &["fax", "pager"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no configuration file found; looked in:\n{}\nhint: write one there (`contactsyncd generate example-config > FILE` gives the example, every key documented), or pass --config PATH",
        .searched.iter().map(|p| format!("  {}", p.display())).collect::<Vec<_>>().join("\n")
    )]
    NotFound { searched: Vec<PathBuf> },
    /// The OS error is part of the message, not a `source`: printed once, with a hint.
    #[error("cannot read configuration file {}: {error}\nhint: {}", .path.display(), read_hint(.error))]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Invalid>),
}

/// One mistake in the file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key, e.g. `default_region` or `source[2].path`.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// The configuration as the program uses it: validated, defaults applied, paths absolute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    #[serde(skip)]
    pub file: PathBuf,
    pub state_dir: PathBuf,
    #[serde(
        serialize_with = "serialize_region",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_region: Option<DefaultRegion>,
    #[serde(rename = "source")]
    pub sources: Vec<SourceConfig>,
    pub safety: DeleteLimits,
    pub watch: WatchConfig,
    pub log: LogConfig,
    /// Seconds a stopping daemon lets an in-flight request finish.
    #[serde(serialize_with = "as_seconds")]
    pub shutdown_timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsAppConfig>,
}

/// `[whatsapp]`: a WhatsApp number's phone book through the Whapi.Cloud gateway.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhatsAppConfig {
    pub base_url: String,
    /// Serialized as `token_file` when it came from one, else left out (see [`render`]).
    #[serde(rename = "token_file", skip_serializing_if = "Secret::not_from_file")]
    pub token: Secret,
    /// Requests per second, never exceeded (the gateway answers 429 when pushed, and bursts
    /// can trip WhatsApp's anti-spam).
    pub requests_per_second: f64,
    #[serde(serialize_with = "as_seconds")]
    pub request_timeout: u64,
    #[serde(serialize_with = "as_seconds")]
    pub reconcile_interval: u64,
    pub on_remote_delete: OnRemoteDelete,
    /// Take over numbers the user had already saved on the phone (rename them to the
    /// address book's name, delete them when the card goes). Default false: they are the
    /// user's and never touched.
    pub adopt_existing: bool,
}

/// Where logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogTarget {
    /// journald when systemd connected stderr to the journal, else stderr.
    Auto,
    Stderr,
    Journald,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    pub target: LogTarget,
    /// A tracing filter, e.g. `info` or `contactsyncd=debug`; `CONTACTSYNCD_LOG` / `RUST_LOG`
    /// override it.
    pub level: String,
    /// Debug logs show numbers redacted (`+49…34`) unless this is true. Info and above never
    /// show numbers or names, and file names only cut to their first letter (`J….vcf`),
    /// unless this is true.
    pub show_personal_data: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            target: LogTarget::Auto,
            level: "info".into(),
            show_personal_data: false,
        }
    }
}

/// `[watch]`: how `contactsyncd run` notices changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchConfig {
    /// Quiet time after the last change before a pass (milliseconds): exporters write in bursts.
    #[serde(rename = "debounce", serialize_with = "as_millis")]
    pub debounce_ms: u64,
    /// Seconds between full rescans that catch what inotify missed (overflow, network mounts).
    #[serde(serialize_with = "as_seconds")]
    pub rescan_interval: u64,
    /// Poll instead of inotify, for file systems without it.
    pub poll: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            debounce_ms: 500,
            rescan_interval: 300,
            poll: false,
        }
    }
}

// The durations the program derives from the configuration. `parse` keeps every key in a
// range (`DurationRange`, `REQUESTS_PER_SECOND`) where each of them is positive and far
// from overflowing when added to an `Instant` or a timestamp.

impl Config {
    /// How long a stopping daemon lets the request in flight finish.
    pub fn shutdown_timeout_duration(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }

    /// Every duration the program derives from this configuration, named by key.
    pub fn durations(&self) -> Vec<(&'static str, Duration)> {
        let mut all = vec![
            ("shutdown_timeout", self.shutdown_timeout_duration()),
            ("watch.debounce", self.watch.debounce_duration()),
            (
                "watch.rescan_interval",
                self.watch.rescan_interval_duration(),
            ),
        ];
        if let Some(telegram) = &self.telegram {
            all.push((
                "telegram.request_timeout",
                telegram.request_timeout_duration(),
            ));
            all.push((
                "telegram.reconcile_interval",
                Duration::from_secs(telegram.reconcile_interval),
            ));
        }
        if let Some(whatsapp) = &self.whatsapp {
            all.push((
                "whatsapp.request_timeout",
                whatsapp.request_timeout_duration(),
            ));
            all.push((
                "whatsapp.reconcile_interval",
                Duration::from_secs(whatsapp.reconcile_interval),
            ));
            all.push(("whatsapp.requests_per_second", whatsapp.request_interval()));
        }
        all
    }
}

impl WatchConfig {
    pub fn debounce_duration(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    pub fn rescan_interval_duration(&self) -> Duration {
        Duration::from_secs(self.rescan_interval)
    }
}

impl TelegramConfig {
    pub fn request_timeout_duration(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }
}

impl WhatsAppConfig {
    pub fn request_timeout_duration(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }

    /// The pace: one request per this long. (A rate `parse` would refuse, in a configuration
    /// built by hand, gives the default pace instead of a panic.)
    pub fn request_interval(&self) -> Duration {
        let rate = Some(self.requests_per_second)
            .filter(|rate| REQUESTS_PER_SECOND.contains(rate))
            .unwrap_or(1.0);
        Duration::from_secs_f64(1.0 / rate)
    }
}

/// A value that is never printed: logs show `********`, `check-config` where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    origin: SecretOrigin,
}

/// Where a [`Secret`] was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// The key itself, in the configuration file.
    Inline,
    /// The `…_file` key: this file.
    File(PathBuf),
    /// systemd's `LoadCredential=`: the credential of this name.
    Credential(&'static str),
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn origin(&self) -> &SecretOrigin {
        &self.origin
    }

    fn not_from_file(&self) -> bool {
        !matches!(self.origin, SecretOrigin::File(_))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

/// A secret serializes as the file it was read from, the one thing about it that can be
/// written back into a configuration; never as its value.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.origin {
            SecretOrigin::File(path) => path.serialize(serializer),
            _ => Err(serde::ser::Error::custom(
                "a secret is serialized only as the file it came from",
            )),
        }
    }
}

/// A duration key in seconds, written as the configuration writes it (`"10s"`, `"5m"`).
fn as_seconds<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&show_duration(*value, false))
}

/// A duration key in milliseconds, written as the configuration writes it (`"500ms"`).
fn as_millis<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&show_duration(*value, true))
}

/// The configuration as TOML that loads back to the same configuration: durations as
/// strings with units, secrets as the file they came from or as a comment saying where they
/// are set (never their value). What `check-config` prints.
pub fn render(config: &Config) -> Result<String, toml::ser::Error> {
    let mut text = toml::to_string(config)?;
    let secrets = [
        (
            "[telegram]",
            "api_hash",
            config.telegram.as_ref().map(|t| &t.api_hash),
        ),
        (
            "[whatsapp]",
            "token",
            config.whatsapp.as_ref().map(|w| &w.token),
        ),
    ];
    for (header, key, secret) in secrets {
        let note = match secret.map(Secret::origin) {
            Some(SecretOrigin::Inline) => {
                format!("# {key} = \"…\" is set in the configuration file (never printed)")
            }
            Some(SecretOrigin::Credential(name)) => {
                format!("# {key} comes from the systemd credential {name} ($CREDENTIALS_DIRECTORY)")
            }
            Some(SecretOrigin::File(_)) | None => continue,
        };
        let line = format!("{header}\n");
        if let Some(at) = text.find(&line) {
            text.insert_str(at + line.len(), &format!("{note}\n"));
        }
    }
    // CardDAV sources appear in order, each with one `carddav = …` line.
    let mut from = 0;
    for source in config.sources.iter().filter_map(|s| s.carddav.as_ref()) {
        let Some(at) = text[from..].find("\ncarddav = ").map(|at| from + at + 1) else {
            break;
        };
        let end = text[at..].find('\n').map_or(text.len(), |e| at + e + 1);
        from = end;
        if let PasswordSource::Credential(credential) = &source.password
            && source.bearer.is_none()
        {
            let note = format!(
                "# the password comes from the systemd credential {credential} ($CREDENTIALS_DIRECTORY) when set\n"
            );
            text.insert_str(end, &note);
            from += note.len();
        }
    }
    Ok(text)
}

/// What to do about a contact we imported that is gone from the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRemoteDelete {
    /// Import it again: the address book is the truth.
    Reimport,
    /// Leave it deleted and stop syncing it.
    Keep,
}

/// `[telegram]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelegramConfig {
    pub api_id: i32,
    /// Serialized as `api_hash_file` when it came from one, else left out (see [`render`]).
    #[serde(
        rename = "api_hash_file",
        skip_serializing_if = "Secret::not_from_file"
    )]
    pub api_hash: Secret,
    /// The account's phone number (for `login`).
    pub phone: Option<String>,
    pub batch_size: usize,
    /// Seconds one call may take before it counts as failed (grammers has no timeout).
    #[serde(serialize_with = "as_seconds")]
    pub request_timeout: u64,
    /// Seconds between reconciliations with `contacts.getContacts`.
    #[serde(serialize_with = "as_seconds")]
    pub reconcile_interval: u64,
    pub on_remote_delete: OnRemoteDelete,
    /// `contacts.addContact`'s flag for a contact added by username: let that person see
    /// the account's phone number despite its privacy settings. Default false, as in
    /// Telegram's own apps, where it is an explicit choice ("Share my phone number").
    pub add_phone_privacy_exception: bool,
}
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceConfig {
    pub name: String,
    /// A folder source's vdir, folder or file. For a CardDAV source, the server URL as
    /// given: what `status` shows where a folder shows its path (never a local path: every
    /// file operation asks [`SourceConfig::carddav`] first).
    #[serde(skip_serializing_if = "SourceConfig::is_carddav_path")]
    pub path: PathBuf,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub carddav: Option<CardDavConfig>,
    #[serde(flatten)]
    pub filter: CardFilter,
}

impl SourceConfig {
    pub fn is_carddav(&self) -> bool {
        self.carddav.is_some()
    }

    /// A CardDAV source's `path` is its URL, written as `carddav`; a folder's path is always
    /// absolute, so it never starts so.
    #[allow(clippy::ptr_arg)] // serde's skip_serializing_if passes the field's type
    fn is_carddav_path(path: &PathBuf) -> bool {
        let text = path.to_string_lossy();
        text.starts_with("http://") || text.starts_with("https://")
    }
}

/// A `[[source]]` with `carddav = "https://…"`: an address book on a CardDAV server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardDavConfig {
    /// A server, principal or address book URL.
    #[serde(rename = "carddav")]
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Where the password comes from; it is read when the server is asked, never stored
    /// here (so it is never printed, and `status` never runs a password command).
    #[serde(flatten)]
    pub password: PasswordSource,
    /// Display names or last path segments of the address books to read; empty: all found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub address_books: Vec<String>,
    #[serde(serialize_with = "as_seconds")]
    pub poll_interval: u64,
    /// A full etag listing at least this often, whatever the sync-token says: a server that
    /// forgets tokens and answers with a full listing (DAViCal) cannot be told from a delta.
    #[serde(serialize_with = "as_seconds")]
    pub full_check_interval: u64,
    /// PEM certificates trusted for this server beside the system's roots (a private CA
    /// or a self-signed certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 fingerprint of the server's certificate (vdirsyncer's
    /// `verify_fingerprint`): that certificate is accepted, whoever signed it, and no other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_fingerprint: Option<String>,
    /// A bearer token (RFC 6750) instead of a user name and password: from OAuth 2.0
    /// (`google = …` or `auth = "oauth2"`) or from a program.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerSource>,
}

/// Google's CardDAV (developers.google.com/people/carddav): RFC 6764 bootstrap from this
/// URL, OAuth 2.0 only, with this scope, at Google's endpoints for installed apps.
pub const GOOGLE_CARDDAV: &str = "https://www.googleapis.com/.well-known/carddav";
pub const GOOGLE_SCOPE: &str = "https://www.googleapis.com/auth/carddav";
pub const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// Where a CardDAV source's bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerSource {
    /// The authorization-code flow (`contactsyncd authorize`), the tokens kept in the state.
    OAuth(OAuthConfig),
    /// A program and its arguments; its first line of output is a fresh access token (oama,
    /// mutt_oauth2.py).
    Command(Vec<String>),
}

/// An OAuth 2.0 client (RFC 6749, PKCE by RFC 7636, loopback redirect by RFC 8252).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The Google account (`google = …`): the preset's source, and the login hint.
    pub google: Option<String>,
    pub client_id: String,
    /// A file holding the client secret (Google's "Desktop app" clients have one, which
    /// Google says is not kept secret; a public client has none).
    pub client_secret_file: Option<PathBuf>,
    pub auth_url: String,
    pub token_url: String,
    pub scope: Option<String>,
}

/// As the keys that set it; `auth = "oauth2"` is written for a Google source too, so that
/// what `check-config` prints loads back to the same configuration.
impl Serialize for BearerSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self {
            Self::OAuth(oauth) => {
                if let Some(account) = &oauth.google {
                    map.serialize_entry("google", account)?;
                }
                map.serialize_entry("auth", "oauth2")?;
                map.serialize_entry("oauth_client_id", &oauth.client_id)?;
                if let Some(file) = &oauth.client_secret_file {
                    map.serialize_entry("oauth_client_secret_file", file)?;
                }
                map.serialize_entry("oauth_auth_url", &oauth.auth_url)?;
                map.serialize_entry("oauth_token_url", &oauth.token_url)?;
                if let Some(scope) = &oauth.scope {
                    map.serialize_entry("oauth_scope", scope)?;
                }
            }
            Self::Command(argv) => map.serialize_entry("bearer_token_command", argv)?,
        }
        map.end()
    }
}

/// Where a CardDAV password is read from, each time it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    /// A program and its arguments; its first line of output is the password.
    Command(Vec<String>),
    /// systemd's `LoadCredential=carddav-NAME:…`, in `$CREDENTIALS_DIRECTORY`; also what a
    /// source without `username` falls back to (read when present, else no authentication).
    Credential(String),
}

/// As the keys that set it (`password_file`, `password_command`); a credential has no key
/// and is said in a comment by [`render`].
impl Serialize for PasswordSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self {
            Self::File(path) => map.serialize_entry("password_file", path)?,
            Self::Command(argv) => map.serialize_entry("password_command", argv)?,
            Self::Credential(_) => {}
        }
        map.end()
    }
}

/// Which cards and which of their phones a source contributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardFilter {
    /// Only cards in at least one of these CATEGORIES (case-insensitive); empty: every card.
    pub include_categories: Vec<String>,
    /// Cards in any of these CATEGORIES are left out.
    pub exclude_categories: Vec<String>,
    /// Only TELs of one of these types; empty: every type not skipped.
    pub phone_types: Vec<String>,
    /// TELs of these types are left out.
    pub skip_phone_types: Vec<String>,
}

impl Default for CardFilter {
    fn default() -> Self {
        Self {
            include_categories: Vec::new(),
            exclude_categories: Vec::new(),
            phone_types: Vec::new(),
            skip_phone_types: DEFAULT_SKIP_PHONE_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
        }
    }
}

fn serialize_region<S: serde::Serializer>(
    region: &Option<DefaultRegion>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match region {
        Some(region) => serializer.serialize_str(&region.code()),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    default_region: Option<Spanned<String>>,
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
    safety: Option<RawSafety>,
    watch: Option<RawWatch>,
    log: Option<RawLog>,
    shutdown_timeout: Option<Spanned<RawDuration>>,
    telegram: Option<Spanned<RawTelegram>>,
    whatsapp: Option<Spanned<RawWhatsApp>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    target: Option<LogTarget>,
    level: Option<Spanned<String>>,
    show_personal_data: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    debounce: Option<Spanned<RawDuration>>,
    rescan_interval: Option<Spanned<RawDuration>>,
    poll: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhatsApp {
    base_url: Option<Spanned<String>>,
    token: Option<String>,
    token_file: Option<Spanned<String>>,
    requests_per_second: Option<Spanned<f64>>,
    request_timeout: Option<Spanned<RawDuration>>,
    reconcile_interval: Option<Spanned<RawDuration>>,
    on_remote_delete: Option<OnRemoteDelete>,
    adopt_existing: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegram {
    api_id: Spanned<i64>,
    api_hash: Option<String>,
    api_hash_file: Option<Spanned<String>>,
    phone: Option<String>,
    batch_size: Option<Spanned<i64>>,
    request_timeout: Option<Spanned<RawDuration>>,
    reconcile_interval: Option<Spanned<RawDuration>>,
    on_remote_delete: Option<OnRemoteDelete>,
    add_phone_privacy_exception: Option<bool>,
}

/// `30` (seconds) or `"30s"`, `"5m"`, `"6h"`, `"1d"`.
#[derive(Debug)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: a whole number, or a string like \"500ms\", \"30s\", \"5m\", \"6h\", \"1d\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Seconds(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RawDuration, E> {
                u64::try_from(n)
                    .map(RawDuration::Seconds)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl RawDuration {
    /// Like `seconds`, with `"500ms"` too; a bare number is milliseconds here.
    fn millis(&self) -> Result<u64, String> {
        match self {
            Self::Seconds(n) => Ok(*n),
            Self::Text(text) if text.trim().ends_with("ms") => text.trim()[..text.trim().len() - 2]
                .trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a duration")),
            Self::Text(_) => self
                .seconds()?
                .checked_mul(1000)
                .ok_or_else(|| "is far too long".to_owned()),
        }
    }

    fn seconds(&self) -> Result<u64, String> {
        match self {
            Self::Seconds(n) => Ok(*n),
            Self::Text(text) => {
                let text = text.trim();
                let split = text
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(text.len());
                let (number, unit) = text.split_at(split);
                let number: u64 = number
                    .parse()
                    .map_err(|_| format!("{text:?} is not a duration"))?;
                let factor = match unit.trim() {
                    "" | "s" => 1,
                    "m" | "min" => 60,
                    "h" => 3600,
                    "d" => 86_400,
                    other => return Err(format!("unknown unit {other:?} in {text:?}")),
                };
                number
                    .checked_mul(factor)
                    .ok_or_else(|| format!("{text:?} is far too long"))
            }
        }
    }
}

/// The range a duration key must be in, in its unit (seconds, or milliseconds for
/// `watch.debounce`): wide enough for any sensible setting, narrow enough that every timer
/// and deadline derived from it is far from overflowing.
struct DurationRange {
    millis: bool,
    min: u64,
    max: u64,
    example: &'static str,
}

const SHUTDOWN_TIMEOUT: DurationRange = DurationRange {
    millis: false,
    min: 1,
    max: 3600,
    example: "\"10s\"",
};
const DEBOUNCE: DurationRange = DurationRange {
    millis: true,
    min: 1,
    max: 3_600_000,
    example: "\"500ms\"",
};
const RESCAN_INTERVAL: DurationRange = DurationRange {
    millis: false,
    min: 1,
    max: 7 * 86_400,
    example: "\"5m\"",
};
const REQUEST_TIMEOUT: DurationRange = DurationRange {
    millis: false,
    min: 1,
    max: 3600,
    example: "\"30s\"",
};
const RECONCILE_INTERVAL: DurationRange = DurationRange {
    millis: false,
    min: 1,
    max: 30 * 86_400,
    example: "\"6h\"",
};
/// `whatsapp.requests_per_second`: at least one request every 100 s.
const REQUESTS_PER_SECOND: std::ops::RangeInclusive<f64> = 0.01..=1000.0;

/// `90` → `"90s"`, `3600` → `"1h"`: a bound as a user would write it.
fn show_duration(value: u64, millis: bool) -> String {
    if millis && !value.is_multiple_of(1000) {
        return format!("{value}ms");
    }
    let seconds = if millis { value / 1000 } else { value };
    match seconds {
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A duration key within `range`, in the range's unit, or `default` when absent.
/// A key naming a file of the source's (`password_file`, `ca_file`,
/// `oauth_client_secret_file`): not empty, resolved against the configuration's folder, and
/// for check-config readable now (its content is not looked at). `what` says what the file
/// holds, for the hints.
/// A key naming a program to run (`password_command`, `bearer_token_command`): a list whose
/// first item is the program. `example` completes the hint.
fn command_key(
    command: &Spanned<Vec<String>>,
    key: String,
    example: &str,
    invalid: &impl Fn(Option<Range<usize>>, String, String, Option<String>) -> ConfigError,
) -> Result<Vec<String>, ConfigError> {
    if command
        .get_ref()
        .first()
        .is_none_or(|p| p.trim().is_empty())
    {
        return Err(invalid(
            Some(command.span()),
            key,
            "must name a program".into(),
            Some(format!(
                "a list: the program and its arguments, e.g. {example}"
            )),
        ));
    }
    Ok(command.get_ref().clone())
}

fn file_key(
    file: &Spanned<String>,
    key: String,
    what: &str,
    base: &Path,
    source_paths: SourcePaths,
    invalid: &impl Fn(Option<Range<usize>>, String, String, Option<String>) -> ConfigError,
) -> Result<PathBuf, ConfigError> {
    if file.get_ref().trim().is_empty() {
        return Err(invalid(
            Some(file.span()),
            key,
            "must not be empty".into(),
            Some(format!("a file that holds {what}")),
        ));
    }
    let path = resolve_path(file.get_ref(), base);
    if source_paths == SourcePaths::MustBeReadable
        && let Err(err) = std::fs::File::open(&path)
    {
        return Err(invalid(
            Some(file.span()),
            key,
            format!("cannot read {}: {err}", path.display()),
            Some(format!(
                "a file holding {what}, readable by the user contactsyncd runs as"
            )),
        ));
    }
    Ok(path)
}

fn duration_key(
    value: &Option<Spanned<RawDuration>>,
    key: &str,
    default: u64,
    range: &DurationRange,
    invalid: &impl Fn(Option<Range<usize>>, String, String, Option<String>) -> ConfigError,
) -> Result<u64, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let parsed = if range.millis {
        value.get_ref().millis()
    } else {
        value.get_ref().seconds()
    };
    parsed
        .ok()
        .filter(|n| (range.min..=range.max).contains(n))
        .ok_or_else(|| {
            invalid(
                Some(value.span()),
                key.to_owned(),
                format!(
                    "must be a duration from {} to {}",
                    show_duration(range.min, range.millis),
                    show_duration(range.max, range.millis)
                ),
                Some(format!(
                    "e.g. {}; {}",
                    range.example,
                    if range.millis {
                        "a bare number is milliseconds, or a string like \"500ms\", \"2s\""
                    } else {
                        "a bare number is seconds, or a string like \"30s\", \"5m\", \"6h\", \"1d\""
                    }
                )),
            )
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    max_deletes: Option<usize>,
    max_delete_fraction: Option<Spanned<f64>>,
    fraction_min_contacts: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    path: Option<Spanned<String>>,
    carddav: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_command: Option<Spanned<Vec<String>>>,
    address_books: Option<Vec<Spanned<String>>>,
    poll_interval: Option<Spanned<RawDuration>>,
    full_check_interval: Option<Spanned<RawDuration>>,
    ca_file: Option<Spanned<String>>,
    verify_fingerprint: Option<Spanned<String>>,
    google: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    oauth_client_id: Option<Spanned<String>>,
    oauth_client_secret_file: Option<Spanned<String>>,
    oauth_auth_url: Option<Spanned<String>>,
    oauth_token_url: Option<Spanned<String>>,
    oauth_scope: Option<Spanned<String>>,
    bearer_token_command: Option<Spanned<Vec<String>>>,
    name: Option<Spanned<String>>,
    #[serde(default)]
    include_categories: Vec<String>,
    #[serde(default)]
    exclude_categories: Vec<String>,
    #[serde(default)]
    phone_types: Vec<Spanned<String>>,
    skip_phone_types: Option<Vec<Spanned<String>>>,
}

/// Phone types a TEL can carry (vCard 2.1–4.0 TYPE values and what exporters add).
pub const KNOWN_PHONE_TYPES: &[&str] = &[
    "cell",
    "voice",
    "home",
    "work",
    "fax",
    "pager",
    "text",
    "video",
    "textphone",
    "main-number",
    "msg",
    "bbs",
    "modem",
    "car",
    "isdn",
    "pcs",
    "iphone",
    "main",
    "other",
    "pref",
];

/// Where the configuration file is looked for, in order.
pub fn search_paths(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_owned()];
    }
    let mut paths = Vec::new();
    if let Some(path) = std::env::var_os("CONTACTSYNCD_CONFIG").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    if let Some(dir) = xdg_dir("XDG_CONFIG_HOME", ".config") {
        paths.push(dir.join("contactsyncd/config.toml"));
    }
    paths.push(PathBuf::from("/etc/contactsyncd/config.toml"));
    paths
}

fn xdg_dir(variable: &str, fallback_under_home: &str) -> Option<PathBuf> {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home_dir().map(|home| home.join(fallback_under_home)))
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Whether `parse` also requires every source to be readable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourcePaths {
    /// A missing or unreadable source is the scan's business: it counts as unknown until
    /// it appears (a drive mounted late), and nothing of it is deleted.
    MayBeMissing,
    /// `check-config`: a source that cannot be read now is reported, located.
    MustBeReadable,
}

/// Finds and loads the configuration file. A source path that is missing or unreadable is
/// not an error here (see [`load_for_check`]).
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    load_with(explicit, SourcePaths::MayBeMissing)
}

/// Like [`load`], and every source path must exist and be readable now: what
/// `check-config` reports.
pub fn load_for_check(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    load_with(explicit, SourcePaths::MustBeReadable)
}

fn load_with(explicit: Option<&Path>, sources: SourcePaths) -> Result<Config, ConfigError> {
    let searched = search_paths(explicit);
    let path = match explicit {
        Some(path) => path.to_owned(),
        None => searched
            .iter()
            .find(|p| p.exists())
            .cloned()
            .ok_or_else(|| ConfigError::NotFound {
                searched: searched.clone(),
            })?,
    };
    // A configuration is a few KiB; a FIFO or a device named by mistake is refused, not read.
    let text = crate::regular_file::read_to_string_capped(&path, MAX_CONFIG_FILE_BYTES).map_err(
        |error| ConfigError::Read {
            path: path.clone(),
            error,
        },
    )?;
    parse_with(&text, &path, sources)
}

/// The most a configuration file may hold.
const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// Parses and validates configuration text; `path` is used for messages and relative paths.
/// Source paths need not exist (see [`parse_for_check`]).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with(text, path, SourcePaths::MayBeMissing)
}

/// Like [`parse`], and every source path must exist and be readable now.
pub fn parse_for_check(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with(text, path, SourcePaths::MustBeReadable)
}

fn parse_with(text: &str, path: &Path, source_paths: SourcePaths) -> Result<Config, ConfigError> {
    let invalid =
        |span: Option<Range<usize>>, key: String, message: String, hint: Option<String>| {
            let (line, column) = span.map_or((1, 1), |s| line_column(text, s.start));
            ConfigError::Invalid(Box::new(Invalid {
                path: path.to_owned(),
                line,
                column,
                key,
                message,
                hint,
            }))
        };
    let raw: RawConfig = toml::from_str(text).map_err(|err| {
        let span = err.span();
        let key = span
            .clone()
            .map_or_else(|| "(file)".to_owned(), |s| key_at(text, s.start));
        let message = plain_types(err.message().trim());
        let hint = syntax_hint(&key, &message);
        invalid(span, key, message, hint)
    })?;

    let base = path
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));

    let default_region = match &raw.default_region {
        Some(region) => Some(DefaultRegion::parse(region.get_ref()).map_err(|message| {
            invalid(
                Some(region.span()),
                "default_region".into(),
                message,
                Some("the region whose national format your address book uses, e.g. default_region = \"DE\"".into()),
            )
        })?),
        None => None,
    };

    let state_dir = match &raw.state_dir {
        Some(dir) if dir.get_ref().trim().is_empty() => {
            return Err(invalid(
                Some(dir.span()),
                "state_dir".into(),
                "must not be empty".into(),
                Some("remove the key to use the default location".into()),
            ));
        }
        Some(dir) => resolve_path(dir.get_ref(), &base),
        None => default_state_dir_for(path).ok_or_else(|| {
            invalid(
                None,
                "state_dir".into(),
                "no default location: neither $STATE_DIRECTORY, $XDG_STATE_HOME nor $HOME is set"
                    .into(),
                Some("set state_dir = \"/path/to/state\"".into()),
            )
        })?,
    };

    if raw.source.is_empty() {
        return Err(invalid(
            None,
            "source".into(),
            "no [[source]] configured: there is no address book to read".into(),
            Some("add [[source]] with path = \"/path/to/vdir-or-file.vcf\"".into()),
        ));
    }

    let mut sources: Vec<SourceConfig> = Vec::new();
    for (i, source) in raw.source.iter().enumerate() {
        let number = i + 1;
        let key = |k: &str| format!("source[{number}].{k}");
        let source_span = source.span();
        let source = source.get_ref();
        // `google = …` alone reads Google's CardDAV; a `carddav` beside it says where instead.
        let google_url = source
            .google
            .as_ref()
            .filter(|_| source.carddav.is_none())
            .map(|g| Spanned::new(g.span(), GOOGLE_CARDDAV.to_owned()));
        let (path, carddav) = match (
            &source.path,
            source.carddav.as_ref().or(google_url.as_ref()),
        ) {
            (Some(_), Some(url)) => {
                let which = if source.carddav.is_some() {
                    "carddav"
                } else {
                    "google"
                };
                return Err(invalid(
                    Some(url.span()),
                    key(which),
                    format!("a source has either path or {which}, not both"),
                    Some(
                        "make two [[source]] sections, one for the folder and one for the server"
                            .into(),
                    ),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    Some(source_span.clone()),
                    key("path"),
                    "missing: a source needs path (a folder or .vcf file) or carddav (a server URL)".into(),
                    Some("path = \"/path/to/vdir-or-file.vcf\", or carddav = \"https://cloud.example.org/remote.php/dav\"".into()),
                ));
            }
            (Some(path_spanned), None) => {
                if let Some(k) = source.carddav_only_key() {
                    return Err(invalid(
                        Some(source_span.clone()),
                        key(k),
                        format!("{k} is a key of a CardDAV source, and this one reads a path"),
                        Some("remove it, or replace path with carddav = \"https://…\"".into()),
                    ));
                }
                let path_text = path_spanned.get_ref();
                if path_text.trim().is_empty() {
                    return Err(invalid(
                        Some(path_spanned.span()),
                        key("path"),
                        "must not be empty".into(),
                        Some(
                            "the vdir directory, folder of .vcf files, or .vcf file to read".into(),
                        ),
                    ));
                }
                let path = resolve_path(path_text, &base);
                if source_paths == SourcePaths::MustBeReadable
                    && let Some((message, hint)) = source_path_problem(&path)
                {
                    return Err(invalid(
                        Some(path_spanned.span()),
                        key("path"),
                        message,
                        Some(hint),
                    ));
                }
                (path, None)
            }
            (None, Some(url)) => {
                let carddav = carddav_config(source, url, &base, source_paths, &key, &invalid)?;
                (PathBuf::from(&carddav.url), Some(carddav))
            }
        };
        let name = match &source.name {
            Some(name) if name.get_ref().trim().is_empty() => {
                return Err(invalid(
                    Some(name.span()),
                    key("name"),
                    "must not be empty".into(),
                    Some("remove it to use the folder or file name".into()),
                ));
            }
            Some(name) => name.get_ref().trim().to_owned(),
            None if carddav.is_some() => {
                return Err(invalid(
                    Some(source_span.clone()),
                    key("name"),
                    "a CardDAV source needs a name".into(),
                    Some("e.g. name = \"nextcloud\": status and logs call it so, and its systemd credential is carddav-NAME".into()),
                ));
            }
            None => default_source_name(&path),
        };
        if sources.iter().any(|s| s.name == name) {
            let span = source
                .name
                .as_ref()
                .map_or(source_span.clone(), Spanned::span);
            return Err(invalid(
                Some(span),
                key("name"),
                format!("another source is already called {name:?}"),
                Some("give each [[source]] a distinct name = \"…\"".into()),
            ));
        }
        let phone_types = lowercase_types(&source.phone_types, &key("phone_types"), &invalid)?;
        let skip_phone_types = match &source.skip_phone_types {
            Some(types) => lowercase_types(types, &key("skip_phone_types"), &invalid)?,
            None => CardFilter::default().skip_phone_types,
        };
        let carddav = carddav.map(|mut c| {
            if let PasswordSource::Credential(credential) = &mut c.password {
                *credential = format!("carddav-{name}");
            }
            c
        });
        sources.push(SourceConfig {
            name,
            path,
            carddav,
            filter: CardFilter {
                include_categories: source.include_categories.clone(),
                exclude_categories: source.exclude_categories.clone(),
                phone_types,
                skip_phone_types,
            },
        });
    }

    let mut safety = DeleteLimits::default();
    if let Some(raw) = &raw.safety {
        if let Some(max) = raw.max_deletes {
            safety.max_deletes = max;
        }
        if let Some(fraction) = &raw.max_delete_fraction {
            let value = *fraction.get_ref();
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(
                    Some(fraction.span()),
                    "safety.max_delete_fraction".into(),
                    format!("{value} is not a fraction between 0 and 1"),
                    Some("e.g. 0.2 holds a pass that would delete more than 20% of the synced contacts".into()),
                ));
            }
            safety.max_delete_fraction = value;
        }
        if let Some(count) = &raw.fraction_min_contacts {
            safety.fraction_min_contacts = usize::try_from(*count.get_ref())
                .ok()
                .filter(|n| *n <= 1_000_000)
                .ok_or_else(|| {
                    invalid(
                        Some(count.span()),
                        "safety.fraction_min_contacts".into(),
                        format!("{} is not a count from 0 to 1000000", count.get_ref()),
                        Some("e.g. 10: books of fewer synced contacts are held only when a pass would delete all of them".into()),
                    )
                })?;
        }
    }

    let telegram = match &raw.telegram {
        Some(raw) => Some(telegram_config(raw, &base, &invalid)?),
        None => None,
    };
    let mut watch = WatchConfig::default();
    if let Some(raw_watch) = &raw.watch {
        watch.debounce_ms = duration_key(
            &raw_watch.debounce,
            "watch.debounce",
            watch.debounce_ms,
            &DEBOUNCE,
            &invalid,
        )?;
        watch.rescan_interval = duration_key(
            &raw_watch.rescan_interval,
            "watch.rescan_interval",
            watch.rescan_interval,
            &RESCAN_INTERVAL,
            &invalid,
        )?;
        watch.poll = raw_watch.poll.unwrap_or(false);
    }
    let mut log = LogConfig::default();
    if let Some(raw_log) = &raw.log {
        log.target = raw_log.target.unwrap_or(LogTarget::Auto);
        log.show_personal_data = raw_log.show_personal_data.unwrap_or(false);
        if let Some(level) = &raw_log.level {
            if tracing_subscriber::EnvFilter::try_new(level.get_ref()).is_err() {
                return Err(invalid(
                    Some(level.span()),
                    "log.level".into(),
                    format!("{:?} is not a log filter", level.get_ref()),
                    Some("e.g. \"info\", \"debug\", \"info,contactsyncd=debug\"".into()),
                ));
            }
            log.level = level.get_ref().clone();
        }
    }
    let shutdown_timeout = duration_key(
        &raw.shutdown_timeout,
        "shutdown_timeout",
        10,
        &SHUTDOWN_TIMEOUT,
        &invalid,
    )?;
    let whatsapp = match &raw.whatsapp {
        Some(raw) => Some(whatsapp_config(raw, &base, &invalid)?),
        None => None,
    };

    Ok(Config {
        file: path.to_owned(),
        state_dir,
        default_region,
        sources,
        safety,
        watch,
        log,
        shutdown_timeout,
        telegram,
        whatsapp,
    })
}

/// What to do about a configuration file that cannot be read.
fn read_hint(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::NotFound => format!(
            "check the path given to --config (a relative path starts at the current directory); without --config, contactsyncd looks in {}. `contactsyncd generate example-config` prints an example to start from",
            search_paths(None)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ErrorKind::PermissionDenied => "the file and every directory above it must be readable by the user contactsyncd runs as (e.g. chmod 0644; keep secrets in api_hash_file / token_file or systemd credentials instead)".to_owned(),
        ErrorKind::IsADirectory => "--config takes the file itself, e.g. DIR/config.toml".to_owned(),
        ErrorKind::InvalidData => "the file must be UTF-8 text".to_owned(),
        _ => "pass --config PATH with a readable TOML file".to_owned(),
    }
}

/// The tables of the file, as written, with the `Raw*` struct of each.
const TABLES: &[&str] = &["source", "safety", "watch", "log", "telegram", "whatsapp"];
/// The tables written `[[name]]`, once per entry.
const ARRAY_TABLES: &[&str] = &["source"];

/// The keys a table accepts (`""`: the top level), read off the serde definitions so the
/// hints never drift from the schema.
fn keys_of_table(table: &str) -> &'static [&'static str] {
    match table {
        "" => keys_of::<RawConfig>(),
        "source" => keys_of::<RawSource>(),
        "safety" => keys_of::<RawSafety>(),
        "watch" => keys_of::<RawWatch>(),
        "log" => keys_of::<RawLog>(),
        "telegram" => keys_of::<RawTelegram>(),
        "whatsapp" => keys_of::<RawWhatsApp>(),
        _ => &[],
    }
}

/// The field names a `#[derive(Deserialize)]` struct declares: a deserializer that only
/// records what `deserialize_struct` is asked for.
fn keys_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct FieldNames<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// serde's messages name Rust's types ("expected i64", "expected usize"): said in the
/// user's words instead.
fn plain_types(message: &str) -> String {
    let mut text = message.to_owned();
    for (rust, plain) in [
        ("usize", "a whole number, 0 or more"),
        ("u64", "a whole number, 0 or more"),
        ("u32", "a whole number, 0 or more"),
        ("u16", "a whole number, 0 or more"),
        ("u8", "a whole number, 0 or more"),
        ("isize", "a whole number"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("i16", "a whole number"),
        ("i8", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
    ] {
        text = text.replace(&format!("expected {rust}"), &format!("expected {plain}"));
    }
    text
}

/// Where the user finds the example configuration, every key documented: the package's
/// copy when it is installed, else the command that prints it (a checkout path means
/// nothing to a user of the package or of `cargo install`).
pub fn example_config_hint() -> String {
    if Path::new(INSTALLED_EXAMPLE).is_file() {
        format!("the example configuration {INSTALLED_EXAMPLE} documents every key")
    } else {
        "`contactsyncd generate example-config` prints the example configuration, every key documented".to_owned()
    }
}

/// Where the package installs the example configuration.
pub const INSTALLED_EXAMPLE: &str = "/usr/share/doc/contactsyncd/examples/contactsyncd.toml";

/// The example configuration of the checkout, every key documented: it reads the
/// example address book and keeps its state in `target/` (README, Quick start).
pub const EXAMPLE: &str = include_str!("../config/contactsyncd.toml");

/// One key of the configuration as the example documents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// `""` for the top level, else the table (`source`, `telegram`, …).
    pub table: &'static str,
    pub key: &'static str,
    /// The example's comment lines above the key, without `# `.
    pub doc: Vec<String>,
    /// The key's line in the example, uncommented (`max_deletes = 50`).
    pub example: String,
}

/// Every key the configuration accepts (the schema's own field names, as validation
/// reads them), with the example configuration's text for it: what `man contactsyncd.toml`
/// shows. A key the example does not document has an empty `doc` (a test forbids that).
pub fn key_docs() -> Vec<KeyDoc> {
    // The example's lines per (table, key): the table a line is in follows the last
    // `[table]` / `[[table]]` header, commented out or not.
    let mut found: Vec<(String, String, Vec<String>, String)> = Vec::new();
    let mut table = String::new();
    let mut comments: Vec<String> = Vec::new();
    let mut intro: Vec<String> = Vec::new();
    let example = example_for(ExampleFor::User).unwrap_or_else(|| EXAMPLE.to_owned());
    for line in example.lines() {
        let bare = line.trim_start_matches('#').trim();
        let header = bare
            .strip_prefix("[[")
            .and_then(|r| r.strip_suffix("]]"))
            .or_else(|| bare.strip_prefix('[').and_then(|r| r.strip_suffix(']')));
        if let Some(name) = header.filter(|n| TABLES.contains(n)) {
            table = name.to_owned();
            // The text above a header introduces the table, and its first key.
            intro = std::mem::take(&mut comments);
            continue;
        }
        let key = bare
            .split_once(" = ")
            .map(|(k, _)| k.trim())
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        if let Some(key) = key
            && keys_of_table(&table).contains(&key)
        {
            let example = bare.split(" # ").next().unwrap_or(bare).trim().to_owned();
            let mut doc = std::mem::take(&mut comments);
            // Keys written one under the other share the text above them
            // (`api_hash` / `api_hash_file`).
            if doc.is_empty() {
                doc = match found.last() {
                    Some((t, _, previous, _)) if *t == table => previous.clone(),
                    _ => intro.clone(),
                };
            }
            found.push((table.clone(), key.to_owned(), doc, example));
            continue;
        }
        match line.strip_prefix('#') {
            Some(text) if !text.trim().is_empty() => comments.push(text.trim().to_owned()),
            _ => comments.clear(),
        }
    }
    let mut docs = Vec::new();
    for table in std::iter::once("").chain(TABLES.iter().copied()) {
        for key in keys_of_table(table) {
            if TABLES.contains(key) && table.is_empty() {
                continue;
            }
            let (doc, example) = found
                .iter()
                .find(|(t, k, _, _)| t == table && k == key)
                .map(|(_, _, doc, example)| (doc.clone(), example.clone()))
                .unwrap_or_default();
            docs.push(KeyDoc {
                table,
                key,
                doc,
                example,
            });
        }
    }
    docs
}

/// Who an example configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExampleFor {
    /// `~/.config/contactsyncd/config.toml`: the state in the default place, the source a
    /// vdir in the home directory.
    User,
    /// `/etc/contactsyncd/config.toml` of the package: the state where the system unit keeps
    /// it, the source a path outside the home directories.
    System,
}

/// The checkout's lines that make no sense outside it.
const CHECKOUT_STATE_NOTE: &str = "# THIS EXAMPLE keeps its state inside the checkout";
const CHECKOUT_STATE_DIR: &str = "state_dir = \"../target/example-state\"";
const CHECKOUT_SOURCE: &str = "path = \"../examples/addressbook\"";
/// The source path of the package's /etc configuration (packaging/deb checks for it).
pub const SYSTEM_SOURCE_PLACEHOLDER: &str = "/path/to/your/addressbook";

/// The example configuration without its checkout-only lines (the state kept in
/// `target/`, the example address book), for a user or the package to start from.
/// `None` if the example no longer has those lines (a test keeps them).
pub fn example_for(target: ExampleFor) -> Option<String> {
    let start = EXAMPLE.find(CHECKOUT_STATE_NOTE)?;
    let end = EXAMPLE[start..].find(CHECKOUT_STATE_DIR)? + start + CHECKOUT_STATE_DIR.len();
    let (state_dir, source, header) = match target {
        ExampleFor::User => (
            "# state_dir = \"~/.local/state/contactsyncd\"",
            "path = \"~/.contacts/personal\"   # edit: your vdir, folder of .vcf files, or export",
            "",
        ),
        ExampleFor::System => (
            "# state_dir = \"/var/lib/contactsyncd\"",
            "path = \"/path/to/your/addressbook\"   # edit: a vdir or an export the service can read",
            "# Installed by the contactsyncd package as /etc/contactsyncd/config.toml (the system\n\
             # unit's configuration; an upgrade keeps your edits). Set [[source]] path and\n\
             # [telegram] (its api_hash in /etc/contactsyncd/telegram-api-hash, see\n\
             # contactsyncd.service), then: contactsyncd check-config --config /etc/contactsyncd/config.toml\n\
             #\n",
        ),
    };
    let text = format!(
        "{header}{}{state_dir}{}",
        &EXAMPLE[..start],
        &EXAMPLE[end..]
    );
    text.contains(CHECKOUT_SOURCE)
        .then(|| text.replacen(CHECKOUT_SOURCE, source, 1))
}

/// A hint for an error the TOML reader reports at `key` (as [`key_at`] names it).
fn syntax_hint(key: &str, message: &str) -> Option<String> {
    // `source[2].path` → table `source`; `batch_size` → the top level.
    let table = key
        .rsplit_once('.')
        .map_or("", |(table, _)| table.split('[').next().unwrap_or(table));
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        return Some(misplaced_key_hint(field, table).unwrap_or_else(|| {
            format!(
                "remove the key or fix its spelling; {}",
                example_config_hint()
            )
        }));
    }
    // `[[watch]]`: serde reads the array as a struct written as a list, and complains about
    // whatever its first field then gets; the key, `watch[1]`, tells what happened.
    if let Some((name, _)) = key.split_once('[')
        && TABLES.contains(&name)
        && !ARRAY_TABLES.contains(&name)
    {
        return Some(format!(
            "write [{name}] with single brackets: there is one [{name}] table"
        ));
    }
    if !message.starts_with("invalid type") {
        return None;
    }
    if ARRAY_TABLES.contains(&key) && message.contains("expected a sequence") {
        return Some(format!(
            "write [[{key}]] with double brackets: one [[{key}]] block per entry, e.g. per address book"
        ));
    }
    Some(format!(
        "the key wants another type of value; {}",
        example_config_hint()
    ))
}

/// Where a key that `table` does not take belongs, when another table (or the top level)
/// takes it: in TOML every key after a `[table]` header belongs to that table.
fn misplaced_key_hint(field: &str, table: &str) -> Option<String> {
    if !table.is_empty() && keys_of_table("").contains(&field) && !TABLES.contains(&field) {
        return Some(format!(
            "`{field}` is a top-level key: move it above the first [table] (every key after a [table] header belongs to that table)"
        ));
    }
    let homes: Vec<String> = TABLES
        .iter()
        .filter(|t| **t != table && keys_of_table(t).contains(&field))
        .map(|t| {
            if ARRAY_TABLES.contains(t) {
                format!("[[{t}]]")
            } else {
                format!("[{t}]")
            }
        })
        .collect();
    let which = match homes.len() {
        0 => return None,
        1 => "that header",
        _ => "the header of the one you mean",
    };
    Some(format!(
        "`{field}` belongs in {}: move it below {which}",
        homes.join(" or ")
    ))
}

/// Why a source cannot be read now, and what to do, or `None` when it can. Only
/// `check-config` asks: every other command reads such a source as unknown.
fn source_path_problem(path: &Path) -> Option<(String, String)> {
    use std::io::ErrorKind;
    let shown = path.display();
    let later = "the other commands and the daemon run anyway: they count the source as unknown, keep its contacts and delete nothing of it until it can be read";
    let unreadable = |err: std::io::Error, what: &str| {
        Some(if err.kind() == ErrorKind::PermissionDenied {
            (
                format!("{shown}: permission denied ({what})"),
                format!(
                    "give the user contactsyncd runs as read access to it and search (x) access to every directory above it; the system service runs as its own user and cannot enter a home directory of mode 0700 or 0750: for an address book in your home use the user unit (README, \"Running as a service\"). Meanwhile {later}"
                ),
            )
        } else {
            (
                format!("{shown} cannot be read ({what}): {err}"),
                later.to_owned(),
            )
        })
    };
    match std::fs::metadata(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => Some((
            format!("{shown} does not exist"),
            format!(
                "point it at a vdir directory, a folder of .vcf files or one .vcf file (relative paths start at the config file's directory). If it is on a drive or share that mounts later, {later}"
            ),
        )),
        Err(err) => unreadable(err, "looking it up"),
        Ok(meta) if meta.is_dir() => std::fs::read_dir(path)
            .err()
            .and_then(|err| unreadable(err, "listing the directory")),
        Ok(_) => std::fs::File::open(path)
            .err()
            .and_then(|err| unreadable(err, "opening the file")),
    }
}

/// A secret from the key, else the file, else the systemd credential `credential`.
impl RawSource {
    /// The first key set here that only a CardDAV source may have.
    fn carddav_only_key(&self) -> Option<&'static str> {
        [
            ("username", self.username.is_some()),
            ("password_file", self.password_file.is_some()),
            ("password_command", self.password_command.is_some()),
            ("address_books", self.address_books.is_some()),
            ("poll_interval", self.poll_interval.is_some()),
            ("full_check_interval", self.full_check_interval.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("verify_fingerprint", self.verify_fingerprint.is_some()),
            ("google", self.google.is_some()),
            ("auth", self.auth.is_some()),
            ("oauth_client_id", self.oauth_client_id.is_some()),
            (
                "oauth_client_secret_file",
                self.oauth_client_secret_file.is_some(),
            ),
            ("oauth_auth_url", self.oauth_auth_url.is_some()),
            ("oauth_token_url", self.oauth_token_url.is_some()),
            ("oauth_scope", self.oauth_scope.is_some()),
            ("bearer_token_command", self.bearer_token_command.is_some()),
        ]
        .into_iter()
        .find_map(|(key, set)| set.then_some(key))
    }
}

const POLL_INTERVAL: DurationRange = DurationRange {
    millis: false,
    min: 10,
    max: 86_400,
    example: "\"5m\"",
};

const FULL_CHECK_INTERVAL: DurationRange = DurationRange {
    millis: false,
    min: 60,
    max: 30 * 86_400,
    example: "\"1d\"",
};

/// `verify_fingerprint`: 32 bytes as hex, with or without colons, in either case; `None`
/// when it is not that (SHA-1 and MD5 fingerprints, which vdirsyncer once took, are too weak
/// a pin).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}

/// The CardDAV keys of a `[[source]]`: the shape only, offline; the server is asked by
/// `check-source` and the sync, and the password is read only then.
fn carddav_config(
    source: &RawSource,
    url: &Spanned<String>,
    base: &Path,
    source_paths: SourcePaths,
    key: &impl Fn(&str) -> String,
    invalid: &impl Fn(Option<Range<usize>>, String, String, Option<String>) -> ConfigError,
) -> Result<CardDavConfig, ConfigError> {
    let text = url.get_ref().trim();
    let parsed = reqwest::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    let Some(parsed) = parsed else {
        return Err(invalid(
            Some(url.span()),
            key("carddav"),
            format!("{text:?} is not an http or https URL"),
            Some("the server's address, e.g. \"https://cloud.example.org/remote.php/dav\" (Nextcloud) or \"https://contacts.icloud.com\"".into()),
        ));
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            Some(url.span()),
            key("carddav"),
            "the URL holds a user name or password".into(),
            Some("put the user in username = \"…\" and the password in password_file, password_command or the systemd credential".into()),
        ));
    }
    let username = match &source.username {
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(invalid(
                Some(name.span()),
                key("username"),
                "must not be empty".into(),
                Some("remove it for a server without authentication".into()),
            ));
        }
        Some(name) => Some(name.get_ref().trim().to_owned()),
        None => None,
    };
    let password = match (&source.password_file, &source.password_command) {
        (Some(_), Some(command)) => {
            return Err(invalid(
                Some(command.span()),
                key("password_command"),
                "give password_file or password_command, not both".into(),
                None,
            ));
        }
        (Some(file), None) => PasswordSource::File(file_key(
            file,
            key("password_file"),
            "the password (mode 0600)",
            base,
            source_paths,
            invalid,
        )?),
        (None, Some(command)) => PasswordSource::Command(command_key(
            command,
            key("password_command"),
            "[\"pass\", \"show\", \"carddav\"]",
            invalid,
        )?),
        // The source's name is known only later; see where sources are pushed.
        (None, None) => PasswordSource::Credential(String::new()),
    };
    if username.is_none() && !matches!(password, PasswordSource::Credential(_)) {
        return Err(invalid(
            Some(url.span()),
            key("username"),
            "a password is given but no username".into(),
            Some("add username = \"…\"".into()),
        ));
    }
    let mut address_books = Vec::new();
    for book in source.address_books.iter().flatten() {
        let name = book.get_ref().trim();
        if name.is_empty() {
            return Err(invalid(
                Some(book.span()),
                key("address_books"),
                "an address book name must not be empty".into(),
                Some("the names `contactsyncd check-source` lists, or remove the key to read every address book".into()),
            ));
        }
        address_books.push(name.to_owned());
    }
    let poll_interval = duration_key(
        &source.poll_interval,
        &key("poll_interval"),
        300,
        &POLL_INTERVAL,
        invalid,
    )?;
    let full_check_interval = duration_key(
        &source.full_check_interval,
        &key("full_check_interval"),
        86_400,
        &FULL_CHECK_INTERVAL,
        invalid,
    )?;
    let ca_file = source
        .ca_file
        .as_ref()
        .map(|file| {
            file_key(
                file,
                key("ca_file"),
                "the certificate (or CA) the server's certificate is signed with, in PEM",
                base,
                source_paths,
                invalid,
            )
        })
        .transpose()?;
    let verify_fingerprint = match &source.verify_fingerprint {
        Some(pin) if parse_fingerprint(pin.get_ref()).is_none() => {
            return Err(invalid(
                Some(pin.span()),
                key("verify_fingerprint"),
                "must be a SHA-256 fingerprint: 64 hex digits, colons allowed".into(),
                Some("`openssl s_client -connect HOST:443 </dev/null | openssl x509 -noout -fingerprint -sha256` prints it".into()),
            ));
        }
        Some(pin) => Some(pin.get_ref().trim().to_owned()),
        None => None,
    };
    if verify_fingerprint.is_some() && parsed.scheme() != "https" {
        return Err(invalid(
            Some(url.span()),
            key("verify_fingerprint"),
            "a certificate pin needs an https URL".into(),
            None,
        ));
    }
    let bearer = bearer_config(source, url, &username, base, source_paths, key, invalid)?;
    Ok(CardDavConfig {
        url: text.to_owned(),
        username,
        password,
        address_books,
        poll_interval,
        full_check_interval,
        ca_file,
        verify_fingerprint,
        bearer,
    })
}

/// The bearer-token keys of a CardDAV source: `google`, `auth = "oauth2"` and its `oauth_*`
/// keys, or `bearer_token_command`; none of them with a user name or password.
fn bearer_config(
    source: &RawSource,
    url: &Spanned<String>,
    username: &Option<String>,
    base: &Path,
    source_paths: SourcePaths,
    key: &impl Fn(&str) -> String,
    invalid: &impl Fn(Option<Range<usize>>, String, String, Option<String>) -> ConfigError,
) -> Result<Option<BearerSource>, ConfigError> {
    if let Some(auth) = &source.auth
        && auth.get_ref().trim() != "oauth2"
    {
        return Err(invalid(
            Some(auth.span()),
            key("auth"),
            format!("{:?} is not an authentication contactsyncd knows", auth.get_ref()),
            Some("auth = \"oauth2\" for OAuth 2.0; remove it for a user name and password (Basic or Digest, as the server asks)".into()),
        ));
    }
    let oauth = source.google.is_some() || source.auth.is_some();
    let oauth_keys = [
        (
            "oauth_client_id",
            source.oauth_client_id.as_ref().map(Spanned::span),
        ),
        (
            "oauth_client_secret_file",
            source.oauth_client_secret_file.as_ref().map(Spanned::span),
        ),
        (
            "oauth_auth_url",
            source.oauth_auth_url.as_ref().map(Spanned::span),
        ),
        (
            "oauth_token_url",
            source.oauth_token_url.as_ref().map(Spanned::span),
        ),
        (
            "oauth_scope",
            source.oauth_scope.as_ref().map(Spanned::span),
        ),
    ];
    if !oauth && let Some((k, Some(span))) = oauth_keys.iter().find(|(_, s)| s.is_some()) {
        return Err(invalid(
            Some(span.clone()),
            key(k),
            format!("{k} is a key of OAuth 2.0, and this source does not use it"),
            Some("add auth = \"oauth2\" (or google = \"you@gmail.com\" for Google Contacts), or remove it".into()),
        ));
    }
    let command = source.bearer_token_command.as_ref();
    if oauth && let Some(command) = command {
        return Err(invalid(
            Some(command.span()),
            key("bearer_token_command"),
            "give OAuth 2.0 (google or auth = \"oauth2\") or bearer_token_command, not both".into(),
            Some("bearer_token_command is for a program that already hands out tokens (oama, mutt_oauth2.py); with OAuth 2.0 here, `contactsyncd authorize` gets them".into()),
        ));
    }
    if !oauth && command.is_none() {
        return Ok(None);
    }
    let password_key = [
        ("username", username.is_some()),
        ("password_file", source.password_file.is_some()),
        ("password_command", source.password_command.is_some()),
    ]
    .into_iter()
    .find_map(|(k, set)| set.then_some(k));
    if let Some(k) = password_key {
        return Err(invalid(
            Some(url.span()),
            key(k),
            "a source that logs in with a bearer token takes no user name or password".into(),
            Some(format!("remove {k}")),
        ));
    }
    if let Some(command) = command {
        return Ok(Some(BearerSource::Command(command_key(
            command,
            key("bearer_token_command"),
            "[\"oama\", \"access\", \"me@example.org\"]; its first line of output is the token",
            invalid,
        )?)));
    }
    let google = match &source.google {
        Some(account) if !account.get_ref().contains('@') => {
            return Err(invalid(
                Some(account.span()),
                key("google"),
                format!("{:?} is not a Google account's address", account.get_ref()),
                Some(
                    "the address you log in to Google with, e.g. google = \"me@gmail.com\"".into(),
                ),
            ));
        }
        Some(account) => Some(account.get_ref().trim().to_owned()),
        None => None,
    };
    let client_hint = if google.is_some() {
        "the Client ID of the \"Desktop app\" OAuth client you created in the Google Cloud console (README, \"Google Contacts\")"
    } else {
        "the client id the authorization server gave your client"
    };
    let client_id = match &source.oauth_client_id {
        Some(id) if !id.get_ref().trim().is_empty() => id.get_ref().trim().to_owned(),
        other => {
            return Err(invalid(
                Some(other.as_ref().map_or(url.span(), Spanned::span)),
                key("oauth_client_id"),
                "missing: OAuth 2.0 needs the id of your OAuth client".into(),
                Some(format!("oauth_client_id = \"…\": {client_hint}")),
            ));
        }
    };
    let client_secret_file = match &source.oauth_client_secret_file {
        Some(file) => Some(file_key(
            file,
            key("oauth_client_secret_file"),
            "the client secret (mode 0600)",
            base,
            source_paths,
            invalid,
        )?),
        // Google's token endpoint refuses a Desktop app client without its secret.
        None if google.is_some() => {
            return Err(invalid(
                Some(url.span()),
                key("oauth_client_secret_file"),
                "missing: Google wants the client secret of your OAuth client".into(),
                Some("oauth_client_secret_file = \"/etc/contactsyncd/google-client-secret\": a file holding the Client secret shown beside the Client ID".into()),
            ));
        }
        None => None,
    };
    let endpoint = |k: &str, given: &Option<Spanned<String>>, preset: &str| {
        let Some(given) = given else {
            if google.is_some() {
                return Ok(preset.to_owned());
            }
            return Err(invalid(
                Some(url.span()),
                key(k),
                format!("missing: auth = \"oauth2\" needs {k}"),
                Some("the endpoint's https URL, as the authorization server documents it".into()),
            ));
        };
        let text = given.get_ref().trim();
        let parsed = reqwest::Url::parse(text).ok();
        // https, or plain http only to this machine (a local authorization server).
        let acceptable = parsed.as_ref().is_some_and(|u| {
            u.scheme() == "https"
                || (u.scheme() == "http"
                    && matches!(u.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback()))
        });
        if !acceptable {
            return Err(invalid(
                Some(given.span()),
                key(k),
                format!("{text:?} is not an https URL"),
                Some("OAuth 2.0 endpoints are https (plain http only to 127.0.0.1)".into()),
            ));
        }
        Ok(text.to_owned())
    };
    let auth_url = endpoint("oauth_auth_url", &source.oauth_auth_url, GOOGLE_AUTH_URL)?;
    let token_url = endpoint("oauth_token_url", &source.oauth_token_url, GOOGLE_TOKEN_URL)?;
    let scope = match &source.oauth_scope {
        Some(scope) => Some(scope.get_ref().trim().to_owned()).filter(|s| !s.is_empty()),
        None => google.as_ref().map(|_| GOOGLE_SCOPE.to_owned()),
    };
    Ok(Some(BearerSource::OAuth(OAuthConfig {
        google,
        client_id,
        client_secret_file,
        auth_url,
        token_url,
        scope,
    })))
}

fn secret(
    value: &Option<String>,
    file: &Option<Spanned<String>>,
    credential: &'static str,
    key: &str,
    span: Range<usize>,
    base: &Path,
    invalid: &impl Fn(Option<Range<usize>>, String, String, Option<String>) -> ConfigError,
) -> Result<Secret, ConfigError> {
    if let Some(value) = value {
        return Ok(Secret {
            value: value.trim().to_owned(),
            origin: SecretOrigin::Inline,
        });
    }
    if let Some(file) = file {
        let path = resolve_path(file.get_ref(), base);
        return read_secret_file(&path)
            .map(|s| Secret {
                value: s.trim().to_owned(),
                origin: SecretOrigin::File(path.clone()),
            })
            .map_err(|err| {
                invalid(
                    Some(file.span()),
                    format!("{key}_file"),
                    format!("cannot read {}: {err}", path.display()),
                    None,
                )
            });
    }
    read_credential(credential)
        .map(|value| Secret {
            value,
            origin: SecretOrigin::Credential(credential),
        })
        .ok_or_else(|| {
            invalid(
                Some(span),
                key.to_owned(),
                format!("not set: give {key}, {key}_file, or the systemd credential {credential}"),
                None,
            )
        })
}

/// The systemd credential `name` (`LoadCredential=NAME:…` puts it in
/// `$CREDENTIALS_DIRECTORY`), trimmed; a blank one is not set: the units give every
/// credential a blank `SetCredential=` fallback, so that a file the configuration does not
/// need may be missing.
fn read_credential(name: &str) -> Option<String> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let value = read_secret_file(&PathBuf::from(dir).join(name)).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn whatsapp_config(
    raw: &Spanned<RawWhatsApp>,
    base: &Path,
    invalid: &impl Fn(Option<Range<usize>>, String, String, Option<String>) -> ConfigError,
) -> Result<WhatsAppConfig, ConfigError> {
    let span = raw.span();
    let raw = raw.get_ref();
    let token = secret(
        &raw.token,
        &raw.token_file,
        "whapi-token",
        "whatsapp.token",
        span,
        base,
        invalid,
    )?;
    let base_url = match &raw.base_url {
        Some(url) => {
            let text = url.get_ref().trim().trim_end_matches('/').to_owned();
            if !(text.starts_with("https://") || text.starts_with("http://")) {
                return Err(invalid(
                    Some(url.span()),
                    "whatsapp.base_url".into(),
                    format!("{text:?} is not an http(s) URL"),
                    Some("the default is https://gate.whapi.cloud".into()),
                ));
            }
            text
        }
        None => "https://gate.whapi.cloud".to_owned(),
    };
    let requests_per_second = match &raw.requests_per_second {
        Some(rate) if REQUESTS_PER_SECOND.contains(rate.get_ref()) => *rate.get_ref(),
        Some(rate) => {
            return Err(invalid(
                Some(rate.span()),
                "whatsapp.requests_per_second".into(),
                format!(
                    "must be from {} to {} (at least one request every 100 s)",
                    REQUESTS_PER_SECOND.start(),
                    REQUESTS_PER_SECOND.end()
                ),
                Some("1 is gentle; WhatsApp's anti-spam dislikes bursts".into()),
            ));
        }
        None => 1.0,
    };
    Ok(WhatsAppConfig {
        base_url,
        token,
        requests_per_second,
        request_timeout: duration_key(
            &raw.request_timeout,
            "whatsapp.request_timeout",
            30,
            &REQUEST_TIMEOUT,
            invalid,
        )?,
        reconcile_interval: duration_key(
            &raw.reconcile_interval,
            "whatsapp.reconcile_interval",
            6 * 3600,
            &RECONCILE_INTERVAL,
            invalid,
        )?,
        on_remote_delete: raw.on_remote_delete.unwrap_or(OnRemoteDelete::Reimport),
        adopt_existing: raw.adopt_existing.unwrap_or(false),
    })
}

fn telegram_config(
    raw: &Spanned<RawTelegram>,
    base: &Path,
    invalid: &impl Fn(Option<Range<usize>>, String, String, Option<String>) -> ConfigError,
) -> Result<TelegramConfig, ConfigError> {
    let span = raw.span();
    let raw = raw.get_ref();
    let api_id = i32::try_from(*raw.api_id.get_ref())
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            invalid(
                Some(raw.api_id.span()),
                "telegram.api_id".into(),
                "must be the positive number my.telegram.org shows".into(),
                Some("create an application at https://my.telegram.org/apps".into()),
            )
        })?;
    let (api_hash, origin) = match (&raw.api_hash, &raw.api_hash_file) {
        (Some(hash), _) => (hash.trim().to_owned(), SecretOrigin::Inline),
        (None, Some(file)) => {
            let path = resolve_path(file.get_ref(), base);
            let hash = read_secret_file(&path)
                .map_err(|err| {
                    invalid(
                        Some(file.span()),
                        "telegram.api_hash_file".into(),
                        format!("cannot read {}: {err}", path.display()),
                        None,
                    )
                })?
                .trim()
                .to_owned();
            (hash, SecretOrigin::File(path))
        }
        (None, None) => match read_credential("telegram-api-hash") {
            Some(hash) => (hash, SecretOrigin::Credential("telegram-api-hash")),
            None => {
                return Err(invalid(
                        Some(span),
                        "telegram.api_hash".into(),
                        "no api_hash: set api_hash, api_hash_file, or the systemd credential telegram-api-hash".into(),
                        Some("the hash my.telegram.org shows next to api_id".into()),
                    ));
            }
        },
    };
    if api_hash.len() != 32 || !api_hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid(
            Some(span),
            "telegram.api_hash".into(),
            "must be the 32 hexadecimal characters my.telegram.org shows".into(),
            None,
        ));
    }
    let batch_size = match &raw.batch_size {
        Some(size) => usize::try_from(*size.get_ref())
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| {
                invalid(
                    Some(size.span()),
                    "telegram.batch_size".into(),
                    "must be between 1 and 500 (Telegram's own clients send 500 at most)".into(),
                    None,
                )
            })?,
        None => 100,
    };
    Ok(TelegramConfig {
        api_id,
        api_hash: Secret {
            value: api_hash,
            origin,
        },
        phone: raw.phone.clone(),
        batch_size,
        request_timeout: duration_key(
            &raw.request_timeout,
            "telegram.request_timeout",
            30,
            &REQUEST_TIMEOUT,
            invalid,
        )?,
        reconcile_interval: duration_key(
            &raw.reconcile_interval,
            "telegram.reconcile_interval",
            6 * 3600,
            &RECONCILE_INTERVAL,
            invalid,
        )?,
        on_remote_delete: raw.on_remote_delete.unwrap_or(OnRemoteDelete::Reimport),
        add_phone_privacy_exception: raw.add_phone_privacy_exception.unwrap_or(false),
    })
}

fn lowercase_types(
    types: &[Spanned<String>],
    key: &str,
    invalid: &impl Fn(Option<Range<usize>>, String, String, Option<String>) -> ConfigError,
) -> Result<Vec<String>, ConfigError> {
    types
        .iter()
        .map(|t| {
            let lower = t.get_ref().trim().to_ascii_lowercase();
            if KNOWN_PHONE_TYPES.contains(&lower.as_str()) {
                Ok(lower)
            } else {
                Err(invalid(
                    Some(t.span()),
                    key.to_owned(),
                    format!("unknown phone type {:?}", t.get_ref()),
                    Some(format!("one of: {}", KNOWN_PHONE_TYPES.join(", "))),
                ))
            }
        })
        .collect()
}

/// Where the system installation keeps its configuration, and its state: the units'
/// `StateDirectory=contactsyncd` (`contactsyncd/%i` for `/etc/contactsyncd/%i.toml`).
pub const SYSTEM_CONFIG_DIR: &str = "/etc/contactsyncd";
pub const SYSTEM_STATE_DIR: &str = "/var/lib/contactsyncd";

/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; the first entry if several); else, for
/// a configuration of the system installation, the system service's state
/// ([`system_state_dir`]), so that `status` from a shell reads what the service writes;
/// else `$XDG_STATE_HOME/contactsyncd`, else `~/.local/state/contactsyncd`.
pub fn default_state_dir_for(config_file: &Path) -> Option<PathBuf> {
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY") {
        let dirs = dirs.to_string_lossy().into_owned();
        if let Some(first) = dirs.split(':').find(|d| !d.is_empty()) {
            return Some(PathBuf::from(first));
        }
    }
    if let Some(system) = system_state_dir(config_file) {
        return Some(system);
    }
    xdg_dir("XDG_STATE_HOME", ".local/state").map(|dir| dir.join("contactsyncd"))
}

/// The state directory the system units give a configuration in `/etc/contactsyncd`:
/// `config.toml` → `/var/lib/contactsyncd`, `NAME.toml` → `/var/lib/contactsyncd/NAME`.
/// `None` for a configuration anywhere else.
pub fn system_state_dir(config_file: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(config_file).ok()?;
    let file = normalize_lexically(&absolute);
    if file.parent()? != Path::new(SYSTEM_CONFIG_DIR) {
        return None;
    }
    let state = PathBuf::from(SYSTEM_STATE_DIR);
    if file.file_name()? == "config.toml" {
        return Some(state);
    }
    let name = file.file_stem()?;
    (file.extension()? == "toml").then(|| state.join(name))
}

/// A secret file (or systemd credential): a regular file, read up to
/// `MAX_SECRET_FILE_BYTES`; a FIFO or `/dev/zero` given by mistake is refused, never read
/// from or waited on.
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    crate::regular_file::read_to_string_capped(path, crate::regular_file::MAX_SECRET_FILE_BYTES)
}

fn resolve_path(text: &str, base: &Path) -> PathBuf {
    let text = text.trim();
    let expanded = match (text.strip_prefix("~/"), home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if text == "~" => home_dir().unwrap_or_else(|| PathBuf::from(text)),
        _ => PathBuf::from(text),
    };
    let joined = if expanded.is_absolute() {
        expanded
    } else {
        std::path::absolute(base.join(&expanded)).unwrap_or_else(|_| base.join(expanded))
    };
    normalize_lexically(&joined)
}

/// `/etc/contactsyncd/../books` → `/etc/books`, without touching the file system (the path
/// may be a mount point that is not there yet).
fn normalize_lexically(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn default_source_name(path: &Path) -> String {
    path.file_stem()
        .or_else(|| path.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key a byte offset belongs to, read off the text: `[[source]]` tables are
/// numbered, so the third source's path is `source[3].path`.
fn key_at(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    let mut position = 0;
    for line in text.split_inclusive('\n') {
        let line_end = position + line.len();
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|t| t.split("]]").next())
            .map(str::trim)
        {
            let count = match array_counts.iter_mut().find(|(n, _)| n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    array_counts.push((name.to_owned(), 1));
                    1
                }
            };
            table = format!("{name}[{count}]");
        } else if let Some(name) = trimmed
            .strip_prefix('[')
            .and_then(|t| t.split(']').next())
            .map(str::trim)
        {
            table = name.to_owned();
        }
        if offset < line_end || line_end == text.len() {
            let key = trimmed
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                .filter(|k| !k.starts_with('['));
            return match (table.is_empty(), key) {
                (true, Some(key)) => key,
                (false, Some(key)) => format!("{table}.{key}"),
                (false, None) => table,
                (true, None) => "(top level)".to_owned(),
            };
        }
        position = line_end;
    }
    "(top level)".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn invalid(text: &str) -> Invalid {
        match parse(text, Path::new("/etc/contactsyncd/config.toml")) {
            Err(ConfigError::Invalid(invalid)) => *invalid,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[rstest]
    #[case::line_one("abc", 0, (1, 1))]
    #[case::second_line("a\nbc", 3, (2, 2))]
    #[case::multibyte("ä = 1\nx", 3, (1, 3))]
    fn locates_offsets(
        #[case] text: &str,
        #[case] offset: usize,
        #[case] expected: (usize, usize),
    ) {
        assert_eq!(line_column(text, offset), expected);
    }

    #[test]
    fn unknown_top_level_key_is_named_with_position() {
        let e = invalid("default_region = \"DE\"\ndefualt_region = \"DE\"\n");
        assert_eq!((e.line, e.column), (2, 1));
        assert_eq!(e.key, "defualt_region");
        assert!(e.message.contains("unknown field"), "{}", e.message);
        assert!(e.hint.is_some());
    }

    #[test]
    fn every_table_knows_its_keys() {
        assert!(keys_of_table("").contains(&"shutdown_timeout"));
        assert!(keys_of_table("safety").contains(&"max_deletes"));
        for table in TABLES {
            assert!(!keys_of_table(table).is_empty(), "{table}");
        }
    }

    /// A known key in the wrong table: the hint names where it belongs.
    #[rstest]
    #[case::top_level_key_in_a_source(
        "[[source]]\npath = \"/b\"\nshutdown_timeout = \"10s\"\n",
        "source[1].shutdown_timeout",
        "`shutdown_timeout` is a top-level key: move it above the first [table]"
    )]
    #[case::top_level_key_in_a_table(
        "[[source]]\npath = \"/b\"\n[watch]\ndefault_region = \"DE\"\n",
        "watch.default_region",
        "`default_region` is a top-level key"
    )]
    #[case::telegram_key_in_watch(
        "[[source]]\npath = \"/b\"\n[watch]\nbatch_size = 3\n",
        "watch.batch_size",
        "`batch_size` belongs in [telegram]: move it below that header"
    )]
    #[case::key_of_two_tables_at_top_level(
        "request_timeout = 5\n[[source]]\npath = \"/b\"\n",
        "request_timeout",
        "`request_timeout` belongs in [telegram] or [whatsapp]"
    )]
    #[case::source_key_in_a_table(
        "[[source]]\npath = \"/b\"\n[safety]\nexclude_categories = []\n",
        "safety.exclude_categories",
        "`exclude_categories` belongs in [[source]]"
    )]
    #[case::misspelt(
        "defualt_region = \"DE\"\n[[source]]\npath = \"/b\"\n",
        "defualt_region",
        "remove the key or fix its spelling"
    )]
    #[case::source_in_single_brackets(
        "default_region = \"DE\"\n[source]\npath = \"/b\"\n",
        "source",
        "write [[source]] with double brackets"
    )]
    #[case::watch_in_double_brackets(
        "[[source]]\npath = \"/b\"\n[[watch]]\npoll = true\n",
        "watch[1]",
        "write [watch] with single brackets"
    )]
    fn misplaced_keys_and_tables_get_a_hint(
        #[case] text: &str,
        #[case] key: &str,
        #[case] hint: &str,
    ) {
        let e = invalid(text);
        assert_eq!(e.key, key, "{e}");
        assert!(e.hint.as_deref().unwrap_or("").contains(hint), "{e}");
    }

    #[test]
    fn an_unreadable_file_names_the_os_error_once_and_hints() {
        use std::error::Error;
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = load(Some(&missing)).unwrap_err();
        let text = e.to_string();
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        assert!(e.source().is_none(), "the chain would print it again");
        assert!(
            text.contains("\nhint: check the path given to --config"),
            "{text}"
        );
        let text = load(Some(dir.path())).unwrap_err().to_string();
        assert!(text.contains("--config takes the file itself"), "{text}");
    }

    #[test]
    fn wrong_type_inside_second_source_names_the_source() {
        let dir = std::env::temp_dir();
        let text = format!(
            "[[source]]\npath = {p:?}\nname = \"a\"\n\n[[source]]\npath = {p:?}\nname = 7\n",
            p = dir.display().to_string()
        );
        let e = invalid(&text);
        assert_eq!(e.key, "source[2].name");
        assert_eq!(e.line, 7);
    }

    #[test]
    fn bad_region_points_at_the_value() {
        let e = invalid("default_region = \"UK\"\n");
        assert_eq!(e.key, "default_region");
        assert_eq!((e.line, e.column), (1, 18));
        assert!(e.message.contains("GB"), "{}", e.message);
    }

    #[test]
    fn missing_source_path_is_reported_by_the_check_only() {
        let text = "[[source]]\npath = \"/nonexistent/contacts\"\n";
        let path = Path::new("/etc/contactsyncd/config.toml");
        let e = match parse_for_check(text, path) {
            Err(ConfigError::Invalid(invalid)) => *invalid,
            other => panic!("expected an invalid config, got {other:?}"),
        };
        assert_eq!(e.key, "source[1].path");
        assert_eq!((e.line, e.column), (2, 8));
        assert!(e.message.contains("does not exist"));
        assert!(e.hint.unwrap().contains("mounts later"));
        // Every other command: the source is unknown until it appears, not a broken config.
        let config = parse(text, path).unwrap();
        assert_eq!(config.sources[0].path, Path::new("/nonexistent/contacts"));
        assert_eq!(config.sources[0].name, "contacts");
    }

    #[test]
    fn a_readable_source_passes_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[source]]\npath = {:?}\n",
            dir.path().display().to_string()
        );
        parse_for_check(&text, &dir.path().join("config.toml")).unwrap();
    }

    #[test]
    fn unknown_phone_type_lists_the_known_ones() {
        let text = format!(
            "[[source]]\npath = {:?}\nskip_phone_types = [\"fax\", \"faks\"]\n",
            std::env::temp_dir().display().to_string()
        );
        let e = invalid(&text);
        assert_eq!(e.key, "source[1].skip_phone_types");
        assert!(e.hint.unwrap().contains("pager"));
    }

    /// Issue 16.8: a configuration of the system installation reads and writes the system
    /// service's state by default, from a shell too; `state_dir` still wins.
    #[rstest]
    #[case::system("/etc/contactsyncd/config.toml", Some("/var/lib/contactsyncd"))]
    #[case::instance("/etc/contactsyncd/work.toml", Some("/var/lib/contactsyncd/work"))]
    #[case::dotted(
        "/etc/contactsyncd/../contactsyncd/config.toml",
        Some("/var/lib/contactsyncd")
    )]
    #[case::elsewhere("/home/me/.config/contactsyncd/config.toml", None)]
    #[case::below("/etc/contactsyncd/old/config.toml", None)]
    #[case::not_toml("/etc/contactsyncd/telegram-api-hash", None)]
    fn system_configurations_use_the_system_state(
        #[case] file: &str,
        #[case] expected: Option<&str>,
    ) {
        assert_eq!(
            system_state_dir(Path::new(file)),
            expected.map(PathBuf::from)
        );
        let text = "[[source]]\npath = \"/srv/contacts\"\n";
        if let Some(expected) = expected
            && std::env::var_os("STATE_DIRECTORY").is_none()
        {
            let config = parse(text, Path::new(file)).unwrap();
            assert_eq!(config.state_dir, Path::new(expected));
            let explicit = format!("state_dir = \"/tmp/elsewhere\"\n{text}");
            let config = parse(&explicit, Path::new(file)).unwrap();
            assert_eq!(config.state_dir, Path::new("/tmp/elsewhere"));
        }
    }

    #[test]
    fn delete_fraction_must_be_a_fraction() {
        let text = format!(
            "[[source]]\npath = {:?}\n\n[safety]\nmax_delete_fraction = 20\n",
            std::env::temp_dir().display().to_string()
        );
        let e = invalid(&text);
        assert_eq!(e.key, "safety.max_delete_fraction");
        assert_eq!(e.line, 5);
    }

    /// A configuration with every section, `key = value` placed in its section (or
    /// replacing the line the base has for it).
    fn with_key(key: &str, value: &str) -> String {
        let (section, name) = key.split_once('.').unwrap_or(("", key));
        let mut sections: Vec<(&str, Vec<String>)> = vec![
            ("", vec!["state_dir = \"/tmp/contactsyncd-test\"".into()]),
            ("watch", vec![]),
            ("safety", vec![]),
            (
                "telegram",
                vec![
                    "api_id = 12345".into(),
                    "api_hash = \"0123456789abcdef0123456789abcdef\"".into(),
                ],
            ),
            ("whatsapp", vec!["token = \"t\"".into()]),
        ];
        let lines = &mut sections.iter_mut().find(|(s, _)| *s == section).unwrap().1;
        lines.retain(|line| !line.starts_with(&format!("{name} =")));
        lines.push(format!("{name} = {value}"));
        let mut text = String::new();
        for (section, lines) in &sections {
            if !section.is_empty() {
                text.push_str(&format!("[{section}]\n"));
            } else {
                // Top-level keys first, then the source, then the tables.
                text.push_str(&lines.join("\n"));
                text.push_str("\n[[source]]\npath = \"/nonexistent/contacts\"\n");
                continue;
            }
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Values that `check-config` used to accept and that then panicked or overflowed.
    #[rstest]
    #[case::tiny_rate("whatsapp.requests_per_second", "1e-30")]
    #[case::zero_rate("whatsapp.requests_per_second", "0")]
    #[case::nan_rate("whatsapp.requests_per_second", "nan")]
    #[case::infinite_rate("whatsapp.requests_per_second", "inf")]
    #[case::huge_rescan("watch.rescan_interval", "9223372036854775807")]
    #[case::rescan_overflowing_its_unit("watch.rescan_interval", "\"213503982334601d\"")]
    #[case::rescan_over_a_week("watch.rescan_interval", "\"8d\"")]
    #[case::debounce_overflowing_millis("watch.debounce", "\"18446744073709552s\"")]
    #[case::debounce_zero("watch.debounce", "\"0ms\"")]
    #[case::negative_shutdown("shutdown_timeout", "-1")]
    #[case::fractional_shutdown("shutdown_timeout", "1.5")]
    #[case::huge_shutdown("shutdown_timeout", "\"2h\"")]
    #[case::huge_request_timeout("telegram.request_timeout", "18446744073709551615")]
    #[case::huge_reconcile("whatsapp.reconcile_interval", "\"31d\"")]
    #[case::batch_size("telegram.batch_size", "501")]
    #[case::api_id("telegram.api_id", "4294967296")]
    #[case::fraction("safety.max_delete_fraction", "nan")]
    #[case::max_deletes("safety.max_deletes", "-1")]
    #[case::fraction_min_contacts("safety.fraction_min_contacts", "-1")]
    #[case::fraction_min_contacts_huge("safety.fraction_min_contacts", "1000001")]
    fn out_of_range_values_name_their_key(#[case] key: &str, #[case] value: &str) {
        let e = invalid(&with_key(key, value));
        assert_eq!(e.key, key, "{e}");
    }

    #[rstest]
    #[case::slowest_rate("whatsapp.requests_per_second", "0.01")]
    #[case::fastest_rate("whatsapp.requests_per_second", "1000")]
    #[case::weekly_rescan("watch.rescan_interval", "\"7d\"")]
    #[case::rescan_one_second("watch.rescan_interval", "1")]
    #[case::debounce_one_ms("watch.debounce", "1")]
    #[case::debounce_an_hour("watch.debounce", "\"1h\"")]
    #[case::monthly_reconcile("telegram.reconcile_interval", "\"30d\"")]
    #[case::fraction_everywhere("safety.fraction_min_contacts", "0")]
    #[case::fraction_from_a_million("safety.fraction_min_contacts", "1000000")]
    fn values_at_the_bounds_are_accepted(#[case] key: &str, #[case] value: &str) {
        let text = with_key(key, value);
        parse(&text, Path::new("/etc/contactsyncd/config.toml"))
            .unwrap_or_else(|e| panic!("{text}\n{e}"));
    }

    /// Every numeric key, every kind of value: either the configuration is refused with a
    /// message naming that key, or every duration the program derives from it is positive
    /// and can be added to now (as an `Instant`, and as seconds to a timestamp).
    mod numeric_keys {
        use super::*;
        use proptest::prelude::*;

        const KEYS: &[&str] = &[
            "shutdown_timeout",
            "watch.debounce",
            "watch.rescan_interval",
            "safety.max_deletes",
            "safety.max_delete_fraction",
            "safety.fraction_min_contacts",
            "telegram.api_id",
            "telegram.batch_size",
            "telegram.request_timeout",
            "telegram.reconcile_interval",
            "whatsapp.requests_per_second",
            "whatsapp.request_timeout",
            "whatsapp.reconcile_interval",
        ];

        fn toml_float(value: f64) -> String {
            if value.is_nan() {
                "nan".into()
            } else if value.is_infinite() {
                if value > 0.0 { "inf" } else { "-inf" }.into()
            } else {
                format!("{value:?}")
            }
        }

        fn value() -> impl Strategy<Value = String> {
            let unit = prop::sample::select(vec!["", "s", "ms", "m", "min", "h", "d", "x", " s"]);
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                (0i64..100_000).prop_map(|n| n.to_string()),
                any::<f64>().prop_map(toml_float),
                (-10.0f64..2000.0).prop_map(toml_float),
                prop::sample::select(vec![
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    1e-30,
                    f64::MIN_POSITIVE,
                    5e-324,
                    0.0,
                    -0.0,
                ])
                .prop_map(toml_float),
                (any::<u64>(), unit.clone()).prop_map(|(n, u)| format!("\"{n}{u}\"")),
                (0u64..100_000, unit).prop_map(|(n, u)| format!("\"{n}{u}\"")),
                "[a-z0-9 .-]{0,10}".prop_map(|t| format!("{t:?}")),
                Just("true".to_owned()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]
            #[test]
            fn refused_with_the_key_or_safe_to_use(
                key in prop::sample::select(KEYS),
                value in value(),
            ) {
                let text = with_key(key, &value);
                match parse(&text, Path::new("/etc/contactsyncd/config.toml")) {
                    Err(ConfigError::Invalid(e)) => prop_assert_eq!(&e.key, key, "{}", e),
                    Err(other) => prop_assert!(false, "{key} = {value}: {other}"),
                    Ok(config) => {
                        let now = tokio::time::Instant::now();
                        let timestamp = 4_102_444_800_i64; // 2100-01-01
                        for (name, duration) in config.durations() {
                            prop_assert!(!duration.is_zero(), "{name} = 0 from {key} = {value}");
                            prop_assert!(now.checked_add(duration).is_some(), "{name}");
                            prop_assert!(
                                i64::try_from(duration.as_secs())
                                    .ok()
                                    .and_then(|s| timestamp.checked_add(s))
                                    .is_some(),
                                "{name}"
                            );
                        }
                        let telegram = config.telegram.as_ref().unwrap();
                        prop_assert!((1..=500).contains(&telegram.batch_size));
                        prop_assert!(telegram.api_id > 0);
                        prop_assert!((0.0..=1.0).contains(&config.safety.max_delete_fraction));
                    }
                }
            }
        }
    }

    #[test]
    fn no_source_is_an_error() {
        assert_eq!(invalid("default_region = \"DE\"\n").key, "source");
    }

    #[test]
    fn relative_paths_start_at_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("book")).unwrap();
        let file = dir.path().join("config.toml");
        let config = parse(
            "state_dir = \"state\"\n[[source]]\npath = \"book\"\n",
            &file,
        )
        .unwrap();
        assert_eq!(config.sources[0].path, dir.path().join("book"));
        assert_eq!(config.sources[0].name, "book");
        assert_eq!(config.state_dir, dir.path().join("state"));
        assert_eq!(config.sources[0].filter.skip_phone_types, ["fax", "pager"]);
    }

    #[test]
    fn duplicate_source_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[source]]\npath = {p:?}\nname = \"x\"\n[[source]]\npath = {p:?}\nname = \"x\"\n",
            p = dir.path().display().to_string()
        );
        assert_eq!(invalid(&text).key, "source[2].name");
    }
}

#[cfg(test)]
mod carddav_tests {
    use super::*;
    use rstest::rstest;

    const FILE: &str = "/etc/contactsyncd/config.toml";

    fn invalid(text: &str) -> Invalid {
        match parse(text, Path::new(FILE)) {
            Err(ConfigError::Invalid(invalid)) => *invalid,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn a_carddav_source_takes_its_keys_and_defaults() {
        let config = parse(
            "[[source]]\nname = \"cloud\"\ncarddav = \"https://cloud.example.org/remote.php/dav\"\nusername = \"me\"\npassword_command = [\"pass\", \"show\", \"dav\"]\naddress_books = [\"contacts\"]\n",
            Path::new(FILE),
        )
        .unwrap();
        let source = &config.sources[0];
        assert_eq!(
            source.carddav,
            Some(CardDavConfig {
                url: "https://cloud.example.org/remote.php/dav".into(),
                username: Some("me".into()),
                password: PasswordSource::Command(vec!["pass".into(), "show".into(), "dav".into()]),
                address_books: vec!["contacts".into()],
                poll_interval: 300,
                full_check_interval: 86_400,
                ca_file: None,
                verify_fingerprint: None,
                bearer: None,
            })
        );
        assert_eq!(
            source.path,
            Path::new("https://cloud.example.org/remote.php/dav")
        );
        assert!(source.filter.skip_phone_types.contains(&"fax".to_owned()));
    }

    #[test]
    fn without_a_password_key_the_systemd_credential_carddav_name_is_used() {
        let config = parse(
            "[[source]]\nname = \"cloud\"\ncarddav = \"https://dav.example.org/\"\nusername = \"me\"\npoll_interval = \"1m\"\n",
            Path::new(FILE),
        )
        .unwrap();
        let carddav = config.sources[0].carddav.as_ref().unwrap();
        assert_eq!(
            carddav.password,
            PasswordSource::Credential("carddav-cloud".into())
        );
        assert_eq!(carddav.poll_interval, 60);
    }

    #[rstest]
    #[case::both_path_and_carddav(
        "[[source]]\nname = \"x\"\npath = \"/b\"\ncarddav = \"https://d.example.org/\"\n",
        "source[1].carddav",
        "either path or carddav"
    )]
    #[case::neither(
        "[[source]]\nname = \"x\"\n",
        "source[1].path",
        "needs path (a folder or .vcf file) or carddav"
    )]
    #[case::no_name(
        "[[source]]\ncarddav = \"https://d.example.org/\"\n",
        "source[1].name",
        "a CardDAV source needs a name"
    )]
    #[case::not_a_url(
        "[[source]]\nname = \"x\"\ncarddav = \"cloud.example.org\"\n",
        "source[1].carddav",
        "is not an http or https URL"
    )]
    #[case::credentials_in_the_url(
        "[[source]]\nname = \"x\"\ncarddav = \"https://me:pw@d.example.org/\"\n",
        "source[1].carddav",
        "holds a user name or password"
    )]
    #[case::two_passwords(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\nusername = \"me\"\npassword_file = \"/p\"\npassword_command = [\"pass\"]\n",
        "source[1].password_command",
        "not both"
    )]
    #[case::empty_command(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\nusername = \"me\"\npassword_command = []\n",
        "source[1].password_command",
        "must name a program"
    )]
    #[case::password_without_user(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\npassword_file = \"/p\"\n",
        "source[1].username",
        "no username"
    )]
    #[case::carddav_key_on_a_folder(
        "[[source]]\npath = \"/b\"\nusername = \"me\"\n",
        "source[1].username",
        "key of a CardDAV source"
    )]
    #[case::poll_too_often(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\npoll_interval = \"1s\"\n",
        "source[1].poll_interval",
        "must be a duration from 10s to 1d"
    )]
    #[case::empty_book_name(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\naddress_books = [\" \"]\n",
        "source[1].address_books",
        "must not be empty"
    )]
    fn carddav_mistakes_name_the_key_and_the_fix(
        #[case] text: &str,
        #[case] key: &str,
        #[case] message: &str,
    ) {
        let e = invalid(text);
        assert_eq!(e.key, key, "{e:?}");
        assert!(e.message.contains(message), "{e:?}");
        assert!(e.line >= 1);
    }

    #[test]
    fn check_config_requires_the_password_file_to_be_readable_and_the_others_do_not() {
        let text = "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\nusername = \"me\"\npassword_file = \"/nonexistent/contactsyncd-password\"\n";
        parse(text, Path::new(FILE)).unwrap();
        match parse_for_check(text, Path::new(FILE)) {
            Err(ConfigError::Invalid(e)) => {
                assert_eq!(e.key, "source[1].password_file");
                assert!(
                    e.message
                        .contains("cannot read /nonexistent/contactsyncd-password"),
                    "{e:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn google_is_a_preset_of_google_carddav_and_its_oauth_endpoints() {
        let config = parse(
            "[[source]]\nname = \"google\"\ngoogle = \"me@gmail.com\"\noauth_client_id = \"123.apps.googleusercontent.com\"\noauth_client_secret_file = \"/etc/contactsyncd/google-secret\"\n",
            Path::new(FILE),
        )
        .unwrap();
        let carddav = config.sources[0].carddav.as_ref().unwrap();
        assert_eq!(carddav.url, GOOGLE_CARDDAV);
        assert_eq!(carddav.username, None);
        assert_eq!(
            carddav.bearer,
            Some(BearerSource::OAuth(OAuthConfig {
                google: Some("me@gmail.com".into()),
                client_id: "123.apps.googleusercontent.com".into(),
                client_secret_file: Some("/etc/contactsyncd/google-secret".into()),
                auth_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
                token_url: "https://oauth2.googleapis.com/token".into(),
                scope: Some("https://www.googleapis.com/auth/carddav".into()),
            }))
        );
        // What check-config prints loads back the same, and says no credential note.
        let rendered = render(&config).unwrap();
        assert!(rendered.contains("google = \"me@gmail.com\""), "{rendered}");
        assert!(
            !rendered.contains("systemd credential carddav-google"),
            "{rendered}"
        );
        let again = parse(&rendered, Path::new(FILE)).unwrap();
        assert_eq!(again.sources, config.sources);
    }

    #[test]
    fn generic_oauth2_and_a_token_command_take_their_keys() {
        let config = parse(
            "[[source]]\nname = \"a\"\ncarddav = \"https://dav.example.org/\"\nauth = \"oauth2\"\noauth_client_id = \"c\"\noauth_auth_url = \"https://id.example.org/auth\"\noauth_token_url = \"http://127.0.0.1:9/token\"\n[[source]]\nname = \"b\"\ncarddav = \"https://dav.example.org/\"\nbearer_token_command = [\"oama\", \"access\", \"me@example.org\"]\n",
            Path::new(FILE),
        )
        .unwrap();
        let a = config.sources[0].carddav.as_ref().unwrap();
        assert_eq!(
            a.bearer,
            Some(BearerSource::OAuth(OAuthConfig {
                google: None,
                client_id: "c".into(),
                client_secret_file: None,
                auth_url: "https://id.example.org/auth".into(),
                token_url: "http://127.0.0.1:9/token".into(),
                scope: None,
            }))
        );
        let b = config.sources[1].carddav.as_ref().unwrap();
        assert_eq!(
            b.bearer,
            Some(BearerSource::Command(vec![
                "oama".into(),
                "access".into(),
                "me@example.org".into()
            ]))
        );
        let again = parse(&render(&config).unwrap(), Path::new(FILE)).unwrap();
        assert_eq!(again.sources, config.sources);
    }

    #[rstest]
    #[case::unknown_auth(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\nauth = \"kerberos\"\n",
        "source[1].auth",
        "not an authentication contactsyncd knows"
    )]
    #[case::oauth_key_without_oauth(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\noauth_client_id = \"c\"\n",
        "source[1].oauth_client_id",
        "this source does not use it"
    )]
    #[case::google_without_client(
        "[[source]]\nname = \"x\"\ngoogle = \"me@gmail.com\"\n",
        "source[1].oauth_client_id",
        "needs the id of your OAuth client"
    )]
    #[case::google_without_secret(
        "[[source]]\nname = \"x\"\ngoogle = \"me@gmail.com\"\noauth_client_id = \"c\"\n",
        "source[1].oauth_client_secret_file",
        "Google wants the client secret"
    )]
    #[case::google_not_an_address(
        "[[source]]\nname = \"x\"\ngoogle = \"me\"\noauth_client_id = \"c\"\n",
        "source[1].google",
        "not a Google account"
    )]
    #[case::generic_without_token_url(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\nauth = \"oauth2\"\noauth_client_id = \"c\"\noauth_auth_url = \"https://id.example.org/a\"\n",
        "source[1].oauth_token_url",
        "needs oauth_token_url"
    )]
    #[case::plain_http_endpoint(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\nauth = \"oauth2\"\noauth_client_id = \"c\"\noauth_auth_url = \"http://id.example.org/a\"\noauth_token_url = \"https://id.example.org/t\"\n",
        "source[1].oauth_auth_url",
        "not an https URL"
    )]
    #[case::oauth_and_command(
        "[[source]]\nname = \"x\"\ngoogle = \"me@gmail.com\"\nbearer_token_command = [\"t\"]\n",
        "source[1].bearer_token_command",
        "not both"
    )]
    #[case::token_and_user(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\nusername = \"me\"\nbearer_token_command = [\"t\"]\n",
        "source[1].username",
        "takes no user name or password"
    )]
    #[case::empty_command(
        "[[source]]\nname = \"x\"\ncarddav = \"https://d.example.org/\"\nbearer_token_command = []\n",
        "source[1].bearer_token_command",
        "must name a program"
    )]
    #[case::google_on_a_folder(
        "[[source]]\nname = \"x\"\npath = \"/b\"\ngoogle = \"me@gmail.com\"\n",
        "source[1].google",
        "either path or google"
    )]
    fn oauth_mistakes_name_the_key_and_the_fix(
        #[case] text: &str,
        #[case] key: &str,
        #[case] message: &str,
    ) {
        let e = invalid(text);
        assert_eq!(e.key, key, "{e:?}");
        assert!(e.message.contains(message), "{e:?}");
        assert!(e.hint.is_some(), "{e:?}");
    }

    /// check-config's output: where the password comes from, never a password; and it
    /// loads back to the same configuration.
    #[rstest]
    #[case::file(
        "password_file = \"/etc/contactsyncd/dav-password\"\n",
        "password_file = \"/etc/contactsyncd/dav-password\""
    )]
    #[case::command(
        "password_command = [\"pass\", \"show\", \"dav\"]\n",
        "password_command = [\"pass\", \"show\", \"dav\"]"
    )]
    #[case::credential("", "# the password comes from the systemd credential carddav-cloud")]
    fn rendering_says_where_the_password_comes_from(#[case] key: &str, #[case] shown: &str) {
        let text = format!(
            "state_dir = \"/tmp/s\"\n[[source]]\nname = \"cloud\"\ncarddav = \"https://dav.example.org/\"\nusername = \"me\"\n{key}"
        );
        let config = parse(&text, Path::new(FILE)).unwrap();
        let rendered = render(&config).unwrap();
        assert!(rendered.contains(shown), "{rendered}");
        assert!(
            rendered.contains("carddav = \"https://dav.example.org/\""),
            "{rendered}"
        );
        assert!(!rendered.contains("path = \"https"), "{rendered}");
        let again = parse(&rendered, Path::new(FILE)).unwrap();
        assert_eq!(again.sources, config.sources);
    }
}
