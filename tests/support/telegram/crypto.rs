//! MTProto 2.0 encryption from the server's side of the wire.
//!
//! grammers-crypto only encrypts client→server (x = 0) and decrypts server→client (x = 8);
//! a server needs the other two directions, and the key derivation helpers are private.

use grammers_crypto::aes::{ige_decrypt, ige_encrypt};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// An authorization key both ends know (seeded, so the DH exchange is skipped).
#[derive(Clone)]
pub struct ServerKey {
    data: [u8; 256],
    key_id: [u8; 8],
}

#[derive(Debug, PartialEq, Eq)]
pub enum CryptoError {
    /// Shorter than key id + msg key, or not a whole number of AES blocks.
    BadLength,
    /// Encrypted with another key (or plain: key id 0, a DH exchange starting).
    UnknownKey,
    /// The message key does not match the decrypted content.
    BadMsgKey,
}

impl ServerKey {
    pub fn new(data: [u8; 256]) -> Self {
        let sha = Sha1::digest(data);
        let mut key_id = [0; 8];
        key_id.copy_from_slice(&sha[12..20]);
        Self { data, key_id }
    }

    pub fn bytes(&self) -> [u8; 256] {
        self.data
    }

    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    /// `key_id | msg_key | ciphertext` from a client → the plaintext (with its padding).
    pub fn decrypt_from_client(&self, buffer: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if buffer.len() < 24 || !(buffer.len() - 24).is_multiple_of(16) {
            return Err(CryptoError::BadLength);
        }
        if buffer[..8] != self.key_id {
            return Err(CryptoError::UnknownKey);
        }
        let mut msg_key = [0; 16];
        msg_key.copy_from_slice(&buffer[8..24]);
        let (key, iv) = derive(&self.data, &msg_key, 0);
        let mut plaintext = buffer[24..].to_vec();
        ige_decrypt(&mut plaintext, &key, &iv);
        if message_key(&self.data, &plaintext, 0) != msg_key {
            return Err(CryptoError::BadMsgKey);
        }
        Ok(plaintext)
    }

    /// A plaintext for a client → `key_id | msg_key | ciphertext`, padded with 12 to 1024
    /// random bytes to a multiple of 16.
    pub fn encrypt_for_client(&self, plaintext: &[u8]) -> Vec<u8> {
        let padding = 16 + (16 - plaintext.len() % 16);
        let mut padded = plaintext.to_vec();
        padded.extend((0..padding).map(|_| fastrand::u8(..)));
        let msg_key = message_key(&self.data, &padded, 8);
        let (key, iv) = derive(&self.data, &msg_key, 8);
        ige_encrypt(&mut padded, &key, &iv);
        let mut out = Vec::with_capacity(24 + padded.len());
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&msg_key);
        out.extend_from_slice(&padded);
        out
    }
}

/// msg_key = substr(SHA256(substr(auth_key, 88 + x, 32) + plaintext), 8, 16)
fn message_key(auth_key: &[u8; 256], plaintext: &[u8], x: usize) -> [u8; 16] {
    let large = Sha256::new()
        .chain_update(&auth_key[88 + x..88 + x + 32])
        .chain_update(plaintext)
        .finalize();
    let mut key = [0; 16];
    key.copy_from_slice(&large[8..24]);
    key
}

/// The AES key and IV for a message key; x = 0 client→server, x = 8 server→client.
fn derive(auth_key: &[u8; 256], msg_key: &[u8; 16], x: usize) -> ([u8; 32], [u8; 32]) {
    let a = Sha256::new()
        .chain_update(msg_key)
        .chain_update(&auth_key[x..x + 36])
        .finalize();
    let b = Sha256::new()
        .chain_update(&auth_key[40 + x..40 + x + 36])
        .chain_update(msg_key)
        .finalize();
    let mut key = [0; 32];
    key[..8].copy_from_slice(&a[..8]);
    key[8..24].copy_from_slice(&b[8..24]);
    key[24..].copy_from_slice(&a[24..32]);
    let mut iv = [0; 32];
    iv[..8].copy_from_slice(&b[..8]);
    iv[8..24].copy_from_slice(&a[8..24]);
    iv[24..].copy_from_slice(&b[24..32]);
    (key, iv)
}
