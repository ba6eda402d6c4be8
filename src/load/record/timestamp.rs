//! RFC 3339 timestamps, checked as PostgreSQL takes them and turned into
//! what `timestamptz` holds (microseconds since 2000-01-01 UTC) in one
//! pass: `YYYY-MM-DDTHH:MM:SS[.frac]` then `Z` or `+HH:MM`/`-HH:MM`; a
//! space may replace the T, as RFC 3339 allows.

use std::cell::Cell;

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const POSTGRES_EPOCH_DAYS: i64 = 10_957;

/// The timestamp in microseconds since 2000-01-01 UTC, computed as
/// PostgreSQL does for the same text: the fraction read as a double and
/// rounded to microseconds, half to even; a leap second is the next
/// minute's first. Else what is wrong with it.
pub fn micros(b: &[u8]) -> Result<i64, &'static str> {
    match scanner_form(b) {
        Some(micros) => Ok(micros),
        None => any_form(b),
    }
}

/// [`micros`] of any form RFC 3339 allows.
fn any_form(b: &[u8]) -> Result<i64, &'static str> {
    if b.len() < 20 {
        return Err("too short");
    }
    let date: &[u8; 10] = b[..10].try_into().expect("ten bytes");
    let days = days(date)?;
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err("bad date");
    }
    let (Some(hour), Some(minute), Some(second)) = (two(b, 11), two(b, 14), two(b, 17)) else {
        return Err("bad time");
    };
    if b[13] != b':' || b[16] != b':' {
        return Err("bad time");
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time out of range");
    }
    let zone = match b[19] {
        b'.' => 20 + b[20..].iter().take_while(|c| c.is_ascii_digit()).count(),
        _ => 19,
    };
    if zone == 20 {
        return Err("empty fraction of a second");
    }
    let fraction = &b[19..zone];
    // PostgreSQL takes a 60th second, fraction and all, as the next
    // minute's start, but not past the day's end (23:59:60 at most).
    if hour == 23
        && minute == 59
        && second == 60
        && fraction.iter().any(|d| d.is_ascii_digit() && *d != b'0')
    {
        return Err("time out of range");
    }
    let offset = utc_offset(&b[zone..])?;
    let seconds = hour * 3600 + minute * 60 + second - offset * 60;
    Ok((days * 86_400 + seconds) * 1_000_000 + fraction_micros(fraction))
}

/// [`micros`] of the scanner's own form, `YYYY-MM-DDTHH:MM:SS.fff+00:00`
/// with 9 fraction digits, or 6: the fraction read eight digits at a
/// time. None for anything else (a leap second, a tie to round, another
/// form or a bad one), which the general path reads.
#[inline]
fn scanner_form(b: &[u8]) -> Option<i64> {
    let zone = match b.len() {
        35 => 29,
        32 => 26,
        _ => return None,
    };
    if b[16] != b':' || b[19] != b'.' || &b[zone..] != b"+00:00" {
        return None;
    }
    let minute = minute_micros(b[..16].try_into().expect("sixteen bytes"))?;
    let second = two(b, 17).filter(|second| *second <= 59)?;
    let eight = u64::from_le_bytes(b[20..28].try_into().expect("eight bytes"));
    let fraction = match zone {
        // Nanoseconds: eight digits and a ninth, rounded to microseconds
        // half to even, as PostgreSQL's doubles do but for a tie.
        29 => {
            let ninth = b[28].wrapping_sub(b'0');
            if ninth > 9 {
                return None;
            }
            let nanos = eight_digits(eight)? * 10 + u64::from(ninth);
            let (micros, rest) = (nanos / 1000, nanos % 1000);
            match rest.cmp(&500) {
                std::cmp::Ordering::Less => micros,
                std::cmp::Ordering::Greater => micros + 1,
                std::cmp::Ordering::Equal => return None,
            }
        }
        // Microseconds: six digits, then "+0" made "00".
        _ => eight_digits((eight & 0x0000_FFFF_FFFF_FFFF) | 0x3030_0000_0000_0000)? / 100,
    };
    Some(minute + second * 1_000_000 + fraction as i64)
}

thread_local! {
    /// The last minute read (`YYYY-MM-DDTHH:MM`) and its microseconds
    /// since 2000-01-01 (at first, the epoch's first minute): the findings
    /// of a file mostly come minutes apart.
    static LAST_MINUTE: Cell<(u128, i64)> =
        const { Cell::new((u128::from_le_bytes(*b"2000-01-01T00:00"), 0)) };
}

