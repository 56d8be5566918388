//! The text report, for people: per process a header, totals per kind of memory, dropped
//! events, then the sites holding the most memory with their stacks, a short list of the
//! sites that churned the most while freeing everything, and for a process that used GPUs
//! a GPU summary (`text_gpu.rs`, which also tags GPU sites with their device and space),
//! then the host heap over time (`text_heap.rs`). A stack with Python frames is shown from
//! its innermost Python frame, each Python frame followed by the native code it called
//! outside the interpreter.

use crate::analysis::model::{
    Counts, Frame, OriginName, ProcessReport, ReportModel, Site, StreamStatus,
};
use crate::analysis::python::is_interpreter_module;
use crate::report::human::{bytes, count, utc_time};
use crate::report::text_gpu::{site_tag, summary};
use crate::report::Report;
use std::io::{self, Write};

/// Renders the text report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextReport {
    /// Sites with outstanding memory listed per process when analysis set no limit.
    pub default_top: usize,
    /// Sites that freed everything listed per process.
    pub churn_sites: usize,
}

impl Default for TextReport {
    fn default() -> Self {
        TextReport {
            default_top: 20,
            churn_sites: 5,
        }
    }
}

pub(crate) const INDENT: &str = "   ";
const FRAME_INDENT: &str = "         ";

impl Report for TextReport {
    fn render(&self, model: &ReportModel, out: &mut dyn Write) -> io::Result<()> {
        let command = if model.command.is_empty() {
            "(unknown command)".to_owned()
        } else {
            model.command.join(" ")
        };
        writeln!(
            out,
            "leakscope {} report: {command}",
            model.leakscope_version
        )?;
        writeln!(out, "{}", run_outcome(model))?;
        writeln!(
            out,
            "{} tracked",
            count(model.processes.len() as u64, "process", "processes")
        )?;
        for warning in &model.warnings {
            writeln!(out, "warning: {warning}")?;
        }
        if let Some(aging) = &model.aging {
            crate::report::text_aging::run_summary(aging, out)?;
        }
        let limit = model.top.unwrap_or(self.default_top);
        for process in &model.processes {
            writeln!(out)?;
            self.process(process, limit, out)?;
        }
        Ok(())
    }
}

fn run_outcome(model: &ReportModel) -> String {
    if model.live {
        let at = model
            .snapshot_unix_ns
            .map_or_else(|| "now".to_owned(), |ns| format!("at {}", utc_time(ns)));
        return format!("live recording: the command is still running (snapshot {at})");
    }
    match (model.signal, model.exit_status) {
        (Some(signal), Some(status)) => {
            format!("command ended by signal {signal} (exit status {status})")
        }
        (Some(signal), None) => format!("command ended by signal {signal}"),
        (None, Some(status)) => format!("command exited with status {status}"),
        (None, None) => "command exit status unknown".to_owned(),
    }
}

fn stream_text(p: &ProcessReport) -> String {
    match p.stream {
        StreamStatus::Clean => "exited".to_owned(),
        StreamStatus::Exec => "replaced itself by exec".to_owned(),
        StreamStatus::CutOff => "stream cut off (killed, or crashed before exit)".to_owned(),
        StreamStatus::Open => "still running when reported".to_owned(),
        StreamStatus::Damaged => format!(
            "stream damaged: {}",
            p.stream_problem.as_deref().unwrap_or("unknown problem")
        ),
    }
}

