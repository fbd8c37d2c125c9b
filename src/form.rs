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
    const FORM: &[u8] = b"application/x-www-form-urlencoded";
    // The spelling Twilio sends is one comparison; any other goes by the rules above.
    content_type == FORM || essence(content_type).eq_ignore_ascii_case(FORM)
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
    // The spelling Twilio sends is one comparison; any other goes by the rules above.
    if content_type == b"application/json" {
        return true;
    }
    let essence = essence(content_type);
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() > 5
            && essence.contains(&b'/')
            && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// Every value of `name` in `input` (a query string or form body), in order, decoded as
/// [`Params::parse`] decodes (see [`raw_values`] and [`decode_value`]).
#[cfg(test)]
pub(crate) fn values<'a>(input: &'a str, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> {
    raw_values(input, name).map(decode_value)
}

/// Every value of `name` in `input` (a query string or form body), in order, as it is spelled
/// there. Names are compared as they decode, without building them: nothing is allocated,
/// however many pairs `input` holds. `name` is ASCII.
pub(crate) fn raw_values<'a>(input: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    debug_assert!(name.is_ascii());
    input
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
        .filter(move |(raw_name, _)| decodes_to(raw_name, name))
        .map(|(_, raw_value)| raw_value)
}

/// The form-encoded `raw` decoded as [`Params::parse`] decodes a name or value: `+` is a
/// space, `%XX` a byte, a malformed escape itself, and bytes that are not UTF-8 replaced.
/// Borrowed unless something needed decoding.
pub(crate) fn decode_value(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw);
    }
    let bytes: Vec<u8> = decoded_bytes(raw).collect();
    match String::from_utf8(bytes) {
        Ok(text) => Cow::Owned(text),
        Err(error) => Cow::Owned(String::from_utf8_lossy(error.as_bytes()).into_owned()),
    }
}

/// Whether the raw form-encoded `raw` decodes to the ASCII `name` (as [`decode_value`] decodes;
/// decoded bytes equal to ASCII are UTF-8 already, so nothing is replaced in them), compared
/// as it decodes, without building it.
pub(crate) fn decodes_to(raw: &str, name: &str) -> bool {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return raw == name;
    }
    decoded_bytes(raw).eq(name.bytes())
}

/// The bytes the form-encoded `raw` decodes to: `+` is a space, `%XX` a byte, a malformed
/// escape itself. An escape never spans a `+` (it is not a hex digit), so the pieces between
/// them decode on their own.
fn decoded_bytes(raw: &str) -> impl Iterator<Item = u8> + '_ {
    raw.split('+').enumerate().flat_map(|(i, piece)| {
        (i > 0)
            .then_some(b' ')
            .into_iter()
            .chain(percent_encoding::percent_decode_str(piece))
    })
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
    /// The decoded names and values at the places `pairs` give, as `name=value&name=value…`:
    /// every byte outside them is ASCII (the separators, and after a parse filler at the end).
    text: String,
    pairs: Vec<Pair>,
}

/// Where one pair is in `Params::text`: its name at `start..name_end`, then the `=` and its
/// value up to `end` (`name_end == end` for a piece without `=`, whose value is empty), as
/// `u32`s so that a pair costs 12 bytes (the index is the part of a parse that grows with the
/// number of pairs rather than with the body).
#[derive(Clone, Copy)]
struct Pair {
    start: u32,
    name_end: u32,
    end: u32,
}

impl Pair {
    /// Offsets fit: [`Params::parse`] only indexes inputs shorter than [`MAX_INPUT`], and
    /// decoding never makes them longer than 3 times that.
    fn new(start: usize, name_end: usize, end: usize) -> Self {
        Self {
            start: start as u32,
            name_end: name_end as u32,
            end: end as u32,
        }
    }

    fn name(self) -> std::ops::Range<usize> {
        self.start as usize..self.name_end as usize
    }

