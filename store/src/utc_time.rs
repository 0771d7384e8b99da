//! Times in records: `recorded_at` is RFC 3339 in UTC with microseconds, e.g.
//! `2026-11-24T09:30:00.123456Z`, and payloads hold chrono's UTC form (`...Z`, 0 to 9 fraction digits).
//!
//! Every record read parses at least one of these; chrono's general RFC 3339 parser was a visible
//! share of replaying a log. The UTC `Z` layouts are read directly, and anything else (an offset,
//! a leap second, more digits) goes through chrono, so both read the same text the same way.

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, Utc};
use serde::Deserializer;

/// The text a record stores for `time`.
pub fn format(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads an RFC 3339 time as chrono does, with a fast path for the layout `format` writes.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    parse_written_layout(text).or_else(|| text.parse::<DateTime<FixedOffset>>().ok().map(|t| t.with_timezone(&Utc)))
}

/// `YYYY-MM-DDTHH:MM:SS[.f]Z` with 1 to 9 fraction digits (what regent and chrono write in UTC), or
/// None.
fn parse_written_layout(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() < 20 || b.len() > 30 || b.len() == 21 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if punctuation.iter().any(|&(at, c)| b[at] != c) {
        return None;
    }
    let number = |digits: &[u8]| -> Option<u32> {
        digits.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let year = i32::try_from(number(&b[0..4])?).ok()?;
    let (month, day) = (number(&b[5..7])?, number(&b[8..10])?);
    let (hour, minute, second) = (number(&b[11..13])?, number(&b[14..16])?, number(&b[17..19])?);
    let fraction = &b[19..b.len() - 1];
    let nanos = match fraction.split_first() {
        None => 0,
        Some((b'.', digits)) => number(digits)? * 10u32.pow(9 - digits.len() as u32),
        Some(_) => return None,
    };
    // Seconds of 60 (a leap second) go to chrono, which has its own representation for them.
    if second > 59 {
        return None;
    }
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_nano_opt(hour, minute, second, nanos)?;
    Some(naive.and_utc())
}

/// serde's `deserialize_with` for a record's time, borrowing the text instead of copying it.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    struct Rfc3339;
    impl serde::de::Visitor<'_> for Rfc3339 {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 time")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
            parse(text).ok_or_else(|| E::custom(format!("'{text}' is not an RFC 3339 time")))
        }
    }
    deserializer.deserialize_str(Rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chrono_reads(text: &str) -> Option<DateTime<Utc>> {
        text.parse::<DateTime<FixedOffset>>().ok().map(|t| t.with_timezone(&Utc))
    }

    proptest! {
        #[test]
        fn the_fast_path_reads_what_chrono_reads(seconds in -62_000_000_000i64..253_000_000_000, nanos in 0u32..1_000_000_000) {
            let time = DateTime::from_timestamp(seconds, nanos).unwrap_or_default();
            let text = format(&time);
            prop_assert_eq!(parse_written_layout(&text), chrono_reads(&text), "{}", text);
            prop_assert_eq!(parse(&text).map(|t| t.timestamp_micros()), Some(time.timestamp_micros()));
            // chrono's own serde form (as many fraction digits as needed) takes the fast path too.
            let chrono_text = serde_json::to_value(time).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            prop_assert_eq!(parse_written_layout(&chrono_text), Some(time), "{}", chrono_text);
        }

        #[test]
        fn near_misses_read_the_same_both_ways(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?[Zz+]") {
            if let Some(fast) = parse_written_layout(&text) {
                prop_assert_eq!(Some(fast), chrono_reads(&text), "{}", text);
            }
            prop_assert_eq!(parse(&text), chrono_reads(&text), "{}", text);
        }
    }

    #[test]
    fn other_layouts_go_to_chrono() {
        for text in [
            "2026-11-24T09:30:00Z",
            "2026-11-24T10:30:00.5+01:00",
            "2016-12-31T23:59:60.500000Z",
            "2026-02-30T09:30:00.000000Z",
            "2026-11-24 09:30:00.000000Z",
            "not a time",
            "",
        ] {
            assert_eq!(parse(text), chrono_reads(text), "{text}");
        }
        assert!(parse("2026-11-24T09:30:00.123456Z").is_some());
    }
}
