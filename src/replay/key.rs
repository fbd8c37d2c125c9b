//! [`ReplayKey`]: what identifies one signed webhook.

use std::{
    fmt,
    hash::{Hash, Hasher},
};

use sha2::{Digest, Sha256};

use crate::signature::Algorithm;

/// What identifies one signed webhook for the replay guard: a SHA-256 over the account, the
/// signature algorithm and the received `X-Twilio-Signature` bytes.
///
/// Identical signed content has an identical signature, and the signature is what a sender
/// without the secret cannot change: any change to the URL or the signed parameters needs a
/// new one. So two requests with the same key are the same webhook, however else they differ
/// (unsigned headers, a port spelling the verifier tolerates). The signature header is
/// canonical base64 (the verifier refuses any other spelling), so its bytes are the signature.
///
/// The raw signature is never stored: only this hash is, and `Debug` shows its first eight
/// bytes in hex.
///
/// ```
/// use tower_twilio::{replay::ReplayKey, signature::Algorithm};
///
/// let key = ReplayKey::new("AC123", Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
/// let same = ReplayKey::new("AC123", Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
/// let other_account = ReplayKey::new("AC999", Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
/// assert_eq!(key, same);
/// assert_ne!(key, other_account);
/// assert!(!format!("{key:?}").contains("RSOYDt4T"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReplayKey([u8; 32]);

/// Hashes the first eight bytes only: they are a SHA-256 output already.
impl Hash for ReplayKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (first, _) = self.0.split_first_chunk::<8>().expect("32 bytes");
        state.write_u64(u64::from_le_bytes(*first));
    }
}

impl ReplayKey {
    /// The key of a webhook of `account` (its `AccountSid`, or whatever names the secret's
    /// owner; empty when unknown), signed with `algorithm`, carrying the header value
    /// `signature`.
    pub fn new(account: &str, algorithm: Algorithm, signature: &[u8]) -> Self {
        let mut hash = Sha256::new();
        // Domain separation and length prefixes: no two different triples hash the same input.
        hash.update(b"tower-twilio replay key v1\0");
        hash.update((account.len() as u64).to_be_bytes());
        hash.update(account.as_bytes());
        hash.update([match algorithm {
            Algorithm::HmacSha1 => 1,
            Algorithm::HmacSha256 => 2,
        }]);
        hash.update((signature.len() as u64).to_be_bytes());
        hash.update(signature);
        Self(hash.finalize().into())
    }

    /// The 32 bytes of the hash.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash as 64 lowercase hex digits (the Redis store's key name uses it).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ReplayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayKey({}…)", hex::encode(&self.0[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &[u8] = b"RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    #[test]
    fn every_part_of_the_triple_changes_the_key() {
        let base = ReplayKey::new("AC1", Algorithm::HmacSha1, SIG);
        let variants = [
            ReplayKey::new("AC2", Algorithm::HmacSha1, SIG),
            ReplayKey::new("", Algorithm::HmacSha1, SIG),
            ReplayKey::new("AC1", Algorithm::HmacSha256, SIG),
            ReplayKey::new("AC1", Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B9="),
        ];
        for variant in variants {
            assert_ne!(base, variant);
        }
        assert_eq!(base, ReplayKey::new("AC1", Algorithm::HmacSha1, SIG));
    }

    #[test]
    fn the_boundary_between_account_and_signature_is_not_ambiguous() {
        // Without length prefixes "AC1" + "2abc" and "AC12" + "abc" would hash the same bytes.
        let a = ReplayKey::new("AC1", Algorithm::HmacSha1, b"2abc");
        let b = ReplayKey::new("AC12", Algorithm::HmacSha1, b"abc");
        assert_ne!(a, b);
    }

    #[test]
    fn debug_and_hex_never_show_the_signature() {
        let key = ReplayKey::new("AC1", Algorithm::HmacSha1, SIG);
        let shown = format!("{key:?} {}", key.to_hex());
        assert!(!shown.contains("RSOYDt4T"), "{shown}");
        assert!(!shown.contains(&hex::encode(SIG)), "{shown}");
        assert_eq!(key.to_hex().len(), 64);
    }
}
