//! MTProto framing and the service messages the server reads and writes.

use std::io::Read;

use grammers_tl_types::deserialize::Cursor;
use grammers_tl_types::{Deserializable, Serializable};

pub const MSG_CONTAINER: u32 = 0x73f1_f8dc;
pub const GZIP_PACKED: u32 = 0x3072_cfa1;
pub const MSGS_ACK: u32 = 0x62d6_b459;
pub const PING: u32 = 0x7abe_77ec;
pub const PING_DELAY_DISCONNECT: u32 = 0xf342_7b8c;
pub const INVOKE_WITH_LAYER: u32 = 0xda9b_0d0d;
pub const INIT_CONNECTION: u32 = 0xc1cd_5ea9;
pub const GET_FUTURE_SALTS: u32 = 0xb921_bd04;
const RPC_RESULT: u32 = 0xf35c_6d01;
const RPC_ERROR: u32 = 0x2144_ca19;
const PONG: u32 = 0x3477_73c5;
const BAD_SERVER_SALT: u32 = 0xedab_447b;
const FUTURE_SALTS: u32 = 0xae50_0895;

/// The decrypted envelope of one client packet.
#[derive(Debug)]
pub struct Envelope {
    pub salt: i64,
    pub session_id: i64,
    pub message: Message,
}

/// One message: an id, a sequence number and a TL body.
#[derive(Debug, Clone)]
pub struct Message {
    pub msg_id: i64,
    pub seq_no: i32,
    pub body: Vec<u8>,
}

impl Message {
    pub fn constructor(&self) -> u32 {
        constructor(&self.body)
    }
}

pub fn constructor(body: &[u8]) -> u32 {
    body.get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

pub type WireResult<T> = Result<T, String>;

fn read<T: Deserializable>(cursor: &mut Cursor<'_>) -> WireResult<T> {
    T::deserialize(cursor).map_err(|e| format!("malformed message: {e}"))
}

/// `salt | session_id | msg_id | seq_no | len | body | padding`
pub fn parse_envelope(plaintext: &[u8]) -> WireResult<Envelope> {
    let mut cursor = Cursor::from_slice(plaintext);
    let salt = read::<i64>(&mut cursor)?;
    let session_id = read::<i64>(&mut cursor)?;
    let message = read_message(&mut cursor, plaintext)?;
    Ok(Envelope {
        salt,
        session_id,
        message,
    })
}

fn read_message(cursor: &mut Cursor<'_>, all: &[u8]) -> WireResult<Message> {
    let msg_id = read::<i64>(cursor)?;
    let seq_no = read::<i32>(cursor)?;
    let len = usize::try_from(read::<i32>(cursor)?).map_err(|_| "negative length".to_owned())?;
    let start = cursor.pos();
    let body = all
        .get(start..start + len)
        .ok_or_else(|| "message longer than its packet".to_owned())?
        .to_vec();
    let mut skip = vec![0; len];
    cursor
        .read_exact(&mut skip)
        .map_err(|e| format!("malformed message: {e}"))?;
    Ok(Message {
        msg_id,
        seq_no,
        body,
    })
}

/// `msg_container#73f1f8dc messages:vector<message>` → its messages.
pub fn unpack_container(body: &[u8]) -> WireResult<Vec<Message>> {
    let mut cursor = Cursor::from_slice(body);
    let _ = read::<u32>(&mut cursor)?;
    let count = read::<i32>(&mut cursor)?;
    (0..count)
        .map(|_| read_message(&mut cursor, body))
        .collect()
}

/// `gzip_packed#3072cfa1 packed_data:bytes` → the inner body.
pub fn gunzip(body: &[u8]) -> WireResult<Vec<u8>> {
    let mut cursor = Cursor::from_slice(body);
    let _ = read::<u32>(&mut cursor)?;
    let packed = read::<Vec<u8>>(&mut cursor)?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut out)
        .map_err(|e| format!("bad gzip: {e}"))?;
    Ok(out)
}

/// The bytes after a fixed-size prefix that a cursor has read.
pub fn rest<'a>(body: &'a [u8], cursor: &Cursor<'_>) -> &'a [u8] {
    &body[cursor.pos().min(body.len())..]
}

