//! Request bodies: content-type rules, decoding form bodies into [`Params`], and the canonical
//! (sorted, de-duplicated) parameter string Twilio signs.
//!
//! Pure: no I/O, no tower types.

use std::{borrow::Cow, cmp::Ordering};

/// The media type of a `Content-Type` value: what comes before any `;` parameters, without
/// surrounding whitespace.
fn essence(content_type: &[u8]) -> &[u8] {
    let essence = match content_type.iter().position(|&b| b == b';') {
        Some(end) => &content_type[..end],
        None => content_type,
    };
    essence.trim_ascii()
}

/// Whether a `Content-Type` value is `application/x-www-form-urlencoded`.
///
/// The media type is compared without regard to ASCII case, and parameters such as
/// `; charset=UTF-8` are ignored.
pub fn is_form_urlencoded(content_type: &[u8]) -> bool {
    essence(content_type).eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// Whether a `Content-Type` value is JSON: `application/json` or any `…/…+json` type
/// (`application/cloudevents+json`, …), without regard to ASCII case or parameters.
///
/// The one JSON rule of the crate: the middleware reads a JSON body's `AccountSid` by it, and
/// a handler can use it to decide how to read a body verified through `bodySHA256`.
///
/// ```
/// use tower_twilio::form::is_json;
///
/// assert!(is_json(b"application/json; charset=utf-8"));
/// assert!(is_json(b"application/cloudevents-batch+JSON"));
/// assert!(!is_json(b"application/x-www-form-urlencoded"));
/// assert!(!is_json(b"text/plain; note=json"));
/// ```
pub fn is_json(content_type: &[u8]) -> bool {
    let essence = essence(content_type);
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() > 5
            && essence.contains(&b'/')
            && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// Every value of `name` in `input` (a query string or form body), in order, decoded as
/// [`Params::parse`] decodes. Without a `%` or `+` in `input` nothing needs decoding, and the
/// values are found by splitting alone; either way nothing is allocated unless a value needs
/// decoding.
pub(crate) fn values<'a>(input: &'a str, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> {
    let decode = input.bytes().any(|b| b == b'%' || b == b'+');
    let decoded = decode.then(|| {
        form_urlencoded::parse(input.as_bytes())
            .filter(move |(n, _)| n == name)
            .map(|(_, value)| value)
    });
    let split = (!decode).then(|| {
        input
            .split('&')
            .filter(|piece| !piece.is_empty())
            .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
            .filter(move |(n, _)| *n == name)
            .map(|(_, value)| Cow::Borrowed(value))
    });
    decoded
        .into_iter()
        .flatten()
        .chain(split.into_iter().flatten())
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
#[derive(Clone, Default)]
pub struct Params {
    /// The decoded names and values at the places `pairs` give; every byte outside them is
    /// ASCII (separators, or filler where decoding shortened a name or value).
    text: String,
    pairs: Vec<Pair>,
}

/// Where one name and its value are in `Params::text`: `start..end` each, as `u32`s so that
/// a pair costs 16 bytes (the index is the part of a parse that grows with the number of
/// pairs rather than with the body).
#[derive(Clone, Copy)]
struct Pair {
    name: Span,
    value: Span,
}

/// `start..end` in `Params::text`.
type Span = (u32, u32);

/// The byte range of `span`.
fn range((start, end): Span) -> std::ops::Range<usize> {
    start as usize..end as usize
}

/// The most form parameters (pairs) a request may carry by default, as Django's
/// `DATA_UPLOAD_MAX_NUMBER_FIELDS` and Express's `urlencoded` parser allow: far more than any
/// webhook Twilio sends (an MMS with ten media has about 40), and few enough that the pair index
/// and sort keys of a body stay under 32 KiB whatever its shape. See
/// [`Params::parse_at_most`].
pub const DEFAULT_MAX_PARAMS: usize = 1000;

/// Inputs this long or longer are not parsed: offsets must fit a `u32` even after the lossy
/// decoder has turned every byte into a three-byte U+FFFD.
const MAX_INPUT: usize = 1 << 30;

/// `start..end` as a [`Span`]. Offsets fit: [`Params::parse`] only indexes inputs shorter than
/// [`MAX_INPUT`], and decoding never makes them longer than 3 times that.
fn span(start: usize, end: usize) -> Span {
    (start as u32, end as u32)
}

impl Params {
    /// Decodes a form body (or a raw query string). Never fails: see the type's docs for how
    /// unusual input is read.
    ///
    /// # Memory
    ///
    /// A parse allocates the decoded text (the body's length) and an index of 16 bytes per
    /// non-empty `&`-separated piece, sized exactly (runs of `&` cost nothing). For Twilio's
    /// webhooks, whose pairs average well over 16 bytes, that is less than twice the body; the
    /// worst case, a body of one-byte pairs (`a&a&a…`), is 9 times it, which
    /// [`parse_at_most`](Self::parse_at_most) bounds. An input of 1 GiB or more is not indexed
    /// and gives no parameters (the middleware's body limit is far below).
    pub fn parse(input: &[u8]) -> Self {
        if input.len() >= MAX_INPUT {
            return Self::default();
        }
        Self::parse_counted(input, count_pairs(input))
    }

    /// Decodes like [`parse`](Self::parse) an input of at most `max` pairs (non-empty
    /// `&`-separated pieces); `None`, before anything is allocated, for one of more. (An input
    /// of 1 GiB or more is not counted and gives no parameters, as with `parse`.)
    ///
    /// The pair index and the sort keys cost 16 bytes a pair each, which for one-byte pairs
    /// (`a&a&…`) is 16 times the body; bounding the number of pairs bounds them whatever the
    /// body's shape. The middleware uses [`DEFAULT_MAX_PARAMS`] unless told otherwise
    /// ([`TwilioSignatureLayer::max_params`](crate::TwilioSignatureLayer::max_params)).
    ///
    /// ```
    /// use tower_twilio::form::Params;
    ///
    /// assert_eq!(Params::parse_at_most(b"a=1&b=2&&", 2).map(|p| p.len()), Some(2));
    /// assert!(Params::parse_at_most(b"a=1&b=2&c", 2).is_none());
    /// ```
    pub fn parse_at_most(input: &[u8], max: usize) -> Option<Self> {
        if input.len() >= MAX_INPUT {
            return Some(Self::default());
        }
        let count = count_pairs(input);
        (count <= max).then(|| Self::parse_counted(input, count))
    }

    /// [`parse`](Self::parse) of an input holding `count` pairs, as [`count_pairs`] counts
    /// them: for a caller that has counted them already.
    pub(crate) fn parse_counted(input: &[u8], count: usize) -> Self {
        if input.len() >= MAX_INPUT {
            return Self::default();
        }
        // The body is copied once with every `+` turned into a space (an escape never holds a
        // `+`, so this is right before decoding too), in one pass the compiler vectorises.
        // Then the separators and escapes are found eight bytes at a time. Each name and value
        // stays where it is in the copy; an escape shortens it, so the bytes after an escape
        // move left (`text[read..]` belongs at `write`) and the bytes freed at its end become
        // ASCII filler. Neither buffer grows: the text cannot get longer and the index is
        // sized to the number of non-empty pieces, counted first.
        let mut text: Vec<u8> = input
            .iter()
            .map(|&byte| if byte == b'+' { b' ' } else { byte })
            .collect();
        let mut pairs = Vec::with_capacity(count);
        let mut piece_start = 0;
        let mut name_end = None;
        let mut value_start = 0;
        let mut read = 0;
        let mut write = 0;
        for at in Specials::new(input) {
            match input[at] {
                b'&' => {
                    let end = settle(&mut text, read, at, write);
                    if at > piece_start {
                        pairs.push(pair_at(piece_start, name_end, value_start, end));
                    }
                    fill_gap(&mut text[end..at]);
                    (piece_start, name_end, read, write) = (at + 1, None, at + 1, at + 1);
                }
                b'=' if name_end.is_none() => {
                    let end = settle(&mut text, read, at, write);
                    fill_gap(&mut text[end..at]);
                    name_end = Some(end);
                    (value_start, read, write) = (at + 1, at + 1, at + 1);
                }
                b'=' => {}
                _ => {
                    let escape = match input.get(at + 1..at + 3) {
                        Some(&[high, low]) => hex(high).zip(hex(low)),
                        _ => None,
                    };
                    // A `%` that starts no escape stays as it is.
                    if let Some((high, low)) = escape {
                        let end = settle(&mut text, read, at, write);
                        text[end] = (high << 4) | low;
                        (read, write) = (at + 3, end + 1);
                    }
                }
            }
        }
        let end = settle(&mut text, read, input.len(), write);
        if input.len() > piece_start {
            pairs.push(pair_at(piece_start, name_end, value_start, end));
        }
        fill_gap(&mut text[end..]);
        // Every name and value is UTF-8 on its own exactly when the whole buffer is, because
        // the bytes between them are ASCII and ASCII bytes are always character boundaries.
        match String::from_utf8(text) {
            Ok(text) => Self { text, pairs },
            Err(_) => Self::parse_lossy(input),
        }
    }

    /// The reference decoder, `form_urlencoded::parse`, which replaces bytes that are not
    /// UTF-8 in each name and value separately.
    fn parse_lossy(input: &[u8]) -> Self {
        Self::from_pairs(form_urlencoded::parse(input))
    }

    /// Params holding these pairs, in this order.
    pub(crate) fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut params = Self::default();
        for (name, value) in pairs {
            let name_start = params.text.len();
            params.text.push_str(name.as_ref());
            let name_end = params.text.len();
            params.text.push_str(value.as_ref());
            params.pairs.push(Pair {
                name: span(name_start, name_end),
                value: span(name_end, params.text.len()),
            });
        }
        params
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        // Names compared as bytes (length first), the value sliced only for the match.
        let text = self.text.as_bytes();
        let pair = self
            .pairs
            .iter()
            .find(|pair| &text[range(pair.name)] == name.as_bytes())?;
        Some(&self.text[range(pair.value)])
    }

    /// Every value of `name`, in the order received.
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        let text: &'s str = &self.text;
        self.pairs
            .iter()
            .filter(move |pair| &text.as_bytes()[range(pair.name)] == name.as_bytes())
            .map(move |pair| &text[range(pair.value)])
    }

    /// All `(name, value)` pairs, in the order received.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone + '_ {
        self.pairs
            .iter()
            .map(|pair| (&self.text[range(pair.name)], &self.text[range(pair.value)]))
    }

    /// Pair `index` as bytes: no character-boundary checks, for sorting.
    fn pair_bytes(&self, index: usize) -> (&[u8], &[u8]) {
        let pair = self.pairs[index];
        let text = self.text.as_bytes();
        (&text[range(pair.name)], &text[range(pair.value)])
    }

    /// Pair `index` as text.
    fn pair(&self, index: usize) -> (&str, &str) {
        let pair = self.pairs[index];
        (&self.text[range(pair.name)], &self.text[range(pair.value)])
    }

    /// The number of pairs, repeats included.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
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
        canonicalize(self, SortOrder::CodePoint, out);
    }
}

