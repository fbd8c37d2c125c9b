//! The example server's tests, one binary: scenarios against SQLite and PostgreSQL, and the
//! inspector page in a real browser.
#![allow(clippy::print_stdout, unreachable_pub, missing_docs)]

mod support;

mod inspector;
mod scenarios;
