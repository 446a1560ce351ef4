//! `contactsyncd login` / `logout` for Telegram: code, then the 2FA password when the
//! account has one. Questions go through [`Prompt`], so tests answer them without a terminal.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use grammers_client::client::SignInError;

use super::telegram::TelegramBackend;
use crate::config::TelegramConfig;
use crate::phone::redact;
use crate::store::telegram_session::{LoggedIn, TelegramSession};
use crate::store::{SetAside, Store, StoreError};

/// How `login` asks its questions.
pub trait Prompt {
    fn ask(&mut self, question: &str) -> io::Result<String>;
    /// Hidden input (passwords).
    fn ask_secret(&mut self, question: &str) -> io::Result<String>;
    fn tell(&mut self, message: &str);
}

/// Questions on the terminal; refuses to run without one (a service has no one to answer).
pub struct TerminalPrompt;

impl TerminalPrompt {
    pub fn new() -> Result<Self, LoginError> {
        if io::stdin().is_terminal() {
            Ok(Self)
        } else {
            Err(LoginError::NoTerminal)
        }
    }
}

impl Prompt for TerminalPrompt {
    fn ask(&mut self, question: &str) -> io::Result<String> {
        print!("{question}");
        io::stdout().flush()?;
        let mut answer = String::new();
        if io::stdin().lock().read_line(&mut answer)? == 0 {
            // End of input (Ctrl-D): no answer will come, asking again would loop.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no answer (end of input)",
            ));
        }
        Ok(answer.trim().to_owned())
    }

    fn ask_secret(&mut self, question: &str) -> io::Result<String> {
        rpassword::prompt_password(question)
    }

    fn tell(&mut self, message: &str) {
        println!("{message}");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("login needs a terminal to ask for the code; run `contactsyncd login` interactively")]
    NoTerminal,
    #[error(
        "[telegram] is not configured: add api_id and api_hash (`contactsyncd generate example-config` shows them)"
    )]
    NotConfigured,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("reading the answer: {0}")]
    Io(#[from] io::Error),
    #[error("Telegram refused: {0}")]
    Telegram(String),
    /// No answer from Telegram at all: the network, not the account.
    #[error(
        "cannot reach Telegram ({0}); check the network connection, then run `contactsyncd login` again"
    )]
    Unreachable(String),
    #[error("no account for this number: create one with an official Telegram app first")]
    SignUpRequired,
    #[error("too many wrong {0}; run `contactsyncd login` again")]
    TooManyAttempts(&'static str),
    /// Already logged in, and the answer was not to replace the session.
    #[error("the current session is kept; nothing changed")]
    SessionKept,
}

const ATTEMPTS: usize = 3;

/// Who logged in, and what of another account was set aside for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    pub account: LoggedIn,
    /// The mirror and queue of the Telegram user logged in before, when that was another
    /// one: never used to delete or skip anything on this one.
    pub set_aside: Option<SetAside>,
}

/// What `logout` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    pub contacts: u64,
    pub batches: usize,
    /// Whether there was a session to end (not after a logout, or before any login).
    pub had_session: bool,
}

