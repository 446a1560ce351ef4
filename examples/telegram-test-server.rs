//! A sandbox Telegram server on your own machine — clearly not Telegram. It speaks MTProto
//! to the unmodified grammers client, keeps a fake account, and writes what it holds to a
//! JSON file after every call, so the sync can be watched end to end without an account.
//!
//! ```sh
//! cargo run --example telegram-test-server -- --listen 127.0.0.1:8443 --dump /tmp/tg.json --register-even
//! ```

#[path = "../tests/support/telegram/mod.rs"]
mod telegram;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use telegram::account::Registration;
use telegram::{RateLimit, ServerOptions, TestServer};

#[derive(Debug, Parser)]
#[command(about = "A local MTProto sandbox server for contactsyncd (not Telegram)")]
struct Args {
    /// Address to listen on (loopback only is sensible)
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Rewrite this JSON file (contacts, saved phones, call log) after every call
    #[arg(long, value_name = "FILE")]
    dump: Option<PathBuf>,
    /// A file of people who have a Telegram account, one per line: a phone number
    /// (`+491701234567`), a number and a username (`+491701234567 @alice`), or a username
    /// alone (`@bob`: a user nobody finds by number, only by `contacts.resolveUsername`).
    /// Usernames are compared case-insensitively; empty lines and `#` comments are skipped
    #[arg(long, value_name = "FILE")]
    register_file: Option<PathBuf>,
    /// Every number whose last digit is even has an account
    #[arg(long, conflicts_with = "register_all")]
    register_even: bool,
    /// Every number has an account
    #[arg(long)]
    register_all: bool,
    /// Numbers imported beyond this come back in retry_contacts
    #[arg(long, value_name = "N")]
    quota: Option<usize>,
    /// More than N calls of one method per minute answer FLOOD_WAIT_SECONDS
    #[arg(long, value_name = "N")]
    rate_limit: Option<usize>,
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    flood_wait: i32,
    /// Write DC 1's auth key (hex) here: a client needs it to talk to the server (the listen
    /// address is DC 1; DCs 2–5 listen on ports of their own, each with its own key, as
    /// `--state-dir` seeds them)
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Seed this contactsyncd state directory with a session for this server, logged in:
    /// `contactsyncd` with `state_dir` = DIR and a `[telegram]` section then syncs here
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// With --state-dir: write a contactsyncd configuration for this sandbox into FILE (its
    /// state_dir, a [telegram] section, the address book of --source), so that
    /// `contactsyncd --config FILE sync --once` syncs your own book here, nothing to write
    /// by hand
    #[arg(long, value_name = "FILE", requires = "state_dir")]
    write_config: Option<PathBuf>,
    /// The address book --write-config names: your vdir, folder of .vcf files or export
    /// [default: the checkout's examples/addressbook]
    #[arg(long, value_name = "PATH", requires = "write_config")]
    source: Option<PathBuf>,
    /// The default_region --write-config sets, for numbers written without a country code
    #[arg(
        long,
        value_name = "CC",
        default_value = "DE",
        requires = "write_config"
    )]
    region: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = TestServer::start_on(
        args.listen,
        ServerOptions {
            rate_limit: args.rate_limit.map(|calls| RateLimit {
                calls,
                window: Duration::from_secs(60),
                wait_seconds: args.flood_wait,
            }),
            ..ServerOptions::default()
        },
    )
    .await;
    {
        let mut state = server.state();
        state.account.import_quota = args.quota;
        state.account.rule = if args.register_all {
            Registration::All
        } else if args.register_even {
            Registration::EvenLastDigit
        } else {
            Registration::Explicit
        };
        if let Some(file) = &args.register_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading --register-file {}", file.display()))?;
            for (number, line) in text.lines().enumerate() {
                let registration = parse_registration(line).with_context(|| {
                    format!("--register-file {} line {}", file.display(), number + 1)
                })?;
                match registration {
                    None => {}
                    Some((Some(phone), None)) => {
                        state.account.register(&phone, false);
                    }
                    Some((phone, Some(username))) => {
                        state
                            .account
                            .try_register_username(phone.as_deref(), &username)
                            .map_err(anyhow::Error::msg)
                            .with_context(|| {
                                format!("--register-file {} line {}", file.display(), number + 1)
                            })?;
                    }
                    Some((None, None)) => unreachable!("a registration names someone"),
                }
            }
        }
    }
    if let Some(dir) = &args.state_dir {
        seed_state(dir, &server)?;
        if let Some(file) = &args.write_config {
            write_config(file, dir, args.source.as_deref(), &args.region)?;
        }
    }
    if let Some(file) = &args.key_file {
        let hex: String = server
            .auth_key()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(file, hex)?;
    }
    println!(
        "telegram-test-server (a sandbox, not Telegram) listening on {}",
        server.addr()
    );
    let mut written = usize::MAX;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let calls = server.call_count();
        if let Some(file) = args.dump.as_ref().filter(|_| calls != written) {
            let text = serde_json::to_string_pretty(&server.dump())?;
            let temporary = file.with_extension("tmp");
            std::fs::write(&temporary, text)?;
            std::fs::rename(&temporary, file)?;
            written = calls;
        }
    }
    Ok(())
}

