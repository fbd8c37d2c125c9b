//! The pure signing core: algorithms, the settings header, HMAC, and [`sign`].
//!
//! Nothing here does I/O or knows about tower. Twilio's algorithm, in full:
//!
//! 1. Start from the URL Twilio requested, exactly as sent (scheme, host, optional port, path,
//!    `?` and the raw query).
//! 2. For an `application/x-www-form-urlencoded` body, append every parameter *decoded*: the
//!    names sorted, and for each name its distinct values sorted, each emitted as
//!    `name ‖ value` with no separator. Nothing is appended for `GET` or for a body signed
//!    through `bodySHA256`.
//! 3. HMAC-SHA1 (or, for a SharedKey, the algorithm the settings header names) keyed with the
//!    UTF-8 bytes of the auth token, encoded as standard padded base64.
//!
//! ```
//! use tower_twilio::signature::{sign, Algorithm};
//!
//! // The example from Twilio's security documentation.
//! let params = [
//!     ("CallSid", "CA1234567890ABCDE"),
//!     ("Caller", "+14158675310"),
//!     ("Digits", "1234"),
//!     ("From", "+14158675310"),
//!     ("To", "+18005551212"),
//! ];
//! let signature = sign(
//!     b"12345",
//!     Algorithm::HmacSha1,
//!     "https://mycompany.com/myapp.php?foo=1&bar=2",
//!     params,
//! );
//! assert_eq!(signature, "GvWf1cFY/Q7PnoempGyD5oXAezc=");
//! ```

use std::{borrow::Cow, fmt};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::form::{self, Params, SortOrder};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The header Twilio adds to webhooks signed with a SharedKey:
/// `key=<SharedKey id>,algorithm=HMAC_SHA1|HMAC_SHA256`.
pub const SIGNATURE_SETTINGS_HEADER: &str = "x-twilio-webhooks-signature-settings";

/// The header that identifies one delivery, for de-duplicating Twilio's retries. Not signed.
pub const IDEMPOTENCY_TOKEN_HEADER: &str = "i-twilio-idempotency-token";

/// The query parameter that carries the SHA-256 of a non-form body.
pub const BODY_SHA256_PARAM: &str = "bodySHA256";

/// A signature algorithm Twilio uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC-SHA1: auth-token signatures, and SharedKeys configured for it.
    #[default]
    HmacSha1,
    /// HMAC-SHA256: SharedKeys configured for it.
    HmacSha256,
}

impl Algorithm {
    /// The name Twilio uses in the settings header (`HMAC_SHA1`, `HMAC_SHA256`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha1 => "HMAC_SHA1",
            Self::HmacSha256 => "HMAC_SHA256",
        }
    }

    /// Looks an algorithm up by its settings-header name, ignoring case as the official
    /// libraries do. Surrounding white space is *not* ignored here; [`SignatureSettings::parse`]
    /// trims it.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        // The official libraries upper-case with full Unicode rules (U+017F `ſ` becomes `S`);
        // do the same so that no spelling they accept is refused. Only non-ASCII names allocate.
        let name: Cow<'_, str> = if name.is_ascii() {
            Cow::Borrowed(name)
        } else {
            Cow::Owned(name.to_uppercase())
        };
        if name.eq_ignore_ascii_case("HMAC_SHA1") {
            Some(Self::HmacSha1)
        } else if name.eq_ignore_ascii_case("HMAC_SHA256") {
            Some(Self::HmacSha256)
        } else {
            None
        }
    }

    /// The length of the base64 signature this algorithm produces (28 or 44 characters).
    pub(crate) const fn encoded_len(self) -> usize {
        match self {
            Self::HmacSha1 => 28,
            Self::HmacSha256 => 44,
        }
    }

    const fn mac_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The parsed `X-Twilio-Webhooks-Signature-Settings` header.
///
/// Parsed as the official libraries parse it: split on `,`, split each part on its first `=`,
/// trim both sides; the first non-empty `algorithm` names the algorithm (upper-cased; absent or
/// empty means `HMAC_SHA1`), the first non-empty `key` names the SharedKey id. Any other part
/// is ignored. An algorithm this crate does not know is an error, never a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureSettings<'a> {
    key_id: Option<&'a str>,
    algorithm: Algorithm,
}