/// `invokeWithLayer#da9b0d0d layer:int query:!X` → (layer, query).
pub fn unwrap_invoke_with_layer(body: &[u8]) -> WireResult<(i32, Vec<u8>)> {
    let mut cursor = Cursor::from_slice(body);
    let _ = read::<u32>(&mut cursor)?;
    let layer = read::<i32>(&mut cursor)?;
    Ok((layer, rest(body, &cursor).to_vec()))
}

/// What `initConnection` says about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub api_id: i32,
    pub device_model: String,
    pub app_version: String,
}

/// `initConnection#c1cd5ea9 flags:# api_id:int device_model:string system_version:string
/// app_version:string system_lang_code:string lang_pack:string lang_code:string
/// proxy:flags.0?InputClientProxy params:flags.1?JSONValue query:!X` → (info, query).
pub fn unwrap_init_connection(body: &[u8]) -> WireResult<(ClientInfo, Vec<u8>)> {
    use grammers_tl_types::enums::{InputClientProxy, Jsonvalue};
    let mut cursor = Cursor::from_slice(body);
    let _ = read::<u32>(&mut cursor)?;
    let flags = read::<u32>(&mut cursor)?;
    let api_id = read::<i32>(&mut cursor)?;
    let device_model = read::<String>(&mut cursor)?;
    let _system_version = read::<String>(&mut cursor)?;
    let app_version = read::<String>(&mut cursor)?;
    for _ in 0..3 {
        read::<String>(&mut cursor)?;
    }
    if flags & 1 != 0 {
        read::<InputClientProxy>(&mut cursor)?;
    }
    if flags & 2 != 0 {
        read::<Jsonvalue>(&mut cursor)?;
    }
    Ok((
        ClientInfo {
            api_id,
            device_model,
            app_version,
        },
        rest(body, &cursor).to_vec(),
    ))
}

/// `rpc_result#f35c6d01 req_msg_id:long result:Object`
pub fn rpc_result(req_msg_id: i64, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + result.len());
    RPC_RESULT.serialize(&mut out);
    req_msg_id.serialize(&mut out);
    out.extend_from_slice(result);
    out
}

/// `rpc_error#2144ca19 error_code:int error_message:string`
pub fn rpc_error(code: i32, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    RPC_ERROR.serialize(&mut out);
    code.serialize(&mut out);
    message.to_owned().serialize(&mut out);
    out
}

/// `pong#347773c5 msg_id:long ping_id:long`
pub fn pong(msg_id: i64, ping_id: i64) -> Vec<u8> {
    let mut out = Vec::new();
    PONG.serialize(&mut out);
    msg_id.serialize(&mut out);
    ping_id.serialize(&mut out);
    out
}

/// `bad_server_salt#edab447b bad_msg_id:long bad_msg_seqno:int error_code:int new_server_salt:long`
pub fn bad_server_salt(bad_msg_id: i64, bad_msg_seqno: i32, new_salt: i64) -> Vec<u8> {
    let mut out = Vec::new();
    BAD_SERVER_SALT.serialize(&mut out);
    bad_msg_id.serialize(&mut out);
    bad_msg_seqno.serialize(&mut out);
    48i32.serialize(&mut out);
    new_salt.serialize(&mut out);
    out
}

/// `future_salts#ae500895 req_msg_id:long now:int salts:vector<future_salt>` (bare vector):
/// `count` consecutive hours, all under the server's one salt.
pub fn future_salts(req_msg_id: i64, now: i32, salt: i64, count: i32) -> Vec<u8> {
    let mut out = Vec::new();
    FUTURE_SALTS.serialize(&mut out);
    req_msg_id.serialize(&mut out);
    now.serialize(&mut out);
    count.serialize(&mut out);
    // Bare vector of bare `future_salt`s: neither the vector nor the items carry an id.
    for hour in 0..count {
        (now + hour * 3600).serialize(&mut out);
        (now + (hour + 1) * 3600).serialize(&mut out);
        salt.serialize(&mut out);
    }
    out
}

/// `salt | session_id | msg_id | seq_no | len | body`
pub fn envelope(salt: i64, session_id: i64, msg_id: i64, seq_no: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + body.len());
    salt.serialize(&mut out);
    session_id.serialize(&mut out);
    msg_id.serialize(&mut out);
    seq_no.serialize(&mut out);
    (body.len() as i32).serialize(&mut out);
    out.extend_from_slice(body);
    out
}
