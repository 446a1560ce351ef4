//! The model-based test of DESIGN.md's invariants: random sequences of what happens in real
//! life — cards added, renamed, moved between files and sources, removed; the region or a
//! filter changed; syncs online and offline; the daemon's change pass; FLOOD_WAIT; a lost
//! reply; a crash after planning or after a request reached the server; a contact deleted
//! in the app; cards known by a Telegram username instead of (or beside) a number — run
//! against the real files, the real store on disk and the real sync code, with the fake
//! backend checking every call the moment it arrives against an oracle that knows only the
//! address book.
//!
//! Checked: (1) nothing sent contradicts the address book at the moment of sending, except a
//! call sent before exactly as it was (a resend after a lost reply or a crash); (2) after a
//! pass with no pause or error, the remote holds exactly the address book; (3) contacts
//! added by hand are never touched; (6) a client_id always means one item.
//!
//! `CONTACTSYNCD_MODEL_CASES=5000 cargo test model::` runs more cases.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use contactsyncd::config::{self, Config};
use contactsyncd::store::Store;
use contactsyncd::sync::{self, AccountReport, AccountSpec, Clock, PassReport, SyncOptions};
use proptest::prelude::*;

use crate::fake_backend::{Call, FakeBackend, Fault};
use crate::sync::ManualClock;

const SLOTS: u8 = 6;
const NAMES: [&str; 5] = ["Anna", "Annabel", "Anne", "Bob", "Carla"];
/// One card per source that never goes, so no source ever becomes empty (an emptied source
/// counts as unknown and keeps its contacts: a rule of its own, tested elsewhere).
const ANCHORS: [(&str, &str); 2] = [
    ("Anchor A", "+4917000000001"),
    ("Anchor B", "+4917000000002"),
];
const HAND_ADDED: &str = "+493099999999";
/// The account's name: Telegram's, as the account that adds contacts by username.
const ACCOUNT: &str = "telegram";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CardModel {
    source: u8,
    name: u8,
    number: u8,
    /// Written as `0151 …`: its E.164 form depends on the default region.
    national: bool,
    work: bool,
    /// 0: a number; 1: a Telegram username (`friendN`, N = `number`) and no number;
    /// 2: both, and the number wins.
    username: u8,
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        slot: u8,
        card: CardModel,
    },
    Remove {
        slot: u8,
    },
    Region {
        austria: bool,
    },
    ExcludeWork(bool),
    Sync,
    SyncOffline,
    /// The daemon: a change pass over the files written or removed since the last scan
    /// (the full pass when it declines, or after a reload), sending.
    ChangePass,
    FloodWait,
    LoseReply,
    CrashAfterPlan,
    CrashAfterSend,
    DeleteInApp {
        number: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let card = (
        0..2u8,
        0..NAMES.len() as u8,
        0..5u8,
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
    )
        .prop_map(
            |(source, name, number, national, work, username)| CardModel {
                source,
                name,
                number,
                national,
                work,
                username,
            },
        );
    prop_oneof![
        6 => (0..SLOTS, card).prop_map(|(slot, card)| Op::Write { slot, card }),
        2 => (0..SLOTS).prop_map(|slot| Op::Remove { slot }),
        1 => any::<bool>().prop_map(|austria| Op::Region { austria }),
        1 => any::<bool>().prop_map(Op::ExcludeWork),
        4 => Just(Op::Sync),
        2 => Just(Op::SyncOffline),
        3 => Just(Op::ChangePass),
        1 => Just(Op::FloodWait),
        1 => Just(Op::LoseReply),
        1 => Just(Op::CrashAfterPlan),
        1 => Just(Op::CrashAfterSend),
        1 => (0..5u8).prop_map(|number| Op::DeleteInApp { number }),
    ]
}

/// The key the card is known by: its number, or its username when it has no number.
fn key(card: &CardModel, austria: bool) -> String {
    if card.username == 1 {
        format!("@friend{}", card.number)
    } else {
        e164(card, austria)
    }
}

fn e164(card: &CardModel, austria: bool) -> String {
    let country = if card.national && austria { "43" } else { "49" };
    format!("+{country}1512345678{}", card.number)
}

