//! The setup guide, `docs/TWILIO_WEBHOOK_SETUP.md`, as a documentation-only module: rendered by
//! rustdoc, and its Rust snippets compiled and run as doc tests.
#![doc = include_str!("../docs/TWILIO_WEBHOOK_SETUP.md")]