impl TextReport {
    fn process(&self, p: &ProcessReport, limit: usize, out: &mut dyn Write) -> io::Result<()> {
        let command = if p.command.is_empty() {
            &p.exe
        } else {
            &p.command
        };
        writeln!(out, "== process {}  {command}", p.pid)?;
        let origin = match (p.origin, p.parent) {
            (OriginName::Exec, _) => "started by exec".to_owned(),
            (OriginName::Fork, Some(parent)) => format!("forked from {parent}"),
            (OriginName::Fork, None) => "forked".to_owned(),
        };
        writeln!(
            out,
            "{INDENT}exe {} · ppid {} · {origin} · {}",
            p.exe,
            p.ppid,
            stream_text(p)
        )?;
        totals_table(p, out)?;
        dropped(p, out)?;
        writeln!(out, "{INDENT}unknown frees: {}", p.unknown_frees)?;
        for note in &p.notes {
            writeln!(out, "{INDENT}note: {note}")?;
        }
        crate::report::text_aging::process_summary(p, out)?;

        let (holding, churn): (Vec<_>, Vec<_>) = p
            .sites
            .iter()
            .enumerate()
            .partition(|(_, s)| s.outstanding_bytes > 0);
        for (rank, site) in holding.iter().take(limit) {
            writeln!(out)?;
            write_site(*rank, site, out)?;
        }
        let hidden = holding.len().saturating_sub(limit) + p.sites_omitted;
        if hidden > 0 {
            writeln!(out)?;
            writeln!(
                out,
                "{INDENT}... {} not shown (raise --top to list more)",
                count(hidden as u64, "more site", "more sites")
            )?;
        }
        let mut churn: Vec<_> = churn
            .into_iter()
            .filter(|(_, s)| s.allocations > 0)
            .collect();
        churn
            .sort_by(|(ra, a), (rb, b)| b.allocated_bytes.cmp(&a.allocated_bytes).then(ra.cmp(rb)));
        if !churn.is_empty() && self.churn_sites > 0 {
            writeln!(out)?;
            writeln!(
                out,
                "{INDENT}sites that freed everything (churn), by bytes allocated:"
            )?;
            for (rank, site) in churn.iter().take(self.churn_sites) {
                writeln!(out)?;
                write_churn_site(*rank, site, out)?;
            }
            if churn.len() > self.churn_sites {
                writeln!(
                    out,
                    "{INDENT}... {} more",
                    count((churn.len() - self.churn_sites) as u64, "site", "sites")
                )?;
            }
        }
        if let Some(gpu) = &p.gpu {
            summary(gpu, out)?;
        }
        if let Some(heap) = &p.heap {
            crate::report::text_heap::summary(heap, out)?;
        }
        Ok(())
    }
}

fn totals_table(p: &ProcessReport, out: &mut dyn Write) -> io::Result<()> {
    if p.totals.by_memory.is_empty() {
        return writeln!(out, "{INDENT}no allocations recorded");
    }
    writeln!(
        out,
        "{INDENT}{:<8} {:>12} {:>10} {:>12} {:>12} {:>10}",
        "memory", "outstanding", "blocks", "allocations", "allocated", "temporary"
    )?;
    let row = |name: &str, c: &Counts, out: &mut dyn Write| {
        writeln!(
            out,
            "{INDENT}{name:<8} {:>12} {:>10} {:>12} {:>12} {:>10}",
            bytes(c.outstanding_bytes),
            c.outstanding_count,
            c.allocations,
            bytes(c.allocated_bytes),
            c.temporary
        )
    };
    for (memory, counts) in &p.totals.by_memory {
        row(memory.name(), counts, out)?;
    }
    if p.totals.by_memory.len() > 1 {
        row("total", &p.totals.all, out)?;
    }
    Ok(())
}

fn dropped(p: &ProcessReport, out: &mut dyn Write) -> io::Result<()> {
    let d = &p.dropped;
    if d.is_none() {
        return writeln!(out, "{INDENT}dropped events: none");
    }
    writeln!(
        out,
        "{INDENT}dropped events: {} ({}), {}",
        count(d.allocs, "allocation", "allocations"),
        bytes(d.alloc_bytes),
        count(d.frees, "free", "frees")
    )?;
    writeln!(
        out,
        "{INDENT}warning: the shim could not keep up; outstanding figures may be inflated \
         (dropped frees) or miss memory (dropped allocations)"
    )
}

/// A site still holding memory: its figures, then its stack.
fn write_site(rank: usize, s: &Site, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{INDENT}#{}  {} outstanding in {} (peak {}), {}, {} temporary  [{}]",
        rank + 1,
        bytes(s.outstanding_bytes),
        count(s.outstanding_count, "block", "blocks"),
        bytes(s.peak_bytes),
        count(s.allocations, "allocation", "allocations"),
        s.temporary,
        site_tag(s)
    )?;
    write_frames(s, out)
}

