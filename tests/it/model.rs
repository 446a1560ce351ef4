//! The model-based test of DESIGN.md's invariants: random sequences of what happens in real
//! life — cards added, renamed, moved between files and sources, removed; the region or a
//! filter changed; syncs online and offline, forced past the deletion guard or not; the
//! daemon's change pass; its planner storing a scan and a sender claiming before the plan
//! follows; FLOOD_WAIT and lost replies after part of a batch went through; the clock set
//! back; a crash after planning or after a request reached the server; a contact deleted
//! in the app; cards known by a Telegram username instead of (or beside) a number, and one
//! Telegram user behind a username and a number; a source emptied (unknown); cards
//! written to and deleted from a CardDAV address book, and its server unreachable for a
//! while (a failed poll: the source unknown) — run
//! against the real files, the real store on disk and the real sync code, with the fake
//! backend checking every call the moment it arrives against an oracle that knows only the
//! address book.
//!
//! Two accounts side by side, each with its own mirror: Telegram (the fake backend) and
//! WhatsApp, the real `WhapiBackend` against the local Whapi stand-in, whose phone book
//! holds contacts the user saved before any sync or saves during the case (a `PUT` of one
//! answers 409), and which answers 429 or drops the connection at the n-th request of a
//! kind (so mid-batch: one request per item). The stand-in's observer checks every request
//! as it arrives. Each case runs with `on_remote_delete = reimport` or `keep`.
//!
//! Checked: (1) nothing sent contradicts the address book as last scanned, except an item
//! delivered before in the same batch (a resend after a lost reply or a crash; a call
//! refused with a wait delivered nothing); (2) after a pass with no pause, error or held
//! deletion, the remote holds exactly the address book (on Telegram person by person: one
//! user on a number's card and a username's is one contact, named as one of them names it);
//! (3) contacts added by hand are never touched; (4) a pass not forced deletes at most
//! `safety.max_deletes` per plan, and a plan holds its deletions exactly when those the
//! address book asks for exceed it; (5) the user's own WhatsApp contacts are never renamed
//! or deleted, whatever 409s and 429s came between; (6) a client_id always means one item;
//! (7) under `keep`, a contact deleted in the app is not imported again while its card
//! stays as it was; (8) a source that became unknown (emptied) deletes nothing: what it had
//! at its last scan stays in the address book the oracle knows, until a forced pass accepts
//! it empty; (9) a person deleted by user (`deleteContacts`) is never one another card
//! still wants; (10) the CardDAV source counts with what its last successful poll gave
//! (only a full pass polls: `sync --once`, not the daemon's change pass, plan or scan), a
//! pass that cannot reach its server reports it unknown, forced or not, and deletes nothing
//! of it.
//!
//! The sources: two folders (vdirs) and a CardDAV address book of the case's own on one
//! Radicale the whole run shares (started once; without one the random cases run with the
//! folders only, and say the server was skipped, as the CardDAV tests do).
//!
//! A case strings single operations and episodes of a few (see `ops`): an undo while the
//! daemon works, a delete batch cut before the next plan, a deletion in the app before the
//! clock is set back. `scripts/mutation-check` shows that the random cases alone catch each
//! mutation in `scripts/mutations`.
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

use std::sync::{Arc, Mutex};

use contactsyncd::backend::Backend;
use contactsyncd::backend::whapi::WhapiBackend;

use crate::dav::{self, DavServer};
use crate::fake_backend::{Call, FakeBackend, Fault};
use crate::sync::ManualClock;
use crate::whapi::{Entry, Observer, Request, WhapiFault, WhapiServer};

const SLOTS: u8 = 6;
const NAMES: [&str; 5] = ["Anna", "Annabel", "Anne", "Bob", "Carla"];
/// One card per source, gone only with the whole source (`EmptySource`): an emptied source
/// counts as unknown and keeps its contacts, a rule the model checks only then.
const ANCHORS: [(&str, &str); 2] = [
    ("Anchor A", "+4917000000001"),
    ("Anchor B", "+4917000000002"),
];
const HAND_ADDED: &str = "+493099999999";
/// The CardDAV source's name, and its card that is always there: the source is never
/// empty, so it becomes unknown only when its server cannot be reached.
const DAV_SOURCE: &str = "dav";
const DAV_ANCHOR: (&str, &str) = ("Anchor C", "+4917000000003");
/// Cards on the CardDAV server, each its own resource (`sN.vcf`).
const DAV_SLOTS: u8 = 3;
/// The account's name: Telegram's, as the account that adds contacts by username.
const ACCOUNT: &str = "telegram";
const WHATSAPP: &str = "whatsapp";
/// Both accounts, in the order the passes send them.
const ACCOUNTS: [&str; 2] = [ACCOUNT, WHATSAPP];
const WHAPI_TOKEN: &str = "model-token";
/// On the phone before the first sync, saved by the user (digits → their name): one the
/// address book may come to hold (number 3), one it never does.
const USER_SAVED: [(&str, &str); 2] = [("4915123456783", "Dad"), ("493099999998", "Gym")];
/// Names the user saves numbers under on the phone during a case: never a card's name.
const USER_NAMES: [&str; 2] = ["Mum's friend", "Doctor"];

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
    /// The daemon's planner plans (scan, store, plan, queue) and the sender has not had
    /// its turn yet: the plan's guard is checked exactly (as `CrashAfterPlan`).
    Plan,
    /// One turn of the daemon as its two tasks interleave: the planner stores a scan;
    /// with `claim_between` the sender claims and sends before the plan follows; the plan
    /// (its guard checked); the sender's turn.
    DaemonPass {
        claim_between: bool,
    },
    CrashAfterSend,
    /// A full pass that dies (the process, as by SIGKILL) the `nth` time it passes the fail
    /// point `failpoint::ALL[point]`: inside a store transaction, or between a request and
    /// the recording of its answer.
    Crash {
        point: u8,
        nth: u8,
    },
    /// The user deletes the contacts with this number (or username) in the app: Telegram,
    /// or on the phone (WhatsApp; never one they saved themselves).
    DeleteInApp {
        number: u8,
        whatsapp: bool,
    },
    /// A pass, then a deletion in the app: the case where the state knew the contact as
    /// it was, so that under `keep` importing it again is wrong (invariant 7).
    SyncThenDeleteInApp {
        number: u8,
        whatsapp: bool,
    },
    /// The WhatsApp gateway answers the `nth` next request of `METHODS[method]` with 429
    /// (refused before any work) or drops the connection after applying it (`reset`): in a
    /// batch, after the items before it went through.
    WhapiFault {
        method: u8,
        nth: u8,
        reset: bool,
    },
    /// Every file of the source is removed, its anchor too: the source is empty, which
    /// counts as unknown (nothing of it is deleted) until a card is back or a forced pass.
    EmptySource {
        source: u8,
    },
    /// The source's anchor card is written back.
    Anchor {
        source: u8,
    },
    /// The user saves a number on the phone themselves, under a name of their own: from
    /// then on it is theirs. Only a number the phone book never had (one we added and
    /// the user deleted would be theirs too, but no one could tell it from ours).
    UserSaves {
        number: u8,
        austria: bool,
        name: u8,
    },
    /// A card is written to the CardDAV address book (PUT): `NAMES[name]` with the
    /// number `+4915123456780` + `number` (international: no region in play).
    DavPut {
        slot: u8,
        name: u8,
        number: u8,
    },
    /// The card is removed from the CardDAV address book (DELETE).
    DavDelete {
        slot: u8,
    },
    /// The CardDAV server can be reached (or not) from now on: the source points at a
    /// port nothing listens on (a reload, as any configuration change). A poll that fails
    /// makes the source unknown: what its last successful poll gave stays in effect.
    DavReachable(bool),
}

