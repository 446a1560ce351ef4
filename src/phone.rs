//! Raw TEL value → E.164, with rlibphonenumber (a port of Google's libphonenumber) and the
//! configured default region for numbers written in national format.

use std::borrow::Cow;
use std::fmt;

use std::sync::{Arc, Mutex};

use rlibphonenumber::{
    NumberLengthType, PHONE_NUMBER_UTIL, ParseError, PhoneNumber, PhoneNumberFormat,
    PhoneNumberType, PhoneNumberUtil, Region,
};
use serde::Serialize;

/// The number rules of the passes running now: one instance of libphonenumber's metadata,
/// with the regular expressions it compiles as numbers need them, and how many passes hold
/// it. Every compiled expression keeps a matching cache for each thread that used it (the
/// regex crate's pool), and the process-wide `PHONE_NUMBER_UTIL` keeps them for good: after
/// a first pass parsed on two threads, the idle daemon held three sets of them (the
/// workers' and the planner's), most of its memory. A pass's instance goes, with all of
/// that, when its last holder does.
static PASS_RULES: Mutex<(usize, Option<Arc<PhoneNumberUtil>>)> = Mutex::new((0, None));

/// Holds the pass's number rules until dropped (`hold_rules`).
#[must_use = "the rules are dropped with the guard"]
pub struct HeldRules(());

/// Makes the numbers normalized until the guard drops use an instance of the rules of their
/// own, on every thread, dropped with the last guard: what they compiled and cached is not
/// kept after the pass. Without a guard, normalizing uses the process-wide instance
/// (`inspect`, the daemon's change passes, tests). Guards nest: the first creates the instance (a few milliseconds:
/// the metadata decoded again), the last drops it.
pub fn hold_rules() -> HeldRules {
    let mut held = PASS_RULES.lock().unwrap_or_else(|e| e.into_inner());
    held.0 += 1;
    if held.1.is_none() {
        // The built-in metadata is known good: the process-wide instance is built from it
        // the same way (and unwraps).
        held.1 = PhoneNumberUtil::new().ok().map(Arc::new);
    }
    HeldRules(())
}

impl Drop for HeldRules {
    fn drop(&mut self) {
        let dropped = {
            let mut held = PASS_RULES.lock().unwrap_or_else(|e| e.into_inner());
            held.0 = held.0.saturating_sub(1);
            if held.0 == 0 { held.1.take() } else { None }
        };
        // Outside the lock: freeing every compiled expression takes a moment.
        drop(dropped);
    }
}

/// The rules to normalize with: the held pass's, else the process-wide instance.
fn with_rules<R>(f: impl FnOnce(&PhoneNumberUtil) -> R) -> R {
    let held = PASS_RULES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .1
        .clone();
    match held {
        Some(rules) => f(&rules),
        None => f(&PHONE_NUMBER_UTIL),
    }
}

/// An ISO 3166 alpha-2 region that libphonenumber has metadata for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRegion(Region);

impl DefaultRegion {
    /// Accepts `de`, `DE`, ` De `; refuses codes libphonenumber has no metadata for (`XX`, `UK`).
    pub fn parse(code: &str) -> Result<Self, String> {
        let code = code.trim();
        let region = Region::from_code(code).map_err(|_| {
            format!("{code:?} is not an ISO 3166 alpha-2 region code (two letters, like DE or US)")
        })?;
        if region == Region::World
            || PHONE_NUMBER_UTIL
                .get_country_code_for_region(region)
                .is_none()
        {
            let hint = if code.eq_ignore_ascii_case("UK") {
                " (the United Kingdom is GB)"
            } else {
                ""
            };
            return Err(format!(
                "{code:?} is not a region with phone numbers{hint}; use an ISO 3166 alpha-2 code like DE, US or GB"
            ));
        }
        Ok(Self(region))
    }

    pub fn code(&self) -> String {
        self.0.as_region_str().to_string()
    }
}

impl fmt::Display for DefaultRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

/// How far a number can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    /// Valid according to the metadata.
    Valid,
    /// Has a possible length, but the metadata does not know the range. Kept: metadata lags
    /// behind newly opened number ranges, and dropping a real friend is worse than trying.
    UnknownRange,
}

