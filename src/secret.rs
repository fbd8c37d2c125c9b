//! [`Secret`]: an auth token or SharedKey secret that never prints and is wiped on drop.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use hmac::Hmac;
use sha1::Sha1;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{
    ConfigError,
    signature::{Algorithm, MacOutput, finish, keyed},
};

/// A signing secret: a Twilio auth token or a SharedKey secret.
///
/// The bytes are used exactly as given (an auth token is *not* hex-decoded: Twilio keys the
/// HMAC with the 32 characters you see in the console). They are wiped from memory when the
/// last clone is dropped, and they never appear in `Debug` output, which prints
/// `Secret([redacted])`. There is no `Display` implementation.
///
/// Cloning is cheap (a reference count), so resolvers can hand out the same secret to every
/// request. Clones also share the HMAC key schedule, which is computed on first use and wiped
/// along with the bytes: verifying with a secret that lives across requests skips the two hash
/// blocks HMAC spends on its key each time.
///
/// ```
/// use tower_twilio::Secret;
///
/// let token = Secret::new("0123456789abcdef0123456789abcdef").unwrap();
/// assert_eq!(format!("{token:?}"), "Secret([redacted])");
/// assert!(Secret::new("").is_err());
/// ```
#[derive(Clone)]
pub struct Secret {
    inner: Arc<Inner>,
}

/// The secret and what is derived from it, shared by every clone.
struct Inner {
    bytes: Zeroizing<Box<[u8]>>,
    /// HMAC states with the key absorbed (the hash of `key ^ ipad` and of `key ^ opad`), as
    /// good as the key itself: the `zeroize` features of `hmac`, `sha1` and `sha2` wipe them
    /// on drop.
    hmac_sha1: OnceLock<Hmac<Sha1>>,
    hmac_sha256: OnceLock<Hmac<Sha256>>,
}

impl Secret {
    /// Wraps a secret.
    ///
    /// # Errors
    ///
    /// [`ConfigError::EmptySecret`] if `secret` is empty: an empty key would make every
    /// signature trivially computable, so it is refused rather than silently accepted.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, ConfigError> {
        // Copy into an exactly sized box, then wipe the whole original buffer (spare capacity
        // included) when `original` drops: `into_boxed_slice` could reallocate and free the old
        // buffer without wiping it.
        let original = Zeroizing::new(secret.into());
        let bytes = Zeroizing::new(Box::<[u8]>::from(original.as_slice()));
        if bytes.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                bytes,
                hmac_sha1: OnceLock::new(),
                hmac_sha256: OnceLock::new(),
            }),
        })
    }

    /// The secret's bytes, for computing an HMAC.
    ///
    /// Named loudly so that a reader of calling code sees where the secret leaves this type.
    pub fn expose_secret(&self) -> &[u8] {
        &self.inner.bytes
    }

    /// HMAC over `url ‖ canonical_params` with this secret, starting from its cached key
    /// schedule.
    pub(crate) fn mac(
        &self,
        algorithm: Algorithm,
        url: &[u8],
        canonical_params: &[u8],
    ) -> MacOutput {
        match algorithm {
            Algorithm::HmacSha1 => finish(self.hmac_sha1().clone(), url, canonical_params),
            Algorithm::HmacSha256 => finish(self.hmac_sha256().clone(), url, canonical_params),
        }
    }

    /// HMAC-SHA1 keyed with this secret, ready for data: clone it for each MAC.
    fn hmac_sha1(&self) -> &Hmac<Sha1> {
        self.inner
            .hmac_sha1
            .get_or_init(|| keyed(self.expose_secret()))
    }

    /// HMAC-SHA256 keyed with this secret, ready for data: clone it for each MAC.
    fn hmac_sha256(&self) -> &Hmac<Sha256> {
        self.inner
            .hmac_sha256
            .get_or_init(|| keyed(self.expose_secret()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl PartialEq for Secret {
    /// Compares in constant time (for secrets of equal length).
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.expose_secret().ct_eq(other.expose_secret()).into()
    }
}

impl Eq for Secret {}

/// A secret no account has, for the HMAC work an unknown account must cost (see the
/// middleware's equal-work rule in `docs/SECURITY.md`). As long as an auth token, and as
/// cached as one; what it verifies is never used.
pub(crate) fn dummy() -> &'static Secret {
    static DUMMY: OnceLock<Secret> = OnceLock::new();
    DUMMY.get_or_init(|| {
        Secret::new("equal-work-dummy-key-0123456789a").expect("a non-empty constant")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("s3cr3t-token-value").unwrap();
        let shown = format!("{secret:?} {secret:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn empty_secret_is_refused() {
        let error = Secret::new(Vec::new()).unwrap_err();
        assert_eq!(error, ConfigError::EmptySecret);
        assert_eq!(error.to_string(), "signing secret is empty");
    }

    #[test]
    fn clones_share_the_bytes() {
        let a = Secret::new("abc").unwrap();
        let b = a.clone();
        assert_eq!(a, b);
        assert_ne!(a, Secret::new("abd").unwrap());
        assert_eq!(b.expose_secret(), b"abc");
    }
}
