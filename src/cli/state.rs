//! The commands that work with the state: `plan`, `sync --once`, `status`, `history`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;
use serde_json::json;

use super::{Failure, HistoryArgs, PlanArgs, SyncArgs, exit};
use crate::backend::RemoteContact;
use crate::config::{self, Config};
use crate::phone::redact;
use crate::store::{Owner, Store, StoreError};
use crate::sync::{
    self, Clock, PassReport, SyncOptions, SystemClock, describe_stop, format_time, plural,
};
use crate::{backend, source};

fn store_failure(error: StoreError) -> Failure {
    Failure {
        code: exit::FAILURE,
        error: error.into(),
    }
}

fn out() -> io::BufWriter<io::StdoutLock<'static>> {
    io::BufWriter::new(io::stdout().lock())
}

/// Read-only state, or an empty in-memory one when there is none yet.
fn read_state(config: &Config) -> Result<Store, Failure> {
    match Store::open_read_only(&config.state_dir) {
        Ok(store) => Ok(store),
        Err(StoreError::Missing { .. }) => Store::open_in_memory().map_err(store_failure),
        Err(err) => Err(store_failure(err)),
    }
}

pub fn plan(config_path: Option<&Path>, args: &PlanArgs) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let store = read_state(&config)?;
    let now = SystemClock.now();
    let mut scan = source::scan(&config, &store, now, false, crate::phone::Purpose::Show)
        .map_err(store_failure)?;
    let desired = sync::desired_names(&mut scan);
    let options = SyncOptions {
        limits: config.safety,
        ..SyncOptions::default()
    };
    let mut accounts: Vec<String> = backend::configured_names(&config);
    for account in store.accounts().map_err(store_failure)? {
        // `telegram@<user id>`: another account's mirror, set aside at a login; never sent.
        if !accounts.contains(&account.backend) && !account.backend.contains('@') {
            accounts.push(account.backend);
        }
    }
    let phone = |e164: &str| {
        if args.show_phones {
            e164.to_owned()
        } else {
            redact(e164)
        }
    };
    let mut w = out();
    let mut plans = Vec::new();
    for account in &accounts {
        let (plan, held) =
            sync::plan_for(&store, account, &desired, &options, now).map_err(|e| match e {
                sync::SyncError::Store(err) => store_failure(err),
            })?;
        plans.push((account.clone(), plan, held));
    }
    // No account yet: what a first sync to one would send (everything is new to it).
    let first_sync = plans
        .is_empty()
        .then(|| crate::diff::diff(&desired, &Default::default(), &Default::default(), now));
    if args.json {
        let mut value = json!({
            "files_seen": scan.files_seen,
            "files_to_parse": scan.files_parsed,
            "files_deferred": scan.files_deferred,
            "contacts": desired.len(),
            "unknown_sources": scan.unknown_sources().collect::<Vec<_>>(),
            "empty_sources": scan.empty_sources().collect::<Vec<_>>(),
            "stalled_files": scan.stalled,
            "flagged_numbers": scan.flagged.iter().map(|f| json!({
                "file": f.path, "card": f.card, "phone": phone(&f.e164), "flags": f.flags,
                "other_regions": f.other_regions.iter().map(|r| json!({
                    "region": r.region, "e164": phone(&r.e164),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "accounts": plans.iter().map(|(account, plan, held)| {
                let mut value = json!({
                    "backend": account,
                    "planned": sync::PlanCounts::of(plan),
                    "held": held,
                });
                if args.verbose {
                    value["imports"] = plan.imports.iter().map(|i| json!({
                        "phone": phone(&i.e164), "first_name": i.names.first,
                        "last_name": i.names.last, "reason": i.reason,
                    })).collect();
                    value["deletes"] = plan.deletes.iter().map(|e| json!(phone(e))).collect();
                }
                value
            }).collect::<Vec<_>>(),
        });
        if let Some(plan) = first_sync.as_ref().filter(|_| args.verbose) {
            value["first_sync_imports"] = plan.imports.iter().map(|i| json!({
                "phone": phone(&i.e164), "first_name": i.names.first, "last_name": i.names.last,
            })).collect();
        }
        serde_json::to_writer(&mut w, &value)?;
        writeln!(w)?;
        return Ok(w.flush()?);
    }
    writeln!(
        w,
        "{} ({} to parse, {}): {} in the address book",
        plural(scan.files_seen, "file", "files"),
        scan.files_parsed,
        plural(scan.files_deferred, "deferred file", "deferred files"),
        plural(desired.len(), "contact", "contacts")
    )?;
    for status in scan.unknown_sources() {
        writeln!(
            w,
            "source {} is unknown: {}",
            status.name,
            status.reason.as_deref().unwrap_or_default()
        )?;
    }
    let empty: Vec<_> = scan.empty_sources().cloned().collect();
    print_source_notes(&mut w, &empty, &scan.stalled)?;
    if !scan.flagged.is_empty() {
        writeln!(
            w,
            "numbers to check in the files read ({}; `contactsyncd inspect` shows every card):",
            config
                .default_region
                .map_or("no default_region".to_owned(), |r| format!(
                    "national numbers are read with default_region {r}"
                ))
        )?;
    }
    for f in &scan.flagged {
        let mut notes: Vec<String> = Vec::new();
        if f.flags.contains(&"unknown_range") {
            notes.push("in no range the metadata knows".into());
        }
        if let Some(first) = f.other_regions.first() {
            notes.push(format!(
                "as written, a valid number in {}: {}{}",
                first.region,
                phone(&first.e164),
                if f.other_regions.len() > 1 {
                    format!(" (and in {} more regions)", f.other_regions.len() - 1)
                } else {
                    String::new()
                }
            ));
        }
        let raw = if args.show_phones {
            format!("{} ", f.raw)
        } else {
            String::new()
        };
        writeln!(
            w,
            "  {} card {}: {raw}→ {} [{}]: {}",
            f.path.display(),
            f.card,
            phone(&f.e164),
            f.flags.join(", "),
            notes.join("; ")
        )?;
    }
    if let Some(plan) = &first_sync {
        writeln!(
            w,
            "no backend account yet: nothing would be sent ([telegram] or [whatsapp] in the configuration adds one)"
        )?;
        writeln!(
            w,
            "a first sync to an account would import {}",
            plural(plan.imports.len(), "contact", "contacts")
        )?;
        if args.verbose {
            write_plan_items(&mut w, plan, &phone)?;
        }
    }
    for (account, plan, held) in &plans {
        let counts = sync::PlanCounts::of(plan);
        writeln!(
            w,
            "{account}: {} new, {} renamed, {}, {}; {} waiting for a retry time or rejected",
            counts.new,
            counts.renames,
            plural(counts.retries, "retry", "retries"),
            plural(counts.deletes, "delete", "deletes"),
            counts.waiting
        )?;
        if let Some(held) = held {
            writeln!(w, "  deletions would be held: {}", held.reason)?;
        }
        if args.verbose {
            write_plan_items(&mut w, plan, &phone)?;
        }
    }
    let items = |plan: &crate::diff::Plan| plan.imports.len() + plan.deletes.len();
    let any_items = plans.iter().any(|(_, plan, _)| items(plan) > 0)
        || first_sync.as_ref().is_some_and(|plan| items(plan) > 0);
    if any_items && !args.verbose {
        writeln!(
            w,
            "(--verbose lists them: number, the name the messenger gets, why; --show-phones shows numbers in full)"
        )?;
    }
    Ok(w.flush()?)
}

/// `plan --verbose`: one line per item a sync would send, as `inspect` shows names
/// (`first | last`), numbers through `phone` (redacted unless `--show-phones`).
fn write_plan_items(
    w: &mut impl Write,
    plan: &crate::diff::Plan,
    phone: &impl Fn(&str) -> String,
) -> io::Result<()> {
    use crate::diff::ImportReason;
    let width = plan
        .imports
        .iter()
        .map(|i| phone(&i.e164).chars().count())
        .max()
        .unwrap_or(0);
    for import in &plan.imports {
        let names = &import.names;
        let name = if names.last.is_empty() {
            names.first.clone()
        } else {
            format!("{} | {}", names.first, names.last)
        };
        let why = match import.reason {
            ImportReason::New => "new",
            ImportReason::Rename => "rename",
            ImportReason::Retry => "retry",
        };
        writeln!(
            w,
            "  import {:<width$}  {name}  ({why})",
            phone(&import.e164)
        )?;
    }
    for e164 in &plan.deletes {
        writeln!(w, "  delete {}", phone(e164))?;
    }
    Ok(())
}

pub fn sync(config_path: Option<&Path>, args: &SyncArgs) -> Result<(), Failure> {
    // clap requires --once: `sync` alone may one day mean more than one pass.
    debug_assert!(args.once);
    let config = config::load(config_path)?;
    let mut store = Store::open_for_writing(&config.state_dir).map_err(store_failure)?;
    let runtime = runtime()?;
    // The backends start their connection pools on this runtime.
    let _entered = runtime.enter();
    let mut backends = backend::configured(&config);
    let options = SyncOptions {
        force_delete: args.force_delete,
        offline: args.offline,
        max_wait: args.max_wait,
        limits: config.safety,
    };
    let report = runtime
        .block_on(sync::sync_once(
            &config,
            &mut store,
            &mut backends,
            &SystemClock,
            &options,
        ))
        .map_err(|e| match e {
            sync::SyncError::Store(err) => store_failure(err),
        })?;
    crate::progress::clear();
    print_pass(&report, args.json)?;
    if let Some((code, message)) = exit::of_pass(&report, args.offline) {
        return Err(Failure {
            code,
            error: anyhow::anyhow!(message),
        });
    }
    Ok(())
}

/// Telegram gives the account's phone as digits; shown like every other number, redacted.
fn redact_account_phone(phone: &str) -> String {
    if phone.starts_with('+') {
        redact(phone)
    } else {
        redact(&format!("+{phone}"))
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?)
}

fn telegram_config(config: &Config) -> Result<&config::TelegramConfig, Failure> {
    config.telegram.as_ref().ok_or_else(|| Failure {
        code: exit::CONFIG,
        error: backend::login::LoginError::NotConfigured.into(),
    })
}

pub fn run(config_path: Option<&Path>) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let runtime = runtime()?;
    let result = runtime.block_on(crate::daemon::run(config_path.map(Path::to_owned), config));
    // A planner pass still on its blocking thread (after shutdown_timeout, or a second
    // signal) is not waited for: its transactions keep the state consistent when cut off.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result.map_err(Failure::from)
}

pub fn login(config_path: Option<&Path>) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let telegram = telegram_config(&config)?;
    let mut prompt = backend::login::TerminalPrompt::new().map_err(|e| Failure {
        code: exit::USAGE,
        error: e.into(),
    })?;
    let outcome = match runtime()?.block_on(backend::login::login(
        telegram,
        &config.state_dir,
        &mut prompt,
    )) {
        Ok(outcome) => outcome,
        Err(kept @ backend::login::LoginError::SessionKept) => {
            println!("{kept}");
            return Ok(());
        }
        Err(e) => {
            return Err(Failure {
                code: match e {
                    backend::login::LoginError::Unreachable(_) => exit::TEMPFAIL,
                    _ => exit::FAILURE,
                },
                error: e.into(),
            });
        }
    };
    let account = &outcome.account;
    println!(
        "logged in as {} ({}); the session is kept in {}",
        account.first_name.as_deref().unwrap_or("?"),
        account
            .phone
            .as_deref()
            .map(redact_account_phone)
            .unwrap_or_default(),
        config.state_dir.display()
    );
    if let Some(aside) = &outcome.set_aside {
        println!(
            "this is another Telegram account than the one synced before: its mirror ({} contacts) and queue ({} batches) are set aside as `{}` and not used; the address book is imported into this account anew",
            aside.contacts, aside.batches, aside.key
        );
        if let Some(restored) = &aside.restored {
            println!("the mirror kept for this account ({restored}) is used again");
        }
    }
    Ok(())
}

pub fn logout(config_path: Option<&Path>) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let telegram = telegram_config(&config)?;
    let kept = runtime()?
        .block_on(backend::login::logout(telegram, &config.state_dir))
        .map_err(|e| Failure {
            code: exit::FAILURE,
            error: e.into(),
        })?;
    if !kept.had_session {
        println!(
            "there was no Telegram session (never logged in, or logged out already): nothing to log out"
        );
        return Ok(());
    }
    println!(
        "logged out; the Telegram session is forgotten. Kept: the address book state, and this account's mirror ({}) and queue ({}) for the next login to it (a login to another account sets them aside)",
        plural(kept.contacts, "contact", "contacts"),
        plural(kept.batches, "batch", "batches")
    );
    Ok(())
}

/// An account's whole contact list, and who owns each number (absent: the user's).
type Listing = (Vec<RemoteContact>, Owners);

/// Who made each contact an account lists: the mirror's owner of its key, found by the
/// contact's user where the state knows it (a contact added by username, or one whose
/// number changed), else by its number; not in the mirror: the user's.
#[derive(Default)]
struct Owners {
    by_key: BTreeMap<String, Owner>,
    keys_by_user: BTreeMap<i64, String>,
}

impl Owners {
    /// The owner, and the key the contact is ours under.
    fn of<'a>(&'a self, contact: &'a RemoteContact) -> (Owner, &'a str) {
        let key = contact
            .user_id
            .and_then(|id| self.keys_by_user.get(&id))
            .map_or(contact.e164.as_str(), String::as_str);
        (self.by_key.get(key).copied().unwrap_or(Owner::User), key)
    }
}

/// An account a `remote` command could not ask, and why.
struct Skipped {
    code: u8,
    note: String,
}

/// A `remote` command that left accounts out still did the others, and then exits with the
/// most urgent of their codes (a login needed: 5; a pause: 75), so that a script taking a
/// backup with `remote export` does not take part of it for the whole.
fn finished(skipped: Vec<Skipped>) -> Result<(), Failure> {
    if skipped.is_empty() {
        return Ok(());
    }
    let code = exit::most_urgent(skipped.iter().map(|s| s.code));
    let notes: Vec<String> = skipped.into_iter().map(|s| s.note).collect();
    Err(Failure {
        code,
        error: anyhow::anyhow!("not every account was asked: {}", notes.join("; ")),
    })
}

/// What the `remote` commands share: the configured accounts, connected, with the state
/// (who owns which contact) and the accounts' pauses.
struct Remote {
    runtime: tokio::runtime::Runtime,
    state: Option<Store>,
    /// Accounts the server asked to wait: not called before the wait ends.
    paused: std::collections::BTreeMap<String, (i64, String)>,
    backends: Vec<Box<dyn backend::Backend>>,
}

impl Remote {
    fn open(config: &Config) -> Result<Self, Failure> {
        if backend::configured_names(config).is_empty() {
            return Err(Failure {
                code: exit::CONFIG,
                error: anyhow::anyhow!("no backend configured: add [telegram] or [whatsapp]"),
            });
        }
        let now = SystemClock.now();
        let state = match Store::open_read_only(&config.state_dir) {
            Ok(store) => Some(store),
            Err(StoreError::Missing { .. }) => None,
            Err(err) => return Err(store_failure(err)),
        };
        let mut paused = std::collections::BTreeMap::new();
        if let Some(store) = &state {
            for account in store.accounts().map_err(store_failure)? {
                if let Some(until) = account.paused_until.filter(|u| *u > now) {
                    let reason = account.pause_reason.unwrap_or_default();
                    paused.insert(account.backend, (until, reason));
                }
            }
        }
        let runtime = runtime()?;
        let backends = {
            let _entered = runtime.enter();
            backend::configured(config)
        };
        if backends.iter().all(|b| b.login_required().is_some()) {
            return Err(Failure {
                code: exit::LOGIN_REQUIRED,
                error: anyhow::anyhow!("not logged in to Telegram: run `contactsyncd login`"),
            });
        }
        Ok(Self {
            runtime,
            state,
            paused,
            backends,
        })
    }

    /// The i-th account's whole contact list and who owns each, or why it was not asked
    /// (a login needed, a pause the server asked for), with the exit code that says so.
    fn contacts(&mut self, index: usize) -> Result<Result<Listing, Skipped>, Failure> {
        let backend = &mut self.backends[index];
        let name = backend.name().to_owned();
        if let Some(reason) = backend.login_required() {
            return Ok(Err(Skipped {
                code: exit::LOGIN_REQUIRED,
                note: format!("{name}: {reason}; run `contactsyncd login`"),
            }));
        }
        if let Some((until, reason)) = self.paused.get(&name) {
            return Ok(Err(Skipped {
                code: exit::TEMPFAIL,
                note: format!(
                    "{name}: paused until {} ({reason}); not asked, to honour the server's wait",
                    format_time(*until)
                ),
            }));
        }
        let _entered = self.runtime.enter();
        let contacts = self
            .runtime
            .block_on(backend.remote_contacts())
            .map_err(|e| Failure {
                code: exit::of_backend(&e),
                error: anyhow::anyhow!("{name}: {e}"),
            })?
            .unwrap_or_default();
        let owners = match &self.state {
            Some(store) => Owners {
                by_key: store.owners(&name).map_err(store_failure)?,
                keys_by_user: store.keys_by_user(&name).map_err(store_failure)?,
            },
            None => Owners::default(),
        };
        Ok(Ok((contacts, owners)))
    }
}

pub fn remote_list(
    config_path: Option<&Path>,
    show_phones: bool,
    json: bool,
) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let mut remote = Remote::open(&config)?;
    let ours: std::collections::BTreeSet<String> = match &remote.state {
        Some(store) => store
            .stored_phones()
            .map_err(store_failure)?
            .into_values()
            .flatten()
            .map(|p| p.e164.into())
            .collect(),
        None => Default::default(),
    };
    let mut w = out();
    let mut skipped = Vec::new();
    for index in 0..remote.backends.len() {
        let name = remote.backends[index].name().to_owned();
        let (contacts, owners) = match remote.contacts(index)? {
            Ok(found) => found,
            Err(why) => {
                if !json {
                    writeln!(w, "{}", why.note)?;
                }
                skipped.push(why);
                continue;
            }
        };
        for c in &contacts {
            // Not in the mirror: added by hand, the user's.
            let (owner, key) = owners.of(c);
            // A contact without a visible number (added by username, or hiding it) is shown by
            // its username, redacted like numbers.
            let shown = match c.username.as_deref() {
                Some(username) if c.e164.is_empty() => format!("@{username}"),
                _ => c.e164.clone(),
            };
            let phone = if show_phones { shown } else { redact(&shown) };
            let in_book = ours.contains(&c.e164) || ours.contains(key);
            if json {
                serde_json::to_writer(
                    &mut w,
                    &json!({"backend": name, "phone": phone, "first_name": c.first_name,
                            "last_name": c.last_name, "user_id": c.user_id,
                            "in_address_book": in_book, "owner": owner}),
                )?;
                writeln!(w)?;
            } else {
                let mut notes = Vec::new();
                match owner {
                    Owner::Contactsyncd => {}
                    Owner::User => notes.push("yours: never renamed or deleted"),
                    Owner::Unverified => notes.push("not yet confirmed as ours: left alone"),
                }
                if !in_book {
                    notes.push("not in the address book");
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", notes.join("; "))
                };
                writeln!(
                    w,
                    "{name:<9} {phone:<16} {} {}{notes}",
                    c.first_name, c.last_name,
                )?;
            }
        }
        if !json {
            writeln!(w, "{name}: {} contacts", contacts.len())?;
        }
    }
    w.flush()?;
    finished(skipped)
}

