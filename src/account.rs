//! Which account a request belongs to: the one `AccountSid` it names, checked before any
//! credential lookup, and bound to the credentials that verify it.
//!
//! Pure: no I/O, no tower types.
//!
//! A request names its account in up to three places: the form body, the query (every `GET`
//! webhook, and any URL configured with one), and the top level of a JSON body. The
//! application reads whichever its extractor reads (`Form<HashMap<_, _>>` keeps the *last* of
//! repeated pairs, a hand-written loop often the first), so the layer accepts a request only
//! when every one of those places that is present says the same thing:
//!
//! ```
//! use tower_twilio::{account::{AccountError, named_account_sid}, form::Params};
//!
//! const A: &str = "AC0123456789abcdef0123456789abcdef";
//! const B: &str = "ACfedcba9876543210fedcba9876543210";
//!
//! let one = Params::parse(format!("AccountSid={A}&Body=hi&AccountSid={A}").as_bytes());
//! assert_eq!(named_account_sid(Some(&one), None, None), Ok(Some(A.into())));
//!
//! let two = Params::parse(format!("AccountSid={B}&AccountSid={A}").as_bytes());
//! assert_eq!(named_account_sid(Some(&two), None, None), Err(AccountError::Conflicting));
//!
//! let json = format!(r#"{{"AccountSid":"{A}"}}"#);
//! let query = format!("AccountSid={B}");
//! assert_eq!(
//!     named_account_sid(None, Some(&query), Some(json.as_bytes())),
//!     Err(AccountError::Conflicting)
//! );
//!
//! let short = Params::parse(b"AccountSid=AC0123");
//! assert_eq!(named_account_sid(Some(&short), None, None), Err(AccountError::Invalid));
//! ```
//!
//! [`bind_account`] then ties that account to the credentials that verified the request.

use std::{borrow::Cow, fmt, sync::LazyLock};

use memchr::memmem::Finder;
use serde_core::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::form::{self, Params};

/// The parameter that names the account.
pub const ACCOUNT_SID_PARAM: &str = "AccountSid";

/// The longest SharedKey id accepted. Twilio documents no format; ids seen in the wild are
/// `webhooks_sharedkey_<hex>`, well under this.
pub const MAX_SHARED_KEY_ID_LEN: usize = 128;

/// Why the account a request names cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccountError {
    /// An `AccountSid` is not `AC` followed by 32 hexadecimal digits.
    Invalid,
    /// Two `AccountSid`s differ (repeated, or query against body).
    Conflicting,
    /// The request names an account other than the one the verifying credentials belong to,
    /// or is SharedKey-signed with credentials that name no account.
    Mismatch,
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Invalid => "malformed AccountSid",
            Self::Conflicting => "request names more than one AccountSid",
            Self::Mismatch => "request names an account the credentials do not belong to",
        })
    }
}

impl std::error::Error for AccountError {}

/// Whether `sid` is an account SID as Twilio issues them: `AC` and 32 hexadecimal digits.
///
/// ```
/// use tower_twilio::account::is_account_sid;
///
/// assert!(is_account_sid("AC0123456789abcdef0123456789abcdef"));
/// assert!(!is_account_sid("AC0123"));
/// assert!(!is_account_sid("SK0123456789abcdef0123456789abcdef"));
/// ```
pub fn is_account_sid(sid: &str) -> bool {
    match sid.as_bytes() {
        // Every digit checked, without stopping at a bad one: the loop has no branch, and the
        // compiler checks the 32 bytes a vector at a time.
        [b'A', b'C', hex @ ..] if hex.len() == 32 => hex
            .iter()
            .fold(true, |all, digit| all & digit.is_ascii_hexdigit()),
        _ => false,
    }
}

