//! The text report's aging parts: the run's line on the growth tests and its time to
//! exhaustion, and per process the sites, pools and totals whose growth is significant,
//! with the black-box view beside them.

use crate::analysis::aging_model::{
    Basis, Exhaustion, ExhaustionOf, RunAging, Tested, TrendReport,
};
use crate::analysis::model::{ProcessReport, Site};
use crate::analysis::trend::shape::Shape;
use crate::report::human::{bytes, span};
use crate::report::text::{frame_line, INDENT};
use std::io::{self, Write};

/// A rate in bytes per hour, signed, in binary units: `+12.00 KiB/h`.
pub fn rate(bytes_per_hour: f64) -> String {
    let sign = if bytes_per_hour < 0.0 { "-" } else { "+" };
    let magnitude = bytes_per_hour.abs();
    if !magnitude.is_finite() {
        return format!("{sign}? B/h");
    }
    format!("{sign}{}/h", bytes(magnitude.round() as u64))
}

/// Hours as `5.2 h` or, past two days, `3.4 days`.
fn hours(h: f64) -> String {
    if h >= 48.0 {
        format!("{:.1} days", h / 24.0)
    } else {
        format!("{h:.1} h")
    }
}

/// `+12.00 KiB/h (+9.00 KiB/h .. +15.00 KiB/h), p 0.0001, drift`, and for a site whose
/// growth shows in its outlived blocks, `, in blocks outliving every freed one`.
fn trend_text(t: &TrendReport) -> String {
    let basis = match t.basis {
        Some(Basis::Outlived) => ", in blocks outliving every freed one",
        Some(Basis::Outstanding) | None => "",
    };
    format!(
        "{} ({} .. {}), p {:.2e}, {}{basis}",
        rate(t.slope_bytes_per_hour),
        rate(t.ci_low),
        rate(t.ci_high),
        t.p_value,
        shape_name(t)
    )
}

fn shape_name(t: &TrendReport) -> &'static str {
    match t.shape {
        Shape::Drift => "drift",
        Shape::Steps => "steps",
        Shape::Flat => "flat",
    }
}

fn growing(t: &Tested) -> Option<&TrendReport> {
    t.trend.as_ref().filter(|t| t.significant)
}

/// The run's line: what was tested and what grows; then the whole run's exhaustion.
pub fn run_summary(aging: &RunAging, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "growth tests: {} series (alpha {}, FDR q {}, warm-up {}): {} growing",
        aging.tests,
        aging.alpha,
        aging.q,
        span(aging.warmup_s),
        aging.significant
    )?;
    if let Some(t) = &aging.host.trend {
        writeln!(out, "all processes' host memory: {}", trend_text(t))?;
    }
    for d in &aging.devices {
        if let (Some(t), Some(device)) = (&d.tested.trend, d.device) {
            writeln!(
                out,
                "all processes' memory on GPU {device}: {}",
                trend_text(t)
            )?;
        }
    }
    for m in aging.host_used.iter().chain(&aging.gpus_used) {
        let what = m.index.map_or_else(
            || "host memory in use".to_owned(),
            |i| format!("GPU {i} used"),
        );
        writeln!(
            out,
            "machine (black box): {what} {} ({} medians): {}",
            bytes(m.latest_bytes),
            span(m.window_s),
            verdict(&m.tested)
        )?;
    }
    for e in &aging.exhaustion {
        writeln!(out, "{}", exhaustion_text(e))?;
    }
    Ok(())
}

/// A black-box series's verdict in words.
fn verdict(t: &Tested) -> String {
    match &t.trend {
        Some(t) if t.significant => format!("grows: {}", trend_text(t)),
        Some(t) => format!("no significant growth ({})", rate(t.slope_bytes_per_hour)),
        None => "too few windows to test".to_owned(),
    }
}

fn exhaustion_text(e: &Exhaustion) -> String {
    let what = match e.of {
        ExhaustionOf::HostAvailable => "host MemAvailable".to_owned(),
        ExhaustionOf::Cgroup => "the cgroup's limit".to_owned(),
        ExhaustionOf::Gpu { index } => format!("GPU {index}'s free memory"),
    };
    let when = match (e.hours, e.hours_low, e.hours_high) {
        (Some(h), low, high) => {
            let low = low.map_or_else(|| "?".to_owned(), hours);
            let high = high.map_or_else(|| "never".to_owned(), hours);
            format!("runs out in {} ({low} .. {high})", hours(h))
        }
        (None, _, _) => "does not run out at this rate".to_owned(),
    };
    let confidence = if e.significant {
        ""
    } else {
        " (growth not significant)"
    };
    format!(
        "{what} ({} left) at {}: {when}{confidence}",
        bytes(e.headroom_bytes),
        rate(e.slope_bytes_per_hour)
    )
}

