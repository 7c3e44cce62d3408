//! What wasmCloud 1.9.2 loses under load, reproduced on the lattice on demand.
//!
//! The host and its providers talk wRPC over NATS (`wrpc-transport-nats` 0.29). Every HTTP
//! body crosses as a deferred stream on its own subject, and the transport routes a
//! subject's messages through one demultiplexing task whose `select!` is unbiased: when a
//! body message and the subscription for it are both pending, the message can be routed
//! first and is dropped as having no subscriber (fixed after 1.9.2 by
//! bytecodealliance/wrpc#1272, "apply subscription commands before routing messages"). It
//! shows only when that task falls behind, i.e. under load. A receiver then sees a body cut
//! short (its data lost, its end delivered) or one that never ends (its end lost), and the
//! http-client provider can lose a component's outgoing call outright
//! ("failed to receive `wrpc:http/outgoing-handler@0.1.0.handle` async parameters"), so
//! the caller never gets an answer. [`crate::Faults::lose_request_bodies`] and
//! [`crate::Faults::lose_calls`] make the lattice do the same to chosen requests.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Whether a request declares a body (a non-zero `content-length`): only such requests
/// can lose one.
pub(crate) fn declares_body(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|length| length != "0")
}

/// How a request body is lost on its way into a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLoss {
    /// The data is lost and the end arrives: the body is empty while its `content-length`
    /// still says otherwise.
    Cut,
    /// The end is lost: the body never ends.
    Stalled,
}

/// A request body as it reaches a component: whole, or lost as [`BodyLoss`] says.
pub(crate) struct ArrivingBody<B> {
    inner: B,
    loss: Option<BodyLoss>,
}

impl<B> ArrivingBody<B> {
    /// `inner`, delivered with `loss` (whole when `None`).
    pub(crate) fn new(inner: B, loss: Option<BodyLoss>) -> Self {
        Self { inner, loss }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for ArrivingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.loss {
            None => Pin::new(&mut self.inner).poll_frame(cx),
            Some(BodyLoss::Cut) => Poll::Ready(None),
            Some(BodyLoss::Stalled) => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.loss {
            None => self.inner.is_end_stream(),
            Some(BodyLoss::Cut) => true,
            Some(BodyLoss::Stalled) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.loss {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

/// An answer body lost on its way out of a component: the head goes out (`content-length`
/// included: the server does not know the body's length, so it keeps the header), then the
/// body ends without a byte, so the caller sees the answer cut short.
#[derive(Default)]
pub(crate) struct CutAnswer {
    /// Whether the server has had the chance to send the head (the first poll is pending).
    head_sent: bool,
}

impl Body for CutAnswer {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.head_sent {
            return Poll::Ready(None);
        }
        self.head_sent = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
