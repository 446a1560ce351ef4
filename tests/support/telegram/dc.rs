//! Data centres as Telegram runs them (core.telegram.org/api/datacenter): DCs 1–5 each listen
//! on their own address and know only their own auth key, and a key is logged in only on the
//! DC where the login happened or where the authorization was carried over
//! (`auth.exportAuthorization` on the current DC, `auth.importAuthorization` on the new one).
//! The account lives on one DC: a query for it on another answers `303 USER_MIGRATE_X`, a
//! login started on another `303 PHONE_MIGRATE_X`.

use std::collections::{BTreeSet, HashMap};

use grammers_tl_types as tl;
use grammers_tl_types::{Identifiable, Serializable};

use super::account::{digits, user};
use super::{Shared, decode};

/// The DCs the server runs, as Telegram numbers its production DCs.
pub const IDS: std::ops::RangeInclusive<i32> = 1..=5;

/// Where the account lives and which DCs' keys are logged in as it.
#[derive(Debug)]
pub struct Dcs {
    /// The DC the account lives on (1 unless a test moves it: Telegram "migrating" the user).
    pub account_dc: i32,
    /// The DCs whose auth key is logged in as the account (one key per DC here).
    pub logged_in: BTreeSet<i32>,
    /// Exported authorizations not yet imported: bytes → the DC they are for. One use each.
    exported: HashMap<Vec<u8>, i32>,
}

impl Dcs {
    /// `logged_in`: the account starts logged in on DC 1, where the seeded session's home is.
    pub fn new(logged_in: bool) -> Self {
        Self {
            account_dc: 1,
            logged_in: if logged_in {
                BTreeSet::from([1])
            } else {
                BTreeSet::new()
            },
            exported: HashMap::new(),
        }
    }
}

/// Methods only this module answers, for the call log.
pub(super) const METHODS: &[(u32, &str)] = &[
    (
        tl::functions::auth::ExportAuthorization::CONSTRUCTOR_ID,
        "auth.exportAuthorization",
    ),
    (
        tl::functions::auth::ImportAuthorization::CONSTRUCTOR_ID,
        "auth.importAuthorization",
    ),
];

type Reply = Result<Vec<u8>, (i32, String)>;

/// Answers `method` as DC `dc` does: the login methods move to the account's DC, every other
/// method needs this DC's key logged in (401 `AUTH_KEY_UNREGISTERED`) and the account here
/// (303 `USER_MIGRATE_X`); the rest is the account's work in [`super::dispatch`].
pub(super) fn dispatch(
    dc: i32,
    shared: &mut Shared,
    method: &str,
    body: &[u8],
    retry: &[String],
) -> Reply {
    let account_dc = shared.dcs.account_dc;
    match method {
        "auth.sendCode" | "auth.signIn"
            if dc != account_dc && login_phone(method, body)? == shared.me.phone =>
        {
            return Err((303, format!("PHONE_MIGRATE_{account_dc}")));
        }
        "auth.importAuthorization" => return import(dc, shared, body),
        _ => {}
    }
    if !super::WITHOUT_LOGIN.contains(&method) {
        if !shared.authorized || !shared.dcs.logged_in.contains(&dc) {
            return Err((401, "AUTH_KEY_UNREGISTERED".into()));
        }
        // Exporting is done on the DC the client is already connected to, wherever the
        // account moved.
        if method == "auth.exportAuthorization" {
            return export(dc, shared, body);
        }
        if dc != account_dc {
            return Err((303, format!("USER_MIGRATE_{account_dc}")));
        }
    }
    let result = super::dispatch(shared, method, body, retry);
    if result.is_ok() {
        match method {
            "auth.signIn" | "auth.checkPassword" => {
                shared.dcs.logged_in.insert(dc);
            }
            // The authorization ends, with every copy of it.
            "auth.logOut" => {
                shared.dcs.logged_in.clear();
                shared.dcs.exported.clear();
            }
            _ => {}
        }
    }
    result
}

/// The phone number of a login request, as digits.
fn login_phone(method: &str, body: &[u8]) -> Result<String, (i32, String)> {
    Ok(digits(&if method == "auth.sendCode" {
        decode::<tl::functions::auth::SendCode>(body)?.phone_number
    } else {
        decode::<tl::functions::auth::SignIn>(body)?.phone_number
    }))
}

/// `auth.exportAuthorization`: the user's id and random bytes that log in a key of `dc_id`.
fn export(dc: i32, shared: &mut Shared, body: &[u8]) -> Reply {
    let request: tl::functions::auth::ExportAuthorization = decode(body)?;
    if request.dc_id == dc || !IDS.contains(&request.dc_id) {
        return Err((400, "DC_ID_INVALID".into()));
    }
    let bytes: Vec<u8> = (0..128).map(|_| fastrand::u8(..)).collect();
    shared.dcs.exported.insert(bytes.clone(), request.dc_id);
    Ok(tl::enums::auth::ExportedAuthorization::Authorization(
        tl::types::auth::ExportedAuthorization {
            id: shared.me.user_id,
            bytes,
        },
    )
    .to_bytes())
}

/// `auth.importAuthorization`: bytes exported for this DC log in this DC's key.
fn import(dc: i32, shared: &mut Shared, body: &[u8]) -> Reply {
    let request: tl::functions::auth::ImportAuthorization = decode(body)?;
    if shared.dcs.exported.get(&request.bytes) != Some(&dc) || !shared.authorized {
        return Err((400, "AUTH_BYTES_INVALID".into()));
    }
    if request.id != shared.me.user_id {
        return Err((400, "USER_ID_INVALID".into()));
    }
    shared.dcs.exported.remove(&request.bytes);
    shared.dcs.logged_in.insert(dc);
    Ok(
        tl::enums::auth::Authorization::Authorization(tl::types::auth::Authorization {
            setup_password_required: false,
            otherwise_relogin_days: None,
            tmp_sessions: None,
            future_auth_token: None,
            user: user(&shared.me, 0, true),
        })
        .to_bytes(),
    )
}
