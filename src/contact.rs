//! Card → the contact we push: a messenger name and the card's E.164 phones; and all cards of
//! all sources → one desired set keyed by E.164.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::config::CardFilter;
use crate::phone::{self, DefaultRegion, OtherReading, PhoneError, Validity};
use crate::vcard::RawCard;

/// Telegram's limit for `first_name` and `last_name`.
pub const MAX_NAME_CHARS: usize = 64;

/// Where a name was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameSource {
    /// N: given (+ additional) names → first name, family name → last name.
    StructuredName,
    /// FN as the first name.
    FormattedName,
    /// ORG as the first name.
    Organization,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName {
    pub first: String,
    pub last: String,
    pub source: NameSource,
}

/// One TEL of a card, as understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneEntry {
    pub raw: String,
    pub outcome: PhoneOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneOutcome {
    /// Will be pushed.
    Accepted {
        e164: String,
        validity: Validity,
        extension: Option<String>,
        /// Other regions where the number as written is valid, when the default region
        /// explains it badly (`phone::Normalized::other_regions`).
        other_regions: Vec<OtherReading>,
    },
    /// The same number appeared earlier in this card.
    Repeated { e164: String },
    /// Left out by the source's phone type filter.
    Filtered { reason: String },
    /// Not a number we can push.
    Rejected(PhoneError),
}

impl PhoneEntry {
    pub fn e164(&self) -> Option<&str> {
        match &self.outcome {
            PhoneOutcome::Accepted { e164, .. } | PhoneOutcome::Repeated { e164 } => Some(e164),
            PhoneOutcome::Filtered { .. } | PhoneOutcome::Rejected(_) => None,
        }
    }

    /// Short machine-readable remarks: `extension_stripped`, `unknown_range`, `other_region`,
    /// `repeated`, `filtered`.
    pub fn flags(&self) -> Vec<&'static str> {
        match &self.outcome {
            PhoneOutcome::Accepted {
                validity,
                extension,
                other_regions,
                ..
            } => {
                let mut flags = Vec::new();
                if *validity == Validity::UnknownRange {
                    flags.push("unknown_range");
                }
                if !other_regions.is_empty() {
                    flags.push("other_region");
                }
                if extension.is_some() {
                    flags.push("extension_stripped");
                }
                flags
            }
            PhoneOutcome::Repeated { .. } => vec!["repeated"],
            PhoneOutcome::Filtered { .. } => vec!["filtered"],
            PhoneOutcome::Rejected(_) => Vec::new(),
        }
    }
}

/// Why a card contributes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardProblem {
    #[error("no name: N, FN and ORG are all empty (Telegram refuses contacts without a name)")]
    Nameless,
}

/// A card, understood: name, phones, and whether it is pushed at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardContact {
    pub name: Option<PersonName>,
    pub phones: Vec<PhoneEntry>,
    /// The card's Telegram usernames (valid ones, as written).
    pub usernames: Vec<String>,
    pub problems: Vec<CardProblem>,
    /// Left out by the source's `include_categories` / `exclude_categories`: a decision of
    /// the configuration, not a problem of the card.
    pub left_out: Option<String>,
    /// A contact group, not a person (the property that says so, e.g. `KIND:group`):
    /// skipped, as the README says; not a problem of the card.
    pub group: Option<&'static str>,
}

impl CardContact {
    /// The card is pushed only with a name, without a blocking problem, not a group and
    /// not left out by a category filter.
    pub fn is_pushed(&self) -> bool {
        self.name.is_some()
            && self.problems.is_empty()
            && self.group.is_none()
            && self.left_out.is_none()
    }

    /// Numbers this card contributes to the desired set.
    pub fn pushed_numbers(&self) -> impl Iterator<Item = &str> {
        let pushed = self.is_pushed();
        self.phones.iter().filter_map(move |p| match &p.outcome {
            PhoneOutcome::Accepted { e164, .. } if pushed => Some(e164.as_str()),
            _ => None,
        })
    }

