//! The example configuration and every TOML snippet in the README parse and validate.

use contactsyncd::config;

use crate::support::repo_file;

#[test]
fn example_config_parses() {
    let path = repo_file("config/contactsyncd.toml");
    let config = config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.default_region.map(|r| r.code()).as_deref(),
        Some("DE")
    );
    assert_eq!(config.sources.len(), 1);
    assert_eq!(config.sources[0].name, "personal");
    assert!(config.sources[0].path.ends_with("examples/addressbook"));
    // Issue 16.9: the Quick start keeps its state inside the checkout, not in ~/.local/state.
    assert_eq!(config.state_dir, repo_file("target/example-state"));
}

/// The commented `[safety]` keys are valid and show the defaults.
#[test]
fn the_commented_safety_keys_of_the_example_show_the_defaults() {
    let path = repo_file("config/contactsyncd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("\n[safety]\n")
        .expect("the example documents [safety]");
    let end = start
        + 1
        + text[start + 1..]
            .find("\n\n")
            .expect("a blank line ends it");
    let uncommented: String = text[start..end]
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(key) if key.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => {
                format!("{key}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(
        uncommented.contains("\nfraction_min_contacts = "),
        "{uncommented}"
    );
    let config = config::parse(&format!("{}{uncommented}", &text[..start]), &path)
        .unwrap_or_else(|e| panic!("{uncommented}\n{e}"));
    assert_eq!(config.safety, contactsyncd::diff::DeleteLimits::default());
}

/// "Every key is shown; commented-out keys show their default": uncommenting the keys of
/// the example's live part (up to the first commented-out table, which have tests of their
/// own) leaves it valid, each key in its table, and changes no default. A top-level key
/// shown below `[[source]]` would land in that table.
#[test]
fn uncommenting_the_keys_of_the_example_keeps_it_valid() {
    let path = repo_file("config/contactsyncd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let live_end = text.find("\n# [").unwrap_or(text.len());
    let mut uncommented = String::new();
    let mut keys = Vec::new();
    for line in text[..live_end].lines() {
        match line.strip_prefix("# ") {
            Some(key_line)
                if key_line
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' ')) =>
            {
                keys.push(key_line.split(' ').next().unwrap().to_owned());
                uncommented.push_str(key_line);
            }
            _ => uncommented.push_str(line),
        }
        uncommented.push('\n');
    }
    uncommented.push_str(&text[live_end..]);
    for key in ["shutdown_timeout", "debounce", "max_deletes"] {
        assert!(keys.iter().any(|k| k == key), "{key} is shown: {keys:?}");
    }
    let config =
        config::parse(&uncommented, &path).unwrap_or_else(|e| panic!("{e}\nuncommented: {keys:?}"));
    assert_eq!(config.shutdown_timeout, 10);
    assert_eq!(config.watch, config::WatchConfig::default());
    assert_eq!(config.safety, contactsyncd::diff::DeleteLimits::default());
}

#[test]
fn every_toml_snippet_in_the_readme_parses() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let mut snippets = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed toml block");
        // The README's sources live under ~; they are made in a stand-in home.
        let home = tempfile::tempdir().unwrap();
        let snippet = body[..end].replace("\"~/", &format!("\"{}/", home.path().display()));
        for line in snippet.lines() {
            if let Some(path) = line
                .trim()
                .strip_prefix("path = \"")
                .and_then(|p| p.split('"').next())
            {
                let path = std::path::Path::new(path);
                if path.extension().is_some() {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, "").unwrap();
                } else {
                    std::fs::create_dir_all(path).unwrap();
                }
            }
        }
        config::parse(&snippet, &home.path().join("config.toml"))
            .unwrap_or_else(|e| panic!("README snippet does not parse:\n{snippet}\n{e}"));
        snippets += 1;
        rest = &body[end..];
    }
    assert!(snippets >= 1, "the README shows the configuration");
}

