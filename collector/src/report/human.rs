//! Human-readable numbers for the text report: byte sizes in binary units, counts,
//! durations and per-mille shares.

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

/// A per-mille share as a percentage with one decimal: `662` as `66.2%`.
pub fn percent(permille: u32) -> String {
    format!("{}.{}%", permille / 10, permille % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

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