/// The Whapi requests a fault can hit: adds, deletes, the listing, renames.
const METHODS: [&str; 4] = ["PUT", "DELETE", "GET", "PATCH"];

fn card() -> impl Strategy<Value = CardModel> {
    (
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
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SLOTS, card()).prop_map(|(slot, card)| Op::Write { slot, card }),
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
        2 => (0..5u8, any::<bool>()).prop_map(|(number, whatsapp)| Op::DeleteInApp { number, whatsapp }),
        1 => (0..5u8, any::<bool>())
            .prop_map(|(number, whatsapp)| Op::SyncThenDeleteInApp { number, whatsapp }),
        3 => (0..METHODS.len() as u8, 1..4u8, prop::bool::weighted(0.3))
            .prop_map(|(method, nth, reset)| Op::WhapiFault { method, nth, reset }),
        1 => (0..2u8).prop_map(|source| Op::EmptySource { source }),
        1 => (0..2u8).prop_map(|source| Op::Anchor { source }),
        1 => (0..5u8, any::<bool>(), 0..USER_NAMES.len() as u8)
            .prop_map(|(number, austria, name)| Op::UserSaves { number, austria, name }),
        2 => (0..DAV_SLOTS, 0..NAMES.len() as u8, 0..5u8)
            .prop_map(|(slot, name, number)| Op::DavPut { slot, name, number }),
        1 => (0..DAV_SLOTS).prop_map(|slot| Op::DavDelete { slot }),
        1 => any::<bool>().prop_map(Op::DavReachable),
    ]
}

/// What the daemon and the backends do between two changes of the address book: the steps
/// whose interleaving decides what a queued batch meets when it is claimed.
fn daemon_step() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Plan),
        3 => Just(Op::Send),
        2 => Just(Op::Scan),
        3 => any::<bool>().prop_map(|claim_between| Op::DaemonPass { claim_between }),
        1 => Just(Op::SyncOffline),
        1 => Just(Op::Sync),
        1 => Just(Op::ChangePass),
        2 => prop_oneof![Just(0u8), 1..4u8].prop_map(|after| Op::FloodWait { after }),
        1 => (0..4u8).prop_map(|after| Op::LoseReply { after }),
        2 => Just(Op::CrashAfterSend),
        1 => (1..3u8).prop_map(|nth| Op::Crash { point: fail_point(failpoint::AFTER_SEND), nth }),
        1 => (0..METHODS.len() as u8, 1..4u8, prop::bool::weighted(0.3))
            .prop_map(|(method, nth, reset)| Op::WhapiFault { method, nth, reset }),
    ]
}

/// `Op::WhapiFault`'s index of a request method.
fn method(name: &str) -> u8 {
    METHODS.iter().position(|m| *m == name).unwrap() as u8
}

/// A send whose outcome stays unknown: its batch is left in flight.
fn cut() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        2 => Just(vec![Op::CrashAfterSend]),
        1 => (0..4u8).prop_map(|after| vec![
            Op::LoseReply { after },
            Op::DaemonPass { claim_between: false },
        ]),
        1 => (1..3u8).prop_map(|nth| vec![
            Op::WhapiFault { method: method("DELETE"), nth, reset: true },
            Op::DaemonPass { claim_between: false },
        ]),
        1 => (1..4u8).prop_map(|nth| vec![Op::Crash {
            point: fail_point(failpoint::AFTER_SEND),
            nth,
        }]),
    ]
}

/// The daemon plans while the account cannot send what the plan queues (offline, a wait
/// answers the send, the sender has not had its turn), or plans and sends.
fn plan_and_maybe_send() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        2 => Just(vec![Op::Plan]),
        1 => Just(vec![Op::SyncOffline]),
        1 => (0..2u8).prop_map(|after| vec![
            Op::FloodWait { after },
            Op::DaemonPass { claim_between: false },
        ]),
        1 => Just(vec![
            Op::WhapiFault { method: method("DELETE"), nth: 1, reset: false },
            Op::DaemonPass { claim_between: false },
        ]),
        1 => any::<bool>().prop_map(|claim_between| vec![Op::DaemonPass { claim_between }]),
    ]
}

/// A case: single operations, and episodes of a few that real life strings together
/// and that uniform draws of single operations almost never line up (measured with
/// `MUTATION_RANDOM_ONLY=1 scripts/mutation-check`: neither the claim's re-check of a stale
/// delete nor the diff's skipping of numbers in flight was reached in 1,000 such cases).
/// The operations inside an episode are drawn at random like any other.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let episode = prop_oneof![
        12 => op().prop_map(|op| vec![op]),
        // A card added and synced, removed, and restored (an undo, a backup) while the
        // daemon works: the delete queued for it meets the restored card at the claim, at
        // the plan, or not at all.
        3 => (
            0..SLOTS,
            card(),
            plan_and_maybe_send(),
            prop::collection::vec(daemon_step(), 0..3),
            any::<bool>(),
            prop::collection::vec(daemon_step(), 0..3),
        )
            .prop_map(|(slot, card, planned, before, claim_first, after)| {
                let mut ops = vec![Op::Write { slot, card }, Op::Sync, Op::Remove { slot }];
                ops.extend(planned);
                ops.extend(before);
                ops.push(Op::Restore { slot });
                // The watcher names the file: the planner stores the scan first, and then
                // either the sender claims or the plan comes first (the race the claim's
                // re-check is for).
                ops.push(Op::Scan);
                ops.push(if claim_first { Op::Send } else { Op::Plan });
                ops.extend(after);
                ops
            }),
        // Cards added, synced and removed (more than the guard lets go, or not), and the
        // batch that deletes them cut (the process dies after the request, the reply is
        // lost, the gateway drops the connection) while the daemon goes on: its numbers
        // are in flight when the next plans are made.
        3 => (
            prop::collection::vec((0..SLOTS, card()), 1..5),
            cut(),
            any::<bool>(),
            prop::collection::vec(daemon_step(), 0..3),
        )
            .prop_map(|(cards, cut, planner_first, after)| {
                let mut ops: Vec<Op> = cards
                    .iter()
                    .map(|&(slot, card)| Op::Write { slot, card })
                    .collect();
                ops.push(Op::Sync);
                ops.extend(cards.iter().map(|&(slot, _)| Op::Remove { slot }));
                ops.extend(cut);
                // The next plan, or the sender's resend that settles the cut batch first.
                ops.push(Op::DaemonPass {
                    claim_between: !planner_first,
                });
                ops.extend(after);
                ops
            }),
        // A contact deleted in the app after a pass, the clock set back (NTP, a wrong RTC
        // at boot) before the next ones: the reconcile the state recorded is "in the
        // future", and a pass must still see the deletion.
        1 => (
            0..SLOTS,
            card(),
            any::<bool>(),
            prop_oneof![Just(700u16), Just(2500)],
            prop::collection::vec(daemon_step(), 0..2),
        )
            .prop_map(|(slot, card, whatsapp, seconds, between)| {
                let mut ops = vec![
                    Op::Write { slot, card },
                    Op::Sync,
                    Op::DeleteInApp {
                        number: card.number,
                        whatsapp,
                    },
                    Op::ClockBack { seconds },
                ];
                ops.extend(between);
                ops.push(Op::Sync);
                ops
            }),
    ];
    // About as many operations as before episodes (1..30 single ones).
    prop::collection::vec(episode, 1..16)
        .prop_map(|episodes| episodes.into_iter().flatten().take(30).collect())
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