/// Whether `key_id` is a SharedKey id this layer will look up: 1 to
/// [`MAX_SHARED_KEY_ID_LEN`] bytes of `A-Z a-z 0-9 _ - . :`. Twilio documents no format, so
/// the set is conservative: it accepts every id seen so far and nothing that could confuse a
/// log line, a cache key or a database query.
///
/// ```
/// use tower_twilio::account::is_shared_key_id;
///
/// assert!(is_shared_key_id("webhooks_sharedkey_03eec477bc231899"));
/// assert!(!is_shared_key_id("key with space"));
/// assert!(!is_shared_key_id(""));
/// ```
pub fn is_shared_key_id(key_id: &str) -> bool {
    !key_id.is_empty()
        && key_id.len() <= MAX_SHARED_KEY_ID_LEN
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The one account a request names, from every place it can name one: the form `params`
/// (every value), the raw `query` (every value), and the top level of a `json` body (every
/// `AccountSid` key; a body that is not a JSON object, such as an Event Streams array, names
/// none). `Ok(None)` when none of them names one. The answer borrows from the inputs where it
/// can: nothing is allocated unless the value had to be decoded.
///
/// # Errors
///
/// [`AccountError::Invalid`] when a value is not [an account SID](is_account_sid) (or a JSON
/// value is not a string), [`AccountError::Conflicting`] when two values differ.
pub fn named_account_sid<'a>(
    params: Option<&'a Params>,
    query: Option<&'a str>,
    json: Option<&'a [u8]>,
) -> Result<Option<Cow<'a, str>>, AccountError> {
    /// One more value: kept when it is the first, refused when malformed or another account.
    fn add<'a>(found: &mut Option<Cow<'a, str>>, sid: Cow<'a, str>) -> Result<(), AccountError> {
        if !is_account_sid(&sid) {
            return Err(AccountError::Invalid);
        }
        match found {
            Some(earlier) if *earlier != sid => Err(AccountError::Conflicting),
            Some(_) => Ok(()),
            None => {
                *found = Some(sid);
                Ok(())
            }
        }
    }
    let mut found: Option<Cow<'a, str>> = None;
    if let Some(params) = params {
        for sid in params.get_all(ACCOUNT_SID_PARAM) {
            add(&mut found, Cow::Borrowed(sid))?;
        }
    }
    if let Some(query) = query.filter(|query| query_may_name_account_sid(query.as_bytes())) {
        for raw in form::raw_values(query, ACCOUNT_SID_PARAM) {
            // A repeat of the account found is compared as it decodes: only a value that
            // differs is decoded, and refused, so a query of escaped repeats costs nothing each.
            let repeat = found
                .as_deref()
                .is_some_and(|sid| form::decodes_to(raw, sid));
            if !repeat {
                add(&mut found, form::decode_value(raw))?;
            }
        }
    }
    if let Some(json) = json {
        let JsonSids { first, later } = json_account_sids(json)?;
        if let Some(first) = first {
            add(&mut found, first)?;
        }
        if let Some(error) = later {
            return Err(error);
        }
    }
    Ok(found)
}

/// The top-level `AccountSid`s of a JSON object, as [`named_account_sid`] weighs them: the
/// first, and what is wrong with a later one (malformed, or another account). Repeats count (a
/// JSON parser that keeps the last of duplicate keys and one that keeps the first must not
/// disagree unnoticed).
#[derive(Default)]
struct JsonSids<'de> {
    first: Option<Cow<'de, str>>,
    later: Option<AccountError>,
}

impl<'de> JsonSids<'de> {
    /// One more `AccountSid` value, `sid`; `keep` gives it to keep when it is the first, so
    /// that a later one is compared, never copied.
    fn add(&mut self, sid: &str, keep: impl FnOnce() -> Cow<'de, str>) {
        if self.later.is_some() {
            return;
        }
        match &self.first {
            None => self.first = Some(keep()),
            Some(_) if !is_account_sid(sid) => self.later = Some(AccountError::Invalid),
            Some(first) if **first != *sid => self.later = Some(AccountError::Conflicting),
            Some(_) => {}
        }
    }
}