/// A TEL value that became a number we can push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub e164: String,
    pub validity: Validity,
    /// An extension (`x123`, `;ext=123`) that was cut off: messengers have no use for it.
    pub extension: Option<String>,
    /// A number written in national form that reads as a valid number of other common
    /// regions, while the default region explains it badly: it is in no range the default
    /// region knows, or it lacks the trunk prefix (`0`) the default region's numbers are
    /// written with (`(415) 555-0199` with region DE). Kept, and flagged `other_region`.
    pub other_regions: Vec<OtherReading>,
}

/// How a national number reads in another region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherReading {
    pub region: String,
    pub e164: String,
}

/// Regions whose national numbers a contact list is likely to hold: the most populous and
/// the most travelled-to, NANP first. Only consulted for numbers the default region
/// explains badly, so the cost stays off the common path.
const COMMON_REGIONS: &[Region] = &[
    Region::US,
    Region::GB,
    Region::FR,
    Region::DE,
    Region::IT,
    Region::ES,
    Region::NL,
    Region::BE,
    Region::CH,
    Region::AT,
    Region::PL,
    Region::PT,
    Region::SE,
    Region::NO,
    Region::DK,
    Region::IE,
    Region::TR,
    Region::RU,
    Region::UA,
    Region::IN,
    Region::CN,
    Region::JP,
    Region::KR,
    Region::BR,
    Region::MX,
    Region::AU,
];

/// Why a TEL value is not a phone number we can push.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("empty")]
    Empty,
    #[error(
        "written without a country code, and no region to read it with: default_region in the configuration, or --region CC for `inspect FILE`"
    )]
    NoRegion,
    #[error("unknown country calling code")]
    InvalidCountryCode,
    #[error("not a phone number")]
    NotANumber,
    #[error("too short to be a phone number")]
    TooShort,
    #[error("a local number without its area code: add the area code")]
    LocalOnly,
    #[error("too long to be a phone number")]
    TooLong,
    #[error("length does not fit any number of that country")]
    InvalidLength,
}

/// What a number is normalized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// To be pushed (a sync): its E.164 form and validity. `other_regions` stays empty.
    Push,
    /// To be shown (`inspect`, `plan`): also the other regions where a national number
    /// reads better (`Normalized::other_regions`). Finding them parses the number again in
    /// each of `COMMON_REGIONS` and compiles their rules: after `default_region` DE → AT,
    /// 28 MiB of the peak of a sync deriving 100k files again and 0.4–0.7 s of its CPU, for
    /// flags no sync shows.
    Show,
}

/// Normalizes one TEL value, to be shown. International numbers (`+…`, `00…` where the
/// region dials 00) ignore the region.
pub fn normalize(raw: &str, region: Option<DefaultRegion>) -> Result<Normalized, PhoneError> {
    normalize_for(raw, region, Purpose::Show)
}

/// [`normalize`] for `purpose`: the same E.164 form and validity either way.
pub fn normalize_for(
    raw: &str,
    region: Option<DefaultRegion>,
    purpose: Purpose,
) -> Result<Normalized, PhoneError> {
    let cleaned = clean(raw);
    if cleaned.is_empty() {
        return Err(PhoneError::Empty);
    }
    with_rules(|rules| normalize_with(rules, &cleaned, region, purpose))
}

