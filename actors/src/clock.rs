//! The clock every decision uses (metric timings read `Instant` directly,
//! and decide nothing). Wall-clock base plus tokio's monotonic
//! clock, so that tests with paused tokio time move it deterministically.

use usher_engine::Millis;

#[derive(Clone, Debug)]
pub struct Clock {
    base_ms: i64,
    base: tokio::time::Instant,
}

impl Clock {
    pub fn system() -> Clock {
        let base_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Clock { base_ms, base: tokio::time::Instant::now() }
    }

    /// A clock that starts at `at`, for tests.
    pub fn starting_at(at: Millis) -> Clock {
        Clock { base_ms: at.0, base: tokio::time::Instant::now() }
    }

    pub fn now(&self) -> Millis {
        Millis(self.base_ms + self.base.elapsed().as_millis() as i64)
    }

    /// The tokio instant at which this clock reads `at`.
    pub fn instant_at(&self, at: Millis) -> tokio::time::Instant {
        let delta = (at.0 - self.base_ms).max(0) as u64;
        self.base + std::time::Duration::from_millis(delta)
    }
}
