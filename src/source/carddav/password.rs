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
        PasswordSource::Command(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return Err("password_command is empty".into());
            };
            let output = std::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .map_err(|err| format!("cannot run password_command {program:?}: {err}"))?;
            if !output.status.success() {
                return Err(format!(
                    "password_command {program:?} failed ({})",
                    output.status
                ));
            }
            let text = String::from_utf8_lossy(&output.stdout);
            Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
        }
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

/// A password file is read like every secret file: only a regular file (a FIFO or
/// `/dev/zero` named by mistake cannot block or flood the pass), up to a small cap.
fn read_secret(path: &std::path::Path) -> std::io::Result<String> {
    crate::regular_file::read_to_string_capped(path, crate::regular_file::MAX_SECRET_FILE_BYTES)
}
