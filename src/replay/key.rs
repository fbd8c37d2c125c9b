//! [`ReplayKey`]: what identifies one signed webhook.

use std::{
    fmt,
    hash::{Hash, Hasher},
};

use sha2::{Digest, Sha256};

use crate::signature::Algorithm;

/// What identifies one signed webhook for the replay guard: a SHA-256 over the signature
/// algorithm and the received `X-Twilio-Signature` bytes, and in the
/// [delivery scope](crate::replay_guard::Scope::Delivery) the `I-Twilio-Idempotency-Token`.
///
/// Identical signed content has an identical signature, and the signature is what a sender
/// without the secret cannot change: any change to the URL or the signed parameters needs a
/// new one. So two requests with the same key are the same webhook, however else they differ
/// (unsigned headers, a port spelling the verifier tolerates, a parameter pair split at
/// another boundary that concatenates to the same signed string). Nothing the request claims
/// (its `AccountSid`, say) is part of the key: a claim the signature does not pin down would
/// let a copy dodge it. The signature header is canonical base64 (the verifier refuses any
/// other spelling), so its bytes are the signature.
///
/// The raw signature is never stored: only this hash is, and `Debug` shows its first eight
/// bytes in hex.
///
/// ```
/// use tower_twilio::{replay::ReplayKey, signature::Algorithm};
///
/// let key = ReplayKey::new(Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
/// let same = ReplayKey::new(Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
/// let delivery = ReplayKey::for_delivery(Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=", b"idem-1");
/// assert_eq!(key, same);
/// assert_ne!(key, delivery);
/// assert!(!format!("{key:?}").contains("RSOYDt4T"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReplayKey([u8; 32]);

/// Hashes the first eight bytes only: they are a SHA-256 output already, so two keys share
/// them only by a 64-bit collision, which no one can aim at many keys at once. A table keyed
/// on them must still hash them with a secret (the memory store uses std's `RandomState`):
/// the bytes themselves are public, and a sender choosing a delivery token can grind keys
/// whose low bits pick one bucket.
impl Hash for ReplayKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (first, _) = self.0.split_first_chunk::<8>().expect("32 bytes");
        state.write_u64(u64::from_le_bytes(*first));
    }
}

impl ReplayKey {
    /// The key of a webhook signed with `algorithm`, carrying the header value `signature`:
    /// the same signature is the same webhook (the content scope).
    pub fn new(algorithm: Algorithm, signature: &[u8]) -> Self {
        Self::hash(b'c', algorithm, signature, None)
    }

    /// The key of one delivery of a webhook: the same signature with the same
    /// `I-Twilio-Idempotency-Token` value `token` (the delivery scope). Never equal to a
    /// content-scope key.
    pub fn for_delivery(algorithm: Algorithm, signature: &[u8], token: &[u8]) -> Self {
        Self::hash(b'd', algorithm, signature, Some(token))
    }

    /// The key under which a store counts the deliveries of the webhook signed with
    /// `signature` (see [`ReplayStore::claim_delivery`](super::ReplayStore::claim_delivery)):
    /// never equal to a content or a delivery key.
    pub fn deliveries(algorithm: Algorithm, signature: &[u8]) -> Self {
        Self::hash(b'n', algorithm, signature, None)
    }

    fn hash(scope: u8, algorithm: Algorithm, signature: &[u8], token: Option<&[u8]>) -> Self {
        let mut hash = Sha256::new();
        // Domain separation and prefix-free lengths: no two different inputs hash the same
        // bytes. A content key over an HMAC-SHA1 signature is 52 bytes: one SHA-256 block.
        hash.update(b"tower-twilio replay 2");
        hash.update([scope]);
        hash.update([match algorithm {
            Algorithm::HmacSha1 => 1,
            Algorithm::HmacSha256 => 2,
        }]);
        update_with_length(&mut hash, signature);
        if let Some(token) = token {
            update_with_length(&mut hash, token);
        }
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

/// `bytes` after its length as a LEB128 varint (one byte up to 127).
fn update_with_length(hash: &mut Sha256, bytes: &[u8]) {
    let mut length = bytes.len() as u64;
    let mut encoded = [0; 10];
    let mut used = 0;
    loop {
        let low = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            encoded[used] = low;
            used += 1;
            break;
        }
        encoded[used] = low | 0x80;
        used += 1;
    }
    hash.update(&encoded[..used]);
    hash.update(bytes);
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
    fn every_part_changes_the_key() {
        let base = ReplayKey::new(Algorithm::HmacSha1, SIG);
        let variants = [
            ReplayKey::new(Algorithm::HmacSha256, SIG),
            ReplayKey::new(Algorithm::HmacSha1, b"RSOYDt4T1cUTdK1PDd93/VVr8B9="),
            ReplayKey::for_delivery(Algorithm::HmacSha1, SIG, b""),
            ReplayKey::for_delivery(Algorithm::HmacSha1, SIG, b"idem-1"),
            ReplayKey::deliveries(Algorithm::HmacSha1, SIG),
        ];
        for variant in variants {
            assert_ne!(base, variant);
        }
        assert_ne!(
            ReplayKey::for_delivery(Algorithm::HmacSha1, SIG, b"idem-1"),
            ReplayKey::for_delivery(Algorithm::HmacSha1, SIG, b"idem-2")
        );
        assert_eq!(base, ReplayKey::new(Algorithm::HmacSha1, SIG));
    }

    #[test]
    fn the_boundary_between_signature_and_token_is_not_ambiguous() {
        // Without length prefixes "abc" + "d" and "ab" + "cd" would hash the same bytes.
        let a = ReplayKey::for_delivery(Algorithm::HmacSha1, b"abc", b"d");
        let b = ReplayKey::for_delivery(Algorithm::HmacSha1, b"ab", b"cd");
        assert_ne!(a, b);
    }

    #[test]
    fn long_inputs_have_their_own_length_encoding() {
        let long = vec![b'a'; 300];
        let a = ReplayKey::for_delivery(Algorithm::HmacSha1, &long, b"x");
        let b = ReplayKey::for_delivery(Algorithm::HmacSha1, &long[..299], b"ax");
        assert_ne!(a, b);
    }

    /// The bytes hashed are the documented ones, for a short input and a long one: keys stay
    /// the same across versions and instances (a shared store names its entries by them).
    /// Expected values from Python's hashlib over the same bytes.
    #[test]
    fn keys_are_the_sha256_of_their_documented_input() {
        let content = ReplayKey::new(Algorithm::HmacSha1, SIG);
        assert_eq!(
            content.to_hex(),
            "cd6af31342c80a277d9a1fdc15222d0c07427bf62df2f8c1b067ffc3ab7b5c65"
        );
        let long = ReplayKey::for_delivery(Algorithm::HmacSha1, SIG, &[b'x'; 200]);
        assert_eq!(
            long.to_hex(),
            "99413abb6f4cf815f909fda65afea88436d93bbf1c0a2ab776d902504a5297e2"
        );
    }

    #[test]
    fn debug_and_hex_never_show_the_signature() {
        let key = ReplayKey::new(Algorithm::HmacSha1, SIG);
        let shown = format!("{key:?} {}", key.to_hex());
        assert!(!shown.contains("RSOYDt4T"), "{shown}");
        assert!(!shown.contains(&hex::encode(SIG)), "{shown}");
        assert_eq!(key.to_hex().len(), 64);
    }
}
