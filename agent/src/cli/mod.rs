//! The `pydeep` command line: its options ([`options`]), and the thin
//! drivers each subcommand runs over the recording layer, with the exit codes
//! and signals they share.

pub mod commands;
pub mod exit;
pub mod exports;
pub mod info_json;
pub mod live_top;
pub mod live_views;
pub mod one_shot;
pub mod options;
pub mod session;
pub mod signals;
pub mod status;