/// The Whapi stand-in runs on a thread and runtime of its own (each operation of a case
/// has a new runtime); it stops when this is dropped.
struct GatewayThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GatewayThread {
    fn start() -> (WhapiServer, Self) {
        let (started, server) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                started.send(WhapiServer::start(WHAPI_TOKEN).await).unwrap();
                let _ = stopped.await;
            });
        });
        let gateway = Self {
            stop: Some(stop),
            thread: Some(thread),
        };
        (server.recv().unwrap(), gateway)
    }
}

impl Drop for GatewayThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The WhatsApp side's oracle, fed by the stand-in's observer: what the address book wants
/// and whose each phone-book contact is, known without the code under test.
#[derive(Default)]
struct WhatsAppOracle {
    /// Number → the name the address book wants, as of the last scan.
    expected: BTreeMap<String, String>,
    /// Digits → the name the user saved it under: theirs, never renamed or deleted.
    users: BTreeMap<String, String>,
    /// Under `keep`: numbers deleted on the phone → their name then, while the card stays.
    kept_deleted: BTreeMap<String, String>,
    /// The state database, where a request's batch is looked up (as the fake does).
    outbox: PathBuf,
    /// `(batch, number, name)` of requests that reached the phone book: one that comes again
    /// in the same batch is a resend (its answer was lost, or the process died).
    delivered: BTreeSet<(i64, String, String)>,
    violations: Vec<String>,
    /// Deletes that were no resend, for the guard.
    fresh_deletes: usize,
    /// `(kind, number, name)` of the requests the running process made (see `crashed`).
    this_process: Vec<(&'static str, String, String)>,
}

impl WhatsAppOracle {
    /// The process died: what it was answered and did not record is unknown to the next
    /// one. Each request it made whose batch the state still shows in flight may go out
    /// again as it was (as the fake backend's `crashed`).
    fn crashed(&mut self) {
        for (kind, key, name) in std::mem::take(&mut self.this_process) {
            if let Some(batch) = self.batch(kind, &key) {
                self.delivered.insert((batch, key, name));
            }
        }
    }

    /// The batch in flight (`sent`) of `kind` that carries `key`.
    fn batch(&self, kind: &str, key: &str) -> Option<i64> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.outbox,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        conn.query_row(
            "SELECT b.id FROM outbox_batch b JOIN outbox_item i ON i.batch_id = b.id
             WHERE b.backend = ?1 AND b.kind = ?2 AND b.state = 'sent' AND i.contact_key = ?3
             ORDER BY b.id DESC LIMIT 1",
            [WHATSAPP, kind, key],
            |r| r.get(0),
        )
        .ok()
    }

    /// One request, as it arrives: checked, and remembered when it reached the phone book.
    fn observe(&mut self, request: &Request, delivered: bool) {
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap_or_default();
        let body_name = || body["name"].as_str().unwrap_or_default().to_owned();
        let id = request.path.strip_prefix("/contacts/");
        let (digits, name, kind) = match (request.method.as_str(), id) {
            ("PUT", None) => (
                body["phone"].as_str().unwrap_or_default().to_owned(),
                body_name(),
                "import",
            ),
            ("PATCH", Some(id)) => (id.to_owned(), body_name(), "import"),
            ("DELETE", Some(id)) => (id.to_owned(), String::new(), "delete"),
            _ => return,
        };
        let key = format!("+{digits}");
        self.this_process.push((kind, key.clone(), name.clone()));
        let batch = self.batch(kind, &key);
        let resend =
            batch.is_some_and(|b| self.delivered.contains(&(b, key.clone(), name.clone())));
        if delivered && let Some(batch) = batch {
            self.delivered.insert((batch, key.clone(), name.clone()));
        }
        let method = request.method.as_str();
        let mut found = Vec::new();
        if method != "PUT" && self.users.contains_key(&digits) {
            found.push(format!("{method} of the user's own {key}"));
        }
        if method == "DELETE" {
            if !resend && self.expected.contains_key(&key) {
                found.push(format!("DELETE of {key}, which the address book wants"));
            }
            self.fresh_deletes += usize::from(!resend);
        } else if !resend {
            let wanted = self.expected.get(&key);
            if wanted != Some(&name) {
                found.push(format!(
                    "{method} of {key} as {name:?} while the address book wants {wanted:?}"
                ));
            }
            if self.kept_deleted.get(&key) == Some(&name) {
                found.push(format!(
                    "{method} of {key}, deleted on the phone under on_remote_delete = keep, its card unchanged"
                ));
            }
        }
        self.violations.extend(found);
    }
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
    /// The WhatsApp stand-in (dropped before the runtime it runs on), its oracle.
    whapi: WhapiServer,
    _gateway: GatewayThread,
    whatsapp: Arc<Mutex<WhatsAppOracle>>,
    /// `on_remote_delete = reimport` (else `keep`), both accounts.
    reimport: bool,
    /// Per account (`ACCOUNTS`), under `keep`: keys deleted in the app at some time; the
    /// remote may lack them for good.
    deleted_in_app: [BTreeSet<String>; 2],
    /// The last pass left both accounts equal to the address book, and nothing happened
    /// since but faults scripted and contacts deleted in the app: the state knows the remote.
    settled: bool,
    /// Per source: its anchor card is there (`EmptySource` removes it, `Anchor` writes it).
    anchored: [bool; 2],
    /// Per source: what it asked for at the last full scan that saw a card in it (`None`:
    /// accepted empty, or never scanned).
    frozen: [Option<BTreeMap<String, (String, String)>>; 2],
    /// A full scan was stored once: from then on the state knows every file.
    full_scan_done: bool,
    /// `frozen` and `full_scan_done` before a pass that may die inside its scan's
    /// transaction (then the scan was never stored).
    before_crash: Option<FrozenSources>,
    /// The case's CardDAV address book on the run's Radicale (`None`: no CardDAV source).
    dav: Option<DavBook>,
    /// The cards on the CardDAV server now, per slot: `(name, number)`.
    dav_cards: [Option<(u8, u8)>; DAV_SLOTS as usize],
    /// What the CardDAV source asks for as of its last successful poll: the state's cache,
    /// in effect whether the source is known or not (a failed poll changes nothing in it).
    dav_cached: BTreeMap<String, (String, String)>,
    /// The source points at a port nothing listens on.
    dav_down: bool,
}

/// One address book of its own per case, on the Radicale the whole run shares.
struct DavBook {
    /// The address book's URL (`/alice/model-N/`).
    url: String,
    /// The same path on a port nothing listens on: the server cannot be reached.
    dead_url: String,
    password_file: PathBuf,
}

impl DavBook {
    /// A new address book holding the anchor card; the password in the case's `dir`.
    async fn create(server: &DavServer, dir: &Path) -> Self {
        static BOOKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "model-{}",
            BOOKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let url = server.book_url(&name);
        let (anchor, number) = DAV_ANCHOR;
        let card = format!(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:anchor\r\nFN:{anchor}\r\nTEL;TYPE=CELL:{number}\r\nEND:VCARD\r\n"
        );
        // Radicale makes an address book of a collection PUT with vCards.
        dav_request("PUT", &url, Some(card)).await;
        let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dead_url = url.replace(&format!(":{}/", server.port()), &format!(":{dead_port}/"));
        let password_file = dir.join("dav-password");
        std::fs::write(&password_file, dav::PASSWORD).unwrap();
        Self {
            url,
            dead_url,
            password_file,
        }
    }
}

