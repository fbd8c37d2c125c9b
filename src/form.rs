//! Form bodies: content-type detection, decoding into [`Params`], and the canonical
//! (sorted, de-duplicated) parameter string Twilio signs.
//!
//! Pure: no I/O, no tower types.

use std::cmp::Ordering;

/// Whether a `Content-Type` value is `application/x-www-form-urlencoded`.
///
/// The media type is compared without regard to ASCII case, and parameters such as
/// `; charset=UTF-8` are ignored.
pub fn is_form_urlencoded(content_type: &[u8]) -> bool {
    let essence = match content_type.iter().position(|&b| b == b';') {
        Some(end) => &content_type[..end],
        None => content_type,
    };
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// Decoded form parameters, in the order they were received, repeats kept.
///
/// Decoding follows the URL standard's `application/x-www-form-urlencoded` parser, which gives
/// the same pairs as the parsers the official libraries rely on: split on `&`, skip empty
/// pieces, split each piece on its first `=` (a piece without `=` is a name with an empty
/// value), turn `+` into a space, decode `%XX` escapes, keep malformed escapes such as `%ZZ`
/// literally, and replace bytes that are not UTF-8 with U+FFFD.
///
/// All names and values live in one buffer: parsing costs two allocations whatever the number
/// of parameters.
///
/// ```
/// use tower_twilio::form::Params;
///
/// let params = Params::parse(b"From=%2B14155550100&Body=Hello+World&MediaUrl0=");
/// assert_eq!(params.get("From"), Some("+14155550100"));
/// assert_eq!(params.get("Body"), Some("Hello World"));
/// assert_eq!(params.get("MediaUrl0"), Some(""));
/// assert_eq!(params.get("To"), None);
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Params {
    text: String,
    /// For each pair: where the name ends and where the value ends in `text`; each starts
    /// where the previous piece ended.
    ends: Vec<(usize, usize)>,
}

impl Params {
    /// Decodes a form body (or a raw query string). Never fails: see the type's docs for how
    /// unusual input is read.
    pub fn parse(input: &[u8]) -> Self {
        let mut params = Self {
            text: String::with_capacity(input.len()),
            ends: Vec::new(),
        };
        for (name, value) in form_urlencoded::parse(input) {
            params.text.push_str(&name);
            let name_end = params.text.len();
            params.text.push_str(&value);
            params.ends.push((name_end, params.text.len()));
        }
        params
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every value of `name`, in the order received.
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// All `(name, value)` pairs, in the order received.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone + '_ {
        self.ends
            .iter()
            .enumerate()
            .map(|(i, &(name_end, value_end))| {
                let start = if i == 0 { 0 } else { self.ends[i - 1].1 };
                (&self.text[start..name_end], &self.text[name_end..value_end])
            })
    }

    /// The number of pairs, repeats included.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends to `out` what Twilio signs after the URL for these parameters: the names in
    /// ascending order, for each name its distinct values in ascending order, each written as
    /// `name ‖ value` with no separator.
    ///
    /// The order is by code point (the order of the UTF-8 bytes), as twilio-python sorts. The
    /// verifier also tries twilio-node's UTF-16 order when the two can differ, which needs a
    /// character at or above U+10000.
    ///
    /// ```
    /// use tower_twilio::form::Params;
    ///
    /// let mut signed = Vec::new();
    /// Params::parse(b"To=%2B1&From=%2B2&Digits=9&Digits=1&Digits=9").write_canonical(&mut signed);
    /// assert_eq!(signed, b"Digits1Digits9From+2To+1");
    /// ```
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        canonicalize(&self.as_pairs(), SortOrder::CodePoint, out);
    }

    pub(crate) fn as_pairs(&self) -> Vec<(&str, &str)> {
        self.iter().collect()
    }
}

/// Shows the parameter names only: values carry message bodies and phone numbers, which do
/// not belong in logs.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("names", &self.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// How parameter names and values are ordered before they are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortOrder {
    /// By Unicode code point, which equals the order of the UTF-8 bytes. What twilio-python
    /// does, and the primary order.
    CodePoint,
    /// By UTF-16 code unit, what JavaScript's `Array.prototype.sort` (twilio-node) does. It
    /// differs from code-point order only when a character at or above U+10000 meets one in
    /// U+E000..=U+FFFF at the same position.
    Utf16,
}

impl SortOrder {
    fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Self::CodePoint => a.cmp(b),
            Self::Utf16 => a.encode_utf16().cmp(b.encode_utf16()),
        }
    }
}

