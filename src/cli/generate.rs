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
pub fn man(dir: &Path) -> Result<(), Failure> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the man pages into {}", dir.display()))?;
    Ok(())
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
