//! The host heap part of the text report: per process, what glibc's allocator holds from
//! the system against what the program holds and what is free, resident and unique
//! memory, the verdict in words (memory freed but not returned), and how the figures moved
//! from the first reading to the newest.

use crate::analysis::model::{HeapFigures, HeapReport, HeapVerdict};
use crate::report::human::{bytes, count, percent, seconds};
use std::io::{self, Write};

const INDENT: &str = "   ";

/// The heap section of a process (a blank line first).
pub fn summary(heap: &HeapReport, out: &mut dyn Write) -> io::Result<()> {
    let l = &heap.latest;
    let when = format!(
        "{} over {}",
        count(heap.readings, "reading", "readings"),
        seconds(heap.span_ns)
    );
    let resident = format!("RSS {}, USS {}", bytes(l.rss_bytes), bytes(l.uss_bytes));
    writeln!(out)?;
    if heap.verdict == HeapVerdict::Unknown {
        return writeln!(
            out,
            "{INDENT}host heap: no allocator figures (not glibc's malloc, or --track gpu); \
             {resident}; {when}"
        );
    }
    writeln!(
        out,
        "{INDENT}host heap: {} from the system, {} live, {} free in {} ({} of the arenas), \
         {resident}; {when}",
        bytes(l.system_bytes),
        bytes(l.live_bytes),
        bytes(l.free_bytes),
        count(l.free_chunks, "chunk", "chunks"),
        percent(l.free_permille),
    )?;
    match heap.verdict {
        HeapVerdict::Fragmented => writeln!(
            out,
            "{INDENT}fragmented: {} freed but not returned, in holes between live chunks",
            bytes(l.hole_bytes)
        )?,
        HeapVerdict::Retained => writeln!(
            out,
            "{INDENT}retained: {} freed but not returned ({} of it at the heap's end)",
            bytes(l.free_bytes),
            bytes(l.top_bytes)
        )?,
        HeapVerdict::Compact | HeapVerdict::Unknown => {}
    }
    if let (Some(first), true) = (heap.series.first(), heap.series.len() > 1) {
        trend(first, l, out)?;
    }
    Ok(())
}

/// How the figures moved from the first reading to the newest.
fn trend(first: &HeapFigures, last: &HeapFigures, out: &mut dyn Write) -> io::Result<()> {
    let arrow = |a: u64, b: u64| format!("{} -> {}", bytes(a), bytes(b));
    writeln!(
        out,
        "{INDENT}since the first reading: from the system {}, live {}, free {}, RSS {}",
        arrow(first.system_bytes, last.system_bytes),
        arrow(first.live_bytes, last.live_bytes),
        arrow(first.free_bytes, last.free_bytes),
        arrow(first.rss_bytes, last.rss_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    fn render(heap: &HeapReport) -> String {
        let mut out = Vec::new();
        summary(heap, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fragmented_heap_in_words() {
        let text = render(&fixture::heap_report());
        let want = [
            "",
            "   host heap: 57.00 MiB from the system, 24.41 MiB live, 27.00 MiB free in 100001 \
             chunks (50.0% of the arenas), RSS 62.00 MiB, USS 60.00 MiB; 3 readings over 2.5 s",
            "   fragmented: 26.90 MiB freed but not returned, in holes between live chunks",
            "   since the first reading: from the system 2.00 MiB -> 57.00 MiB, live 1000 B -> \
             24.41 MiB, free 100.00 KiB -> 27.00 MiB, RSS 10.00 MiB -> 62.00 MiB",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), want, "{text}");
    }

    #[test]
    fn other_verdicts() {
        let mut heap = fixture::heap_report();
        heap.verdict = HeapVerdict::Retained;
        heap.series.truncate(1);
        let text = render(&heap);
        assert!(
            text.contains("   retained: 27.00 MiB freed but not returned (100.00 KiB of it at the heap's end)\n"),
            "{text}"
        );
        assert!(!text.contains("since the first reading"), "{text}");

        heap.verdict = HeapVerdict::Compact;
        assert_eq!(render(&heap).lines().count(), 2);

        heap.verdict = HeapVerdict::Unknown;
        let text = render(&heap);
        assert_eq!(
            text.lines().nth(1),
            Some(
                "   host heap: no allocator figures (not glibc's malloc, or --track gpu); \
                 RSS 62.00 MiB, USS 60.00 MiB; 3 readings over 2.5 s"
            ),
            "{text}"
        );
    }

    #[test]
    fn units() {
        assert_eq!(seconds(12_345_000_000), "12.3 s");
        assert_eq!(percent(5), "0.5%");
        assert_eq!(percent(1000), "100.0%");
    }
}
