//! [`StoredAnswer`]: the first answer to a webhook, kept for its copies.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// The answer the handler gave a webhook the first time, kept with its
/// [`ReplayKey`](super::ReplayKey) so that every copy within the window gets the same answer
/// (a Twilio retry of an SMS gets the same `<Message>`, a voice retry the same TwiML).
///
/// Holds the status (a 2xx: only those are stored), the `Content-Type`, and the body when it
/// was within the [guard's bound](crate::replay_guard::ReplayGuardLayer::max_answer_bytes);
/// a larger answer is stored as "done" without a body ([`body`](Self::body) is `None`) and
/// its copies get an empty answer.
///
/// `Debug` shows the status, the content type and the body's length, never the body (it may
/// hold a phone number or a message).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Option<Bytes>,
}

impl StoredAnswer {
    /// An answer with its body.
    pub fn new(status: StatusCode, content_type: Option<HeaderValue>, body: Bytes) -> Self {
        Self {
            status,
            content_type,
            body: Some(body),
        }
    }

    /// "Done" without the answer: the webhook was processed, its answer was not kept (larger
    /// than the bound, or a store that keeps no answers).
    pub fn done_only(status: StatusCode) -> Self {
        Self {
            status,
            content_type: None,
            body: None,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Content-Type` header, if the answer had one.
    pub fn content_type(&self) -> Option<&HeaderValue> {
        self.content_type.as_ref()
    }

    /// The body, or `None` when only "done" was kept.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// The bytes of answer data it holds (body and content type), which a store counts
    /// toward its size.
    pub fn len(&self) -> usize {
        self.body.as_ref().map_or(0, Bytes::len) + self.content_type.as_ref().map_or(0, |v| v.len())
    }

    /// Whether it holds no answer data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer in one byte string, for a store that keeps bytes (Redis): a version byte,
    /// the status (two bytes, big-endian), a flag byte (1: a body follows), the content type
    /// (two-byte length, then its bytes), then the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let content_type = self
            .content_type
            .as_ref()
            .map_or(&[][..], HeaderValue::as_bytes);
        let body = self.body.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(6 + content_type.len() + body.len());
        out.push(1);
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        out.push(u8::from(self.body.is_some()));
        // A content type longer than 64 KiB is not one; it is dropped rather than cut.
        let content_type = if content_type.len() > usize::from(u16::MAX) {
            &[][..]
        } else {
            content_type
        };
        out.extend_from_slice(&(content_type.len() as u16).to_be_bytes());
        out.extend_from_slice(content_type);
        out.extend_from_slice(body);
        out
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote; `None` if it is not that.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&[version, s1, s2, has_body, l1, l2], rest) = bytes.split_first_chunk::<6>()?;
        if version != 1 || has_body > 1 {
            return None;
        }
        let status = StatusCode::from_u16(u16::from_be_bytes([s1, s2])).ok()?;
        let length = usize::from(u16::from_be_bytes([l1, l2]));
        let (content_type, body) = (rest.get(..length)?, &rest[length..]);
        let content_type = match content_type {
            [] => None,
            bytes => Some(HeaderValue::from_bytes(bytes).ok()?),
        };
        if has_body == 0 && !body.is_empty() {
            return None;
        }
        Some(Self {
            status,
            content_type,
            body: (has_body == 1).then(|| Bytes::copy_from_slice(body)),
        })
    }
}

impl fmt::Debug for StoredAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredAnswer")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_garbage_is_refused() {
        let answers = [
            StoredAnswer::new(
                StatusCode::OK,
                Some(HeaderValue::from_static("text/xml")),
                Bytes::from_static(b"<Response><Message>hi</Message></Response>"),
            ),
            StoredAnswer::new(StatusCode::NO_CONTENT, None, Bytes::new()),
            StoredAnswer::done_only(StatusCode::ACCEPTED),
        ];
        for answer in answers {
            assert_eq!(StoredAnswer::from_bytes(&answer.to_bytes()), Some(answer));
        }
        for garbage in [
            &b""[..],
            b"d",
            b"\x02\x00\xc8\x00\x00\x00",
            b"\x01\x00\xc8\x00\x00\x09x",
        ] {
            assert_eq!(StoredAnswer::from_bytes(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_body() {
        let answer = StoredAnswer::new(StatusCode::OK, None, Bytes::from_static(b"+14155550100"));
        let shown = format!("{answer:?}");
        assert!(!shown.contains("4155550100"), "{shown}");
        assert!(shown.contains("body_len: Some(12)"), "{shown}");
    }
}