    /// The username this card is added by: its first one, and only when it pushes no
    /// number. The number path wins: Telegram finds the person by number, and adding the
    /// same person by username too would make two requests for one contact.
    pub fn pushed_username(&self) -> Option<&str> {
        if !self.is_pushed() || self.pushed_numbers().next().is_some() {
            return None;
        }
        self.usernames.first().map(String::as_str)
    }

    /// For a card pushed by number: its first username, which Telegram is asked for when a
    /// number turns out to have no account (the person is still found, by username).
    pub fn fallback_username(&self) -> Option<&str> {
        if !self.is_pushed() || self.pushed_numbers().next().is_none() {
            return None;
        }
        self.usernames.first().map(String::as_str)
    }

    /// The keys this card contributes to the desired set (`contact_key`): its numbers, or
    /// its username when it has none.
    pub fn contact_keys(&self) -> Vec<String> {
        match self.pushed_username() {
            Some(username) => vec![crate::contact_key::of_username(username)],
            None => self.pushed_numbers().map(str::to_owned).collect(),
        }
    }
}

/// Understands one card, to be shown.
pub fn understand(
    card: &RawCard,
    region: Option<DefaultRegion>,
    filter: &CardFilter,
) -> CardContact {
    understand_for(card, region, filter, phone::Purpose::Show)
}

/// [`understand`] for `purpose`: to be pushed, its numbers carry no `other_regions`.
pub fn understand_for(
    card: &RawCard,
    region: Option<DefaultRegion>,
    filter: &CardFilter,
    purpose: phone::Purpose,
) -> CardContact {
    let name = messenger_name(card);
    let mut problems = Vec::new();
    if card.group.is_none()
        && name.is_none()
        && !(card.phones.is_empty() && card.telegram_usernames.is_empty())
    {
        // A nameless card without phones or usernames has nothing to push: no error worth
        // reporting.
        problems.push(CardProblem::Nameless);
    }
    let left_out = category_exclusion(card, filter);

    let mut phones: Vec<PhoneEntry> = Vec::with_capacity(card.phones.len());
    // The numbers taken so far: a set, as a card may carry tens of thousands of TELs.
    let mut seen: HashSet<String> = HashSet::with_capacity(card.phones.len());
    for raw in &card.phones {
        let types = effective_types(&raw.types, raw.label.as_deref());
        let outcome = if let Some(reason) = type_exclusion(&types, filter) {
            PhoneOutcome::Filtered { reason }
        } else {
            match phone::normalize_for(&raw.value, region, purpose) {
                Ok(n) if !seen.insert(n.e164.clone()) => PhoneOutcome::Repeated { e164: n.e164 },
                Ok(n) => PhoneOutcome::Accepted {
                    e164: n.e164,
                    validity: n.validity,
                    extension: n.extension,
                    other_regions: n.other_regions,
                },
                Err(err) => PhoneOutcome::Rejected(err),
            }
        };
        phones.push(PhoneEntry {
            raw: raw.value.clone(),
            outcome,
        });
    }
    CardContact {
        name,
        phones,
        usernames: card.telegram_usernames.clone(),
        problems,
        left_out,
        group: card.group,
    }
}

/// N given (+ additional) → first, N family → last; else FN; else ORG. A name with only a
/// family part moves it to the first name: Telegram requires a first name.
pub fn messenger_name(card: &RawCard) -> Option<PersonName> {
    if let Some(n) = &card.name {
        let first = tidy(&format!("{} {}", n.given, n.additional));
        let last = tidy(&n.family);
        if !first.is_empty() || !last.is_empty() {
            return Some(if first.is_empty() {
                PersonName {
                    first: last,
                    last: String::new(),
                    source: NameSource::StructuredName,
                }
            } else {
                PersonName {
                    first,
                    last,
                    source: NameSource::StructuredName,
                }
            });
        }
    }
    let single = |text: &Option<String>, source| {
        let first = tidy(text.as_deref().unwrap_or_default());
        (!first.is_empty()).then(|| PersonName {
            first,
            last: String::new(),
            source,
        })
    };
    single(&card.formatted_name, NameSource::FormattedName)
        .or_else(|| single(&card.organization, NameSource::Organization))
}

