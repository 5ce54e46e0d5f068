//! When to try a failed delivery again (PRODUCT.md §6): exponential backoff
//! with jitter, each wait capped, giving up a day after the delivery was
//! created.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt; doubled after each further one.
    pub base: Duration,
    /// The longest single wait.
    pub max: Duration,
    /// No attempt starts later than this after the delivery was created.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// The shortest wait a receiver's `Retry-After` can ask for: `0` would let
/// a receiver that always asks for it keep us in a tight loop.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

impl RetryPolicy {
    /// `base × 2^(attempt−1)`, capped at `max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// When to make the attempt after failed attempt number `attempt` (1 for
    /// the first), or `None` to give up. "Equal jitter": a random wait
    /// between half the backoff and all of it, so that deliveries that
    /// failed together (a receiver was down) do not return together, while
    /// the waits still grow.
    pub fn next_attempt(
        &self,
        attempt: u32,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
        rng: &mut impl Rng,
    ) -> Option<DateTime<Utc>> {
        self.next_attempt_after(attempt, created_at, now, None, rng)
    }

    /// Like [`Self::next_attempt`], honouring the receiver's `Retry-After`
    /// (of a 429 or 503) instead of the backoff when it asks for no more
    /// than `max`; a longer wait is cut to `max`.
    pub fn next_attempt_after(
        &self,
        attempt: u32,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<DateTime<Utc>> {
        let wait = match retry_after {
            Some(asked) => asked.clamp(MIN_RETRY_AFTER, self.max.max(MIN_RETRY_AFTER)),
            None => {
                let full = self.backoff(attempt);
                let half = full / 2;
                half + full.saturating_sub(half).mul_f64(rng.gen_range(0.0..=1.0))
            }
        };
        let at = now + chrono::Duration::from_std(wait).ok()?;
        let deadline = created_at + chrono::Duration::from_std(self.give_up_after).ok()?;
        (at <= deadline).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn start() -> DateTime<Utc> {
        "2026-11-21T10:00:00Z".parse().unwrap()
    }

    fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
        (to - from).num_milliseconds() as f64 / 1000.0
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let waits: Vec<u64> = (1..=9).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(3600));
        assert_eq!(policy.backoff(0), Duration::from_secs(30));
    }

    #[test]
    fn each_wait_is_between_half_the_backoff_and_all_of_it() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        let now = start();
        for attempt in 1..=12 {
            let full = policy.backoff(attempt).as_secs_f64();
            let mut seen = Vec::new();
            for _ in 0..200 {
                let at = policy.next_attempt(attempt, now, now, &mut rng).unwrap();
                let wait = secs(now, at);
                assert!(wait >= full / 2.0 - 0.001 && wait <= full + 0.001, "{wait}");
                seen.push(wait);
            }
            // Jittered, not constant.
            seen.dedup();
            assert!(seen.len() > 100, "attempt {attempt}");
        }
    }

    #[test]
    fn retries_stop_a_day_after_creation() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        let created = start();
        let mut now = created;
        let mut attempt = 1;
        while let Some(at) = policy.next_attempt(attempt, created, now, &mut rng) {
            assert!(at > now);
            assert!(secs(created, at) <= 24.0 * 3600.0);
            now = at;
            attempt += 1;
        }
        // About 7 doubling waits to reach the hour cap, then hourly ones.
        assert!((25..=45).contains(&attempt), "{attempt} attempts");
        assert!(secs(created, now) > 22.0 * 3600.0, "{}", secs(created, now));
        // A delivery created long ago gets no retry at all.
        let old = created - chrono::Duration::hours(25);
        assert_eq!(policy.next_attempt(1, old, created, &mut rng), None);
    }

    #[test]
    fn short_policies_for_tests() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_millis(400),
            give_up_after: Duration::from_secs(2),
        };
        let mut rng = StdRng::seed_from_u64(3);
        let now = start();
        let wait = secs(now, policy.next_attempt(3, now, now, &mut rng).unwrap());
        assert!((0.2..=0.4).contains(&wait), "{wait}");
        let late = now + chrono::Duration::milliseconds(1_900);
        assert_eq!(policy.next_attempt(3, now, late, &mut rng), None);
    }

    #[test]
    fn retry_after_replaces_the_backoff_within_the_cap() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(5);
        let now = start();
        let asked = |secs_asked: u64, rng: &mut StdRng| {
            let at = policy
                .next_attempt_after(1, now, now, Some(Duration::from_secs(secs_asked)), rng)
                .unwrap();
            secs(now, at)
        };
        assert_eq!(asked(120, &mut rng), 120.0);
        assert_eq!(asked(5, &mut rng), 5.0);
        assert_eq!(asked(0, &mut rng), 1.0);
        assert_eq!(asked(7200, &mut rng), 3600.0);
        // Not past the deadline either.
        let late = now + chrono::Duration::hours(23) + chrono::Duration::minutes(59);
        assert_eq!(
            policy.next_attempt_after(9, now, late, Some(Duration::from_secs(120)), &mut rng),
            None
        );
    }
}