/// Equal when they hold the same pairs in the same order.
impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Params {}

/// The number of pairs in `input`: its non-empty `&`-separated pieces, each starting at a byte
/// that is not `&` and follows the start or a `&`. Counted in a loop the compiler vectorises,
/// so that the pair index is allocated once at its exact size; sizing it by the number of `&`s
/// let a body of `&&&…` cost 32 times its size.
pub(crate) fn count_pairs(input: &[u8]) -> usize {
    let Some(&first) = input.first() else {
        return 0;
    };
    // Each byte against the next, both comparisons evaluated (`&`, not `&&`) and summed in a
    // `u8` over blocks of 192 bytes (so the sum cannot wrap): the loop has no branch and no
    // bounds check, and is vectorised 16 bytes at a time. `windows(2)` with `&&` counted one
    // or two bytes at a time and took a third of a 4 KB MMS webhook's verification; blocks of
    // 255 bytes left 15 of each to a loop of one byte at a time (a block of a multiple of 64
    // bytes leaves none).
    const BLOCK: usize = 192;
    let starts: usize = input
        .chunks(BLOCK)
        .zip(input[1..].chunks(BLOCK))
        .map(|(this, next)| {
            let block = this.iter().zip(next).fold(0u8, |sum, (&this, &next)| {
                sum + u8::from((this == b'&') & (next != b'&'))
            });
            usize::from(block)
        })
        .sum();
    starts + usize::from(first != b'&')
}

