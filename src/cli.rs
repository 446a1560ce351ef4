//! Subcommands and their output: human text, or JSON (Lines) with `--json`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use serde_json::json;

use crate::config::{self, CardFilter, Config};
use crate::contact::{
    self, CardContact, CardRef, DesiredSet, DesiredSetBuilder, NameSource, PhoneEntry, PhoneOutcome,
};
use crate::phone::{DefaultRegion, Validity};
use crate::source;
use crate::sync::plural;
use crate::vcard::{self, CardError, CardOutcome, FileSummary};

mod authorize;
pub mod exit;
mod generate;
mod state;

#[derive(Debug, Parser)]
#[command(
    name = "contactsyncd",
    version,
    about = "Keeps your Telegram and WhatsApp contact lists equal to your vCard address book"
)]
pub struct Cli {
    /// Configuration file [default: $CONTACTSYNCD_CONFIG, else
    /// $XDG_CONFIG_HOME/contactsyncd/config.toml, else /etc/contactsyncd/config.toml]
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options (before or after the command)"
    )]
    pub config: Option<PathBuf>,

    /// Log lines on stderr as text or as JSON Lines (for machines); journald gets
    /// structured fields anyway
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        help_heading = "Global options (before or after the command)"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show how every card is understood: names, phones in E.164, problems
    Inspect(InspectArgs),
    /// Validate the configuration (every source must be readable now) and print it with defaults applied
    CheckConfig,
    /// Connect to the CardDAV sources (or the one named): discovery, their address books
    /// (URL, name, sync support, card count) and which are read. Stores nothing
    CheckSource(CheckSourceArgs),
    /// Scan and diff: what a sync would send and what the guard would hold. Changes nothing
    Plan(PlanArgs),
    /// One full pass: scan, plan, write the outbox, send what may be sent
    Sync(SyncArgs),
    /// Sources, accounts, queue, guard and the last run
    Status(JsonArg),
    /// Recent runs and batches
    History(HistoryArgs),
    /// Run as a service: watch the sources and sync every change (SIGHUP reloads the
    /// configuration; SIGTERM or Ctrl-C stops)
    #[command(
        long_about = "Run as a service: watch the sources and sync every change after watch.debounce, rescan every watch.rescan_interval, poll CardDAV sources every poll_interval, and retry queued work every minute.\n\nSignals: SIGHUP reloads the configuration (a broken one is refused and logged; the old one stays). SIGTERM or SIGINT (Ctrl-C) stops after the request in flight, at most shutdown_timeout; a second one stops at once.\n\nUnder systemd (Type=notify) it reports READY, STATUS, WATCHDOG, RELOADING and STOPPING."
    )]
    Run,
    /// Log in to Telegram (asks for the code, and the 2FA password if the account has one)
    Login,
    /// Log out of Telegram and forget the session
    Logout,
    /// Give a CardDAV source with OAuth 2.0 (Google Contacts) access: opens or prints the
    /// consent URL and keeps the tokens in the state
    Authorize(authorize::AuthorizeArgs),
    /// The account's contacts as the messenger has them
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Man pages, shell completions and the example configuration (for packagers, and to
    /// start a configuration from)
    #[command(subcommand)]
    Generate(GenerateCommand),
}

