//! Login as Telegram does it: a code sent to the app, then, with two-step verification, an
//! SRP proof of the password (core.telegram.org/api/srp), checked for real.

use grammers_tl_types as tl;
use grammers_tl_types::Serializable;

use super::Shared;
use super::account::user;

/// Telegram's 2048-bit safe prime for SRP (g = 3), as the official clients pin it.
const PRIME_HEX: &str = "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c3720fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f642477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b";

/// How the account logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSetup {
    /// The code the "app" shows.
    pub code: String,
    /// Two-step verification: the password and its hint.
    pub password: Option<(String, String)>,
}

/// Where a login stands.
#[derive(Debug, Default)]
pub struct LoginState {
    pub setup: Option<LoginSetup>,
    phone_code_hash: Option<String>,
    /// The digits of the phone the code was sent to (the user about to log in).
    phone: Option<String>,
    code_accepted: bool,
    srp: Option<SrpRound>,
}

/// The SRP round in progress: what `account.getPassword` handed out.
#[derive(Debug, Clone)]
struct SrpRound {
    id: i64,
    g_b: Vec<u8>,
    secure_random: Vec<u8>,
    salt1: Vec<u8>,
    salt2: Vec<u8>,
}

impl LoginState {
    pub fn new(setup: Option<LoginSetup>) -> Self {
        Self {
            setup,
            ..Self::default()
        }
    }
}

fn prime() -> Vec<u8> {
    (0..PRIME_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PRIME_HEX[i..i + 2], 16).expect("hex prime"))
        .collect()
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::u8(..)).collect()
}

fn authorization(shared: &mut Shared) -> Vec<u8> {
    shared.authorized = true;
    // Another user than the one logged in before: their own contact list comes with them.
    if let Some(phone) = shared.login.phone.clone()
        && phone != shared.me.phone
        && let Some(at) = shared.others.iter().position(|(me, _)| me.phone == phone)
    {
        let (me, account) = shared.others.remove(at);
        let old_me = std::mem::replace(&mut shared.me, me);
        let old_account = std::mem::replace(&mut shared.account, account);
        shared.others.push((old_me, old_account));
    }
    tl::enums::auth::Authorization::Authorization(tl::types::auth::Authorization {
        setup_password_required: false,
        otherwise_relogin_days: None,
        tmp_sessions: None,
        future_auth_token: None,
        user: user(&shared.me, 0, true),
    })
    .to_bytes()
}

type Reply = Result<Vec<u8>, (i32, String)>;

/// `auth.sendCode`
pub fn send_code(shared: &mut Shared, request: &tl::functions::auth::SendCode) -> Reply {
    if request.api_hash.is_empty() {
        return Err((400, "API_ID_INVALID".into()));
    }
    let phone = super::account::digits(&request.phone_number);
    if phone != shared.me.phone && !shared.others.iter().any(|(me, _)| me.phone == phone) {
        return Err((400, "PHONE_NUMBER_INVALID".into()));
    }
    shared.login.phone = Some(phone);
    let hash = format!("hash{:016x}", fastrand::u64(..));
    shared.login.phone_code_hash = Some(hash.clone());
    shared.login.code_accepted = false;
    Ok(tl::enums::auth::SentCode::Code(tl::types::auth::SentCode {
        r#type: tl::enums::auth::SentCodeType::App(tl::types::auth::SentCodeTypeApp { length: 5 }),
        phone_code_hash: hash,
        next_type: None,
        timeout: None,
    })
    .to_bytes())
}

/// `auth.signIn`
pub fn sign_in(shared: &mut Shared, request: &tl::functions::auth::SignIn) -> Reply {
    let setup = shared
        .login
        .setup
        .clone()
        .ok_or((400, "PHONE_CODE_EXPIRED".to_owned()))?;
    if shared.login.phone_code_hash.as_deref() != Some(request.phone_code_hash.as_str()) {
        return Err((400, "PHONE_CODE_HASH_EMPTY".into()));
    }
    match &request.phone_code {
        None => return Err((400, "PHONE_CODE_EMPTY".into())),
        Some(code) if *code != setup.code => return Err((400, "PHONE_CODE_INVALID".into())),
        Some(_) => {}
    }
    shared.login.code_accepted = true;
    if setup.password.is_some() {
        return Err((401, "SESSION_PASSWORD_NEEDED".into()));
    }
    Ok(authorization(shared))
}

