//! The example server's tests, one binary: scenarios against SQLite and PostgreSQL, and the
//! inspector page in a real browser.
#![allow(clippy::print_stdout, unreachable_pub, missing_docs)]

mod support;

mod accounts;
mod admin;
mod delivery;
mod doctor;
mod failures;
#[cfg(unix)]
mod file_modes;
mod flood;
mod guide;
mod inspector;
mod log_bounds;
mod metrics;
mod scenarios;
#[cfg(feature = "sentry")]
mod sentry;
mod signing_tool;
mod tenants;
mod voice;