fn normalize_with(
    rules: &PhoneNumberUtil,
    cleaned: &str,
    region: Option<DefaultRegion>,
    purpose: Purpose,
) -> Result<Normalized, PhoneError> {
    let number = rules
        .parse(cleaned, region.map(|r| r.0))
        .map_err(|err| match err {
            ParseError::InvalidCountryCode if region.is_none() && !cleaned.starts_with('+') => {
                PhoneError::NoRegion
            }
            ParseError::InvalidCountryCode => PhoneError::InvalidCountryCode,
            ParseError::NotANumber(_) => PhoneError::NotANumber,
            ParseError::TooShortAfterIdd | ParseError::TooShortNsn => PhoneError::TooShort,
            ParseError::TooLongNsn => PhoneError::TooLong,
        })?;
    let validity = if rules.is_valid_number(&number) {
        Validity::Valid
    } else {
        match rules.is_possible_number_with_reason(&number) {
            Ok(NumberLengthType::IsPossible) => Validity::UnknownRange,
            // Dialable only inside its area, without the area code: no E.164 form exists.
            Ok(NumberLengthType::IsPossibleLocalOnly) => return Err(PhoneError::LocalOnly),
            Err(reason) => return Err(possibility_error(&reason.to_string())),
        }
    };
    let other_regions = match (region, purpose) {
        (Some(region), Purpose::Show) => {
            other_readings(rules, cleaned, &number, region.0, &validity)
        }
        _ => Vec::new(),
    };
    let extension = number.extension.clone().filter(|e| !e.is_empty());
    let mut core = number;
    core.extension = None;
    Ok(Normalized {
        e164: rules.format(&core, PhoneNumberFormat::E164).into_owned(),
        validity,
        extension,
        other_regions,
    })
}

/// The readings of a national number in other common regions, when the default region
/// explains it badly (see `Normalized::other_regions`); empty otherwise.
fn other_readings(
    rules: &PhoneNumberUtil,
    cleaned: &str,
    number: &PhoneNumber,
    region: Region,
    validity: &Validity,
) -> Vec<OtherReading> {
    if cleaned.starts_with('+')
        || cleaned
            .get(..4)
            .is_some_and(|t| t.eq_ignore_ascii_case("tel:"))
    {
        return Vec::new();
    }
    let written = digits(cleaned);
    let nsn = number.get_national_significant_number();
    let as_national = || digits(&rules.format(number, PhoneNumberFormat::National));
    let badly_explained = match validity {
        // Written in national form (with or without a trunk prefix), in no known range.
        Validity::UnknownRange => written == nsn || written == as_national(),
        // Valid, but written without the trunk prefix this region's numbers are written
        // with: `(415) 555-0199` is no way to write a German number.
        Validity::Valid => written == nsn && as_national() != nsn,
    };
    if !badly_explained {
        return Vec::new();
    }
    // (rank, reading): a person's number (mobile or fixed line) before a service number.
    let mut readings: Vec<(u8, OtherReading)> = Vec::new();
    for &other in COMMON_REGIONS {
        if other == region {
            continue;
        }
        let Ok(candidate) = rules.parse(cleaned, Some(other)) else {
            continue;
        };
        // Valid there, and written exactly as that region writes its national numbers.
        if !rules.is_valid_number(&candidate)
            || digits(&rules.format(&candidate, PhoneNumberFormat::National)) != written
        {
            continue;
        }
        let e164 = rules
            .format(&candidate, PhoneNumberFormat::E164)
            .into_owned();
        if readings.iter().any(|(_, r)| r.e164 == e164) {
            continue; // NANP: one reading, whichever region of +1 found it
        }
        let rank = match rules.get_number_type(&candidate) {
            PhoneNumberType::Mobile
            | PhoneNumberType::FixedLine
            | PhoneNumberType::FixedLineOrMobile => 0,
            _ => 1,
        };
        let name = rules.get_region_for_number(&candidate).unwrap_or(other);
        readings.push((
            rank,
            OtherReading {
                region: name.as_region_str().to_string(),
                e164,
            },
        ));
    }
    readings.sort_by_key(|(rank, _)| *rank);
    readings.into_iter().map(|(_, reading)| reading).collect()
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

fn possibility_error(reason: &str) -> PhoneError {
    // rlibphonenumber's ValidationError; matched on its text to stay independent of the enum's
    // exact variant set across patch releases.
    let reason = reason.to_ascii_lowercase();
    if reason.contains("country calling code") {
        PhoneError::InvalidCountryCode
    } else if reason.contains("shorter than all") {
        PhoneError::TooShort
    } else if reason.contains("longer than all") || reason.contains("too long") {
        PhoneError::TooLong
    } else {
        PhoneError::InvalidLength
    }
}

/// Removes what libphonenumber does not expect in a TEL value written by an address book:
/// dial pauses and waits (`p`, `w`, `,` as Android writes them) and everything after them, and
/// the `(0)` trunk prefix of `+49 (0)30 …` / `+44 (0)20 …`, which is never dialled after a
/// country code.
fn clean(raw: &str) -> Cow<'_, str> {
    let raw = raw.trim();
    let is_uri = raw.len() >= 4 && raw.is_char_boundary(4) && raw[..4].eq_ignore_ascii_case("tel:");
    let bytes = raw.as_bytes();
    let mut end = bytes.len();
    if !is_uri {
        // Pause characters are ASCII, so byte positions are character boundaries here.
        for (i, &b) in bytes.iter().enumerate() {
            let after_digit = i > 0 && bytes[i - 1].is_ascii_digit();
            let before_digit = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            // `p`/`w` only between digits: `1-800-FLOWERS` is a vanity number, not a pause.
            let is_pause = match b {
                b',' | b';' => i > 0,
                b'p' | b'P' | b'w' | b'W' => after_digit && (before_digit || i + 1 == bytes.len()),
                _ => false,
            };
            if is_pause {
                end = i;
                break;
            }
        }
    }
    let kept = raw[..end].trim();
    if kept.starts_with('+') && kept.contains("(0)") {
        Cow::Owned(kept.replacen("(0)", "", 1))
    } else {
        Cow::Borrowed(kept)
    }
}

