//! WhatsApp through the real binary, as a new user meets it (issue 13): a phone that already
//! has most of the address book saved under the user's own names, and a base_url that does
//! not lead to the gateway.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{contactsyncd, stderr, stdout};
use crate::sync::{card, write_vdir};
use crate::whapi::WhapiServer;

const TOKEN: &str = "test-token-123";

fn digits(i: usize) -> String {
    format!("49151{i:08}")
}

fn write_config(dir: &Path, base_url: &str) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n\n[whatsapp]\nbase_url = \"{base_url}\"\ntoken = \"{TOKEN}\"\nrequests_per_second = 500\n"
        ),
    )
    .unwrap();
    config
}

/// Runs the binary off the runtime's thread (the stand-in gateway runs on it).
pub(crate) async fn run(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--config".to_owned(), config.to_str().unwrap().to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        contactsyncd(&args, &[])
    })
    .await
    .unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

/// 30 cards; the user saved 6 of their numbers before any sync, under their own names, and
/// 3 other contacts. Syncs, renames and removals never rename or delete any of the user's
/// 9; every contact of ours is saved with its card's name; a removed card of ours is
/// deleted. Ownership survives restarts (every command is a new process).
#[tokio::test]
async fn the_users_own_contacts_are_never_renamed_or_deleted() {
    let whapi = WhapiServer::start(TOKEN).await;
    let users: Vec<(String, &str)> = vec![
        (digits(0), "Mum"),
        (digits(1), "Dad"),
        (digits(2), "Aunt May"),
        (digits(3), "Dr Who"),
        (digits(4), "Plumber"),
        (digits(5), "Boss"),
        ("4930999901".to_owned(), "Gym"),
        ("4930999902".to_owned(), "Pizza"),
        ("4930999903".to_owned(), "Neighbour"),
    ];
    for (number, name) in &users {
        whapi.save_by_user(number, name);
    }
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book");
    std::fs::create_dir(&book).unwrap();
    write_vdir(&book, 0..30);
    let config = write_config(dir.path(), &whapi.base_url());

    let sync = run(&config, &["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", stderr(&sync));
    assert_eq!(
        whapi.requests("PUT").len(),
        24,
        "only the numbers not saved yet"
    );

    let status = run(&config, &["status"]).await;
    let text = stdout(&status);
    assert!(text.contains("whatsapp: 24 in sync"), "{text}");
    assert!(text.contains("6 already saved by you"), "{text}");
    let status = json(&run(&config, &["status", "--json"]).await);
    assert_eq!(status["accounts"][0]["saved_by_user"], 6, "{status}");
    assert_eq!(status["accounts"][0]["in_sync"], 24, "{status}");

    let list = run(&config, &["remote", "list", "--json", "--show-phones"]).await;
    assert!(list.status.success(), "{}", stderr(&list));
    let owners: std::collections::BTreeMap<String, String> = stdout(&list)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["phone"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches('+')
                    .to_owned(),
                v["owner"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(owners.len(), 33);
    for (number, _) in &users {
        assert_eq!(owners[number], "user", "{number}");
    }
    assert_eq!(owners.values().filter(|o| *o == "contactsyncd").count(), 24);
    let text = stdout(&run(&config, &["remote", "list", "--show-phones"]).await);
    let mum = text.lines().find(|l| l.contains("Mum")).unwrap();
    assert!(mum.contains("yours: never renamed or deleted"), "{mum}");

    // Renames and removals, of the user's numbers and of ours.
    for i in [0, 1, 10] {
        std::fs::write(
            book.join(format!("{i:05}.vcf")),
            card(&format!("Renamed {i}"), i),
        )
        .unwrap();
    }
    for i in [2, 3, 20] {
        std::fs::remove_file(book.join(format!("{i:05}.vcf"))).unwrap();
    }
    let sync = run(&config, &["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", stderr(&sync));
    // A removed card of the user's comes back: still theirs, not added.
    std::fs::write(book.join("00002.vcf"), card("Person 2", 2)).unwrap();
    let sync = run(&config, &["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", stderr(&sync));

    let saved = whapi.saved();
    for (number, name) in &users {
        assert_eq!(
            saved.get(number).map(String::as_str),
            Some(*name),
            "{number}"
        );
    }
    let patches = whapi.requests("PATCH");
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].path, format!("/contacts/{}", digits(10)));
    let deletes = whapi.requests("DELETE");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].path, format!("/contacts/{}", digits(20)));
    for i in (6..30).filter(|i| *i != 20) {
        let name = if i == 10 {
            "Renamed 10".to_owned()
        } else {
            format!("Person {i}")
        };
        assert_eq!(saved.get(&digits(i)), Some(&name), "{i}");
    }
    assert!(!saved.contains_key(&digits(20)));
    assert_eq!(saved.len(), 23 + 9);
    // 24 adds, and the rename of ours (its PUT answers 409, then the PATCH).
    let puts = whapi.requests("PUT");
    assert_eq!(puts.len(), 25);
    for (number, _) in &users {
        assert!(
            !puts.iter().any(|r| r.body.contains(number.as_str())),
            "{number} was sent"
        );
    }

    // Quiet means equal: one more pass sends nothing at all.
    let count = whapi.state().requests.len();
    let sync = run(&config, &["sync", "--once"]).await;
    assert!(sync.status.success(), "{}", stderr(&sync));
    assert_eq!(whapi.state().requests.len(), count);
}

/// Every request answered 404 (a base_url that is not the gateway): nothing counts as in
/// sync, the exit code and `status` name the problem and base_url, a second run does not
/// try again, and after base_url is fixed every number is saved.
#[tokio::test]
async fn a_wrong_base_url_stops_the_account_until_it_is_fixed() {
    let wrong = WhapiServer::start(TOKEN).await;
    wrong.state().all_not_found = true;
    let right = WhapiServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book");
    std::fs::create_dir(&book).unwrap();
    write_vdir(&book, 0..30);
    let config = write_config(dir.path(), &wrong.base_url());

    let sync = run(&config, &["sync", "--once"]).await;
    assert_eq!(sync.status.code(), Some(3), "{}", stderr(&sync));
    let message = stderr(&sync);
    assert!(message.contains("whatsapp.base_url"), "{message}");
    assert!(message.contains(&wrong.base_url()), "{message}");
    assert!(message.contains("404"), "{message}");

    let status = stdout(&run(&config, &["status"]).await);
    assert!(status.contains("whatsapp: 0 in sync"), "{status}");
    assert!(status.contains("30 queued"), "{status}");
    assert!(status.contains("STOPPED"), "{status}");
    assert!(status.contains(&wrong.base_url()), "{status}");
    let json_status = json(&run(&config, &["status", "--json"]).await);
    assert_eq!(json_status["accounts"][0]["in_sync"], 0);
    assert_eq!(json_status["last_run"]["outcome"], "configuration error");

    let list = run(&config, &["remote", "list"]).await;
    assert_eq!(list.status.code(), Some(3), "{}", stderr(&list));
    assert!(
        stderr(&list).contains(&wrong.base_url()),
        "{}",
        stderr(&list)
    );

    let count = wrong.state().requests.len();
    let again = run(&config, &["sync", "--once"]).await;
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
    assert_eq!(
        wrong.state().requests.len(),
        count,
        "stopped once, not retried"
    );

    write_config(dir.path(), &right.base_url());
    let fixed = run(&config, &["sync", "--once"]).await;
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    let saved = right.saved();
    assert_eq!(saved.len(), 30);
    assert_eq!(saved[&digits(17)], "Person 17");
    let status = stdout(&run(&config, &["status"]).await);
    assert!(status.contains("whatsapp: 30 in sync"), "{status}");
    assert!(!status.contains("STOPPED"), "{status}");
}