#[test]
fn the_commented_telegram_section_of_the_example_is_valid() {
    let path = repo_file("config/contactsyncd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("# [telegram]")
        .expect("the example documents [telegram]");
    // Uncomment the section's keys, keeping one of api_hash / api_hash_file.
    let section: String = text[start..]
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| {
            line.starts_with('[')
                || line
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' '))
        })
        .filter(|line| !line.starts_with("api_hash_file") && !line.starts_with("token_file"))
        .map(|line| format!("{line}\n"))
        .collect();
    let config = config::parse(&format!("{}\n{section}", &text[..start]), &path)
        .unwrap_or_else(|e| panic!("{section}\n{e}"));
    let rendered = config::render(&config).unwrap();
    assert!(
        rendered.contains("# api_hash = \"…\" is set in the configuration file"),
        "{rendered}"
    );
    assert!(
        !rendered.contains("0123456789abcdef"),
        "check-config never prints the hash"
    );
    let telegram = config.telegram.clone().expect("telegram section");
    assert_eq!(telegram.api_id, 12345);
    assert_eq!(telegram.batch_size, 100);
    assert_eq!(telegram.request_timeout, 30);
    assert_eq!(telegram.reconcile_interval, 6 * 3600);
    assert_eq!(format!("{:?}", telegram.api_hash), "Secret(********)");
    let whatsapp = config.whatsapp.expect("whatsapp section");
    assert_eq!(whatsapp.base_url, "https://gate.whapi.cloud");
    assert_eq!(whatsapp.requests_per_second, 1.0);
    assert!(
        !whatsapp.adopt_existing,
        "the user's own contacts are theirs by default"
    );
    assert!(
        !rendered.contains("your-channel-token"),
        "check-config never prints the token"
    );
}

#[test]
fn the_commented_log_section_of_the_example_is_valid() {
    let path = repo_file("config/contactsyncd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("# [log]").expect("the example documents [log]");
    let end = start + text[start..].find("\n\n").expect("a blank line ends it");
    let section: String = text[start..end]
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| {
            line.starts_with('[')
                || line
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' '))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(section.contains("show_personal_data = false"), "{section}");
    let config = config::parse(&format!("{}\n{section}", &text[..start]), &path)
        .unwrap_or_else(|e| panic!("{section}\n{e}"));
    assert_eq!(config.log, config::LogConfig::default());
}

/// The example's commented CardDAV source, uncommented (with password_file), is valid.
#[test]
fn the_commented_carddav_source_of_the_example_is_valid() {
    let path = repo_file("config/contactsyncd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("# [[source]]\n# name = \"nextcloud\"")
        .expect("the example documents a CardDAV source");
    let block = &text[start..text[start..].find("\n\n").map_or(text.len(), |e| start + e)];
    let source: String = block
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| {
            line.starts_with('[')
                || line
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' '))
        })
        .filter(|line| !line.starts_with("password_command"))
        .map(|line| format!("{line}\n"))
        .collect();
    let config = config::parse(&format!("{}\n{source}", &text[..start]), &path)
        .unwrap_or_else(|e| panic!("{source}\n{e}"));
    let carddav = config
        .sources
        .iter()
        .find_map(|s| s.carddav.as_ref())
        .expect("a CardDAV source");
    assert_eq!(carddav.url, "https://cloud.example.org/remote.php/dav");
    assert_eq!(carddav.address_books, ["contacts"]);
    assert_eq!(carddav.poll_interval, 300);
}

/// Issue 26: the example's commented Google source, uncommented (all but the token command,
/// which replaces the OAuth keys), is valid and is Google's CardDAV with OAuth.
#[test]
fn the_commented_google_source_of_the_example_is_valid() {
    let path = repo_file("config/contactsyncd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("# [[source]]\n# name = \"google\"")
        .expect("the example documents a Google source");
    let block = &text[start..text[start..].find("\n\n").map_or(text.len(), |e| start + e)];
    let source: String = block
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| {
            line.starts_with('[')
                || line
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' '))
        })
        .filter(|line| !line.starts_with("bearer_token_command"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(source.contains("oauth_scope = "), "{source}");
    let config = config::parse(&format!("{}\n{source}", &text[..start]), &path)
        .unwrap_or_else(|e| panic!("{source}\n{e}"));
    let carddav = config
        .sources
        .iter()
        .find_map(|s| s.carddav.as_ref())
        .expect("a CardDAV source");
    assert_eq!(carddav.url, config::GOOGLE_CARDDAV);
    assert!(matches!(
        &carddav.bearer,
        Some(config::BearerSource::OAuth(oauth)) if oauth.google.as_deref() == Some("me@gmail.com")
    ));
}
