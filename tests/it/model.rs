//! The model-based test of DESIGN.md's invariants: random sequences of what happens in real
//! life — cards added, renamed, moved between files and sources, removed; the region or a
//! filter changed; syncs online and offline, forced past the deletion guard or not; the
//! daemon's change pass; its planner storing a scan and a sender claiming before the plan
//! follows; FLOOD_WAIT and lost replies after part of a batch went through; the clock set
//! back; a crash after planning or after a request reached the server; a contact deleted
//! in the app; cards known by a Telegram username instead of (or beside) a number — run
//! against the real files, the real store on disk and the real sync code, with the fake
//! backend checking every call the moment it arrives against an oracle that knows only the
//! address book.
//!
//! Checked: (1) nothing sent contradicts the address book as last scanned, except an item
//! delivered before in the same batch (a resend after a lost reply or a crash; a call
//! refused with a wait delivered nothing); (2) after a pass with no pause, error or held
//! deletion, the remote holds exactly the address book; (3) contacts added by hand are
//! never touched; (4) a pass not forced deletes at most `safety.max_deletes` per plan, and
//! a plan holds its deletions exactly when those the address book asks for exceed it;
//! (6) a client_id always means one item.
//!
//! `CONTACTSYNCD_MODEL_CASES=5000 cargo test model::` runs more cases.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use contactsyncd::config::{self, Config};
use contactsyncd::failpoint::{self, Crash};
use contactsyncd::store::Store;
use contactsyncd::sync::{self, AccountReport, AccountSpec, Clock, PassReport, SyncOptions};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

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
    /// The card the slot held last is written back (an undo, a restore from backup): a
    /// deletion queued for it meanwhile has become stale.
    Restore {
        slot: u8,
    },
    Region {
        austria: bool,
    },
    ExcludeWork(bool),
    Sync,
    /// `sync --once --force-delete`: deletions are not held.
    ForceSync,
    SyncOffline,
    /// The daemon's planner stored a scan of every file (`apply_scan`) and has not planned
    /// yet: a sender may claim in between, against the stored cards.
    Scan,
    /// A sender's turn between two plans: claim and send what is queued.
    Send,
    /// Both, the daemon's usual interleaving: the planner stored a scan and a sender claims
    /// before the plan follows, so only the claim-time check stands between a batch queued
    /// earlier and the cards as they are now.
    ScanThenSend,
    /// The daemon: a change pass over the files written or removed since the last scan
    /// (the full pass when it declines, or after a reload), sending.
    ChangePass,
    /// The next call is answered FLOOD_WAIT after its first `after` items went through.
    FloodWait {
        after: u8,
    },
    /// The next call's connection drops after its first `after` items went through.
    LoseReply {
        after: u8,
    },
    /// The system clock is set back (NTP, a wrong RTC at boot) by `seconds`.
    ClockBack {
        seconds: u16,
    },
    CrashAfterPlan,
    CrashAfterSend,
    /// A full pass that dies (the process, as by SIGKILL) the `nth` time it passes the fail
    /// point `failpoint::ALL[point]`: inside a store transaction, or between a request and
    /// the recording of its answer.
    Crash {
        point: u8,
        nth: u8,
    },
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
        2 => (0..SLOTS).prop_map(|slot| Op::Restore { slot }),
        1 => any::<bool>().prop_map(|austria| Op::Region { austria }),
        1 => any::<bool>().prop_map(Op::ExcludeWork),
        4 => Just(Op::Sync),
        1 => Just(Op::ForceSync),
        2 => Just(Op::SyncOffline),
        3 => Just(Op::ChangePass),
        2 => Just(Op::Scan),
        2 => Just(Op::Send),
        4 => Just(Op::ScanThenSend),
        // Half refused before anything, half after part of the batch went through.
        3 => prop_oneof![Just(0u8), 1..4u8].prop_map(|after| Op::FloodWait { after }),
        1 => (0..4u8).prop_map(|after| Op::LoseReply { after }),
        // Far enough back that several passes run before the clock catches up.
        2 => prop_oneof![Just(700u16), Just(2500)].prop_map(|seconds| Op::ClockBack { seconds }),
        // The plan's exact guard check (see its arm) runs here.
        3 => Just(Op::CrashAfterPlan),
        1 => Just(Op::CrashAfterSend),
        3 => (0..failpoint::ALL.len() as u8, 1..4u8).prop_map(|(point, nth)| Op::Crash { point, nth }),
        2 => (0..5u8).prop_map(|number| Op::DeleteInApp { number }),
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
    /// The card each slot held before it was last removed.
    removed: [Option<CardModel>; SLOTS as usize],
    /// How far the clock was set back in all, for the end to get past every pause.
    clock_set_back: i64,
    austria: bool,
    exclude_work: bool,
    config: Config,
    backend: FakeBackend,
    clock: ManualClock,
    /// The number the server refuses in this case, if any: never on the remote.
    refused: Option<String>,
    /// `safety.max_deletes` of the case (the guard is on; the fraction does not hold).
    max_deletes: usize,
    /// Files written or removed since the last scan; `None`: the configuration changed, so
    /// only a full pass knows the address book (the daemon reloads).
    unscanned: Option<BTreeSet<PathBuf>>,
    /// The daemon's deletion window, across its passes.
    window: sync::DeletionWindow,
}