/// Logs in and keeps the session in the state database. Landing on another Telegram user
/// than the one the account's mirror belongs to sets that mirror and queue aside.
pub async fn login(
    config: &TelegramConfig,
    state_dir: &Path,
    prompt: &mut dyn Prompt,
) -> Result<LoginOutcome, LoginError> {
    let mut store = Store::open_for_writing(state_dir)?;
    // A session revoked at the server (no logout here) still names its user.
    let current = TelegramSession::logged_in(state_dir)?;
    let previous = current.as_ref().map(|a| a.user_id);
    if let Some(current) = &current {
        let who = format!(
            "{} ({})",
            current.first_name.as_deref().unwrap_or("?"),
            current
                .phone
                .as_deref()
                .map(|p| redact(&format!("+{}", p.trim_start_matches('+'))))
                .unwrap_or_default()
        );
        let revoked = store.account("telegram")?.is_some_and(|a| a.auth_required);
        if revoked {
            prompt.tell(&format!(
                "The session of {who} is no longer valid; logging in again."
            ));
        } else {
            prompt.tell(&format!("Already logged in as {who}."));
            let answer = prompt.ask("Log in again and replace this session? [y/N]: ")?;
            if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
                return Err(LoginError::SessionKept);
            }
        }
    }
    let phone = match &config.phone {
        Some(phone) => phone.clone(),
        None => ask_phone(prompt)?,
    };
    let session = Arc::new(TelegramSession::open(state_dir)?);
    let backend = TelegramBackend::connect(config, Arc::clone(&session));
    let client = backend.client().clone();
    let api_hash = config.api_hash.expose().to_owned();
    let request_phone = phone.clone();
    let timeout = std::time::Duration::from_secs(config.request_timeout);
    // grammers panics on the sentCodeSuccess / sentCodePaymentRequired answers: contain it.
    let token = tokio::spawn(async move {
        tokio::time::timeout(
            timeout,
            client.request_login_code(&request_phone, &api_hash),
        )
        .await
    })
    .await
    .map_err(|_| LoginError::Telegram("unexpected answer to auth.sendCode".into()))?
    .map_err(|_| LoginError::Unreachable(format!("no answer within {} s", timeout.as_secs())))?
    .map_err(refused_or_unreachable)?;
    prompt.tell(&format!(
        "Telegram sent a login code to the app of {}.",
        redact(&phone)
    ));

    let client = backend.client();
    let mut user = None;
    for attempt in 1..=ATTEMPTS {
        let code = prompt.ask("Code: ")?;
        match client.sign_in(&token, &code).await {
            Ok(signed_in) => {
                user = Some(signed_in);
                break;
            }
            Err(SignInError::InvalidCode) if attempt < ATTEMPTS => {
                prompt.tell("That code is not right; try again.")
            }
            Err(SignInError::InvalidCode) => return Err(LoginError::TooManyAttempts("codes")),
            Err(SignInError::SignUpRequired) => return Err(LoginError::SignUpRequired),
            Err(SignInError::PasswordRequired(mut password_token)) => {
                for attempt in 1..=ATTEMPTS {
                    let question = match password_token.hint() {
                        Some(hint) => format!("Two-step verification password (hint: {hint}): "),
                        None => "Two-step verification password: ".to_owned(),
                    };
                    let password = prompt.ask_secret(&question)?;
                    match client.check_password(password_token, password.trim()).await {
                        Ok(signed_in) => {
                            user = Some(signed_in);
                            break;
                        }
                        Err(SignInError::InvalidPassword(next)) if attempt < ATTEMPTS => {
                            prompt.tell("That password is not right; try again.");
                            password_token = next;
                        }
                        Err(SignInError::InvalidPassword(_)) => {
                            return Err(LoginError::TooManyAttempts("passwords"));
                        }
                        Err(other) => return Err(LoginError::Telegram(other.to_string())),
                    }
                }
                break;
            }
            Err(other) => return Err(LoginError::Telegram(other.to_string())),
        }
    }
    let user = user.ok_or(LoginError::TooManyAttempts("codes"))?;
    let account = LoggedIn {
        user_id: user.id().bare_id().unwrap_or_default(),
        phone: user.phone().map(str::to_owned).or(Some(phone)),
        first_name: user.first_name().map(str::to_owned),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let set_aside = store.adopt_remote_user("telegram", account.user_id, previous, now)?;
    if let Some(aside) = &set_aside {
        tracing::info!(
            key = %aside.key,
            contacts = aside.contacts,
            batches = aside.batches,
            "another Telegram account: the previous one's mirror and queue are set aside"
        );
    }
    session.set_logged_in(&account)?;
    store.clear_auth_required("telegram")?;
    Ok(LoginOutcome { account, set_aside })
}

/// Telegram's answer is a refusal; anything else (no connection, a dropped one, no key
/// exchange) means Telegram was not reached.
fn refused_or_unreachable(err: grammers_mtsender::InvocationError) -> LoginError {
    use grammers_mtsender::InvocationError;
    match err {
        InvocationError::Io(_)
        | InvocationError::Transport(_)
        | InvocationError::Dropped(_)
        | InvocationError::Authentication(_) => LoginError::Unreachable(err.to_string()),
        other => LoginError::Telegram(other.to_string()),
    }
}

/// The account's phone number; an empty answer is asked again, never sent to Telegram.
fn ask_phone(prompt: &mut dyn Prompt) -> Result<String, LoginError> {
    for _ in 0..ATTEMPTS {
        let answer = prompt.ask("Phone number, international format (+49…): ")?;
        let answer = answer.trim();
        if !answer.is_empty() {
            return Ok(answer.to_owned());
        }
        prompt.tell("The account's phone number is needed, e.g. +491701234567.");
    }
    Err(LoginError::TooManyAttempts("phone numbers (empty)"))
}

/// Logs out at Telegram (best effort) and forgets the session. The mirror and the queue
/// stay, marked as that user's: a later login to the same user goes on with them, one to
/// another user sets them aside.
pub async fn logout(config: &TelegramConfig, state_dir: &Path) -> Result<Kept, LoginError> {
    let store = Store::open_for_writing(state_dir)?;
    let logged_in = TelegramSession::logged_in(state_dir)?;
    let had_session = logged_in.is_some();
    if let Some(account) = logged_in {
        store.note_remote_user("telegram", account.user_id)?;
        let session = Arc::new(TelegramSession::open(state_dir)?);
        let backend = TelegramBackend::connect(config, session);
        let timeout = std::time::Duration::from_secs(config.request_timeout);
        if let Ok(Err(err)) = tokio::time::timeout(timeout, backend.client().sign_out()).await {
            tracing::warn!(
                "Telegram did not confirm the logout ({err}); the session is forgotten anyway"
            );
        }
    }
    TelegramSession::forget(state_dir)?;
    if had_session {
        store.set_auth_required("telegram", "logged out")?;
    }
    let counts = store.mirror_counts("telegram")?;
    Ok(Kept {
        contacts: counts.imported + counts.saved,
        batches: store.open_batch_count("telegram")?,
        had_session,
    })
}
