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
