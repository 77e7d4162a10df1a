//! ISO-8601 times as Python's `datetime.isoformat()` writes them and
//! `datetime.fromisoformat()` reads them (the forms Celery uses for `eta` and
//! `expires`, and kombu for its `datetime`/`date`/`time` markers).

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;

/// A parsed ISO-8601 date-time: with an offset, or naive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IsoTime {
    /// The text carried an offset (`+08:00`, `Z`, ...).
    Aware(DateTime<FixedOffset>),
    /// The text had no offset; its zone must come from configuration.
    Naive(NaiveDateTime),
}

impl IsoTime {
    /// Pins a naive time to `zone`; an aware time is returned as is.
    ///
    /// A local time that occurs twice (a DST fold) resolves to the earlier
    /// instant, as Python does with `fold=0`; one that never occurs (a DST gap)
    /// is an error rather than a guess.
    pub fn in_zone(self, zone: Tz) -> Result<DateTime<FixedOffset>, String> {
        match self {
            IsoTime::Aware(dt) => Ok(dt),
            IsoTime::Naive(naive) => match zone.from_local_datetime(&naive) {
                LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _) => Ok(dt.fixed_offset()),
                LocalResult::None => Err(format!("{naive} does not exist in time zone {zone}")),
            },
        }
    }
}

/// Parses `YYYY-MM-DD[(T| )HH[:MM[:SS[.ffffff]]][Z|±HH[:MM[:SS]]]]`.
pub fn parse_iso(text: &str) -> Result<IsoTime, String> {
    let text = text.trim();
    let (date_text, rest) = text.split_at_checked(10).ok_or("too short for YYYY-MM-DD")?;
    let date = parse_date(date_text)?;
    if rest.is_empty() {
        return Ok(IsoTime::Naive(date.and_time(NaiveTime::MIN)));
    }
    let rest = rest.strip_prefix(['T', ' ', 't']).ok_or("expected 'T' or ' ' after the date")?;
    let (time, offset) = parse_time(rest)?;
    let naive = date.and_time(time);
    Ok(match offset {
        None => IsoTime::Naive(naive),
        Some(offset) => IsoTime::Aware(offset.from_local_datetime(&naive).single().ok_or("offset out of range")?),
    })
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else { return Err("expected YYYY-MM-DD".into()) };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err("expected YYYY-MM-DD".into());
    }
    NaiveDate::from_ymd_opt(number(y)? as i32, number(m)?, number(d)?).ok_or_else(|| "no such date".into())
}

/// Parses `HH[:MM[:SS[.f]]]` with an optional `Z` or `±HH[:MM[:SS]]` offset.
pub fn parse_time(text: &str) -> Result<(NaiveTime, Option<FixedOffset>), String> {
    let (clock, offset) = if let Some(clock) = text.strip_suffix(['Z', 'z']) {
        (clock, Some(FixedOffset::east_opt(0).expect("zero offset")))
    } else if let Some(at) = text.find(['+', '-']) {
        (&text[..at], Some(parse_offset(&text[at..])?))
    } else {
        (text, None)
    };
    let (hms, fraction) = match clock.split_once(['.', ',']) {
        Some((hms, f)) => (hms, Some(f)),
        None => (clock, None),
    };
    let fields: Vec<&str> = hms.split(':').collect();
    if fields.is_empty() || fields.len() > 3 || fields.iter().any(|f| f.len() != 2) {
        return Err("expected HH[:MM[:SS]]".into());
    }
    let h = number(fields[0])?;
    let m = fields.get(1).map(|f| number(f)).transpose()?.unwrap_or(0);
    let s = fields.get(2).map(|f| number(f)).transpose()?.unwrap_or(0);
    let nanos = match fraction {
        None => 0,
        Some(f) if fields.len() == 3 && (1..=9).contains(&f.len()) => number(f)? * 10u32.pow(9 - f.len() as u32),
        Some(_) => return Err("bad fractional seconds".into()),
    };
    let time = NaiveTime::from_hms_nano_opt(h, m, s, nanos).ok_or("no such time of day")?;
    Ok((time, offset))
}

fn parse_offset(text: &str) -> Result<FixedOffset, String> {
    let (sign, digits) = text.split_at(1);
    let fields: Vec<&str> = digits.split(':').collect();
    let (h, m, s) = match fields.as_slice() {
        [hhmm] if hhmm.len() == 4 && hhmm.is_ascii() => (number(&hhmm[..2])?, number(&hhmm[2..])?, 0),
        [hh] => (number(hh)?, 0, 0),
        [hh, mm] => (number(hh)?, number(mm)?, 0),
        [hh, mm, ss] => (number(hh)?, number(mm)?, number(ss.split('.').next().unwrap_or(ss))?),
        _ => return Err("bad UTC offset".into()),
    };
    if h > 23 || m > 59 || s > 59 {
        return Err("bad UTC offset".into());
    }
    let seconds = (h * 3600 + m * 60 + s) as i32;
    FixedOffset::east_opt(if sign == "-" { -seconds } else { seconds }).ok_or_else(|| "bad UTC offset".into())
}

