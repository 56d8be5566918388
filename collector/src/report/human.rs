//! Human-readable numbers for the text report: byte sizes in binary units, counts,
//! durations, per-mille shares and UTC times.

/// `bytes` as `512 B`, `200.00 KiB`, `1.50 MiB`, `3.00 GiB` (GiB for anything larger).
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// `n` followed by `singular` or `plural` as fits.
pub fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Nanoseconds as seconds with one decimal: `2.5 s`.
pub fn seconds(ns: u64) -> String {
    format!("{:.1} s", ns as f64 / 1e9)
}

/// A length of time in seconds, in the unit that reads best: `250 ms`, `10 s`, `1.5 s`,
/// `25.3 min`, `2.0 h`.
pub fn span(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "? s".to_owned();
    }
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else if secs < 120.0 {
        if (secs - secs.round()).abs() < 1e-9 {
            format!("{secs:.0} s")
        } else {
            format!("{secs:.1} s")
        }
    } else if secs < 7_200.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3_600.0)
    }
}

/// A per-mille share as a percentage with one decimal: `662` as `66.2%`.
pub fn percent(permille: u32) -> String {
    format!("{}.{}%", permille / 10, permille % 10)
}

/// A time in nanoseconds since the Unix epoch as `2024-03-01 12:34:56 UTC`.
pub fn utc_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), in whole
    // 400-year eras starting on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000_000_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(
            utc_time(1_709_296_496_999_999_999),
            "2024-03-01 12:34:56 UTC"
        );
        assert_eq!(
            utc_time(4_102_444_799_000_000_000),
            "2099-12-31 23:59:59 UTC"
        );
    }

    #[test]
    fn durations_and_shares() {
        assert_eq!(seconds(2_450_000_000), "2.5 s");
        assert_eq!(seconds(0), "0.0 s");
        assert_eq!(percent(662), "66.2%");
        assert_eq!(percent(5), "0.5%");
        assert_eq!(percent(1000), "100.0%");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(204_800), "200.00 KiB");
        assert_eq!(bytes(1536 * 1024), "1.50 MiB");
        assert_eq!(bytes(3 << 30), "3.00 GiB");
        assert_eq!(bytes(5 << 40), "5120.00 GiB");
    }

    #[test]
    fn counts() {
        assert_eq!(count(1, "block", "blocks"), "1 block");
        assert_eq!(count(0, "block", "blocks"), "0 blocks");
        assert_eq!(count(7, "block", "blocks"), "7 blocks");
    }
}