struct World {
    dir: tempfile::TempDir,
    slots: [Option<CardModel>; SLOTS as usize],
    austria: bool,
    exclude_work: bool,
    config: Config,
    backend: FakeBackend,
    clock: ManualClock,
    /// Files written or removed since the last scan; `None`: the configuration changed, so
    /// only a full pass knows the address book (the daemon reloads).
    unscanned: Option<BTreeSet<PathBuf>>,
    /// The daemon's deletion window, across its passes.
    window: sync::DeletionWindow,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (source, (name, number)) in ANCHORS.iter().enumerate() {
            let book = dir.path().join(format!("book{source}"));
            std::fs::create_dir(&book).unwrap();
            std::fs::write(book.join("anchor.vcf"), card_text(name, number, false)).unwrap();
        }
        let users = (0..5u8)
            .flat_map(|n| [format!("+491512345678{n}"), format!("+431512345678{n}")])
            .filter(|phone| !phone.ends_with('4')) // number 4 has no account: saved
            .chain(ANCHORS.iter().map(|(_, n)| (*n).to_owned()))
            .chain((0..5u8).map(|n| format!("@friend{n}")))
            .collect::<Vec<_>>();
        // Named as the account that adds contacts by username.
        let mut backend = FakeBackend::new(3).with_users(users.iter().map(String::as_str));
        backend.name = ACCOUNT.into();
        {
            let mut account = backend.state();
            account.reconcile = Some((0, true));
            account.hand_added.insert(HAND_ADDED.to_owned());
            account
                .contacts
                .insert(HAND_ADDED.to_owned(), ("Mum".into(), String::new()));
        }
        let world = Self {
            config: make_config(dir.path(), false, false),
            dir,
            slots: [None; SLOTS as usize],
            austria: false,
            exclude_work: false,
            backend,
            clock: ManualClock::new(),
            unscanned: Some(BTreeSet::new()),
            window: sync::DeletionWindow::new(std::time::Duration::from_secs(300)),
        };
        world.update_oracle();
        world
    }

    fn reconfigure(&mut self) {
        self.config = make_config(self.dir.path(), self.austria, self.exclude_work);
        self.unscanned = None;
    }

    fn slot_path(&self, slot: u8, source: u8) -> PathBuf {
        self.dir
            .path()
            .join(format!("book{source}"))
            .join(format!("c{slot}.vcf"))
    }

    /// The address book as a person reads it: sources in order, files by name, the first
    /// card with a number names it; filtered cards left out.
    fn desired(&self) -> BTreeMap<String, (String, String)> {
        let mut desired = BTreeMap::new();
        for source in 0..2u8 {
            let (name, number) = ANCHORS[source as usize];
            desired.insert(number.to_owned(), (name.to_owned(), String::new()));
            for card in self.slots.iter().flatten() {
                if card.source != source || (card.work && self.exclude_work) {
                    continue;
                }
                desired
                    .entry(key(card, self.austria))
                    .or_insert_with(|| (NAMES[card.name as usize].to_owned(), String::new()));
            }
        }
        desired
    }

    /// What the backend checks calls against: the address book as of the last scan. A
    /// change no scan has seen yet cannot be known (the daemon hears of it after the
    /// debounce); a send before that is no violation.
    fn update_oracle(&self) {
        self.backend.state().expected = Some(self.desired());
    }

    /// A full pass is about to scan everything.
    fn scanning_everything(&mut self) {
        self.unscanned = Some(BTreeSet::new());
        self.update_oracle();
    }

    fn touched(&mut self, path: PathBuf) {
        if let Some(paths) = &mut self.unscanned {
            paths.insert(path);
        }
    }

    fn options(&self, offline: bool) -> SyncOptions {
        SyncOptions {
            offline,
            max_wait: 0,
            limits: self.config.safety,
            ..SyncOptions::default()
        }
    }

    fn store(&self) -> Store {
        Store::open_for_writing(&self.config.state_dir).unwrap()
    }

    fn accounts(&self) -> Vec<AccountSpec> {
        vec![AccountSpec {
            name: ACCOUNT.into(),
            batch_size: 3,
        }]
    }

    /// The remote as far as ours go: contacts and saved numbers, without the hand-added.
    fn remote(&self) -> BTreeMap<String, (String, String)> {
        let mut all = self.backend.state().all_numbers();
        all.remove(HAND_ADDED);
        all
    }

    /// `sync --once` (with `--offline`): its own store, as a new process would open it.
    async fn sync_once(&self, offline: bool) -> PassReport {
        let mut store = self.store();
        let mut backends = vec![self.backend.boxed()];
        sync::sync_once(
            &self.config,
            &mut store,
            &mut backends,
            &self.clock,
            &self.options(offline),
        )
        .await
        .unwrap()
    }

    async fn send(&self, store: &mut Store) -> AccountReport {
        let mut report = AccountReport::default();
        let mut budget = 0;
        let mut backend = self.backend.boxed();
        sync::send_account(
            &self.config,
            store,
            backend.as_mut(),
            &self.clock,
            &self.options(false),
            &mut budget,
            &tokio_util::sync::CancellationToken::new(),
            &mut report,
        )
        .await
        .unwrap();
        report
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write { slot, card } => {
                if let Some(old) = self.slots[slot as usize].filter(|c| c.source != card.source) {
                    std::fs::remove_file(self.slot_path(slot, old.source)).unwrap();
                    self.touched(self.slot_path(slot, old.source));
                }
                let text = match card.username {
                    0 => card_text(NAMES[card.name as usize], &number_text(&card), card.work),
                    1 => {
                        card_with_username(NAMES[card.name as usize], None, card.number, card.work)
                    }
                    _ => card_with_username(
                        NAMES[card.name as usize],
                        Some(&number_text(&card)),
                        card.number,
                        card.work,
                    ),
                };
                std::fs::write(self.slot_path(slot, card.source), text).unwrap();
                self.touched(self.slot_path(slot, card.source));
                self.slots[slot as usize] = Some(card);
            }
            Op::Remove { slot } => {
                if let Some(old) = self.slots[slot as usize].take() {
                    std::fs::remove_file(self.slot_path(slot, old.source)).unwrap();
                    self.touched(self.slot_path(slot, old.source));
                }
            }
            Op::Region { austria } => {
                self.austria = austria;
                self.reconfigure();
            }
            Op::ExcludeWork(exclude) => {
                self.exclude_work = exclude;
                self.reconfigure();
            }
            Op::Sync => {
                self.scanning_everything();
                let report = self.sync_once(false).await;
                let account = &report.accounts[0];
                if account.stop.is_none() && account.held.is_none() {
                    prop_assert_eq!(
                        self.remote(),
                        self.desired(),
                        "a quiet pass left the remote unequal to the address book: {:?}",
                        account
                    );
                    prop_assert_eq!(account.queued_batches, 0);
                }
            }
            Op::SyncOffline => {
                self.scanning_everything();
                self.sync_once(true).await;
            }
            Op::ChangePass => {
                let mut store = self.store();
                let now = self.clock.now();
                let options = self.options(false);
                let accounts = self.accounts();
                // The events name every file written or removed since the last scan; after
                // a reload the daemon goes straight to the full pass.
                let changed = match self.unscanned.clone() {
                    Some(paths) => sync::change_pass(
                        &self.config,
                        &mut store,
                        &accounts,
                        &paths,
                        now,
                        &options,
                        &mut self.window,
                    )
                    .unwrap()
                    .is_some(),
                    None => false,
                };
                self.scanning_everything();
                if !changed {
                    sync::plan_pass_in_window(
                        &self.config,
                        &mut store,
                        &accounts,
                        now,
                        &options,
                        &mut self.window,
                    )
                    .unwrap();
                }
                self.send(&mut store).await;
            }
            Op::FloodWait => self.backend.state().faults.push_back(Fault::FloodWait(100)),
            Op::LoseReply => self
                .backend
                .state()
                .faults
                .push_back(Fault::ApplyThenDropReply),
            Op::CrashAfterPlan => {
                self.scanning_everything();
                let mut store = self.store();
                sync::plan_pass(
                    &self.config,
                    &mut store,
                    &self.accounts(),
                    self.clock.now(),
                    &self.options(false),
                )
                .unwrap();
            }
            Op::CrashAfterSend => {
                self.scanning_everything();
                let mut store = self.store();
                let now = self.clock.now();
                sync::plan_pass(
                    &self.config,
                    &mut store,
                    &self.accounts(),
                    now,
                    &self.options(false),
                )
                .unwrap();
                let desired_of = sync::desired_of(&self.config);
                let paused = store
                    .account(ACCOUNT)
                    .unwrap()
                    .and_then(|a| a.paused_until)
                    .is_some_and(|until| until > now);
                if !paused
                    && let Some(claimed) =
                        store.claim_next_batch(ACCOUNT, now, &desired_of).unwrap()
                    && let Some(batch) = claimed.batch
                {
                    let mut backend = self.backend.boxed();
                    let _ = match batch.kind {
                        contactsyncd::store::BatchKind::Import => {
                            let items: Vec<_> = batch
                                .items
                                .iter()
                                .map(|i| contactsyncd::batch::ImportItem {
                                    client_id: i.client_id.unwrap_or_default(),
                                    e164: i.e164.clone(),
                                    names: i.names.clone(),
                                    rename: false,
                                    user: None,
                                    fallback_username: None,
                                })
                                .collect();
                            backend.import(&items).await.map(|_| ())
                        }
                        // As the sender does: numbers by phone, ours with a known user (every
                        // username contact) by user.
                        contactsyncd::store::BatchKind::Delete => {
                            let keys: Vec<String> =
                                batch.items.iter().map(|i| i.e164.clone()).collect();
                            let users = store.users_of(ACCOUNT, &keys).unwrap();
                            let phones: Vec<String> =
                                keys.into_iter().filter(|k| !k.starts_with('@')).collect();
                            let by_phone = if phones.is_empty() {
                                Ok(())
                            } else {
                                backend.delete(&phones).await
                            };
                            match by_phone {
                                Ok(()) if !users.is_empty() => backend.delete_users(&users).await,
                                other => other,
                            }
                        }
                    };
                }
                // The process dies here: the reply is never applied.
            }
            Op::DeleteInApp { number } => {
                let mut account = self.backend.state();
                account.contacts.retain(|key, _| {
                    !(key.starts_with("+4") && key.ends_with(&format!("1512345678{number}"))
                        || *key == format!("@friend{number}"))
                });
            }
        }
        self.clock.advance(200);
        let violations = std::mem::take(&mut self.backend.state().violations);
        prop_assert!(violations.is_empty(), "after {:?}: {:?}", op, violations);
        Ok(())
    }

    /// The end of every case: faults gone, pauses over, one more pass must settle it all.
    async fn settle(&mut self) -> Result<(), TestCaseError> {
        self.backend.state().faults.clear();
        self.clock.advance(4000);
        self.apply(&Op::Sync).await?;
        let report = self.sync_once(false).await;
        prop_assert_eq!(
            report.accounts[0].batches_sent,
            0,
            "a settled pass sends nothing"
        );
        prop_assert_eq!(self.remote(), self.desired());
        let account = self.backend.state();
        prop_assert_eq!(
            account.contacts.get(HAND_ADDED),
            Some(&("Mum".to_owned(), String::new()))
        );
        let mut meaning: BTreeMap<i64, (String, String, String)> = BTreeMap::new();
        for call in &account.calls {
            if let Call::Import(items) = call {
                for (id, e164, first, last) in items {
                    let item = (e164.clone(), first.clone(), last.clone());
                    let first_meaning = meaning.entry(*id).or_insert_with(|| item.clone());
                    prop_assert_eq!(&*first_meaning, &item, "client_id {} reused", id);
                }
            }
        }
        Ok(())
    }
}

