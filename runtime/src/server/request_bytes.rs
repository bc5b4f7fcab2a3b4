//! A bound on the request bytes a process holds at once
//! (`MAX_INFLIGHT_REQUEST_BYTES`): each call reserves the size of its first
//! message (its whole request, for a unary call) before that message is read,
//! and keeps the reservation until its answer is ready. When the budget is
//! spent, further calls wait — their bytes stay in the sender, held back by
//! HTTP/2 flow control — instead of growing memory past a container's limit.
//! A call larger than the whole budget runs alone.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tower::{Layer, Service};

/// Reservations are counted in KiB (a semaphore counts in `u32`).
const UNIT: usize = 1024;

/// See the module documentation.
#[derive(Clone)]
pub struct RequestBytesLayer {
    budget: Arc<Semaphore>,
    total_units: u32,
}

impl RequestBytesLayer {
    /// A bound of `max_bytes` for the whole process (every server shares it).
    pub fn new(max_bytes: usize) -> Self {
        let total_units = u32::try_from((max_bytes / UNIT).max(1)).unwrap_or(u32::MAX >> 3);
        Self { budget: Arc::new(Semaphore::new(total_units as usize)), total_units }
    }
}

impl<S> Layer<S> for RequestBytesLayer {
    type Service = RequestBytes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBytes { inner, layer: self.clone() }
    }
}

/// See [`RequestBytesLayer`].
#[derive(Clone)]
pub struct RequestBytes<S> {
    inner: S,
    layer: RequestBytesLayer,
}

type Slot = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

impl<S, R> Service<http::Request<tonic::body::Body>> for RequestBytes<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Released<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let slot: Slot = Arc::default();
        let layer = &self.layer;
        let request = request.map(|body| {
            tonic::body::Body::new(Bounded {
                inner: body,
                budget: PollSemaphore::new(layer.budget.clone()),
                total_units: layer.total_units,
                slot: slot.clone(),
                phase: Phase::First,
            })
        });
        Released { inner: self.inner.call(request), slot }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer; the call's reservation ends with it.
    pub struct Released<F> {
        #[pin]
        inner: F,
        slot: Slot,
    }
}

impl<F: Future> Future for Released<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        if let Some(permit) = this.slot.lock().expect("reservation slot").take() {
            metrics::gauge!("grpc_inflight_request_bytes").decrement((permit.num_permits() * UNIT) as f64);
        }
        Poll::Ready(output)
    }
}

enum Phase {
    /// Nothing read yet.
    First,
    /// The first frame, held until its bytes are reserved.
    Reserving {
        frame: Frame<Bytes>,
        units: u32,
        waited: bool,
    },
    Passing,
}

pin_project_lite::pin_project! {
    struct Bounded {
        #[pin]
        inner: tonic::body::Body,
        budget: PollSemaphore,
        total_units: u32,
        slot: Slot,
        phase: Phase,
    }
}

/// The units a gRPC message needs: its length prefix (5 bytes: a flag and a
/// big-endian u32) says how long the message is.
fn units_for(first: &Bytes, total_units: u32) -> u32 {
    let declared = if first.len() >= 5 {
        let mut prefix = first.slice(1..5);
        prefix.get_u32() as usize + 5
    } else {
        first.len()
    };
    u32::try_from(declared.div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, total_units)
}

impl Body for Bounded {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        loop {
            match this.phase {
                Phase::Passing => return this.inner.as_mut().poll_frame(cx),
                Phase::First => match ready!(this.inner.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) if frame.is_data() => {
                        let units = units_for(frame.data_ref().expect("a data frame"), *this.total_units);
                        *this.phase = Phase::Reserving { frame, units, waited: false };
                    }
                    other => {
                        *this.phase = Phase::Passing;
                        return Poll::Ready(other);
                    }
                },
                Phase::Reserving { units, waited, .. } => {
                    let units = *units;
                    let permit = match this.budget.poll_acquire_many(cx, units) {
                        Poll::Ready(permit) => permit,
                        Poll::Pending => {
                            if !*waited {
                                *waited = true;
                                metrics::counter!("grpc_request_bytes_waits_total").increment(1);
                            }
                            return Poll::Pending;
                        }
                    };
                    if let Some(permit) = permit {
                        let bytes = (permit.num_permits() * UNIT) as f64;
                        let gauge = metrics::gauge!("grpc_inflight_request_bytes");
                        gauge.increment(bytes);
                        *this.slot.lock().expect("reservation slot") = Some(permit);
                    }
                    let Phase::Reserving { frame, .. } = std::mem::replace(this.phase, Phase::Passing) else {
                        unreachable!("in the reserving phase")
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.phase, Phase::Passing | Phase::First) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_prefix_says_what_to_reserve() {
        let message = |len: u32| {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(&len.to_be_bytes());
            Bytes::from(bytes)
        };
        assert_eq!(units_for(&message(10), 1000), 1, "at least one unit");
        assert_eq!(units_for(&message(10 * 1024 * 1024), 100_000), 10 * 1024 + 1);
        assert_eq!(units_for(&message(u32::MAX), 2048), 2048, "never more than the whole budget");
        assert_eq!(units_for(&Bytes::from_static(b"ab"), 10), 1);
    }
}