    /// Whether this pair of `text` is named `name`: the lengths first, which tell most pairs
    /// apart without slicing the text.
    fn is_named(self, text: &[u8], name: &[u8]) -> bool {
        (self.name_end - self.start) as usize == name.len() && &text[self.name()] == name
    }

    fn value(self) -> std::ops::Range<usize> {
        (self.name_end as usize + 1).min(self.end as usize)..self.end as usize
    }
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

impl Params {
    /// Decodes a form body (or a raw query string). Never fails: see the type's docs for how
    /// unusual input is read.
    ///
    /// # Memory
    ///
    /// A parse allocates the decoded text (the body's length and 32 bytes) and an index of 12
    /// bytes per non-empty `&`-separated piece, sized exactly (runs of `&` cost nothing). For
    /// Twilio's webhooks, whose pairs average well over 12 bytes, that is less than twice the
    /// body; the worst case, a body of one-byte pairs (`a&a&a…`), is 7 times it, which
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
    /// The pair index and the sort keys cost 12 and 8 bytes a pair, which for one-byte pairs
    /// (`a&a&…`) is 10 times the body; bounding the number of pairs bounds them whatever the
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
        // One pass, 64 bytes at a time: the block is copied into `text` (every `+` as a space,
        // 16 bytes a copy), and its separators and escapes are found (see `special_bits`).
        // Separators only mark where names and values end; an escape is decoded in place and
        // makes the text two bytes shorter than the input from there on, so the rest of the
        // block is copied again, shifted, up to each special byte that follows. A copy may run
        // up to 15 bytes past its end, into bytes a later copy overwrites or the filler at the
        // end replaces. Neither buffer grows: decoding never makes the text longer, and the
        // index is sized to the number of non-empty pieces, counted first.
        let mut text = vec![0u8; input.len() + SLACK];
        let mut pairs = Vec::with_capacity(count);
        // Byte `i` of the input (outside escapes) is at `i - shift` in the text, which is up
        // to date for the input before `copied`.
        let (mut shift, mut copied) = (0, 0);
        // Where the current pair starts in the text, and where its name ends once an `=` has
        // ended it. The piece is empty (and no pair) when neither holds anything.
        let (mut pair_start, mut name_end) = (0, None);
        for block in (0..input.len()).step_by(64) {
            let block_end = (block + 64).min(input.len());
            if copied < block_end {
                copy_run(&mut text, copied - shift, input, copied, block_end);
                copied = block_end;
            }
            let mut specials = special_bits(&input[block..block_end]);
            while specials != 0 {
                let at = block + specials.trailing_zeros() as usize;
                specials &= specials - 1;
                if copied <= at {
                    copy_run(&mut text, copied - shift, input, copied, at + 1);
                    copied = at + 1;
                }
                let pos = at - shift;
                match input[at] {
                    b'&' => {
                        if name_end.is_some() || pos > pair_start {
                            pairs.push(Pair::new(pair_start, name_end.unwrap_or(pos), pos));
                        }
                        (pair_start, name_end) = (pos + 1, None);
                    }
                    b'=' if name_end.is_none() => name_end = Some(pos),
                    // A later `=` is part of the value.
                    b'=' => {}
                    _ => {
                        // A `%` that starts no escape stays as it is. A hex digit is never one
                        // of the bytes searched for, so no separator hides inside an escape.
                        if let Some(byte) = input.get(at + 1..at + 3).and_then(unescape) {
                            text[pos] = byte;
                            shift += 2;
                            copied = at + 3;
                        }
                    }
                }
            }
        }
        copy_run(&mut text, copied - shift, input, copied, input.len());
        let end = input.len() - shift;
        if name_end.is_some() || end > pair_start {
            pairs.push(Pair::new(pair_start, name_end.unwrap_or(end), end));
        }
        // The slack stays, as filler: a name or value near the end can be read as one
        // fixed-size window too (see `canonicalize`).
        text.truncate(end);
        text.resize(end + SLACK, b'&');
        // Every name and value is UTF-8 on its own exactly when the whole text is, because
        // the bytes between them are ASCII and ASCII bytes are always character boundaries.
        match String::from_utf8(text) {
            Ok(text) => Self { text, pairs },
            Err(error) => Self::lossy(&error.into_bytes(), &pairs),
        }
    }

