//! UTC calendar dates for the three timestamps the module prints (audit `ts`, a disabled API
//! version's `timestamp`, the `Sunset` header). A few lines of arithmetic instead of chrono,
//! which added about 20 KB to the module for these formats (docs/module-size.md). The tests
//! check every format against chrono, which stays a dev-dependency for that.

/// A moment in UTC, to the second.
struct Utc {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// 0 is Sunday.
    weekday: u8,
}

/// chrono's range, which these functions keep: years -262143 to 262142.
const MIN_YEAR: i64 = -262_143;
const MAX_YEAR: i64 = 262_142;

impl Utc {
    /// The moment `unix` seconds after 1970-01-01T00:00:00Z, or None outside the range.
    fn from_unix(unix: i64) -> Option<Utc> {
        let days = unix.div_euclid(86_400);
        let secs = unix.rem_euclid(86_400);
        // Days to a civil date (proleptic Gregorian), in 400-year eras of 146,097 days
        // counted from 0000-03-01, so that a leap day ends its year.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return None;
        }
        Some(Utc {
            year,
            month: month as u8,
            day: day as u8,
            hour: (secs / 3_600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u8,
        })
    }

    /// chrono's `%Y`: four digits, with a sign outside years 0 to 9999.
    fn year(&self) -> String {
        if (0..10_000).contains(&self.year) {
            format!("{:04}", self.year)
        } else {
            format!("{:+05}", self.year)
        }
    }

    /// `%Y-%m-%dT%H:%M:%S`
    fn iso(&self) -> String {
        format!(
            "{}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year(),
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second
        )
    }
}

/// RFC 3339 with milliseconds, `2026-03-01T10:00:00.123Z`; None outside the range.
pub(crate) fn rfc3339_ms(ms: i64) -> Option<String> {
    let t = Utc::from_unix(ms.div_euclid(1_000))?;
    Some(format!("{}.{:03}Z", t.iso(), ms.rem_euclid(1_000)))
}

/// ISO 8601 without offset or fraction, `2026-03-01T10:00:00`; None outside the range.
pub(crate) fn iso_naive(unix: i64) -> Option<String> {
    Utc::from_unix(unix).map(|t| t.iso())
}

/// IMF-fixdate (RFC 9110 section 5.6.7), `Sun, 06 Nov 1994 08:49:37 GMT`; None outside the
/// range.
pub(crate) fn imf_fixdate(unix: i64) -> Option<String> {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = Utc::from_unix(unix)?;
    let weekday = DAYS.get(usize::from(t.weekday))?;
    let month = MONTHS.get(usize::from(t.month).wrapping_sub(1))?;
    Some(format!(
        "{weekday}, {:02} {month} {} {:02}:{:02}:{:02} GMT",
        t.day,
        t.year(),
        t.hour,
        t.minute,
        t.second
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    /// What the module printed with chrono (`None`: out of chrono's range).
    fn chrono_fmt(unix: i64, fmt: &str) -> Option<String> {
        DateTime::from_timestamp(unix, 0).map(|d| d.format(fmt).to_string())
    }

    /// Unix seconds that cover the calendar's corners: the epoch, leap days and the days
    /// around them in leap and common centuries, years with fewer than four digits and
    /// before year 0, the ends of chrono's range, i64's ends, and a spread in between.
    fn samples() -> Vec<i64> {
        let min = DateTime::<chrono::Utc>::MIN_UTC.timestamp();
        let max = DateTime::<chrono::Utc>::MAX_UTC.timestamp();
        let mut v = vec![
            0,
            -1,
            1,
            86_399,
            86_400,
            -86_400,
            -86_401,
            784_111_777,
            951_782_400,
            951_868_800,
            -2_203_891_200,
            -2_208_988_800,
            4_107_542_400,
            4_102_444_800,
            1_772_359_200,
            253_402_300_799,
            253_402_300_800,
            -62_135_596_800,
            -62_135_596_801,
            -62_167_219_200,
            -62_167_219_201,
            -62_198_755_200,
            -30_610_224_000,
            min,
            min - 1,
            min + 1,
            max,
            max - 1,
            max + 1,
            i64::MIN,
            i64::MAX,
            i64::MIN + 1,
        ];
        // A deterministic spread over chrono's range and a little beyond, every time of day.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = (max - min) as u64 + 2 * 86_400 * 366;
            v.push(min - 86_400 * 366 + (x % span) as i64);
        }
        v
    }

    #[test]
    fn iso_naive_is_what_chrono_printed() {
        for t in samples() {
            assert_eq!(iso_naive(t), chrono_fmt(t, "%Y-%m-%dT%H:%M:%S"), "{t}");
        }
    }

    #[test]
    fn imf_fixdate_is_what_chrono_printed() {
        for t in samples() {
            assert_eq!(
                imf_fixdate(t),
                chrono_fmt(t, "%a, %d %b %Y %H:%M:%S GMT"),
                "{t}"
            );
        }
    }

    #[test]
    fn rfc3339_ms_is_what_chrono_printed() {
        for t in samples() {
            for ms in [
                t,
                t.wrapping_mul(1_000).wrapping_add(123),
                t.wrapping_mul(997),
            ] {
                let chrono = DateTime::from_timestamp_millis(ms)
                    .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
                assert_eq!(rfc3339_ms(ms), chrono, "{ms}");
            }
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(
            imf_fixdate(784_111_777).as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
        assert_eq!(
            iso_naive(951_782_400).as_deref(),
            Some("2000-02-29T00:00:00")
        );
        assert_eq!(rfc3339_ms(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(
            iso_naive(253_402_300_800).as_deref(),
            Some("+10000-01-01T00:00:00")
        );
        assert_eq!(
            iso_naive(-62_167_219_201).as_deref(),
            Some("-0001-12-31T23:59:59")
        );
    }
}
