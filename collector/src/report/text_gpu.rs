//! The GPU parts of the text report: a site's bracket tag (memory and pool, and for GPU
//! memory the device, the space where the memory is not owned, the capture mark), and the
//! per-process GPU summary: per device what is outstanding and what address space is held,
//! the stream-ordered pools (reserved against used, and over time), the capture count, and
//! PyTorch's caching allocator (`text_torch.rs`).

use crate::analysis::model::{GpuDevice, GpuReport, Memory, Site};
use crate::report::human::{bytes, count};
use crate::report::text_torch;
use std::io::{self, Write};

const INDENT: &str = "   ";

/// `memory · pool`, then for GPU memory `· cuda:N`, the space when not owned, and
/// `· during capture`.
pub fn site_tag(s: &Site) -> String {
    let mut tag = format!("{} · {}", s.memory.name(), s.pool);
    if let Some(d) = s.device {
        tag.push_str(&format!(" · cuda:{d}"));
    }
    if let (Some(space), false) = (s.space, s.owned) {
        tag.push_str(&format!(" · {}", space.name()));
    }
    if s.during_capture {
        tag.push_str(" · during capture");
    }
    tag
}

fn device_name(d: &GpuDevice) -> String {
    d.device
        .map_or_else(|| "no device".to_owned(), |d| format!("cuda:{d}"))
}

/// The GPU summary of a process.
pub fn summary(gpu: &GpuReport, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out)?;
    if gpu.devices.is_empty() {
        writeln!(out, "{INDENT}GPU: no GPU memory recorded")?;
    } else {
        writeln!(
            out,
            "{INDENT}{:<10} {:>12} {:>12} {:>12} {:>14} {:>12}",
            "GPU", "device", "pinned", "managed", "reserved addr", "mapped"
        )?;
        for d in &gpu.devices {
            let held = |m: Memory| d.by_memory.get(&m).map_or(0, |c| c.outstanding_bytes);
            writeln!(
                out,
                "{INDENT}{:<10} {:>12} {:>12} {:>12} {:>14} {:>12}",
                device_name(d),
                bytes(held(Memory::Device)),
                bytes(held(Memory::Pinned)),
                bytes(held(Memory::Managed)),
                bytes(d.reserved_address_bytes),
                bytes(d.mapped_bytes)
            )?;
        }
        for d in &gpu.devices {
            let mut also = Vec::new();
            if d.registered_bytes > 0 {
                also.push(format!("{} registered", bytes(d.registered_bytes)));
            }
            if d.imported_handles > 0 {
                let n = count(d.imported_handles, "imported handle", "imported handles");
                also.push(n);
            }
            if d.retained_handles > 0 {
                let n = count(d.retained_handles, "retained handle", "retained handles");
                also.push(n);
            }
            if !also.is_empty() {
                writeln!(out, "{INDENT}{}: {}", device_name(d), also.join(", "))?;
            }
        }
    }
    if !gpu.stream_pools.is_empty() {
        writeln!(out, "{INDENT}stream-ordered pools (reserved / used):")?;
        for p in &gpu.stream_pools {
            let device = p.device.map(|d| format!(" (cuda:{d})")).unwrap_or_default();
            let mut state = vec![if p.created_by_program {
                "created by the program"
            } else {
                "default or pre-existing"
            }
            .to_owned()];
            if p.destroyed {
                state.push("destroyed".to_owned());
            }
            state.push(count(p.readings, "reading", "readings"));
            writeln!(
                out,
                "{INDENT}{INDENT}{}{device}  {} / {}  [{}]",
                p.handle,
                bytes(p.reserved_bytes),
                bytes(p.used_bytes),
                state.join(", ")
            )?;
            if let Some(trend) = text_torch::stream_pool_trend(p) {
                writeln!(out, "{INDENT}{INDENT}{INDENT}{trend}")?;
            }
        }
    }
    if gpu.captures > 0 {
        writeln!(out, "{INDENT}CUDA graph captures: {}", gpu.captures)?;
    }
    if let Some(torch) = &gpu.torch {
        text_torch::summary(torch, out)?;
    }
    Ok(())
}
