//! The collector that reads the first answer for the replay guard's store; the guard answers
//! with the crate's [`ResponseBody`](crate::ResponseBody).

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame};

use crate::BoxError;

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