/// The positions of every `&`, `=` and `%` in a byte string, in order.
///
/// Looks at eight bytes at a time with the same steps whatever they hold, so the work on one
/// word never waits for the previous one.
struct Specials<'a> {
    input: &'a [u8],
    /// Where the next word starts.
    next: usize,
    /// Where the current word starts.
    base: usize,
    /// The high bit of each special byte of the current word not yet returned.
    found: u64,
}

impl<'a> Specials<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            next: 0,
            base: 0,
            found: 0,
        }
    }
}

impl Iterator for Specials<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        const ONES: u64 = u64::from_le_bytes([1; 8]);
        const LOW_BITS: u64 = u64::from_le_bytes([0x7F; 8]);
        // The high bit of exactly the bytes of `word` equal to `byte`.
        let equal_bytes = |word: u64, byte: u8| {
            let x = word ^ (ONES * u64::from(byte));
            !(((x & LOW_BITS).wrapping_add(LOW_BITS)) | x | LOW_BITS)
        };
        while self.found == 0 {
            let rest = self.input.get(self.next..)?;
            if rest.is_empty() {
                return None;
            }
            let word = match rest.get(..8) {
                Some(chunk) => u64::from_le_bytes(chunk.try_into().expect("eight bytes")),
                // The last few bytes, padded with zeros, which are not special.
                None => {
                    let mut tail = [0u8; 8];
                    tail[..rest.len()].copy_from_slice(rest);
                    u64::from_le_bytes(tail)
                }
            };
            self.base = self.next;
            self.next += 8;
            self.found =
                equal_bytes(word, b'&') | equal_bytes(word, b'=') | equal_bytes(word, b'%');
        }
        let at = self.base + (self.found.trailing_zeros() / 8) as usize;
        self.found &= self.found - 1;
        Some(at)
    }
}