/// A site that freed everything: how much it went through, then its stack.
fn write_churn_site(rank: usize, s: &Site, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{INDENT}#{}  {} allocated in {}, all freed (peak {}), {} temporary  [{}]",
        rank + 1,
        bytes(s.allocated_bytes),
        count(s.allocations, "allocation", "allocations"),
        bytes(s.peak_bytes),
        s.temporary,
        site_tag(s)
    )?;
    write_frames(s, out)
}

fn write_frames(s: &Site, out: &mut dyn Write) -> io::Result<()> {
    if s.frames.is_empty() {
        return writeln!(out, "{FRAME_INDENT}(no frames beyond the allocator)");
    }
    if s.frames.iter().any(|f| f.python) {
        return write_python_frames(&s.frames, out);
    }
    let shown = frames_through_main(&s.frames);
    for frame in &s.frames[..shown] {
        writeln!(out, "{FRAME_INDENT}{}", frame_line(frame))?;
    }
    let hidden = s.frames.len() - shown;
    if hidden > 0 {
        let plural = if hidden == 1 { "" } else { "s" };
        writeln!(
            out,
            "{FRAME_INDENT}… {hidden} start-up frame{plural} below main (in the JSON report)"
        )?;
    }
    Ok(())
}

/// A stack with Python frames (innermost first): each Python frame, then the native frames
/// it called outside the interpreter (C extensions, libraries) in call order, down to the
/// next Python frame or the allocator. The interpreter's own frames, and everything below
/// the outermost Python frame (interpreter start-up, thread start), are counted only.
fn write_python_frames(frames: &[Frame], out: &mut dyn Write) -> io::Result<()> {
    let outermost = frames.iter().rposition(|f| f.python).unwrap_or(0);
    let mut hidden = frames.len() - outermost - 1;
    let mut called: Vec<&Frame> = Vec::new();
    for f in &frames[..=outermost] {
        if f.python {
            writeln!(out, "{FRAME_INDENT}{}", frame_line(f))?;
            for native in called.drain(..).rev() {
                writeln!(out, "{FRAME_INDENT}  calls {}", frame_line(native))?;
            }
        } else if f.module.as_deref().is_some_and(is_interpreter_module) {
            hidden += 1;
        } else {
            called.push(f);
        }
    }
    if hidden > 0 {
        let plural = if hidden == 1 { "" } else { "s" };
        writeln!(
            out,
            "{FRAME_INDENT}… {hidden} interpreter and start-up frame{plural} not shown (in the \
             JSON report)"
        )?;
    }
    Ok(())
}

/// How many frames to print: through the first C-level `main`, or the program's own
/// `main` when no C-level one follows, since what lies below (`__libc_start_main`, Rust's
/// `lang_start` machinery) is the same for every site. All frames when there is no `main`.
fn frames_through_main(frames: &[Frame]) -> usize {
    let is = |f: &Frame, pred: fn(&str) -> bool| f.function.as_deref().is_some_and(pred);
    if let Some(i) = frames.iter().position(|f| is(f, |n| n == "main")) {
        // A Rust program's own `crate::main` comes before the runtime's frames and the
        // C-level `main`: stop at the program's.
        return frames[..i]
            .iter()
            .position(|f| is(f, |n| n.ends_with("::main")))
            .map_or(i + 1, |j| j + 1);
    }
    frames.len()
}

