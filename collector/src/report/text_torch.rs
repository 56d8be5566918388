//! The PyTorch part of the text report's GPU summary: the caching allocator per device and
//! pool at the newest reading (reserved, allocated, requested, segments, free bytes, the
//! largest free block, external fragmentation, inactive split bytes), how each device's
//! figures moved from the first reading to the newest, and the block counts; plus the
//! trend line of a stream-ordered pool (reserved against used over time).

use crate::analysis::model::StreamPool;
use crate::analysis::torch_model::{TorchFigures, TorchReport};
use crate::report::human::{bytes, count, percent, seconds};
use std::io::{self, Write};

const INDENT: &str = "   ";

/// The PyTorch section (a heading line first).
pub fn summary(t: &TorchReport, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{INDENT}PyTorch caching allocator ({} over {}): {} live ({}{}), {}",
        count(t.readings, "reading", "readings"),
        seconds(t.span_ns),
        count(t.blocks.live_blocks, "block", "blocks"),
        bytes(t.blocks.live_bytes),
        if t.blocks.unsized_live_blocks > 0 {
            format!(
                "; {} handed out after the last reading, size unknown",
                t.blocks.unsized_live_blocks
            )
        } else {
            String::new()
        },
        count(t.blocks.allocations, "allocation", "allocations"),
    )?;
    if t.blocks.untracked_blocks > 0 {
        writeln!(
            out,
            "{INDENT}{INDENT}{} ({}) held by no tracked allocation (made before tracking began)",
            count(t.blocks.untracked_blocks, "block", "blocks"),
            bytes(t.blocks.untracked_bytes)
        )?;
    }
    if t.pools.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "{INDENT}{INDENT}{:<26} {:>6} {:>11} {:>11} {:>11} {:>5} {:>11} {:>11} {:>6} {:>11}",
        "pool",
        "device",
        "reserved",
        "allocated",
        "requested",
        "segs",
        "free",
        "largest",
        "frag",
        "split free"
    )?;
    for p in &t.pools {
        row(&p.pool, p.device, &p.latest, out)?;
    }
    for d in t.devices.iter().filter(|d| d.series.len() > 1) {
        if let (Some(first), Some(last)) = (d.series.first(), d.series.last()) {
            trend(d.device, first, last, out)?;
        }
    }
    Ok(())
}

fn row(name: &str, device: u32, f: &TorchFigures, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{INDENT}{INDENT}{:<26} {:>6} {:>11} {:>11} {:>11} {:>5} {:>11} {:>11} {:>6} {:>11}",
        name,
        format!("cuda:{device}"),
        bytes(f.reserved_bytes),
        bytes(f.allocated_bytes),
        bytes(f.requested_bytes),
        f.segments,
        bytes(f.free_bytes),
        bytes(f.largest_free_bytes),
        percent(f.external_fragmentation_permille),
        bytes(f.inactive_split_bytes),
    )
}

/// How a device's figures moved from the first reading to the newest.
fn trend(
    device: u32,
    first: &TorchFigures,
    last: &TorchFigures,
    out: &mut dyn Write,
) -> io::Result<()> {
    let arrow = |a: u64, b: u64| format!("{} -> {}", bytes(a), bytes(b));
    writeln!(
        out,
        "{INDENT}{INDENT}cuda:{device} since the first reading: reserved {}, allocated {}, free {}, \
         fragmentation {} -> {}",
        arrow(first.reserved_bytes, last.reserved_bytes),
        arrow(first.allocated_bytes, last.allocated_bytes),
        arrow(first.free_bytes, last.free_bytes),
        percent(first.external_fragmentation_permille),
        percent(last.external_fragmentation_permille),
    )
}

/// `reserved a -> b (peak p), used c -> d (peak q)` over a stream-ordered pool's readings,
/// when it has more than one.
pub fn stream_pool_trend(p: &StreamPool) -> Option<String> {
    let (first, last) = (p.series.first()?, p.series.last()?);
    if p.series.len() < 2 {
        return None;
    }
    let peak_reserved = p.series.iter().map(|r| r.reserved_bytes).max().unwrap_or(0);
    let peak_used = p.series.iter().map(|r| r.used_bytes).max().unwrap_or(0);
    Some(format!(
        "over time: reserved {} -> {} (peak {}), used {} -> {} (peak {})",
        bytes(first.reserved_bytes),
        bytes(last.reserved_bytes),
        bytes(peak_reserved),
        bytes(first.used_bytes),
        bytes(last.used_bytes),
        bytes(peak_used)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::torch_model::{sample, StreamPoolPoint};

    fn render(t: &TorchReport) -> String {
        let mut out = Vec::new();
        summary(t, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pools_devices_and_blocks() {
        let text = render(&sample());
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        assert_eq!(
            lines[0],
            "   PyTorch caching allocator (2 readings over 2.0 s): 20 blocks live (60.00 MiB; 1 \
             handed out after the last reading, size unknown), 120 allocations"
        );
        assert_eq!(
            lines[1],
            "      pool                       device    reserved   allocated   requested  segs        free     largest   frag  split free"
        );
        assert_eq!(
            lines[2],
            "      pytorch-caching            cuda:0  100.00 MiB   40.00 MiB   40.00 MiB     5   60.00 MiB    6.00 MiB  90.0%   30.00 MiB"
        );
        assert!(lines[3].starts_with("      pytorch-graph-pool         cuda:0   20.00 MiB"));
        assert!(lines[3].contains("  0.0%"));
        assert_eq!(
            lines[4],
            "      cuda:0 since the first reading: reserved 40.00 MiB -> 120.00 MiB, allocated \
             30.00 MiB -> 60.00 MiB, free 10.00 MiB -> 60.00 MiB, fragmentation 20.0% -> 90.0%"
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn untracked_blocks_are_mentioned() {
        let mut t = sample();
        t.blocks.untracked_blocks = 2;
        t.blocks.untracked_bytes = 4096;
        let text = render(&t);
        assert!(text.contains(
            "      2 blocks (4.00 KiB) held by no tracked allocation (made before tracking began)"
        ));
    }

    #[test]
    fn stream_pool_trend_needs_two_readings() {
        let mut p = crate::report::fixture::gpu_model().processes[2]
            .gpu
            .clone()
            .unwrap()
            .stream_pools[0]
            .clone();
        assert_eq!(stream_pool_trend(&p), None);
        let point = |reserved_bytes, used_bytes| StreamPoolPoint {
            at_ns: 0,
            reserved_bytes,
            used_bytes,
        };
        p.series = vec![
            point(2 << 20, 1 << 20),
            point(8 << 20, 6 << 20),
            point(4 << 20, 0),
        ];
        assert_eq!(
            stream_pool_trend(&p).unwrap(),
            "over time: reserved 2.00 MiB -> 4.00 MiB (peak 8.00 MiB), used 1.00 MiB -> 0 B (peak 6.00 MiB)"
        );
    }
}
