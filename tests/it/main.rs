//! The one integration-test binary: the library on real files, and the real binary.

mod bounded;
mod carddav;
mod carddav_offline;
mod change_pass;
mod cli;
mod cli_state;
mod config_files;
mod corpus;
mod crash_points;
mod cut_batches;
mod daemon;
#[path = "../support/dav.rs"]
mod dav;
mod dialects;
mod exit_codes;
mod fake_backend;
mod first_hour;
mod first_words;
mod model;
mod oauth;
mod readme;
mod robustness;
mod service;
mod support;
mod sync;
#[path = "../support/telegram/mod.rs"]
mod telegram;
mod telegram_backend;
mod telegram_server;
mod telegram_usernames;
mod under_change;
#[path = "../support/whapi.rs"]
mod whapi;
mod whapi_backend;
mod whapi_ownership;