impl<'a> SignatureSettings<'a> {
    /// Parses the header's value.
    ///
    /// # Errors
    ///
    /// [`SettingsError::NotUtf8`] if the value is not UTF-8, and
    /// [`SettingsError::UnsupportedAlgorithm`] if it names an algorithm other than
    /// `HMAC_SHA1` or `HMAC_SHA256`.
    pub fn parse(value: &'a [u8]) -> Result<Self, SettingsError> {
        let value = std::str::from_utf8(value).map_err(|_| SettingsError::NotUtf8)?;
        let mut key_id = None;
        let mut algorithm = None;
        for part in value.split(',') {
            let Some((name, value)) = part.split_once('=') else {
                continue;
            };
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match name.trim() {
                "algorithm" if algorithm.is_none() => algorithm = Some(value),
                "key" if key_id.is_none() => key_id = Some(value),
                _ => {}
            }
        }
        let algorithm = match algorithm {
            None => Algorithm::HmacSha1,
            Some(name) => Algorithm::from_name(name).ok_or(SettingsError::UnsupportedAlgorithm)?,
        };
        Ok(Self { key_id, algorithm })
    }

    /// The SharedKey id (`key=`), if the header names one.
    pub const fn key_id(&self) -> Option<&'a str> {
        self.key_id
    }

    /// The algorithm the header names (`HMAC_SHA1` when it names none).
    pub const fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// Why a settings header could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingsError {
    /// The value is not UTF-8.
    NotUtf8,
    /// The value names an algorithm other than `HMAC_SHA1` or `HMAC_SHA256`.
    UnsupportedAlgorithm,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::NotUtf8 => "signature settings header is not UTF-8",
            Self::UnsupportedAlgorithm => {
                "signature settings header names an unsupported algorithm"
            }
        })
    }
}

impl std::error::Error for SettingsError {}

/// Computes the signature Twilio would send for a form-encoded (or parameter-less) request.
///
/// `url` is the full public URL, query included, exactly as Twilio requests it. `params`
/// are the *decoded* body parameters in any order, repeats allowed; they are sorted and
/// de-duplicated here as Twilio does. Pass no parameters for `GET` requests and for requests
/// signed through `bodySHA256` (see [`url_with_body_sha256`]).
///
/// Parameters are sorted by code point, which is also the order of their UTF-8 bytes.
///
/// This is what tests, the signing tool and users' own fixtures use to produce requests that
/// the verifier accepts.
pub fn sign<I, K, V>(secret: &[u8], algorithm: Algorithm, url: &str, params: I) -> String
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let params = Params::from_pairs(params);
    let mut canonical = Vec::new();
    form::canonicalize(&params, SortOrder::CodePoint, &mut canonical);
    let mac = compute_mac(secret, algorithm, url.as_bytes(), &canonical);
    base64::engine::general_purpose::STANDARD.encode(mac.as_slice())
}

/// The text Twilio computes the HMAC over for `url` and `params`: the URL, then for each
/// parameter name in ascending order each of its distinct values in ascending order, written as
/// `name ‖ value` with no separator. What [`sign`] signs; for comparing by hand (the signing
/// tool's `--explain`).
///
/// ```
/// use tower_twilio::signature::string_to_sign;
///
/// let text = string_to_sign("https://example.com/sms", [("To", "+1"), ("Body", "Hi")]);
/// assert_eq!(text, "https://example.com/smsBodyHiTo+1");
/// ```
pub fn string_to_sign<I, K, V>(url: &str, params: I) -> String
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut canonical = url.as_bytes().to_vec();
    form::canonicalize(
        &Params::from_pairs(params),
        SortOrder::CodePoint,
        &mut canonical,
    );
    // Built from `&str`s only, so it is UTF-8.
    String::from_utf8_lossy(&canonical).into_owned()
}

/// The lower-case hex SHA-256 of `body`: the value Twilio puts in the `bodySHA256` query
/// parameter of a non-form request.
fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Appends `bodySHA256=<hash of body>` to `url`'s query, as Twilio does before signing a
/// non-form (e.g. JSON) body. Sign the result with [`sign`] and no parameters.
pub fn url_with_body_sha256(url: &str, body: &[u8]) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}{BODY_SHA256_PARAM}={}",
        body_sha256_hex(body)
    )
}

/// A MAC output: 20 or 32 bytes, on the stack.
pub(crate) struct MacOutput {
    bytes: [u8; 32],
    len: usize,
}

