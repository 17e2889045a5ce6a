//! The per-endpoint rate limiter: requests spaced `1/rate` apart, the rate adapted to the
//! cloud's throttling.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::time::Instant;

use crate::cloud;

/// Spaces requests to one endpoint `1/rate` apart, and adapts the rate to the cloud (AIMD):
/// a throttled answer halves it (at most once a second, API Gateway's throttling window, so a
/// burst of 429s for requests already in flight counts once), every other answer raises it by
/// a fiftieth of the configured rate, back up to the configured rate; it never drops below a
/// tenth of it. Written here rather than taken from `governor` because it must follow tokio's
/// clock (paused-time tests) and needs no burst logic.
pub(super) struct RateLimiter {
    endpoint: String,
    max_rate: f64,
    floor: f64,
    state: Mutex<LimiterState>,
}

pub(super) struct LimiterState {
    rate: f64,
    next: Instant,
    last_cut: Option<Instant>,
}

impl RateLimiter {
    pub(super) fn new(endpoint: &str, per_second: f64) -> Self {
        let max_rate = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            1.0
        };
        Self {
            endpoint: endpoint.to_string(),
            max_rate,
            floor: max_rate / 10.0,
            state: Mutex::new(LimiterState {
                rate: max_rate,
                next: Instant::now(),
                last_cut: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests per second allowed now.
    #[cfg(test)]
    pub(super) fn rate(&self) -> f64 {
        self.lock().rate
    }

    pub(super) async fn acquire(&self) {
        let slot = {
            let mut st = self.lock();
            let slot = st.next.max(Instant::now());
            st.next = slot + Duration::from_secs_f64(1.0 / st.rate);
            slot
        };
        // A timer for a slot already reached would still wait for the timer wheel's next
        // millisecond and cost a wake-up: most fetches of a refresh under the limit.
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }
}

impl cloud::Pacer for RateLimiter {
    fn acquire(&self) -> BoxFuture<'_, ()> {
        RateLimiter::acquire(self).boxed()
    }

    fn throttled(&self) {
        let now = Instant::now();
        let mut st = self.lock();
        if st
            .last_cut
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        st.last_cut = Some(now);
        let before = st.rate;
        st.rate = (st.rate / 2.0).max(self.floor);
        if st.rate < before {
            tracing::info!(
                endpoint = %self.endpoint,
                requests_per_second = st.rate,
                "the cloud is throttling; slowing down"
            );
        }
    }

    fn answered(&self) {
        let mut st = self.lock();
        st.rate = (st.rate + self.max_rate / 50.0).min(self.max_rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Pacer as _;

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_once_a_second_down_to_a_floor_and_answers_restore_it() {
        let l = RateLimiter::new("h", 100.0);
        l.throttled();
        assert_eq!(l.rate(), 50.0);
        // A burst of 429s for requests already in flight counts once.
        l.throttled();
        l.throttled();
        assert_eq!(l.rate(), 50.0);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            l.throttled();
        }
        assert_eq!(l.rate(), 10.0, "never below a tenth");
        for _ in 0..10 {
            l.answered();
        }
        assert!((l.rate() - 30.0).abs() < 1e-9, "{}", l.rate());
        for _ in 0..100 {
            l.answered();
        }
        assert_eq!(l.rate(), 100.0, "never above the configured rate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slowed_limiter_spaces_requests_further_apart() {
        let l = RateLimiter::new("h", 10.0);
        let start = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        let fast = start.elapsed();
        l.throttled();
        let start = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        let slow = start.elapsed();
        // Paused clock: exact. 5 slots at 10/s span 0.4 s; at 5/s, 5 slots after the last
        // 10/s one span 0.1 + 4 x 0.2 s.
        assert_eq!(fast, Duration::from_millis(400));
        assert_eq!(slow, Duration::from_millis(900));
    }
}
