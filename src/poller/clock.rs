//! Unix time that follows tokio's clock.

use tokio::time::Instant;

/// Unix time that follows tokio's clock, so paused-time tests move it too.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    base_unix: f64,
    base: Instant,
}

impl Clock {
    pub(super) fn new() -> Self {
        let base_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            base_unix,
            base: Instant::now(),
        }
    }

    pub(super) fn now(&self) -> f64 {
        self.base_unix + self.base.elapsed().as_secs_f64()
    }
}
