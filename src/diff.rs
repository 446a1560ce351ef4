//! Desired set × mirror → a sorted plan, and the deletion guard. Pure: no SQL, no clock of
//! its own (`now` comes in), no network.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// The names a contact should have on the messenger.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Names {
    pub first: String,
    pub last: String,
}

/// What the remote has for a number, as far as confirmed results tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorState {
    /// Imported: the number has an account, now in the contact list.
    Imported,
    /// Accepted without an account behind it (or hidden by privacy): kept in the saved list.
    Saved,
    /// Never confirmed on the remote (every attempt so far failed).
    NotImported,
    /// On the remote, but not created by us, or not yet shown to be (WhatsApp: a number the
    /// user had already saved, or one an old version recorded and no reconcile has checked
    /// yet): never renamed, deleted or imported over (invariant 3, "ours only").
    NotOurs,
}

impl MirrorState {
    /// Present on the remote: deleting it is a remote call.
    pub fn is_remote(self) -> bool {
        matches!(self, Self::Imported | Self::Saved)
    }
}

/// The last attempt for these names failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub names: Names,
    /// Retry from then on; `None`: rejected for good, until the card's names change.
    pub until: Option<i64>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEntry {
    /// Names on the remote (as sent); empty while `NotImported`.
    pub names: Names,
    pub state: MirrorState,
    pub hold: Option<Hold>,
    /// The server refused to delete it: not planned for deletion again before then (a
    /// rename, should the card come back with other names, is not held by it).
    pub delete_held_until: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportReason {
    /// Not on the remote yet.
    New,
    /// On the remote under other names: importing again renames it (never delete + add).
    Rename,
    /// An earlier attempt came back in `retry_contacts` and its wait is over.
    Retry,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedImport {
    pub e164: String,
    pub names: Names,
    pub reason: ImportReason,
}

/// What to do, sorted by E.164 within each list: the same input gives the same plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub imports: Vec<PlannedImport>,
    /// Numbers on the remote that are no longer desired; exactly the strings once imported.
    pub deletes: Vec<String>,
    /// Numbers never confirmed on the remote and no longer desired: forgotten locally only.
    pub forget: Vec<String>,
    /// Desired numbers waiting for a retry time or held as rejected.
    pub waiting: usize,
    /// The earliest retry time among them: until then, planning again gives the same plan.
    pub next_retry: Option<i64>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.imports.is_empty() && self.deletes.is_empty() && self.forget.is_empty()
    }
}

/// Compares what should be with what is. `in_flight` numbers (in an outbox batch that was
/// sent and whose results are not applied: it may have reached the remote) are left alone:
/// their outcome is still to come. Numbers only queued are planned like any other: the
/// outbox takes the new plan in their place (`Store::queue_plan`).
pub fn diff(
    desired: &BTreeMap<String, Names>,
    mirror: &BTreeMap<String, MirrorEntry>,
    in_flight: &BTreeSet<String>,
    now: i64,
) -> Plan {
    let mut plan = Plan::default();
    for (e164, names) in desired {
        if in_flight.contains(e164) {
            continue;
        }
        let reason = match mirror.get(e164) {
            None => ImportReason::New,
            Some(entry) if entry.state == MirrorState::NotOurs => continue,
            // A hold for the very names the remote has: a step of the import is still to
            // be done (Telegram: the fallback username a wait refused), tried when it ends.
            Some(entry)
                if entry.state.is_remote()
                    && entry.names == *names
                    && entry.hold.as_ref().is_none_or(|hold| hold.names != *names) =>
            {
                continue;
            }
            Some(entry) => match &entry.hold {
                Some(hold) if hold.names == *names => match hold.until {
                    Some(until) if until <= now => ImportReason::Retry,
                    until => {
                        plan.waiting += 1;
                        if let Some(until) = until {
                            plan.next_retry =
                                Some(plan.next_retry.map_or(until, |next| next.min(until)));
                        }
                        continue;
                    }
                },
                _ if entry.state.is_remote() => ImportReason::Rename,
                _ => ImportReason::New,
            },
        };
        plan.imports.push(PlannedImport {
            e164: e164.clone(),
            names: names.clone(),
            reason,
        });
    }
    for (e164, entry) in mirror {
        if desired.contains_key(e164) || in_flight.contains(e164) {
            continue;
        }
        if let Some(until) = entry.delete_held_until.filter(|until| *until > now) {
            // Planned again when the hold ends: until then the plan is not final.
            plan.next_retry = Some(plan.next_retry.map_or(until, |next| next.min(until)));
            continue;
        }
        match entry.state {
            MirrorState::Imported | MirrorState::Saved => plan.deletes.push(e164.clone()),
            MirrorState::NotImported => plan.forget.push(e164.clone()),
            MirrorState::NotOurs => {}
        }
    }
    plan
}