/// Whether a query may name an `AccountSid`: it has the name's bytes, or a `%` (a name may be
/// percent-encoded). Without either, its pairs need not be split and decoded: a JSON webhook's
/// query holds only `bodySHA256`.
fn query_may_name_account_sid(query: &[u8]) -> bool {
    static NAME: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(ACCOUNT_SID_PARAM.as_bytes()));
    memchr::memchr(b'%', query).is_some() || NAME.find(query).is_some()
}

/// Whether a JSON body may have an `AccountSid` member: it has those bytes between quotes, or
/// escapes something (a member name may be spelled with `\u` escapes). Without either, no
/// parse is needed: an Event Streams body, say, names only `accountSid` inside `data`.
fn may_name_account_sid(json: &[u8]) -> bool {
    static NAME: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""AccountSid""#));
    memchr::memchr(b'\\', json).is_some() || NAME.find(json).is_some()
}

/// The top-level `AccountSid`s of a JSON object (see [`JsonSids`]), borrowed from `json` unless
/// escaped. A body that does not parse, or is not an object, has none: it is still bound by
/// `bodySHA256`, and the handler sees it as it is.
///
/// # Errors
///
/// [`AccountError::Invalid`] when an `AccountSid` member is not a string.
fn json_account_sids(json: &[u8]) -> Result<JsonSids<'_>, AccountError> {
    /// The whole body: an object's `AccountSid` members, or nothing.
    struct TopLevel<'de>(Result<JsonSids<'de>, AccountError>);

    impl<'de> de::Deserialize<'de> for TopLevel<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(TopLevelVisitor)
        }
    }

    struct TopLevelVisitor;

    impl<'de> Visitor<'de> for TopLevelVisitor {
        type Value = TopLevel<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel<'de>, A::Error> {
            let mut sids = JsonSids::default();
            let mut invalid = false;
            // The names are compared as they are read and the values looked at in place: a
            // `Cow<str>` key is always built (serde does not borrow it), one allocation for
            // every member of a forged body.
            while let Some(IsAccountSid(is_account_sid)) = map.next_key()? {
                if is_account_sid {
                    invalid |= !map.next_value_seed(SidValue(&mut sids))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(TopLevel(if invalid {
                Err(AccountError::Invalid)
            } else {
                Ok(sids)
            }))
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel<'de>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(TopLevel(Ok(JsonSids::default())))
        }

        fn visit_bool<E>(self, _: bool) -> Result<TopLevel<'de>, E> {
            Ok(TopLevel(Ok(JsonSids::default())))
        }
        fn visit_i64<E>(self, _: i64) -> Result<TopLevel<'de>, E> {
            Ok(TopLevel(Ok(JsonSids::default())))
        }
        fn visit_u64<E>(self, _: u64) -> Result<TopLevel<'de>, E> {
            Ok(TopLevel(Ok(JsonSids::default())))
        }
        fn visit_f64<E>(self, _: f64) -> Result<TopLevel<'de>, E> {
            Ok(TopLevel(Ok(JsonSids::default())))
        }
        fn visit_str<E>(self, _: &str) -> Result<TopLevel<'de>, E> {
            Ok(TopLevel(Ok(JsonSids::default())))
        }
        fn visit_unit<E>(self) -> Result<TopLevel<'de>, E> {
            Ok(TopLevel(Ok(JsonSids::default())))
        }
    }

    /// Whether a member's name is `AccountSid`, compared as it is read.
    struct IsAccountSid(bool);

    impl<'de> de::Deserialize<'de> for IsAccountSid {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_str(IsAccountSidVisitor)
        }
    }

    struct IsAccountSidVisitor;

    impl Visitor<'_> for IsAccountSidVisitor {
        type Value = IsAccountSid;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a member name")
        }

        fn visit_str<E>(self, name: &str) -> Result<IsAccountSid, E> {
            Ok(IsAccountSid(name == ACCOUNT_SID_PARAM))
        }
    }

    /// An `AccountSid` member's value, added to the `JsonSids` it holds when it is a string
    /// (borrowed unless escaped, and copied only when it is the first); `false` for any other
    /// JSON value.
    struct SidValue<'a, 'de>(&'a mut JsonSids<'de>);

    impl<'de> de::DeserializeSeed<'de> for SidValue<'_, 'de> {
        type Value = bool;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for SidValue<'_, 'de> {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_borrowed_str<E>(self, sid: &'de str) -> Result<bool, E> {
            self.0.add(sid, || Cow::Borrowed(sid));
            Ok(true)
        }
        fn visit_str<E>(self, sid: &str) -> Result<bool, E> {
            self.0.add(sid, || Cow::Owned(sid.to_owned()));
            Ok(true)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(false)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(false)
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
    }

    if !may_name_account_sid(json) {
        return Ok(JsonSids::default());
    }
    match serde_json::from_slice::<TopLevel<'_>>(json) {
        Ok(TopLevel(sids)) => sids,
        Err(_) => Ok(JsonSids::default()),
    }
}

