//! The one backoff on the server side (the snippet uses the same scheme):
//! capped exponential with full jitter.

use std::time::Duration;

/// A delay in `[0, min(cap, base * 2^attempt))`; `random` is in `[0, 1)`.
pub fn full_jitter(attempt: u32, base: Duration, cap: Duration, random: f64) -> Duration {
    let ceiling = base.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX)).min(cap);
    ceiling.mul_f64(random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_exponential_full_jitter() {
        let ms = Duration::from_millis;
        assert_eq!(full_jitter(0, ms(50), ms(1000), 0.5), ms(25));
        assert_eq!(full_jitter(3, ms(50), ms(1000), 0.5), ms(200));
        assert_eq!(full_jitter(10, ms(50), ms(1000), 0.5), ms(500));
        assert_eq!(full_jitter(99, ms(50), ms(1000), 1.0), ms(1000));
        assert_eq!(full_jitter(5, ms(50), ms(1000), 0.0), ms(0));
    }
}