/// A request to the run's Radicale, on a client of its own (each operation of a case runs
/// on a runtime of its own, and a pooled connection does not outlive its runtime).
async fn dav_request(method: &str, url: &str, vcard: Option<String>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method.clone(), url)
        .basic_auth(dav::USER, Some(dav::PASSWORD));
    if let Some(vcard) = vcard {
        request = request
            .header("Content-Type", "text/vcard; charset=utf-8")
            .body(vcard);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{method} {url}: {}",
        response.status()
    );
}

/// The card `Op::DavPut` writes.
fn dav_card(slot: u8, name: u8, number: u8) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:s{slot}\r\nFN:{}\r\nTEL;TYPE=CELL:+491512345678{number}\r\nEND:VCARD\r\n",
        NAMES[usize::from(name)]
    )
}

type FrozenSources = ([Option<BTreeMap<String, (String, String)>>; 2], bool);

impl World {
    fn new(
        max_deletes: usize,
        refused: Option<u8>,
        reimport: bool,
        dav_server: Option<&DavServer>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dav = dav_server.map(|server| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(DavBook::create(server, dir.path()))
        });
        for (source, (name, number)) in ANCHORS.iter().enumerate() {
            let book = dir.path().join(format!("book{source}"));
            std::fs::create_dir(&book).unwrap();
            std::fs::write(book.join("anchor.vcf"), card_text(name, number, false)).unwrap();
        }
        let users = (0..5u8)
            .flat_map(|n| [format!("+491512345678{n}"), format!("+431512345678{n}")])
            .filter(|phone| !phone.ends_with('4')) // number 4 has no account: saved
            .chain(ANCHORS.iter().map(|(_, n)| (*n).to_owned()))
            .chain([DAV_ANCHOR.1.to_owned()])
            .chain((0..5u8).map(|n| format!("@friend{n}")))
            .collect::<Vec<_>>();
        // Named as the account that adds contacts by username.
        let mut backend = FakeBackend::new(3).with_users(users.iter().map(String::as_str));
        backend.name = ACCOUNT.into();
        {
            let mut account = backend.state();
            account.backend = ACCOUNT.into();
            account.reconcile = Some((0, reimport));
            // One person under two keys: `@friend0` and `@friend1` are the users behind
            // numbers 0 and 1 (German form), so a card by username and another by number
            // can name the same Telegram user, and deleting one by user deletes both.
            for n in 0..2 {
                let user = account.users[&format!("+491512345678{n}")];
                account.users.insert(format!("@friend{n}"), user);
            }
            account.hand_added.insert(HAND_ADDED.to_owned());
            account
                .contacts
                .insert(HAND_ADDED.to_owned(), ("Mum".into(), String::new()));
        }
        let (whapi, gateway) = GatewayThread::start();
        for (digits, name) in USER_SAVED {
            whapi.save_by_user(digits, name);
        }
        let config = make_config(
            dir.path(),
            &ConfigKnobs {
                max_deletes,
                reimport,
                base_url: whapi.base_url(),
                dav: dav
                    .as_ref()
                    .map(|book| (book.url.clone(), book.password_file.clone())),
                ..ConfigKnobs::default()
            },
        );
        let outbox = contactsyncd::store::Store::path(&config.state_dir);
        backend.state().outbox = Some(outbox.clone());
        let whatsapp = Arc::new(Mutex::new(WhatsAppOracle {
            users: USER_SAVED
                .iter()
                .map(|(d, n)| ((*d).to_owned(), (*n).to_owned()))
                .collect(),
            outbox,
            ..WhatsAppOracle::default()
        }));
        let observer = Arc::clone(&whatsapp);
        whapi.state().observer = Some(Observer(Arc::new(
            move |request: &Request, delivered: bool, _: &BTreeMap<String, Entry>| {
                observer.lock().unwrap().observe(request, delivered);
            },
        )));
        let refused = refused.map(|n| format!("+491512345678{n}"));
        backend.state().refused.extend(refused.clone());
        let world = Self {
            whapi,
            _gateway: gateway,
            whatsapp,
            reimport,
            deleted_in_app: Default::default(),
            settled: false,
            anchored: [true; 2],
            frozen: Default::default(),
            full_scan_done: false,
            before_crash: None,
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
            dav,
            dav_cards: [None; DAV_SLOTS as usize],
            dav_cached: BTreeMap::new(),
            dav_down: false,
        };
        world.update_oracle();
        world
    }

    fn reconfigure(&mut self) {
        self.config = make_config(
            self.dir.path(),
            &ConfigKnobs {
                austria: self.austria,
                exclude_work: self.exclude_work,
                max_deletes: self.max_deletes,
                reimport: self.reimport,
                base_url: self.whapi.base_url(),
                dav: self.dav.as_ref().map(|book| {
                    let url = if self.dav_down {
                        &book.dead_url
                    } else {
                        &book.url
                    };
                    (url.clone(), book.password_file.clone())
                }),
            },
        );
        self.unscanned = None;
    }

    fn anchor_path(&self, source: u8) -> PathBuf {
        self.dir
            .path()
            .join(format!("book{source}"))
            .join("anchor.vcf")
    }

    fn slot_path(&self, slot: u8, source: u8) -> PathBuf {
        self.dir
            .path()
            .join(format!("book{source}"))
            .join(format!("c{slot}.vcf"))
    }

    /// The address book as a person reads it: sources in order, files by name, the first
    /// card with a number names it; filtered cards left out.
    ///
    /// A source emptied (its cards, anchor and all, removed) counts as unknown: what it had
    /// at the last scan that saw a card in it stays in effect, until a forced pass accepts
    /// it empty.
    fn desired(&self) -> BTreeMap<String, (String, String)> {
        let mut desired = BTreeMap::new();
        for source in 0..2u8 {
            let in_effect = match &self.frozen[source as usize] {
                Some(frozen) if !self.has_cards(source) => frozen.clone(),
                _ => self.source_now(source),
            };
            for (key, names) in in_effect {
                desired.entry(key).or_insert(names);
            }
        }
        for (key, names) in &self.dav_cached {
            desired.entry(key.clone()).or_insert_with(|| names.clone());
        }
        desired
    }

    /// A pass polls the CardDAV source: when its server can be reached, the cache is what
    /// the server holds now; otherwise nothing changes (the source is unknown).
    fn polled(&mut self) {
        if self.dav.is_none() || self.dav_down {
            return;
        }
        let mut cached = BTreeMap::new();
        cached.insert(
            DAV_ANCHOR.1.to_owned(),
            (DAV_ANCHOR.0.to_owned(), String::new()),
        );
        // Cards in URL order (`anchor.vcf`, `s0.vcf`, …): the first names a number.
        for &(name, number) in self.dav_cards.iter().flatten() {
            cached
                .entry(format!("+491512345678{number}"))
                .or_insert_with(|| (NAMES[usize::from(name)].to_owned(), String::new()));
        }
        self.dav_cached = cached;
    }

    /// What the source's files ask for now, first card first.
    fn source_now(&self, source: u8) -> BTreeMap<String, (String, String)> {
        let mut wanted = BTreeMap::new();
        if self.anchored[source as usize] {
            let (name, number) = ANCHORS[source as usize];
            wanted.insert(number.to_owned(), (name.to_owned(), String::new()));
        }
        for card in self.slots.iter().flatten() {
            if card.source != source || (card.work && self.exclude_work) {
                continue;
            }
            wanted
                .entry(key(card, self.austria))
                .or_insert_with(|| (NAMES[card.name as usize].to_owned(), String::new()));
        }
        wanted
    }

    fn has_cards(&self, source: u8) -> bool {
        self.anchored[source as usize] || self.slots.iter().flatten().any(|c| c.source == source)
    }

    /// A full scan: a source with cards is known as it is; an empty one stays unknown
    /// (what it had stays in effect) unless `accept_empty` (`--force-delete`).
    fn scanned(&mut self, accept_empty: bool) {
        self.full_scan_done = true;
        for source in 0..2u8 {
            if self.has_cards(source) {
                self.frozen[source as usize] = Some(self.source_now(source));
            } else if accept_empty {
                self.frozen[source as usize] = None;
            }
        }
    }

    /// What the account `ACCOUNTS[account]` is to hold: WhatsApp knows people only by number.
    fn desired_of(&self, account: usize) -> BTreeMap<String, (String, String)> {
        let mut desired = self.desired();
        if ACCOUNTS[account] == WHATSAPP {
            desired.retain(|key, _| !key.starts_with('@'));
        }
        desired
    }

    /// What the account holds of ours once everything went through: the address book
    /// without the number the Telegram server refuses, and on WhatsApp without the numbers
    /// the user saved (theirs, under their names).
    fn reachable_of(&self, account: usize) -> BTreeMap<String, (String, String)> {
        let mut desired = self.desired_of(account);
        if ACCOUNTS[account] == WHATSAPP {
            let users = self.whatsapp.lock().unwrap().users.clone();
            desired.retain(|key, _| !users.contains_key(&key[1..]));
        } else if let Some(refused) = &self.refused {
            desired.remove(refused);
        }
        desired
    }

    /// The account's contacts of ours: Telegram's contacts and saved numbers without the
    /// hand-added; WhatsApp's phone book without the user's own.
    fn remote_of(&self, account: usize) -> BTreeMap<String, (String, String)> {
        if ACCOUNTS[account] == WHATSAPP {
            let users = self.whatsapp.lock().unwrap().users.clone();
            return self
                .whapi
                .saved()
                .into_iter()
                .filter(|(digits, _)| !users.contains_key(digits))
                .map(|(digits, name)| (format!("+{digits}"), (name, String::new())))
                .collect();
        }
        let mut all = self.backend.state().all_numbers();
        all.remove(HAND_ADDED);
        all
    }

    /// The remote holds what the address book asks (a contact deleted in the app under
    /// `keep` may be missing), and whatever the user saved themselves as they saved it.
    fn check_remote(&self, account: usize, context: &str) -> Result<(), TestCaseError> {
        let mut remote = self.remote_of(account);
        let mut wanted = self.reachable_of(account);
        for key in &self.deleted_in_app[account] {
            if !remote.contains_key(key) {
                wanted.remove(key);
            }
        }
        if ACCOUNTS[account] == ACCOUNT {
            // One person, one contact on Telegram: the fake keeps an entry per key a person
            // was added by (all named as the last call named them), and the book may want
            // them under two (a number's card and a username's). The person is what is
            // compared: wanted under some key, they are there when any of their keys is,
            // named as one of those cards names them; wanted under none, under no key.
            let fake = self.backend.state();
            let keys: BTreeSet<String> = remote.keys().chain(wanted.keys()).cloned().collect();
            let persons: BTreeSet<Vec<String>> = keys
                .iter()
                .map(|key| {
                    let mut person: Vec<String> = fake
                        .person(key)
                        .into_iter()
                        .filter(|k| keys.contains(k))
                        .collect();
                    person.sort();
                    person
                })
                .filter(|person| person.len() > 1)
                .collect();
            for person in persons {
                let asked: Vec<&String> =
                    person.iter().filter(|k| wanted.contains_key(*k)).collect();
                let shown: Vec<&(String, String)> =
                    person.iter().filter_map(|k| remote.get(k)).collect();
                let named_as_asked = !asked.is_empty()
                    && !shown.is_empty()
                    && shown
                        .iter()
                        .all(|names| asked.iter().any(|k| wanted[*k] == **names));
                if named_as_asked {
                    for key in &person {
                        match wanted.get(key) {
                            Some(names) => remote.insert(key.clone(), names.clone()),
                            None => remote.remove(key),
                        };
                    }
                }
            }
        }
        prop_assert_eq!(
            remote,
            wanted,
            "{} is not what the address book asks: {}",
            ACCOUNTS[account],
            context
        );
        if ACCOUNTS[account] == WHATSAPP {
            let users = self.whatsapp.lock().unwrap().users.clone();
            let saved = self.whapi.saved();
            for (digits, name) in users {
                prop_assert_eq!(saved.get(&digits), Some(&name), "the user's own contact");
            }
        } else {
            let mum = self.backend.state().contacts.get(HAND_ADDED).cloned();
            prop_assert_eq!(mum, Some(("Mum".to_owned(), String::new())));
        }
        Ok(())
    }

    /// The deletions the address book asks for now, read from the state on disk: our
    /// contacts on the remote (mirror rows imported or saved) that no card wants and that
    /// no batch in flight carries.
    fn deletions_due(&self, account: usize) -> BTreeSet<String> {
        let conn = self.state_db();
        let mut ours = conn
            .prepare(
                "SELECT contact_key FROM mirror WHERE backend = ?1 AND state IN ('imported', 'saved')
                 AND contact_key NOT IN (SELECT i.contact_key FROM outbox_item i
                   JOIN outbox_batch b ON b.id = i.batch_id WHERE b.state = 'sent'
                   AND b.backend = ?1)",
            )
            .unwrap();
        let desired = self.desired_of(account);
        ours.query_map([ACCOUNTS[account]], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .filter(|key| !desired.contains_key(key))
            .collect()
    }

    /// Per account, the deletions queued and not sent yet: a plan that asks for them again
    /// keeps them in place and does not count them as news.
    fn deletions_queued(&self) -> [BTreeSet<String>; 2] {
        let conn = self.state_db();
        let mut queued = conn
            .prepare(
                "SELECT i.contact_key FROM outbox_item i JOIN outbox_batch b ON b.id = i.batch_id
                 WHERE b.backend = ?1 AND b.kind = 'delete' AND b.state = 'planned'",
            )
            .unwrap();
        ACCOUNTS.map(|account| {
            queued
                .query_map([account], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        })
    }

    fn state_db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            contactsyncd::store::Store::path(&self.config.state_dir),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// `plan_pass`, as the daemon's planner and `contactsyncd plan` run it, checked at once
    /// (see `check_plan`).
    fn plan_checked(&self, store: &mut Store) -> Result<PassReport, TestCaseError> {
        let queued = self.deletions_queued();
        let report = sync::plan_pass(
            &self.config,
            store,
            &self.accounts(),
            self.clock.now(),
            &self.options(false),
        )
        .unwrap();
        self.check_plan(&report, &queued)?;
        Ok(report)
    }

    /// What the backend checks calls against: the address book as of the last scan. A
    /// change no scan has seen yet cannot be known (the daemon hears of it after the
    /// debounce); a send before that is no violation.
    fn update_oracle(&self) {
        self.backend.state().expected = Some(self.desired_of(0));
        self.whatsapp.lock().unwrap().expected = self
            .desired_of(1)
            .into_iter()
            .map(|(key, (first, last))| (key, format!("{first} {last}").trim().to_owned()))
            .collect();
    }

    /// A full pass is about to scan everything.
    fn scanning_everything(&mut self) {
        self.scanning_everything_with(false);
    }

    fn scanning_everything_with(&mut self, accept_empty: bool) {
        self.unscanned = Some(BTreeSet::new());
        self.scanned(accept_empty);
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
        self.backends()
            .iter()
            .map(|b| AccountSpec::of(b.as_ref()))
            .collect()
    }

    /// Both accounts' backends, as a new process makes them.
    fn backends(&self) -> Vec<Box<dyn Backend>> {
        let whatsapp = self.config.whatsapp.as_ref().unwrap();
        vec![
            self.backend.boxed(),
            Box::new(WhapiBackend::new(whatsapp).unwrap()),
        ]
    }

    /// `sync --once` (with `--offline`): its own store, as a new process would open it.
    async fn sync_once(&self, offline: bool) -> PassReport {
        self.sync_once_with(offline, false).await
    }

    async fn sync_once_with(&self, offline: bool, force_delete: bool) -> PassReport {
        let mut store = self.store();
        let mut backends = self.backends();
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

    /// A sender's turn for each account.
    async fn send(&self, store: &mut Store) {
        let mut budget = 0;
        for mut backend in self.backends() {
            let mut report = AccountReport::default();
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
        }
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

    /// Just after a plan (nothing sent yet): the guard counts exactly the deletions the
    /// address book asks for now, per account: ours on the remote (as the state has it)
    /// that no card wants, without those in flight (their outcome is still to come). The
    /// plan reports those deletions (what `sync` and `contactsyncd plan` print), less the
    /// ones `queued` before it, which it kept in place.
    fn check_plan(
        &self,
        report: &PassReport,
        queued: &[BTreeSet<String>; 2],
    ) -> Result<(), TestCaseError> {
        for (index, name) in ACCOUNTS.iter().enumerate() {
            let due = self.deletions_due(index);
            let account = report.accounts.iter().find(|a| a.backend == *name).unwrap();
            let held = account.held.as_ref().map(|h| h.deletes);
            prop_assert_eq!(
                held,
                (due.len() > self.max_deletes).then_some(due.len()),
                "the guard held the wrong deletions of {} (max_deletes = {})",
                name,
                self.max_deletes
            );
            let news = if held.is_some() {
                due.len()
            } else {
                due.difference(&queued[index]).count()
            };
            prop_assert_eq!(
                account.planned.deletes,
                news,
                "the plan of {} reports the wrong deletions (due: {:?}, queued before: {:?})",
                name,
                due,
                &queued[index]
            );
        }
        Ok(())
    }

    fn remove_card(&mut self, slot: u8) {
        if let Some(old) = self.slots[slot as usize].take() {
            std::fs::remove_file(self.slot_path(slot, old.source)).unwrap();
            self.touched(self.slot_path(slot, old.source));
            self.removed[slot as usize] = Some(old);
        }
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write { slot, card } => self.write_card(slot, card),
            Op::Remove { slot } => self.remove_card(slot),
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
                self.polled();
                self.scanning_everything_with(force);
                self.backend.state().fresh_deletes = 0;
                self.whatsapp.lock().unwrap().fresh_deletes = 0;
                let report = self.sync_once_with(false, force).await;
                if self.dav.is_some() {
                    // The poll failed exactly when the server could not be reached; even
                    // forced, a source that cannot be read is not taken as empty.
                    let dav_unknown = report.unknown_sources.iter().any(|s| s.name == DAV_SOURCE);
                    prop_assert_eq!(dav_unknown, self.dav_down, "{:?}", &report.unknown_sources);
                }
                // The CardDAV source unknown keeps what its last poll gave, which the oracle
                // knows (its numbers are international: no region re-derives them).
                let folders_known = report.unknown_sources.iter().all(|s| s.name == DAV_SOURCE);
                let mut quiet = true;
                for (index, name) in ACCOUNTS.iter().enumerate() {
                    let account = report.accounts.iter().find(|a| a.backend == *name).unwrap();
                    // The guard: a pass deletes at most max_deletes at each plan (a second
                    // plan runs when items were in flight or superseded), unless forced.
                    let plans = if account.in_flight > 0 || account.superseded > 0 {
                        2
                    } else {
                        1
                    };
                    let deleted = if *name == WHATSAPP {
                        self.whatsapp.lock().unwrap().fresh_deletes
                    } else {
                        self.backend.state().fresh_deletes
                    };
                    prop_assert!(
                        force || deleted <= self.max_deletes * plans,
                        "a pass deleted {} contacts past safety.max_deletes = {}: {:?}",
                        deleted,
                        self.max_deletes,
                        account
                    );
                    // A source unknown keeps what it had as the state has it (derived as at
                    // its last scan): the end compares, once a forced pass accepted it.
                    if account.stop.is_none() && account.held.is_none() && folders_known {
                        self.check_remote(index, &format!("after a quiet pass: {account:?}"))?;
                        prop_assert_eq!(account.queued_batches, 0);
                    }
                    if account.stop.is_some()
                        || account.held.is_some()
                        || !report.unknown_sources.is_empty()
                    {
                        quiet = false;
                    }
                }
                self.settled = quiet;
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
                if changed && !self.full_scan_done {
                    // The state knows only the files this pass read: no source's whole
                    // content, so nothing to freeze.
                    self.unscanned = Some(BTreeSet::new());
                    self.update_oracle();
                } else {
                    self.scanning_everything();
                }
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
                let scan = contactsyncd::source::scan(
                    &self.config,
                    &store,
                    self.clock.now(),
                    false,
                    contactsyncd::phone::Purpose::Push,
                )
                .unwrap();
                store.apply_scan(&scan.changes, self.clock.now()).unwrap();
            }
            Op::SyncThenDeleteInApp { number, whatsapp } => {
                Box::pin(self.apply(&Op::Sync)).await?;
                Box::pin(self.apply(&Op::DeleteInApp { number, whatsapp })).await?;
            }
            Op::ScanThenSend => {
                Box::pin(self.apply(&Op::Scan)).await?;
                Box::pin(self.apply(&Op::Send)).await?;
            }
            Op::DaemonPass { claim_between } => {
                Box::pin(self.apply(&Op::Scan)).await?;
                if claim_between {
                    Box::pin(self.apply(&Op::Send)).await?;
                }
                Box::pin(self.apply(&Op::Plan)).await?;
                Box::pin(self.apply(&Op::Send)).await?;
            }
            Op::Send => {
                let mut store = self.store();
                // After a restart (a crash, a reload) the daemon plans before it sends.
                if self.unscanned.is_none() {
                    self.scanning_everything();
                    self.plan_checked(&mut store)?;
                }
                self.send(&mut store).await;
            }
            Op::Crash { point, nth } => {
                self.before_crash = Some((self.frozen.clone(), self.full_scan_done));
                // The poll comes first, and no fail point is inside it.
                self.polled();
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
            Op::CrashAfterPlan | Op::Plan => {
                self.scanning_everything();
                let mut store = self.store();
                self.plan_checked(&mut store)?;
            }
            Op::CrashAfterSend => {
                self.scanning_everything();
                let mut store = self.store();
                let now = self.clock.now();
                self.plan_checked(&mut store)?;
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
                        // username contact) by user; a number whose person another card wants
                        // under another key without a call.
                        contactsyncd::store::BatchKind::Delete => {
                            let keys: Vec<String> =
                                batch.items.iter().map(|i| i.e164.clone()).collect();
                            let users = store.users_of(ACCOUNT, &keys).unwrap();
                            let kept = store.kept_under_another_key(ACCOUNT, &keys).unwrap();
                            let phones: Vec<String> = keys
                                .into_iter()
                                .filter(|k| !k.starts_with('@') && !kept.contains(k))
                                .collect();
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
                self.whatsapp.lock().unwrap().crashed();
            }
            Op::DeleteInApp { number, whatsapp } => {
                let ours = |key: &str| {
                    key.starts_with("+4") && key.ends_with(&format!("1512345678{number}"))
                        || key == format!("@friend{number}")
                };
                let mut deleted = BTreeMap::new();
                if whatsapp {
                    let users = self.whatsapp.lock().unwrap().users.clone();
                    for (digits, entry) in &mut self.whapi.state().contacts {
                        if entry.saved && !users.contains_key(digits) && ours(&format!("+{digits}"))
                        {
                            entry.saved = false;
                            deleted
                                .insert(format!("+{digits}"), (entry.name.clone(), String::new()));
                        }
                    }
                } else {
                    self.backend.state().contacts.retain(|key, names| {
                        let gone = ours(key);
                        if gone {
                            deleted.insert(key.clone(), names.clone());
                        }
                        !gone
                    });
                }
                let account = usize::from(whatsapp);
                if !self.reimport {
                    self.deleted_in_app[account].extend(deleted.keys().cloned());
                    // The state knew these contacts as they were: not imported again while
                    // their cards stay so (see `after`).
                    if self.settled {
                        if whatsapp {
                            let mut oracle = self.whatsapp.lock().unwrap();
                            for (key, (name, _)) in deleted {
                                oracle.kept_deleted.insert(key, name);
                            }
                        } else {
                            self.backend.state().kept_deleted.extend(deleted);
                        }
                    }
                }
            }
            Op::EmptySource { source } => {
                for slot in 0..SLOTS {
                    if self.slots[slot as usize].is_some_and(|c| c.source == source) {
                        self.remove_card(slot);
                    }
                }
                if self.anchored[source as usize] {
                    let anchor = self.anchor_path(source);
                    std::fs::remove_file(&anchor).unwrap();
                    self.touched(anchor);
                    self.anchored[source as usize] = false;
                }
            }
            Op::Anchor { source } => {
                if !self.anchored[source as usize] {
                    let (name, number) = ANCHORS[source as usize];
                    let anchor = self.anchor_path(source);
                    std::fs::write(&anchor, card_text(name, number, false)).unwrap();
                    self.touched(anchor);
                    self.anchored[source as usize] = true;
                }
            }
            Op::DavPut { slot, name, number } => {
                if let Some(book) = &self.dav {
                    let url = format!("{}s{slot}.vcf", book.url);
                    dav_request("PUT", &url, Some(dav_card(slot, name, number))).await;
                    self.dav_cards[usize::from(slot)] = Some((name, number));
                }
            }
            Op::DavDelete { slot } => {
                if let Some(book) = &self.dav
                    && self.dav_cards[usize::from(slot)].is_some()
                {
                    dav_request("DELETE", &format!("{}s{slot}.vcf", book.url), None).await;
                    self.dav_cards[usize::from(slot)] = None;
                }
            }
            Op::DavReachable(reachable) => {
                if self.dav.is_some() && self.dav_down == reachable {
                    self.dav_down = !reachable;
                    self.reconfigure();
                }
            }
            Op::WhapiFault { method, nth, reset } => {
                // A listing whose connection drops is skipped, and the pass cannot know of
                // a contact deleted on the phone: no reset there (a 429 pauses the account).
                let fault = if reset && METHODS[usize::from(method)] != "GET" {
                    WhapiFault::Reset
                } else {
                    WhapiFault::TooManyRequests { retry_after: 100 }
                };
                self.whapi
                    .fail_nth(METHODS[usize::from(method)], nth.into(), fault);
            }
            Op::UserSaves {
                number,
                austria,
                name,
            } => {
                let country = if austria { "43" } else { "49" };
                let digits = format!("{country}1512345678{number}");
                let name = USER_NAMES[usize::from(name)];
                let never_there = !self.whapi.state().contacts.contains_key(&digits);
                if never_there {
                    self.whapi.save_by_user(&digits, name);
                    self.whatsapp
                        .lock()
                        .unwrap()
                        .users
                        .insert(digits, name.to_owned());
                }
            }
        }
        self.clock.advance(200);
        self.after(op)
    }

    /// Between two operations: what the backends found wrong fails the case; `keep`'s
    /// deleted contacts whose card changed may come back from now on.
    fn after(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut violations = std::mem::take(&mut self.backend.state().violations);
        violations.append(&mut self.whatsapp.lock().unwrap().violations);
        prop_assert!(violations.is_empty(), "after {:?}: {:?}", op, violations);
        let telegram = self.desired_of(0);
        self.backend
            .state()
            .kept_deleted
            .retain(|key, names| telegram.get(key) == Some(&*names));
        let whatsapp = self.desired_of(1);
        self.whatsapp
            .lock()
            .unwrap()
            .kept_deleted
            .retain(|key, name| whatsapp.get(key).map(|(first, _)| first) == Some(&*name));
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
        self.whatsapp.lock().unwrap().this_process.clear();
        // Only a scripted fault or a deletion in the app leaves the state knowing the remote.
        if !matches!(
            op,
            Op::FloodWait { .. }
                | Op::LoseReply { .. }
                | Op::WhapiFault { .. }
                | Op::DeleteInApp { .. }
        ) {
            self.settled = false;
        }
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(self.apply(op))));

        match outcome {
            Ok(result) => result,
            Err(payload) if payload.is::<Crash>() => {
                failpoint::disarm();
                self.whatsapp.lock().unwrap().crashed();
                // Died inside the first scan's transaction: the scan was never stored.
                if let Op::Crash { point, nth: 1 } = *op
                    && failpoint::ALL[usize::from(point)] == failpoint::APPLY_SCAN
                    && let Some((frozen, full_scan_done)) = self.before_crash.take()
                {
                    self.frozen = frozen;
                    self.full_scan_done = full_scan_done;
                }
                self.backend.state().crashed();
                // A restart reads every file again before it sends.
                self.unscanned = None;
                self.clock.advance(200);
                self.after(op)
            }
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    /// The end of every case: faults gone, pauses over, one more pass must settle it all.
    async fn settle(&mut self) -> Result<(), TestCaseError> {
        self.backend.state().faults.clear();
        {
            let mut whapi = self.whapi.state();
            whapi.faults.clear();
            whapi.scheduled.clear();
        }
        self.clock.advance(4000 + self.clock_set_back);
        self.apply(&Op::DavReachable(true)).await?;
        self.apply(&Op::ForceSync).await?;
        let report = self.sync_once_with(false, true).await;
        for account in &report.accounts {
            prop_assert_eq!(
                account.batches_sent,
                0,
                "a settled pass sends nothing to {}",
                &account.backend
            );
        }
        for account in 0..ACCOUNTS.len() {
            self.check_remote(account, "at the end")?;
        }
        let account = self.backend.state();
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

#[derive(Default)]
struct ConfigKnobs {
    austria: bool,
    exclude_work: bool,
    max_deletes: usize,
    reimport: bool,
    /// The WhatsApp stand-in's.
    base_url: String,
    /// The CardDAV source's address book URL and password file, if the case has one.
    dav: Option<(String, PathBuf)>,
}

/// Two sources; deletions held past `max_deletes` (the fraction never holds: one limit the
/// oracle can count against); WhatsApp through the stand-in, fast, reconciled every pass.
fn make_config(dir: &Path, knobs: &ConfigKnobs) -> Config {
    let ConfigKnobs {
        austria,
        exclude_work,
        max_deletes,
        reimport,
        ref base_url,
        ref dav,
    } = *knobs;
    let policy = if reimport { "reimport" } else { "keep" };
    let exclude = if exclude_work {
        "exclude_categories = [\"Work\"]\n"
    } else {
        ""
    };
    let region = if austria { "AT" } else { "DE" };
    // Third: the folders' cards name a number first.
    let dav = dav.as_ref().map_or(String::new(), |(url, password_file)| {
        format!(
            "[[source]]\nname = \"{DAV_SOURCE}\"\ncarddav = \"{url}\"\nusername = \"{}\"\npassword_file = \"{}\"\n",
            dav::USER,
            password_file.display()
        )
    });
    let text = format!(
        "state_dir = \"state\"\ndefault_region = \"{region}\"\n[safety]\nmax_deletes = {max_deletes}\nmax_delete_fraction = 1.0\n[[source]]\npath = \"book0\"\nname = \"a\"\n{exclude}[[source]]\npath = \"book1\"\nname = \"b\"\n{exclude}{dav}[whatsapp]\nbase_url = \"{base_url}\"\ntoken = \"{WHAPI_TOKEN}\"\nrequests_per_second = 1000\nrequest_timeout = 5\nreconcile_interval = 1\non_remote_delete = \"{policy}\"\n"
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

/// The random cases, all against one Radicale (started once: a server per case would cost
/// more than the case), each case with an address book of its own.
#[test]
fn the_messenger_follows_the_address_book_whatever_happens() {
    quiet_crashes();
    let server = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(DavServer::radicale());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        // A failing case is written down (commit it) and replayed first from then on.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/model.txt",
        ))),
        source_file: Some(file!()),
        test_name: Some(concat!(
            module_path!(),
            "::the_messenger_follows_the_address_book_whatever_happens"
        )),
        ..ProptestConfig::default()
    });
    let case = (
        prop_oneof![Just(1usize), Just(2), Just(3), Just(1000)],
        prop::option::weighted(0.3, 0..5u8),
        ops(),
        prop::bool::weighted(0.7),
    );
    let outcome = runner.run(&case, |(max_deletes, refused, ops, reimport)| {
        let mut world = World::new(max_deletes, refused, reimport, server.as_ref());
        for op in &ops {
            world.run(op)?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(world.settle())
    });
    if let Err(failure) = outcome {
        panic!("{failure}\n{runner}");
    }
}

/// One case of the model run as given: the sequences that expose the mutations in
/// scripts/mutations (each fails there, shown by `scripts/mutation-check`), replayed on
/// every run whatever the random cases reach.
fn replay(max_deletes: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    replay_with(max_deletes, true, ops)
}

fn replay_with(max_deletes: usize, reimport: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    quiet_crashes();
    let mut world = World::new(max_deletes, None, reimport, None);
    for op in ops {
        world.run(op)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(world.settle())
}

/// `Op::Crash`'s index of a fail point.
fn fail_point(name: &str) -> u8 {
    failpoint::ALL.iter().position(|p| *p == name).unwrap() as u8
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
            Op::DeleteInApp {
                number: 0,
                whatsapp: false,
            },
            Op::ClockBack { seconds: 700 },
            Op::Sync,
        ],
    )
    .unwrap();
}

/// One Telegram user on a card by number and username, then on a card by username only
/// while the first card goes: the number's delete must not take the person with it (on
/// Telegram, deleting by phone deletes the contact, however it was added). Failed before
/// `kept_under_another_key`: the person was gone at the end.
#[test]
fn a_number_deleted_keeps_the_person_another_card_wants_by_username() {
    let by_username = CardModel {
        number: 1,
        username: 1,
        ..plain(1)
    };
    replay_with(
        1,
        false,
        &[
            Op::Write {
                slot: 0,
                card: CardModel {
                    username: 2,
                    ..plain(1)
                },
            },
            Op::Sync,
            Op::Write {
                slot: 1,
                card: by_username,
            },
            Op::Remove { slot: 0 },
        ],
    )
    .unwrap();
}

/// A pass dies after sending WhatsApp's first batch (its adds went through, their answers
/// never recorded) and the card's number goes: the next pass sends the batch again as it
/// was, each add is answered 409, and the numbers are "unverified" until a reconcile
/// sees our names. Failed before the pass reconciled again before its second plan: the
/// number no card wants stayed on the phone after a pass that ended quietly.
#[test]
fn a_number_resent_after_a_crash_and_gone_from_the_book_is_deleted_in_the_same_pass() {
    replay(
        1000,
        &[
            Op::Write {
                slot: 5,
                card: plain(0),
            },
            // The second send of the pass: Telegram's batch, then WhatsApp's.
            Op::Crash {
                point: fail_point(failpoint::AFTER_SEND),
                nth: 2,
            },
            Op::Write {
                slot: 5,
                card: CardModel {
                    username: 1,
                    ..plain(0)
                },
            },
        ],
    )
    .unwrap();
}

/// Under `keep`, a contact deleted in the app (on Telegram and on the phone) after a pass
/// that left both accounts as the address book stays deleted while its card stays as it
/// was, through the passes after.
#[test]
fn a_contact_deleted_in_the_app_under_keep_stays_deleted() {
    replay_with(
        1000,
        false,
        &[
            Op::Write {
                slot: 0,
                card: plain(0),
            },
            Op::SyncThenDeleteInApp {
                number: 0,
                whatsapp: false,
            },
            Op::SyncThenDeleteInApp {
                number: 0,
                whatsapp: true,
            },
            Op::Sync,
        ],
    )
    .unwrap();
}

/// Under `keep`, the number of a person is deleted in the app, and a reconcile sees it; a
/// card then asks for the same person by username (added back), and goes. The person goes
/// with it, by user: the number's row names the same user but is not on the remote. Failed
/// in CI (the case below, shrunk by hand): the delete was counted done without a call, as if
/// the number still kept the person, and the contact stayed.
#[test]
fn a_username_gone_deletes_its_person_whose_number_was_deleted_in_the_app() {
    replay_with(
        1,
        false,
        &[
            Op::Write {
                slot: 5,
                card: plain(1),
            },
            Op::Sync,
            Op::DeleteInApp {
                number: 1,
                whatsapp: false,
            },
            Op::Write {
                slot: 0,
                card: CardModel {
                    username: 1,
                    ..plain(1)
                },
            },
            Op::Sync,
            Op::Remove { slot: 0 },
        ],
    )
    .unwrap();
}

/// One person on two cards, by number and by username, under two names: Telegram shows the
/// name sent last (the username's). The username's card goes: the person stays, as the
/// number's card wants them, and is renamed to that card's name, not left under the name of
/// a card that is gone.
#[test]
fn a_person_kept_for_another_card_takes_that_cards_name() {
    replay_with(
        1000,
        true,
        &[
            Op::Write {
                slot: 0,
                card: plain(1),
            },
            Op::Write {
                slot: 1,
                card: CardModel {
                    name: 1,
                    username: 1,
                    ..plain(1)
                },
            },
            Op::Sync,
            Op::Remove { slot: 1 },
        ],
    )
    .unwrap();
}

/// One person on two cards, by number (Anna) and by username (Annabel). The username's card
/// goes and comes back while a pass that renamed the person to the number's name dies
/// before recording it; the person is deleted in the app. The next pass sends the rename
/// again, which adds the person back: both cards have them, under the number's name, and
/// nothing more is asked.
#[test]
fn a_person_on_two_cards_is_back_for_both_after_a_resend() {
    let by_username = CardModel {
        name: 1,
        username: 1,
        ..plain(1)
    };
    replay(
        1,
        &[
            Op::Write {
                slot: 4,
                card: plain(1),
            },
            Op::Write {
                slot: 2,
                card: by_username,
            },
            Op::Sync,
            Op::Remove { slot: 2 },
            Op::CrashAfterSend,
            Op::Restore { slot: 2 },
            Op::DeleteInApp {
                number: 1,
                whatsapp: false,
            },
            Op::Sync,
        ],
    )
    .unwrap();
}