/// One `--register-file` line: `None` for an empty or comment line, else the phone and/or
/// the username (without `@`) it names.
fn parse_registration(line: &str) -> anyhow::Result<Option<(Option<String>, Option<String>)>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut username = None;
    let mut phone = String::new();
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix('@') {
            anyhow::ensure!(
                telegram::account::could_be_username(name),
                "`{word}` is no Telegram username (a letter first, then letters, digits and single `_`, at most 32)"
            );
            anyhow::ensure!(username.is_none(), "two usernames on one line");
            username = Some(name.to_owned());
        } else {
            // A number may be written with spaces: `+49 151 00000004`.
            phone.push_str(word);
        }
    }
    anyhow::ensure!(
        phone.is_empty()
            || (phone.chars().any(|c| c.is_ascii_digit())
                && phone
                    .chars()
                    .all(|c| c.is_ascii_digit() || "+-()".contains(c))),
        "`{phone}` is neither a phone number (`+491701234567`) nor a username (`@alice`)"
    );
    let phone = Some(phone).filter(|p| !p.is_empty());
    Ok(Some((phone, username)))
}

/// A configuration that syncs `source` into this sandbox: absolute paths, so it works
/// from any directory; the api_hash is any 32 hex digits (the sandbox checks none).
fn write_config(
    file: &std::path::Path,
    state_dir: &std::path::Path,
    source: Option<&std::path::Path>,
    region: &str,
) -> anyhow::Result<()> {
    let absolute = |path: &std::path::Path| -> anyhow::Result<PathBuf> {
        Ok(if path.is_absolute() {
            path.to_owned()
        } else {
            std::env::current_dir()?.join(path)
        })
    };
    let source = match source {
        Some(path) => absolute(path)?,
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/addressbook"),
    };
    // TOML basic strings: a path with a quote or backslash must be escaped.
    let quoted = |path: &std::path::Path| {
        format!(
            "\"{}\"",
            path.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        )
    };
    let text = format!(
        "# contactsyncd into the sandbox Telegram server (a local test server, not Telegram),\n\
         # written by telegram-test-server --write-config while it runs. Try:\n\
         #   contactsyncd --config {file} inspect\n\
         #   contactsyncd --config {file} sync --once\n\
         # and see what the server holds in its --dump file. Another book: --source PATH.\n\
         state_dir = {state}\n\
         default_region = \"{region}\"\n\n\
         [[source]]\n\
         path = {source}\n\n\
         [telegram]\n\
         api_id = 12345\n\
         # Any 32 hex digits: the sandbox checks none (a real account needs yours).\n\
         api_hash = \"0123456789abcdef0123456789abcdef\"\n",
        file = file.display(),
        state = quoted(&absolute(state_dir)?),
        source = quoted(&source),
    );
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("wrote {}", file.display());
    Ok(())
}

/// Points the daemon's own session store at this server, logged in as the test account.
fn seed_state(dir: &std::path::Path, server: &TestServer) -> anyhow::Result<()> {
    use contactsyncd::store::Store;
    use contactsyncd::store::telegram_session::{LoggedIn, TelegramSession};
    drop(Store::open_for_writing(dir)?);
    TelegramSession::import(dir, &server.session_data())?;
    let me = server.state().me.clone();
    TelegramSession::open(dir)?.set_logged_in(&LoggedIn {
        user_id: me.user_id,
        phone: Some(me.phone),
        first_name: Some(me.first_name),
    })?;
    Ok(())
}
