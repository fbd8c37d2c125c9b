//! The integration tests, built as one binary so that it links once.
#![allow(clippy::print_stdout, unreachable_pub)]

mod allocations;
mod binding;
mod doctor;
mod events;
mod frameworks;
mod hostile;
mod middleware;
#[cfg(feature = "postgres")]
mod postgres_store;
mod properties;
mod quick_start;
mod replay;
mod replay_guard;
mod secrets;
mod support;
mod vectors;
mod whatwg;
