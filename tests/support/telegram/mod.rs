//! A small MTProto server on 127.0.0.1 that the unmodified grammers client talks to over TCP:
//! full transport, MTProto 2.0 with a pre-shared auth key (no DH exchange), containers,
//! gzip, acks, pings, `invokeWithLayer(initConnection(…))`, and a fake account that follows
//! Telegram's documentation of the contacts API. Faults are scripted per method; every call
//! is recorded.
//!
//! Test infrastructure, but faithful: what it answers is what Telegram documents.

#![allow(dead_code)]

pub mod account;
pub mod crypto;
pub mod dc;
pub mod login;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grammers_mtproto::transport::{Error as TransportError, Full, Transport};
use grammers_session::SessionData;
use grammers_session::storages::MemorySession;
use grammers_session::types::DcOption;
use grammers_tl_types as tl;
use grammers_tl_types::deserialize::Cursor;
use grammers_tl_types::{Deserializable, Identifiable, Serializable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use account::{Account, ContactEntry};
use crypto::{CryptoError, ServerKey};
use wire::Message;

/// What a call does instead of (or besides) its normal work, scripted per method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Reply with this RPC error, e.g. `(420, "FLOOD_WAIT_31")`, `(400, "PHONE_NUMBER_INVALID")`,
    /// `(401, "AUTH_KEY_UNREGISTERED")`, `(500, "INTERNAL")`, `(303, "PHONE_MIGRATE_2")`.
    Rpc { code: i32, message: String },
    /// Put these phones in `retry_contacts` (an import).
    RetryPhones(Vec<String>),
    /// Never answer.
    Silent,
    /// Drop the connection before doing anything.
    DropBeforeProcessing,
    /// Do the work, then drop the connection before replying: the reply-lost case.
    ApplyThenDrop,
}

