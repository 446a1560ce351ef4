//! The exit codes of every command, in one table: the constants the commands return, and
//! the text the README and `man contactsyncd` show (rendered from [`TABLE`], so the three
//! cannot drift apart; a test compares the README's copy).
//!
//! A script or a systemd timer tells three outcomes apart: done with nothing left (0), work
//! left that the next run does by itself (75, sysexits' `EX_TEMPFAIL`), and what needs the
//! user (2 to 5). When several apply, the one listed first in [`PRECEDENCE`] wins.

use crate::source::carddav::CardDavError;
use crate::sync::{PassReport, Stop};

pub const SUCCESS: u8 = 0;
/// Something failed at run time (I/O, state, another process holding the state).
pub const FAILURE: u8 = 1;
/// Unusable command line (clap's own code).
pub const USAGE: u8 = 2;
/// The configuration file is missing or invalid, or an account's or source's settings do
/// not work.
pub const CONFIG: u8 = 3;
/// `sync`: the guard holds deletions (see `status`; `--force-delete` applies them).
pub const DELETES_HELD: u8 = 4;
/// An account needs `contactsyncd login`, or a server refused the configured password or
/// token.
pub const LOGIN_REQUIRED: u8 = 5;
/// Work remains queued, or a source or server cannot be reached now: a later run (or the
/// daemon) goes on by itself. sysexits.h's `EX_TEMPFAIL`.
pub const TEMPFAIL: u8 = 75;

/// The codes a restart cannot fix: the units' `RestartPreventExitStatus=` (a test keeps
/// them equal).
pub const NO_RESTART: &[u8] = &[USAGE, CONFIG, DELETES_HELD, LOGIN_REQUIRED];

/// One row of the table.
pub struct Row {
    pub code: u8,
    pub meaning: &'static str,
}

/// Every exit code, in the order of [`PRECEDENCE`] after 0 and 1.
pub const TABLE: &[Row] = &[
    Row {
        code: SUCCESS,
        meaning: "Done, nothing left to do. For `inspect`: it read what it could (broken cards are data, not failures).",
    },
    Row {
        code: FAILURE,
        meaning: "A run-time failure: I/O, the state database, or another process holding the state (the message names its pid).",
    },
    Row {
        code: USAGE,
        meaning: "An unusable command line: an unknown option, a path that does not exist, a bad `--region`, an unknown source name.",
    },
    Row {
        code: CONFIG,
        meaning: "The configuration is missing or invalid, or settings of an account or source do not work (a WhatsApp `base_url` that answers 404, a CardDAV URL that is no address book). Edit the configuration.",
    },
    Row {
        code: LOGIN_REQUIRED,
        meaning: "Needs you: an account needs `contactsyncd login`, a CardDAV source with OAuth needs `contactsyncd authorize NAME` (not yet authorized, or revoked or expired), or a server refused the configured password or token (CardDAV 401, a refused Whapi token).",
    },
    Row {
        code: DELETES_HELD,
        meaning: "`sync`: the safety limits hold deletions (or a reconcile); review them with `plan --verbose`, apply them with `sync --once --force-delete`.",
    },
    Row {
        code: TEMPFAIL,
        meaning: "Work remains, and a later run does it by itself: batches stayed queued (network down, a pause the server asked for), or a source or server cannot be reached now (a missing path, a server down). sysexits' EX_TEMPFAIL.",
    },
];

/// Which code wins when several apply: what needs the user before what fixes itself.
pub const PRECEDENCE: &[u8] = &[
    FAILURE,
    USAGE,
    CONFIG,
    LOGIN_REQUIRED,
    DELETES_HELD,
    TEMPFAIL,
];

/// The sentence that says so, in the README and the man page.
pub const PRECEDENCE_TEXT: &str = "When several apply, the first of 1, 2, 3, 5, 4, 75 wins: what needs you comes before what a later run does by itself. `sync --once --offline` queues by request: its queued batches alone exit 0.";

/// The table as Markdown (the README's copy; a test keeps it current).
pub fn markdown() -> String {
    let mut text = String::from("| code | meaning |\n|---|---|\n");
    for row in TABLE {
        text.push_str(&format!("| `{}` | {} |\n", row.code, row.meaning));
    }
    text.push('\n');
    text.push_str(PRECEDENCE_TEXT);
    text.push('\n');
    text
}

/// The most urgent of several codes (see [`PRECEDENCE`]); 0 when there are none.
pub fn most_urgent(codes: impl IntoIterator<Item = u8>) -> u8 {
    codes
        .into_iter()
        .filter(|c| *c != SUCCESS)
        .min_by_key(|c| {
            PRECEDENCE
                .iter()
                .position(|p| p == c)
                .unwrap_or(PRECEDENCE.len())
        })
        .unwrap_or(SUCCESS)
}

