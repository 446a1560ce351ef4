//! The password, read from where the configuration says.

#[allow(unused_imports)]
use super::*;

/// Reads the password from where the configuration says, now. `None`: no password (a
/// credential that is not there, for a source without a user name).
pub(super) fn read_password(
    source: &PasswordSource,
    has_user: bool,
) -> Result<Option<String>, String> {
    match source {
        PasswordSource::File(path) => read_secret(path)
            .map(|text| Some(text.trim_end_matches(['\r', '\n']).to_owned()))
            .map_err(|err| format!("cannot read password_file {}: {err}", path.display())),
        PasswordSource::Command(argv) => run_secret_command(argv, "password_command").map(Some),
        PasswordSource::Credential(name) => {
            let path =
                std::env::var_os("CREDENTIALS_DIRECTORY").map(|dir| PathBuf::from(dir).join(name));
            // The units give every credential a blank `SetCredential=` fallback so that one
            // the configuration does not use may be missing: blank means not set.
            let text = path.as_deref().map(read_secret);
            match text {
                Some(Ok(text)) if !text.trim().is_empty() => {
                    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
                }
                _ if has_user => Err(format!(
                    "no password: set password_file, password_command, or the systemd credential {name}"
                )),
                _ => Ok(None),
            }
        }
    }
}

/// Runs the program a configuration key names (`password_command`, `bearer_token_command`)
/// and returns the first line it prints. Its output is read up to the secret-file cap: a
/// program that prints without end is stopped, not read until memory runs out.
pub(super) fn run_secret_command(argv: &[String], key: &str) -> Result<String, String> {
    use std::io::Read as _;
    let Some((program, args)) = argv.split_first() else {
        return Err(format!("{key} is empty"));
    };
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot run {key} {program:?}: {err}"))?;
    let cap = crate::regular_file::MAX_SECRET_FILE_BYTES;
    let mut output = Vec::new();
    let read = match child.stdout.take() {
        Some(stdout) => stdout.take(cap + 1).read_to_end(&mut output).map(drop),
        None => Ok(()),
    };
    if output.len() as u64 > cap {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{key} {program:?} printed more than {cap} bytes"));
    }
    let status = child
        .wait()
        .map_err(|err| format!("cannot run {key} {program:?}: {err}"))?;
    read.map_err(|err| format!("cannot read what {key} {program:?} printed: {err}"))?;
    if !status.success() {
        return Err(format!("{key} {program:?} failed ({status})"));
    }
    let text = String::from_utf8_lossy(&output);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// A password file is read like every secret file: only a regular file (a FIFO or
/// `/dev/zero` named by mistake cannot block or flood the pass), up to a small cap.
fn read_secret(path: &std::path::Path) -> std::io::Result<String> {
    crate::regular_file::read_to_string_capped(path, crate::regular_file::MAX_SECRET_FILE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `yes` prints without end: it is stopped at the cap instead of read until memory runs
    /// out (`Command::output` read it all).
    #[test]
    fn a_secret_command_that_prints_without_end_is_stopped() {
        let argv = vec!["yes".to_owned(), "token".to_owned()];
        let err = run_secret_command(&argv, "bearer_token_command").unwrap_err();
        assert!(
            err.starts_with("bearer_token_command \"yes\" printed more than"),
            "{err}"
        );
        let argv = vec!["printf".to_owned(), "s3cret\\nmore\\n".to_owned()];
        assert_eq!(
            run_secret_command(&argv, "password_command").unwrap(),
            "s3cret"
        );
    }
}
