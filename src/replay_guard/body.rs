//! [`ResponseBody`]: what the replay guard answers with, and the collector that reads the
//! first answer for the store.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// The response body of [`ReplayGuard`](super::ReplayGuard): the inner service's body, a
    /// stored answer given to a copy, or the first answer read for the store and handed on.
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
        // Bytes held in full: a stored answer, a whole first answer, a refusal.
        Full {
            data: crate::body::Full,
        },
        // What was read of the inner body (and the frame or error that stopped the reading),
        // then the rest of it.
        Rest {
            prefix: Option<Bytes>,
            held: Option<Result<Frame<Bytes>, BoxError>>,
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
                data: crate::body::Full::new(data),
            },
        }
    }

    pub(crate) fn rest(
        prefix: Bytes,
        held: Option<Result<Frame<Bytes>, BoxError>>,
        body: B,
    ) -> Self {
        Self {
            kind: Kind::Rest {
                prefix: (!prefix.is_empty()).then_some(prefix),
                held,
                body,
            },
        }
    }
}

/// An empty body, so that middleware such as tower-http's `Timeout`, which needs
/// `ResBody: Default`, can sit directly outside the guard.
impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
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
                    return Poll::Ready(Some(held));
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
            Kind::Rest { prefix, body, .. } => {
                let mut hint = body.size_hint();
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                hint.set_lower(hint.lower() + extra);
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

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

/// How reading the first answer ended.
pub(crate) enum Collected {
    /// The whole body, within the bound.
    Whole(Bytes),
    /// The reading stopped before the end: past the bound, at a trailers frame, or at an
    /// error. What was read, and the frame or error that stopped it; the rest is still in the
    /// body.
    Partial(Bytes, Option<Result<Frame<Bytes>, BoxError>>),
}

/// Reads the inner service's answer body up to a bound, so that it can be stored. No copy
/// when the body comes in one frame, as a TwiML answer does.
#[derive(Default)]
pub(crate) struct AnswerCollector {
    first: Option<Bytes>,
    more: BytesMut,
}

impl AnswerCollector {
    pub(crate) fn poll_collect<B>(
        &mut self,
        mut body: Pin<&mut B>,
        limit: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Collected>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        loop {
            let frame = match ready!(body.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(Collected::Whole(self.take())),
                Some(Err(error)) => {
                    return Poll::Ready(Collected::Partial(self.take(), Some(Err(error.into()))));
                }
                Some(Ok(frame)) => frame,
            };
            let mut data = match frame.into_data() {
                Ok(data) => data,
                Err(trailers) => {
                    let held = trailers
                        .into_trailers()
                        .map(Frame::trailers)
                        .map_err(|_| BoxError::from("a frame that is neither data nor trailers"));
                    return Poll::Ready(Collected::Partial(self.take(), Some(held)));
                }
            };
            let data = data.copy_to_bytes(data.remaining());
            if self.len() + data.len() > limit {
                return Poll::Ready(Collected::Partial(self.take(), Some(Ok(Frame::data(data)))));
            }
            match self.first.take() {
                None if self.more.is_empty() => self.first = Some(data),
                first => {
                    if let Some(first) = first {
                        self.more.extend_from_slice(&first);
                    }
                    self.more.extend_from_slice(&data);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.more.len()
    }

    fn take(&mut self) -> Bytes {
        match self.first.take() {
            Some(first) => first,
            None => std::mem::take(&mut self.more).freeze(),
        }
    }
}

impl std::fmt::Debug for AnswerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCollector")
            .field("read", &self.len())
            .finish()
    }
}

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
