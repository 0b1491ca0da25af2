use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::Stream;
use tokio::sync::mpsc;

use crate::{LlmError, LlmResult, StreamEvent, ToolCallDelta};

/// What a provider's reader hands the stream as it arrives. Small, unlike [`StreamEvent`] (whose
/// result is large): a stream's channel holds blocks of these.
pub(crate) enum Piece {
    Text(String),
    ToolCall(Box<ToolCallDelta>),
}

/// The tokens (and pieces of tool calls) of a streamed answer as they arrive, then
/// `Ok(Done(result))` or one `Err`.
///
/// The request runs inside this stream's `poll_next` (nothing is spawned): it progresses only
/// while the stream is polled, and dropping the stream drops the provider connection.
pub struct LlmStream<'a> {
    driver: Option<BoxFuture<'a, Result<LlmResult, LlmError>>>,
    tokens: mpsc::Receiver<Piece>,
    outcome: Option<Result<LlmResult, LlmError>>,
}

impl<'a> LlmStream<'a> {
    /// `driver` owns the sender of `tokens`, so the channel closes exactly when it finishes.
    pub(crate) fn new(
        driver: BoxFuture<'a, Result<LlmResult, LlmError>>,
        tokens: mpsc::Receiver<Piece>,
    ) -> Self {
        LlmStream {
            driver: Some(driver),
            tokens,
            outcome: None,
        }
    }
}

impl Stream for LlmStream<'_> {
    type Item = Result<StreamEvent, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(driver) = this.driver.as_mut() {
            if let Poll::Ready(outcome) = driver.as_mut().poll(cx) {
                this.driver = None;
                this.outcome = Some(outcome);
            }
        }
        // Tokens sent before the driver finished come out before its outcome.
        match this.tokens.poll_recv(cx) {
            Poll::Ready(Some(Piece::Text(text))) => Poll::Ready(Some(Ok(StreamEvent::Token(text)))),
            Poll::Ready(Some(Piece::ToolCall(delta))) => {
                Poll::Ready(Some(Ok(StreamEvent::ToolCall(*delta))))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(this.outcome.take().map(|o| o.map(StreamEvent::Done))),
        }
    }
}