/// `account.getPassword`: a fresh SRP round each time, as Telegram does.
pub fn get_password(shared: &mut Shared) -> Reply {
    let Some((_, hint)) = shared.login.setup.as_ref().and_then(|s| s.password.clone()) else {
        return Ok(no_password());
    };
    let (salt1, salt2) = (random_bytes(40), random_bytes(16));
    let p = prime();
    // g_b = 3^b mod p for a random b: the client only needs it in range for its proof.
    let b = num_bigint::BigUint::from_bytes_be(&random_bytes(256));
    let g_b = num_bigint::BigUint::from(3u8)
        .modpow(&b, &num_bigint::BigUint::from_bytes_be(&p))
        .to_bytes_be();
    let secure_random = random_bytes(256);
    let srp_id = fastrand::i64(1..);
    shared.login.srp = Some(SrpRound {
        id: srp_id,
        g_b: g_b.clone(),
        secure_random: secure_random.clone(),
        salt1: salt1.clone(),
        salt2: salt2.clone(),
    });
    let algo = |salt1: Vec<u8>| {
        tl::enums::PasswordKdfAlgo::Sha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow(
            tl::types::PasswordKdfAlgoSha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow {
                salt1,
                salt2: salt2.clone(),
                g: 3,
                p: p.clone(),
            },
        )
    };
    Ok(
        tl::enums::account::Password::Password(tl::types::account::Password {
            has_recovery: false,
            has_secure_values: false,
            has_password: true,
            current_algo: Some(algo(salt1.clone())),
            srp_b: Some(g_b),
            srp_id: Some(srp_id),
            hint: Some(hint),
            email_unconfirmed_pattern: None,
            new_algo: algo(salt1),
            new_secure_algo: tl::enums::SecurePasswordKdfAlgo::Unknown,
            secure_random,
            pending_reset_date: None,
            login_email_pattern: None,
        })
        .to_bytes(),
    )
}

fn no_password() -> Vec<u8> {
    tl::enums::account::Password::Password(tl::types::account::Password {
        has_recovery: false,
        has_secure_values: false,
        has_password: false,
        current_algo: None,
        srp_b: None,
        srp_id: None,
        hint: None,
        email_unconfirmed_pattern: None,
        new_algo: tl::enums::PasswordKdfAlgo::Unknown,
        new_secure_algo: tl::enums::SecurePasswordKdfAlgo::Unknown,
        secure_random: random_bytes(256),
        pending_reset_date: None,
        login_email_pattern: None,
    })
    .to_bytes()
}

/// `auth.checkPassword`: the client's M1 must equal the one its password yields. grammers
/// uses `secure_random` as its SRP secret `a`, so the server can recompute the proof.
pub fn check_password(shared: &mut Shared, request: &tl::functions::auth::CheckPassword) -> Reply {
    let tl::enums::InputCheckPasswordSrp::Srp(proof) = &request.password else {
        return Err((400, "PASSWORD_HASH_INVALID".into()));
    };
    let Some((password, _)) = shared.login.setup.as_ref().and_then(|s| s.password.clone()) else {
        return Err((400, "PASSWORD_HASH_INVALID".into()));
    };
    let Some(round) = shared.login.srp.clone() else {
        return Err((400, "SRP_ID_INVALID".into()));
    };
    if proof.srp_id != round.id || !shared.login.code_accepted {
        return Err((400, "SRP_ID_INVALID".into()));
    }
    let (expected_m1, expected_a) = grammers_crypto::two_factor_auth::calculate_2fa(
        &round.salt1,
        &round.salt2,
        &prime(),
        &3,
        round.g_b,
        round.secure_random,
        password,
    );
    if proof.m1 != expected_m1 || proof.a != expected_a {
        return Err((400, "PASSWORD_HASH_INVALID".into()));
    }
    shared.login.srp = None;
    Ok(authorization(shared))
}

/// `auth.logOut`: the key is no longer bound to the user.
pub fn log_out(shared: &mut Shared) -> Reply {
    shared.authorized = false;
    shared.login.code_accepted = false;
    Ok(tl::enums::auth::LoggedOut::Out(tl::types::auth::LoggedOut {
        future_auth_token: None,
    })
    .to_bytes())
}
