//! The integration tests, built as one binary so that it links once.

mod vectors;