#[derive(Debug, Args)]
pub struct CheckSourceArgs {
    /// The source's name (default: every CardDAV source)
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// One JSON object per source: {"source","url","books":[{"url","name","supports_sync","cards","read"}]} or {"source","url","error"}
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write contactsyncd.1 and one page per command (contactsyncd-sync.1, …) into DIR
    Man {
        /// The folder to write the pages into (created if missing)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the example configuration, every key documented, to start your own from:
    /// `contactsyncd generate example-config > ~/.config/contactsyncd/config.toml`
    ExampleConfig {
        /// The system service's /etc/contactsyncd/config.toml instead (what the package
        /// installs)
        #[arg(long)]
        system: bool,
    },
    /// Print the completion script for SHELL, e.g. `contactsyncd generate completions bash`
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
        /// Write it into DIR under the name the shell looks for instead
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// List the remote contacts and whether each is in the address book
    List {
        /// Show phone numbers in full (they are redacted otherwise)
        #[arg(long)]
        show_phones: bool,
        /// JSON Lines: one object per remote contact (backend, phone, names, user_id,
        /// in_address_book, owner)
        #[arg(long)]
        json: bool,
    },
    /// Write the remote contacts into DIR as vCard 4.0 files, one per contact (a vdir);
    /// running it again updates DIR in place
    Export {
        /// The folder to write; created (mode 0700) if missing. Only files named
        /// `contactsyncd-ACCOUNT-….vcf` are ever replaced or removed in it
        dir: PathBuf,
        /// Only this account (`telegram`, `whatsapp`); default: every connected one
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Undo: delete from the account every contact contactsyncd added (never one you added
    /// yourself), and add nothing more to it until `remote resume`
    ForgetAll {
        /// Only this account (`telegram`, `whatsapp`); default: every connected one
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Do not ask (without a terminal to ask on, it refuses unless given)
        #[arg(long)]
        yes: bool,
        /// Telegram: afterwards also call contacts.resetSaved, which empties the account's
        /// list of imported numbers without a Telegram account, including those the official
        /// apps imported from your phone's address book (asked on a terminal when not given)
        #[arg(long)]
        reset_saved: bool,
    },
    /// Sync the account again after `remote forget-all`
    Resume {
        /// Only this account; default: every configured one
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// List the items a sync would send: number, the name the messenger gets, and why (new,
    /// rename, retry, delete); without an account, what a first sync would import
    #[arg(long, short)]
    pub verbose: bool,
    /// Show phone numbers in full (they are redacted otherwise)
    #[arg(long)]
    pub show_phones: bool,
    /// One JSON object: the scan's counts and the plan per account (with --verbose, its
    /// items)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Run one pass and exit (required; the long-running service is `contactsyncd run`)
    #[arg(long, required = true)]
    pub once: bool,
    /// Apply deletions the guard holds, and accept a source that became empty
    #[arg(long)]
    pub force_delete: bool,
    /// Plan and queue, but send nothing
    #[arg(long)]
    pub offline: bool,
    /// Wait out server-requested pauses up to this many seconds in total
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub max_wait: u64,
    /// One JSON object: the pass's report (what was scanned, planned, sent, held or queued)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// One JSON object with the same information, for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many runs and batches to show
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// JSON Lines: one {"run": …} object per run, then one {"batch": …} per batch
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// vCard files or directories; without any, the configured sources are read
    pub paths: Vec<PathBuf>,
    /// Region for numbers written without a country code (ISO 3166 alpha-2, e.g. DE)
    #[arg(long, value_name = "CC")]
    pub region: Option<String>,
    /// JSON Lines: one object per card, per file-level problem, and a final summary
    #[arg(long)]
    pub json: bool,
}

/// A command's failure, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl From<config::ConfigError> for Failure {
    fn from(error: config::ConfigError) -> Self {
        Self {
            code: exit::CONFIG,
            error: error.into(),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Self {
            code: exit::FAILURE,
            error: anyhow::Error::new(error).context("writing the output"),
        }
    }
}

impl From<serde_json::Error> for Failure {
    fn from(error: serde_json::Error) -> Self {
        Self {
            code: exit::FAILURE,
            error: anyhow::Error::new(error).context("writing the output"),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            code: exit::FAILURE,
            error,
        }
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Inspect(args) => inspect(cli.config.as_deref(), args),
        Command::CheckConfig => check_config(cli.config.as_deref()),
        Command::CheckSource(args) => check_source(cli.config.as_deref(), &args),
        Command::Plan(args) => state::plan(cli.config.as_deref(), &args),
        Command::Sync(args) => state::sync(cli.config.as_deref(), &args),
        Command::Status(args) => state::status(cli.config.as_deref(), args.json),
        Command::History(args) => state::history(cli.config.as_deref(), &args),
        Command::Run => state::run(cli.config.as_deref()),
        Command::Login => state::login(cli.config.as_deref()),
        Command::Logout => state::logout(cli.config.as_deref()),
        Command::Authorize(args) => authorize::authorize(cli.config.as_deref(), &args),
        Command::Remote(RemoteCommand::List { show_phones, json }) => {
            state::remote_list(cli.config.as_deref(), show_phones, json)
        }
        Command::Remote(RemoteCommand::Export { dir, account }) => {
            state::remote_export(cli.config.as_deref(), &dir, account.as_deref())
        }
        Command::Remote(RemoteCommand::ForgetAll {
            account,
            yes,
            reset_saved,
        }) => state::remote_forget_all(cli.config.as_deref(), account.as_deref(), yes, reset_saved),
        Command::Remote(RemoteCommand::Resume { account }) => {
            state::remote_resume(cli.config.as_deref(), account.as_deref())
        }
        Command::Generate(GenerateCommand::Man { dir }) => generate::man(&dir),
        Command::Generate(GenerateCommand::ExampleConfig { system }) => {
            generate::example_config(system)
        }
        Command::Generate(GenerateCommand::Completions { shell, dir }) => {
            generate::completions(shell, dir.as_deref())
        }
    }
}

fn check_config(path: Option<&Path>) -> Result<(), Failure> {
    let config = config::load_for_check(path)?;
    let rendered = config::render(&config).context("rendering the effective configuration")?;
    let mut out = io::stdout().lock();
    writeln!(out, "# {}: valid", config.file.display())?;
    writeln!(
        out,
        "# effective configuration, defaults applied (valid as a configuration file):"
    )?;
    write!(out, "{rendered}")?;
    if config.default_region.is_none() {
        writeln!(
            out,
            "# note: without default_region only numbers written with + (or tel:+) can be synced"
        )?;
    }
    for (source, path, reason) in unreadable_source_files(&config) {
        writeln!(
            out,
            "# warning: source {source}: cannot read {}: {reason}; its cards are not synced until it can be read",
            path.display()
        )?;
    }
    Ok(())
}

/// The files (and folders) of the folder sources that cannot be opened for reading, each with
/// the reason: `check-config` lists them, so that none is left out without a word.
fn unreadable_source_files(config: &Config) -> Vec<(String, PathBuf, String)> {
    let mut unreadable = Vec::new();
    for source in config.sources.iter().filter(|s| !s.is_carddav()) {
        let listing = source::list_files(&source.path);
        for (path, err) in listing.errors {
            unreadable.push((source.name.clone(), path, err.to_string()));
        }
        for path in listing.files {
            if let Err(err) = crate::regular_file::open(&path) {
                unreadable.push((source.name.clone(), path, err.to_string()));
            }
        }
    }
    unreadable
}

/// `check-source`: asks each CardDAV server what `sync` would read. After all are shown, a
/// source that does not work exits by its reason (see `exit::of_carddav`).
fn check_source(path: Option<&Path>, args: &CheckSourceArgs) -> Result<(), Failure> {
    let config = config::load(path)?;
    let sources: Vec<&config::SourceConfig> = match &args.name {
        Some(name) => {
            let Some(source) = config.sources.iter().find(|s| s.name == *name) else {
                let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
                return Err(Failure {
                    code: exit::USAGE,
                    error: anyhow::anyhow!(
                        "no source is called {name:?}; the configured ones are {}",
                        names.join(", ")
                    ),
                });
            };
            if !source.is_carddav() {
                return Err(Failure {
                    code: exit::USAGE,
                    error: anyhow::anyhow!(
                        "source {name:?} is a folder, not a CardDAV server: `contactsyncd check-config` checks it"
                    ),
                });
            }
            vec![source]
        }
        None => config.sources.iter().filter(|s| s.is_carddav()).collect(),
    };
    let mut out = io::stdout().lock();
    if sources.is_empty() {
        writeln!(
            out,
            "no CardDAV source is configured (a [[source]] with carddav = \"https://…\")"
        )?;
        return Ok(());
    }
    let runtime = state::runtime()?;
    let mut failed = 0;
    let mut codes = Vec::new();
    for source in sources {
        let checked = runtime.block_on(source::carddav::check(source, &config.state_dir));
        let url = source.path.display().to_string();
        match (&checked, args.json) {
            (Ok(check), true) => writeln!(
                out,
                "{}",
                json!({"source": source.name, "url": url, "books": check.books})
            )?,
            (Err(err), true) => writeln!(
                out,
                "{}",
                json!({"source": source.name, "url": url, "error": err.to_string()})
            )?,
            (Ok(check), false) => {
                writeln!(out, "source {}: {url}", source.name)?;
                for book in &check.books {
                    writeln!(
                        out,
                        "  address book {:?}: {}\n    {} cards, {}; {}",
                        book.name,
                        book.url,
                        book.cards,
                        if book.supports_sync {
                            "sync-collection (incremental polls)"
                        } else {
                            "no sync-collection (each poll lists every card's etag)"
                        },
                        if book.read {
                            "read"
                        } else {
                            "not read (not in address_books)"
                        }
                    )?;
                }
            }
            (Err(err), false) => writeln!(out, "source {}: {url}\n  error: {err}", source.name)?,
        }
        if let Err(err) = &checked {
            failed += 1;
            codes.push(exit::of_carddav(err));
        }
    }
    if failed > 0 {
        return Err(Failure {
            code: exit::most_urgent(codes),
            error: anyhow::anyhow!(
                "{} cannot be read (see above)",
                crate::sync::plural(failed, "CardDAV source", "CardDAV sources")
            ),
        });
    }
    Ok(())
}

/// What `inspect` reads: named paths, or the configured sources.
struct InspectTarget {
    name: String,
    path: PathBuf,
    filter: CardFilter,
    /// A CardDAV source: read from the cache in this state directory.
    carddav_state: Option<PathBuf>,
}

fn inspect(config_path: Option<&Path>, args: InspectArgs) -> Result<(), Failure> {
    let explicit_region = match &args.region {
        Some(code) => Some(DefaultRegion::parse(code).map_err(|message| Failure {
            code: exit::USAGE,
            error: anyhow::anyhow!("--region: {message}"),
        })?),
        None => None,
    };
    if let Some(missing) = args.paths.iter().find(|p| !p.exists()) {
        return Err(Failure {
            code: exit::USAGE,
            error: anyhow::anyhow!("{}: no such file or directory", missing.display()),
        });
    }
    let (targets, region, refused) = if args.paths.is_empty() {
        let config = config::load(config_path)?;
        (
            targets_of(&config),
            explicit_region.or(config.default_region),
            refused_usernames(&config),
        )
    } else {
        // Paths need no configuration; a valid one still lends its region.
        let config_region = explicit_region.is_none().then(|| {
            config::load(config_path)
                .ok()
                .and_then(|c| c.default_region)
        });
        let targets = args
            .paths
            .iter()
            .map(|path| InspectTarget {
                name: path.display().to_string(),
                path: path.clone(),
                filter: CardFilter::default(),
                carddav_state: None,
            })
            .collect();
        (
            targets,
            explicit_region.or(config_region.flatten()),
            BTreeMap::new(),
        )
    };

    let stdout = io::stdout().lock();
    let mut report = Report::new(io::BufWriter::with_capacity(1 << 16, stdout), args.json);
    report.region = region;
    report.refused_usernames = refused;
    let mut desired = DesiredSetBuilder::default();
    for (order, target) in targets.iter().enumerate() {
        let order = u32::try_from(order).unwrap_or(u32::MAX);
        if let Some(state_dir) = &target.carddav_state {
            inspect_cached_cards(&mut report, &mut desired, order, target, state_dir, region)?;
            continue;
        }
        let listing = source::list_files(&target.path);
        for (path, err) in &listing.errors {
            report.file_error(path, &format!("cannot read: {err}"), false)?;
        }
        if listing.files.is_empty() && listing.errors.is_empty() {
            report.empty_source(&target.path)?;
        }
        for file in &listing.files {
            inspect_file(
                &mut report,
                &mut desired,
                order,
                target,
                region,
                file,
                |on_card| vcard::parse_path_with(file, on_card),
            )?;
        }
    }
    report.finish(&desired.finish(), region)?;
    Ok(())
}

/// One file (or cached card) into the report and the desired set; `parse` streams its cards.
fn inspect_file<W: Write>(
    report: &mut Report<W>,
    desired: &mut DesiredSetBuilder,
    order: u32,
    target: &InspectTarget,
    region: Option<DefaultRegion>,
    file: &Path,
    parse: impl FnOnce(
        &mut dyn FnMut(vcard::CardOutcome),
    ) -> Result<vcard::FileSummary, vcard::FileError>,
) -> io::Result<()> {
    report.files += 1;
    let shared_file: Arc<Path> = file.into();
    // Cards stream from the parser into the report and the desired set; a write
    // error stops the output but not the parser, so it is kept and returned after.
    let mut write_result = Ok(());
    report.file_header(file)?;
    let parsed = parse(&mut |outcome| {
        let contact = outcome
            .result
            .as_ref()
            .ok()
            .map(|card| contact::understand(card, region, &target.filter));
        if write_result.is_ok() {
            write_result = report.card(file, &outcome, contact.as_ref());
        }
        if let Some(contact) = &contact {
            let origin = CardRef {
                source_order: order,
                file: Arc::clone(&shared_file),
                card: u32::try_from(outcome.index).unwrap_or(u32::MAX),
            };
            desired.add(origin, contact);
        }
    });
    write_result?;
    match parsed {
        Ok(summary) => report.file_summary(file, &summary),
        Err(err) => report.file_error(file, &err.to_string(), true),
    }
}

/// A CardDAV source as the state's cache has it (what the server last gave), each card
/// under its URL; never the network: `sync --once` or the daemon polls.
fn inspect_cached_cards<W: Write>(
    report: &mut Report<W>,
    desired: &mut DesiredSetBuilder,
    order: u32,
    target: &InspectTarget,
    state_dir: &Path,
    region: Option<DefaultRegion>,
) -> io::Result<()> {
    let not_yet = "not read from the server yet: run `contactsyncd sync --once` (inspect shows what the last poll stored)";
    let store = match crate::store::Store::open_read_only(state_dir) {
        Ok(store) => store,
        Err(crate::store::StoreError::Missing { .. }) => {
            return report.file_error(&target.path, not_yet, false);
        }
        Err(err) => return report.file_error(&target.path, &err.to_string(), false),
    };
    let cards = match store.carddav_cards(&target.name) {
        Ok(cards) => cards,
        Err(err) => return report.file_error(&target.path, &err.to_string(), false),
    };
    if cards.is_empty() {
        let polled = store.carddav_source(&target.name).ok().flatten().is_some();
        if !polled {
            return report.file_error(&target.path, not_yet, false);
        }
        return report.empty_source(&target.path);
    }
    for card in &cards {
        let file = PathBuf::from(&card.url);
        if let Some(error) = &card.error {
            report.files += 1;
            report.file_error(&file, error, false)?;
            continue;
        }
        let body = match store.carddav_card_body(&target.name, &card.url) {
            Ok(body) => body.unwrap_or_default(),
            Err(err) => return report.file_error(&file, &err.to_string(), false),
        };
        inspect_file(report, desired, order, target, region, &file, |on_card| {
            vcard::parse_reader_with(body.as_slice(), on_card)
        })?;
    }
    Ok(())
}

/// The usernames Telegram refused, as the state has them (none without a state yet).
fn refused_usernames(config: &Config) -> BTreeMap<String, String> {
    let Ok(store) = crate::store::Store::open_read_only(&config.state_dir) else {
        return BTreeMap::new();
    };
    store
        .rejections("telegram")
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.action == "import" && crate::contact_key::is_username(&r.e164))
        .map(|r| {
            let again = match r.retry_at {
                Some(at) => format!("asked again {}", crate::sync::format_time(at)),
                None => "asked again when the card changes".to_owned(),
            };
            (r.e164, format!("{} ({again})", r.reason))
        })
        .collect()
}

fn targets_of(config: &Config) -> Vec<InspectTarget> {
    config
        .sources
        .iter()
        .map(|s| InspectTarget {
            name: s.name.clone(),
            path: s.path.clone(),
            filter: s.filter.clone(),
            carddav_state: s.is_carddav().then(|| config.state_dir.clone()),
        })
        .collect()
}

/// Streams the inspect report and keeps the totals.
struct Report<W: Write> {
    out: W,
    json: bool,
    files: usize,
    file_errors: usize,
    incomplete_files: usize,
    cards: usize,
    cards_with_errors: usize,
    cards_left_out: usize,
    groups_skipped: usize,
    phones: usize,
    rejected_phones: usize,
    no_region_phones: usize,
    telegram_usernames: usize,
    ignored_telegram_usernames: usize,
    empty_sources: usize,
    /// The region national numbers are read with.
    region: Option<DefaultRegion>,
    /// Usernames Telegram refused (`@name` key → what happened and when it is asked
    /// again), from the state when inspecting the configured sources.
    refused_usernames: BTreeMap<String, String>,
}

impl<W: Write> Report<W> {
    fn new(out: W, json: bool) -> Self {
        Self {
            out,
            json,
            files: 0,
            file_errors: 0,
            incomplete_files: 0,
            cards: 0,
            cards_with_errors: 0,
            cards_left_out: 0,
            groups_skipped: 0,
            phones: 0,
            rejected_phones: 0,
            no_region_phones: 0,
            telegram_usernames: 0,
            ignored_telegram_usernames: 0,
            empty_sources: 0,
            region: None,
            refused_usernames: BTreeMap::new(),
        }
    }

    fn line(&mut self, value: &serde_json::Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    /// A file-level error; in text mode under the file's name, printed first unless
    /// `file_header` already did.
    fn file_error(&mut self, file: &Path, error: &str, header_shown: bool) -> io::Result<()> {
        self.file_errors += 1;
        if self.json {
            return self.line(&json!({"file": file, "error": error}));
        }
        if !header_shown {
            self.file_header(file)?;
        }
        writeln!(self.out, "  error: {error}")
    }

    /// A directory without a single vCard file: most likely the wrong one.
    fn empty_source(&mut self, dir: &Path) -> io::Result<()> {
        self.empty_sources += 1;
        let message = "holds no vCard files (*.vcf, *.vcard): nothing to read here";
        if self.json {
            return self.line(&json!({"file": dir, "warning": message}));
        }
        writeln!(self.out, "{}\n  warning: {message}", dir.display())
    }

    fn file_header(&mut self, file: &Path) -> io::Result<()> {
        if !self.json {
            writeln!(self.out, "{}", file.display())?;
        }
        Ok(())
    }

    fn file_summary(&mut self, file: &Path, summary: &FileSummary) -> io::Result<()> {
        for notice in &summary.notices {
            if self.json {
                self.line(&json!({"file": file, "line": notice.line, "warning": notice.message}))?;
            } else {
                writeln!(
                    self.out,
                    "  warning (line {}): {}",
                    notice.line, notice.message
                )?;
            }
        }
        if let Some(incomplete) = summary.incomplete {
            self.incomplete_files += 1;
            self.file_errors += 1;
            let message = format!(
                "incomplete: the file ends inside card {} (BEGIN:VCARD at line {}); it may still be being written, so the sync will wait for a complete file",
                incomplete.card, incomplete.line
            );
            if self.json {
                self.line(&json!({"file": file, "error": message, "incomplete": true}))?;
            } else {
                writeln!(self.out, "  error: {message}")?;
            }
        }
        Ok(())
    }

    fn card(
        &mut self,
        file: &Path,
        outcome: &CardOutcome,
        contact: Option<&CardContact>,
    ) -> io::Result<()> {
        self.cards += 1;
        let mut errors: Vec<String> = Vec::new();
        if let Err(err) = &outcome.result {
            errors.push(err.to_string());
        }
        if let Some(contact) = contact {
            errors.extend(contact.problems.iter().map(ToString::to_string));
        }
        if let Ok(card) = &outcome.result {
            errors.extend(card.unreadable_lines.iter().map(|unreadable| {
                format!(
                    "line {} skipped, the rest of the card is used: {}",
                    unreadable.line, unreadable.reason
                )
            }));
            let unlisted = card.unreadable_line_count - card.unreadable_lines.len();
            if unlisted > 0 {
                errors.push(format!("{unlisted} more unreadable lines skipped"));
            }
        }
        if !errors.is_empty() {
            self.cards_with_errors += 1;
        }
        let group = contact.and_then(|c| c.group);
        if group.is_some() {
            self.groups_skipped += 1;
        }
        let left_out = contact.and_then(|c| c.left_out.as_deref());
        if left_out.is_some() {
            self.cards_left_out += 1;
        }
        let card = outcome.result.as_ref().ok();
        let usernames = card
            .map(|c| c.telegram_usernames.as_slice())
            .unwrap_or_default();
        let ignored_usernames = card
            .map(|c| c.ignored_telegram_usernames.as_slice())
            .unwrap_or_default();
        self.telegram_usernames += usernames.len();
        self.ignored_telegram_usernames += ignored_usernames.len();
        let name = contact.and_then(|c| c.name.as_ref());
        let phones = contact.map(|c| c.phones.as_slice()).unwrap_or_default();
        self.phones += phones.len();
        for phone in phones {
            if let PhoneOutcome::Rejected(err) = &phone.outcome {
                self.rejected_phones += 1;
                if *err == crate::phone::PhoneError::NoRegion {
                    self.no_region_phones += 1;
                }
            }
        }

        if self.json {
            let value = CardLine {
                file,
                card: outcome.index,
                line: outcome.line,
                uid: card.and_then(|c| c.uid.as_deref()),
                first_name: name.map(|n| n.first.as_str()),
                last_name: name.map(|n| n.last.as_str()),
                name_source: name.map(|n| n.source),
                pushed: contact.is_some_and(CardContact::is_pushed),
                phones: phones.iter().map(PhoneLine::of).collect(),
                telegram_usernames: usernames,
                added_by_username: contact
                    .and_then(CardContact::pushed_username)
                    .map(crate::contact_key::of_username),
                username_refused: contact
                    .and_then(CardContact::pushed_username)
                    .and_then(|u| {
                        self.refused_usernames
                            .get(&crate::contact_key::of_username(u))
                    })
                    .map(String::as_str),
                ignored_telegram_usernames: ignored_usernames
                    .iter()
                    .map(|i| IgnoredUsernameLine {
                        value: &i.value,
                        reason: i.problem.to_string(),
                    })
                    .collect(),
                errors,
                left_out,
                group,
            };
            serde_json::to_writer(&mut self.out, &value)?;
            return self.out.write_all(b"\n");
        }

        let region_code = self.region.map(|r| r.code()).unwrap_or_default();
        let out = &mut self.out;
        write!(out, "  card {} (line {})", outcome.index, outcome.line)?;
        if let Some(uid) = card.and_then(|c| c.uid.as_deref()) {
            write!(out, " uid {uid}")?;
        }
        let refused_name = outcome.result.as_ref().err().and_then(CardError::card_name);
        match (name, refused_name) {
            (Some(n), _) if n.last.is_empty() => writeln!(out, ": {}", n.first),
            (Some(n), _) => writeln!(out, ": {} | {}", n.first, n.last),
            (None, Some(written)) => writeln!(out, ": {written} (as written)"),
            (None, None) => writeln!(out, ": (no name)"),
        }?;
        if let Some(property) = group {
            writeln!(
                out,
                "    skipped: a contact group ({property}), not a person"
            )?;
        }
        if let Some(note) = name_disagreement(card, name) {
            writeln!(out, "    {note}")?;
        }
        for p in phones {
            let verdict = match &p.outcome {
                PhoneOutcome::Accepted {
                    e164,
                    validity,
                    extension,
                    other_regions,
                } => {
                    let mut text = format!("→ {e164}");
                    if *validity == Validity::UnknownRange {
                        text.push_str("  (possible, but not a range the metadata knows: kept)");
                    }
                    if !other_regions.is_empty() {
                        text.push_str(&format!(
                            "  (check: {}; kept as read with region {})",
                            other_region_text(other_regions),
                            region_code
                        ));
                    }
                    if let Some(ext) = extension {
                        text.push_str(&format!("  (extension {ext} stripped)"));
                    }
                    text
                }
                PhoneOutcome::Repeated { e164 } => {
                    format!("→ {e164}  (same number again: counted once)")
                }
                PhoneOutcome::Filtered { reason } => format!("skipped: {reason}"),
                PhoneOutcome::Rejected(err) => format!("✗ {err}"),
            };
            writeln!(out, "    TEL {:<24} {verdict}", p.raw)?;
        }
        let used = contact.and_then(CardContact::pushed_username);
        let fallback = contact.and_then(CardContact::fallback_username);
        for username in usernames {
            let refused = self
                .refused_usernames
                .get(&crate::contact_key::of_username(username));
            let verdict = if let Some(refused) = refused.filter(|_| used == Some(username)) {
                &format!("✗ refused by Telegram: {refused}")
            } else if used == Some(username.as_str()) {
                "→ added by username on Telegram"
            } else if fallback == Some(username.as_str()) {
                "→ Telegram gets the number; the username if the number has no account"
            } else if used.is_some() || fallback.is_some() {
                "not used: the card's first username is used"
            } else {
                "not used: the card is not pushed"
            };
            writeln!(out, "    TELEGRAM @{username:<18} {verdict}")?;
        }
        for ignored in ignored_usernames {
            writeln!(
                out,
                "    TELEGRAM {:<19} ignored: {}",
                ignored.value, ignored.problem
            )?;
        }
        for error in &errors {
            writeln!(out, "    error: {error}")?;
        }
        if let Some(reason) = left_out {
            writeln!(out, "    left out by the source's filter: {reason}")?;
        }
        Ok(())
    }

    fn finish(mut self, set: &DesiredSet, region: Option<DefaultRegion>) -> io::Result<()> {
        let pushed_phones: usize = set.contacts.len();
        if self.json {
            for conflict in &set.conflicts {
                self.line(&json!({"conflict": {
                    "e164": conflict.e164,
                    "chosen": {"first_name": conflict.chosen.name.first, "last_name": conflict.chosen.name.last,
                               "file": &*conflict.chosen.card.file, "card": conflict.chosen.card.card},
                    "other": {"first_name": conflict.other.name.first, "last_name": conflict.other.name.last,
                              "file": &*conflict.other.card.file, "card": conflict.other.card.card},
                }}))?;
            }
            let summary = json!({"summary": {
                "files": self.files,
                "file_errors": self.file_errors,
                "incomplete_files": self.incomplete_files,
                "cards": self.cards,
                "cards_with_errors": self.cards_with_errors,
                "cards_left_out": self.cards_left_out,
                "groups_skipped": self.groups_skipped,
                "phones": self.phones,
                "rejected_phones": self.rejected_phones,
                "telegram_usernames": self.telegram_usernames,
                "ignored_telegram_usernames": self.ignored_telegram_usernames,
                "contacts": pushed_phones,
                "duplicates": set.duplicates,
                "name_conflicts": set.conflicts.len(),
                "empty_sources": self.empty_sources,
                "region": region.map(|r| r.code()),
            }});
            self.line(&summary)?;
        } else {
            let out = &mut self.out;
            if !set.conflicts.is_empty() {
                writeln!(out, "\nname conflicts (the first card names the contact):")?;
                for c in &set.conflicts {
                    writeln!(
                        out,
                        "  {}: {:?} from {} card {} over {:?} from {} card {}",
                        c.e164,
                        format!("{} {}", c.chosen.name.first, c.chosen.name.last).trim(),
                        c.chosen.card.file.display(),
                        c.chosen.card.card,
                        format!("{} {}", c.other.name.first, c.other.name.last).trim(),
                        c.other.card.file.display(),
                        c.other.card.card,
                    )?;
                }
            }
            // One vocabulary with `status` and the pass summary (crate::sync::plural).
            writeln!(
                out,
                "\n{} ({} with errors), {} ({} with errors{}), {} ({} rejected), {} to sync, {}, {}",
                plural(self.files, "file", "files"),
                self.file_errors,
                plural(self.cards, "card", "cards"),
                self.cards_with_errors,
                if self.cards_left_out > 0 {
                    format!(", {} left out by category filters", self.cards_left_out)
                } else {
                    String::new()
                },
                plural(self.phones, "phone", "phones"),
                self.rejected_phones,
                plural(pushed_phones, "contact", "contacts"),
                plural(set.duplicates, "duplicate", "duplicates"),
                plural(set.conflicts.len(), "name conflict", "name conflicts"),
            )?;
            if self.groups_skipped > 0 {
                writeln!(
                    out,
                    "{} contact group{} skipped (KIND:group or X-ADDRESSBOOKSERVER-KIND:group: lists, not persons)",
                    self.groups_skipped,
                    if self.groups_skipped == 1 { "" } else { "s" }
                )?;
            }
            if self.telegram_usernames + self.ignored_telegram_usernames > 0 {
                writeln!(
                    out,
                    "{}, {} ignored (no username in them, or against Telegram's rules: see the cards)",
                    plural(
                        self.telegram_usernames,
                        "Telegram username",
                        "Telegram usernames"
                    ),
                    plural(
                        self.ignored_telegram_usernames,
                        "Telegram value",
                        "Telegram values"
                    )
                )?;
            }
            if self.files == 0 && self.empty_sources > 0 {
                writeln!(
                    out,
                    "hint: no vCard file found; a source is a vdir, a folder of *.vcf / *.vcard files, or one export file"
                )?;
            }
            if self.no_region_phones > 0 {
                writeln!(
                    out,
                    "hint: {} no country code; pass --region CC or set default_region",
                    plural(self.no_region_phones, "number has", "numbers have")
                )?;
            }
        }
        self.out.flush()
    }
}

/// When the names come from N and FN says something else, which one the messenger gets:
/// an edit of FN alone renames nothing, and `plan` would say "0 renamed" without this.
fn name_disagreement(
    card: Option<&vcard::RawCard>,
    name: Option<&contact::PersonName>,
) -> Option<String> {
    let name = name.filter(|n| n.source == NameSource::StructuredName)?;
    let formatted = card?.formatted_name.as_deref()?.trim();
    // Word by word: "Anna" is not in "Annabel Schmidt-Berg", though its letters are.
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| c.is_whitespace() || c == '-' || c == ',')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let in_formatted = words(formatted);
    let agrees = words(&format!("{} {}", name.first, name.last))
        .iter()
        .all(|word| in_formatted.contains(word));
    if formatted.is_empty() || agrees {
        return None;
    }
    Some(format!(
        "FN {formatted:?} differs from N: the messenger gets N's names; edit N to rename the contact"
    ))
}

/// `as written, a valid number in US: +14155550199 (also BR +55…, MX +52…)`.
pub fn other_region_text(readings: &[crate::phone::OtherReading]) -> String {
    let mut text = match readings.first() {
        Some(first) => format!(
            "as written, a valid number in {}: {}",
            first.region, first.e164
        ),
        None => return String::new(),
    };
    let more: Vec<String> = readings
        .iter()
        .skip(1)
        .take(2)
        .map(|r| format!("{} {}", r.region, r.e164))
        .collect();
    if !more.is_empty() {
        text.push_str(&format!(" (also {})", more.join(", ")));
    }
    text
}

/// One card of `inspect --json`.
#[derive(Serialize)]
struct CardLine<'a> {
    file: &'a Path,
    card: usize,
    line: usize,
    uid: Option<&'a str>,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    name_source: Option<NameSource>,
    pushed: bool,
    phones: Vec<PhoneLine<'a>>,
    /// Telegram usernames the card names, as written, without `@`.
    telegram_usernames: &'a [String],
    /// The one the card is added by (its key, `@name`): set only for a pushed card that has
    /// no number we push (the number wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    added_by_username: Option<String>,
    /// Telegram refused it (no such user, …), and when it is asked again.
    #[serde(skip_serializing_if = "Option::is_none")]
    username_refused: Option<&'a str>,
    /// Telegram values that name no usable username, and why (not errors of the card).
    ignored_telegram_usernames: Vec<IgnoredUsernameLine<'a>>,
    errors: Vec<String>,
    /// Why the source's category filter leaves the card out (not an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    left_out: Option<&'a str>,
    /// The property that makes the card a contact group, skipped (not an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'static str>,
}

#[derive(Serialize)]
struct IgnoredUsernameLine<'a> {
    value: &'a str,
    reason: String,
}

#[derive(Serialize)]
struct PhoneLine<'a> {
    raw: &'a str,
    e164: Option<&'a str>,
    /// Valid according to the metadata (false for kept unknown ranges, skipped and rejected).
    valid: bool,
    error: Option<String>,
    flags: Vec<&'static str>,
    /// With the `other_region` flag: where the number as written is valid instead.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    other_regions: &'a [crate::phone::OtherReading],
}

impl<'a> PhoneLine<'a> {
    fn of(phone: &'a PhoneEntry) -> Self {
        let (valid, error) = match &phone.outcome {
            PhoneOutcome::Accepted { validity, .. } => (*validity == Validity::Valid, None),
            PhoneOutcome::Repeated { .. } => (true, None),
            PhoneOutcome::Filtered { reason } => (false, Some(reason.clone())),
            PhoneOutcome::Rejected(err) => (false, Some(err.to_string())),
        };
        let other_regions = match &phone.outcome {
            PhoneOutcome::Accepted { other_regions, .. } => other_regions.as_slice(),
            _ => &[],
        };
        Self {
            raw: &phone.raw,
            e164: phone.e164(),
            valid,
            error,
            flags: phone.flags(),
            other_regions,
        }
    }
}