/// Trims, collapses whitespace (including newlines from QUOTED-PRINTABLE), drops control
/// characters, and cuts to 64 characters on a character boundary.
pub fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_NAME_CHARS * 4));
    let mut count = 0;
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            if count + 1 > MAX_NAME_CHARS {
                break;
            }
            out.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count == MAX_NAME_CHARS {
                return out.trim_end().to_owned();
            }
            out.push(c);
            count += 1;
        }
    }
    out.trim_end().to_owned()
}

/// TYPE values, plus what an iCloud `X-ABLabel` means (`_$!<HomeFAX>!$_` is a fax).
fn effective_types<'a>(types: &'a [String], label: Option<&str>) -> Cow<'a, [String]> {
    let Some(label) = label.map(str::to_ascii_lowercase) else {
        return Cow::Borrowed(types);
    };
    let implied = if label.contains("fax") {
        "fax"
    } else if label.contains("pager") {
        "pager"
    } else if label.contains("mobile") || label.contains("iphone") {
        "cell"
    } else {
        return Cow::Borrowed(types);
    };
    let mut all = types.to_vec();
    all.push(implied.to_owned());
    Cow::Owned(all)
}

fn type_exclusion(types: &[String], filter: &CardFilter) -> Option<String> {
    if let Some(skipped) = types.iter().find(|t| filter.skip_phone_types.contains(t)) {
        return Some(format!("type {skipped} is in skip_phone_types"));
    }
    if !filter.phone_types.is_empty() && !types.iter().any(|t| filter.phone_types.contains(t)) {
        return Some(format!(
            "none of its types ({}) is in phone_types",
            if types.is_empty() {
                "none given".to_owned()
            } else {
                types.join(", ")
            }
        ));
    }
    None
}

fn category_exclusion(card: &RawCard, filter: &CardFilter) -> Option<String> {
    let has = |wanted: &String| {
        card.categories
            .iter()
            .any(|c| c.eq_ignore_ascii_case(wanted))
    };
    if let Some(excluded) = filter.exclude_categories.iter().find(|c| has(c)) {
        return Some(format!(
            "in category {excluded:?}, which exclude_categories leaves out"
        ));
    }
    if !filter.include_categories.is_empty() && !filter.include_categories.iter().any(has) {
        return Some("in none of include_categories".to_owned());
    }
    None
}

/// Where a contact came from. Small on purpose: a 100,000-card address book holds one per
/// number, and the file path is shared by all cards of a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CardRef {
    /// Position of the source in the configuration (0-based); earlier sources win name conflicts.
    pub source_order: u32,
    pub file: Arc<Path>,
    pub card: u32,
}

/// A card that carries a contact's number, and the name it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub card: CardRef,
    pub name: Arc<PersonName>,
}

/// A contact as it should exist on the messenger (its E.164 is the key of the set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredContact {
    /// The card that names the contact: the first in (source order, file, card index).
    pub named_by: Origin,
    /// Other cards carrying the same number, sorted. Usually none, and then not allocated.
    /// Boxed: a set holds one contact per number (1M in a 1M-card book), and an empty `Vec`
    /// in each took 24 bytes of its slot where `None` takes 8 (peak RSS of 1M small cards
    /// in one export 517 -> 480 MiB).
    #[allow(clippy::box_collection)]
    pub also_on: Option<Box<Vec<Origin>>>,
}

impl DesiredContact {
    pub fn name(&self) -> &PersonName {
        &self.named_by.name
    }

    pub fn first_name(&self) -> &str {
        &self.name().first
    }

    pub fn last_name(&self) -> &str {
        &self.name().last
    }

    /// Every card carrying this number, the naming one first.
    pub fn origins(&self) -> impl Iterator<Item = &Origin> {
        std::iter::once(&self.named_by).chain(self.also_on.as_deref().into_iter().flatten())
    }
}

/// A number found on cards that disagree on the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameConflict {
    pub e164: String,
    pub chosen: Origin,
    pub other: Origin,
}