/// The account a verified request is reported under, given the account the verifying
/// credentials belong to (`owner`, as the resolver named it) and the one the request names.
///
/// - Both known: they must be equal.
/// - A SharedKey signature (`shared_key`): the owner must be known. The settings header names
///   the key, not the account, so without an owner a tenant's SharedKey could vouch for a body
///   that names any account.
/// - Otherwise whichever is known (an auth token that verified a request naming an account
///   is that account's, or the resolver chose it for that account).
///
/// ```
/// use tower_twilio::account::{AccountError, bind_account};
///
/// const A: &str = "AC0123456789abcdef0123456789abcdef";
/// const B: &str = "ACfedcba9876543210fedcba9876543210";
///
/// assert_eq!(bind_account(Some(A), Some(A), true), Ok(Some(A)));
/// assert_eq!(bind_account(Some(B), Some(A), false), Err(AccountError::Mismatch));
/// assert_eq!(bind_account(None, Some(A), true), Err(AccountError::Mismatch));
/// assert_eq!(bind_account(Some(B), None, false), Ok(Some(B)));
/// ```
///
/// # Errors
///
/// [`AccountError::Mismatch`] in the two refused cases above.
pub fn bind_account<'a>(
    owner: Option<&'a str>,
    named: Option<&'a str>,
    shared_key: bool,
) -> Result<Option<&'a str>, AccountError> {
    match (owner, named) {
        (Some(owner), Some(named)) if owner != named => Err(AccountError::Mismatch),
        (None, _) if shared_key => Err(AccountError::Mismatch),
        (Some(owner), _) => Ok(Some(owner)),
        (None, named) => Ok(named),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AC0123456789abcdef0123456789abcdef";
    const B: &str = "ACfedcba9876543210fedcba9876543210";

    #[test]
    fn account_sid_format() {
        assert!(is_account_sid(A));
        assert!(is_account_sid("AC0123456789ABCDEF0123456789ABCDEF"));
        for bad in [
            "",
            "AC",
            "AC0123",
            "ac0123456789abcdef0123456789abcdef",
            "AC0123456789abcdef0123456789abcdeg",
            "AC0123456789abcdef0123456789abcdef0",
            "AC0123456789abcdef0123456789abcde",
            "AC0123456789abcdef0123456789abcd\u{e9}",
            " AC0123456789abcdef0123456789abcdef",
        ] {
            assert!(!is_account_sid(bad), "{bad:?}");
        }
        // One byte that is not a hex digit, at every place: each digit is checked.
        for at in 2..A.len() {
            for bad in [b'g', b'G', b'/', b':', b'@', b'`', b' ', 0] {
                let mut sid = A.as_bytes().to_vec();
                sid[at] = bad;
                let sid = String::from_utf8(sid).unwrap();
                assert!(!is_account_sid(&sid), "{sid:?}");
            }
        }
    }

    #[test]
    fn shared_key_id_format() {
        for good in ["k", "webhooks_sharedkey_1", "a.b-c:d_E9", &"k".repeat(128)] {
            assert!(is_shared_key_id(good), "{good:?}");
        }
        for bad in [
            "",
            "a b",
            "a\"b",
            "a%20",
            "a/b",
            "é",
            &"k".repeat(129),
            "a\0",
        ] {
            assert!(!is_shared_key_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_place_must_agree() {
        let form = |body: &str| Params::parse(body.as_bytes());
        let a_form = form(&format!("AccountSid={A}"));
        let b_query = format!("x=1&AccountSid={B}");
        let a_query = format!("AccountSid={A}");
        let a_json = format!(r#"{{"AccountSid":"{A}","x":[1,{{"AccountSid":"{B}"}}]}}"#);
        let twice_json = format!(r#"{{"AccountSid":"{A}","AccountSid":"{B}"}}"#);
        let rows: [(
            Option<&Params>,
            Option<&str>,
            Option<&[u8]>,
            Result<Option<&str>, AccountError>,
        ); 9] = [
            (None, None, None, Ok(None)),
            (Some(&a_form), None, None, Ok(Some(A))),
            (Some(&a_form), Some(&a_query), None, Ok(Some(A))),
            (
                Some(&a_form),
                Some(&b_query),
                None,
                Err(AccountError::Conflicting),
            ),
            // nested AccountSids are data, not the request's account
            (None, Some(&a_query), Some(a_json.as_bytes()), Ok(Some(A))),
            (
                None,
                Some(&b_query),
                Some(a_json.as_bytes()),
                Err(AccountError::Conflicting),
            ),
            (
                None,
                None,
                Some(twice_json.as_bytes()),
                Err(AccountError::Conflicting),
            ),
            // an Event Streams array and a body that is not JSON name no account
            (
                None,
                None,
                Some(br#"[{"data":{"AccountSid":"x"}}]"#),
                Ok(None),
            ),
            (None, None, Some(b"{not json"), Ok(None)),
        ];
        for (params, query, json, expected) in rows {
            assert_eq!(
                named_account_sid(params, query, json),
                expected.map(|sid| sid.map(Cow::Borrowed)),
                "{query:?} {:?}",
                json.map(String::from_utf8_lossy)
            );
        }
        assert_eq!(
            named_account_sid(None, None, Some(br#"{"AccountSid":7}"#)),
            Err(AccountError::Invalid)
        );
        assert_eq!(
            named_account_sid(Some(&form("AccountSid=")), None, None),
            Err(AccountError::Invalid)
        );
    }

    #[test]
    fn a_json_body_is_parsed_only_when_it_may_name_an_account_sid() {
        assert!(may_name_account_sid(br#"{"AccountSid":"AC1"}"#));
        assert!(may_name_account_sid(br#"{"data":{"AccountSid":"AC1"}}"#));
        // An escaped member name is still `AccountSid` to a JSON parser.
        assert!(may_name_account_sid(br#"{"\u0041ccountSid":"AC1"}"#));
        assert!(!may_name_account_sid(br#"{"data":{"accountSid":"AC1"}}"#));
        assert!(!may_name_account_sid(br#"{"AccountSidX":"AC1"}"#));
        // A value spelled so is parsed too: the scan only rules out, it never decides.
        assert!(may_name_account_sid(br#"{"note":"AccountSid"}"#));
        assert!(!may_name_account_sid(b"[]"));

        // The escaped spellings are found by the parse, in the name and in the value.
        let escaped_name = format!(r#"{{"\u0041ccountSid":"{A}"}}"#);
        let escaped_value = r#"{"AccountSid":"\u0041C0123456789abcdef0123456789abcdef"}"#;
        for json in [escaped_name.as_str(), escaped_value] {
            assert_eq!(
                named_account_sid(None, None, Some(json.as_bytes())),
                Ok(Some(Cow::Borrowed(A))),
                "{json}"
            );
        }
    }

    #[test]
    fn a_query_is_split_only_when_it_may_name_an_account_sid() {
        assert!(!query_may_name_account_sid(b"bodySHA256=7c3bd119"));
        assert!(!query_may_name_account_sid(b"accountsid=AC1"));
        assert!(query_may_name_account_sid(b"tenant=7&AccountSid=AC1"));
        assert!(query_may_name_account_sid(b"Account%53id=AC1"));
        // A percent-encoded name or value is still found, and still checked.
        for query in [
            format!("Account%53id={A}"),
            format!("AccountSid=%41C{}", &A[2..]),
        ] {
            assert_eq!(
                named_account_sid(None, Some(&query), None),
                Ok(Some(Cow::Owned(A.to_owned()))),
                "{query}"
            );
        }
        assert_eq!(
            named_account_sid(None, Some("Account%53id=AC1"), None),
            Err(AccountError::Invalid)
        );
        assert_eq!(
            named_account_sid(None, Some("bodySHA256=00&tenant=7"), None),
            Ok(None)
        );
    }

    #[test]
    fn the_account_sid_is_borrowed_unless_it_had_to_be_decoded() {
        let form = Params::parse(format!("AccountSid={A}").as_bytes());
        let query = format!("AccountSid={A}");
        let json = format!(r#"{{"AccountSid":"{A}"}}"#);
        for found in [
            named_account_sid(Some(&form), None, None),
            named_account_sid(None, Some(&query), None),
            named_account_sid(None, None, Some(json.as_bytes())),
        ] {
            assert!(matches!(found, Ok(Some(Cow::Borrowed(A)))), "{found:?}");
        }
        let escaped = r#"{"AccountSid":"\u0041C0123456789abcdef0123456789abcdef"}"#;
        assert!(matches!(
            named_account_sid(None, None, Some(escaped.as_bytes())),
            Ok(Some(Cow::Owned(_)))
        ));
    }

    #[test]
    fn a_later_json_account_sid_is_weighed_after_the_first() {
        let form = Params::parse(format!("AccountSid={A}").as_bytes());
        let rows = [
            // The first JSON value conflicts with the form before the second is looked at.
            (
                format!(r#"{{"AccountSid":"{B}","AccountSid":"x"}}"#),
                Err(AccountError::Conflicting),
            ),
            (
                format!(r#"{{"AccountSid":"{A}","AccountSid":"x"}}"#),
                Err(AccountError::Invalid),
            ),
            (
                format!(r#"{{"AccountSid":"{A}","AccountSid":"{B}"}}"#),
                Err(AccountError::Conflicting),
            ),
            (
                format!(r#"{{"AccountSid":"{A}","AccountSid":"{A}"}}"#),
                Ok(Some(Cow::Borrowed(A))),
            ),
            // A value that is not a string is refused whatever comes first.
            (
                format!(r#"{{"AccountSid":"{B}","AccountSid":null}}"#),
                Err(AccountError::Invalid),
            ),
        ];
        for (json, expected) in rows {
            assert_eq!(
                named_account_sid(Some(&form), None, Some(json.as_bytes())),
                expected,
                "{json}"
            );
        }
    }

    #[test]
    fn binding_table() {
        let rows = [
            (Some(A), Some(A), false, Ok(Some(A))),
            (Some(A), Some(A), true, Ok(Some(A))),
            (Some(A), Some(B), false, Err(AccountError::Mismatch)),
            (Some(A), Some(B), true, Err(AccountError::Mismatch)),
            (Some(A), None, true, Ok(Some(A))),
            (None, Some(A), false, Ok(Some(A))),
            (None, Some(A), true, Err(AccountError::Mismatch)),
            (None, None, true, Err(AccountError::Mismatch)),
            (None, None, false, Ok(None)),
        ];
        for (owner, named, shared_key, expected) in rows {
            assert_eq!(
                bind_account(owner, named, shared_key),
                expected,
                "{owner:?} {named:?} {shared_key}"
            );
        }
    }
}