/// Moves `text[read..until]` to `write` (they are equal until an escape has been decoded) and
/// returns where it ends.
fn settle(text: &mut [u8], read: usize, until: usize, write: usize) -> usize {
    if read != write {
        text.copy_within(read..until, write);
    }
    write + (until - read)
}

/// Fills the bytes an escape freed at the end of a name or value with ASCII filler. Most
/// names and values have no escape, so the gap is usually empty, and then no `memset` is
/// called (it was, twice for every pair).
fn fill_gap(gap: &mut [u8]) {
    if !gap.is_empty() {
        gap.fill(b'&');
    }
}

/// The pair of a piece that starts at `start`: its name ends at `name_end` (or at `end` when
/// the piece has no `=`), its value runs from `value_start` to `end`.
fn pair_at(start: usize, name_end: Option<usize>, value_start: usize, end: usize) -> Pair {
    match name_end {
        Some(name_end) => Pair {
            name: span(start, name_end),
            value: span(value_start, end),
        },
        None => Pair {
            name: span(start, end),
            value: span(end, end),
        },
    }
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
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

/// Writes the signed form of `params` into `out`: names ascending, for each name its distinct
/// values ascending, each as `name ‖ value`.
///
/// For code-point order it sorts plain `u128` keys, on the stack for up to 64 pairs: the first
/// 14 bytes of the name above the pair's index. Entries whose 14-byte prefixes are equal are
/// then put in order by their whole name and value. The only allocation is `out`'s.
pub(crate) fn canonicalize(params: &Params, order: SortOrder, out: &mut Vec<u8>) {
    const ON_STACK: usize = 64;
    const INDEX_BITS: u32 = 16;
    const INDEX: u128 = (1 << INDEX_BITS) - 1;
    let count = params.len();
    let text = params.text.as_bytes();
    let mut on_stack = [0u128; ON_STACK];
    let mut on_heap = Vec::new();
    let keys: &mut [u128] = if count <= ON_STACK {
        &mut on_stack[..count]
    } else {
        on_heap.resize(count, 0);
        &mut on_heap
    };
    // With more pairs than the key has room for, the keys are plain indices.
    let packed = order == SortOrder::CodePoint && count <= 1 << INDEX_BITS;
    let index_bits = if packed { INDEX } else { u128::MAX };
    let index_of = |key: u128| (key & index_bits) as usize;
    let by_pair = |a: &u128, b: &u128| {
        params
            .pair_bytes(index_of(*a))
            .cmp(&params.pair_bytes(index_of(*b)))
    };
    // Sorting the (name, value) tuples orders names first and each name's values second,
    // which is exactly "names sorted, then each name's distinct values sorted"; repeats end
    // up next to each other.
    if packed {
        // Code-point order is the order of the UTF-8 bytes, so wherever two prefixes differ
        // they order the names.
        for ((index, key), pair) in keys.iter_mut().enumerate().zip(&params.pairs) {
            *key = (name_prefix(text, pair.name) & !INDEX) | index as u128;
        }
        keys.sort_unstable();
        let mut run_start = 0;
        for end in 1..=keys.len() {
            if end == keys.len() || (keys[end] ^ keys[run_start]) & !INDEX != 0 {
                if end - run_start > 1 {
                    keys[run_start..end].sort_unstable_by(by_pair);
                }
                run_start = end;
            }
        }
    } else {
        for (index, key) in keys.iter_mut().enumerate() {
            *key = index as u128;
        }
        match order {
            SortOrder::CodePoint => keys.sort_unstable_by(by_pair),
            SortOrder::Utf16 => keys.sort_unstable_by(|a, b| {
                let (a, b) = (params.pair(index_of(*a)), params.pair(index_of(*b)));
                order
                    .compare(a.0, b.0)
                    .then_with(|| order.compare(a.1, b.1))
            }),
        }
    }
    // 16 bytes of slack let a short name or value go in as one fixed-size copy.
    out.reserve(text.len() + 16);
    let mut previous: Option<(u128, (&[u8], &[u8]))> = None;
    for &key in keys.iter() {
        let pair = params.pair_bytes(index_of(key));
        let prefix = key & !index_bits;
        if previous.is_some_and(|previous| previous == (prefix, pair)) {
            continue;
        }
        let entry = params.pairs[index_of(key)];
        push_short(out, text, entry.name);
        push_short(out, text, entry.value);
        previous = Some((prefix, pair));
    }
}

/// Appends `text[start..end]` to `out`: a short one as a fixed 16-byte copy (not a call to
/// `memcpy`) cut back to its length, which needs 16 bytes of spare capacity.
fn push_short(out: &mut Vec<u8>, text: &[u8], (start, end): Span) {
    let (start, end) = (start as usize, end as usize);
    let len = end - start;
    match text.get(start..start + 16) {
        Some(window) if len <= 16 => {
            let at = out.len();
            out.extend_from_slice(window);
            out.truncate(at + len);
        }
        _ => out.extend_from_slice(&text[start..end]),
    }
}

/// The first 16 bytes of the name at `text[start..end]`, zero-padded, as a number that orders
/// like the bytes: when two prefixes differ, the names differ the same way (a name that ends
/// early is padded with zeros and is also the smaller name).
fn name_prefix(text: &[u8], (start, end): Span) -> u128 {
    let (start, end) = (start as usize, end as usize);
    let len = end - start;
    match text.get(start..start + 16) {
        // One load, then the bytes past the name masked off.
        Some(window) => {
            let word = u128::from_be_bytes(window.try_into().expect("16 bytes"));
            if len >= 16 {
                word
            } else {
                word & !(u128::MAX >> (8 * len))
            }
        }
        None => text[start..end]
            .iter()
            .take(16)
            .enumerate()
            .fold(0, |prefix, (i, &byte)| {
                prefix | (u128::from(byte) << (8 * (15 - i)))
            }),
    }
}

/// Whether UTF-16 order could differ from code-point order for these parameters: only when
/// some name or value holds a character at or above U+10000 (a four-byte UTF-8 sequence).
pub(crate) fn may_sort_differently_in_utf16(params: &Params) -> bool {
    // Bytes outside the pairs are ASCII, so the whole buffer can be scanned.
    !params.text.is_ascii() && params.text.bytes().any(|b| b >= 0xF0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(body: &str, order: SortOrder) -> String {
        let params = Params::parse(body.as_bytes());
        let mut out = Vec::new();
        canonicalize(&params, order, &mut out);
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

    #[test]
    fn values_decode_as_params_do() {
        for input in [
            "AccountSid=AC1&To=2",
            "To=2&AccountSid=AC1&AccountSid=AC2",
            "Account%53id=AC%31&AccountSid=AC2",
            "AccountSid=A+C",
            "&&AccountSid&x=1",
            "AccountSid==x",
            "bodySHA256=abc",
            "",
        ] {
            let expected: Vec<String> = Params::parse(input.as_bytes())
                .get_all("AccountSid")
                .map(str::to_owned)
                .collect();
            let found: Vec<String> = values(input, "AccountSid").map(Cow::into_owned).collect();
            assert_eq!(found, expected, "{input:?}");
        }
        let found: Vec<_> = values("AccountSid=AC1&AccountSid=AC2", "AccountSid").collect();
        assert!(matches!(
            found.as_slice(),
            [Cow::Borrowed("AC1"), Cow::Borrowed("AC2")]
        ));
    }

    #[test]
    fn json_content_type_table() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            " application/json ",
            "application/cloudevents-batch+json",
            "application/problem+JSON;x=1",
        ] {
            assert!(is_json(yes.as_bytes()), "{yes:?}");
        }
        for no in [
            "",
            "json",
            "+json",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "text/plain; x=application/json",
            "application/json-seq",
        ] {
            assert!(!is_json(no.as_bytes()), "{no:?}");
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
        assert!(may_sort_differently_in_utf16(&params));
        let ascii = Params::parse(b"b=1&a=2");
        assert!(!may_sort_differently_in_utf16(&ascii));
        assert_eq!(canonical("b=1&a=2", SortOrder::Utf16), "a2b1");
    }

    // The fast decoder must give exactly the pairs of the reference parser, whatever the bytes.
    #[test]
    fn parse_matches_form_urlencoded_on_awkward_input() {
        const ALPHABET: &[&[u8]] = &[
            b"a",
            b"B",
            b"=",
            b"&",
            b"+",
            b"%",
            b"%2",
            b"%2B",
            b"%2b",
            b"%zz",
            b"%C3",
            b"%A9",
            b"%F0%9F%98%80",
            b"%FF",
            b"%00",
            b"\xC3",
            b"\xA9",
            b"\xE2\x82",
            b"\xFF",
            "é".as_bytes(),
            "\u{1F600}".as_bytes(),
            b"==",
            b"&&",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = next() % 24;
            let input: Vec<u8> = (0..len)
                .flat_map(|_| {
                    ALPHABET[(next() % ALPHABET.len() as u64) as usize]
                        .iter()
                        .copied()
                })
                .collect();
            let expected: Vec<(String, String)> = form_urlencoded::parse(&input)
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
            let params = Params::parse(&input);
            let got: Vec<(String, String)> = params
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(&input));
            assert_eq!(params, Params::parse_lossy(&input));
        }
        // A character split between a name and a value is two bad sequences, not one é.
        assert_eq!(
            Params::parse(b"n%C3=%A9").iter().next(),
            Some(("n\u{FFFD}", "\u{FFFD}"))
        );
    }

    // The prefix-keyed sort must give exactly the plain "sort the tuples, drop repeats" order,
    // including for names that share 16 bytes or more, hold NUL bytes, or repeat.
    #[test]
    fn canonicalize_matches_a_plain_sort() {
        const NAMES: &[&str] = &[
            "",
            "a",
            "A",
            "ab",
            "a%00",
            "a%00b",
            "MediaUrl0",
            "MediaUrl1",
            "MediaUrl10",
            "MediaContentType0",
            "MediaContentType1",
            "MediaContentType",
            "MediaContentTypeX",
            "SmsSid",
            "SmsMessageSid",
            "%C3%A9",
            "e%CC%81",
            "%EF%BC%A1",
        ];
        const VALUES: &[&str] = &["", "1", "2", "10", "+1", "%2B1", "a+b", "%F0%9F%98%80"];
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..5_000 {
            // Up to 80 pairs, so that both the stack and the heap index buffers are used.
            let count = (next() % if round % 10 == 0 { 80 } else { 12 }) as usize;
            let body = (0..count)
                .map(|_| {
                    let name = NAMES[(next() % NAMES.len() as u64) as usize];
                    let value = VALUES[(next() % VALUES.len() as u64) as usize];
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("&");
            let params = Params::parse(body.as_bytes());
            let mut pairs: Vec<(&str, &str)> = params.iter().collect();
            pairs.sort_unstable();
            pairs.dedup();
            let expected: String = pairs.iter().flat_map(|(n, v)| [*n, *v]).collect();
            assert_eq!(canonical(&body, SortOrder::CodePoint), expected, "{body:?}");
            // Appending keeps what the buffer held.
            let mut out = b"prefix".to_vec();
            params.write_canonical(&mut out);
            assert_eq!(out, [b"prefix", expected.as_bytes()].concat());
        }
    }

    #[test]
    fn canonicalize_handles_more_pairs_than_the_packed_keys_index() {
        let body = (0..70_000)
            .map(|i| format!("n{}={}", (i * 7919) % 1000, i % 3))
            .collect::<Vec<_>>()
            .join("&");
        let params = Params::parse(body.as_bytes());
        let mut pairs: Vec<(&str, &str)> = params.iter().collect();
        pairs.sort_unstable();
        pairs.dedup();
        let expected: String = pairs.iter().flat_map(|(n, v)| [*n, *v]).collect();
        assert_eq!(canonical(&body, SortOrder::CodePoint), expected);
        assert_eq!(canonical(&body, SortOrder::Utf16), expected);
    }

    #[test]
    fn parse_allocates_exactly_once_per_buffer() {
        let body = b"&a=1&&b=2&c&";
        let params = Params::parse(body);
        // Exactly one slot per non-empty piece.
        assert_eq!(params.pairs.capacity(), 3);
        assert_eq!(params.text.capacity(), body.len());
        // Runs of empty pieces cost no index at all.
        let empty = Params::parse(&[b'&'; 1000]);
        assert!(empty.is_empty() && empty.pairs.capacity() == 0);
    }

    #[test]
    fn count_pairs_counts_non_empty_pieces() {
        for (input, expected) in [
            (&b""[..], 0),
            (b"&", 0),
            (b"&&&", 0),
            (b"a", 1),
            (b"=", 1),
            (b"a&", 1),
            (b"&a", 1),
            (b"a&&b", 2),
            (b"a=1&b=2&c", 3),
            (b"&=&&=", 2),
        ] {
            assert_eq!(count_pairs(input), expected, "{input:?}");
            assert_eq!(Params::parse(input).len(), expected, "{input:?}");
        }
        // Counted in blocks of 255 bytes: pieces that start on either side of a block's end,
        // in inputs of every length around a few blocks.
        let naive = |input: &[u8]| {
            input
                .split(|&b| b == b'&')
                .filter(|p| !p.is_empty())
                .count()
        };
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for len in (0..=1100).chain([4096, 65_536]) {
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if state.is_multiple_of(3) { b'&' } else { b'a' }
                })
                .collect();
            assert_eq!(count_pairs(&input), naive(&input), "length {len}");
        }
        let tiny: Vec<u8> = b"a&".iter().copied().cycle().take(65_536).collect();
        assert_eq!(count_pairs(&tiny), 32_768);
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
