//! Time, behind a trait: the renewal pass asks a [`Clock`] instead of the system, so its
//! decisions (lease expiry, backoff, due dates) are unit-tested without waiting.

use time::OffsetDateTime;

/// What time it is now.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock: what every command uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// RFC 3339 in UTC, to the second: for people and logs.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
