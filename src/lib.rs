//! contactsyncd keeps a messenger contact list equal to a vCard address book.
//!
//! Pure modules (no I/O): [`vcard`], [`username`], [`phone`], [`contact`], [`diff`], [`batch`]. Modules
//! that touch the outside world: [`config`] (reads its file), [`source`] (walks and reads the
//! file system), [`store`] (SQLite), [`backend`] (the network), [`sync`] (one pass over all
//! of them), [`cli`] (prints).
#![deny(clippy::unwrap_used, clippy::expect_used)]

/// The Backend trait, its answers, and retry policy.
pub mod backend;
/// Plan → batches of at most batch_size, client_ids assigned.
pub mod batch;
/// Subcommands and their output.
pub mod cli;
/// The TOML configuration: schema, defaults, located errors.
pub mod config;
/// Card → messenger contact (names, phones, filters); all cards → the desired set.
pub mod contact;
/// A contact's key: `+E164` or `@username`.
pub mod contact_key;
/// `contactsyncd run`: watcher, signals, systemd notifications around sync passes.
pub mod daemon;
/// Desired set × mirror → sorted plan; the deletion guard.
pub mod diff;
/// The remote's contacts as vCard 4.0 files (`remote export`).
pub mod export;
/// Named crash points for the crash tests (empty without the `failpoints` feature).
pub mod failpoint;
/// Raw TEL value → E.164, and redaction for logs.
pub mod phone;
/// Progress of a long `sync --once` on a terminal.
pub mod progress;
/// Opening only regular files, never blocking: cards and secret files.
pub mod regular_file;
/// Finding the vCard files of a source; the incremental scan.
pub mod source;
/// The state database: fingerprints, mirror, outbox, history.
pub mod store;
/// One full pass: scan, plan, outbox, send, apply.
pub mod sync;
/// Telegram usernames in cards: the forms exporters write them in, Telegram's rules.
pub mod username;
/// Bytes → cards: the pre-pass and calcard, one card at a time.
pub mod vcard;