static SHOW_PERSONAL_DATA: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// `log.show_personal_data`: whether debug logs may show numbers in full.
pub fn set_show_personal_data(show: bool) {
    SHOW_PERSONAL_DATA.store(show, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `log.show_personal_data` is set: logs may then show numbers, names and paths.
pub fn show_personal_data() -> bool {
    SHOW_PERSONAL_DATA.load(std::sync::atomic::Ordering::Relaxed)
}

/// A number as debug logs show it: redacted unless `log.show_personal_data` is set.
pub fn for_debug_log(e164: &str) -> String {
    if show_personal_data() {
        e164.to_owned()
    } else {
        redact(e164)
    }
}

/// `+491622433834` → `+49…34`: enough to tell numbers apart in a log, too little to dial.
pub fn redact(e164: &str) -> String {
    let chars: Vec<char> = e164.chars().collect();
    if chars.len() <= 5 {
        return "…".into();
    }
    let head_len = if e164.starts_with('+') { 3 } else { 2 };
    let head: String = chars[..head_len].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn region(code: &str) -> Option<DefaultRegion> {
        Some(DefaultRegion::parse(code).unwrap())
    }

    #[rstest]
    #[case::international_ignores_region("+49 162 2433834", "US", "+491622433834")]
    #[case::german_national("0162 2433834", "DE", "+491622433834")]
    #[case::trunk_prefix_in_parentheses("+49 (0)30 1234567", "US", "+49301234567")]
    #[case::uk_trunk_prefix("+44 (0)20 7946 0958", "DE", "+442079460958")]
    #[case::idd_prefix("0049 30 1234567", "DE", "+49301234567")]
    #[case::us_national_punctuation("(202) 555-0173", "US", "+12025550173")]
    #[case::tel_uri("tel:+1-202-555-0173", "DE", "+12025550173")]
    #[case::pause_and_wait("+1 202 555 0173p123w4", "US", "+12025550173")]
    #[case::vanity_letters("1-800-FLOWERS", "US", "+18003569377")]
    fn normalizes_to_e164(#[case] raw: &str, #[case] default: &str, #[case] expected: &str) {
        let n = normalize(raw, region(default)).unwrap();
        assert_eq!(n.e164, expected);
    }

    #[rstest]
    #[case::x_extension("+1 202 555 0173 x 42", "42")]
    #[case::ext_word("+1 202 555 0173 ext. 42", "42")]
    #[case::uri_extension("tel:+1-202-555-0173;ext=42", "42")]
    fn strips_extensions(#[case] raw: &str, #[case] ext: &str) {
        let n = normalize(raw, region("US")).unwrap();
        assert_eq!(n.e164, "+12025550173");
        assert_eq!(n.extension.as_deref(), Some(ext));
    }

    #[rstest]
    #[case::empty("  ", PhoneError::Empty)]
    #[case::letters("call me", PhoneError::NotANumber)]
    #[case::too_short("+1 202 555", PhoneError::TooShort)]
    #[case::single_digit("1", PhoneError::NotANumber)]
    #[case::local_only("12", PhoneError::LocalOnly)]
    #[case::bad_country("+999 1234567", PhoneError::InvalidCountryCode)]
    fn rejects(#[case] raw: &str, #[case] expected: PhoneError) {
        assert_eq!(normalize(raw, region("DE")), Err(expected));
    }

    #[test]
    fn national_number_without_region_is_explained() {
        assert_eq!(normalize("030 1234567", None), Err(PhoneError::NoRegion));
        assert_eq!(
            normalize("+49 30 1234567", None).unwrap().e164,
            "+49301234567"
        );
    }

    #[test]
    fn possible_but_unknown_range_is_kept_and_flagged() {
        // +1 555-01xx is reserved for fiction: possible length, never assigned.
        let n = normalize("+1 202 555 0100", None).unwrap();
        assert_eq!(n.e164, "+12025550100");
        let fictional = normalize("(555) 555-0199", region("US")).unwrap();
        assert_eq!(fictional.validity, Validity::UnknownRange);
    }

    fn readings(raw: &str, default: &str) -> Vec<(String, String)> {
        normalize(raw, region(default))
            .unwrap()
            .other_regions
            .into_iter()
            .map(|r| (r.region, r.e164))
            .collect()
    }

    #[test]
    fn a_number_written_as_another_regions_national_number_is_flagged() {
        // Valid in DE only without the trunk prefix German numbers are written with.
        let n = normalize("(415) 555-0199", region("DE")).unwrap();
        assert_eq!(n.e164, "+494155550199");
        assert_eq!(n.validity, Validity::Valid);
        // US first (NANP leads the list); BR and MX write 10 digits like this too.
        assert_eq!(
            readings("(415) 555-0199", "DE")[0],
            ("US".to_owned(), "+14155550199".to_owned())
        );
        // In no range DE knows; as written, a Japanese mobile number (among others). A
        // person's number is named before a service number (GB's premium-rate +44 90…).
        let japanese = ("JP".to_owned(), "+819012345678".to_owned());
        assert!(readings("090-1234-5678", "DE").contains(&japanese));
    }

    /// A sync pushes the same number without looking for other readings.
    #[rstest]
    #[case::valid_but_badly_written("(415) 555-0199")]
    #[case::in_no_known_range("090-1234-5678")]
    fn to_push_a_number_is_the_same_without_other_readings(#[case] raw: &str) {
        let shown = normalize_for(raw, region("DE"), Purpose::Show).unwrap();
        let pushed = normalize_for(raw, region("DE"), Purpose::Push).unwrap();
        assert!(!shown.other_regions.is_empty());
        assert_eq!(pushed.other_regions, []);
        assert_eq!(
            (&pushed.e164, &pushed.validity, &pushed.extension),
            (&shown.e164, &shown.validity, &shown.extension)
        );
    }

    #[rstest]
    #[case::german_with_trunk_prefix("0151 23456789", "DE")]
    #[case::ambiguous_but_valid_as_written("06 12 34 56 78", "DE")]
    #[case::us_national("(202) 555-0173", "US")]
    #[case::international("+1 415 555 0199", "DE")]
    #[case::idd("001 415 555 0199", "DE")]
    fn numbers_the_default_region_explains_are_not_flagged(
        #[case] raw: &str,
        #[case] default: &str,
    ) {
        assert_eq!(readings(raw, default), []);
    }

    #[rstest]
    #[case::lowercase("de", "DE")]
    #[case::padded(" us ", "US")]
    fn accepts_regions(#[case] input: &str, #[case] code: &str) {
        assert_eq!(DefaultRegion::parse(input).unwrap().code(), code);
    }

    #[rstest]
    #[case::unknown("XX")]
    #[case::uk_is_gb("UK")]
    #[case::three_letters("DEU")]
    #[case::numeric("49")]
    fn refuses_regions(#[case] input: &str) {
        assert!(DefaultRegion::parse(input).is_err());
    }

    #[test]
    fn redaction_keeps_only_edges() {
        assert_eq!(redact("+491622433834"), "+49…34");
        assert_eq!(redact("+4912"), "…");
    }
}
