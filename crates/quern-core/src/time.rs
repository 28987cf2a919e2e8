//! Time as Quern sees it: milliseconds since the Unix epoch, read from a
//! [`Clock`] that tests replace, rendered as RFC 3339 UTC strings.
//!
//! Every task in an API answer carries several timestamps, so the one shape
//! Quern itself writes (`2026-01-02T03:04:05.678Z`, years 1970 to 9999) is
//! formatted and parsed here directly, without allocating; any other shape
//! goes through `humantime`, which gives the same answers, only slower.

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

/// The length of the canonical form, `2026-01-02T03:04:05.678Z`.
const CANONICAL_LEN: usize = 24;
/// The first millisecond of the year 10000, past the canonical form.
const YEAR_10000_MS: Millis = 253_402_300_800_000;
/// The earliest time Quern takes: the Unix epoch.
pub const MIN_TIME: Millis = 0;
/// The latest time Quern takes: the last millisecond of the year 9999.
pub const MAX_TIME: Millis = YEAR_10000_MS - 1;

/// Whether `ms` is a time Quern takes and renders: 1970 to 9999, UTC.
pub fn in_range(ms: Millis) -> bool {
    (MIN_TIME..=MAX_TIME).contains(&ms)
}
const DAY_MS: i64 = 86_400_000;

/// Renders `ms` as an RFC 3339 UTC string with millisecond precision.
pub fn format_rfc3339(ms: Millis) -> String {
    let mut buf = [0u8; CANONICAL_LEN];
    match write_canonical(ms, &mut buf) {
        Some(text) => text.to_owned(),
        None => format_rfc3339_slow(ms),
    }
}

/// Writes `ms` in the canonical form into `buf`, for years 1970 to 9999.
fn write_canonical(ms: Millis, buf: &mut [u8; CANONICAL_LEN]) -> Option<&str> {
    if !(0..YEAR_10000_MS).contains(&ms) {
        return None;
    }
    let (days, in_day) = (ms / DAY_MS, ms % DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let fields = [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, in_day / 3_600_000),
        (14, 2, in_day / 60_000 % 60),
        (17, 2, in_day / 1_000 % 60),
        (20, 3, in_day % 1_000),
    ];
    *buf = *b"0000-00-00T00:00:00.000Z";
    for (at, width, mut value) in fields {
        for i in (at..at + width).rev() {
            // `value % 10` is a single digit.
            buf[i] = b'0' + u8::try_from(value % 10).ok()?;
            value /= 10;
        }
    }
    std::str::from_utf8(buf).ok()
}

/// The canonical form of `ms`, if `s` is exactly that form of a valid time.
fn parse_canonical(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    if b.len() != CANONICAL_LEN || &[b[4], b[7], b[10], b[13], b[16], b[19], b[23]] != b"--T::.Z" {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, milli) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if year < 1970 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * DAY_MS + ((hour * 60 + minute) * 60 + second) * 1_000 + milli)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The rendering of a time outside the canonical years: the nearest end of
/// the range. Input never holds such a time ([`parse_rfc3339`] refuses
/// them), so this only keeps a corrupt or arithmetic value from panicking.
fn format_rfc3339_slow(ms: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.clamp(MIN_TIME, MAX_TIME).unsigned_abs());
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 timestamp (any offset) into milliseconds; `None` for
/// text that is not one and for times outside 1970 to 9999 UTC.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    parse_any_rfc3339(s).filter(|ms| in_range(*ms))
}

fn parse_any_rfc3339(s: &str) -> Option<Millis> {
    if let Some(ms) = parse_canonical(s) {
        return Some(ms);
    }
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
    use super::{CANONICAL_LEN, Millis, format_rfc3339, parse_rfc3339, write_canonical};
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    /// Serializes a timestamp.
    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; CANONICAL_LEN];
        match write_canonical(*ms, &mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&format_rfc3339(*ms)),
        }
    }

    /// Deserializes a timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        d.deserialize_str(Timestamp)
    }

    /// Reads a timestamp from the string as the deserializer holds it,
    /// without copying it.
    struct Timestamp;

    impl Visitor<'_> for Timestamp {
        type Value = Millis;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 time")
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<Millis, E> {
            parse_rfc3339(s).ok_or_else(|| E::custom(format!("not an RFC 3339 time: {s}")))
        }
    }

    /// An optional timestamp: `null` or a timestamp.
    struct OptionalTimestamp;

    impl<'de> Visitor<'de> for OptionalTimestamp {
        type Value = Option<Millis>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 time or null")
        }

        fn visit_none<E: Error>(self) -> Result<Option<Millis>, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Option<Millis>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Millis>, D::Error> {
            d.deserialize_str(Timestamp).map(Some)
        }
    }

    /// The same for optional timestamps.
    pub mod option {
        use super::{Millis, OptionalTimestamp, format_rfc3339};
        use serde::{Deserializer, Serializer};

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
            d.deserialize_option(OptionalTimestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_millis_renders_without_panicking(ms in any::<i64>()) {
            let text = format_rfc3339(ms);
            prop_assert_eq!(parse_rfc3339(&text), Some(ms.clamp(MIN_TIME, MAX_TIME)));
        }

        #[test]
        fn the_canonical_form_is_what_humantime_writes_and_reads(ms in 0..YEAR_10000_MS) {
            let text = format_rfc3339(ms);
            prop_assert_eq!(&text, &format_rfc3339_slow(ms));
            prop_assert_eq!(parse_canonical(&text), Some(ms));
            let slow = humantime::parse_rfc3339_weak(&text).ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_millis()).ok());
            prop_assert_eq!(slow, Some(ms));
        }

        #[test]
        fn near_canonical_text_parses_as_humantime_reads_it(
            y in 1960..10_000i64, mo in 0..14i64, d in 0..33i64, h in 0..26i64, mi in 0..62i64, s in 0..62i64,
            milli in 0..1_000i64,
        ) {
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z");
            let slow = humantime::parse_rfc3339_weak(&text).ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_millis()).ok());
            if let Some(fast) = parse_canonical(&text) {
                prop_assert_eq!(Some(fast), slow);
            }
            prop_assert_eq!(parse_rfc3339(&text), slow);
        }
    }

    #[test]
    fn timestamps_deserialize_from_text_and_null() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(with = "rfc3339")]
            at: Millis,
            #[serde(with = "rfc3339::option")]
            maybe: Option<Millis>,
        }
        let t: T = serde_json::from_str(r#"{"at": "1970-01-01T00:00:01.000Z", "maybe": null}"#).expect("parses");
        assert_eq!((t.at, t.maybe), (1_000, None));
        let t: T = serde_json::from_str(r#"{"at": "2026-01-01T00:00:00+01:00", "maybe": "1970-01-01T00:00:00.002Z"}"#)
            .expect("parses");
        assert_eq!((t.at, t.maybe), (1_767_222_000_000, Some(2)));
        assert!(serde_json::from_str::<T>(r#"{"at": "yesterday", "maybe": null}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"at": 5, "maybe": null}"#).is_err());
    }

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
    fn times_outside_1970_to_9999_are_refused() {
        for text in ["1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00.001+14:00"] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59.999Z"), Some(MAX_TIME));
        assert_eq!(format_rfc3339(-1), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
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
