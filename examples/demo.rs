//! contactsyncd at work in one command, without a Telegram account:
//!
//! ```sh
//! cargo run --release --example demo
//! ```
//!
//! It starts the sandbox Telegram server of the tests (`tests/support/telegram`: a local
//! MTProto server, not Telegram) on a free loopback port, copies the example address book
//! (`examples/addressbook/`) into a temporary directory with a configuration and a state
//! directory logged in to that server, and runs the real commands through the library:
//! `sync --once`, an edit of a card, `sync --once` again to show the rename arriving, and
//! what the server holds after each. The temporary directory is removed at the end; nothing
//! is written anywhere else (not to your home, not to `~/.local/state`).

#[path = "../tests/support/telegram/mod.rs"]
mod telegram;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use contactsyncd::cli::{self, Cli};
use telegram::account::Registration;
use telegram::{ServerOptions, TestServer};

/// The card the demo edits, and how.
const EDITED_CARD: &str = "3b2a9c1e-anna.vcf";
const BEFORE: (&str, &str) = ("N:Schmidt;Anna;;;", "FN:Anna Schmidt");
const AFTER: (&str, &str) = ("N:Schmidt-Berg;Anna;;;", "FN:Anna Schmidt-Berg");

fn main() -> anyhow::Result<()> {
    let work = tempfile::Builder::new()
        .prefix("contactsyncd-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let sandbox = Sandbox::start()?;
    let result = demo(work.path(), &sandbox);
    drop(sandbox);
    let shown = work.path().display().to_string();
    work.close().with_context(|| format!("removing {shown}"))?;
    result?;
    println!("\nRemoved {shown}: the demo left nothing behind.");
    println!(
        "Next: `cargo test` runs every test; README.md, \"Quick start\", points contactsyncd at your own address book."
    );
    Ok(())
}

fn demo(dir: &Path, sandbox: &Sandbox) -> anyhow::Result<()> {
    let book = dir.join("addressbook");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/addressbook");
    copy_dir(&example, &book)?;
    let state = dir.join("state");
    seed_state(&state, &sandbox.server)?;
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "# The demo's configuration: the sandbox account (any api_id, any 32-hex api_hash).\n\
             state_dir = \"state\"\n\
             default_region = \"DE\"\n\n\
             [[source]]\n\
             path = \"addressbook\"\n\
             name = \"example\"\n\n\
             [telegram]\n\
             api_id = 12345\n\
             api_hash = \"0123456789abcdef0123456789abcdef\"\n",
    )?;

    println!(
        "contactsyncd demo: the example address book (examples/addressbook, {} cards) goes to a\n\
         sandbox Telegram server on {} (a local test server, not Telegram).\n\
         Everything lives in {} and is removed at the end.",
        count_cards(&book)?,
        sandbox.server.addr(),
        dir.display()
    );

    step("1. The first sync imports every card with a name and a phone");
    contactsyncd(&config, &["sync", "--once"])?;
    show_server(&sandbox.server, None);

    let card = book.join(EDITED_CARD);
    let text = std::fs::read_to_string(&card)?;
    anyhow::ensure!(
        text.contains(BEFORE.0) && text.contains(BEFORE.1),
        "{} is not the card the demo expects",
        card.display()
    );
    std::fs::write(
        &card,
        text.replace(BEFORE.0, AFTER.0).replace(BEFORE.1, AFTER.1),
    )?;
    step(&format!(
        "2. {EDITED_CARD} is edited ({} → {}); the next sync sends only that rename",
        BEFORE.1, AFTER.1
    ));
    contactsyncd(&config, &["sync", "--once"])?;
    show_server(&sandbox.server, Some("Schmidt-Berg"));

    step("3. Nothing changed: the sync sends nothing");
    let calls = sandbox.server.call_count();
    contactsyncd(&config, &["sync", "--once"])?;
    let imports = sandbox
        .server
        .calls()
        .into_iter()
        .skip(calls)
        .filter(|c| c.method == "contacts.importContacts")
        .count();
    println!("(contacts.importContacts calls during this sync: {imports})");
    Ok(())
}

fn step(title: &str) {
    println!("\n── {title}");
}

/// Runs one contactsyncd command through the library, as the binary would, and shows it.
fn contactsyncd(config: &Path, args: &[&str]) -> anyhow::Result<()> {
    println!(
        "$ contactsyncd --config {} {}",
        config.display(),
        args.join(" ")
    );
    let mut argv = vec!["contactsyncd", "--config"];
    let config = config.to_str().context("a UTF-8 temporary path")?;
    argv.push(config);
    argv.extend_from_slice(args);
    cli::run(Cli::try_parse_from(argv)?).map_err(|failure| {
        anyhow::anyhow!(
            "contactsyncd {} failed (exit code {}): {:#}",
            args.join(" "),
            failure.code,
            failure.error
        )
    })
}

/// What the sandbox account holds: its contact list (numbers with an account) and the
/// numbers saved without one.
fn show_server(server: &TestServer, highlight: Option<&str>) {
    let state = server.state();
    println!(
        "The sandbox server now holds {} contacts:",
        state.account.contacts.len()
    );
    for contact in state.account.contacts.values() {
        let name = format!("{} {}", contact.first_name, contact.last_name);
        let mark = match highlight {
            Some(word) if name.contains(word) => "   ← renamed",
            _ => "",
        };
        println!("  +{:<15} {}{mark}", contact.phone, name.trim());
    }
    for (phone, (first, last)) in &state.account.saved {
        println!("  +{phone:<15} {first} {last} (saved: no Telegram account)");
    }
}

/// The sandbox server on its own thread and tokio runtime, so that the commands can build
/// their own runtime on this one, as the binary does.
struct Sandbox {
    server: Arc<TestServer>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sandbox {
    fn start() -> anyhow::Result<Self> {
        let (started, server) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let server = Arc::new(TestServer::start(ServerOptions::default()).await);
                // Every number has an account, so every contact shows up in the list.
                server.state().account.rule = Registration::All;
                if started.send(Arc::clone(&server)).is_ok() {
                    let _ = stopped.await;
                }
            });
        });
        let server = server.recv().context("starting the sandbox server")?;
        Ok(Self {
            server,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What `contactsyncd login` would leave behind: a state directory with a session for the
/// sandbox server, logged in as its test account.
fn seed_state(dir: &Path, server: &TestServer) -> anyhow::Result<()> {
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

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn count_cards(dir: &Path) -> anyhow::Result<usize> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        files.push(entry?.path());
    }
    Ok(files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "vcf"))
        .count())
}
