//! The service path (issue 16, items 6 and 7): the units stop on configuration errors, and
//! the README's login for the system service runs `login` as the unit runs the daemon.

use contactsyncd::cli::exit;

use crate::support::{repo_file, stderr};

const UNITS: [&str; 3] = [
    "systemd/contactsyncd.service",
    "systemd/contactsyncd@.service",
    "systemd/user/contactsyncd.service",
];

fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_file(unit)).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

/// A restart does not fix what needs the user: those exit codes (the table's) stop the
/// unit, not a loop every RestartSec; a temporary failure (75) is restarted.
#[test]
fn units_do_not_restart_on_usage_or_configuration_errors() {
    for unit in UNITS {
        assert_eq!(unit_values(unit, "Restart"), ["on-failure"], "{unit}");
        let prevented: Vec<u8> = unit_values(unit, "RestartPreventExitStatus")
            .iter()
            .flat_map(|v| v.split_whitespace().map(|c| c.parse::<u8>().unwrap()))
            .collect();
        assert_eq!(prevented, exit::NO_RESTART, "{unit}");
        assert!(!prevented.contains(&exit::TEMPFAIL), "{unit}");
    }
}

/// The README's `systemd-run … login` gives `login` the unit's own user, state directory,
/// credential and configuration: every property it sets is the unit's.
#[test]
fn the_readme_login_for_the_system_service_uses_the_units_settings() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("systemd-run ") && l.ends_with(" login"))
        .expect("the README logs in with systemd-run");
    let words: Vec<&str> = line.split_whitespace().collect();
    let properties: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    let unit = "systemd/contactsyncd.service";
    for wanted in [
        "DynamicUser",
        "StateDirectory",
        "StateDirectoryMode",
        "UMask",
    ] {
        let given: Vec<&str> = properties
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("{wanted}=")))
            .collect();
        assert_eq!(given, unit_values(unit, wanted), "{wanted}");
    }
    let credential: Vec<&str> = properties
        .iter()
        .filter_map(|p| p.strip_prefix("LoadCredential="))
        .collect();
    assert_eq!(credential.len(), 1, "{line}");
    assert!(
        unit_values(unit, "LoadCredential").contains(&credential[0].to_owned()),
        "{line}"
    );
    let exec = unit_values(unit, "ExecStart").concat();
    let (binary, rest) = exec.split_once(' ').unwrap();
    let config = rest.split_once("--config ").unwrap().1;
    assert!(
        line.contains(&format!("{binary} --config {config} login")),
        "{line} vs {exec}"
    );
}

/// What the `systemd-run` line gives `login`: the hash as a credential, the state in
/// `$STATE_DIRECTORY`, no `api_hash` in the configuration. The configuration loads (the
/// login then wants a terminal, which a test has not).
#[test]
fn login_takes_the_hash_from_the_units_credential() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(
        credentials.join("telegram-api-hash"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[[source]]\npath = \"book\"\n[telegram]\napi_id = 12345\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let login = |credentials: &std::path::Path| {
        crate::support::contactsyncd(
            &["--config", config.to_str().unwrap(), "login"],
            &[
                ("CREDENTIALS_DIRECTORY", credentials),
                ("STATE_DIRECTORY", &state),
            ],
        )
    };
    let output = login(&credentials);
    let message = stderr(&output);
    assert!(!message.contains("api_hash"), "{message}");
    assert!(message.contains("needs a terminal"), "{message}");
    let without = login(&dir.path().join("none"));
    assert_eq!(without.status.code(), Some(i32::from(exit::CONFIG)));
    assert!(stderr(&without).contains("telegram-api-hash"));
    // The units' fallback for a credential file that is missing: a blank value, not a hash.
    std::fs::write(credentials.join("telegram-api-hash"), "\n").unwrap();
    let blank = login(&credentials);
    assert_eq!(blank.status.code(), Some(i32::from(exit::CONFIG)));
    assert!(
        stderr(&blank).contains("not set") || stderr(&blank).contains("no api_hash"),
        "{}",
        stderr(&blank)
    );
}

/// The system units start with only the credentials the configuration uses: every
/// `LoadCredential=` has a `SetCredential=` fallback of the same name (systemd.exec(5),
/// 252 and later: then a missing file is "not considered fatal"), and that fallback is
/// blank, which contactsyncd takes for not set.
#[test]
fn a_credential_file_the_configuration_does_not_use_may_be_missing() {
    for unit in &UNITS[..2] {
        let loaded: Vec<String> = unit_values(unit, "LoadCredential")
            .iter()
            .map(|v| v.split_once(':').unwrap().0.to_owned())
            .collect();
        assert_eq!(loaded, ["telegram-api-hash", "whapi-token"], "{unit}");
        let fallbacks = unit_values(unit, "SetCredential");
        for name in &loaded {
            assert!(
                fallbacks.contains(&format!("{name}:\\n")),
                "{unit}: {name} has a blank fallback: {fallbacks:?}"
            );
        }
    }
}

/// A Telegram-only configuration under the unit: the whapi-token credential is the blank
/// fallback, and nothing asks for it; a [whatsapp] section with only that blank fallback is
/// told the token is not set.
#[test]
fn a_blank_credential_is_not_set() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(
        credentials.join("telegram-api-hash"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::write(credentials.join("whapi-token"), "\n").unwrap();
    std::fs::create_dir(dir.path().join("book")).unwrap();
    let config = dir.path().join("config.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        crate::support::contactsyncd(
            &["--config", config.to_str().unwrap(), "check-config"],
            &[
                ("CREDENTIALS_DIRECTORY", &credentials),
                ("STATE_DIRECTORY", &dir.path().join("state")),
            ],
        )
    };
    let telegram = "[[source]]\npath = \"book\"\n[telegram]\napi_id = 12345\n";
    let only_telegram = check(telegram);
    assert!(only_telegram.status.success(), "{}", stderr(&only_telegram));
    let whatsapp = check(&format!("{telegram}[whatsapp]\n"));
    assert_eq!(whatsapp.status.code(), Some(i32::from(exit::CONFIG)));
    assert!(
        stderr(&whatsapp).contains("whapi-token"),
        "{}",
        stderr(&whatsapp)
    );
}