/// Writes the signed form of `pairs` into `out`: names ascending, for each name its distinct
/// values ascending, each as `name ‖ value`.
pub(crate) fn canonicalize(pairs: &[(&str, &str)], order: SortOrder, out: &mut Vec<u8>) {
    let mut sorted: Vec<&(&str, &str)> = pairs.iter().collect();
    // Sorting the (name, value) tuples orders names first and each name's values second,
    // which is exactly "names sorted, then each name's distinct values sorted".
    sorted.sort_unstable_by(|a, b| {
        order
            .compare(a.0, b.0)
            .then_with(|| order.compare(a.1, b.1))
    });
    sorted.dedup();
    out.reserve(sorted.iter().map(|(n, v)| n.len() + v.len()).sum());
    for (name, value) in sorted {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
}

/// Whether UTF-16 order could differ from code-point order for these pairs: only when some
/// string holds a character at or above U+10000 (a four-byte UTF-8 sequence).
pub(crate) fn may_sort_differently_in_utf16(pairs: &[(&str, &str)]) -> bool {
    pairs
        .iter()
        .any(|(n, v)| n.bytes().chain(v.bytes()).any(|b| b >= 0xF0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(body: &str, order: SortOrder) -> String {
        let params = Params::parse(body.as_bytes());
        let mut out = Vec::new();
        canonicalize(&params.as_pairs(), order, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn content_type_table() {
        for yes in [
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=UTF-8",
            "Application/X-WWW-Form-URLEncoded;charset=utf-8",
            " application/x-www-form-urlencoded ",
        ] {
            assert!(is_form_urlencoded(yes.as_bytes()), "{yes:?}");
        }
        for no in [
            "",
            "application/json",
            "application/x-www-form-urlencodedx",
            "multipart/form-data; boundary=x",
            "text/plain; x=application/x-www-form-urlencoded",
        ] {
            assert!(!is_form_urlencoded(no.as_bytes()), "{no:?}");
        }
    }

    // Decoding rules (TWILIO_SPEC.md §2.1), one row each: body -> signed suffix.
    #[test]
    fn canonical_string_table() {
        let rows = [
            // values are signed decoded: %2B is a plus, + is a space
            (
                "From=%2B14155550100&Body=Hello+World",
                "BodyHello WorldFrom+14155550100",
            ),
            // a raw + in a phone number is a space
            ("From=+14155550100", "From 14155550100"),
            // empty values contribute only the name; a piece without = is an empty value
            ("FromZip=&Flag", "FlagFromZip"),
            // empty names are legal
            ("=v", "v"),
            // empty pieces are skipped
            ("a=1&&b=2&", "a1b2"),
            // only the first = splits
            ("a=b=c", "ab=c"),
            // case-sensitive, upper before lower; digits before letters; "10" < "9"
            ("body=1&Body=2&BODY=3", "BODY3Body2body1"),
            ("9=a&10=b&a=c", "10b9aac"),
            // repeated keys: distinct values, sorted, the name before each
            (
                "Digits=5678&Digits=1234&Digits=1234",
                "Digits1234Digits5678",
            ),
            // names are sorted on their own, not on name+value
            ("ab=1&a=2", "a2ab1"),
            // malformed escapes stay literal, lower-case hex decodes
            ("a=%ZZ&b=%2b&c=%", "a%ZZb+c%"),
            // bytes that are not UTF-8 become U+FFFD
            ("Body=caf%E9", "Bodycaf\u{FFFD}"),
            // no Unicode normalisation: NFC and NFD stay distinct
            ("a=%C3%A9&a=e%CC%81", "ae\u{301}a\u{e9}"),
        ];
        for (body, expected) in rows {
            assert_eq!(canonical(body, SortOrder::CodePoint), expected, "{body:?}");
        }
    }

    #[test]
    fn utf16_order_differs_only_for_astral_against_high_bmp() {
        // U+1F600 (emoji) vs U+FF21 (fullwidth A): code point puts U+FF21 first, UTF-16 puts
        // the emoji's surrogate (0xD83D) first.
        let body = "k=%F0%9F%98%80&k=%EF%BC%A1";
        assert_eq!(canonical(body, SortOrder::CodePoint), "k\u{FF21}k\u{1F600}");
        assert_eq!(canonical(body, SortOrder::Utf16), "k\u{1F600}k\u{FF21}");
        let params = Params::parse(body.as_bytes());
        assert!(may_sort_differently_in_utf16(&params.as_pairs()));
        let ascii = Params::parse(b"b=1&a=2");
        assert!(!may_sort_differently_in_utf16(&ascii.as_pairs()));
        assert_eq!(canonical("b=1&a=2", SortOrder::Utf16), "a2b1");
    }

    #[test]
    fn params_keep_order_and_repeats() {
        let params = Params::parse(b"b=2&a=1&b=3");
        assert_eq!(params.len(), 3);
        assert_eq!(params.get("b"), Some("2"));
        assert_eq!(params.get_all("b").collect::<Vec<_>>(), ["2", "3"]);
        assert_eq!(params.iter().next(), Some(("b", "2")));
        assert_eq!(params.iter().nth(2), Some(("b", "3")));
        assert!(Params::parse(b"").is_empty());
    }
}
