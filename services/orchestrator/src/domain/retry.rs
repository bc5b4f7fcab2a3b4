//! Retry policy: exponential backoff with full jitter.

use std::time::Duration;

/// How often and how patiently a step retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (≥ 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The pause before attempt `attempt + 1` (`attempt` ≥ 1 attempts made):
    /// uniform in `0..=min(max_delay, base_delay · 2^(attempt-1))`.
    pub fn delay(&self, attempt: u32, random_unit: f64) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        exp.min(self.max_delay).mul_f64(random_unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_scales_it() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        assert_eq!(policy.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(policy.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(policy.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(policy.delay(4, 1.0), Duration::from_millis(500));
        assert_eq!(policy.delay(40, 1.0), Duration::from_millis(500));
        assert_eq!(policy.delay(3, 0.5), Duration::from_millis(200));
        assert_eq!(policy.delay(3, 0.0), Duration::ZERO);
    }
}
