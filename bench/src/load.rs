//! Closed-loop load: `concurrency` callers each issue one call after another
//! for a fixed time; every call's latency is kept for the percentiles.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// One call of the operation under test; the argument is unique per call
/// (callers use it to make distinct content).
pub type Call = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// How long each point runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one point measured.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Measurement {
    /// Successful calls per second.
    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Percentiles of `latencies` (sorted in place) over `elapsed`.
    pub fn from_latencies(
        mut latencies: Vec<Duration>,
        errors: u64,
        first_error: Option<String>,
        elapsed: Duration,
    ) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| {
            if latencies.is_empty() {
                Duration::ZERO
            } else {
                latencies[((latencies.len() - 1) as f64 * q).round() as usize]
            }
        };
        Self { calls: latencies.len() as u64, errors, first_error, p50: at(0.50), p99: at(0.99), elapsed }
    }
}

/// Runs `call` from `concurrency` tasks: `timing.warmup` unrecorded, then
/// `timing.measure` recorded.
pub async fn run(call: Call, concurrency: usize, timing: Timing, sequence: &Arc<AtomicU64>) -> Measurement {
    let start = Instant::now();
    let record_from = start + timing.warmup;
    let end = record_from + timing.measure;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            let sequence = sequence.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let mut errors = 0;
                let mut first_error = None;
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let outcome = call(sequence.fetch_add(1, Ordering::Relaxed)).await;
                    if began < record_from {
                        continue;
                    }
                    match outcome {
                        Ok(()) => latencies.push(began.elapsed()),
                        Err(err) => {
                            errors += 1;
                            first_error.get_or_insert(err);
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (mine, my_errors, my_first) = task.await.expect("a load task does not panic");
        latencies.extend(mine);
        errors += my_errors;
        first_error = first_error.or(my_first);
    }
    // Calls still in flight at `end` finish after it: measure to the last one.
    let elapsed = start.elapsed().saturating_sub(timing.warmup);
    Measurement::from_latencies(latencies, errors, first_error, elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let latencies = (1..=100).rev().map(Duration::from_millis).collect();
        let m = Measurement::from_latencies(latencies, 2, None, Duration::from_secs(2));
        assert_eq!(m.calls, 100);
        assert_eq!(m.p50, Duration::from_millis(51));
        assert_eq!(m.p99, Duration::from_millis(99));
        assert_eq!(m.per_second(), 50.0);
    }

    #[tokio::test]
    async fn run_counts_calls_and_errors_separately() {
        let call: Call =
            Arc::new(|n| Box::pin(async move { if n % 2 == 0 { Ok(()) } else { Err(format!("odd {n}")) } }));
        let timing = Timing { warmup: Duration::ZERO, measure: Duration::from_millis(50) };
        let m = run(call, 1, timing, &Arc::new(AtomicU64::new(0))).await;
        assert!(m.calls > 0);
        assert!(m.errors.abs_diff(m.calls) <= 1, "one caller alternates: {} ok, {} errors", m.calls, m.errors);
        assert!(m.first_error.unwrap().starts_with("odd "));
    }
}