/// `function  file:line  (module)`, with what is unknown left out.
pub(crate) fn frame_line(f: &Frame) -> String {
    let mut line = match &f.function {
        Some(function) => function.to_string(),
        None => format!("[unknown] {}", f.address),
    };
    match (&f.file, f.line) {
        (Some(file), Some(n)) => line.push_str(&format!("  {file}:{n}")),
        (Some(file), None) => line.push_str(&format!("  {file}")),
        (None, _) => {}
    }
    match &f.module {
        Some(module) => line.push_str(&format!("  ({module})")),
        None if f.python => line.push_str("  (python)"),
        None => line.push_str("  (no module)"),
    }
    if f.inlined {
        line.push_str("  [inlined]");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    fn named(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|n| Frame {
                function: Some((*n).into()),
                file: None,
                line: None,
                module: None,
                address: "0x1".into(),
                inlined: false,
                python: false,
            })
            .collect()
    }

    #[test]
    fn frames_stop_at_main() {
        let c = named(&["leak", "main", "__libc_start_call_main", "_start"]);
        assert_eq!(frames_through_main(&c), 2);
        let rust = named(&[
            "app::leak",
            "app::main",
            "std::rt::lang_start_internal",
            "main",
            "_start",
        ]);
        assert_eq!(frames_through_main(&rust), 2);
        let thread = named(&["worker", "start_thread", "clone3"]);
        assert_eq!(frames_through_main(&thread), 3);
    }

    fn render(model: &ReportModel) -> String {
        let mut out = Vec::new();
        TextReport::default().render(model, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_header_totals_and_sites() {
        let text = render(&fixture::model());
        let lines: Vec<&str> = text.lines().collect();
        let has = |want: &str| {
            assert!(
                lines.iter().any(|l| l.trim_end() == want),
                "missing line {want:?} in:\n{text}"
            )
        };
        has("leakscope 0.1.0 report: ./app --leak");
        has("command ended by signal 9 (exit status 137)");
        has("2 processes tracked");
        has("== process 4242  ./app --leak");
        has("   exe /opt/app · ppid 1 · started by exec · exited");
        has("   memory    outstanding     blocks  allocations    allocated  temporary");
        has("   host       200.00 KiB        200          250   300.00 KiB         50");
        has("   mapped       1.00 MiB          1            1     1.00 MiB          0");
        has("   total        1.20 MiB        201          251     1.29 MiB         50");
        has("   dropped events: none");
        has("   unknown frees: 0");
        has("   #1  1.00 MiB outstanding in 1 block (peak 1.00 MiB), 1 allocation, 0 temporary  [mapped · mmap]");
        has("   #2  200.00 KiB outstanding in 200 blocks (peak 200.00 KiB), 200 allocations, 0 temporary  [host · malloc]");
        has("         fill_cache  src/cache.c:12  (app)  [inlined]");
        has("         leak_here  src/main.c:20  (app)");
        has("         main  src/main.c:30  (app)");
        // The fixture's unknown frame lies below `main`: counted, not printed.
        has("         … 1 start-up frame below main (in the JSON report)");
        let unknown = &fixture::model().processes[0].sites[1].frames[3];
        assert_eq!(frame_line(unknown), "[unknown] 0x2040  (libgone.so)");
        has("         [unknown] 0x42  (no module)");
        has("   sites that freed everything (churn), by bytes allocated:");
        has("   #3  100.00 KiB allocated in 1000 allocations, all freed (peak 64.00 KiB), 990 temporary  [host · malloc]");
        has("         churn  src/main.c:40  (app)");

        has("== process 4243  ./app --leak");
        has("   exe /opt/app · ppid 4242 · forked from 4242 · stream damaged: truncated frame");
        has("   dropped events: 3 allocations (300 B), 1 free");
        has("   no allocations recorded");
        has("   unknown frees: 2");
        has("   note: inherited nothing: the parent's fork record never arrived");
        has("warning: a stream never said Hello");
    }

    #[test]
    fn python_stacks_start_at_the_python_line() {
        let native = |function: &str, module: &str| Frame {
            function: Some(function.into()),
            file: None,
            line: None,
            module: Some(module.into()),
            address: "0x1".into(),
            inlined: false,
            python: false,
        };
        let py = |function: &str, line: u32| Frame {
            function: Some(function.into()),
            file: Some("app/cache.py".into()),
            line: Some(line),
            module: None,
            address: "0x1a".into(),
            inlined: false,
            python: true,
        };
        let lib = "libpython3.12.so.1.0";
        let mut model = fixture::model();
        model.processes[0].sites[1].frames = vec![
            native("ffi_call_unix64", "libffi.so.8"),
            native("_ctypes_callproc", "_ctypes.so"),
            native("_PyObject_MakeTpCall", lib),
            py("Cache.fill", 12),
            native("_PyFunction_Vectorcall", lib),
            native("bridge", "_ext.so"),
            py("<module>", 30),
            native("Py_RunMain", lib),
            native("main", "python3.12"),
            native("__libc_start_main", "libc.so.6"),
        ];
        let text = render(&model);
        let want = [
            "   #2  200.00 KiB outstanding in 200 blocks (peak 200.00 KiB), 200 allocations, 0 temporary  [host · malloc]",
            "         Cache.fill  app/cache.py:12  (python)",
            "           calls _ctypes_callproc  (_ctypes.so)",
            "           calls ffi_call_unix64  (libffi.so.8)",
            "         <module>  app/cache.py:30  (python)",
            "           calls bridge  (_ext.so)",
            "         … 5 interpreter and start-up frames not shown (in the JSON report)",
        ]
        .join("\n");
        assert!(text.contains(&want), "missing\n{want}\nin:\n{text}");
    }

    #[test]
    fn limits_sites_listed() {
        let mut model = fixture::model();
        model.top = Some(1);
        let text = render(&model);
        assert!(text.contains("#1  1.00 MiB outstanding"));
        assert!(!text.contains("#2  200.00 KiB"));
        assert!(text.contains("... 1 more site not shown"));
        // Analysis-side truncation is reported too.
        let mut model = fixture::model();
        model.processes[0].sites_omitted = 4;
        assert!(render(&model).contains("... 4 more sites not shown"));
    }

    #[test]
    fn gpu_sites_are_tagged_and_summarized() {
        let host_only = render(&fixture::model());
        let text = render(&fixture::gpu_model());
        assert!(text.starts_with(&host_only.replace("2 processes", "3 processes")));
        assert!(
            !host_only.contains("GPU"),
            "no GPU summary without a gpu section"
        );
        let lines: Vec<&str> = text.lines().collect();
        let has = |want: &str| {
            assert!(
                lines.iter().any(|l| l.trim_end() == want),
                "missing line {want:?} in:\n{text}"
            )
        };
        has("   device       1.06 GiB          3            3     1.06 GiB          0");
        has("   #1  4.00 GiB outstanding in 1 block (peak 4.00 GiB), 1 allocation, 0 temporary  [device · direct · cuda:0 · reservation]");
        has("   #2  1.00 GiB outstanding in 1 block (peak 1.00 GiB), 1 allocation, 0 temporary  [device · pytorch-caching · cuda:0]");
        has("   #3  64.00 MiB outstanding in 1 block (peak 64.00 MiB), 1 allocation, 0 temporary  [device · pytorch-graph-pool · cuda:0 · during capture]");
        has("   #4  16.00 MiB outstanding in 1 block (peak 16.00 MiB), 1 allocation, 0 temporary  [pinned · pytorch-pinned-cache]");
        has("   GPU              device       pinned      managed  reserved addr       mapped");
        has("   cuda:0         1.06 GiB          0 B          0 B       4.00 GiB     2.00 MiB");
        has("   no device           0 B    16.00 MiB          0 B            0 B          0 B");
        has("   cuda:0: 1 imported handle");
        has("   stream-ordered pools (reserved / used):");
        has("      0x5555aaaa0000 (cuda:0)  32.00 MiB / 8.00 MiB  [created by the program, 12 readings]");
        has("   CUDA graph captures: 2");
    }

    #[test]
    fn gpu_section_without_gpu_memory() {
        let mut model = fixture::model();
        model.processes[1].gpu = Some(crate::analysis::model::GpuReport::default());
        let text = render(&model);
        assert!(text.ends_with("   GPU: no GPU memory recorded\n"), "{text}");
    }

    #[test]
    fn default_limit_is_twenty() {
        let mut model = fixture::model();
        let site = model.processes[0].sites[1].clone();
        model.processes[0].sites = vec![site; 25];
        let text = render(&model);
        assert!(text.contains("#20  "));
        assert!(!text.contains("#21  "));
        assert!(text.contains("... 5 more sites not shown"));
    }

    #[test]
    fn a_live_report_says_it_is_a_snapshot() {
        let mut model = fixture::model();
        model.live = true;
        model.exit_status = None;
        model.signal = None;
        model.snapshot_unix_ns = Some(1_709_296_496_000_000_000);
        let text = render(&model);
        assert_eq!(
            text.lines().nth(1),
            Some("live recording: the command is still running (snapshot at 2024-03-01 12:34:56 UTC)"),
            "{text}"
        );
        assert!(!text.contains("exit status"), "{text}");
    }
}
