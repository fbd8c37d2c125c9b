//! The bodies the middleware reads and hands on: the request body collected under the limit
//! ([`Collector`]), [`VerifiedBody`] to the inner service, and [`ResponseBody`] back to the
//! server.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

/// Reads a request body into memory, never holding more than the limit.
///
/// No copy when the body arrives in one chunk, as a small webhook does.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    buffer: Buffer,
}

/// The body read so far.
#[derive(Debug, Default)]
enum Buffer {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

/// Why a body could not be collected.
#[derive(Debug)]
pub(crate) enum CollectError {
    /// The body grew past the limit; what was read is dropped.
    TooLarge,
    /// The body's stream failed.
    Failed(BoxError),
}

impl Collector {
    /// Reads frames from `body` until it ends, fails or passes `limit` bytes. Trailers are
    /// skipped. Once it has returned `Ready`, the collector is empty again.
    pub(crate) fn poll_collect<B>(
        &mut self,
        mut body: Pin<&mut B>,
        limit: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, CollectError>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        loop {
            let Some(frame) = ready!(body.as_mut().poll_frame(cx)) else {
                return Poll::Ready(Ok(std::mem::take(self).freeze()));
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    *self = Self::default();
                    return Poll::Ready(Err(CollectError::Failed(error.into())));
                }
            };
            let Ok(mut data) = frame.into_data() else {
                continue; // trailers
            };
            if self.len() + data.remaining() > limit {
                *self = Self::default();
                return Poll::Ready(Err(CollectError::TooLarge));
            }
            self.push(data.copy_to_bytes(data.remaining()));
        }
    }

    fn len(&self) -> usize {
        match &self.buffer {
            Buffer::Empty => 0,
            Buffer::One(bytes) => bytes.len(),
            Buffer::Many(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, chunk: Bytes) {
        self.buffer = match std::mem::take(&mut self.buffer) {
            Buffer::Empty => Buffer::One(chunk),
            Buffer::One(first) => {
                let mut many = BytesMut::with_capacity(first.len() + chunk.len());
                many.extend_from_slice(&first);
                many.extend_from_slice(&chunk);
                Buffer::Many(many)
            }
            Buffer::Many(mut many) => {
                many.extend_from_slice(&chunk);
                Buffer::Many(many)
            }
        };
    }

    fn freeze(self) -> Bytes {
        match self.buffer {
            Buffer::Empty => Bytes::new(),
            Buffer::One(bytes) => bytes,
            Buffer::Many(bytes) => bytes.freeze(),
        }
    }
}

/// The request body the inner service receives: exactly the bytes Twilio sent, already in
/// memory. Works with axum's `Form`, `Json`, `Bytes` and `String` extractors and with any
/// `http_body::Body` consumer.
#[derive(Debug, Default, Clone)]
pub struct VerifiedBody {
    bytes: Full,
}

impl VerifiedBody {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self {
            bytes: Full::new(bytes),
        }
    }
}

impl Body for VerifiedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().bytes.poll_frame()
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.bytes.size_hint()
    }
}

/// Bytes held in full, handed on as one data frame (none when empty): the verified request
/// body, a rejection's body, a stored answer. The bodies that hold one call these from their
/// own `Body` methods, with their own error type.
#[derive(Default, Clone)]
pub(crate) struct Full(Option<Bytes>);

impl Full {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self((!bytes.is_empty()).then_some(bytes))
    }

    pub(crate) fn poll_frame<E>(&mut self) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        Poll::Ready(self.0.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |bytes| bytes.len() as u64))
    }
}

/// Its length only: a webhook's body holds phone numbers and message text, and a stored answer
/// what the handler wrote back; neither belongs in `Debug` output.
impl std::fmt::Debug for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Full")
            .field("len", &self.0.as_ref().map_or(0, Bytes::len))
            .finish()
    }
}

pin_project! {
    /// The response body of both layers: the inner service's body (or one of its type that a
    /// custom [`RejectionResponse`](crate::RejectionResponse) built), bytes held in full (the
    /// default rejection, an answer the [replay guard](crate::replay_guard) stored), or the
    /// first answer the guard read for its store, handed on with the rest of the body.
    ///
    /// Its data is [`Bytes`] and its error a [`BoxError`], whatever the inner body's.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // The inner service's body, untouched.
        Inner {
            #[pin]
            body: B,
        },
        // Bytes held in full: a rejection, a stored answer, a whole first answer.
        Full {
            data: Full,
        },
        // What was read of the inner body (and the frame or error that stopped the reading,
        // boxed: it is rare, and held inline it more than doubled every response body's size),
        // then the rest of it.
        Rest {
            prefix: Option<Bytes>,
            held: Option<Box<Result<Frame<Bytes>, BoxError>>>,
            #[pin]
            body: B,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: Full::new(data),
            },
        }
    }

    /// `prefix` and `held` (read from `body` by the replay guard), then the rest of `body`.
    pub(crate) fn rest(
        prefix: Bytes,
        held: Option<Result<Frame<Bytes>, BoxError>>,
        body: B,
    ) -> Self {
        Self {
            kind: Kind::Rest {
                prefix: (!prefix.is_empty()).then_some(prefix),
                held: held.map(Box::new),
                body,
            },
        }
    }
}

/// The inner service's kind of body, for a [`RejectionResponse`](crate::RejectionResponse)
/// that builds one: handed on as it is.
impl<B> From<B> for ResponseBody<B> {
    fn from(body: B) -> Self {
        Self::inner(body)
    }
}

/// An empty body, so that middleware such as tower-http's `Timeout`, which needs
/// `ResBody: Default`, can sit directly outside either layer.
impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

