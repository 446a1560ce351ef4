//! The real binary: `inspect` and `check-config`, their output, exit codes, and config lookup.

use std::path::Path;
use std::time::Duration;

use contactsyncd::config;

use crate::support::{contactsyncd, corpus, fixture, repo_file, stderr, stdout};

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

#[test]
fn inspect_human_output() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_contactsyncd"))
        .args(["inspect", ".", "--region", "DE"])
        .current_dir(fixture(""))
        .env("HOME", "/nonexistent")
        .env_remove("CONTACTSYNCD_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    insta::assert_snapshot!(stdout(&output));
}

#[test]
fn inspect_json_lines() {
    let output = contactsyncd(
        &[
            "inspect",
            "--json",
            "--region",
            "GB",
            fixture("broken_middle.vcf").to_str().unwrap(),
            fixture("truncated.vcf").to_str().unwrap(),
            fixture("no_cards.vcf").to_str().unwrap(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&stdout(&output));
    let cards: Vec<_> = lines.iter().filter(|l| l.get("card").is_some()).collect();
    assert_eq!(cards.len(), 5, "4 cards of broken_middle + 1 of truncated");
    for card in &cards {
        for key in [
            "file",
            "card",
            "uid",
            "first_name",
            "last_name",
            "phones",
            "errors",
        ] {
            assert!(card.get(key).is_some(), "{key} missing in {card}");
        }
    }
    assert_eq!(cards[0]["first_name"], "First Good");
    assert_eq!(cards[0]["phones"][0]["raw"], "+44 20 7946 0958");
    assert_eq!(cards[0]["phones"][0]["e164"], "+442079460958");
    assert_eq!(cards[0]["phones"][0]["valid"], true);
    assert_eq!(cards[2]["phones"][0]["e164"], serde_json::Value::Null);
    assert_eq!(cards[2]["phones"][0]["error"], "not a phone number");
    assert!(cards[1]["errors"][0].as_str().unwrap().contains("no name"));

    let file_errors: Vec<_> = lines
        .iter()
        .filter(|l| l.get("error").is_some() && l.get("card").is_none())
        .collect();
    assert_eq!(file_errors.len(), 2);
    assert!(
        file_errors[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("incomplete")
    );
    assert!(
        file_errors[1]["error"]
            .as_str()
            .unwrap()
            .contains("no vCard")
    );

    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["files"], 3);
    assert_eq!(summary["cards"], 5);
    assert_eq!(summary["file_errors"], 2);
    assert_eq!(summary["incomplete_files"], 1);
    assert_eq!(summary["contacts"], 3);
}

#[test]
fn inspect_reads_the_whole_corpus() {
    let Some(dir) = corpus() else {
        eprintln!("skipped: ../shared/vcard-corpus not present");
        return;
    };
    let output = contactsyncd(
        &["inspect", dir.to_str().unwrap(), "--region", "US", "--json"],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&stdout(&output));
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["files"], 77);
    assert_eq!(summary["incomplete_files"], 1);
}

#[test]
fn inspect_refuses_unusable_arguments() {
    let missing = contactsyncd(&["inspect", "/nonexistent/book.vcf"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/book.vcf"));
    let bad_region = contactsyncd(
        &[
            "inspect",
            "--region",
            "UK",
            fixture("google.vcf").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(bad_region.status.code(), Some(2));
    assert!(
        stderr(&bad_region).contains("GB"),
        "{}",
        stderr(&bad_region)
    );
}

#[test]
fn inspect_without_paths_reads_the_configured_sources() {
    let config = repo_file("config/contactsyncd.toml");
    let output = contactsyncd(
        &["inspect", "--json", "--config", config.to_str().unwrap()],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&stdout(&output));
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["region"], "DE");
    assert!(summary["contacts"].as_u64().unwrap() >= 3, "{summary}");
}

#[test]
fn check_config_prints_the_effective_config() {
    let config = repo_file("config/contactsyncd.toml");
    // --config accepted before the subcommand as well as after it.
    let output = contactsyncd(&["--config", config.to_str().unwrap(), "check-config"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("valid"), "{text}");
    assert!(text.contains("default_region = \"DE\""), "{text}");
    assert!(
        text.contains("skip_phone_types = [\"fax\", \"pager\"]"),
        "{text}"
    );
}

/// `check-config` of the example prints a configuration that loads back as the same one.
#[test]
fn check_config_output_of_the_example_loads_back() {
    let path = repo_file("config/contactsyncd.toml");
    let output = contactsyncd(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("shutdown_timeout = \"10s\""), "{text}");
    assert!(text.contains("debounce = \"500ms\""), "{text}");
    assert!(text.contains("rescan_interval = \"5m\""), "{text}");
    let reloaded = config::parse(&text, &path).unwrap_or_else(|e| panic!("{text}\n{e}"));
    let expected = config::load(Some(&path)).unwrap();
    // The state directory's default depends on $HOME, which the binary ran with its own of.
    let expected = config::Config {
        state_dir: reloaded.state_dir.clone(),
        ..expected
    };
    assert_eq!(reloaded, expected, "{text}");
}

/// Every section and key, none at its default: `check-config` prints it as a configuration
/// that loads back as the same one (secrets as the files they come from).
#[test]
fn check_config_output_with_every_section_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    std::fs::write(dir.path().join("export.vcf"), "").unwrap();
    std::fs::write(
        dir.path().join("hash"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), "whapi-secret-token\n").unwrap();
    let path = write_config(
        dir.path(),
        r#"state_dir = "state"
default_region = "GB"
shutdown_timeout = 90

[[source]]
path = "book"
name = "personal"
include_categories = ["Family"]
exclude_categories = ["Work"]
phone_types = ["cell"]
skip_phone_types = ["fax"]

[[source]]
path = "export.vcf"

[safety]
max_deletes = 7
max_delete_fraction = 0.5

[watch]
debounce = 1500
rescan_interval = "2h"
poll = true

[log]
target = "stderr"
level = "info,contactsyncd=debug"
show_personal_data = true

[telegram]
api_id = 12345
api_hash_file = "hash"
phone = "+491701234567"
batch_size = 250
request_timeout = 45
reconcile_interval = "1d"
on_remote_delete = "keep"

[whatsapp]
base_url = "http://127.0.0.1:9"
token_file = "token"
requests_per_second = 2.5
request_timeout = "1m"
reconcile_interval = "12h"
on_remote_delete = "keep"
adopt_existing = true
"#,
    );
    let output = contactsyncd(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for shown in [
        "shutdown_timeout = \"90s\"",
        "debounce = \"1500ms\"",
        "rescan_interval = \"2h\"",
        "request_timeout = \"45s\"",
        "reconcile_interval = \"1d\"",
        &format!(
            "api_hash_file = {:?}",
            dir.path().join("hash").display().to_string()
        ),
    ] {
        assert!(text.contains(shown), "{shown} in\n{text}");
    }
    assert!(!text.contains("0123456789abcdef") && !text.contains("whapi-secret-token"));
    let reloaded = config::parse(&text, &dir.path().join("elsewhere.toml"))
        .unwrap_or_else(|e| panic!("{text}\n{e}"));
    let expected = config::load(Some(&path)).unwrap();
    assert_eq!(
        reloaded,
        config::Config {
            file: reloaded.file.clone(),
            ..expected
        },
        "{text}"
    );
}

/// Secrets written in the file, and no default_region: the output is valid TOML, says
/// where each secret is set without printing it, and loads when they are given otherwise
/// (here as the systemd credentials).
#[test]
fn check_config_output_shows_inline_secrets_as_comments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    let path = write_config(
        dir.path(),
        "[[source]]\npath = \"book\"\n[telegram]\napi_id = 1\napi_hash = \"0123456789abcdef0123456789abcdef\"\n[whatsapp]\ntoken = \"whapi-secret-token\"\n",
    );
    let output = contactsyncd(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    toml::from_str::<toml::Table>(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
    assert!(!text.contains("0123456789abcdef") && !text.contains("whapi-secret-token"));
    assert!(
        text.contains("[telegram]\n# api_hash = \"…\" is set in the configuration file"),
        "{text}"
    );
    assert!(
        text.contains("[whatsapp]\n# token = \"…\" is set in the configuration file"),
        "{text}"
    );
    assert!(!text.contains("default_region ="), "{text}");

    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(
        credentials.path().join("telegram-api-hash"),
        "0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    std::fs::write(credentials.path().join("whapi-token"), "t").unwrap();
    let printed = write_config(dir.path(), &text);
    let again = contactsyncd(
        &["check-config", "--config", printed.to_str().unwrap()],
        &[("CREDENTIALS_DIRECTORY", credentials.path())],
    );
    assert!(again.status.success(), "{text}\n{}", stderr(&again));
    assert!(
        stdout(&again).contains("# api_hash comes from the systemd credential telegram-api-hash"),
        "{}",
        stdout(&again)
    );
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_names_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "default_region = \"DE\"\n\n[[source]]\npath = \".\"\nphone_type = [\"cell\"]\n",
    );
    let output = contactsyncd(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("{}:5:1: source[1].phone_type", path.display())),
        "{message}"
    );
    assert!(message.contains("hint:"), "{message}");
}

/// A wrong `--config` path: the OS error once, and what to check; `[source]` for
/// `[[source]]`: the fix, not only serde's "expected a sequence".
#[test]
fn config_mistakes_a_new_user_makes_get_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("contactsyncd.toml");
    let output = contactsyncd(
        &["--config", missing.to_str().unwrap(), "check-config"],
        &[],
    );
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert_eq!(
        message.matches("No such file or directory").count(),
        1,
        "{message}"
    );
    assert!(
        message.contains("hint: check the path given to --config"),
        "{message}"
    );

    let path = write_config(
        dir.path(),
        "default_region = \"DE\"\n[source]\npath = \".\"\n",
    );
    let output = contactsyncd(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("{}:2:1: source:", path.display())),
        "{message}"
    );
    assert!(
        message.contains("hint: write [[source]] with double brackets"),
        "{message}"
    );

    let path = write_config(
        dir.path(),
        "[[source]]\npath = \".\"\nshutdown_timeout = \"10s\"\n",
    );
    let output = contactsyncd(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    let message = stderr(&output);
    assert!(
        message.contains(
            "hint: `shutdown_timeout` is a top-level key: move it above the first [table]"
        ),
        "{message}"
    );
}

#[test]
fn config_is_found_through_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    let text = "default_region = \"FR\"\n[[source]]\npath = \"book\"\n";
    let explicit = write_config(dir.path(), text);
    let by_variable = contactsyncd(&["check-config"], &[("CONTACTSYNCD_CONFIG", &explicit)]);
    assert!(by_variable.status.success(), "{}", stderr(&by_variable));
    assert!(stdout(&by_variable).contains("\"FR\""));

    let xdg = tempfile::tempdir().unwrap();
    std::fs::create_dir(xdg.path().join("contactsyncd")).unwrap();
    std::fs::create_dir(xdg.path().join("contactsyncd/book")).unwrap();
    write_config(&xdg.path().join("contactsyncd"), text);
    let by_xdg = contactsyncd(&["check-config"], &[("XDG_CONFIG_HOME", xdg.path())]);
    assert!(by_xdg.status.success(), "{}", stderr(&by_xdg));

    let none = contactsyncd(&["check-config"], &[]);
    assert_eq!(none.status.code(), Some(3));
    assert!(stderr(&none).contains("no configuration file found"));
}

/// Values `check-config` used to accept and that then panicked `sync` (exit 101) or
/// overflowed the daemon's timers: refused up front by every command, naming the key.
#[test]
fn values_that_would_panic_later_are_refused_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    let base = "state_dir = \"state\"\n[[source]]\npath = \"book\"\n";
    for (tables, key, commands) in [
        (
            "[whatsapp]\ntoken = \"t\"\nbase_url = \"http://127.0.0.1:9\"\nrequests_per_second = 1e-30\n",
            "whatsapp.requests_per_second",
            &[&["check-config"][..], &["sync", "--once"]][..],
        ),
        (
            "[watch]\nrescan_interval = 9223372036854775807\n",
            "watch.rescan_interval",
            &[&["check-config"][..], &["run"]][..],
        ),
        (
            "[watch]\nrescan_interval = \"213503982334601d\"\n",
            "watch.rescan_interval",
            &[&["check-config"][..], &["run"]][..],
        ),
    ] {
        let path = write_config(dir.path(), &format!("{base}{tables}"));
        for command in commands {
            let mut args = vec!["--config", path.to_str().unwrap()];
            args.extend_from_slice(command);
            let output = run_for_at_most(&args, Duration::from_secs(20));
            let message = stderr(&output);
            assert_eq!(output.status.code(), Some(3), "{command:?}: {message}");
            assert!(
                message.contains(&format!("{}:", path.display())) && message.contains(key),
                "{command:?}: {message}"
            );
        }
    }
}

/// The binary in a clean environment, killed if it runs longer than `limit` (a daemon that
/// started although it should not have).
fn run_for_at_most(args: &[&str], limit: Duration) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_contactsyncd"))
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// Every argument of every subcommand has a help text (`--help` and the man page are made
/// from them): `--json` says what it prints.
#[test]
fn every_argument_has_a_help_text() {
    use clap::CommandFactory;
    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            if help.trim().is_empty() {
                missing.push(format!("{path} --{}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut command = contactsyncd::cli::Cli::command();
    command.build();
    let mut missing = Vec::new();
    walk(&command, "contactsyncd", &mut missing);
    assert!(missing.is_empty(), "no help text: {missing:?}");
}

/// A config in a temp dir reading a copy of the example address book, with `tables`.
fn example_book(tables: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book");
    std::fs::create_dir(&book).unwrap();
    for entry in std::fs::read_dir(repo_file("examples/addressbook")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), book.join(entry.file_name())).unwrap();
    }
    let path = write_config(
        dir.path(),
        &format!(
            "state_dir = \"state\"\ndefault_region = \"DE\"\n[[source]]\npath = \"book\"\n{tables}"
        ),
    );
    (dir, path)
}

/// `plan --verbose` lists what a sync would send: number (redacted unless --show-phones),
/// the names the messenger gets, and why.
#[test]
fn plan_verbose_lists_the_items_it_would_send() {
    let (_dir, path) =
        example_book("[telegram]\napi_id = 1\napi_hash = \"0123456789abcdef0123456789abcdef\"\n");
    let config = path.to_str().unwrap();
    let output = contactsyncd(&["--config", config, "plan", "--verbose"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("telegram: 4 new"), "{text}");
    assert!(
        text.contains("  import +49…89  Anna | Schmidt  (new)"),
        "{text}"
    );
    assert!(
        text.contains("  import +49…67  Rohrblitz GmbH  (new)"),
        "{text}"
    );
    assert!(!text.contains("+4915123456789"), "redacted: {text}");

    let shown = stdout(&contactsyncd(
        &["--config", config, "plan", "-v", "--show-phones"],
        &[],
    ));
    assert!(
        shown.contains("  import +4915123456789  Anna | Schmidt  (new)"),
        "{shown}"
    );

    let quiet = stdout(&contactsyncd(&["--config", config, "plan"], &[]));
    assert!(!quiet.contains("Anna"), "{quiet}");
    assert!(quiet.contains("--verbose lists them"), "{quiet}");

    let json: serde_json::Value = serde_json::from_str(&stdout(&contactsyncd(
        &["--config", config, "plan", "-v", "--json"],
        &[],
    )))
    .unwrap();
    let imports = &json["accounts"][0]["imports"];
    assert_eq!(imports[0]["phone"], "+49…89", "{json}");
    assert_eq!(imports[0]["first_name"], "Anna");
    assert_eq!(imports[0]["last_name"], "Schmidt");
    assert_eq!(imports[0]["reason"], "new");
}

/// No account configured (the example config): `plan --verbose` still shows what a first
/// sync to an account would import, instead of nothing.
#[test]
fn plan_verbose_without_an_account_shows_a_first_sync() {
    let (_dir, path) = example_book("");
    let config = path.to_str().unwrap();
    let text = stdout(&contactsyncd(&["--config", config, "plan", "-v"], &[]));
    assert!(text.contains("no backend account yet"), "{text}");
    assert!(
        text.contains("a first sync to an account would import 4 contacts"),
        "{text}"
    );
    assert!(
        text.contains("  import +49…20  Jörg | Müller  (new)"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&contactsyncd(
        &["--config", config, "plan", "-v", "--json"],
        &[],
    )))
    .unwrap();
    assert_eq!(json["accounts"], serde_json::json!([]));
    assert_eq!(
        json["first_sync_imports"].as_array().unwrap().len(),
        4,
        "{json}"
    );
}

/// `inspect --json` carries each card's Telegram usernames and the ignored values with why;
/// an ignored one is no error of the card.
#[test]
fn inspect_json_shows_telegram_usernames() {
    let output = contactsyncd(
        &[
            "inspect",
            "--json",
            "--region",
            "DE",
            fixture("telegram_nextcloud.vcf").to_str().unwrap(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&stdout(&output));
    let cards: Vec<_> = lines.iter().filter(|l| l.get("card").is_some()).collect();
    assert_eq!(
        cards[0]["telegram_usernames"],
        serde_json::json!(["Alice_Adams"])
    );
    assert_eq!(
        cards[1]["telegram_usernames"],
        serde_json::json!(["bobbybrown"])
    );
    assert_eq!(cards[2]["telegram_usernames"], serde_json::json!([]));
    assert_eq!(
        cards[2]["ignored_telegram_usernames"],
        serde_json::json!([{
            "value": "@1carol",
            "reason": "starts with '1'; a Telegram username starts with a letter",
        }])
    );
    assert_eq!(cards[2]["errors"], serde_json::json!([]));
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        (
            &summary["telegram_usernames"],
            &summary["ignored_telegram_usernames"],
            &summary["cards_with_errors"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(0)
        )
    );
}
