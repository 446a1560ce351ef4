//! `contactsyncd authorize SOURCE`: OAuth 2.0 consent for a CardDAV source (Google's, or
//! any `auth = "oauth2"` one), on this machine's browser or, with `--no-browser`, on any
//! other (the URL is printed and the address the browser ends at is pasted back, as rclone
//! and gcloud do over SSH).

use std::io::Write;
use std::path::Path;

use clap::Args;

use crate::config::{self, BearerSource};
use crate::source::carddav::oauth::{self, Authorization, TokenError};
use crate::store::{Store, StoreError};

use super::{Failure, exit, state};

#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// The CardDAV source (`name` in its [[source]]) to authorize
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Do not open a browser: print the URL, open it on any machine, and paste the address
    /// the browser ends at (http://127.0.0.1:…/?…, a page that may not load) here
    #[arg(long)]
    pub no_browser: bool,
}

fn failure(code: u8, text: String) -> Failure {
    Failure {
        code,
        error: anyhow::anyhow!(text),
    }
}

pub fn authorize(config_path: Option<&Path>, args: &AuthorizeArgs) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let name = &args.name;
    let Some(source) = config.sources.iter().find(|s| s.name == *name) else {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        return Err(failure(
            exit::USAGE,
            format!(
                "no source is called {name:?}; the configured ones are {}",
                names.join(", ")
            ),
        ));
    };
    let Some(BearerSource::OAuth(oauth_config)) =
        source.carddav.as_ref().and_then(|c| c.bearer.as_ref())
    else {
        return Err(failure(
            exit::USAGE,
            format!(
                "source {name:?} does not log in with OAuth 2.0 (google = \"…\" or auth = \"oauth2\" in its [[source]]): there is nothing to authorize"
            ),
        ));
    };
    let (listener, redirect_uri) = oauth::loopback_listener()
        .map_err(|err| failure(exit::FAILURE, format!("cannot listen on 127.0.0.1: {err}")))?;
    let authorization = Authorization::new(oauth_config, &redirect_uri)
        .map_err(|reason| failure(exit::CONFIG, reason))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "To let contactsyncd read the address book of source {name}, open this URL in a browser and allow access:\n\n{}\n",
        authorization.url
    )?;
    if args.no_browser {
        writeln!(
            out,
            "Then the browser goes to {redirect_uri}?… : on another machine that page does not load, which is fine. Copy its whole address from the address bar, paste it here and press Enter:"
        )?;
    } else {
        let opened = open_browser(&authorization.url);
        writeln!(
            out,
            "{}Waiting for the browser to come back to {redirect_uri} (on a machine without a browser: Ctrl-C, and run `contactsyncd authorize {name} --no-browser`)",
            if opened {
                "The browser was asked to open it. "
            } else {
                ""
            }
        )?;
    }
    out.flush()?;
    drop(out);
    let Some(answer) = oauth::wait_for_redirect(listener, args.no_browser, |target| {
        authorization.is_answer(target)
    }) else {
        return Err(failure(
            exit::USAGE,
            "no answer came back (stdin ended, or 15 minutes passed); nothing was changed".into(),
        ));
    };
    let code = authorization
        .code_from(&answer)
        .map_err(|reason| failure(exit::LOGIN_REQUIRED, reason))?;
    let answer = state::runtime()?
        .block_on(oauth::exchange_code(
            source,
            oauth_config,
            &authorization,
            &code,
        ))
        .map_err(|err| {
            let code = match err {
                TokenError::Unreachable(_) => exit::TEMPFAIL,
                TokenError::InvalidGrant(_) => exit::LOGIN_REQUIRED,
                TokenError::Refused(_) => exit::CONFIG,
            };
            failure(code, format!("source {name}: {err}; nothing was changed"))
        })?;
    let had_refresh_token = answer.refresh_token.is_some();
    let now = crate::sync::Clock::now(&crate::sync::SystemClock);
    let tokens = oauth::tokens_after(None, &oauth_config.client_id, answer, now);
    // Beside a running daemon too: it holds the lock, SQLite orders the writes, and its
    // next poll reads the new tokens.
    let mut store = match Store::open_for_writing(&config.state_dir) {
        Err(StoreError::Locked { .. }) => Store::open_connection(&config.state_dir),
        other => other,
    }
    .map_err(|err| failure(exit::FAILURE, err.to_string()))?;
    store
        .set_oauth_tokens(name, &tokens)
        .and_then(|()| store.rediscover_carddav_source(name))
        .map_err(|err| failure(exit::FAILURE, err.to_string()))?;
    println!(
        "source {name} is authorized; the tokens are kept in the state ({}, readable only by you). `contactsyncd sync --once` and the daemon read it from now on.",
        config.state_dir.display()
    );
    if !had_refresh_token {
        println!(
            "note: the server gave no refresh token, so this lasts only until the access token expires; Google gives one only to an OAuth client of type \"Desktop app\""
        );
    }
    Ok(())
}

/// Asks the desktop's browser to open `url`, only where there is a desktop; whether that
/// was tried.
fn open_browser(url: &str) -> bool {
    let desktop =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    desktop
        && std::process::Command::new("xdg-open")
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
}
