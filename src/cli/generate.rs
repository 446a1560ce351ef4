//! `contactsyncd generate`: the man pages and shell completions, rendered from the clap
//! definitions in `cli.rs` so they never drift from the real command line.
//!
//! A subcommand rather than a build script: a build script writes into `OUT_DIR`, a hashed
//! directory that cargo-deb's assets cannot name, and could not share `Cli` without
//! compiling the whole library twice. The binary itself renders them, as `rg --generate`
//! does; `packaging/deb` runs it before `cargo deb`, and a `cargo install` user gets the
//! completions the same way.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Failure};

/// Writes `contactsyncd.1` and one page per command (`contactsyncd-sync.1`, …) into `dir`.
/// The main page adds what clap does not know: EXIT STATUS (from `exit::TABLE`, as the
/// README's), ENVIRONMENT, FILES and SEE ALSO.
pub fn man(dir: &Path) -> Result<(), Failure> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let command = Cli::command();
    clap_mangen::generate_to(command.clone(), dir)
        .with_context(|| format!("writing the man pages into {}", dir.display()))?;
    // The main page again, as clap_mangen::generate_to prepares it, with the sections.
    let mut root = command.disable_help_subcommand(true);
    root.build();
    let man = clap_mangen::Man::new(root);
    let path = dir.join(man.get_filename());
    main_page(&man)
        .and_then(|page| fs::write(&path, page))
        .with_context(|| format!("writing {}", path.display()))?;
    let path = dir.join("contactsyncd.toml.5");
    fs::write(&path, config_page().render())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `contactsyncd.toml(5)`: every key the configuration accepts (the schema's own field
/// names, as validation reads them), with the example configuration's text for each.
fn config_page() -> clap_mangen::roff::Roff {
    use clap_mangen::roff::{Roff, bold, italic, roman};
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "contactsyncd.toml",
            "5",
            "",
            env!("CARGO_PKG_VERSION"),
            "contactsyncd",
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "contactsyncd.toml - the configuration of contactsyncd",
    )]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "A TOML file: top-level keys first, then the tables. Relative paths are relative to the file's directory; ~/ is the home directory. Durations are a number of seconds or text such as \"500ms\", \"30s\", \"5m\", \"6h\", \"1d\". contactsyncd check-config validates the file and prints it with defaults applied; contactsyncd generate example-config prints an example with every key.",
    )]);
    roff.control("PP", []);
    roff.text([roman(
        "The file is found at --config PATH, else $CONTACTSYNCD_CONFIG, else $XDG_CONFIG_HOME/contactsyncd/config.toml (~/.config/contactsyncd/config.toml), else /etc/contactsyncd/config.toml.",
    )]);
    let mut table = None;
    for key in crate::config::key_docs() {
        if table != Some(key.table) {
            table = Some(key.table);
            let heading = match key.table {
                "" => "TOP-LEVEL KEYS".to_owned(),
                "source" => "[[source]]".to_owned(),
                other => format!("[{other}]"),
            };
            roff.control("SH", [heading.as_str()]);
        }
        roff.control("TP", []);
        roff.text([bold(key.key)]);
        roff.text([roman(key.doc.join(" "))]);
        if !key.example.is_empty() {
            roff.control("br", []);
            roff.text([roman("Example: "), italic(key.example)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("contactsyncd(1), contactsyncd-check-config(1)")]);
    roff
}

/// `contactsyncd.1`: clap's sections, then ours, then the version.
fn main_page(man: &clap_mangen::Man) -> io::Result<Vec<u8>> {
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.extend_from_slice(extra_sections().render().as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// The environment variables contactsyncd reads, and what for.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "CONTACTSYNCD_CONFIG",
        "The configuration file when --config is not given.",
    ),
    (
        "XDG_CONFIG_HOME",
        "Without --config and CONTACTSYNCD_CONFIG: $XDG_CONFIG_HOME/contactsyncd/config.toml (default ~/.config).",
    ),
    (
        "XDG_STATE_HOME",
        "The default state directory: $XDG_STATE_HOME/contactsyncd (default ~/.local/state).",
    ),
    (
        "STATE_DIRECTORY",
        "Set by systemd's StateDirectory=: the state directory, before XDG_STATE_HOME.",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Set by systemd's LoadCredential=: the credentials telegram-api-hash, whapi-token and carddav-NAME are read from it when the configuration names no other source. An empty credential counts as not set.",
    ),
    (
        "CONTACTSYNCD_LOG, RUST_LOG",
        "A log filter (e.g. info, debug) instead of log.level; the commands other than run log only warnings and errors without it.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd when stderr is the journal: logs go to journald (log.target = \"auto\").",
    ),
];

/// The files contactsyncd reads and writes.
const FILES: &[(&str, &str)] = &[
    (
        "~/.config/contactsyncd/config.toml",
        "The configuration of a user (see contactsyncd.toml(5) and the example in /usr/share/doc/contactsyncd/examples/contactsyncd.toml).",
    ),
    (
        "/etc/contactsyncd/config.toml, /etc/contactsyncd/NAME.toml",
        "The configuration of the system units contactsyncd.service and contactsyncd@NAME.service.",
    ),
    (
        "/etc/contactsyncd/telegram-api-hash, /etc/contactsyncd/whapi-token",
        "The system units' credentials (NAME.telegram-api-hash, NAME.whapi-token for contactsyncd@NAME); create only those your configuration uses.",
    ),
    (
        "~/.local/state/contactsyncd/state.db",
        "The state: fingerprints of the source files, per account the mirror, outbox and history, the Telegram session (0600, in a 0700 directory). /var/lib/contactsyncd for the system units.",
    ),
    (
        "STATE_DIR/state.lock",
        "Held by the one process that writes the state; status names it.",
    ),
];

fn extra_sections() -> clap_mangen::roff::Roff {
    use clap_mangen::roff::{Roff, bold, roman};
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for row in super::exit::TABLE {
        roff.control("TP", []);
        roff.text([bold(row.code.to_string())]);
        roff.text([roman(row.meaning.replace('`', ""))]);
    }
    roff.control("PP", []);
    roff.text([roman(super::exit::PRECEDENCE_TEXT.replace('`', ""))]);
    for (heading, entries) in [("ENVIRONMENT", ENVIRONMENT), ("FILES", FILES)] {
        roff.control("SH", [heading]);
        for (name, what) in entries {
            roff.control("TP", []);
            roff.text([bold(*name)]);
            roff.text([roman(*what)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "contactsyncd.toml(5), contactsyncd-sync(1), contactsyncd-run(1), contactsyncd-inspect(1), systemd.exec(5), /usr/share/doc/contactsyncd/README.md",
    )]);
    roff
}

/// The completion script for `shell`: on stdout, or into `dir` under the name the shell
/// looks for (`contactsyncd.bash`, `_contactsyncd`, `contactsyncd.fish`, …).
pub fn completions(shell: Shell, dir: Option<&Path>) -> Result<(), Failure> {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    match dir {
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_complete::generate_to(shell, &mut command, name, dir).with_context(|| {
                format!("writing the {shell} completions into {}", dir.display())
            })?;
        }
        None => {
            let mut out = io::stdout().lock();
            clap_complete::generate(shell, &mut command, name, &mut out);
            out.flush()?;
        }
    }
    Ok(())
}

/// The example configuration for a user (or, `system`, the package's /etc copy) on stdout.
pub fn example_config(system: bool) -> Result<(), Failure> {
    let target = if system {
        crate::config::ExampleFor::System
    } else {
        crate::config::ExampleFor::User
    };
    let text = crate::config::example_for(target)
        .context("the built-in example configuration lacks the lines it is adapted at")?;
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
