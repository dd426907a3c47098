//! Per-caller rate limit on creates: a token bucket per caller name (or client address while
//! authentication is off), refilled continuously. Buckets live in memory behind a mutex held
//! only to update one entry; idle full buckets are dropped so the map stays small.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    state: Mutex<Buckets>,
}

/// The limits and the buckets under one lock, so that a reload (SIGHUP) changes the limits
/// between two takes, never during one.
struct Buckets {
    per_second: f64,
    burst: f64,
    by_key: HashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            state: Mutex::new(Buckets {
                per_second,
                burst: f64::from(burst.max(1)),
                by_key: HashMap::new(),
            }),
        }
    }

    /// Changes the limits from now on; a bucket keeps its tokens, capped at the new burst.
    pub fn set_limits(&self, per_second: f64, burst: u32) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.per_second = per_second;
        state.burst = f64::from(burst.max(1));
        let cap = state.burst;
        for (tokens, _) in state.by_key.values_mut() {
            *tokens = tokens.min(cap);
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until there is one.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (rate, burst) = (state.per_second, state.burst);
        if state.by_key.len() > 10_000 {
            state.by_key.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = state.by_key.entry(key.to_string()).or_insert((burst, now));
        let refilled =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let r = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.take_at("a", t0).is_ok()));
        assert_eq!(r.take_at("a", t0), Err(Duration::from_millis(500)));
        assert!(r.take_at("b", t0).is_ok(), "buckets are per caller");
        let later = t0 + Duration::from_millis(500);
        assert!(r.take_at("a", later).is_ok());
        let wait = r.take_at("a", later).unwrap_err();
        assert!(wait > Duration::from_millis(499) && wait <= Duration::from_millis(500));
    }

    #[test]
    fn new_limits_apply_to_the_next_take() {
        let r = RateLimiter::new(1.0, 5);
        let t0 = Instant::now();
        assert!(r.take_at("a", t0).is_ok());
        r.set_limits(1.0, 1);
        // The bucket had 4 tokens left; the new burst caps it at 1.
        assert!(r.take_at("a", t0).is_ok());
        assert!(r.take_at("a", t0).is_err());
        r.set_limits(1000.0, 1);
        assert!(r.take_at("a", t0 + Duration::from_millis(1)).is_ok());
    }
}