/// `remote export DIR`: each account's contacts as a vdir of vCard 4.0 files, written
/// atomically (a hidden temporary file, then a rename), rewritten only when they changed;
/// files of contacts that left are removed (only files this command names: never any other
/// file in DIR). Contacts contactsyncd did not create are marked with a category.
pub fn remote_export(
    config_path: Option<&Path>,
    dir: &Path,
    account: Option<&str>,
) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let mut remote = Remote::open(&config)?;
    let io = |what: &str, path: &Path, err: std::io::Error| Failure {
        code: exit::FAILURE,
        error: anyhow::anyhow!("{what} {}: {err}", path.display()),
    };
    if let Some(wanted) = account
        && !remote.backends.iter().any(|b| b.name() == wanted)
    {
        return Err(Failure {
            code: exit::USAGE,
            error: anyhow::anyhow!(
                "no connected account named {wanted:?}; the accounts are: {}",
                remote
                    .backends
                    .iter()
                    .map(|b| b.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    // The export holds numbers and names: private, like the state.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("cannot create", dir, e))?;
    let mut w = out();
    let mut skipped = Vec::new();
    for index in 0..remote.backends.len() {
        let name = remote.backends[index].name().to_owned();
        if account.is_some_and(|wanted| wanted != name) {
            continue;
        }
        let (contacts, owners) = match remote.contacts(index)? {
            Ok(found) => found,
            Err(why) => {
                writeln!(w, "{}", why.note)?;
                skipped.push(why);
                continue;
            }
        };
        let cards: Vec<crate::export::ExportedCard> = contacts
            .iter()
            .filter_map(|c| {
                let (owner, key) = owners.of(c);
                let ours = (owner == Owner::Contactsyncd).then_some(key);
                crate::export::card(&name, c, ours)
            })
            .collect();
        let (mut written, mut unchanged, mut removed) = (0, 0, 0);
        for card in &cards {
            let path = dir.join(&card.file_name);
            if std::fs::read(&path).is_ok_and(|old| old == card.text.as_bytes()) {
                unchanged += 1;
                continue;
            }
            let temporary = dir.join(format!(".{}.tmp", card.file_name));
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .and_then(|mut file| {
                    file.write_all(card.text.as_bytes())?;
                    file.sync_all()
                })
                .map_err(|e| io("cannot write", &temporary, e))?;
            std::fs::rename(&temporary, &path).map_err(|e| io("cannot write", &path, e))?;
            written += 1;
        }
        let current: std::collections::BTreeSet<&str> =
            cards.iter().map(|c| c.file_name.as_str()).collect();
        let prefix = crate::export::file_prefix(&name);
        for entry in std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
            let entry = entry.map_err(|e| io("cannot list", dir, e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with(&prefix)
                && file_name.ends_with(".vcf")
                && !current.contains(file_name)
            {
                std::fs::remove_file(entry.path())
                    .map_err(|e| io("cannot remove", &entry.path(), e))?;
                removed += 1;
            }
        }
        let not_ours = contacts
            .iter()
            .filter(|c| owners.of(c).0 != Owner::Contactsyncd)
            .count();
        writeln!(
            w,
            "{name}: {} contacts in {} ({written} written, {unchanged} unchanged, {removed} removed); {not_ours} not created by contactsyncd, marked CATEGORIES:{}",
            cards.len(),
            dir.display(),
            crate::export::NOT_OURS_CATEGORY
        )?;
    }
    w.flush()?;
    finished(skipped)
}

/// The configured accounts `--account` names (all without it); a name that is not one is a
/// usage error.
fn chosen_accounts(config: &Config, account: Option<&str>) -> Result<Vec<String>, Failure> {
    let names = backend::configured_names(config);
    match account {
        None => Ok(names),
        Some(wanted) if names.iter().any(|n| n == wanted) => Ok(vec![wanted.to_owned()]),
        Some(wanted) => Err(Failure {
            code: exit::USAGE,
            error: anyhow::anyhow!(
                "no configured account named {wanted:?}; the accounts are: {}",
                names.join(", ")
            ),
        }),
    }
}

/// `remote forget-all`: shows what would go, asks (or takes `--yes`), marks the accounts
/// as forgetting (persisted: a crash or a pause is resumed by the next `sync --once`, the
/// daemon, or running this again) and runs a pass that deletes every contact of ours.
pub fn remote_forget_all(
    config_path: Option<&Path>,
    account: Option<&str>,
    yes: bool,
    reset_saved: bool,
) -> Result<(), Failure> {
    use std::io::IsTerminal;
    let config = config::load(config_path)?;
    let names = chosen_accounts(&config, account)?;
    if names.is_empty() {
        return Err(Failure {
            code: exit::CONFIG,
            error: anyhow::anyhow!("no backend configured: add [telegram] or [whatsapp]"),
        });
    }
    let mut store = Store::open_for_writing(&config.state_dir).map_err(store_failure)?;
    let mut w = out();
    for name in &names {
        let ours = store
            .mirror(name)
            .map_err(store_failure)?
            .values()
            .filter(|e| e.state.is_remote())
            .count();
        writeln!(
            w,
            "{name}: {ours} contacts contactsyncd added will be deleted from the account; contacts you added yourself stay, and nothing is added to it until `contactsyncd remote resume`"
        )?;
    }
    w.flush()?;
    if !yes {
        if !io::stdin().is_terminal() {
            return Err(Failure {
                code: exit::USAGE,
                error: anyhow::anyhow!(
                    "refusing without --yes: there is no terminal to ask on; run `contactsyncd remote forget-all --yes`"
                ),
            });
        }
        if !ask("Delete them? [y/N] ")? {
            writeln!(w, "nothing changed")?;
            return Ok(w.flush()?);
        }
    }
    // contacts.resetSaved is offered, never implied: it also empties what Telegram's own
    // apps imported from the phone, which is not ours to remove.
    let reset_saved = reset_saved
        || (!yes
            && names.iter().any(|n| n == "telegram")
            && ask(
                "Telegram keeps the numbers imported without an account in a saved list (it tells you when they join). \
                 Also empty that list with contacts.resetSaved? It removes the numbers the official apps imported \
                 from your phone too. [y/N] ",
            )?);
    for name in &names {
        store.set_forgetting(name, true).map_err(store_failure)?;
    }
    let runtime = runtime()?;
    let _entered = runtime.enter();
    let mut backends: Vec<_> = backend::configured(&config)
        .into_iter()
        .filter(|b| names.iter().any(|n| n == b.name()))
        .collect();
    if backends.is_empty() {
        return Err(Failure {
            code: exit::LOGIN_REQUIRED,
            error: anyhow::anyhow!(
                "not logged in to Telegram: run `contactsyncd login`, then this again (the account is marked, nothing is added to it meanwhile)"
            ),
        });
    }
    let options = SyncOptions {
        limits: config.safety,
        ..SyncOptions::default()
    };
    let report = runtime
        .block_on(sync::sync_once(
            &config,
            &mut store,
            &mut backends,
            &SystemClock,
            &options,
        ))
        .map_err(|e| Failure {
            code: exit::FAILURE,
            error: anyhow::Error::new(e).context("forgetting"),
        })?;
    let mut unfinished = 0;
    for account in &report.accounts {
        let left = store
            .mirror(&account.backend)
            .map_err(store_failure)?
            .values()
            .filter(|e| e.state.is_remote())
            .count();
        unfinished += left;
        write!(w, "{}: deleted {}", account.backend, account.deleted)?;
        match &account.stop {
            Some(stop) if left > 0 => writeln!(
                w,
                "; {left} still to delete: {}. Run `contactsyncd remote forget-all --yes` again later (or let `contactsyncd run` finish it)",
                describe_stop(stop)
            )?,
            _ if left > 0 => writeln!(w, "; {left} still to delete: run this again")?,
            _ => writeln!(w, "; nothing of contactsyncd's is left on the account")?,
        }
    }
    if reset_saved {
        for backend in backends.iter_mut().filter(|b| b.name() == "telegram") {
            match runtime.block_on(backend.reset_saved()) {
                Ok(()) => writeln!(
                    w,
                    "telegram: the saved list of imported numbers without an account is empty (contacts.resetSaved)"
                )?,
                Err(err) => writeln!(
                    w,
                    "telegram: contacts.resetSaved failed ({err}); run `contactsyncd remote forget-all --yes --reset-saved` again"
                )?,
            }
        }
    }
    w.flush()?;
    if unfinished > 0 {
        return Err(Failure {
            code: exit::TEMPFAIL,
            error: anyhow::anyhow!(
                "{} still to delete (see above)",
                plural(unfinished, "contact", "contacts")
            ),
        });
    }
    Ok(())
}

/// Asks a yes/no question on the terminal; anything but yes is no.
fn ask(question: &str) -> io::Result<bool> {
    eprint!("{question}");
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `remote resume`: the accounts sync again after `remote forget-all`.
pub fn remote_resume(config_path: Option<&Path>, account: Option<&str>) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let names = chosen_accounts(&config, account)?;
    let store = Store::open_for_writing(&config.state_dir).map_err(store_failure)?;
    let mut w = out();
    for name in &names {
        store.set_forgetting(name, false).map_err(store_failure)?;
        writeln!(
            w,
            "{name}: syncs again from the next pass (`contactsyncd sync --once` or the daemon)"
        )?;
    }
    Ok(w.flush()?)
}

fn print_pass(report: &PassReport, json: bool) -> anyhow::Result<()> {
    let mut w = out();
    if json {
        serde_json::to_writer(&mut w, report)?;
        writeln!(w)?;
        return Ok(w.flush()?);
    }
    writeln!(
        w,
        "scanned {} ({} read, {} parsed, {}): {}, {}",
        plural(report.files_seen, "file", "files"),
        report.files_read,
        report.files_parsed,
        plural(report.files_deferred, "deferred file", "deferred files"),
        plural(report.contacts, "contact", "contacts"),
        plural(report.name_conflicts, "name conflict", "name conflicts"),
    )?;
    for status in &report.unknown_sources {
        writeln!(
            w,
            "source {} is unknown, its contacts are kept: {}",
            status.name,
            status.reason.as_deref().unwrap_or_default()
        )?;
    }
    print_source_notes(&mut w, &report.empty_sources, &report.stalled_files)?;
    for file in &report.unreadable_files {
        writeln!(
            w,
            "source {}: cannot read {}: {}; {}",
            file.source,
            file.path.display(),
            file.reason,
            in_effect(file.cards_in_effect)
        )?;
    }
    if report.accounts.is_empty() {
        writeln!(
            w,
            "no backend configured: nothing was sent (the address book state is up to date)"
        )?;
    }
    for a in &report.accounts {
        let mut sent = format!(
            "sent {}: {} imported",
            plural(a.batches_sent, "batch", "batches"),
            a.imported
        );
        if a.saved > 0 {
            sent.push_str(&format!(", {} {SAVED_MEANS}", a.saved));
        }
        writeln!(
            w,
            "{}: planned {} new, {} renamed, {}, {}; {sent}, {} retrying, {} rejected, {} deleted; {} queued",
            a.backend,
            a.planned.new,
            a.planned.renames,
            plural(a.planned.retries, "retry", "retries"),
            plural(a.planned.deletes, "delete", "deletes"),
            a.retrying,
            a.rejected,
            a.deleted,
            plural(a.queued_batches, "batch", "batches"),
        )?;
        if a.superseded > 0 {
            writeln!(
                w,
                "  {} before sending: the address book changed since they were queued",
                plural(a.superseded, "queued item dropped", "queued items dropped")
            )?;
        }
        if let Some(held) = &a.held {
            writeln!(w, "  deletions held: {}", held.reason)?;
        }
        if let Some(stop) = &a.stop {
            writeln!(w, "  {}", describe_stop(stop))?;
        }
        if let Some(step) = next_step(a) {
            writeln!(w, "  {step}")?;
        }
    }
    Ok(w.flush()?)
}

/// What stands of a deferred file: the cards of its last complete read, or nothing.
fn in_effect(cards: u64) -> String {
    if cards == 0 {
        "nothing was read from it yet: it is read again on the next pass".to_owned()
    } else {
        format!(
            "its last complete read ({}) stays in effect",
            plural(cards, "card", "cards")
        )
    }
}

/// Sources with no vCard file, and files that stay incomplete: said after a pass.
fn print_source_notes(
    w: &mut impl Write,
    empty: &[crate::store::SourceStatus],
    stalled: &[source::StalledFile],
) -> io::Result<()> {
    for status in empty {
        writeln!(
            w,
            "source {}: {}",
            status.name,
            no_vcard_files(&status.path)
        )?;
    }
    for file in stalled {
        writeln!(
            w,
            "source {}: {} has ended inside a card for over {} minutes (an export that stopped half-way?); its previous cards stay in effect until it is complete",
            file.source,
            file.path.display(),
            source::INCOMPLETE_GRACE_SECS / 60
        )?;
    }
    Ok(())
}

fn no_vcard_files(path: &str) -> String {
    // A CardDAV source's path is its URL: say it in CardDAV words (issue 22, point 6: a
    // user's collection such as Calypso's `/alice/` read as an empty book).
    if path.starts_with("https://") || path.starts_with("http://") {
        return format!(
            "the address book at {path} holds no cards: if that URL is a user's or principal's collection rather than an address book, give the server's root or the address book's own URL (`contactsyncd check-source` lists the address books with their URLs and card counts)"
        );
    }
    format!(
        "{path} holds no vCard files (*.vcf, *.vcard): check the source's path, or export your address book there"
    )
}

/// A source's state as `status` shows it: never `ok` with deferred files.
fn source_state(s: &crate::store::SourceStatus) -> &str {
    if s.state == source::SOURCE_OK && s.deferred > 0 {
        source::SOURCE_DEFERRED
    } else {
        &s.state
    }
}

/// What "saved" means where a count of them is printed (Telegram's answer for a number
/// that has no account, or hides it).
const SAVED_MEANS: &str = "saved (numbers without a Telegram account, kept in the contact list: they show up once the number joins)";

/// How a pass that left work queued goes on: the command that sends it, and when.
fn next_step(a: &sync::AccountReport) -> Option<String> {
    let service = match a.backend.as_str() {
        "telegram" => "Telegram",
        "whatsapp" => "WhatsApp",
        other => other,
    };
    // Numbers the server asked to retry later (its import limit) wait for their time.
    let waiting = a.planned.waiting.max(a.retrying);
    let mut parts = Vec::new();
    if a.queued_batches > 0 {
        parts.push(format!(
            "queued {}",
            plural(a.queued_batches, "batch", "batches")
        ));
    }
    if waiting > 0 {
        parts.push(format!(
            "{} for a retry time",
            plural(waiting, "number waits", "numbers wait")
        ));
    }
    let pending = !parts.is_empty();
    let what = if pending {
        parts.join(", ")
    } else {
        "nothing queued".to_owned()
    };
    Some(match &a.stop {
        Some(sync::Stop::Paused { until, .. }) if pending => format!(
            "{what}; {service} asked to wait until {}: run `contactsyncd run` (it goes on when the wait ends), or `contactsyncd sync --once` again after that",
            format_time(*until)
        ),
        Some(sync::Stop::Paused { until, .. }) => format!(
            "{what}; {service} asked to wait until {}: nothing is sent to it before then",
            format_time(*until)
        ),
        Some(sync::Stop::LoginRequired { .. }) => format!(
            "{what}; run `contactsyncd login`, then `contactsyncd sync --once` (or `contactsyncd run`)"
        ),
        Some(sync::Stop::Network { .. }) => format!(
            "{what}; run `contactsyncd sync --once` again when the network is back, or `contactsyncd run` (it retries every minute)"
        ),
        Some(sync::Stop::Offline) if a.queued_batches > 0 => format!(
            "{what}; `contactsyncd sync --once` without --offline (or `contactsyncd run`) sends {}",
            if a.queued_batches == 1 { "it" } else { "them" }
        ),
        Some(sync::Stop::Offline | sync::Stop::Setup { .. }) => return None,
        None if waiting > 0 => {
            let when = a
                .planned
                .next_retry
                .map(|t| format!(" (the next at {})", format_time(t)))
                .unwrap_or_default();
            format!(
                "{what}{when}, as {service} asked: `contactsyncd run` retries {}, or `contactsyncd sync --once` again after that",
                if waiting == 1 { "it" } else { "them" }
            )
        }
        None => return None,
    })
}

/// The process writing the state now (read-only: the lock is only looked at), and its
/// subcommand when /proc tells: `run` is the daemon.
fn writer_of(state_dir: &Path) -> Option<(String, Option<String>)> {
    let pid = Store::writer(state_dir).ok().flatten()?;
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|cmdline| {
            cmdline
                .split(|b| *b == 0)
                .skip(1)
                .map(String::from_utf8_lossy)
                .find(|arg| ["run", "sync", "login", "logout"].contains(&arg.as_ref()))
                .map(|arg| arg.into_owned())
        });
    Some((pid, command))
}

/// Warned this long before an authorization's known end.
const OAUTH_WARNING_SECONDS: i64 = 2 * 86_400;
/// Google ends the refresh tokens of an OAuth client in "Testing" status this long after
/// the consent (developers.google.com/identity/protocols/oauth2, "Refresh token expiration").
const GOOGLE_TESTING_SECONDS: i64 = 7 * 86_400;

/// `status`'s line about an OAuth source's authorization: when it was given, when it ends
/// if that is known (or, for Google, when it would end for a client in "Testing" status),
/// and a warning shortly before.
fn oauth_line(
    source: &config::SourceConfig,
    store: &Store,
    now: crate::store::Timestamp,
) -> Option<String> {
    let Some(config::BearerSource::OAuth(oauth)) =
        source.carddav.as_ref().and_then(|c| c.bearer.as_ref())
    else {
        return None;
    };
    let name = &source.name;
    let Ok(Some(tokens)) = store.oauth_tokens(name) else {
        return Some(format!(
            "OAuth: not authorized: run `contactsyncd authorize {name}`"
        ));
    };
    let date = |at: i64| crate::sync::format_time(at)[..10].to_owned();
    let mut line = format!("OAuth: authorized {}", date(tokens.authorized_at));
    let soon = |end: i64| end > now && end - now <= OAUTH_WARNING_SECONDS;
    if let Some(end) = tokens.refresh_expires_at {
        line.push_str(&format!("; the authorization ends {}", date(end)));
        if soon(end) {
            line.push_str(&format!(
                "\n    WARNING: it ends soon: run `contactsyncd authorize {name}` before then"
            ));
        }
    } else if oauth.google.is_some() {
        let end = tokens.authorized_at + GOOGLE_TESTING_SECONDS;
        if end > now {
            line.push_str(&format!(
                "; if its OAuth client is in Google's \"Testing\" status, Google ends it {} (publish the app \"In production\" to avoid that: README, \"Google Contacts\")",
                date(end)
            ));
        }
        if soon(end) {
            line.push_str(&format!(
                "\n    WARNING: if the OAuth client is in \"Testing\" status, run `contactsyncd authorize {name}` before then"
            ));
        }
    }
    Some(line)
}

pub fn status(config_path: Option<&Path>, json: bool) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let writer = writer_of(&config.state_dir);
    let store = match Store::open_read_only(&config.state_dir) {
        Ok(store) => store,
        Err(StoreError::Missing { .. }) => {
            let mut w = out();
            if json {
                writeln!(
                    w,
                    "{}",
                    json!({
                        "state": null,
                        "state_dir": config.state_dir,
                        // No state, so no session: a configured Telegram needs a login.
                        "telegram_login_required": config.telegram.as_ref().map(|_| true),
                    })
                )?;
            } else if config::system_state_dir(&config.file).as_ref() == Some(&config.state_dir) {
                writeln!(
                    w,
                    "no state yet in {}: the system service has not run yet (`systemctl enable --now contactsyncd`), or run `contactsyncd sync --once` as it does (README, \"Running as a service\")",
                    config.state_dir.display()
                )?;
            } else {
                writeln!(
                    w,
                    "no state yet in {}: run `contactsyncd sync --once`",
                    config.state_dir.display()
                )?;
            }
            return Ok(w.flush()?);
        }
        Err(err) => return Err(store_failure(err)),
    };
    let sources = store.source_statuses().map_err(store_failure)?;
    let deferred_files = store.deferred_files().map_err(store_failure)?;
    let deferred_of = |name: &str| -> Vec<_> {
        deferred_files
            .iter()
            .filter(|(source, ..)| source == name)
            .map(|(_, path, state, reason, cards)| (path, *state, reason, *cards))
            .collect()
    };
    let last_run = store
        .recent_runs(1)
        .map_err(store_failure)?
        .into_iter()
        .next();
    let started_over = store.started_over().map_err(store_failure)?;
    let mut accounts = Vec::new();
    for account in store.accounts().map_err(store_failure)? {
        let counts = store
            .mirror_counts(&account.backend)
            .map_err(store_failure)?;
        let open = store
            .open_batches(&account.backend)
            .map_err(store_failure)?;
        let queued: usize = open.iter().map(|b| b.items.len()).sum();
        let owned = store
            .ownership_counts(&account.backend)
            .map_err(store_failure)?;
        let setup_error = store.setup_error(&account.backend).map_err(store_failure)?;
        let held = store
            .reconcile_hold(&account.backend)
            .map_err(store_failure)?;
        let rejections = store.rejections(&account.backend).map_err(store_failure)?;
        let changes = store
            .number_changes(&account.backend)
            .map_err(store_failure)?;
        accounts.push((
            account,
            counts,
            open.len(),
            queued,
            owned,
            setup_error,
            held,
            (rejections, changes),
        ));
    }
    let login = match &config.telegram {
        Some(_) => Some(
            crate::store::telegram_session::TelegramSession::logged_in(&config.state_dir)
                .map_err(store_failure)?,
        ),
        None => None,
    };
    let now = SystemClock.now();
    let mut w = out();
    if json {
        let value = json!({
            "state_dir": config.state_dir,
            "writer": writer.as_ref().map(|(pid, command)| json!({"pid": pid, "command": command})),
            // null: no [telegram]; true also before any sync made the account's row.
            "telegram_login_required": login.as_ref().map(Option::is_none),
            "telegram_login": login.as_ref().map(|l| l.as_ref().map(|a| json!({
                "user_id": a.user_id,
                "phone": a.phone.as_deref().map(redact_account_phone),
                "first_name": a.first_name,
            }))),
            "sources": sources.iter().map(|s| {
                let mut value = json!(s);
                value["state"] = json!(source_state(s));
                value["deferred_files"] = deferred_of(&s.name)
                    .into_iter()
                    .map(|(path, state, reason, cards)| json!({
                        "path": path, "state": state.as_str(), "reason": reason,
                        "cards_in_effect": cards,
                    }))
                    .collect();
                // An OAuth source: when it was authorized and when that ends, if known.
                let oauth = config.sources.iter().find(|c| c.name == s.name).and_then(|c| {
                    matches!(
                        c.carddav.as_ref().and_then(|d| d.bearer.as_ref()),
                        Some(config::BearerSource::OAuth(_))
                    )
                    .then(|| store.oauth_tokens(&s.name).ok().flatten())
                });
                if let Some(tokens) = oauth {
                    value["oauth"] = json!({
                        "authorized": tokens.is_some(),
                        "authorized_at": tokens.as_ref().map(|t| t.authorized_at),
                        "refresh_expires_at": tokens.as_ref().and_then(|t| t.refresh_expires_at),
                    });
                }
                value
            }).collect::<Vec<_>>(),
            "accounts": accounts.iter().map(|(a, c, batches, items, owned, setup_error, held, (rejections, changes))| json!({
                "backend": a.backend,
                "set_aside": a.backend.contains('@'),
                "in_sync": (c.imported + c.saved).saturating_sub(c.pending),
                "pending": c.pending,
                "imported": c.imported,
                "saved": c.saved,
                "popular_invites": c.popular,
                "retrying": c.retrying,
                "next_retry": c.next_retry,
                "rejected": c.rejected,
                "rejections": rejections.iter().map(|r| json!({
                    "phone": redact(&r.e164), "action": r.action, "reason": r.reason,
                    "retry_at": r.retry_at,
                })).collect::<Vec<_>>(),
                "number_changes": changes.iter().map(|(old, new)| json!({
                    "imported": redact(old), "now": redact(new),
                })).collect::<Vec<_>>(),
                "queued_batches": batches,
                "queued_items": items,
                "paused_until": a.paused_until.filter(|u| *u > now),
                "forgetting": a.forgetting,
                "pause_reason": a.pause_reason,
                // Never logged in (or logged out) is "login required" too, before any
                // sync recorded it.
                "login_required": a.auth_required
                    || (a.backend == "telegram" && matches!(login, Some(None))),
                "saved_by_user": owned.saved_by_user,
                "unverified": owned.unverified,
                "stopped": setup_error,
                "reconcile_held": held,
                "last_success": a.last_success,
                "last_error": a.last_error,
            })).collect::<Vec<_>>(),
            "last_run": last_run,
            "started_over_at": started_over,
        });
        serde_json::to_writer(&mut w, &value)?;
        writeln!(w)?;
        return Ok(w.flush()?);
    }
    writeln!(w, "state: {}", config.state_dir.display())?;
    if let Some(at) = started_over {
        writeln!(
            w,
            "warning: the state database was found empty (0 bytes) on {} and started over: log in again; every contact is imported again, which changes nothing on the messenger",
            crate::sync::format_time(at)
        )?;
    }
    match &writer {
        Some((pid, Some(command))) if command == "run" => writeln!(
            w,
            "daemon: running on this state (pid {pid}, `contactsyncd run`)"
        )?,
        Some((pid, Some(command))) => writeln!(
            w,
            "daemon: not running; `contactsyncd {command}` (pid {pid}) is writing this state now"
        )?,
        Some((pid, None)) => writeln!(
            w,
            "daemon: a contactsyncd (pid {pid}) is writing this state: the daemon, or a `sync --once` in progress"
        )?,
        None => writeln!(
            w,
            "daemon: not running on this state (no process holds its state.lock)"
        )?,
    }
    writeln!(w, "sources:")?;
    if sources.is_empty() {
        writeln!(w, "  (not scanned yet)")?;
    }
    for s in &sources {
        let carddav = config
            .sources
            .iter()
            .any(|c| c.name == s.name && c.is_carddav());
        // One vocabulary with `inspect` and the pass summary: numbers and usernames apart.
        let mut counts = if carddav {
            // Each of its "files" is one card resource on the server, named by its URL.
            vec![format!(
                "CardDAV {}: {} as the server last gave them",
                s.path,
                plural(s.files, "card", "cards")
            )]
        } else {
            vec![
                plural(s.files, "file", "files"),
                plural(s.cards, "card", "cards"),
            ]
        };
        counts.push(plural(s.phones, "phone", "phones"));
        if s.usernames > 0 {
            counts.push(plural(s.usernames, "username", "usernames"));
        }
        counts.push(plural(
            s.card_errors,
            "card with problems",
            "cards with problems",
        ));
        counts.push(if carddav {
            plural(s.deferred, "deferred card", "deferred cards")
        } else {
            plural(s.deferred, "deferred file", "deferred files")
        });
        write!(w, "  {}: {}", s.name, counts.join(", "))?;
        if s.state == source::SOURCE_UNKNOWN {
            write!(
                w,
                "\n    UNKNOWN: {}; its contacts are kept and nothing of it is deleted",
                s.reason.as_deref().unwrap_or_default()
            )?;
        }
        if let Some(line) = config
            .sources
            .iter()
            .find(|c| c.name == s.name)
            .and_then(|c| oauth_line(c, &store, now))
        {
            write!(w, "\n    {line}")?;
        }
        if s.state == source::SOURCE_EMPTY && carddav {
            write!(w, "\n    EMPTY: its address books hold no card")?;
        } else if s.state == source::SOURCE_EMPTY {
            write!(w, "\n    EMPTY: {}", no_vcard_files(&s.path))?;
        }
        writeln!(w)?;
        for (path, state, reason, cards) in deferred_of(&s.name) {
            let label = match state {
                crate::store::FileState::Stalled => "STALLED",
                _ => "deferred",
            };
            writeln!(
                w,
                "    {label}: {}: {reason}; {}",
                path.display(),
                in_effect(u64::from(cards))
            )?;
        }
    }
    match &login {
        Some(Some(account)) => writeln!(
            w,
            "telegram: logged in as {} ({})",
            account.first_name.as_deref().unwrap_or("?"),
            account
                .phone
                .as_deref()
                .map(redact_account_phone)
                .unwrap_or_default()
        )?,
        Some(None) => writeln!(w, "telegram: not logged in: run `contactsyncd login`")?,
        None => {}
    }
    writeln!(w, "accounts:")?;
    if accounts.is_empty() {
        writeln!(w, "  (none yet)")?;
    }
    for (a, c, batches, items, owned, setup_error, held, (rejections, changes)) in &accounts {
        let mut parts = vec![
            // The arithmetic shown adds up: in sync = imported + saved - pending.
            format!(
                "{} in sync ({} imported, {} saved{}{})",
                (c.imported + c.saved).saturating_sub(c.pending),
                c.imported,
                c.saved,
                if c.saved > 0 && a.backend.starts_with("telegram") {
                    ": numbers without a Telegram account, kept in the contact list"
                } else {
                    ""
                },
                if c.pending > 0 {
                    format!(", less {} pending", c.pending)
                } else {
                    String::new()
                }
            ),
            format!("{items} queued in {}", plural(*batches, "batch", "batches")),
        ];
        if c.pending > 0 {
            parts.push(format!(
                "{} pending (a rename or delete queued or retrying)",
                c.pending
            ));
        }
        if c.retrying > 0 {
            parts.push(format!(
                "{} retrying (next {})",
                c.retrying,
                c.next_retry.map(format_time).unwrap_or_default()
            ));
        }
        if c.rejected > 0 {
            parts.push(format!("{} rejected", c.rejected));
        }
        if c.popular > 0 {
            parts.push(format!(
                "{} saved numbers without an account are popular on Telegram (worth an invite)",
                c.popular
            ));
        }
        if a.forgetting {
            parts.push(
                "FORGOTTEN (remote forget-all): contactsyncd deletes what it added and adds nothing; `contactsyncd remote resume` to sync again".to_owned(),
            );
        }
        if let Some(until) = a.paused_until.filter(|u| *u > now) {
            parts.push(format!(
                "paused until {} ({})",
                format_time(until),
                a.pause_reason.as_deref().unwrap_or_default()
            ));
        }
        if owned.saved_by_user > 0 {
            parts.push(format!(
                "{} already saved by you on the phone, left as you named them (adopt_existing = false)",
                owned.saved_by_user
            ));
        }
        if owned.unverified > 0 {
            parts.push(format!(
                "{} not yet confirmed as ours (the next reconcile checks them)",
                owned.unverified
            ));
        }
        if let Some(reason) = setup_error {
            parts.push(format!(
                "STOPPED: {reason}; nothing is sent until the configuration changes"
            ));
        }
        if let Some(held) = held {
            parts.push(format!("RECONCILE HELD: {}", held.reason));
        }
        if a.auth_required {
            parts.push("LOGIN REQUIRED: run `contactsyncd login`".into());
        }
        if let Some(success) = a.last_success {
            parts.push(format!("last success {}", format_time(success)));
        }
        writeln!(w, "  {}: {}", a.backend, parts.join(" · "))?;
        if a.backend.contains('@') {
            writeln!(
                w,
                "    set aside: the mirror and queue of another Telegram account, kept from before a login to a different one; not used"
            )?;
        }
        if let Some(error) = &a.last_error {
            writeln!(w, "    last error: {error}")?;
        }
        for (old, new) in changes {
            writeln!(
                w,
                "    number changed on Telegram: {} now shows {}; kept while a card has {}, deleted (by user) when none has",
                redact(old),
                redact(new),
                redact(old)
            )?;
        }
        for r in rejections {
            let when = match r.retry_at {
                Some(at) => format!("tried again {} or when the card changes", format_time(at)),
                None => "tried again when the card changes".to_owned(),
            };
            writeln!(
                w,
                "    rejected {} {}: {} ({when})",
                r.action,
                redact(&r.e164),
                r.reason
            )?;
        }
    }
    match &last_run {
        Some(run) => {
            if run.deletes_held > 0 {
                writeln!(
                    w,
                    "guard: the last run held {} deletions; see `contactsyncd plan --verbose`, apply with `contactsyncd sync --once --force-delete`",
                    run.deletes_held
                )?;
            } else {
                writeln!(w, "guard: no deletions held")?;
            }
            writeln!(
                w,
                "last run: #{} {} {}: {} — {}",
                run.id,
                run.kind,
                format_time(run.started_at),
                run.outcome.as_deref().unwrap_or("unfinished"),
                sync::summarize_run(run)
            )?;
            if let Some(message) = &run.message {
                writeln!(w, "  {message}")?;
            }
        }
        None => writeln!(w, "last run: none")?,
    }
    Ok(w.flush()?)
}

pub fn history(config_path: Option<&Path>, args: &HistoryArgs) -> Result<(), Failure> {
    let config = config::load(config_path)?;
    let store = read_state(&config)?;
    let runs = store.recent_runs(args.limit).map_err(store_failure)?;
    let batches = store.recent_batches(args.limit).map_err(store_failure)?;
    let mut w = out();
    if args.json {
        for run in &runs {
            serde_json::to_writer(&mut w, &json!({"run": run}))?;
            writeln!(w)?;
        }
        for (b, items) in &batches {
            serde_json::to_writer(
                &mut w,
                &json!({"batch": {
                    "id": b.id, "backend": b.backend, "kind": b.kind.as_str(),
                    "state": b.state.as_str(), "items": items, "created_at": b.created_at,
                    "sent_at": b.sent_at, "applied_at": b.applied_at,
                    "send_count": b.send_count, "outcome": b.outcome,
                }}),
            )?;
            writeln!(w)?;
        }
        return Ok(w.flush()?);
    }
    writeln!(w, "runs (newest first):")?;
    if runs.is_empty() {
        writeln!(w, "  none")?;
    }
    for run in &runs {
        writeln!(
            w,
            "  #{} {} {}: {} — {}",
            run.id,
            run.kind,
            format_time(run.started_at),
            run.outcome.as_deref().unwrap_or("unfinished"),
            sync::summarize_run(run)
        )?;
        if let Some(message) = &run.message {
            writeln!(w, "    {message}")?;
        }
    }
    writeln!(w, "batches (newest first):")?;
    if batches.is_empty() {
        writeln!(w, "  none")?;
    }
    for (b, items) in &batches {
        writeln!(
            w,
            "  #{} {} {} of {}: {} (created {}, sent {}){}",
            b.id,
            b.backend,
            b.kind.as_str(),
            plural(*items, "contact", "contacts"),
            b.state.as_str(),
            format_time(b.created_at),
            plural(b.send_count, "time", "times"),
            b.outcome
                .as_deref()
                .map(|o| format!(": {o}"))
                .unwrap_or_default()
        )?;
    }
    Ok(w.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Issue 26: the OAuth line warns in the last two days before a known end (or, for
    /// Google, before a "Testing" client's 7 days run out), and not before.
    #[rstest]
    #[case::google_fresh(true, 0, None, "Google ends it 2026-12-08", false)]
    #[case::google_day_six(true, 6 * 86_400, None, "Google ends it 2026-12-02", true)]
    #[case::google_past_seven_days(true, 8 * 86_400, None, "authorized 2026-11-23", false)]
    #[case::known_end_far(false, 0, Some(30 * 86_400), "ends 2026-12-31", false)]
    #[case::known_end_tomorrow(false, 0, Some(86_400), "ends 2026-12-02", true)]
    #[case::generic_no_end(false, 0, None, "authorized 2026-12-01", false)]
    fn the_oauth_line_warns_before_a_known_end(
        #[case] google: bool,
        #[case] age: i64,
        #[case] ends_in: Option<i64>,
        #[case] shown: &str,
        #[case] warns: bool,
    ) {
        let now = 1_796_130_000; // 2026-12-01
        let text = format!(
            "[[source]]\nname = \"g\"\n{}oauth_client_id = \"c\"\noauth_client_secret_file = \"/s\"\noauth_auth_url = \"https://a.example.org/\"\noauth_token_url = \"https://a.example.org/t\"\n",
            if google {
                "google = \"me@gmail.com\"\n"
            } else {
                "carddav = \"https://d.example.org/\"\nauth = \"oauth2\"\n"
            }
        );
        let config = config::parse(&text, Path::new("/c.toml")).unwrap();
        let mut store = Store::open_in_memory().unwrap();
        let source = &config.sources[0];
        assert!(
            oauth_line(source, &store, now)
                .unwrap()
                .contains("not authorized")
        );
        store
            .set_oauth_tokens(
                "g",
                &crate::store::OAuthTokens {
                    client_id: "c".into(),
                    refresh_token: Some("r".into()),
                    access_token: None,
                    access_expires_at: None,
                    authorized_at: now - age,
                    refresh_expires_at: ends_in.map(|e| now + e),
                },
            )
            .unwrap();
        let line = oauth_line(source, &store, now).unwrap();
        assert!(line.contains(shown), "{line}");
        assert_eq!(line.contains("WARNING"), warns, "{line}");
    }

    fn account(stop: Option<sync::Stop>, queued: usize, retrying: usize) -> sync::AccountReport {
        sync::AccountReport {
            backend: "telegram".into(),
            queued_batches: queued,
            retrying,
            stop,
            ..sync::AccountReport::default()
        }
    }

    /// Issue 16.11: work left queued ends with the command that sends it, and when.
    #[rstest]
    #[case::flood(account(Some(sync::Stop::Paused { until: 1_796_134_000, reason: "FLOOD_WAIT_3600".into() }), 41, 0),
        Some("queued 41 batches; Telegram asked to wait until 2026-12-01 14:06:40 UTC: run `contactsyncd run`"))]
    #[case::retry(
        account(None, 0, 2),
        Some(
            "2 numbers wait for a retry time, as Telegram asked: `contactsyncd run` retries them"
        )
    )]
    #[case::login(account(Some(sync::Stop::LoginRequired { reason: "x".into() }), 1, 0), Some("queued 1 batch; run `contactsyncd login`"))]
    #[case::offline(
        account(Some(sync::Stop::Offline), 2, 0),
        Some("queued 2 batches; `contactsyncd sync --once` without --offline")
    )]
    #[case::done(account(None, 0, 0), None)]
    fn next_steps(#[case] account: sync::AccountReport, #[case] starts: Option<&str>) {
        let step = next_step(&account);
        match starts {
            Some(start) => assert!(
                step.as_deref().is_some_and(|s| s.starts_with(start)),
                "{step:?}"
            ),
            None => assert_eq!(step, None),
        }
    }

    /// Issue 22, point 6: an empty CardDAV source is explained in CardDAV words (a user's
    /// collection given for an address book), a folder in file words.
    #[test]
    fn an_empty_source_is_explained_in_its_own_words() {
        let dav = no_vcard_files("http://127.0.0.1:5233/alice/");
        assert!(
            dav.starts_with("the address book at http://127.0.0.1:5233/alice/ holds no cards")
                && dav.contains("rather than an address book")
                && dav.contains("check-source")
                && !dav.contains("*.vcf"),
            "{dav}"
        );
        assert!(
            no_vcard_files("/home/me/contacts").contains("holds no vCard files (*.vcf, *.vcard)")
        );
    }
}
