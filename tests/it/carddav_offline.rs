//! The CardDAV source through the binary, beside `carddav.rs`: offline-first (what the
//! server last gave is planned and inspected from the state; `--offline` asks no server),
//! a password from `password_command`, group cards, and cards named by their URL.

use std::path::Path;

use crate::dav::{self, DavServer};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run(config: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    crate::support::contactsyncd(&all, &[])
}

#[tokio::test]
async fn the_cache_is_what_offline_commands_read_and_a_stopped_server_makes_the_source_unknown() {
    let Some(mut server) = DavServer::radicale().await else {
        return;
    };
    let group = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:g1\r\nFN:Family\r\nX-ADDRESSBOOKSERVER-KIND:group\r\nX-ADDRESSBOOKSERVER-MEMBER:urn:uuid:a1\r\nTEL:+4917099999999\r\nEND:VCARD\r\n";
    server
        .create_address_book_with(
            "contacts",
            &[
                dav::card("a1", "Anna", "Alt", "+4917011111111"),
                dav::card("b2", "Bernd", "Brot", "+4917022222222"),
                group.to_owned(),
            ],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (user, password) = server.credentials().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(
        &secret,
        format!("{password}\nsecond line is not the password\n"),
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\nname = \"dav\"\ncarddav = \"{}\"\nusername = \"{user}\"\npassword_command = [\"head\", \"-n\", \"1\", \"{}\"]\n",
            server.url("/"),
            secret.display()
        ),
    )
    .unwrap();

    // Never polled: offline it is unknown, and says how to read it.
    // A source not read yet is work left for a later pass: exit 75, not "done".
    let sync = run(&config, &["sync", "--once", "--offline"]);
    assert_eq!(sync.status.code(), Some(75), "{}", stdout(&sync));
    let said = stdout(&sync);
    assert!(
        said.contains("source dav is unknown") && said.contains("not read from the server yet"),
        "{said}"
    );
    // Not a warning: a daemon's first pass meets it at every first start.
    let logged = String::from_utf8_lossy(&sync.stderr);
    assert!(!logged.contains("WARN"), "{logged}");

    let sync = run(&config, &["sync", "--once"]);
    assert!(sync.status.success(), "{}", stdout(&sync));
    assert!(
        stdout(&sync).contains("2 contacts"),
        "the group card is skipped: {}",
        stdout(&sync)
    );

    // inspect reads the cache: each card under its URL.
    let inspect = run(&config, &["inspect", "--json"]);
    assert!(inspect.status.success());
    let files: Vec<String> = stdout(&inspect)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| {
            v.get("card")
                .and(v.get("file"))
                .and_then(|f| f.as_str())
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        files,
        [
            server.url("/alice/contacts/a1.vcf"),
            server.url("/alice/contacts/b2.vcf"),
            server.url("/alice/contacts/g1.vcf"),
        ]
    );

    // The server goes away. Offline, nothing asks it: the source stays known.
    server.stop();
    let sync = run(&config, &["sync", "--once", "--offline"]);
    assert!(sync.status.success());
    assert!(!stdout(&sync).contains("unknown"), "{}", stdout(&sync));
    let status = stdout(&run(&config, &["status"]));
    assert!(!status.contains("UNKNOWN"), "{status}");

    // A sync asks it: unknown, its two contacts kept, the reason in status.
    // The server cannot be reached: a temporary failure (75) a timer can tell from "done".
    let sync = run(&config, &["sync", "--once"]);
    assert_eq!(sync.status.code(), Some(75), "{}", stdout(&sync));
    assert!(stdout(&sync).contains("2 contacts"), "{}", stdout(&sync));
    assert!(
        String::from_utf8_lossy(&sync.stderr).contains("source dav cannot be read now"),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    let status = stdout(&run(&config, &["status"]));
    assert!(
        status.contains("UNKNOWN: cannot reach the server of source dav"),
        "{status}"
    );
    assert!(!status.contains(password), "{status}");
}