/// The mirror as it would be if every step of the plan succeeded.
pub fn apply(mirror: &mut BTreeMap<String, MirrorEntry>, plan: &Plan) {
    for import in &plan.imports {
        mirror.insert(
            import.e164.clone(),
            MirrorEntry {
                names: import.names.clone(),
                state: MirrorState::Imported,
                hold: None,
                delete_held_until: None,
            },
        );
    }
    for e164 in plan.deletes.iter().chain(&plan.forget) {
        mirror.remove(e164);
    }
}

/// Limits on deletions per pass, from `[safety]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeleteLimits {
    pub max_deletes: usize,
    pub max_delete_fraction: f64,
    /// The fraction applies from this many synced contacts on. In a smaller book one
    /// deletion is a large share but no danger; what is (an emptied side, as vdirsyncer
    /// has it) is held at any size: a pass that would delete every synced contact.
    pub fraction_min_contacts: usize,
}

impl Default for DeleteLimits {
    fn default() -> Self {
        Self {
            max_deletes: 50,
            max_delete_fraction: 0.2,
            fraction_min_contacts: 10,
        }
    }
}

/// Why deletions are held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    pub deletes: usize,
    pub reason: String,
}

/// Decides whether a plan's deletions may go. Imports are never held.
pub fn guard(
    plan: &Plan,
    remote_contacts: usize,
    limits: DeleteLimits,
    force: bool,
) -> Option<Held> {
    let deletes = plan.deletes.len();
    if force || deletes == 0 {
        return None;
    }
    let fraction = deletes as f64 / remote_contacts.max(1) as f64;
    let reason = if deletes > limits.max_deletes {
        format!(
            "{deletes} deletions exceed safety.max_deletes = {}",
            limits.max_deletes
        )
    } else if remote_contacts >= limits.fraction_min_contacts
        && fraction > limits.max_delete_fraction
    {
        format!(
            "{deletes} deletions are {:.0}% of the {remote_contacts} synced contacts, over safety.max_delete_fraction = {}",
            fraction * 100.0,
            limits.max_delete_fraction
        )
    } else if deletes >= remote_contacts && limits.max_delete_fraction < 1.0 {
        // Below fraction_min_contacts only emptying the account is held.
        format!(
            "{deletes} deletions would remove every synced contact (safety.max_delete_fraction = {} holds that at any size)",
            limits.max_delete_fraction
        )
    } else {
        return None;
    };
    Some(Held {
        deletes,
        reason: format!(
            "{reason}; run `contactsyncd sync --once --force-delete` to apply them, or raise the limit"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    fn names(first: &str) -> Names {
        Names {
            first: first.into(),
            last: String::new(),
        }
    }

    fn entry(first: &str, state: MirrorState, hold: Option<Hold>) -> MirrorEntry {
        MirrorEntry {
            names: names(first),
            state,
            hold,
            delete_held_until: None,
        }
    }

    fn one(e164: &str, first: &str) -> BTreeMap<String, Names> {
        BTreeMap::from([(e164.to_owned(), names(first))])
    }

    #[rstest]
    #[case::new(None, Some(ImportReason::New))]
    #[case::in_sync(Some(entry("Ann", MirrorState::Imported, None)), None)]
    #[case::saved_in_sync(Some(entry("Ann", MirrorState::Saved, None)), None)]
    #[case::renamed(
        Some(entry("Anne", MirrorState::Imported, None)),
        Some(ImportReason::Rename)
    )]
    #[case::retry_due(Some(entry("", MirrorState::NotImported, Some(Hold { names: names("Ann"), until: Some(100), reason: "retry".into() }))), Some(ImportReason::Retry))]
    #[case::retry_not_due(Some(entry("", MirrorState::NotImported, Some(Hold { names: names("Ann"), until: Some(101), reason: "retry".into() }))), None)]
    #[case::rejected_same_names(Some(entry("", MirrorState::NotImported, Some(Hold { names: names("Ann"), until: None, reason: "PHONE_NUMBER_INVALID".into() }))), None)]
    #[case::rejected_card_changed(Some(entry("", MirrorState::NotImported, Some(Hold { names: names("Old"), until: None, reason: "PHONE_NUMBER_INVALID".into() }))), Some(ImportReason::New))]
    #[case::not_ours_other_name(Some(entry("Mum", MirrorState::NotOurs, None)), None)]
    fn import_decisions(
        #[case] mirrored: Option<MirrorEntry>,
        #[case] expected: Option<ImportReason>,
    ) {
        let mirror: BTreeMap<_, _> = mirrored.into_iter().map(|m| ("+1".to_owned(), m)).collect();
        let plan = diff(&one("+1", "Ann"), &mirror, &BTreeSet::new(), 100);
        assert_eq!(plan.imports.first().map(|i| i.reason), expected);
        assert!(plan.deletes.is_empty());
    }

    #[test]
    fn gone_numbers_are_deleted_only_if_on_the_remote() {
        let mirror = BTreeMap::from([
            ("+1".to_owned(), entry("A", MirrorState::Imported, None)),
            ("+2".to_owned(), entry("B", MirrorState::Saved, None)),
            ("+3".to_owned(), entry("", MirrorState::NotImported, None)),
        ]);
        let plan = diff(&BTreeMap::new(), &mirror, &BTreeSet::new(), 0);
        assert_eq!(plan.deletes, ["+1", "+2"]);
        assert_eq!(plan.forget, ["+3"]);
    }

    #[test]
    fn contacts_not_ours_are_neither_deleted_nor_forgotten() {
        let mirror = BTreeMap::from([("+4".to_owned(), entry("Mum", MirrorState::NotOurs, None))]);
        assert!(diff(&BTreeMap::new(), &mirror, &BTreeSet::new(), 0).is_empty());
    }

    /// A refused delete waits for its hold, but only the delete: a card that comes back
    /// under other names is renamed at once.
    #[test]
    fn a_held_delete_holds_only_the_delete() {
        let mut held = entry("Old", MirrorState::Imported, None);
        held.delete_held_until = Some(100);
        let mirror = BTreeMap::from([("+1".to_owned(), held)]);
        let none = BTreeSet::new();
        let waiting = diff(&BTreeMap::new(), &mirror, &none, 50);
        assert!(waiting.deletes.is_empty());
        assert_eq!(waiting.next_retry, Some(100));
        assert_eq!(diff(&BTreeMap::new(), &mirror, &none, 100).deletes, ["+1"]);
        let back = diff(&one("+1", "New"), &mirror, &none, 50);
        assert_eq!(back.imports.len(), 1);
        assert_eq!(back.imports[0].reason, ImportReason::Rename);
    }

    #[test]
    fn in_flight_numbers_are_left_to_their_batch() {
        let mirror = BTreeMap::from([("+2".to_owned(), entry("B", MirrorState::Imported, None))]);
        let in_flight = BTreeSet::from(["+1".to_owned(), "+2".to_owned()]);
        assert!(diff(&one("+1", "A"), &mirror, &in_flight, 0).is_empty());
    }

    #[rstest]
    #[case::under_both(10, 100, false)]
    #[case::over_count(51, 1000, true)]
    #[case::over_fraction(21, 100, true)]
    #[case::exactly_at_limits(20, 100, false)]
    #[case::forced(500, 500, false)]
    // Issue 16.14: one deletion in a small book is no danger; emptying it is.
    #[case::one_of_four(1, 4, false)]
    #[case::three_of_four(3, 4, false)]
    #[case::all_of_four(4, 4, true)]
    #[case::one_of_one(1, 1, true)]
    #[case::fraction_from_ten(3, 10, true)]
    #[case::under_fraction_min(2, 9, false)]
    fn guard_holds_large_deletions(
        #[case] deletes: usize,
        #[case] remote: usize,
        #[case] held: bool,
    ) {
        let plan = Plan {
            deletes: (0..deletes).map(|i| format!("+{i}")).collect(),
            ..Plan::default()
        };
        let force = remote == 500;
        assert_eq!(
            guard(&plan, remote, DeleteLimits::default(), force).is_some(),
            held
        );
    }

    fn arbitrary_names() -> impl Strategy<Value = Names> {
        ("[AB]{0,2}", "[C]{0,1}").prop_map(|(first, last)| Names { first, last })
    }

    fn arbitrary_entry() -> impl Strategy<Value = MirrorEntry> {
        (
            arbitrary_names(),
            prop_oneof![
                Just(MirrorState::Imported),
                Just(MirrorState::Saved),
                Just(MirrorState::NotImported),
                Just(MirrorState::NotOurs)
            ],
            proptest::option::of((arbitrary_names(), proptest::option::of(0i64..20))),
        )
            .prop_map(|(names, state, hold)| MirrorEntry {
                names,
                state,
                hold: hold.map(|(names, until)| Hold {
                    names,
                    until,
                    reason: "x".into(),
                }),
                delete_held_until: None,
            })
    }

    proptest! {
        #[test]
        fn applying_the_plan_leaves_nothing_to_do(
            desired in proptest::collection::btree_map("\\+[0-9]{1,2}", arbitrary_names(), 0..20),
            mirror in proptest::collection::btree_map("\\+[0-9]{1,2}", arbitrary_entry(), 0..20),
            now in 0i64..20,
        ) {
            let plan = diff(&desired, &mirror, &BTreeSet::new(), now);
            let again = diff(&desired, &mirror, &BTreeSet::new(), now);
            prop_assert_eq!(&plan, &again);
            prop_assert!(plan.imports.windows(2).all(|w| w[0].e164 < w[1].e164));
            prop_assert!(plan.deletes.iter().all(|e| mirror.contains_key(e)));
            // Ours only: a contact not ours is never renamed, imported over or deleted.
            prop_assert!(plan.imports.iter()
                .all(|i| mirror.get(&i.e164).is_none_or(|m| m.state != MirrorState::NotOurs)));
            prop_assert!(plan.deletes.iter().all(|e| mirror[e].state != MirrorState::NotOurs));
            let mut applied = mirror.clone();
            apply(&mut applied, &plan);
            let after = diff(&desired, &applied, &BTreeSet::new(), now);
            prop_assert!(after.is_empty(), "left over: {:?}", after);
        }
    }
}