/// What a finished `sync --once` pass exits with, and the line that says why (its report
/// was printed before). `None`: done, nothing left.
pub fn of_pass(report: &PassReport, offline: bool) -> Option<(u8, String)> {
    let mut reasons: Vec<(u8, String)> = Vec::new();
    for a in &report.accounts {
        match &a.stop {
            Some(Stop::Setup { reason }) => reasons.push((
                CONFIG,
                format!(
                    "{} is stopped: {reason}; nothing is sent to it until the configuration changes",
                    a.backend
                ),
            )),
            Some(Stop::LoginRequired { .. }) => reasons.push((
                LOGIN_REQUIRED,
                format!("{} needs `contactsyncd login`", a.backend),
            )),
            Some(Stop::Paused { .. } | Stop::Network { .. }) => reasons.push((
                TEMPFAIL,
                format!(
                    "{}: work remains queued (see above); a later `sync --once` or the daemon sends it",
                    a.backend
                ),
            )),
            Some(Stop::Offline) => {}
            None if a.queued_batches > 0 && !offline => reasons.push((
                TEMPFAIL,
                format!(
                    "{}: work remains queued (see above); a later `sync --once` or the daemon sends it",
                    a.backend
                ),
            )),
            None => {}
        }
        if a.held.is_some() {
            // The report above gave the reason and the remedy: said once.
            reasons.push((
                DELETES_HELD,
                "exit 4: deletions held, nothing deleted (see above)".to_owned(),
            ));
        }
    }
    for name in &report.refused_credentials {
        reasons.push((
            LOGIN_REQUIRED,
            format!(
                "the server of source {name} refused the user name or password: fix them (`contactsyncd check-source {name}` tries them)"
            ),
        ));
    }
    for name in &report.needs_authorization {
        reasons.push((
            LOGIN_REQUIRED,
            format!("source {name} needs you: run `contactsyncd authorize {name}`"),
        ));
    }
    for name in &report.refused_tokens {
        reasons.push((
            LOGIN_REQUIRED,
            format!(
                "the server of source {name} refused a fresh access token: the account authorized may not read it (another account, or too narrow a scope); `contactsyncd authorize {name}` with the right one"
            ),
        ));
    }
    for status in &report.unknown_sources {
        if !report.refused_credentials.contains(&status.name)
            && !report.needs_authorization.contains(&status.name)
            && !report.refused_tokens.contains(&status.name)
        {
            reasons.push((
                TEMPFAIL,
                format!(
                    "source {} cannot be read now (see above); its contacts are kept and it is read again at the next pass",
                    status.name
                ),
            ));
        }
    }
    let code = most_urgent(reasons.iter().map(|(code, _)| *code));
    reasons.into_iter().find(|(c, _)| *c == code)
}

/// What a CardDAV source that cannot be read exits with: a refused password needs the
/// user, a server away or busy only time, and anything else (no address book there, not
/// CardDAV, a password file that cannot be read) the configuration.
pub fn of_carddav(err: &CardDavError) -> u8 {
    match err {
        CardDavError::Unauthorized { .. }
        | CardDavError::TokenRefused { .. }
        | CardDavError::NeedsAuthorization { .. } => LOGIN_REQUIRED,
        CardDavError::Unreachable { .. } | CardDavError::Wait { .. } => TEMPFAIL,
        CardDavError::Status { status, .. }
            if status.is_server_error() || status.as_u16() == 429 =>
        {
            TEMPFAIL
        }
        CardDavError::Status { .. } | CardDavError::Garbage { .. } | CardDavError::Setup { .. } => {
            CONFIG
        }
    }
}

/// What a backend's refusal exits with, for the commands that ask an account directly
/// (`remote list`, `remote export`).
pub fn of_backend(err: &crate::backend::BackendError) -> u8 {
    use crate::backend::BackendError;
    match err {
        BackendError::Auth(_) => LOGIN_REQUIRED,
        BackendError::Setup(_) => CONFIG,
        BackendError::Temporary(_) | BackendError::Wait { .. } => TEMPFAIL,
        BackendError::Permanent(_) => FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_row_and_a_place_in_the_precedence() {
        for row in TABLE.iter().filter(|r| r.code != SUCCESS) {
            assert!(PRECEDENCE.contains(&row.code), "{}", row.code);
        }
        assert_eq!(TABLE.len(), PRECEDENCE.len() + 1);
        let order: Vec<String> = PRECEDENCE.iter().map(u8::to_string).collect();
        assert!(
            PRECEDENCE_TEXT.contains(&order.join(", ")),
            "the sentence names the precedence"
        );
    }

    #[test]
    fn the_user_before_the_retry() {
        assert_eq!(most_urgent([TEMPFAIL, LOGIN_REQUIRED]), LOGIN_REQUIRED);
        assert_eq!(most_urgent([TEMPFAIL, DELETES_HELD]), DELETES_HELD);
        assert_eq!(most_urgent([LOGIN_REQUIRED, CONFIG]), CONFIG);
        assert_eq!(most_urgent([]), SUCCESS);
    }
}
