//! Shared by the fuzz targets: the input format and a fixed secret.
//!
//! Structured targets read their input as fields separated by the byte `0xFF`, which never
//! occurs in UTF-8, so `fuzz/seed.py` can write readable seeds and the fuzzer can still put
//! any other byte (invalid UTF-8 included) into any field.
#![allow(dead_code)]

/// The field separator.
pub const SEP: u8 = 0xFF;

/// The input split into fields; a missing field is `None`, an empty one `Some(b"")`.
pub struct Fields<'a> {
    parts: Vec<&'a [u8]>,
}

impl<'a> Fields<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            parts: data.split(|&b| b == SEP).collect(),
        }
    }

    pub fn get(&self, index: usize) -> Option<&'a [u8]> {
        self.parts.get(index).copied()
    }

    /// Field `index`, or empty when missing.
    pub fn bytes(&self, index: usize) -> &'a [u8] {
        self.get(index).unwrap_or_default()
    }

    /// Field `index` as text, invalid UTF-8 replaced.
    pub fn text(&self, index: usize) -> String {
        String::from_utf8_lossy(self.bytes(index)).into_owned()
    }

    /// The fields from `index` on.
    pub fn rest(&self, index: usize) -> &[&'a [u8]] {
        self.parts.get(index..).unwrap_or_default()
    }
}

/// The secret the round-trip checks sign with.
pub const TOKEN: &[u8] = b"0123456789abcdef0123456789abcdef";

pub const FORM: &[u8] = b"application/x-www-form-urlencoded";
