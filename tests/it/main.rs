//! The integration tests, built as one binary so that it links once.
#![allow(clippy::print_stdout)]

mod secrets;
mod vectors;
