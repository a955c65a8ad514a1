//! Rate limits with `governor` (GCRA): per principal for callers with
//! credentials, per address for anonymous ones, and tighter ones for the
//! doors that make identities (guest sessions, registrations) or test
//! passwords (log-in, per account and per address). A refusal carries how
//! long to wait.

use crate::limits::RATE_KEYS_MAX;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Requests per second and burst, by kind of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Rate {
    pub per_s: u32,
    pub burst: u32,
}

/// The rate table (docs/identity.md "Rate limits" repeats it). Partner keys get the most,
/// since one partner sells for many customers; the bench runs as one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct RateConfig {
    /// Anonymous callers, per address.
    pub anonymous: Rate,
    /// Signed-in users and guests, per principal.
    pub customer: Rate,
    /// Partner keys, per partner.
    pub partner: Rate,
    /// Gate devices, per device.
    pub gate: Rate,
    /// Registrations made per address, per minute.
    pub identities_per_address_per_min: u32,
    /// Guest sessions made per address, per hour: each guest is a new
    /// customer with its own hold cap, so this bounds what one address can
    /// hold (30 guests × 8 holds × the event's seats per hold).
    pub guest_sessions_per_address_per_hour: u32,
    /// Log-in attempts per account, and per address, per minute.
    pub logins_per_account_per_min: u32,
    pub logins_per_address_per_min: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            anonymous: Rate { per_s: 50, burst: 200 },
            customer: Rate { per_s: 20, burst: 100 },
            partner: Rate { per_s: 5_000, burst: 20_000 },
            gate: Rate { per_s: 50, burst: 200 },
            identities_per_address_per_min: 20,
            guest_sessions_per_address_per_hour: 30,
            logins_per_account_per_min: 5,
            logins_per_address_per_min: 30,
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

fn per_second(r: Rate) -> Quota {
    Quota::per_second(nz(r.per_s)).allow_burst(nz(r.burst.max(r.per_s)))
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(nz(n)).allow_burst(nz(n))
}

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(nz(n)).allow_burst(nz(n.min(10)))
}

/// Which limiter a check uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Anonymous,
    Customer,
    Partner,
    Gate,
    Identities,
    LoginAccount,
    LoginAddress,
    GuestSessions,
}

pub struct RateLimits {
    limiters: [DefaultKeyedRateLimiter<String>; 8],
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(c: &RateConfig) -> RateLimits {
        RateLimits {
            limiters: [
                RateLimiter::keyed(per_second(c.anonymous)),
                RateLimiter::keyed(per_second(c.customer)),
                RateLimiter::keyed(per_second(c.partner)),
                RateLimiter::keyed(per_second(c.gate)),
                RateLimiter::keyed(per_minute(c.identities_per_address_per_min)),
                RateLimiter::keyed(per_minute(c.logins_per_account_per_min)),
                RateLimiter::keyed(per_minute(c.logins_per_address_per_min)),
                RateLimiter::keyed(per_hour(c.guest_sessions_per_address_per_hour)),
            ],
            clock: DefaultClock::default(),
        }
    }

    /// Ok, or how long to wait before the next request can pass.
    pub fn check(&self, bucket: Bucket, key: impl Into<String>) -> Result<(), Duration> {
        let l = &self.limiters[bucket as usize];
        match l.check_key(&key.into()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Drops keys that are back to a full bucket (called every minute), and
    /// sooner when a limiter tracks too many.
    pub fn prune(&self) {
        for l in &self.limiters {
            l.retain_recent();
            if l.len() > RATE_KEYS_MAX {
                l.retain_recent();
            }
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_caller_is_told_when_to_come_back() {
        let r = RateLimits::new(&RateConfig { customer: Rate { per_s: 1, burst: 3 }, ..RateConfig::default() });
        for _ in 0..3 {
            assert!(r.check(Bucket::Customer, "u:1").is_ok());
        }
        let wait = r.check(Bucket::Customer, "u:1").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        // Another principal has its own bucket.
        assert!(r.check(Bucket::Customer, "u:2").is_ok());
    }
}