impl World {
    fn new(max_deletes: usize, refused: Option<u8>) -> Self {
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
        let config = make_config(dir.path(), false, false, max_deletes);
        backend.state().outbox = Some(contactsyncd::store::Store::path(&config.state_dir));
        let refused = refused.map(|n| format!("+491512345678{n}"));
        backend.state().refused.extend(refused.clone());
        let world = Self {
            config,
            max_deletes,
            refused,
            dir,
            slots: [None; SLOTS as usize],
            removed: [None; SLOTS as usize],
            clock_set_back: 0,
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
        self.config = make_config(
            self.dir.path(),
            self.austria,
            self.exclude_work,
            self.max_deletes,
        );
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

    /// What the remote holds once everything went through: the address book without the
    /// number the server refuses.
    fn reachable(&self) -> BTreeMap<String, (String, String)> {
        let mut desired = self.desired();
        if let Some(refused) = &self.refused {
            desired.remove(refused);
        }
        desired
    }

    /// How many deletions the address book asks for now, read from the state on disk: our
    /// contacts on the remote (mirror rows imported or saved) that no card wants and that
    /// no batch in flight carries.
    fn deletions_due(&self) -> usize {
        let conn = rusqlite::Connection::open_with_flags(
            contactsyncd::store::Store::path(&self.config.state_dir),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut ours = conn
            .prepare(
                "SELECT contact_key FROM mirror WHERE backend = ?1 AND state IN ('imported', 'saved')
                 AND contact_key NOT IN (SELECT i.contact_key FROM outbox_item i
                   JOIN outbox_batch b ON b.id = i.batch_id WHERE b.state = 'sent')",
            )
            .unwrap();
        let desired = self.desired();
        ours.query_map([ACCOUNT], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .filter(|key| !desired.contains_key(key))
            .count()
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
        self.options_with(offline, false)
    }

    fn options_with(&self, offline: bool, force_delete: bool) -> SyncOptions {
        SyncOptions {
            offline,
            force_delete,
            max_wait: 0,
            limits: self.config.safety,
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
        self.sync_once_with(offline, false).await
    }

    async fn sync_once_with(&self, offline: bool, force_delete: bool) -> PassReport {
        let mut store = self.store();
        let mut backends = vec![self.backend.boxed()];
        sync::sync_once(
            &self.config,
            &mut store,
            &mut backends,
            &self.clock,
            &self.options_with(offline, force_delete),
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

    /// Writes `card` into the slot's file (moving it when the card changes source).
    fn write_card(&mut self, slot: u8, card: CardModel) {
        if let Some(old) = self.slots[slot as usize].filter(|c| c.source != card.source) {
            std::fs::remove_file(self.slot_path(slot, old.source)).unwrap();
            self.touched(self.slot_path(slot, old.source));
        }
        let text = match card.username {
            0 => card_text(NAMES[card.name as usize], &number_text(&card), card.work),
            1 => card_with_username(NAMES[card.name as usize], None, card.number, card.work),
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

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write { slot, card } => self.write_card(slot, card),
            Op::Remove { slot } => {
                if let Some(old) = self.slots[slot as usize].take() {
                    std::fs::remove_file(self.slot_path(slot, old.source)).unwrap();
                    self.touched(self.slot_path(slot, old.source));
                    self.removed[slot as usize] = Some(old);
                }
            }
            Op::Restore { slot } => {
                if self.slots[slot as usize].is_none()
                    && let Some(card) = self.removed[slot as usize]
                {
                    self.write_card(slot, card);
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
            Op::Sync | Op::ForceSync => {
                let force = matches!(op, Op::ForceSync);
                self.scanning_everything();
                self.backend.state().fresh_deletes = 0;
                let report = self.sync_once_with(false, force).await;
                let account = &report.accounts[0];
                // The guard: a pass deletes at most max_deletes at each plan (a second plan
                // runs when items were in flight or superseded), unless forced.
                let plans = if account.in_flight > 0 || account.superseded > 0 {
                    2
                } else {
                    1
                };
                let deleted = self.backend.state().fresh_deletes;
                prop_assert!(
                    force || deleted <= self.max_deletes * plans,
                    "a pass deleted {} contacts past safety.max_deletes = {}: {:?}",
                    deleted,
                    self.max_deletes,
                    account
                );
                if account.stop.is_none() && account.held.is_none() {
                    prop_assert_eq!(
                        self.remote(),
                        self.reachable(),
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
            Op::Scan => {
                self.scanning_everything();
                let mut store = self.store();
                let scan =
                    contactsyncd::source::scan(&self.config, &store, self.clock.now(), false)
                        .unwrap();
                store.apply_scan(&scan.changes, self.clock.now()).unwrap();
            }
            Op::ScanThenSend => {
                Box::pin(self.apply(&Op::Scan)).await?;
                Box::pin(self.apply(&Op::Send)).await?;
            }
            Op::Send => {
                let mut store = self.store();
                // After a restart (a crash, a reload) the daemon plans before it sends.
                if self.unscanned.is_none() {
                    self.scanning_everything();
                    sync::plan_pass(
                        &self.config,
                        &mut store,
                        &self.accounts(),
                        self.clock.now(),
                        &self.options(false),
                    )
                    .unwrap();
                }
                self.send(&mut store).await;
            }
            Op::Crash { point, nth } => {
                self.scanning_everything();
                // Whatever the pass does before it dies is checked by the backend as it
                // happens; the crash itself unwinds out of `apply` (see `run`).
                self.unscanned = None;
                failpoint::arm(failpoint::ALL[usize::from(point)], nth.into());
                self.sync_once(false).await;
                failpoint::disarm();
            }
            Op::FloodWait { after } => {
                self.backend
                    .state()
                    .faults
                    .push_back(Fault::FloodWaitAfter {
                        applied: after.into(),
                        seconds: 100,
                    })
            }
            Op::LoseReply { after } => self.backend.state().faults.push_back(Fault::DropAfter {
                applied: after.into(),
            }),
            Op::ClockBack { seconds } => {
                self.clock.advance(-i64::from(seconds));
                self.clock_set_back += i64::from(seconds);
            }
            Op::CrashAfterPlan => {
                self.scanning_everything();
                let mut store = self.store();
                let report = sync::plan_pass(
                    &self.config,
                    &mut store,
                    &self.accounts(),
                    self.clock.now(),
                    &self.options(false),
                )
                .unwrap();
                // The guard counts exactly the deletions the address book asks for now:
                // ours on the remote (as the state has it) that no card wants, without
                // those in flight (their outcome is still to come).
                let due = self.deletions_due();
                let held = report.accounts[0].held.as_ref().map(|h| h.deletes);
                prop_assert_eq!(
                    held,
                    (due > self.max_deletes).then_some(due),
                    "the guard held the wrong deletions (max_deletes = {})",
                    self.max_deletes
                );
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
                            backend
                                .import(&items)
                                .await
                                .map(|_| ())
                                .map_err(|cut| cut.error)
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
                                backend.delete(&phones).await.map_err(|cut| cut.error)
                            };
                            match by_phone {
                                Ok(()) if !users.is_empty() => backend.delete_users(&users).await,
                                other => other,
                            }
                        }
                    };
                }
                // The process dies here: the reply is never applied.
                self.backend.state().crashed();
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

    /// Runs one operation on a runtime of its own; a crash at a fail point ends the
    /// "process" (its store and the transaction in progress are dropped) and the world goes
    /// on as after a restart.
    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let calls = self.backend.state().calls.len();
        self.backend.state().process_start = calls;
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(self.apply(op))));
        match outcome {
            Ok(result) => result,
            Err(payload) if payload.is::<Crash>() => {
                failpoint::disarm();
                self.backend.state().crashed();
                // A restart reads every file again before it sends.
                self.unscanned = None;
                self.clock.advance(200);
                let violations = std::mem::take(&mut self.backend.state().violations);
                prop_assert!(violations.is_empty(), "after {:?}: {:?}", op, violations);
                Ok(())
            }
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    /// The end of every case: faults gone, pauses over, one more pass must settle it all.
    async fn settle(&mut self) -> Result<(), TestCaseError> {
        self.backend.state().faults.clear();
        self.clock.advance(4000 + self.clock_set_back);
        self.apply(&Op::ForceSync).await?;
        let report = self.sync_once_with(false, true).await;
        prop_assert_eq!(
            report.accounts[0].batches_sent,
            0,
            "a settled pass sends nothing"
        );
        prop_assert_eq!(self.remote(), self.reachable());
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

/// Two sources; deletions held past `max_deletes` (the fraction never holds: one limit the
/// oracle can count against).
fn make_config(dir: &Path, austria: bool, exclude_work: bool, max_deletes: usize) -> Config {
    let exclude = if exclude_work {
        "exclude_categories = [\"Work\"]\n"
    } else {
        ""
    };
    let region = if austria { "AT" } else { "DE" };
    let text = format!(
        "state_dir = \"state\"\ndefault_region = \"{region}\"\n[safety]\nmax_deletes = {max_deletes}\nmax_delete_fraction = 1.0\n[[source]]\npath = \"book0\"\nname = \"a\"\n{exclude}[[source]]\npath = \"book1\"\nname = \"b\"\n{exclude}"
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

/// A fail point's crash is no test failure: not printed as a panic (others still are).
fn quiet_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Crash>() {
                previous(info);
            }
        }));
    });
}

fn cases() -> u32 {
    std::env::var("CONTACTSYNCD_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        // A failing case is written down (commit it) and replayed first from then on.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/model.txt"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_messenger_follows_the_address_book_whatever_happens(
        max_deletes in prop_oneof![Just(1usize), Just(2), Just(3), Just(1000)],
        refused in prop::option::weighted(0.3, 0..5u8),
        ops in prop::collection::vec(op(), 1..30),
    ) {
        quiet_crashes();
        let mut world = World::new(max_deletes, refused);
        for op in &ops {
            world.run(op)?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(world.settle())?;
    }
}

/// One case of the model run as given: the sequences that expose the mutations in
/// scripts/mutations (each fails there, shown by `scripts/mutation-check`), replayed on
/// every run whatever the random cases reach.
fn replay(max_deletes: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    quiet_crashes();
    let mut world = World::new(max_deletes, None);
    for op in ops {
        world.run(op)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(world.settle())
}

/// A card of the first source with the number `+4915123456780` + `number`.
fn plain(number: u8) -> CardModel {
    CardModel {
        source: 0,
        name: 0,
        number,
        national: false,
        work: false,
        username: 0,
    }
}

/// A delete refused with a wait stays queued; the card comes back and the planner stores
/// the scan; the sender's claim must drop the delete before the next plan would.
#[test]
fn a_delete_queued_before_the_card_came_back_is_dropped_at_the_claim() {
    replay(
        1000,
        &[
            Op::Write {
                slot: 0,
                card: plain(0),
            },
            Op::Sync,
            Op::Remove { slot: 0 },
            Op::FloodWait { after: 0 },
            Op::Sync,
            Op::Restore { slot: 0 },
            Op::ScanThenSend,
        ],
    )
    .unwrap();
}

/// A delete in flight (sent, its reply never applied) is no deletion the next plan asks
/// for: with one more card removed the plan holds nothing at `max_deletes = 1`.
#[test]
fn a_delete_in_flight_does_not_count_against_the_guard_again() {
    replay(
        1,
        &[
            Op::Write {
                slot: 0,
                card: plain(0),
            },
            Op::Write {
                slot: 1,
                card: plain(1),
            },
            Op::Sync,
            Op::Remove { slot: 0 },
            Op::CrashAfterSend,
            Op::Remove { slot: 1 },
            Op::CrashAfterPlan,
        ],
    )
    .unwrap();
}

/// Two cards removed at `max_deletes = 1`: the plan holds both deletions.
#[test]
fn two_deletions_past_max_deletes_are_held() {
    replay(
        1,
        &[
            Op::Write {
                slot: 0,
                card: plain(0),
            },
            Op::Write {
                slot: 1,
                card: plain(1),
            },
            Op::Sync,
            Op::Remove { slot: 0 },
            Op::Remove { slot: 1 },
            Op::CrashAfterPlan,
        ],
    )
    .unwrap();
}

/// A contact deleted in the app, then the clock set back before the next pass: the
/// reconcile recorded "in the future" is due now, and the pass restores the contact.
#[test]
fn a_reconcile_recorded_in_the_future_is_due_at_once() {
    replay(
        1000,
        &[
            Op::Write {
                slot: 0,
                card: plain(0),
            },
            Op::Sync,
            Op::DeleteInApp { number: 0 },
            Op::ClockBack { seconds: 700 },
            Op::Sync,
        ],
    )
    .unwrap();
}
