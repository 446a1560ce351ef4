//! Messages in the user's words (issue 25.6, 25.12, 25.13, 25.16), through the binary.

use std::path::Path;

use crate::support::{contactsyncd, stderr, stdout};

fn run(config: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    contactsyncd(&all, &[])
}

/// 25.6: `status` counts a card's username apart from the phones ("2 phones, 1 username",
/// not "3 phones"), and says "1 file", "1 card with problems" in the singular.
#[test]
fn status_counts_usernames_apart_from_phones() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book");
    std::fs::create_dir(&book).unwrap();
    std::fs::write(
        book.join("a.vcf"),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Alt;Anna;;;\r\nFN:Anna Alt\r\nTEL:+4917011111111\r\nEND:VCARD\r\n\
         BEGIN:VCARD\r\nVERSION:3.0\r\nN:Brot;Bernd;;;\r\nFN:Bernd Brot\r\nTEL:+4917022222222\r\nEND:VCARD\r\n\
         BEGIN:VCARD\r\nVERSION:3.0\r\nN:Chan;Chris;;;\r\nFN:Chris Chan\r\nIMPP:telegram:chrischan\r\nEND:VCARD\r\n",
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\nname = \"book\"\n",
    )
    .unwrap();
    let sync = run(&config, &["sync", "--once"]);
    assert!(sync.status.success(), "{}", stderr(&sync));
    let status = stdout(&run(&config, &["status"]));
    assert!(
        status.contains(
            "book: 1 file, 3 cards, 2 phones, 1 username, 0 cards with problems, 0 deferred files"
        ),
        "{status}"
    );
}

/// 25.12: no Rust type names in a configuration error, and the hint names no checkout path.
#[test]
fn config_errors_name_no_rust_types() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[[source]]\npath = \"book\"\n[safety]\nmax_deletes = \"many\"\n",
    )
    .unwrap();
    let check = run(&config, &["check-config"]);
    assert_eq!(check.status.code(), Some(3));
    let message = stderr(&check);
    assert!(message.contains("a whole number"), "{message}");
    for rust in ["usize", "i64", "u64"] {
        assert!(!message.contains(rust), "{message}");
    }
    assert!(!message.contains("config/contactsyncd.toml"), "{message}");
}

/// 25.13: `inspect FILE` without a region names --region at the number; a card whose FN
/// says another name than N says which one the messenger gets.
#[test]
fn inspect_names_the_region_option_and_the_name_it_uses() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("card.vcf");
    std::fs::write(
        &file,
        "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Schmidt;Anna;;;\r\nFN:Annabel Schmidt-Berg\r\nTEL:030 1234567\r\nEND:VCARD\r\n",
    )
    .unwrap();
    let inspect = contactsyncd(&["inspect", file.to_str().unwrap()], &[]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let text = stdout(&inspect);
    assert!(text.contains("--region CC"), "{text}");
    assert!(
        text.contains("FN \"Annabel Schmidt-Berg\" differs from N: the messenger gets N's names"),
        "{text}"
    );
}

/// 25.16: `sync --help` shows --once as required; `run --help` names SIGHUP and SIGTERM;
/// the global options appear under one heading.
#[test]
fn the_help_says_what_the_commands_need() {
    let sync = stdout(&contactsyncd(&["sync", "--help"], &[]));
    assert!(
        sync.contains("Usage: contactsyncd sync [OPTIONS] --once"),
        "{sync}"
    );
    assert_eq!(sync.matches("--config <PATH>").count(), 1, "{sync}");
    assert!(sync.contains("Global options"), "{sync}");
    let run_help = stdout(&contactsyncd(&["run", "--help"], &[]));
    assert!(
        run_help.contains("SIGHUP") && run_help.contains("SIGTERM"),
        "{run_help}"
    );
    let history = stdout(&contactsyncd(&["history", "--help"], &[]));
    assert!(history.contains("--limit <N>"), "{history}");
}

/// 25.17: the example a user or the package starts from has no checkout-only text (state
/// in `../target`, the example address book), and the user's copy is a valid configuration
/// once its address book is there.
#[test]
fn the_example_configuration_names_no_checkout() {
    for args in [
        &["generate", "example-config"][..],
        &["generate", "example-config", "--system"],
    ] {
        let out = contactsyncd(args, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        for checkout in ["THIS EXAMPLE", "../target", "../examples", "checkout"] {
            assert!(!text.contains(checkout), "{args:?}: {checkout}");
        }
    }
    let system = stdout(&contactsyncd(
        &["generate", "example-config", "--system"],
        &[],
    ));
    assert!(
        system.contains("\npath = \"/path/to/your/addressbook\""),
        "{system}"
    );
    assert!(system.starts_with("# Installed by the contactsyncd package"));

    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".contacts/personal")).unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(
        &config,
        stdout(&contactsyncd(&["generate", "example-config"], &[])),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_contactsyncd"));
    let check = command
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env_clear()
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stdout(&check).contains(&format!(
            "state_dir = \"{}/.local/state/contactsyncd\"",
            home.path().display()
        )),
        "{}",
        stdout(&check)
    );
}
