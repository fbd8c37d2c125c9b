//! Verify Twilio webhook signatures (`X-Twilio-Signature`) in Tower services.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod form;
mod secret;
pub mod signature;
pub mod url;
pub mod verify;

pub use secret::{EmptySecret, Secret};