    /// The decoded `text` and its `pairs`, with the bytes that are not UTF-8 replaced in each
    /// name and value separately, as the reference decoder (`form_urlencoded::parse`) does, laid
    /// out as [`from_pairs`](Self::from_pairs) lays them out. Two allocations, each sized
    /// exactly, whatever the number of pairs: the reference decoder built each name and value
    /// that needed decoding on its own (a forged body of 1000 of them, 5 000 allocations).
    fn lossy(text: &[u8], pairs: &[Pair]) -> Self {
        let replaced_len = |bytes: &[u8]| -> usize {
            bytes
                .utf8_chunks()
                .map(|chunk| {
                    let replacement = if chunk.invalid().is_empty() {
                        0
                    } else {
                        char::REPLACEMENT_CHARACTER.len_utf8()
                    };
                    chunk.valid().len() + replacement
                })
                .sum()
        };
        let push_replaced = |out: &mut String, bytes: &[u8]| {
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    out.push(char::REPLACEMENT_CHARACTER);
                }
            }
        };
        let size = pairs
            .iter()
            .map(|pair| replaced_len(&text[pair.name()]) + replaced_len(&text[pair.value()]) + 2)
            .sum();
        let mut params = Self {
            text: String::with_capacity(size),
            pairs: Vec::with_capacity(pairs.len()),
        };
        for pair in pairs {
            let start = params.text.len();
            push_replaced(&mut params.text, &text[pair.name()]);
            let name_end = params.text.len();
            params.text.push('=');
            push_replaced(&mut params.text, &text[pair.value()]);
            params
                .pairs
                .push(Pair::new(start, name_end, params.text.len()));
            params.text.push('&');
        }
        params
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
            let start = params.text.len();
            params.text.push_str(name.as_ref());
            let name_end = params.text.len();
            params.text.push('=');
            params.text.push_str(value.as_ref());
            params
                .pairs
                .push(Pair::new(start, name_end, params.text.len()));
            params.text.push('&');
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
            .find(|pair| pair.is_named(text, name.as_bytes()))?;
        Some(&self.text[pair.value()])
    }

    /// Every value of `name`, in the order received.
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        let text: &'s str = &self.text;
        self.pairs
            .iter()
            .filter(move |pair| pair.is_named(text.as_bytes(), name.as_bytes()))
            .map(move |pair| &text[pair.value()])
    }

    /// All `(name, value)` pairs, in the order received.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone + '_ {
        self.pairs
            .iter()
            .map(|pair| (&self.text[pair.name()], &self.text[pair.value()]))
    }

    /// Pair `index` as bytes: no character-boundary checks, for sorting.
    fn pair_bytes(&self, index: usize) -> (&[u8], &[u8]) {
        let pair = self.pairs[index];
        let text = self.text.as_bytes();
        (&text[pair.name()], &text[pair.value()])
    }

    /// Pair `index` as text.
    fn pair(&self, index: usize) -> (&str, &str) {
        let pair = self.pairs[index];
        (&self.text[pair.name()], &self.text[pair.value()])
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
    /// use tower_twilio::{__private::write_canonical, form::Params};
    ///
    /// let params = Params::parse(b"To=%2B1&From=%2B2&Digits=9&Digits=1&Digits=9");
    /// let mut signed = Vec::new();
    /// write_canonical(&params, &mut signed);
    /// assert_eq!(signed, b"Digits1Digits9From+2To+1");
    /// ```
    pub(crate) fn write_canonical(&self, out: &mut Vec<u8>) {
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
    // `u8` over blocks of 448 bytes: a start is a `&` followed by a byte that is not one, so a
    // block holds at most 224 and the sum cannot wrap. The loop has no branch and no bounds
    // check, and is vectorised 16 bytes at a time. `windows(2)` with `&&` counted one or two
    // bytes at a time and took a third of a 4 KB MMS webhook's verification; blocks of 255
    // bytes left 15 of each to a loop of one byte at a time (a multiple of 64 leaves none).
    const BLOCK: usize = 448;
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

/// Bit `i` set when `block[i]` (at most 64 bytes) is `&`, `=` or `%`: the same work whatever
/// the bytes hold. The comparisons give a 0 or 1 per byte (vectorised, 16 bytes an
/// instruction); each eight of those are packed into eight bits with one multiplication, which
/// moves byte `i`'s bit to bit 56 + `i` without carries.
#[inline]
fn special_bits(block: &[u8]) -> u64 {
    let block = match block.first_chunk::<64>() {
        Some(block) => *block,
        // The last block, padded with zeros, which are not special.
        None => {
            let mut padded = [0u8; 64];
            padded[..block.len()].copy_from_slice(block);
            padded
        }
    };
    let flags =
        block.map(|byte| u8::from(byte == b'&') | u8::from(byte == b'=') | u8::from(byte == b'%'));
    flags
        .chunks_exact(8)
        .enumerate()
        .fold(0, |bits, (i, eight)| {
            let eight = u64::from_le_bytes(eight.try_into().expect("eight bytes"));
            bits | (eight.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * i)
        })
}

/// The length of the copies [`copy_run`] makes, and so the slack it needs after its end.
const RUN: usize = 16;

/// The bytes a parsed text has after its last pair: the copies' slack while parsing, then
/// filler, so that `canonicalize` can read any name's or value's first `SLACK` bytes at once.
const SLACK: usize = 32;

/// Copies `input[from..to]` to `text[at..]`, every `+` as a space. Copies [`RUN`] bytes at a
/// time, so it may write up to `RUN - 1` bytes past the end: `text` must extend `RUN` bytes
/// past any position a copy can reach.
#[inline(always)]
fn copy_run(text: &mut [u8], at: usize, input: &[u8], from: usize, to: usize) {
    let (mut read, mut write) = (from, at);
    while read < to {
        let chunk = match input[read..].first_chunk::<RUN>() {
            Some(chunk) => *chunk,
            None => {
                let mut chunk = [0u8; RUN];
                chunk[..input.len() - read].copy_from_slice(&input[read..]);
                chunk
            }
        };
        let chunk = chunk.map(|byte| if byte == b'+' { b' ' } else { byte });
        text[write..write + RUN].copy_from_slice(&chunk);
        read += RUN;
        write += RUN;
    }
}

/// The byte a `%XX` escape's two digits `XX` stand for, if they are hex digits.
fn unescape(digits: &[u8]) -> Option<u8> {
    let [high, low] = *digits else { return None };
    let (high, low) = (HEX[usize::from(high)], HEX[usize::from(low)]);
    ((high | low) < 16).then_some((high << 4) | low)
}

/// The value of each hex digit, and 0xFF for every other byte.
const HEX: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

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
/// For code-point order it sorts plain `u64` keys, on the stack for up to 64 pairs: the first
/// bytes of the name above the pair's index (one comparison an instruction): 7 bytes for up to
/// 256 pairs, 6 for up to 65 536. Entries whose prefixes are equal are then put in order by
/// their whole name and value. The only allocation is `out`'s.
pub(crate) fn canonicalize(params: &Params, order: SortOrder, out: &mut Vec<u8>) {
    const ON_STACK: usize = 64;
    let count = params.len();
    // The index takes a byte of the key, or two for more than 256 pairs.
    let index_bits = if count <= 1 << 8 { 8 } else { 16 };
    let index_mask: Key = (1 << index_bits) - 1;
    let text = params.text.as_bytes();
    let mut on_stack = [0; ON_STACK];
    let mut on_heap = Vec::new();
    let keys: &mut [Key] = if count <= ON_STACK {
        &mut on_stack[..count]
    } else {
        on_heap.resize(count, 0);
        &mut on_heap
    };
    // With more pairs than the key has room for, the keys are plain indices.
    let packed = order == SortOrder::CodePoint && count <= 1 << 16;
    let index_bits = if packed { index_mask } else { Key::MAX };
    let index_of = |key: Key| (key & index_bits) as usize;
    // Sorting the (name, value) tuples orders names first and each name's values second,
    // which is exactly "names sorted, then each name's distinct values sorted"; repeats end
    // up next to each other.
    if packed {
        // Code-point order is the order of the UTF-8 bytes, so wherever two prefixes differ
        // they order the names.
        for ((index, key), pair) in keys.iter_mut().enumerate().zip(&params.pairs) {
            *key = (name_prefix(text, *pair) & !index_mask) | index as Key;
        }
        sort_keys(keys);
    } else {
        for (index, key) in keys.iter_mut().enumerate() {
            *key = index as Key;
        }
        match order {
            SortOrder::CodePoint => keys.sort_unstable_by(|a, b| {
                params
                    .pair_bytes(index_of(*a))
                    .cmp(&params.pair_bytes(index_of(*b)))
            }),
            SortOrder::Utf16 => keys.sort_unstable_by(|a, b| {
                let (a, b) = (params.pair(index_of(*a)), params.pair(index_of(*b)));
                order
                    .compare(a.0, b.0)
                    .then_with(|| order.compare(a.1, b.1))
            }),
        }
    }
    // Slack lets a short name or value go in as one fixed-size copy.
    out.reserve(text.len() + SLACK);
    let mut written = Written { out };
    // Most keys share their prefix with no other key, and their pair goes in as it is. Runs of
    // keys with the same prefix (a name's repeats, or names that share their first 7 bytes)
    // are put in order by their whole name and value, and their repeats dropped. Unpacked keys
    // are in order already, and all one run.
    let prefix_of = |key: Key| key & !index_bits;
    let mut start = 0;
    while let Some(&key) = keys.get(start) {
        let alone = |next: &Key| prefix_of(*next) != prefix_of(key);
        if keys.get(start + 1).is_none_or(alone) {
            written.pair(text, params.pairs[index_of(key)]);
            start += 1;
            continue;
        }
        let end = keys[start + 1..]
            .iter()
            .position(alone)
            .map_or(keys.len(), |n| start + 1 + n);
        written.run(params, &mut keys[start..end], index_bits, packed);
        start = end;
    }
}

/// The canonical string, written into a buffer with room for it.
struct Written<'a> {
    out: &'a mut Vec<u8>,
}

impl Written<'_> {
    /// Appends the distinct pairs of a run of keys that share their prefix, in order: sorted
    /// by their whole name and value first when `sort`.
    #[cold]
    fn run(&mut self, params: &Params, run: &mut [Key], index_bits: Key, sort: bool) {
        let index_of = |key: Key| (key & index_bits) as usize;
        if sort {
            run.sort_unstable_by(|a, b| {
                params
                    .pair_bytes(index_of(*a))
                    .cmp(&params.pair_bytes(index_of(*b)))
            });
        }
        let mut previous = None;
        for &key in run.iter() {
            let pair = params.pair_bytes(index_of(key));
            if previous != Some(pair) {
                self.pair(params.text.as_bytes(), params.pairs[index_of(key)]);
                previous = Some(pair);
            }
        }
    }

    /// Appends `name ‖ value` of `pair`.
    #[inline(always)]
    fn pair(&mut self, text: &[u8], pair: Pair) {
        self.push(text, pair.name());
        self.push(text, pair.value());
    }

    /// Appends `text[range]`: a short one as a fixed-size copy (not a call to `memcpy`) cut
    /// back to its length, which needs [`SLACK`] bytes of spare capacity.
    #[inline(always)]
    fn push(&mut self, text: &[u8], range: std::ops::Range<usize>) {
        match text[range.start..].first_chunk::<SLACK>() {
            Some(window) if range.len() <= SLACK => {
                let at = self.out.len();
                self.out.extend_from_slice(window);
                self.out.truncate(at + range.len());
            }
            _ => self.out.extend_from_slice(&text[range]),
        }
    }
}

