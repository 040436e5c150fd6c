//! Who may cost us resources, and how much. Every decision here is made on the
//! packet's real source address (what the kernel reported for the datagram or the TCP
//! connection), never on anything the peer wrote in a header.
//!
//! - [`Trunks`]: the networks calls are accepted from;
//! - [`RateLimiter`]: INVITEs per second per source (a token bucket), so one source
//!   (or a spoofed UDP one) cannot take every call slot;
//!   (and, slower, failed digest authentications per source, so passwords cannot be
//!   guessed from one address);
//! - [`PerSource`]: calls still being set up (ringing or answered but not yet ACKed)
//!   per source, since each holds a pair of RTP ports until Timer H.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::TrunkNetwork;

#[derive(Debug, Clone)]
pub struct Trunks(Vec<TrunkNetwork>);

impl Trunks {
    pub fn new(networks: Vec<TrunkNetwork>) -> Self {
        Trunks(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.network_of(ip).is_some()
    }

    /// The trunk network a source belongs to: media for a call signalled from it must
    /// come from (and go to) the same network.
    pub fn network_of(&self, ip: IpAddr) -> Option<TrunkNetwork> {
        self.0.iter().copied().find(|t| t.contains(ip))
    }
}

/// Sources tracked at most; past this, stale entries are dropped first and then new
/// sources are refused until some go quiet (a flood of spoofed sources cannot grow
/// the table without bound).
const MAX_TRACKED_SOURCES: usize = 65_536;

/// A token bucket per source address.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_second` sustained, bursts up to twice that (at least 1).
    pub fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        RateLimiter {
            per_second,
            burst: (per_second * 2.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `burst` at once, then one more every `refill`.
    pub fn with_burst(burst: u32, refill: std::time::Duration) -> Self {
        RateLimiter {
            per_second: 1.0 / refill.as_secs_f64().max(0.001),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `source` has a token at `now`, without taking it.
    pub fn has_token(&self, source: IpAddr, now: Instant) -> bool {
        let buckets = self.buckets.lock().expect("not poisoned");
        buckets.get(&source).is_none_or(|b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * self.per_second >= 1.0
        })
    }

    /// Takes one token for `source` at `now`; false when its bucket is empty.
    pub fn allow(&self, source: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().expect("not poisoned");
        if buckets.len() >= MAX_TRACKED_SOURCES && !buckets.contains_key(&source) {
            // Forget sources whose bucket has refilled: they are as good as new.
            let full = self.burst / self.per_second;
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() < full);
            if buckets.len() >= MAX_TRACKED_SOURCES {
                return false;
            }
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts things per source against a limit; a [`SourceSlot`] gives its place back
/// when dropped.
pub struct PerSource {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerSource {
    pub fn new(limit: usize) -> Self {
        PerSource {
            limit: limit.max(1),
            counts: Mutex::new(HashMap::new()),
        }
    }

    pub fn try_take(&self, source: IpAddr) -> Option<SourceSlot<'_>> {
        let mut counts = self.counts.lock().expect("not poisoned");
        let n = counts.entry(source).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            owner: self,
            source,
        })
    }

    pub fn count(&self, source: IpAddr) -> usize {
        let counts = self.counts.lock().expect("not poisoned");
        counts.get(&source).copied().unwrap_or(0)
    }
}

pub struct SourceSlot<'a> {
    owner: &'a PerSource,
    source: IpAddr,
}

impl Drop for SourceSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().expect("not poisoned");
        if let Some(n) = counts.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let limiter = RateLimiter::new(10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| limiter.allow(a, t0)).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
        assert!(limiter.allow(b, t0), "other sources are not affected");
        assert!(!limiter.allow(a, t0 + Duration::from_millis(50)));
        assert!(limiter.allow(a, t0 + Duration::from_millis(150)));
    }

    #[test]
    fn a_slow_bucket_locks_out_after_its_burst() {
        let failures = RateLimiter::with_burst(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(failures.has_token(a, t0));
            assert!(failures.allow(a, t0));
        }
        assert!(!failures.has_token(a, t0));
        assert!(!failures.has_token(a, t0 + Duration::from_secs(59)));
        assert!(failures.has_token(a, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn slots_are_given_back() {
        let pending = PerSource::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let one = pending.try_take(a).unwrap();
        let _two = pending.try_take(a).unwrap();
        assert!(pending.try_take(a).is_none());
        drop(one);
        assert_eq!(pending.count(a), 1);
        assert!(pending.try_take(a).is_some());
    }
}
