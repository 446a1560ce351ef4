//! Exit codes a script and a timer can trust (issue 25.8): one table (`exit::TABLE`), the
//! same in the README and `man contactsyncd`; "done" (0), "work remains" (75) and "needs
//! you" (2 to 5) told apart through the binary.

use std::path::{Path, PathBuf};

use contactsyncd::cli::exit;

use crate::support::{contactsyncd, repo_file, stderr, stdout};

/// A loopback port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn write_config(dir: &Path, rest: &str) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("state_dir = \"state\"\ndefault_region = \"DE\"\n{rest}"),
    )
    .unwrap();
    config
}

fn run(config: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    contactsyncd(&all, &[])
}

/// A source whose path is missing (an unmounted drive) is unknown: work remains, 75 (it
/// was 0, as if all was done).
#[test]
fn a_source_that_cannot_be_read_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[[source]]\nname = \"usb\"\npath = \"gone\"\n");
    let sync = run(&config, &["sync", "--once"]);
    assert_eq!(
        sync.status.code(),
        Some(i32::from(exit::TEMPFAIL)),
        "{}{}",
        stdout(&sync),
        stderr(&sync)
    );
    assert!(
        stderr(&sync).contains("source usb cannot be read now"),
        "{}",
        stderr(&sync)
    );
    // Once it is there, the same command is done: 0.
    std::fs::create_dir(dir.path().join("gone")).unwrap();
    crate::sync::write_vdir(&dir.path().join("gone"), 0..2);
    let again = run(&config, &["sync", "--once"]);
    assert!(again.status.success(), "{}", stderr(&again));
}

/// Every batch stays queued because the gateway cannot be reached: 75 (it was 0). With
/// `--offline` the queue is what was asked for: 0.
#[test]
fn batches_left_queued_by_a_network_outage_exit_75() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book");
    std::fs::create_dir(&book).unwrap();
    crate::sync::write_vdir(&book, 0..3);
    let config = write_config(
        dir.path(),
        &format!(
            "[[source]]\npath = \"book\"\n[whatsapp]\nbase_url = \"http://127.0.0.1:{}\"\ntoken = \"t\"\nrequests_per_second = 500\nrequest_timeout = \"2s\"\n",
            closed_port()
        ),
    );
    let offline = run(&config, &["sync", "--once", "--offline"]);
    assert!(
        offline.status.success(),
        "{}{}",
        stdout(&offline),
        stderr(&offline)
    );
    let sync = run(&config, &["sync", "--once"]);
    assert_eq!(
        sync.status.code(),
        Some(i32::from(exit::TEMPFAIL)),
        "{}{}",
        stdout(&sync),
        stderr(&sync)
    );
    assert!(
        stderr(&sync).contains("whatsapp: work remains queued"),
        "{}",
        stderr(&sync)
    );
}

/// `check-source` on a server that cannot be reached: 75 (it was 3, "fix the
/// configuration", which it is not).
#[test]
fn check_source_of_a_server_away_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[[source]]\nname = \"dav\"\ncarddav = \"http://127.0.0.1:{}/\"\n",
            closed_port()
        ),
    );
    let check = run(&config, &["check-source"]);
    assert_eq!(
        check.status.code(),
        Some(i32::from(exit::TEMPFAIL)),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    assert!(
        stdout(&check).contains("cannot reach the server of source dav"),
        "{}",
        stdout(&check)
    );
}

/// The README's table is the binary's (`exit::markdown`), between its markers.
#[test]
fn the_readme_shows_the_exit_code_table() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let start = readme
        .find("<!-- exit-codes:")
        .expect("the README marks its exit-code table");
    let body = &readme[start..];
    let body = &body[body.find("-->\n").unwrap() + 4..];
    let end = body.find("<!-- /exit-codes -->").unwrap();
    assert_eq!(&body[..end], exit::markdown());
}