/// All sources merged, keyed by E.164.
///
/// Name rule: when a number is on several cards, the card that comes first in (source order
/// in the configuration, file path, card index) names the contact. That is deterministic,
/// independent of scan order, and lets a user rank a curated address book above a phone dump
/// by listing it first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredSet {
    pub contacts: BTreeMap<String, DesiredContact>,
    /// Extra cards carrying a number already seen (same or different names).
    pub duplicates: usize,
    pub conflicts: Vec<NameConflict>,
}

impl DesiredSet {
    /// Builds the set from understood cards, in any order.
    pub fn build<'a>(cards: impl IntoIterator<Item = (CardRef, &'a CardContact)>) -> Self {
        let mut builder = DesiredSetBuilder::default();
        for (origin, card) in cards {
            builder.add(origin, card);
        }
        builder.finish()
    }
}

/// Collects cards one at a time (a scan streams them), then settles names and conflicts.
#[derive(Debug, Default)]
pub struct DesiredSetBuilder {
    contacts: BTreeMap<String, DesiredContact>,
}

impl DesiredSetBuilder {
    pub fn add(&mut self, origin: CardRef, card: &CardContact) {
        let Some(name) = card.name.as_ref().filter(|_| card.is_pushed()) else {
            return;
        };
        let name = Arc::new(name.clone());
        for key in card.contact_keys() {
            self.add_number(origin.clone(), key, Arc::clone(&name));
        }
    }