impl MacOutput {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Whether `expected` is the lower-case hex SHA-256 of `body`, without allocating.
pub(crate) fn body_sha256_matches(body: &[u8], expected: &[u8]) -> bool {
    let mut hex = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(body), &mut hex).expect("32 bytes are 64 hex digits");
    hex == expected
}

/// HMAC over `url ‖ canonical_params` without concatenating them, keyed from scratch.
fn compute_mac(
    secret: &[u8],
    algorithm: Algorithm,
    url: &[u8],
    canonical_params: &[u8],
) -> MacOutput {
    match algorithm {
        Algorithm::HmacSha1 => finish(keyed::<Hmac<Sha1>>(secret), url, canonical_params),
        Algorithm::HmacSha256 => finish(keyed::<Hmac<Sha256>>(secret), url, canonical_params),
    }
}

/// An HMAC keyed with `key`, ready for data.
pub(crate) fn keyed<M: KeyInit>(key: &[u8]) -> M {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    M::new_from_slice(key).expect("HMAC takes any key length")
}

/// Feeds `url ‖ params` to an HMAC that already holds its key, and finishes it.
pub(crate) fn finish<M: Mac>(mut mac: M, url: &[u8], params: &[u8]) -> MacOutput {
    mac.update(url);
    mac.update(params);
    let tag = mac.finalize().into_bytes();
    let mut bytes = [0u8; 32];
    bytes[..tag.len()].copy_from_slice(&tag);
    MacOutput {
        bytes,
        len: tag.len(),
    }
}

/// A received `X-Twilio-Signature` value, decoded once so that every candidate comparison is
/// a constant-time comparison of raw MAC bytes.
///
/// Only the exact form Twilio sends is accepted: standard alphabet, `=` padding, the length the
/// algorithm produces, and canonical trailing bits. Those rules make "decode then compare
/// bytes" equivalent to comparing the header's bytes with the expected base64 text, which is
/// what every official library does.
pub(crate) struct ReceivedSignature {
    mac: [u8; 32],
    len: usize,
}

impl ReceivedSignature {
    /// Returns `None` when `header` cannot be a signature made with `algorithm`.
    pub(crate) fn parse(header: &[u8], algorithm: Algorithm) -> Option<Self> {
        if header.len() != algorithm.encoded_len() {
            return None;
        }
        let mut mac = [0u8; 32];
        // A 33-byte buffer guards against the decoder's own slack requirements; the length
        // check afterwards is what matters.
        let mut buffer = [0u8; 33];
        let len = base64::engine::general_purpose::STANDARD
            .decode_slice(header, &mut buffer)
            .ok()?;
        if len != algorithm.mac_len() {
            return None;
        }
        mac[..len].copy_from_slice(&buffer[..len]);
        Some(Self { mac, len })
    }

