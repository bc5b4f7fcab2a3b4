//! A request message that does not decode (invalid UTF-8 in a string field,
//! a truncated message) is the caller's mistake: tonic answers it INTERNAL,
//! this layer turns that into INVALID_ARGUMENT before anyone sees it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tower::{Layer, Service};

/// The message prefix tonic gives a request it could not decode.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";

/// Answers undecodable requests INVALID_ARGUMENT instead of INTERNAL.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorLayer;

impl<S> Layer<S> for DecodeErrorLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors { inner }
    }
}

/// See [`DecodeErrorLayer`].
#[derive(Debug, Clone)]
pub struct DecodeErrors<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DecodeErrors<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Rewritten<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        Rewritten { inner: self.inner.call(request) }
    }
}

pin_project_lite::pin_project! {
    /// The inner response, with a decode failure's status rewritten.
    pub struct Rewritten<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for Rewritten<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().inner.poll(cx))?;
        rewrite(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

/// A trailers-only INTERNAL answer to an undecodable request becomes INVALID_ARGUMENT.
fn rewrite(headers: &mut http::HeaderMap) {
    let internal = headers.get("grpc-status").is_some_and(|s| s == "13");
    let decode = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| percent_decode(m).starts_with(DECODE_FAILURE))
        .unwrap_or(false);
    if internal && decode {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
}

/// grpc-message is percent-encoded; the prefix we look for has only spaces to decode.
fn percent_decode(message: &str) -> String {
    message.replace("%20", " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decode_failures_are_rewritten() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", "13".parse().unwrap());
        headers.insert("grpc-message", "failed%20to%20decode%20Protobuf%20message: invalid utf-8".parse().unwrap());
        rewrite(&mut headers);
        assert_eq!(headers["grpc-status"], "3");
        let mut other = http::HeaderMap::new();
        other.insert("grpc-status", "13".parse().unwrap());
        other.insert("grpc-message", "something%20else".parse().unwrap());
        rewrite(&mut other);
        assert_eq!(other["grpc-status"], "13");
    }
}
