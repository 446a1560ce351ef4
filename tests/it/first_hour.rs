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

/// `cargo run --example demo` (built by `cargo test`): the example book reaches the sandbox
/// server, the rename arrives, a quiet sync sends nothing, and the demo leaves no file in
/// the temporary directory or in the home directory.
#[test]
fn the_demo_shows_the_sync_and_the_rename_and_leaves_nothing_behind() {
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/demo");
    assert!(
        example.exists(),
        "cargo test builds the example: {}",
        example.display()
    );
    let home = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&example)
        .env_clear()
        .env("HOME", home.path())
        .env("TMPDIR", tmp.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = crate::support::stdout(&out);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        crate::support::stderr(&out)
    );
    let holds: Vec<&str> = stdout
        .split("The sandbox server now holds")
        .skip(1)
        .collect();
    assert_eq!(holds.len(), 2, "{stdout}");
    assert!(
        holds[0].contains("+4915123456789   Anna Schmidt\n"),
        "{stdout}"
    );
    assert!(holds[0].contains("Rohrblitz GmbH"), "{stdout}");
    assert!(
        holds[1].contains("+4915123456789   Anna Schmidt-Berg   ← renamed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(contacts.importContacts calls during this sync: 0)"),
        "{stdout}"
    );
    assert!(stdout.contains("the demo left nothing behind"), "{stdout}");
    let left = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
    assert_eq!(left(tmp.path()), 0, "files left in TMPDIR");
    assert_eq!(left(home.path()), 0, "files left in HOME");
}
