//! Login throttling: attempts per username and per client address, each a keyed GCRA limiter
//! (`governor`) refilled over a minute. Every attempt counts, and a throttled one is refused
//! before its password is checked, so guessing does not go on behind the refusals.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Addresses may be shared (a NAT, a jump host): they get this many times a username's budget.
const ADDRESS_FACTOR: u32 = 10;

/// Keys kept before the idle ones are dropped.
const KEYS_KEPT: usize = 10_000;

struct Limiters {
    per_minute: u32,
    users: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
}

impl Limiters {
    fn new(per_minute: u32) -> Limiters {
        let quota =
            |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN));
        Limiters {
            per_minute,
            users: RateLimiter::keyed(quota(per_minute)),
            addresses: RateLimiter::keyed(quota(per_minute.saturating_mul(ADDRESS_FACTOR))),
        }
    }
}

pub struct Throttle {
    limiters: Mutex<Limiters>,
}

impl Throttle {
    pub fn new(per_minute: u32) -> Throttle {
        Throttle {
            limiters: Mutex::new(Limiters::new(per_minute)),
        }
    }

    /// Count an attempt for `username` from `address`; `Err` says how long to wait when one of
    /// them is out of attempts. A changed `per_minute` (the settings) starts afresh.
    pub fn attempt(
        &self,
        username: &str,
        address: Option<IpAddr>,
        per_minute: u32,
    ) -> Result<(), Duration> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        if limiters.per_minute != per_minute {
            *limiters = Limiters::new(per_minute);
        }
        if limiters.users.len() > KEYS_KEPT {
            limiters.users.retain_recent();
        }
        if limiters.addresses.len() > KEYS_KEPT {
            limiters.addresses.retain_recent();
        }
        let now = DefaultClock::default().now();
        if let Some(address) = address {
            limiters
                .addresses
                .check_key(&address)
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        limiters
            .users
            .check_key(&username.to_lowercase())
            .map_err(|not_until| not_until.wait_time_from(now))
    }
}