    /// Constant-time comparison with a computed MAC.
    pub(crate) fn matches(&self, computed: &MacOutput) -> bool {
        use subtle::ConstantTimeEq;
        self.mac[..self.len].ct_eq(computed.as_slice()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn docs_params(number: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CallSid", "CA1234567890ABCDE".to_owned()),
            ("Caller", number.to_owned()),
            ("Digits", "1234".to_owned()),
            ("From", number.to_owned()),
            ("To", "+18005551212".to_owned()),
        ]
    }

    // Twilio's documented examples with token 12345 (TWILIO_SPEC.md §2.1): the security
    // page's, and the one its SDKs' tests use.
    #[test]
    fn documented_examples() {
        for (number, expected) in [
            ("+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
            ("+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ] {
            let sig = sign(b"12345", Algorithm::HmacSha1, DOCS_URL, docs_params(number));
            assert_eq!(sig, expected, "{number}");
        }
    }

    #[test]
    fn example_signed_with_explicit_default_port() {
        let url = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let sig = sign(
            b"12345",
            Algorithm::HmacSha1,
            url,
            docs_params("+14158675309"),
        );
        assert_eq!(sig, "kvajT1Ptam85bY51eRf/AJRuM3w=");
    }

    #[test]
    fn repeated_keys_are_sorted_and_deduplicated() {
        let params = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ];
        let sig = sign(b"12345", Algorithm::HmacSha1, DOCS_URL, params);
        assert_eq!(sig, "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    }

    #[test]
    fn json_body_is_signed_through_its_hash() {
        let body = br#"{"property": "value", "boolean": true}"#;
        assert_eq!(
            body_sha256_hex(body),
            "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        let url = url_with_body_sha256(DOCS_URL, body);
        let no_params: [(&str, &str); 0] = [];
        assert_eq!(
            sign(b"12345", Algorithm::HmacSha1, &url, no_params),
            "a9nBmqA0ju/hNViExpshrM61xv4="
        );
    }

    #[test]
    fn url_with_body_sha256_starts_a_query_when_there_is_none() {
        let url = url_with_body_sha256("https://example.com/hook", b"{}");
        assert!(
            url.starts_with("https://example.com/hook?bodySHA256="),
            "{url}"
        );
        assert_eq!(url.len(), "https://example.com/hook?bodySHA256=".len() + 64);
    }

    #[test]
    fn sha256_signatures_are_44_characters() {
        let sig = sign(
            b"k",
            Algorithm::HmacSha256,
            "https://example.com/",
            [("a", "b")],
        );
        assert_eq!(sig.len(), 44);
        assert!(ReceivedSignature::parse(sig.as_bytes(), Algorithm::HmacSha256).is_some());
        assert!(ReceivedSignature::parse(sig.as_bytes(), Algorithm::HmacSha1).is_none());
    }

    // Settings header rules (TWILIO_SPEC.md §6), one row per rule.
    #[test]
    fn settings_header_table() {
        use Algorithm::*;
        let ok: &[(&str, Option<&str>, Algorithm)] = &[
            (
                "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
                Some("webhooks_sharedkey_1"),
                HmacSha256,
            ),
            ("algorithm=HMAC_SHA1,key=k", Some("k"), HmacSha1),
            // white space around names and values is trimmed; case is ignored
            (" key = k , algorithm = hmac_sha256 ", Some("k"), HmacSha256),
            // absent or empty algorithm means HMAC_SHA1
            ("key=k", Some("k"), HmacSha1),
            ("key=k,algorithm=", Some("k"), HmacSha1),
            ("", None, HmacSha1),
            // the first non-empty value wins; an empty one is skipped
            (
                "algorithm=,algorithm=HMAC_SHA256,algorithm=HMAC_SHA1",
                None,
                HmacSha256,
            ),
            // parts without `=` and unknown names are ignored
            ("key=k,junk,other=1", Some("k"), HmacSha1),
            // only the first `=` splits
            ("key=a=b", Some("a=b"), HmacSha1),
        ];
        for (value, key, algorithm) in ok {
            let parsed = SignatureSettings::parse(value.as_bytes())
                .unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert_eq!(parsed.key_id(), *key, "{value:?}");
            assert_eq!(parsed.algorithm(), *algorithm, "{value:?}");
        }
        let rejected: &[(&[u8], SettingsError)] = &[
            (
                b"key=k,algorithm=HMAC_MD5",
                SettingsError::UnsupportedAlgorithm,
            ),
            (b"algorithm=SHA256", SettingsError::UnsupportedAlgorithm),
            (b"algorithm=HMAC_SHA1X", SettingsError::UnsupportedAlgorithm),
            (b"key=\xff,algorithm=HMAC_SHA1", SettingsError::NotUtf8),
        ];
        for (value, error) in rejected {
            assert_eq!(SignatureSettings::parse(value), Err(*error), "{value:?}");
        }
    }

    #[test]
    fn algorithm_names_follow_unicode_upper_casing() {
        // Python's `str.upper` and JavaScript's `toUpperCase` both map U+017F to `S`.
        assert_eq!(
            Algorithm::from_name("hmac_\u{17f}ha1"),
            Some(Algorithm::HmacSha1)
        );
        assert_eq!(Algorithm::from_name("HMAC_SHA1 "), None);
    }

    // The received header is compared byte for byte with what Twilio would send.
    #[test]
    fn received_signature_accepts_only_the_exact_encoding() {
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert!(ReceivedSignature::parse(good.as_bytes(), Algorithm::HmacSha1).is_some());
        for bad in [
            "",
            " RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8= ",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8",
            "RSOYDt4T1cUTdK1PDd93_VVr8B8=",
            "RSOYDt4T1cUTdK1PDd93/VVr8B9=", // non-canonical trailing bits
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=,RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "11f6ad8ec52a2984abaafd7c3b516503785c2072",
        ] {
            assert!(
                ReceivedSignature::parse(bad.as_bytes(), Algorithm::HmacSha1).is_none(),
                "{bad:?}"
            );
        }
    }
}
