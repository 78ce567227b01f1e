//! The simulated clocks: every node ticks at its own rate around one nominal interval, so that
//! clocks drift apart as real ones do, within a bound the lease reads must cover.

/// A node's tick interval is this ± up to `TICK_SKEW_PCT_MAX` percent (clock skew).
pub const TICK_INTERVAL_MS: u64 = 10;
pub const TICK_SKEW_PCT_MAX: u64 = 10;