/// A process's growth: the growing sites (with their headline frame), pools and totals,
/// the black-box view and the exhaustion estimates.
pub fn process_summary(p: &ProcessReport, out: &mut dyn Write) -> io::Result<()> {
    let Some(aging) = &p.aging else {
        return Ok(());
    };
    writeln!(out)?;
    if aging.host.trend.is_none() {
        writeln!(
            out,
            "{INDENT}growth over time: {} after the warm-up, not enough to test (needs {})",
            points(aging.points),
            points(crate::analysis::aging::MIN_POINTS)
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{INDENT}growth over time ({} of {} after the warm-up):",
        points(aging.points),
        span(aging.step_s)
    )?;
    let sites: Vec<(usize, &Site, &TrendReport)> = p
        .sites
        .iter()
        .enumerate()
        .filter_map(|(i, s)| growing(&s.aging).map(|t| (i, s, t)))
        .collect();
    let mut any = false;
    for (rank, site, t) in &sites {
        any = true;
        let at = site
            .headline()
            .map_or_else(|| "(no frames)".to_owned(), frame_line);
        writeln!(
            out,
            "{INDENT}{INDENT}site #{}: {} [{} {}] at {at}",
            rank + 1,
            trend_text(t),
            site.memory.name(),
            site.pool
        )?;
    }
    for pool in &aging.pools {
        if let Some(t) = growing(&pool.tested) {
            any = true;
            let device = pool
                .device
                .map(|d| format!(" on GPU {d}"))
                .unwrap_or_default();
            writeln!(
                out,
                "{INDENT}{INDENT}pool {} ({}{device}): {}",
                pool.pool,
                pool.memory.name(),
                trend_text(t)
            )?;
        }
    }
    if let Some(t) = growing(&aging.host) {
        any = true;
        writeln!(out, "{INDENT}{INDENT}own host memory: {}", trend_text(t))?;
    }
    for d in &aging.devices {
        if let Some(t) = growing(&d.tested) {
            any = true;
            let device = d.device.map_or_else(|| "?".to_owned(), |d| d.to_string());
            writeln!(
                out,
                "{INDENT}{INDENT}own memory on GPU {device}: {}",
                trend_text(t)
            )?;
        }
    }
    if !any {
        writeln!(out, "{INDENT}{INDENT}no significant growth")?;
    }
    for (name, resident) in [("USS", &aging.uss), ("RSS", &aging.rss)] {
        let Some(r) = resident else { continue };
        let verdict = verdict(&r.tested);
        writeln!(
            out,
            "{INDENT}{INDENT}black box: {name} {} ({} medians): {verdict}",
            bytes(r.latest_bytes),
            span(r.window_s)
        )?;
    }
    for e in &aging.exhaustion {
        writeln!(out, "{INDENT}{INDENT}{}", exhaustion_text(e))?;
    }
    Ok(())
}

fn points(n: usize) -> String {
    crate::report::human::count(n as u64, "value", "values")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_hours_read_naturally() {
        assert_eq!(rate(12_288.0), "+12.00 KiB/h");
        assert_eq!(rate(-512.0), "-512 B/h");
        assert_eq!(rate(f64::NAN), "+? B/h");
        assert_eq!(hours(5.25), "5.2 h");
        assert_eq!(hours(72.0), "3.0 days");
        assert_eq!(span(0.25), "250 ms");
        assert_eq!(span(60.0), "60 s");
        assert_eq!(span(1.5), "1.5 s");
        assert_eq!(span(1_500.0), "25.0 min");
        assert_eq!(span(7_200.0), "2.0 h");
    }

    #[test]
    fn a_trend_from_outlived_blocks_says_so() {
        let t = TrendReport {
            slope_bytes_per_hour: 12_288.0,
            ci_low: 9_216.0,
            ci_high: 15_360.0,
            p_value: 1e-4,
            significant: true,
            shape: Shape::Drift,
            basis: Some(Basis::Outlived),
        };
        assert_eq!(
            trend_text(&t),
            "+12.00 KiB/h (+9.00 KiB/h .. +15.00 KiB/h), p 1.00e-4, drift, \
             in blocks outliving every freed one"
        );
        for basis in [Some(Basis::Outstanding), None] {
            let plain = trend_text(&TrendReport { basis, ..t });
            assert!(plain.ends_with("p 1.00e-4, drift"), "{plain}");
        }
    }
}