/// Sorts `keys`: by insertion for the few of a webhook (where the standard sort's
/// partitioning costs more below a few dozen keys).
fn sort_keys(keys: &mut [Key]) {
    if keys.len() > 32 {
        keys.sort_unstable();
        return;
    }
    for i in 1..keys.len() {
        let key = keys[i];
        let mut j = i;
        while j > 0 && keys[j - 1] > key {
            keys[j] = keys[j - 1];
            j -= 1;
        }
        keys[j] = key;
    }
}

/// The first 8 bytes of `pair`'s name, zero-padded, as a number that orders like the bytes:
/// when two prefixes differ, the names differ the same way (a name that ends early is padded
/// with zeros and is also the smaller name).
fn name_prefix(text: &[u8], pair: Pair) -> Key {
    const BYTES: usize = Key::BITS as usize / 8;
    let name = pair.name();
    let len = name.len();
    match text[name.start..].first_chunk::<BYTES>() {
        // One load, then the bytes past the name masked off.
        Some(window) => {
            let word = Key::from_be_bytes(*window);
            if len >= BYTES {
                word
            } else {
                word & !(Key::MAX >> (8 * len))
            }
        }
        None => text[name]
            .iter()
            .take(BYTES)
            .enumerate()
            .fold(0, |prefix, (i, &byte)| {
                prefix | (Key::from(byte) << (8 * (BYTES - 1 - i)))
            }),
    }
}