/// Microseconds since 2000-01-01 of `YYYY-MM-DDTHH:MM`.
#[inline]
fn minute_micros(text: &[u8; 16]) -> Option<i64> {
    let key = u128::from_le_bytes(*text);
    LAST_MINUTE.with(|last| {
        let (seen, micros) = last.get();
        if seen == key {
            return Some(micros);
        }
        if text[10] != b'T' || text[13] != b':' {
            return None;
        }
        let (hour, minute) = (two(text, 11)?, two(text, 14)?);
        if hour > 23 || minute > 59 {
            return None;
        }
        let days = days(text[..10].try_into().expect("ten bytes")).ok()?;
        let micros = (days * 86_400 + hour * 3600 + minute * 60) * 1_000_000;
        last.set((key, micros));
        Some(micros)
    })
}

/// The number eight ASCII digits make, the first (at the lowest address)
/// the most significant; None when one is not a digit.
fn eight_digits(chunk: u64) -> Option<u64> {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const LOW_NIBBLES: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    // A digit is 0x30 to 0x39: its high nibble is 3, and adding 6 to its
    // low nibble does not carry (nor into the next byte: at most 0x15).
    let high = (chunk & HIGH_NIBBLES) ^ ZEROS;
    let low = ((chunk & LOW_NIBBLES) + SIXES) & HIGH_NIBBLES;
    if high | low != 0 {
        return None;
    }
    // Pairs, then fours, then the eight: no step carries out of its lane.
    let d = chunk - ZEROS;
    let d = (d * 10 + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    let d = (d * 100 + (d >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((d.wrapping_mul(10_000) + (d >> 32)) & 0xFFFF_FFFF)
}

/// The two digits at `at`, as a number.
fn two(b: &[u8], at: usize) -> Option<i64> {
    let (high, low) = (b[at].wrapping_sub(b'0'), b[at + 1].wrapping_sub(b'0'));
    (high < 10 && low < 10).then(|| i64::from(high * 10 + low))
}

thread_local! {
    /// The last date read, and its days (at first, the epoch itself): the
    /// findings of a file mostly share a few dates, and the calendar is
    /// the costly part.
    static LAST_DATE: Cell<([u8; 10], i64)> = const { Cell::new((*b"2000-01-01", 0)) };
}

/// Days since 2000-01-01 of `YYYY-MM-DD`.
fn days(date: &[u8; 10]) -> Result<i64, &'static str> {
    LAST_DATE.with(|last| {
        let (seen, days) = last.get();
        if seen == *date {
            return Ok(days);
        }
        let days = calendar_days(date)?;
        last.set((*date, days));
        Ok(days)
    })
}

fn calendar_days(date: &[u8; 10]) -> Result<i64, &'static str> {
    let (Some(century), Some(year), Some(month), Some(day)) =
        (two(date, 0), two(date, 2), two(date, 5), two(date, 8))
    else {
        return Err("bad date");
    };
    if date[4] != b'-' || date[7] != b'-' {
        return Err("bad date");
    }
    let year = century * 100 + year;
    if year == 0 || !(1..=12).contains(&month) {
        return Err("date out of range");
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err("date out of range");
    }
    Ok(days_from_civil(year, month, day) - POSTGRES_EPOCH_DAYS)
}

/// The UTC offset in minutes of `Z` or `+HH:MM`/`-HH:MM`.
fn utc_offset(zone: &[u8]) -> Result<i64, &'static str> {
    match zone {
        [b'Z' | b'z'] | b"+00:00" => Ok(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |c: &u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
            match (digit(h1), digit(h2), digit(m1), digit(m2)) {
                (Some(h1), Some(h2), Some(m1), Some(m2)) => {
                    let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
                    if minutes > 59 {
                        return Err("bad UTC offset");
                    }
                    if hours > 15 {
                        return Err("UTC offset beyond 15:59, PostgreSQL's limit");
                    }
                    let offset = hours * 60 + minutes;
                    Ok(if *sign == b'+' { offset } else { -offset })
                }
                _ => Err("bad UTC offset"),
            }
        }
        _ => Err("missing or bad UTC offset"),
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A fraction of a second (".123456789", or "") in microseconds, as
/// PostgreSQL computes it: `rint(strtod(fraction) * 1000000)`.
fn fraction_micros(fraction: &[u8]) -> i64 {
    let digits = fraction.len().saturating_sub(1);
    if (1..=12).contains(&digits) {
        // Exact in integers, and the same as PostgreSQL's doubles but for a
        // tie: the error of a double is far below the distance to one.
        let value: i64 = fraction[1..]
            .iter()
            .fold(0, |acc, c| acc * 10 + i64::from(c - b'0'));
        // Constant divisors for the usual lengths: a division by a
        // variable costs tens of cycles.
        let (micros, rest, unit) = match digits {
            1..=6 => (value * 10i64.pow(6 - digits as u32), 0, 1),
            7 => (value / 10, value % 10, 10),
            8 => (value / 100, value % 100, 100),
            9 => (value / 1000, value % 1000, 1000),
            _ => {
                let unit = 10i64.pow(digits as u32 - 6);
                (value / unit, value % unit, unit)
            }
        };
        match (2 * rest).cmp(&unit) {
            std::cmp::Ordering::Less => return micros,
            std::cmp::Ordering::Greater => return micros + 1,
            std::cmp::Ordering::Equal => {}
        }
    }
    if fraction.is_empty() {
        return 0;
    }
    let value: f64 = std::str::from_utf8(fraction)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .expect("a fraction was checked to be digits");
    (value * 1_000_000.0).round_ties_even() as i64
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scanner's form read eight digits at a time is what the general
    /// path makes of it, over fractions of 9 and 6 digits, ties, leap
    /// seconds, times out of range and a byte changed anywhere.
    #[test]
    fn the_scanner_form_is_read_as_any_form() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut taken = 0;
        let mut minute = *b"2026-11-27T10:15";
        for round in 0..20_000 {
            let digits = if round % 2 == 0 { 9 } else { 6 };
            let fraction: String = (0..digits)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            let fraction = match round % 7 {
                0 => "123456500".to_owned(),
                1 => "999999999".to_owned(),
                _ => fraction,
            };
            let mut text = format!(
                "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}.{fraction}+00:00",
                next() % 100,
                1 + next() % 12,
                1 + next() % 28,
                next() % 25,
                next() % 61,
                next() % 62,
            )
            .into_bytes();
            // Every other line in the minute of the one before: the minute
            // read last is kept, and must not hide a change after it.
            if round % 2 == 1 {
                text[..16].copy_from_slice(&minute);
            }
            minute.copy_from_slice(&text[..16]);
            if round % 3 == 0 {
                let at = (next() as usize) % text.len();
                let bytes = b"0123456789:.+-TZ x\xff";
                text[at] = bytes[(next() as usize) % bytes.len()];
            }
            if let Some(fast) = scanner_form(&text) {
                taken += 1;
                assert_eq!(
                    Ok(fast),
                    any_form(&text),
                    "{}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
        assert!(taken > 10_000, "the fast path took only {taken}");
        // Bytes that make no minute are never taken for one: not after
        // other minutes, nor before any (on a thread of its own).
        let mut nul = [0u8; 32];
        nul[16..].copy_from_slice(b":00.000000+00:00");
        assert_eq!(scanner_form(&nul), None);
        let first = std::thread::spawn(move || scanner_form(&nul));
        assert_eq!(first.join().expect("no panic"), None);
        assert_eq!(
            eight_digits(u64::from_le_bytes(*b"12345678")),
            Some(12_345_678)
        );
        assert_eq!(eight_digits(u64::from_le_bytes(*b"1234567:")), None);
        assert_eq!(eight_digits(u64::from_le_bytes(*b"/2345678")), None);
    }

    #[test]
    fn what_postgres_takes() {
        for ok in [
            "2026-11-27T10:15:02.123456+00:00",
            "2026-11-27T10:15:02Z",
            "2026-11-27t10:15:02z",
            "2024-02-29 23:59:60-05:30",
            "2024-02-29 23:59:60.000Z",
            "2026-11-27T10:15:02.5+15:59",
            "9999-12-31T23:59:59.123456789012345-00:00",
        ] {
            assert!(micros(ok.as_bytes()).is_ok(), "{ok}");
        }
        for (bad, problem) in [
            ("2026-11-27", "too short"),
            ("2026-11-27T10:15:02", "too short"),
            ("2026-11-27T10:15:0200", "missing or bad UTC offset"),
            ("2026/11/27T10:15:02Z", "bad date"),
            ("2026-11-27X10:15:02Z", "bad date"),
            ("2026-11-27T10-15:02Z", "bad time"),
            ("2026-11-27T1a:15:02Z", "bad time"),
            ("2025-02-29T00:00:00Z", "date out of range"),
            ("2026-04-31T00:00:00Z", "date out of range"),
            ("2026-13-01T00:00:00Z", "date out of range"),
            ("0000-01-01T00:00:00Z", "date out of range"),
            ("2026-11-27T24:00:00Z", "time out of range"),
            ("2026-11-27T10:60:00Z", "time out of range"),
            ("2026-11-27T23:59:60.5Z", "time out of range"),
            ("2026-11-27T10:15:02.Z", "empty fraction of a second"),
            ("2026-11-27T10:15:02+0000", "missing or bad UTC offset"),
            (
                "2026-11-27T10:15:02+16:00",
                "UTC offset beyond 15:59, PostgreSQL's limit",
            ),
            (
                "2026-11-27T10:15:02+23:59",
                "UTC offset beyond 15:59, PostgreSQL's limit",
            ),
            ("2026-11-27T10:15:02+01:60", "bad UTC offset"),
            ("2026-11-27T10:15:02+1a:00", "bad UTC offset"),
            ("2026-11-27T10:15:02+01:00 ", "missing or bad UTC offset"),
            ("2026-11-27T10:15:02Zulu", "missing or bad UTC offset"),
            ("yesterday at noon, roughly", "bad date"),
            ("\0\0\0\0\0\0\0\0\0\0T00:00:00Z", "bad date"),
        ] {
            assert_eq!(micros(bad.as_bytes()), Err(problem), "{bad}");
        }
    }

    #[test]
    fn as_postgres_reads_them() {
        // Checked against SELECT extract(epoch FROM '...'::timestamptz).
        let micros = |text: &str| micros(text.as_bytes()).expect("a valid timestamp");
        assert_eq!(micros("2000-01-01T00:00:00Z"), 0);
        assert_eq!(micros("2000-01-01T00:00:00.5+00:00"), 500_000);
        assert_eq!(micros("1999-12-31T23:59:59.999999Z"), -1);
        assert_eq!(micros("2000-01-01T01:00:00+01:00"), 0);
        assert_eq!(micros("2000-01-01 00:00:00-00:30"), 1_800_000_000);
        assert_eq!(
            micros("2026-11-27T10:15:02.123845643+00:00"),
            849_089_702_123_846
        );
        assert_eq!(
            micros("2024-02-29T23:59:60Z"),
            micros("2024-03-01T00:00:00Z")
        );
        assert_eq!(
            micros("2026-11-27T10:15:60.5Z"),
            micros("2026-11-27T10:16:00.5Z")
        );
        assert_eq!(
            micros("2026-11-27T23:58:60.000001+01:00"),
            micros("2026-11-27T23:59:00.000001+01:00")
        );
        assert_eq!(
            micros("2026-11-27T10:15:60.9999995Z"),
            micros("2026-11-27T10:16:01Z")
        );
        assert_eq!(micros("2000-01-01T00:00:00.0000005Z"), 0, "half to even");
        assert_eq!(micros("2000-01-01T00:00:00.0000015Z"), 2, "half to even");
        assert_eq!(micros("2000-01-01T00:00:00.0000025Z"), 2, "half to even");
        assert_eq!(micros("2000-01-01T00:00:00.1234565Z"), 123_456);
        assert_eq!(micros("2000-01-01T00:00:00.9999996Z"), 1_000_000);
        assert_eq!(micros("0001-01-01T00:00:00Z"), -63_082_281_600_000_000);
    }

    #[test]
    fn fractions_in_integers_as_in_doubles() {
        let double = |fraction: &str| -> i64 {
            let value: f64 = fraction.parse().expect("a fraction");
            (value * 1_000_000.0).round_ties_even() as i64
        };
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for digits in 1..=14 {
            for _ in 0..2000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let text = format!(".{:0digits$}", seed % 10u64.pow(digits as u32));
                assert_eq!(fraction_micros(text.as_bytes()), double(&text), "{text}");
            }
        }
        for tie in [
            ".0000005",
            ".0000015",
            ".1234565",
            ".99999950",
            ".000000500000",
        ] {
            assert_eq!(fraction_micros(tie.as_bytes()), double(tie), "{tie}");
        }
        assert_eq!(fraction_micros(b""), 0);
    }
}
