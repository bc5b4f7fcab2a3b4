//! A bound on the request bytes a process holds at once
//! (`MAX_INFLIGHT_REQUEST_BYTES`): each call reserves the size of its first
//! message (its whole request, for a unary call) before that message is read,
//! and keeps the reservation until its answer is ready. When the budget is
//! spent, further calls wait — their bytes stay in the sender, held back by
//! HTTP/2 flow control — instead of growing memory past a container's limit.
//! A call larger than the whole budget runs alone.
//!
//! A call learns its size from its first HTTP/2 frame, so a call waiting for
//! the budget holds that frame (up to the server's frame size) outside it.
//! Those frames are bounded too: a call reads its first frame only with one
//! of a fixed number of slots (an eighth of the budget, in frames), and gives
//! the slot back when its bytes are reserved — or when no frame has arrived
//! yet, so a call whose client sends nothing holds no slot.

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
    /// One permit per first frame a call may hold while it waits for `budget`.
    first_frames: Arc<Semaphore>,
}

impl RequestBytesLayer {
    /// A bound of `max_bytes` for the whole process (every server shares it),
    /// for frames of at most `max_frame` bytes.
    pub fn new(max_bytes: usize, max_frame: usize) -> Self {
        let total_units = u32::try_from((max_bytes / UNIT).max(1)).unwrap_or(u32::MAX >> 3);
        let slots = (max_bytes / 8 / max_frame.max(1)).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            first_frames: Arc::new(Semaphore::new(slots)),
        }
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
        let request = request.map(|body| tonic::body::Body::new(Bounded::new(body, layer, slot.clone())));
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
    /// Nothing read yet; the first frame is read only with a slot.
    First {
        frame_slot: Option<OwnedSemaphorePermit>,
    },
    /// The first frame, held (in its slot) until its bytes are reserved.
    Reserving {
        frame: Frame<Bytes>,
        units: u32,
        waited: bool,
        /// Given back with the phase.
        _frame_slot: OwnedSemaphorePermit,
    },
    Passing,
}

pin_project_lite::pin_project! {
    struct Bounded {
        #[pin]
        inner: tonic::body::Body,
        budget: PollSemaphore,
        first_frames: PollSemaphore,
        total_units: u32,
        slot: Slot,
        phase: Phase,
    }
}

impl Bounded {
    fn new(inner: tonic::body::Body, layer: &RequestBytesLayer, slot: Slot) -> Self {
        Self {
            inner,
            budget: PollSemaphore::new(layer.budget.clone()),
            first_frames: PollSemaphore::new(layer.first_frames.clone()),
            total_units: layer.total_units,
            slot,
            phase: Phase::First { frame_slot: None },
        }
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
                Phase::First { frame_slot } => {
                    let Some(held) = frame_slot.take() else {
                        // The semaphore is never closed.
                        *frame_slot = ready!(this.first_frames.poll_acquire(cx));
                        continue;
                    };
                    match this.inner.as_mut().poll_frame(cx) {
                        // Nothing to hold yet: the slot goes back until a frame comes.
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(frame))) if frame.is_data() => {
                            let units = units_for(frame.data_ref().expect("a data frame"), *this.total_units);
                            *this.phase = Phase::Reserving { frame, units, waited: false, _frame_slot: held };
                        }
                        Poll::Ready(other) => {
                            *this.phase = Phase::Passing;
                            return Poll::Ready(other);
                        }
                    }
                }
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
        matches!(self.phase, Phase::Passing | Phase::First { .. }) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A gRPC message whose length prefix declares `len` bytes (its first frame).
    fn message(len: u32) -> Bytes {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.resize(5 + len.min(64) as usize, b'x');
        Bytes::from(bytes)
    }

    /// A client's body: its one frame comes when the test sends it, and the
    /// frames taken from it are counted.
    #[derive(Clone, Default)]
    struct Client {
        frame: Arc<Mutex<Option<Bytes>>>,
        taken: Arc<AtomicUsize>,
    }

    impl Client {
        fn send(&self, frame: Bytes) {
            *self.frame.lock().unwrap() = Some(frame);
        }
        fn taken(&self) -> usize {
            self.taken.load(Ordering::SeqCst)
        }
    }

    impl Body for Client {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            match self.frame.lock().unwrap().take() {
                Some(frame) => {
                    self.taken.fetch_add(1, Ordering::SeqCst);
                    Poll::Ready(Some(Ok(Frame::data(frame))))
                }
                None => Poll::Pending,
            }
        }
    }

    /// A call through `layer`: its client, its body as the service sees it, and its reservation.
    fn call(layer: &RequestBytesLayer) -> (Client, Pin<Box<Bounded>>, Slot) {
        let (client, slot) = (Client::default(), Slot::default());
        let body = Bounded::new(tonic::body::Body::new(client.clone()), layer, slot.clone());
        (client, Box::pin(body), slot)
    }

    /// Whether the service got the call's first frame.
    fn read(body: &mut Pin<Box<Bounded>>) -> bool {
        match body.as_mut().poll_frame(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Some(Ok(frame))) => frame.is_data(),
            Poll::Ready(other) => panic!("not a frame: {:?}", other.map(|r| r.map(|_| ()))),
            Poll::Pending => false,
        }
    }

    #[test]
    fn calls_waiting_for_the_budget_hold_at_most_its_frame_slots() {
        // 8 KiB of budget and 1 KiB frames: one slot (an eighth of the budget).
        let layer = RequestBytesLayer::new(8 * 1024, 1024);
        let (silent, mut silent_body, _) = call(&layer);
        assert!(!read(&mut silent_body), "nothing sent yet");
        assert_eq!(silent.taken(), 0);

        // A client that sends nothing holds no slot: the next call reads its frame.
        let (big, mut big_body, big_reservation) = call(&layer);
        big.send(message(8 * 1024 - 5));
        assert!(read(&mut big_body), "the whole budget is free");

        // The budget is spent: one call holds its first frame (in the slot) and waits...
        let (waiting, mut waiting_body, _) = call(&layer);
        waiting.send(message(100));
        assert!(!read(&mut waiting_body));
        assert_eq!(waiting.taken(), 1, "its frame is held, inside the slot");
        // ...and the next one's frame stays with its client.
        let (queued, mut queued_body, _) = call(&layer);
        queued.send(message(100));
        assert!(!read(&mut queued_body));
        assert_eq!(queued.taken(), 0, "no slot: its frame is not read");

        // The big call answers: the waiting call is admitted, its slot passes on.
        drop(big_reservation.lock().unwrap().take());
        assert!(read(&mut waiting_body));
        assert!(read(&mut queued_body));
        assert_eq!(queued.taken(), 1);
        silent.send(message(10));
        assert!(read(&mut silent_body), "the silent call is served once it speaks");
    }

    #[test]
    fn the_length_prefix_says_what_to_reserve() {
        assert_eq!(units_for(&message(10), 1000), 1, "at least one unit");
        assert_eq!(units_for(&message(10 * 1024 * 1024), 100_000), 10 * 1024 + 1);
        assert_eq!(units_for(&message(u32::MAX), 2048), 2048, "never more than the whole budget");
        assert_eq!(units_for(&Bytes::from_static(b"ab"), 10), 1);
    }
}