    /// Adds one number of a card whose name is already settled (e.g. read back from the state).
    pub fn add_number(&mut self, card: CardRef, e164: String, name: Arc<PersonName>) {
        let entry = Origin { card, name };
        match self.contacts.entry(e164) {
            std::collections::btree_map::Entry::Occupied(mut contact) => contact
                .get_mut()
                .also_on
                .get_or_insert_with(Box::default)
                .push(entry),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(DesiredContact {
                    named_by: entry,
                    also_on: None,
                });
            }
        }
    }

    pub fn finish(mut self) -> DesiredSet {
        let mut duplicates = 0;
        let mut conflicts = Vec::new();
        for (e164, contact) in &mut self.contacts {
            let Some(also_on) = contact.also_on.as_deref_mut() else {
                continue;
            };
            duplicates += also_on.len();
            // Cards arrive in scan order; the name rule needs the smallest origin first.
            also_on.push(contact.named_by.clone());
            also_on.sort_by(|a, b| a.card.cmp(&b.card));
            contact.named_by = also_on.remove(0);
            let chosen = &contact.named_by;
            for other in also_on.iter() {
                if (other.name.first.as_str(), other.name.last.as_str())
                    != (chosen.name.first.as_str(), chosen.name.last.as_str())
                {
                    conflicts.push(NameConflict {
                        e164: e164.clone(),
                        chosen: chosen.clone(),
                        other: other.clone(),
                    });
                }
            }
        }
        DesiredSet {
            contacts: self.contacts,
            duplicates,
            conflicts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vcard::{RawPhone, StructuredName};
    use rstest::rstest;

    fn card(n: Option<(&str, &str, &str)>, fn_: Option<&str>, org: Option<&str>) -> RawCard {
        RawCard {
            name: n.map(|(family, given, additional)| StructuredName {
                family: family.into(),
                given: given.into(),
                additional: additional.into(),
                ..StructuredName::default()
            }),
            formatted_name: fn_.map(Into::into),
            organization: org.map(Into::into),
            ..RawCard::default()
        }
    }

    #[rstest]
    #[case::structured(card(Some(("Doe", "John", "")), Some("Mr. John Doe"), None), "John", "Doe", NameSource::StructuredName)]
    #[case::additional_joins_first(card(Some(("Doe", "John", "Richter James")), None, None), "John Richter James", "Doe", NameSource::StructuredName)]
    #[case::family_only_moves_to_first(card(Some(("Doe", "", "")), None, None), "Doe", "", NameSource::StructuredName)]
    #[case::empty_n_falls_back_to_fn(card(Some(("", "", "")), Some("Johnny"), None), "Johnny", "", NameSource::FormattedName)]
    #[case::org_last(
        card(None, None, Some("ACME Inc.")),
        "ACME Inc.",
        "",
        NameSource::Organization
    )]
    fn picks_names(
        #[case] card: RawCard,
        #[case] first: &str,
        #[case] last: &str,
        #[case] source: NameSource,
    ) {
        let name = messenger_name(&card).unwrap();
        assert_eq!(
            (name.first.as_str(), name.last.as_str(), name.source),
            (first, last, source)
        );
    }

    #[test]
    fn nameless_card_is_a_problem_and_pushes_nothing() {
        let mut c = card(None, Some("  "), None);
        c.phones.push(RawPhone {
            value: "+4930123456".into(),
            ..RawPhone::default()
        });
        let understood = understand(&c, None, &CardFilter::default());
        assert_eq!(understood.problems, vec![CardProblem::Nameless]);
        assert_eq!(understood.pushed_numbers().count(), 0);
    }

    #[rstest]
    #[case::collapse("  Anna \t\n Maria  ", "Anna Maria")]
    #[case::cut_at_64(&"x".repeat(70), &"x".repeat(64))]
    #[case::cut_on_char_boundary(&"ä".repeat(70), &"ä".repeat(64))]
    #[case::no_trailing_space_after_cut(&format!("{} b", "a".repeat(64)), &"a".repeat(64))]
    fn tidies_names(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(tidy(input), expected);
    }

    fn phone(value: &str, types: &[&str]) -> RawPhone {
        RawPhone {
            value: value.into(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            label: None,
        }
    }

    #[test]
    fn same_number_twice_in_a_card_counts_once_and_fax_is_skipped() {
        let mut c = card(Some(("Doe", "Jane", "")), None, None);
        c.phones = vec![
            phone("+49 30 1234567", &["cell"]),
            phone("030 1234567", &["home"]),
            phone("+49 30 7654321", &["fax"]),
        ];
        let region = DefaultRegion::parse("DE").ok();
        let understood = understand(&c, region, &CardFilter::default());
        assert_eq!(
            understood.pushed_numbers().collect::<Vec<_>>(),
            ["+49301234567"]
        );
        assert_eq!(understood.phones[1].flags(), ["repeated"]);
        assert_eq!(understood.phones[2].flags(), ["filtered"]);
    }

    #[test]
    fn category_filters_apply_case_insensitively() {
        let mut c = card(None, Some("Bob"), None);
        c.categories = vec!["Work".into()];
        let filter = CardFilter {
            exclude_categories: vec!["work".into()],
            ..CardFilter::default()
        };
        let excluded = understand(&c, None, &filter);
        assert!(!excluded.is_pushed());
        assert!(
            excluded.problems.is_empty(),
            "a filter decision, not a problem"
        );
        assert!(excluded.left_out.unwrap().contains("\"work\""));
        let filter = CardFilter {
            include_categories: vec!["family".into()],
            ..CardFilter::default()
        };
        let not_included = understand(&c, None, &filter);
        assert!(!not_included.is_pushed());
        assert!(not_included.problems.is_empty());
        assert_eq!(
            not_included.left_out.as_deref(),
            Some("in none of include_categories")
        );
    }

    #[test]
    fn first_source_names_a_shared_number_whatever_the_input_order() {
        let mut a = card(None, Some("Curated Name"), None);
        a.phones.push(phone("+4930123456", &[]));
        let mut b = card(None, Some("Phone Dump"), None);
        b.phones.push(phone("+4930123456", &[]));
        let (a, b) = (
            understand(&a, None, &CardFilter::default()),
            understand(&b, None, &CardFilter::default()),
        );
        let origin = |order: u32| CardRef {
            source_order: order,
            file: Path::new("x.vcf").into(),
            card: 1,
        };
        let forward = DesiredSet::build([(origin(0), &a), (origin(1), &b)]);
        let backward = DesiredSet::build([(origin(1), &b), (origin(0), &a)]);
        assert_eq!(forward, backward);
        assert_eq!(forward.contacts["+4930123456"].first_name(), "Curated Name");
        assert_eq!(forward.duplicates, 1);
        assert_eq!(forward.conflicts.len(), 1);
    }
}
