//! contactsyncd keeps a messenger contact list equal to a vCard address book.
//!
//! Pure modules (no I/O): [`vcard`], [`phone`], [`contact`]. Modules that touch the outside
//! world: [`config`] (reads its file), [`source`] (walks the file system), [`cli`] (prints).
#![deny(clippy::unwrap_used, clippy::expect_used)]

/// Subcommands and their output.
pub mod cli;
/// The TOML configuration: schema, defaults, located errors.
pub mod config;
/// Card → messenger contact (names, phones, filters); all cards → the desired set.
pub mod contact;
/// Raw TEL value → E.164, and redaction for logs.
pub mod phone;
/// Finding the vCard files of a source.
pub mod source;
/// Bytes → cards: the pre-pass and calcard, one card at a time.
pub mod vcard;