/// Two sources; deletions never held (the guard has tests of its own).
fn make_config(dir: &Path, austria: bool, exclude_work: bool) -> Config {
    let exclude = if exclude_work {
        "exclude_categories = [\"Work\"]\n"
    } else {
        ""
    };
    let region = if austria { "AT" } else { "DE" };
    let text = format!(
        "state_dir = \"state\"\ndefault_region = \"{region}\"\n[safety]\nmax_deletes = 1000\nmax_delete_fraction = 1.0\n[[source]]\npath = \"book0\"\nname = \"a\"\n{exclude}[[source]]\npath = \"book1\"\nname = \"b\"\n{exclude}"
    );
    config::parse(&text, &dir.join("config.toml")).unwrap()
}

fn number_text(card: &CardModel) -> String {
    if card.national {
        format!("0151 2345678{}", card.number)
    } else {
        format!("+49 151 2345678{}", card.number)
    }
}

/// A card with the Telegram username `friendN` (as Telegram Desktop's export writes it),
/// with or without a number.
fn card_with_username(name: &str, tel: Option<&str>, n: u8, work: bool) -> String {
    let categories = if work { "CATEGORIES:Work\r\n" } else { "" };
    let tel = tel.map_or(String::new(), |tel| format!("TEL;TYPE=CELL:{tel}\r\n"));
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\n{tel}IMPP;TYPE=TELEGRAM:telegram:friend{n}\r\n{categories}END:VCARD\r\n"
    )
}

fn card_text(name: &str, tel: &str, work: bool) -> String {
    let categories = if work { "CATEGORIES:Work\r\n" } else { "" };
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nTEL;TYPE=CELL:{tel}\r\n{categories}END:VCARD\r\n"
    )
}

fn cases() -> u32 {
    std::env::var("CONTACTSYNCD_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_messenger_follows_the_address_book_whatever_happens(ops in prop::collection::vec(op(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut world = World::new();
            for op in &ops {
                world.apply(op).await?;
            }
            world.settle().await
        })?;
    }
}