/// A sort key: a name's first bytes above the pair's index.
type Key = u64;

/// Whether UTF-16 order could differ from code-point order for these parameters: only when
/// some name or value holds a character at or above U+10000 (a four-byte UTF-8 sequence).
pub(crate) fn may_sort_differently_in_utf16(params: &Params) -> bool {
    // Bytes outside the pairs are ASCII, so the whole buffer can be scanned.
    !params.text.is_ascii() && params.text.bytes().any(|b| b >= 0xF0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical string built the plain way, to check the fast one against: the pairs
    /// sorted by name then value with the standard library's sort, exact repeats dropped,
    /// concatenated.
    fn sorted_the_slow_way(params: &Params) -> String {
        let mut pairs: Vec<(&str, &str)> = params.iter().collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs.iter().flat_map(|(n, v)| [*n, *v]).collect()
    }

    fn canonical(body: &str, order: SortOrder) -> String {
        let params = Params::parse(body.as_bytes());
        let mut out = Vec::new();
        canonicalize(&params, order, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Asserts that `is` says yes to every spelling in `yes` and no to every one in `no`.
    fn check_content_types(is: fn(&[u8]) -> bool, yes: &[&str], no: &[&str]) {
        for spelling in yes {
            assert!(is(spelling.as_bytes()), "{spelling:?}");
        }
        for spelling in no {
            assert!(!is(spelling.as_bytes()), "{spelling:?}");
        }
    }

    #[test]
    fn content_type_table() {
        check_content_types(
            is_form_urlencoded,
            &[
                "application/x-www-form-urlencoded",
                "application/x-www-form-urlencoded; charset=UTF-8",
                "Application/X-WWW-Form-URLEncoded;charset=utf-8",
                " application/x-www-form-urlencoded ",
            ],
            &[
                "",
                "application/json",
                "application/x-www-form-urlencodedx",
                "multipart/form-data; boundary=x",
                "text/plain; x=application/x-www-form-urlencoded",
            ],
        );
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
            "Account+Sid=AC1&Account%20Sid=AC2&Account%2BSid=AC3&AccountSid%=AC4",
            "%41ccount%53i%64=AC%25%2&Accoun%74Sid=%FF+x&%41ccountSid&AccountSi%6=AC5",
            "AccountSid%00=AC1&%00AccountSid=AC2&AccountSid=%",
        ] {
            let expected: Vec<String> = Params::parse(input.as_bytes())
                .get_all("AccountSid")
                .map(str::to_owned)
                .collect();
            let found: Vec<String> = values(input, "AccountSid").map(Cow::into_owned).collect();
            assert_eq!(found, expected, "{input:?}");
            // A name with a space, spelled with `+` or `%20`.
            let expected: Vec<String> = Params::parse(input.as_bytes())
                .get_all("Account Sid")
                .map(str::to_owned)
                .collect();
            let found: Vec<String> = values(input, "Account Sid").map(Cow::into_owned).collect();
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
        check_content_types(
            is_json,
            &[
                "application/json",
                "application/json; charset=utf-8",
                "Application/JSON",
                " application/json ",
                "application/cloudevents-batch+json",
                "application/problem+JSON;x=1",
            ],
            &[
                "",
                "json",
                "+json",
                "application/jsonx",
                "application/x-www-form-urlencoded",
                "text/plain; x=application/json",
                "application/json-seq",
            ],
        );
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
        // Up to `pieces` pieces of `alphabet`, drawn at random.
        let mut random_input = |alphabet: &[&[u8]], pieces: u64| -> Vec<u8> {
            let len = next() % pieces;
            (0..len)
                .flat_map(|_| {
                    alphabet[(next() % alphabet.len() as u64) as usize]
                        .iter()
                        .copied()
                })
                .collect()
        };
        // Our pairs must be the reference parser's.
        let check = |input: &[u8], params: &Params| {
            let expected: Vec<(String, String)> = form_urlencoded::parse(input)
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
            let got: Vec<(String, String)> = params
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(input));
        };
        for round in 0..20_000 {
            // One input in ten spans several 64-byte blocks, with escapes across their ends.
            let input = random_input(ALPHABET, if round % 10 == 0 { 160 } else { 24 });
            let params = Params::parse(&input);
            check(&input, &params);
            assert_eq!(params, Params::from_pairs(form_urlencoded::parse(&input)));
        }
        // Inputs of several 64-byte blocks, with escapes across the blocks' ends, that decode
        // to UTF-8 (so that the fast decoder's result is the one kept).
        // The pieces that decode to UTF-8 on their own (no escape of a byte of 0x80 or more),
        // and escapes that decode to whole characters together.
        let escapes_high_byte = |piece: &[u8]| {
            piece.windows(3).any(|w| {
                w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit() && w[1] >= b'8'
            })
        };
        let valid: Vec<&[u8]> = ALPHABET
            .iter()
            .copied()
            .filter(|piece| std::str::from_utf8(piece).is_ok() && !escapes_high_byte(piece))
            .chain([
                b"%C3%A9".as_slice(),
                b"%F0%9F%98%80",
                b"abcdefghijklmnopqrstuvwxyz",
            ])
            .collect();
        for _ in 0..5_000 {
            let input = random_input(&valid, 120);
            check(&input, &Params::parse(&input));
        }
        // A character split between a name and a value is two bad sequences, not one é.
        assert_eq!(
            Params::parse(b"n%C3=%A9").iter().next(),
            Some(("n\u{FFFD}", "\u{FFFD}"))
        );
    }

    // The prefix-keyed sort must give exactly the plain "sort the tuples, drop repeats" order,
    // including for names that share their first 6 bytes or more, hold NUL bytes, or repeat.
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
            let expected = sorted_the_slow_way(&params);
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
        let expected = sorted_the_slow_way(&Params::parse(body.as_bytes()));
        assert_eq!(canonical(&body, SortOrder::CodePoint), expected);
        assert_eq!(canonical(&body, SortOrder::Utf16), expected);
    }

    #[test]
    fn parse_allocates_exactly_once_per_buffer() {
        let body = b"&a=1&&b=2&c&";
        let params = Params::parse(body);
        // Exactly one slot per non-empty piece.
        assert_eq!(params.pairs.capacity(), 3);
        // The body's length, and the slack of the copies.
        assert_eq!(params.text.capacity(), body.len() + SLACK);
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
        // Counted in blocks: pieces that start on either side of a block's end,
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