impl Fault {
    pub fn rpc(code: i32, message: &str) -> Self {
        Self::Rpc {
            code,
            message: message.to_owned(),
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Call {
    /// `contacts.importContacts`, `help.getConfig`, …
    pub method: String,
    pub at: SystemTime,
    /// The request's TL body (constructor id first), for decoding in assertions.
    pub body: Vec<u8>,
    /// The data centre it was sent to.
    pub dc: i32,
}

impl Call {
    pub fn decode<T: Deserializable>(&self) -> T {
        T::deserialize(&mut Cursor::from_slice(&self.body[4..])).expect("recorded body decodes")
    }
}

/// Calls over `calls` per `window` on one method answer FLOOD_WAIT_`wait_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub calls: usize,
    pub window: Duration,
    pub wait_seconds: i32,
}

#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Refuse messages under another salt with `bad_server_salt`.
    pub enforce_salt: bool,
    /// Every method's rate limit, unless `method_rate_limits` names the method.
    pub rate_limit: Option<RateLimit>,
    /// Rate limits of single methods, e.g. `contacts.resolveUsername` (users report waits of
    /// 38–190 s on it), overriding `rate_limit` for them.
    pub method_rate_limits: HashMap<String, RateLimit>,
    /// Start logged out, with this way to log in; `None`: logged in from the start.
    pub login: Option<login::LoginSetup>,
}

/// Everything connections share.
pub struct Shared {
    pub account: Account,
    /// Whether the auth key is bound to a logged-in user.
    pub authorized: bool,
    /// The logged-in user's own entry.
    pub me: ContactEntry,
    /// The account's DC and which DCs' keys are logged in (`authorized` is the master switch:
    /// false, e.g. revoked, logs out every key).
    pub dcs: dc::Dcs,
    /// Other users who can log in (with the same code and password), each with their own
    /// contact list; a login as one of them swaps them with `me` and `account`.
    pub others: Vec<(ContactEntry, Account)>,
    pub login: login::LoginState,
    pub options: ServerOptions,
    /// How many gzip_packed messages arrived (large requests are compressed).
    pub gzip_messages: usize,
    /// What the client said in initConnection.
    pub client_info: Option<wire::ClientInfo>,
    faults: HashMap<String, VecDeque<Fault>>,
    calls: Vec<Call>,
    salt: i64,
    last_msg_id: i64,
}

pub struct TestServer {
    /// DC 1's address and key.
    addr: SocketAddr,
    key: ServerKey,
    /// Every DC: its id, address and key.
    dcs: Vec<(i32, SocketAddr, ServerKey)>,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Listens on a loopback port the OS chooses (DC 1; DCs 2–5 on ports of their own); the
    /// account is logged in on DC 1 unless `options.login` says how to log in.
    pub async fn start(options: ServerOptions) -> Self {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), options).await
    }

    /// DC 1 listens on `addr`, DCs 2–5 on the same IP with ports the OS chooses; each DC has
    /// its own auth key and accepts only that one.
    pub async fn start_on(addr: SocketAddr, options: ServerOptions) -> Self {
        let mut listeners: Vec<(i32, SocketAddr, (TcpListener, ServerKey))> = Vec::new();
        for id in dc::IDS {
            let at = match listeners.first() {
                None => addr,
                Some((_, first, _)) => SocketAddr::new(first.ip(), 0),
            };
            let listener = TcpListener::bind(at)
                .await
                .expect("bind the listen address");
            let at = listener.local_addr().expect("local addr");
            let mut key = [0u8; 256];
            key.iter_mut().for_each(|b| *b = fastrand::u8(..));
            listeners.push((id, at, (listener, ServerKey::new(key))));
        }
        let dcs: Vec<(i32, SocketAddr, ServerKey)> = listeners
            .iter()
            .map(|(id, at, (_, key))| (*id, *at, key.clone()))
            .collect();
        let (addr, key) = (dcs[0].1, dcs[0].2.clone());
        let login = login::LoginState::new(options.login.clone());
        let shared = Arc::new(Mutex::new(Shared {
            account: Account::new(),
            authorized: options.login.is_none(),
            login,
            dcs: dc::Dcs::new(options.login.is_none()),
            me: ContactEntry {
                user_id: 1,
                phone: "15550000000".into(),
                first_name: "Test".into(),
                last_name: "Account".into(),
            },
            others: Vec::new(),
            options,
            gzip_messages: 0,
            client_info: None,
            faults: HashMap::new(),
            calls: Vec::new(),
            salt: fastrand::i64(1..),
            last_msg_id: 0,
        }));
        let task = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                // Aborting this task drops the set, which aborts every DC's accept loop.
                let mut accepting = tokio::task::JoinSet::new();
                for (dc, _, (listener, key)) in listeners {
                    let shared = Arc::clone(&shared);
                    accepting.spawn(async move {
                        while let Ok((stream, _)) = listener.accept().await {
                            tokio::spawn(serve(stream, dc, key.clone(), Arc::clone(&shared)));
                        }
                    });
                }
                while accepting.join_next().await.is_some() {}
            })
        };
        Self {
            addr,
            key,
            dcs,
            shared,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// DC 1's auth key.
    pub fn auth_key(&self) -> [u8; 256] {
        self.key.bytes()
    }

    /// A DC's address and auth key.
    pub fn dc(&self, id: i32) -> (SocketAddr, [u8; 256]) {
        self.dcs
            .iter()
            .find(|(dc, _, _)| *dc == id)
            .map(|(_, addr, key)| (*addr, key.bytes()))
            .expect("DCs 1-5")
    }

    /// Session data a grammers client needs to talk to this server: DCs 1–5 at their loopback
    /// ports (so a `*_MIGRATE_X` never leads to Telegram), each with its own key; home DC 1.
    pub fn session_data(&self) -> SessionData {
        let mut data = session_data_for(self.addr, self.key.bytes());
        for (id, addr, key) in &self.dcs {
            data.dc_options
                .insert(*id, dc_option(*id, *addr, key.bytes()));
        }
        data
    }

    pub fn memory_session(&self) -> Arc<MemorySession> {
        Arc::new(MemorySession::from(self.session_data()))
    }

    pub fn state(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().expect("server state")
    }

    /// The next call of `method` does `fault` instead.
    pub fn fail_next(&self, method: &str, fault: Fault) {
        self.state()
            .faults
            .entry(method.to_owned())
            .or_default()
            .push_back(fault);
    }

    /// Another user who can log in here, with an empty contact list in which every number
    /// has an account; returns its user id.
    pub fn add_user(&self, phone: &str, first_name: &str) -> i64 {
        let mut state = self.state();
        let user_id = 2 + state.others.len() as i64;
        let mut account = Account::new();
        account.rule = account::Registration::All;
        state.others.push((
            ContactEntry {
                user_id,
                phone: account::digits(phone),
                first_name: first_name.into(),
                last_name: String::new(),
            },
            account,
        ));
        user_id
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The account and the call log as JSON, for `--dump` and for people reading along.
    pub fn dump(&self) -> serde_json::Value {
        let state = self.state();
        let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for call in &state.calls {
            *counts.entry(call.method.as_str()).or_default() += 1;
        }
        let since_epoch = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let account = &state.account;
        let username = |user_id: i64| {
            account
                .people
                .get(&user_id)
                .and_then(|p| p.username.clone())
        };
        serde_json::json!({
            "logged_in": state.authorized,
            "contacts": account.contacts.values().map(|c| serde_json::json!({
                "user_id": c.user_id,
                "phone": Some(&c.phone).filter(|p| !p.is_empty()),
                "username": username(c.user_id),
                "first_name": c.first_name,
                "last_name": c.last_name,
                "phone_privacy_exception": account.phone_privacy_exceptions.contains(&c.user_id),
            })).collect::<Vec<_>>(),
            "people_with_usernames": account.people.values().filter(|p| p.username.is_some()).map(|p| serde_json::json!({
                "user_id": p.user_id,
                "username": p.username,
                "phone": p.phone,
            })).collect::<Vec<_>>(),
            "saved": state.account.saved.iter().map(|(phone, (first, last))| serde_json::json!({
                "phone": phone, "first_name": first, "last_name": last,
            })).collect::<Vec<_>>(),
            "calls_per_method": counts,
            "calls": state.calls.iter().map(|c| serde_json::json!({
                "method": c.method, "at": since_epoch(c.at),
            })).collect::<Vec<_>>(),
        })
    }

    /// Grows with every call: a cheap "did anything change" for watchers.
    pub fn call_count(&self) -> usize {
        self.state().calls.len()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }
}

/// Session data for a server at `addr` with `auth_key`: DCs 1–5 all on that address (so a
/// `*_MIGRATE_X` never leads to Telegram), each with the known key; home DC 1. Enough for a
/// client that stays on DC 1 (`addr` and `auth_key` being DC 1's).
pub fn session_data_for(addr: SocketAddr, auth_key: [u8; 256]) -> SessionData {
    let mut data = SessionData::default();
    for id in dc::IDS {
        data.dc_options.insert(id, dc_option(id, addr, auth_key));
    }
    data.home_dc = 1;
    data
}

fn dc_option(id: i32, addr: SocketAddr, auth_key: [u8; 256]) -> DcOption {
    let ip = match addr {
        SocketAddr::V4(v4) => *v4.ip(),
        SocketAddr::V6(_) => Ipv4Addr::LOCALHOST,
    };
    DcOption {
        id,
        ipv4: SocketAddrV4::new(ip, addr.port()),
        ipv6: SocketAddrV6::new(ip.to_ipv6_mapped(), addr.port(), 0, 0),
        auth_key: Some(auth_key),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the server does after a packet.
enum Next {
    Reply(Vec<Vec<u8>>),
    /// Close the connection without a word.
    Drop,
    /// Transport error (the absolute value is an HTTP-like status), then close.
    TransportError(i32),
}

struct Connection {
    /// The DC this connection reached, and its key.
    dc: i32,
    key: ServerKey,
    shared: Arc<Mutex<Shared>>,
    session_id: i64,
    content_messages: i32,
}

async fn serve(mut stream: TcpStream, dc: i32, key: ServerKey, shared: Arc<Mutex<Shared>>) {
    let mut transport = Full::new();
    let mut inbound: Vec<u8> = Vec::new();
    let mut connection = Connection {
        dc,
        key,
        shared,
        session_id: 0,
        content_messages: 0,
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        inbound.extend_from_slice(&chunk[..read]);
        loop {
            let unpacked = match transport.unpack(&mut inbound) {
                Ok(unpacked) => unpacked,
                Err(TransportError::MissingBytes) => break,
                Err(_) => return,
            };
            let payload = inbound[unpacked.data_range.clone()].to_vec();
            inbound.drain(..unpacked.next_offset);
            match connection.handle(&payload) {
                Next::Reply(bodies) => {
                    for body in bodies {
                        let packet = connection.seal(&body);
                        let mut buffer =
                            grammers_crypto::DequeBuffer::with_capacity(packet.len(), 8);
                        buffer.extend(packet);
                        transport.pack(&mut buffer);
                        if stream.write_all(buffer.as_ref()).await.is_err() {
                            return;
                        }
                    }
                }
                Next::Drop => return,
                Next::TransportError(status) => {
                    let _ = stream.write_all(&(-status).to_le_bytes()).await;
                    return;
                }
            }
        }
    }
}

impl Connection {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().expect("server state")
    }

    fn handle(&mut self, payload: &[u8]) -> Next {
        let plaintext = match self.key.decrypt_from_client(payload) {
            Ok(plaintext) => plaintext,
            // A key this DC does not know (another DC's, or key id 0: a DH exchange starting):
            // Telegram answers -404.
            Err(CryptoError::UnknownKey) => return Next::TransportError(404),
            Err(_) => return Next::Drop,
        };
        let envelope = match wire::parse_envelope(&plaintext) {
            Ok(envelope) => envelope,
            Err(_) => return Next::Drop,
        };
        self.session_id = envelope.session_id;
        let (enforce, salt) = {
            let shared = self.lock();
            (shared.options.enforce_salt, shared.salt)
        };
        let message = envelope.message;
        if enforce && envelope.salt != salt && message.constructor() != wire::GET_FUTURE_SALTS {
            // One notice per request, so that the client can resend each under the new salt
            // (grammers does not track which requests a container carried).
            let inner = if message.constructor() == wire::MSG_CONTAINER {
                wire::unpack_container(&message.body).unwrap_or_default()
            } else {
                vec![message]
            };
            return Next::Reply(
                inner
                    .iter()
                    .filter(|m| m.constructor() != wire::MSGS_ACK)
                    .map(|m| wire::bad_server_salt(m.msg_id, m.seq_no, salt))
                    .collect(),
            );
        }
        let mut replies = Vec::new();
        // A dropped connection loses the replies not yet written, as on a real network.
        match self.process(message, &mut replies) {
            Ok(()) => Next::Reply(replies),
            Err(next) => next,
        }
    }

    /// Handles one message (recursively for containers and gzip).
    fn process(&mut self, message: Message, replies: &mut Vec<Vec<u8>>) -> Result<(), Next> {
        match message.constructor() {
            wire::MSG_CONTAINER => {
                let inner = wire::unpack_container(&message.body).map_err(|_| Next::Drop)?;
                for message in inner {
                    self.process(message, replies)?;
                }
                Ok(())
            }
            wire::GZIP_PACKED => {
                let body = wire::gunzip(&message.body).map_err(|_| Next::Drop)?;
                self.lock().gzip_messages += 1;
                self.process(Message { body, ..message }, replies)
            }
            wire::MSGS_ACK => Ok(()),
            wire::PING | wire::PING_DELAY_DISCONNECT => {
                let ping_id = i64::deserialize(&mut Cursor::from_slice(&message.body[4..]))
                    .map_err(|_| Next::Drop)?;
                replies.push(wire::pong(message.msg_id, ping_id));
                Ok(())
            }
            wire::GET_FUTURE_SALTS => {
                // get_future_salts#b921bd04 num:int; Telegram answers at most 64.
                let num = i32::deserialize(&mut Cursor::from_slice(&message.body[4..]))
                    .map_err(|_| Next::Drop)?;
                let salt = self.lock().salt;
                replies.push(wire::future_salts(
                    message.msg_id,
                    now() as i32,
                    salt,
                    num.clamp(1, 64),
                ));
                Ok(())
            }
            _ => self.query(message.msg_id, message.body, replies),
        }
    }

    /// An RPC call, possibly wrapped in invokeWithLayer / initConnection.
    fn query(
        &mut self,
        msg_id: i64,
        mut body: Vec<u8>,
        replies: &mut Vec<Vec<u8>>,
    ) -> Result<(), Next> {
        loop {
            body = match wire::constructor(&body) {
                wire::INVOKE_WITH_LAYER => {
                    wire::unwrap_invoke_with_layer(&body)
                        .map_err(|_| Next::Drop)?
                        .1
                }
                wire::INIT_CONNECTION => {
                    let (info, query) =
                        wire::unwrap_init_connection(&body).map_err(|_| Next::Drop)?;
                    self.lock().client_info = Some(info);
                    query
                }
                wire::GZIP_PACKED => {
                    self.lock().gzip_messages += 1;
                    wire::gunzip(&body).map_err(|_| Next::Drop)?
                }
                _ => break,
            };
        }
        let method = method_name(wire::constructor(&body));
        let mut shared = self.lock();
        shared.calls.push(Call {
            method: method.clone(),
            at: SystemTime::now(),
            body: body.clone(),
            dc: self.dc,
        });
        let fault = shared.faults.get_mut(&method).and_then(VecDeque::pop_front);
        let result = match &fault {
            Some(Fault::Silent) => return Ok(()),
            Some(Fault::DropBeforeProcessing) => return Err(Next::Drop),
            Some(Fault::Rpc { code, message }) => Err((*code, message.clone())),
            _ => match flood_wait(&shared, &method) {
                Some(seconds) => Err((420, format!("FLOOD_WAIT_{seconds}"))),
                None => {
                    let retry = match &fault {
                        Some(Fault::RetryPhones(phones)) => phones.clone(),
                        _ => Vec::new(),
                    };
                    dc::dispatch(self.dc, &mut shared, &method, &body, &retry)
                }
            },
        };
        drop(shared);
        if fault == Some(Fault::ApplyThenDrop) {
            return Err(Next::Drop);
        }
        let result = match result {
            Ok(bytes) => bytes,
            Err((code, message)) => wire::rpc_error(code, &message),
        };
        replies.push(wire::rpc_result(msg_id, &result));
        Ok(())
    }

    /// Wraps a reply body in an envelope and encrypts it for the client.
    fn seal(&mut self, body: &[u8]) -> Vec<u8> {
        let content_related = wire::constructor(body) != wire::MSGS_ACK;
        let seq_no = if content_related {
            self.content_messages += 1;
            self.content_messages * 2 - 1
        } else {
            self.content_messages * 2
        };
        let (salt, msg_id) = {
            let mut shared = self.lock();
            // Server message ids: time-based, increasing, ≡ 1 mod 4 for responses.
            let candidate = (now() << 32) | 1;
            let msg_id = if candidate > shared.last_msg_id {
                candidate
            } else {
                shared.last_msg_id + 4
            };
            shared.last_msg_id = msg_id;
            (shared.salt, msg_id)
        };
        let plaintext = wire::envelope(salt, self.session_id, msg_id, seq_no, body);
        self.key.encrypt_for_client(&plaintext)
    }
}

/// FLOOD_WAIT when a method's calls in the window exceed the rate limit.
fn flood_wait(shared: &Shared, method: &str) -> Option<i32> {
    let limit = match shared.options.method_rate_limits.get(method) {
        Some(limit) => *limit,
        None => shared.options.rate_limit?,
    };
    let since = SystemTime::now() - limit.window;
    let recent = shared
        .calls
        .iter()
        .filter(|c| c.method == method && c.at >= since)
        .count();
    (recent > limit.calls).then_some(limit.wait_seconds)
}

fn decode<T: Deserializable>(body: &[u8]) -> Result<T, (i32, String)> {
    T::deserialize(&mut Cursor::from_slice(&body[4..]))
        .map_err(|e| (400, format!("INPUT_REQUEST_INVALID ({e})")))
}

const METHODS: &[(u32, &str)] = &[
    (
        tl::functions::help::GetConfig::CONSTRUCTOR_ID,
        "help.getConfig",
    ),
    (
        tl::functions::updates::GetState::CONSTRUCTOR_ID,
        "updates.getState",
    ),
    (
        tl::functions::users::GetUsers::CONSTRUCTOR_ID,
        "users.getUsers",
    ),
    (
        tl::functions::contacts::ImportContacts::CONSTRUCTOR_ID,
        "contacts.importContacts",
    ),
    (
        tl::functions::contacts::DeleteByPhones::CONSTRUCTOR_ID,
        "contacts.deleteByPhones",
    ),
    (
        tl::functions::contacts::GetContacts::CONSTRUCTOR_ID,
        "contacts.getContacts",
    ),
    (
        tl::functions::contacts::GetContactIds::CONSTRUCTOR_ID,
        "contacts.getContactIDs",
    ),
    (
        tl::functions::contacts::DeleteContacts::CONSTRUCTOR_ID,
        "contacts.deleteContacts",
    ),
    (
        tl::functions::contacts::AddContact::CONSTRUCTOR_ID,
        "contacts.addContact",
    ),
    (
        tl::functions::contacts::ResetSaved::CONSTRUCTOR_ID,
        "contacts.resetSaved",
    ),
    (
        tl::functions::contacts::ResolveUsername::CONSTRUCTOR_ID,
        "contacts.resolveUsername",
    ),
    (
        tl::functions::auth::SendCode::CONSTRUCTOR_ID,
        "auth.sendCode",
    ),
    (tl::functions::auth::SignIn::CONSTRUCTOR_ID, "auth.signIn"),
    (
        tl::functions::account::GetPassword::CONSTRUCTOR_ID,
        "account.getPassword",
    ),
    (
        tl::functions::auth::CheckPassword::CONSTRUCTOR_ID,
        "auth.checkPassword",
    ),
    (tl::functions::auth::LogOut::CONSTRUCTOR_ID, "auth.logOut"),
];

/// Methods that work without a logged-in user.
const WITHOUT_LOGIN: &[&str] = &[
    "help.getConfig",
    "auth.sendCode",
    "auth.signIn",
    "account.getPassword",
    "auth.checkPassword",
];

pub fn method_name(constructor: u32) -> String {
    METHODS
        .iter()
        .chain(dc::METHODS)
        .find(|(id, _)| *id == constructor)
        .map_or_else(
            || format!("unknown#{constructor:08x}"),
            |(_, name)| (*name).to_owned(),
        )
}

/// The methods that need a logged-in account answer 401 without one, as Telegram does.
fn dispatch(
    shared: &mut Shared,
    method: &str,
    body: &[u8],
    retry: &[String],
) -> Result<Vec<u8>, (i32, String)> {
    let date = now() as i32;
    if !WITHOUT_LOGIN.contains(&method) && !shared.authorized {
        return Err((401, "AUTH_KEY_UNREGISTERED".into()));
    }
    Ok(match method {
        "auth.sendCode" => login::send_code(shared, &decode(body)?)?,
        "auth.signIn" => login::sign_in(shared, &decode(body)?)?,
        "account.getPassword" => login::get_password(shared)?,
        "auth.checkPassword" => login::check_password(shared, &decode(body)?)?,
        "auth.logOut" => login::log_out(shared)?,
        "help.getConfig" => account::config(date),
        "updates.getState" => tl::enums::updates::State::State(tl::types::updates::State {
            pts: 1,
            qts: 0,
            date,
            seq: 1,
            unread_count: 0,
        })
        .to_bytes(),
        "users.getUsers" => {
            let request: tl::functions::users::GetUsers = decode(body)?;
            let users: Vec<tl::enums::User> = request
                .id
                .iter()
                .filter(|id| matches!(id, tl::enums::InputUser::UserSelf))
                .map(|_| account::user(&shared.me, 0, true))
                .collect();
            users.to_bytes()
        }
        "contacts.importContacts" => {
            let request: tl::functions::contacts::ImportContacts = decode(body)?;
            let contacts: Vec<tl::types::InputPhoneContact> = request
                .contacts
                .into_iter()
                .map(|c| match c {
                    tl::enums::InputContact::InputPhoneContact(c) => c,
                })
                .collect();
            if let Some(refusal) = shared.account.refusal(contacts.iter().map(|c| &c.phone)) {
                return Err(refusal);
            }
            tl::enums::contacts::ImportedContacts::Contacts(shared.account.import(&contacts, retry))
                .to_bytes()
        }
        "contacts.deleteByPhones" => {
            let request: tl::functions::contacts::DeleteByPhones = decode(body)?;
            if let Some(refusal) = shared.account.refusal(&request.phones) {
                return Err(refusal);
            }
            shared.account.delete_by_phones(&request.phones);
            true.to_bytes()
        }
        "contacts.getContacts" => {
            let request: tl::functions::contacts::GetContacts = decode(body)?;
            shared.account.get_contacts(request.hash).to_bytes()
        }
        "contacts.getContactIDs" => {
            let ids: Vec<i32> = shared
                .account
                .contact_ids()
                .into_iter()
                .map(|id| id as i32)
                .collect();
            ids.to_bytes()
        }
        "contacts.deleteContacts" => {
            let request: tl::functions::contacts::DeleteContacts = decode(body)?;
            let removed = shared.account.delete_contacts(&request.id);
            account::empty_updates(removed, date)
        }
        "contacts.addContact" => {
            let request: tl::functions::contacts::AddContact = decode(body)?;
            let user = shared.account.add_contact(&request)?;
            account::empty_updates(vec![user], date)
        }
        "contacts.resolveUsername" => {
            let request: tl::functions::contacts::ResolveUsername = decode(body)?;
            shared
                .account
                .resolve_username(&request.username)?
                .to_bytes()
        }
        "contacts.resetSaved" => {
            shared.account.reset_saved();
            true.to_bytes()
        }
        _ => return Err((400, "INPUT_METHOD_INVALID".into())),
    })
}