/// `man contactsyncd` has EXIT STATUS with every code, and FILES, ENVIRONMENT and SEE
/// ALSO; `man contactsyncd.toml` documents every key the configuration accepts.
#[test]
fn the_man_pages_have_exit_status_and_every_configuration_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = contactsyncd(&["generate", "man", dir.path().to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let main = std::fs::read_to_string(dir.path().join("contactsyncd.1")).unwrap();
    for section in [
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH \"SEE ALSO\"",
    ] {
        assert!(main.contains(section), "{section}: {main}");
    }
    let status = &main[main.find("EXIT STATUS").unwrap()..main.find(".SH ENVIRONMENT").unwrap()];
    for row in exit::TABLE {
        assert!(
            status.contains(&format!(".TP\n\\fB{}\\fR", row.code)),
            "{}: {status}",
            row.code
        );
    }
    assert!(main.contains("CONTACTSYNCD_CONFIG") && main.contains("CREDENTIALS_DIRECTORY"));
    let keys = std::fs::read_to_string(dir.path().join("contactsyncd.toml.5")).unwrap();
    let docs = contactsyncd::config::key_docs();
    assert!(docs.len() > 40, "{}", docs.len());
    for doc in &docs {
        assert!(
            !doc.doc.is_empty(),
            "the example configuration documents [{}] {}",
            doc.table,
            doc.key
        );
        assert!(
            keys.contains(&format!("\\fB{}\\fR", doc.key)),
            "contactsyncd.toml(5) names {}",
            doc.key
        );
    }
    for table in [
        "[[source]]",
        "[safety]",
        "[watch]",
        "[log]",
        "[telegram]",
        "[whatsapp]",
    ] {
        assert!(keys.contains(table), "{table}");
    }
}

/// A fresh state with `[telegram]` and no login (issue 25.7 and 25.10): `status` says login
/// is required (also in JSON, before and after a sync made the account's row), `remote
/// list` prints no ERROR line before its "not logged in", `logout` says there was no
/// session; and `sync --once` exits 5.
#[test]
fn never_logged_in_is_login_required_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    crate::sync::write_vdir(&dir.path().join("book"), 0..2);
    let config = write_config(
        dir.path(),
        "[[source]]\npath = \"book\"\n[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\n",
    );
    let list = run(&config, &["remote", "list"]);
    assert_eq!(list.status.code(), Some(i32::from(exit::LOGIN_REQUIRED)));
    assert!(!stderr(&list).contains("ERROR"), "{}", stderr(&list));
    assert!(stderr(&list).contains("not logged in"), "{}", stderr(&list));

    let status = |config: &Path| -> serde_json::Value {
        let out = run(config, &["status", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    assert_eq!(status(&config)["telegram_login_required"], true);

    let logout = run(&config, &["logout"]);
    assert!(logout.status.success(), "{}", stderr(&logout));
    assert!(
        stdout(&logout).contains("there was no Telegram session"),
        "{}",
        stdout(&logout)
    );

    let sync = run(&config, &["sync", "--once"]);
    assert_eq!(sync.status.code(), Some(i32::from(exit::LOGIN_REQUIRED)));
    let after = status(&config);
    assert_eq!(after["telegram_login_required"], true);
    assert_eq!(after["accounts"][0]["login_required"], true, "{after}");
}

/// `login` without a network (issue 25.9), against a closed loopback port, never Telegram's
/// addresses: it says it cannot reach Telegram (not "Telegram refused: request error: read
/// 0 bytes"), no library WARN line reaches the terminal, and it exits 75. `login` needs a
/// terminal: `script` gives it one.
#[test]
fn login_without_a_network_says_it_cannot_reach_telegram() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("`script` (util-linux) gives `login` its terminal in this test");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    let config = write_config(
        dir.path(),
        "[[source]]\npath = \"book\"\n[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\nphone = \"+15550000000\"\nrequest_timeout = \"5s\"\n",
    );
    let state = dir.path().join("state");
    drop(contactsyncd::store::Store::open_for_writing(&state).unwrap());
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], closed_port()));
    contactsyncd::store::telegram_session::TelegramSession::import(
        &state,
        &crate::telegram::session_data_for(closed, [7; 256]),
    )
    .unwrap();
    let command = format!(
        "{} --config {} login",
        env!("CARGO_BIN_EXE_contactsyncd"),
        config.display()
    );
    let started = std::time::Instant::now();
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("HOME", dir.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let terminal = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{terminal}"
    );
    assert!(terminal.contains("cannot reach Telegram"), "{terminal}");
    assert!(!terminal.contains("WARN"), "{terminal}");
    assert!(!terminal.contains("Telegram refused"), "{terminal}");
    assert_eq!(
        output.status.code(),
        Some(i32::from(exit::TEMPFAIL)),
        "{terminal}"
    );
}

/// 25.11 and 25.8: deletions the guard holds exit 4, and the reason (with its remedy) is
/// said once per command: in the report, not again as a WARN line and in the error.
#[tokio::test]
async fn held_deletions_exit_4_and_are_reported_once() {
    let setup = crate::telegram_backend::Setup::new(100, 30).await;
    let book = setup.book();
    crate::sync::write_vdir(&book, 0..3);
    let first = crate::telegram_backend::binary(&setup, &["sync", "--once"]).await;
    assert!(first.status.success(), "{}", stderr(&first));
    // Every card replaced: deleting every synced contact is held at any size.
    for i in 0..3 {
        std::fs::remove_file(book.join(format!("{i:05}.vcf"))).unwrap();
    }
    crate::sync::write_vdir(&book, 10..13);
    let held = crate::telegram_backend::binary(&setup, &["sync", "--once"]).await;
    let said = format!("{}{}", stdout(&held), stderr(&held));
    assert_eq!(
        held.status.code(),
        Some(i32::from(exit::DELETES_HELD)),
        "{said}"
    );
    assert_eq!(said.matches("--force-delete").count(), 1, "{said}");
    assert!(!stderr(&held).contains("WARN"), "{said}");
}
