//! Shared helpers: where fixtures live, running the binary, understanding a file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use contactsyncd::config::CardFilter;
use contactsyncd::contact::{self, CardContact};
use contactsyncd::phone::DefaultRegion;
use contactsyncd::vcard::{self, ParsedFile};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// The shared corpus of public test vCards, when this checkout sits next to `shared/`.
pub fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vcard-corpus");
    dir.is_dir().then_some(dir)
}

pub fn parse(path: &Path) -> ParsedFile {
    vcard::parse_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses and understands every card of a file with the default filter.
pub fn understand(path: &Path, region: &str) -> Vec<CardContact> {
    let region = DefaultRegion::parse(region).ok();
    parse(path)
        .good_cards()
        .map(|card| contact::understand(card, region, &CardFilter::default()))
        .collect()
}

/// (first, last) of a card's messenger name.
pub fn name(contact: &CardContact) -> (&str, &str) {
    let name = contact.name.as_ref().expect("card has a name");
    (&name.first, &name.last)
}

pub fn pushed(contact: &CardContact) -> Vec<&str> {
    contact.pushed_numbers().collect()
}

/// Runs the real binary with a clean environment (no config found by accident).
pub fn contactsyncd(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let home = tempfile::tempdir().expect("temp home");
    let mut command = Command::new(env!("CARGO_BIN_EXE_contactsyncd"));
    command
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run contactsyncd")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf-8 stderr")
}

/// Seeds a state directory with a session for the local Telegram test server, logged in as
/// its test account: what `contactsyncd login` would leave behind.
pub fn seed_telegram_session(state_dir: &Path, server: &crate::telegram::TestServer) {
    use contactsyncd::store::Store;
    use contactsyncd::store::telegram_session::{LoggedIn, TelegramSession};
    drop(Store::open_for_writing(state_dir).expect("state"));
    TelegramSession::import(state_dir, &server.session_data()).expect("session");
    TelegramSession::open(state_dir)
        .expect("session")
        .set_logged_in(&LoggedIn {
            user_id: 1,
            phone: Some("+15550000000".into()),
            first_name: Some("Test".into()),
        })
        .expect("logged in");
}
