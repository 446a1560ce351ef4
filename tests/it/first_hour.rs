//! What a new user and a hardened service meet first: the demo example, the man page and
//! completions a package ships, and a Telegram connection that forks no helper.

use std::path::Path;

use crate::telegram::account::Registration;
use crate::telegram::{ServerOptions, TestServer};

/// grammers' default `ConnectionParams` ask `os_info`, which runs `lsb_release -a`,
/// `getconf LONG_BIT` and `uname`. With a PATH that holds only recording stand-ins for
/// them, a sync against the sandbox server must leave no record.
#[tokio::test]
async fn a_telegram_connection_forks_no_helper() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.state().account.rule = Registration::All;
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book");
    std::fs::create_dir(&book).unwrap();
    crate::sync::write_vdir(&book, 0..2);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n[telegram]\napi_id = 12345\napi_hash = \"0123456789abcdef0123456789abcdef\"\n",
    )
    .unwrap();
    crate::support::seed_telegram_session(&dir.path().join("state"), &server);
    let bin = dir.path().join("bin");
    let forked = dir.path().join("forked");
    std::fs::create_dir(&bin).unwrap();
    for helper in ["lsb_release", "getconf", "uname", "sysctl"] {
        write_script(
            &bin.join(helper),
            &format!(
                "#!/bin/sh\necho {helper} \"$@\" >> '{}'\n",
                forked.display()
            ),
        );
    }
    let config_arg = config.to_str().unwrap().to_owned();
    let path = bin.clone();
    let sync = tokio::task::spawn_blocking(move || {
        crate::support::contactsyncd(
            &["--config", &config_arg, "sync", "--once"],
            &[("PATH", &path)],
        )
    })
    .await
    .unwrap();
    assert!(sync.status.success(), "{}", crate::support::stderr(&sync));
    assert_eq!(
        server.calls_to("contacts.importContacts").len(),
        1,
        "the sync reached the server"
    );
    assert!(
        !forked.exists(),
        "helpers were run: {}",
        std::fs::read_to_string(&forked).unwrap_or_default()
    );
    let info = server.state().client_info.clone().expect("initConnection");
    assert_eq!(info.device_model, "contactsyncd");
    assert_eq!(info.app_version, env!("CARGO_PKG_VERSION"));
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every command of the CLI, as the man pages and completions must name them.
const COMMANDS: [&str; 10] = [
    "inspect",
    "check-config",
    "plan",
    "sync",
    "status",
    "history",
    "run",
    "login",
    "logout",
    "remote",
];

#[test]
fn the_man_pages_are_generated_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let out = crate::support::contactsyncd(&["generate", "man", man.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let main = std::fs::read_to_string(man.join("contactsyncd.1")).unwrap();
    assert!(main.starts_with(".ie"), "roff: {main}");
    assert!(main.contains(".TH contactsyncd 1"), "{main}");
    for command in COMMANDS {
        assert!(
            main.contains(&format!(
                "contactsyncd\\-{}(1)",
                command.replace('-', "\\-")
            )),
            "the main page lists {command}: {main}"
        );
        assert!(
            man.join(format!("contactsyncd-{command}.1")).is_file(),
            "a page for {command}"
        );
    }
    let sync = std::fs::read_to_string(man.join("contactsyncd-sync.1")).unwrap();
    for option in ["once", "force\\-delete", "offline", "max\\-wait"] {
        assert!(
            sync.contains(&format!("\\-\\-{option}")),
            "{option}: {sync}"
        );
    }
}

#[test]
fn the_completions_are_generated_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, file) in [
        ("bash", "contactsyncd.bash"),
        ("zsh", "_contactsyncd"),
        ("fish", "contactsyncd.fish"),
    ] {
        let out = crate::support::contactsyncd(
            &[
                "generate",
                "completions",
                shell,
                "--dir",
                dir.path().to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", crate::support::stderr(&out));
        let script = std::fs::read_to_string(dir.path().join(file)).unwrap();
        for word in COMMANDS.iter().chain(&["force-delete", "show-phones"]) {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    // Without --dir the script goes to stdout, for `source <(contactsyncd generate …)`.
    let out = crate::support::contactsyncd(&["generate", "completions", "bash"], &[]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    assert!(crate::support::stdout(&out).contains("complete -F _contactsyncd"));
}
