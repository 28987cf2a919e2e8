//! Time as Quern sees it: milliseconds since the Unix epoch, read from a
//! [`Clock`] that tests replace, rendered as RFC 3339 UTC strings.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The source of "now". The server reads time only through it, so delays,
/// backoff, timeouts and lease expiry are tested by moving a [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `now`.
    pub fn new(now: Millis) -> Self {
        Self(AtomicI64::new(now))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `now`.
    pub fn set(&self, now: Millis) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Renders `ms` as an RFC 3339 UTC string with millisecond precision.
pub fn format_rfc3339(ms: Millis) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 timestamp (any offset) into milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let s = s.trim();
    // humantime reads UTC times only; a `+HH:MM`/`-HH:MM` offset is applied here.
    let (utc, offset_ms) = match s.len().checked_sub(6).and_then(|i| s.get(i..).map(|tail| (i, tail))) {
        Some((i, tail)) if (tail.starts_with('+') || tail.starts_with('-')) && tail.as_bytes()[3] == b':' => {
            let hours: i64 = tail.get(1..3)?.parse().ok()?;
            let minutes: i64 = tail.get(4..6)?.parse().ok()?;
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            (format!("{}Z", s.get(..i)?), sign * (hours * 60 + minutes) * 60_000)
        }
        _ => (s.to_owned(), 0),
    };
    let t = humantime::parse_rfc3339_weak(&utc).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok().map(|ms| ms - offset_ms)
}

/// Parses a human duration ("30s", "5 minutes", "1h 30m") or a bare number of
/// milliseconds into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    let d = humantime::parse_duration(s).ok()?;
    u64::try_from(d.as_millis()).ok()
}

/// Serde helpers rendering [`Millis`] as RFC 3339 strings.
pub mod rfc3339 {
    use super::{Millis, format_rfc3339, parse_rfc3339};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Serializes a timestamp.
    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(*ms))
    }

    /// Deserializes a timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let s = String::deserialize(d)?;
        parse_rfc3339(&s).ok_or_else(|| D::Error::custom(format!("not an RFC 3339 time: {s}")))
    }

    /// The same for optional timestamps.
    pub mod option {
        use super::{Millis, format_rfc3339, parse_rfc3339};
        use serde::{Deserialize, Deserializer, Serializer, de::Error};

        /// Serializes an optional timestamp.
        #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<T>`
        pub fn serialize<S: Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => s.serialize_str(&format_rfc3339(*ms)),
                None => s.serialize_none(),
            }
        }

        /// Deserializes an optional timestamp.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => {
                    parse_rfc3339(&s).map(Some).ok_or_else(|| D::Error::custom(format!("not an RFC 3339 time: {s}")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let ms = 1_795_000_000_123;
        let s = format_rfc3339(ms);
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(ms));
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00+01:00"), Some(1_767_222_000_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("30s"), Some(30_000));
        assert_eq!(parse_duration_ms("5 minutes"), Some(300_000));
        assert_eq!(parse_duration_ms("250"), Some(250));
        assert_eq!(parse_duration_ms("soon"), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(10);
        assert_eq!(c.now(), 10);
        c.advance(5);
        assert_eq!(c.now(), 15);
        c.set(100);
        assert_eq!(c.now(), 100);
    }
}