/// Which kind of body it is, never its bytes.
impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Full { .. } => "full",
            Kind::Rest { .. } => "rest",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => poll_inner(body, cx),
            KindProj::Full { data } => data.poll_frame(),
            KindProj::Rest { prefix, held, body } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                if let Some(held) = held.take() {
                    return Poll::Ready(Some(*held));
                }
                poll_inner(body, cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_end_stream(),
            Kind::Rest { prefix, held, body } => {
                prefix.is_none() && held.is_none() && body.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => data.size_hint(),
            Kind::Rest { prefix, held, body } => {
                // The prefix and a held data frame come before the rest of the body: a server
                // takes an exact hint for the `Content-Length` it writes.
                let mut hint = body.size_hint();
                let held = held
                    .as_deref()
                    .and_then(|held| held.as_ref().ok())
                    .and_then(Frame::data_ref)
                    .map_or(0, Bytes::len);
                let extra = prefix.as_ref().map_or(0, Bytes::len) as u64 + held as u64;
                // The upper bound first: a lower bound above it panics.
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper + extra);
                }
                hint.set_lower(hint.lower() + extra);
                hint
            }
        }
    }
}

/// The inner body's next frame, its data as [`Bytes`] (no copy when it already is) and its
/// error boxed.
fn poll_inner<B>(
    body: Pin<&mut B>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let frame = ready!(body.poll_frame(cx));
    Poll::Ready(frame.map(|frame| {
        frame
            .map(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
            .map_err(Into::into)
    }))
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, task::Waker};

    use super::*;

    /// A body that yields the given frames, one per poll, then ends.
    struct Frames(VecDeque<Result<Frame<Bytes>, BoxError>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.get_mut().0.pop_front())
        }
    }

    #[test]
    fn debug_output_shows_a_body_s_length_not_its_bytes() {
        let body = VerifiedBody::new(Bytes::from_static(b"From=%2B14155550100&Body=hello"));
        let debug = format!("{body:?}");
        assert!(!debug.contains("14155550100"), "{debug}");
        assert!(!debug.contains("hello"), "{debug}");
        assert!(debug.contains("len: 30"), "{debug}");
    }

    fn data(chunk: &'static str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(chunk.as_bytes())))
    }

    fn collect(
        frames: Vec<Result<Frame<Bytes>, BoxError>>,
        limit: usize,
    ) -> Result<Bytes, CollectError> {
        let mut body = Frames(frames.into());
        let mut cx = Context::from_waker(Waker::noop());
        match Collector::default().poll_collect(Pin::new(&mut body), limit, &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("a ready body collects at once"),
        }
    }

    #[test]
    fn a_first_answer_handed_on_gives_its_prefix_its_held_frame_then_the_rest() {
        // The body's size hint counts every byte it will give: a server writes an exact hint
        // as the `Content-Length`, and one short of the held frame sent an empty answer.
        let rest = || Frames(VecDeque::from([data("ef")]));
        let mut body = ResponseBody::rest(Bytes::from_static(b"ab"), Some(data("cd")), rest());
        // (The rest gives no hint of its own.)
        assert_eq!(body.size_hint().lower(), 4);
        assert!(!body.is_end_stream());
        let mut cx = Context::from_waker(Waker::noop());
        let mut given = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            given.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(given, ["ab", "cd", "ef"]);

        // A held error comes after the prefix, and nothing is counted for it.
        let error = Err(BoxError::from("cut"));
        let mut body = ResponseBody::rest(Bytes::from_static(b"ab"), Some(error), rest());
        assert_eq!(body.size_hint().lower(), 2);
        let first = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(first, Poll::Ready(Some(Ok(_)))));
        let second = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(second, Poll::Ready(Some(Err(_)))));

        // Held in full: exact.
        let full = ResponseBody::<Frames>::full(Bytes::from_static(b"<Response/>"));
        assert_eq!(full.size_hint().exact(), Some(11));
    }

    #[test]
    fn one_chunk_is_handed_on_without_a_copy() {
        let chunk = Bytes::from_static(b"AccountSid=AC1&Body=Hi");
        let pointer = chunk.as_ptr();
        let mut body = Frames(VecDeque::from([Ok(Frame::data(chunk))]));
        let mut cx = Context::from_waker(Waker::noop());
        let collected = Collector::default().poll_collect(Pin::new(&mut body), 64, &mut cx);
        let Poll::Ready(Ok(bytes)) = collected else {
            panic!("collects at once")
        };
        assert_eq!(bytes, "AccountSid=AC1&Body=Hi");
        assert_eq!(bytes.as_ptr(), pointer);
    }

    #[test]
    fn chunks_are_joined_in_order_and_trailers_skipped() {
        let trailers = Ok(Frame::trailers(http::HeaderMap::new()));
        let bytes = collect(vec![data("a=1"), data("&b=2"), trailers, data("&c=3")], 64).unwrap();
        assert_eq!(bytes, "a=1&b=2&c=3");
        assert!(collect(vec![], 64).unwrap().is_empty());
    }

    #[test]
    fn exactly_the_limit_passes_and_one_byte_more_is_too_large() {
        assert_eq!(
            collect(vec![data("12345"), data("678")], 8).unwrap(),
            "12345678"
        );
        assert!(matches!(
            collect(vec![data("12345"), data("6789")], 8),
            Err(CollectError::TooLarge)
        ));
        // The chunk that would pass the limit is refused before it is buffered.
        assert!(matches!(
            collect(vec![data("123456789")], 8),
            Err(CollectError::TooLarge)
        ));
    }

    #[test]
    fn a_failing_stream_is_reported_with_its_error() {
        let failed = collect(vec![data("a=1"), Err("connection reset".into())], 64);
        let Err(CollectError::Failed(error)) = failed else {
            panic!("expected a read failure, got {failed:?}")
        };
        assert_eq!(error.to_string(), "connection reset");
    }
}