fn number(digits: &str) -> Result<u32, String> {
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{digits:?} is not a number"));
    }
    digits.parse().map_err(|_| format!("{digits:?} is not a number"))
}

/// `2026-11-23T20:41:33.123456+00:00`, as Python's `isoformat()` writes it.
pub fn format_aware(dt: &DateTime<FixedOffset>) -> String {
    format!("{}{}", format_naive(&dt.naive_local()), format_offset(dt.offset()))
}

/// `2026-11-23T20:41:33[.123456]`: microseconds only when not zero, as Python does.
pub fn format_naive(dt: &NaiveDateTime) -> String {
    format!("{}T{}", dt.date().format("%Y-%m-%d"), format_clock(&dt.time()))
}

/// A kombu `time` marker value, with its offset if it has one.
pub fn format_time(t: &NaiveTime, offset: Option<&FixedOffset>) -> String {
    format!("{}{}", format_clock(t), offset.map(format_offset).unwrap_or_default())
}

fn format_clock(t: &NaiveTime) -> String {
    let micros = t.nanosecond() / 1_000;
    if micros == 0 { t.format("%H:%M:%S").to_string() } else { format!("{}.{micros:06}", t.format("%H:%M:%S")) }
}

fn format_offset(offset: &FixedOffset) -> String {
    let total = offset.local_minus_utc();
    let sign = if total < 0 { '-' } else { '+' };
    let abs = total.unsigned_abs();
    let (h, m, s) = (abs / 3600, abs / 60 % 60, abs % 60);
    if s == 0 { format!("{sign}{h:02}:{m:02}") } else { format!("{sign}{h:02}:{m:02}:{s:02}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aware(text: &str) -> DateTime<FixedOffset> {
        match parse_iso(text).unwrap() {
            IsoTime::Aware(dt) => dt,
            IsoTime::Naive(n) => panic!("naive {n}"),
        }
    }

    #[test]
    fn python_forms_parse() {
        let dt = aware("2026-11-23T20:41:33.123456+08:00");
        assert_eq!(dt.offset().local_minus_utc(), 8 * 3600);
        assert_eq!(dt.nanosecond(), 123_456_000);
        assert_eq!(aware("2026-11-23T20:41:33Z").offset().local_minus_utc(), 0);
        assert_eq!(aware("2026-11-23 20:41:33-0530").offset().local_minus_utc(), -(5 * 3600 + 30 * 60));
        assert_eq!(aware("2026-11-23T20:41+01").offset().local_minus_utc(), 3600);
        assert!(matches!(parse_iso("2026-11-23T20:41:33.5").unwrap(), IsoTime::Naive(_)));
        assert!(matches!(parse_iso("2026-11-23").unwrap(), IsoTime::Naive(_)));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "2026",
            "2026-1-1",
            "2026-02-30",
            "2026-11-23X20:00",
            "2026-11-23T25:00",
            "2026-11-23T20:00:00+25:00",
            "2026-11-23T20:00:00.",
            "2026-11-23T20:00:00.1234567890",
            "2026-11-23T2",
            "2026-11-23T20:00:00+",
            "é026-11-23",
            "2026-11-23T20:00:00+0é",
        ] {
            assert!(parse_iso(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn formats_like_python() {
        assert_eq!(format_aware(&aware("2026-11-23T20:41:33+00:00")), "2026-11-23T20:41:33+00:00");
        assert_eq!(format_aware(&aware("2026-11-23T20:41:33.000100-03:30")), "2026-11-23T20:41:33.000100-03:30");
    }

    #[test]
    fn naive_times_take_the_configured_zone() {
        let naive = parse_iso("2026-11-23T20:00:00").unwrap();
        let shanghai = naive.in_zone(chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(shanghai.offset().local_minus_utc(), 8 * 3600);
        let gap = parse_iso("2026-03-29T02:30:00").unwrap();
        assert!(gap.in_zone(chrono_tz::Europe::Berlin).is_err());
        let fold = parse_iso("2026-10-25T02:30:00").unwrap().in_zone(chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(fold.offset().local_minus_utc(), 2 * 3600, "earlier instant of the fold");
    }
}
