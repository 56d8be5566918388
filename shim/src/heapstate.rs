//! Host heap readings, taken on the sender thread: at the stream's start, every
//! `Config.interval` after that, and once more at the stream's end (so a short program gets
//! a final reading). Each [`HeapReading`] holds the process's resident memory
//! (`/proc/self/statm`) and unique memory (`/proc/self/smaps_rollup`: private clean +
//! private dirty) and, when the C heap is tracked and the allocator is glibc's, glibc's own
//! per-arena view from `malloc_info` (system bytes, free bytes and chunks, fast bins, the
//! top chunk), parsed here from its XML by a small tolerant parser.
//!
//! What the readings cost the target: `malloc_info` takes each arena's lock for one walk of
//! its free lists (never while it writes its XML; about 17 ms per million free chunks
//! here, during which the program's allocations in that arena wait); its output goes to an `open_memstream`
//! buffer whose `malloc`/`realloc` calls, like every allocation of this thread, pass
//! through the hooks unrecorded (the sender thread is marked as the shim's). Those
//! allocations land in the sender thread's own arena, which the readings therefore include,
//! as `mallinfo2` would: it is memory of the process.

use crate::env::Config;
use crate::real::Real;
use crate::timebase::Timebase;
use leakscope_protocol::{ArenaReading, HeapReading, Record, Timestamp};
use std::ffi::{c_char, c_int, c_void};
use std::io::Read;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

type MallocInfoFn = unsafe extern "C" fn(c_int, *mut libc::FILE) -> c_int;
type VersionFn = unsafe extern "C" fn() -> *const c_char;
type MallocFn = unsafe extern "C" fn(libc::size_t) -> *mut c_void;

static MALLOC_INFO: Real<MallocInfoFn> = Real::new(c"malloc_info");
static GLIBC_VERSION: Real<VersionFn> = Real::new(c"gnu_get_libc_version");
static MALLOC: Real<MallocFn> = Real::new(c"malloc");

/// When the next reading is due, and what goes into it. One per sender (a fork child's
/// new sender starts with a reading of its own).
pub struct Sampler {
    interval: Duration,
    /// Read the glibc arenas (`Config.host`); resident memory is read either way.
    host: bool,
    next: Option<Instant>,
    /// Reused for the `/proc` files.
    buf: Vec<u8>,
}

impl Sampler {
    pub fn new(config: &Config) -> Sampler {
        Sampler {
            interval: config.interval,
            host: config.host,
            next: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Appends a reading to `out` when one is due: on the first call, then once per
    /// interval. The timestamp is `tb`'s now, taken after the reading.
    pub fn poll(&mut self, out: &mut Vec<Record>, tb: &mut Timebase) {
        let now = Instant::now();
        if self.next.is_some_and(|next| now < next) {
            return;
        }
        self.next = Some(now.checked_add(self.interval).unwrap_or(now));
        self.last(out, tb);
    }

    /// Appends a reading to `out` now (the end of the stream).
    pub fn last(&mut self, out: &mut Vec<Record>, tb: &mut Timebase) {
        let mut reading = self.read();
        reading.ts = Timestamp(tb.now_ns());
        out.push(Record::Heap(reading));
    }

    /// A reading of the process now, timestamp left at 0.
    fn read(&mut self) -> HeapReading {
        let mut r = HeapReading::default();
        if self.host {
            if let Some(info) = glibc_malloc_info() {
                r.arenas = info.arenas;
                r.mmap_chunks = info.mmap_chunks;
                r.mmap_bytes = info.mmap_bytes;
            }
        }
        if read_file("/proc/self/statm", &mut self.buf) {
            r.rss = parse_statm(&self.buf).saturating_mul(page_size());
        }
        if read_file("/proc/self/smaps_rollup", &mut self.buf) {
            r.uss = parse_uss(&self.buf);
        }
        r
    }
}

/// Reads the file at `path` into `buf` (emptied first); false when it cannot be read.
fn read_file(path: &str, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_to_end(buf).is_ok(),
        Err(_) => false,
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Resident pages: the second field of `/proc/self/statm`.
fn parse_statm(text: &[u8]) -> u64 {
    String::from_utf8_lossy(text)
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Private clean + private dirty of `/proc/self/smaps_rollup`, in bytes (its figures are
/// in kB); 0 when the kernel has no such file.
fn parse_uss(text: &[u8]) -> u64 {
    let mut total = 0u64;
    for line in String::from_utf8_lossy(text).lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        if key == "Private_Clean" || key == "Private_Dirty" {
            let kb: u64 = rest
                .split_ascii_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            total = total.saturating_add(kb.saturating_mul(1024));
        }
    }
    total
}

/// What `malloc_info` says, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MallocInfo {
    arenas: Vec<ArenaReading>,
    mmap_chunks: u64,
    mmap_bytes: u64,
}

/// glibc's `malloc_info`, when the C library is glibc and its allocator is the one in use:
/// the next `malloc` after the shim lies in the same object as `gnu_get_libc_version` (an
/// allocator linked or preloaded in front of glibc's leaves glibc's arenas empty, and
/// reading them would only mislead).
///
/// Remembered without a lock (computing it twice is harmless): a fork child must not wait
/// on an initialization its parent's sender thread had begun.
fn glibc_malloc_info_fn() -> Option<MallocInfoFn> {
    const UNKNOWN: u8 = 0;
    const ABSENT: u8 = 1;
    const PRESENT: u8 = 2;
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    static FOUND: AtomicUsize = AtomicUsize::new(0);
    match STATE.load(Ordering::Acquire) {
        PRESENT => {
            let f = FOUND.load(Ordering::Acquire);
            // SAFETY: `f` was stored from a `MallocInfoFn` below, before PRESENT.
            Some(unsafe { std::mem::transmute::<usize, MallocInfoFn>(f) })
        }
        ABSENT => None,
        _ => {
            let found = find_glibc_malloc_info();
            if let Some(f) = found {
                FOUND.store(f as usize, Ordering::Release);
            }
            STATE.store(
                if found.is_some() { PRESENT } else { ABSENT },
                Ordering::Release,
            );
            found
        }
    }
}

fn find_glibc_malloc_info() -> Option<MallocInfoFn> {
    let info = MALLOC_INFO.get()?;
    let version = GLIBC_VERSION.get()?;
    let malloc = MALLOC.get()?;
    let base = |f: *const c_void| {
        // SAFETY: a zeroed Dl_info is a valid out-parameter; dladdr only reads `f`.
        let mut dl: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let found = unsafe { libc::dladdr(f, &mut dl) } != 0;
        found.then_some(dl.dli_fbase)
    };
    let glibc = base(version as *const c_void)?;
    (base(malloc as *const c_void)? == glibc).then_some(info)
}

/// Runs `malloc_info` into a memory stream and parses it; `None` when it is not glibc's,
/// or the stream could not be made or read.
fn glibc_malloc_info() -> Option<MallocInfo> {
    let info = glibc_malloc_info_fn()?;
    let mut buf: *mut c_char = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: both out-pointers are valid for the stream's lifetime (until `fclose`).
    let f = unsafe { libc::open_memstream(&mut buf, &mut len) };
    if f.is_null() {
        return None;
    }
    // SAFETY: `f` is an open stream; options must be 0.
    let rc = unsafe { info(0, f) };
    // SAFETY: `f` is open; closing it finalizes `buf` and `len`.
    unsafe { libc::fclose(f) };
    if buf.is_null() {
        return None;
    }
    let parsed = (rc == 0).then(|| {
        // SAFETY: after fclose, `buf` holds `len` bytes written by the stream.
        let text = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
        parse_malloc_info(text)
    });
    // SAFETY: the stream's buffer was allocated with malloc and is no longer used.
    unsafe { libc::free(buf.cast()) };
    parsed.flatten()
}

/// The low bits of a glibc chunk size that are flags (`SIZE_BITS`), never bytes.
const SIZE_FLAG_BITS: u64 = 7;

/// One arena's figures while its `<heap>` element is read.
#[derive(Default)]
struct ArenaAcc {
    fast: (u64, u64),
    rest: (u64, u64),
    system: u64,
    /// Bytes in the `<sizes>` entries: every free chunk but the top one.
    binned: u64,
    /// Of `binned` and `rest`, flag bits rather than bytes: glibc sums the bins' chunk
    /// sizes with their flag bits (`chunksize_nomask`; a binned chunk has `PREV_INUSE`),
    /// so each entry overstates its bytes by `count` × its `to` value's flag bits.
    flags: u64,
}

impl ArenaAcc {
    fn finish(&self) -> ArenaReading {
        let listed = self.fast.1.saturating_add(self.rest.1);
        ArenaReading {
            system: self.system,
            free: listed.saturating_sub(self.flags),
            free_chunks: self.fast.0.saturating_add(self.rest.0),
            fastbin: self.fast.1,
            // `rest` counts the top chunk, the `<sizes>` entries do not (both with the
            // same flag bits).
            top: listed.saturating_sub(self.binned),
        }
    }
}

/// Parses `malloc_info`'s XML: per `<heap>`, the `fast` and `rest` totals (count, size),
/// `<system type="current">` and the `<sizes>` entries (whose sum leaves out only the top
/// chunk; their flag bits are taken back out of the free bytes, which then equal
/// `mallinfo2`'s `fordblks`); after the heaps, `<total type="mmap">`. Unknown elements and attributes are
/// skipped, an unfinished `<heap>` is left out; `None` when there is no `<malloc>` element.
fn parse_malloc_info(xml: &[u8]) -> Option<MallocInfo> {
    let text = String::from_utf8_lossy(xml);
    let mut out = MallocInfo::default();
    let mut seen_root = false;
    let mut heap: Option<ArenaAcc> = None;
    for tag in tags(&text) {
        let (name, attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        let num = |key: &str| attr(attrs, key).and_then(|v| v.parse::<u64>().ok());
        let pair = || (num("count").unwrap_or(0), num("size").unwrap_or(0));
        match (name, heap.as_mut()) {
            ("malloc", _) => seen_root = true,
            ("heap", _) => heap = Some(ArenaAcc::default()),
            ("/heap", Some(a)) => {
                out.arenas.push(a.finish());
                heap = None;
            }
            ("size" | "unsorted", Some(a)) => {
                a.binned = a.binned.saturating_add(num("total").unwrap_or(0));
                let flags = num("to").unwrap_or(0) & SIZE_FLAG_BITS;
                let count = num("count").unwrap_or(0);
                a.flags = a.flags.saturating_add(count.saturating_mul(flags));
            }
            ("total", Some(a)) => match attr(attrs, "type") {
                Some("fast") => a.fast = pair(),
                Some("rest") => a.rest = pair(),
                _ => {}
            },
            ("system", Some(a)) if attr(attrs, "type") == Some("current") => {
                a.system = num("size").unwrap_or(0);
            }
            ("total", None) if attr(attrs, "type") == Some("mmap") => {
                (out.mmap_chunks, out.mmap_bytes) = pair();
            }
            _ => {}
        }
    }
    seen_root.then_some(out)
}

/// The contents of each `<...>` in `text` (without the brackets and a closing `/`).
fn tags(text: &str) -> impl Iterator<Item = &str> {
    text.split('<').skip(1).filter_map(|s| {
        let (inner, _) = s.split_once('>')?;
        Some(inner.trim().trim_end_matches('/').trim_end())
    })
}

/// The value of `key="value"` in an element's attribute text.
fn attr<'a>(attrs: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = attrs;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let body = &after[1..];
        let end = body.find(quote)?;
        if name == key {
            return Some(&body[..end]);
        }
        rest = &body[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::clock;

    /// `malloc_info(0, stdout)` on this machine's glibc 2.36: three arenas (two threads'
    /// freed every other block), fast bins, the unsorted bin and one mmap'd chunk. The
    /// program's `mallinfo2` right after said: arena 1011712, ordblks 675, smblks 90,
    /// hblks 1, hblkhd 1052672, fsmblks 7200, fordblks 479936, keepcost 102560 (the main
    /// arena's top).
    const SAMPLE: &str = r#"<malloc version="1">
<heap nr="0">
<sizes>
  <size from="33" to="33" total="264" count="8"/>
  <size from="81" to="81" total="648" count="8"/>
  <size from="129" to="129" total="1032" count="8"/>
  <size from="177" to="177" total="1416" count="8"/>
  <size from="225" to="225" total="1800" count="8"/>
  <size from="273" to="273" total="2184" count="8"/>
  <size from="321" to="321" total="2568" count="8"/>
  <size from="369" to="369" total="2952" count="8"/>
  <size from="417" to="417" total="3336" count="8"/>
  <size from="465" to="465" total="3720" count="8"/>
  <size from="513" to="513" total="4104" count="8"/>
  <size from="561" to="561" total="4488" count="8"/>
  <size from="609" to="609" total="4872" count="8"/>
  <size from="657" to="657" total="5256" count="8"/>
  <size from="705" to="705" total="5640" count="8"/>
  <size from="753" to="753" total="6024" count="8"/>
  <size from="801" to="801" total="6408" count="8"/>
  <size from="849" to="849" total="6792" count="8"/>
  <size from="897" to="897" total="7176" count="8"/>
  <size from="945" to="945" total="7560" count="8"/>
</sizes>
<total type="fast" count="0" size="0"/>
<total type="rest" count="161" size="180800"/>
<system type="current" size="405504"/>
<system type="max" size="405504"/>
<aspace type="total" size="405504"/>
<aspace type="mprotect" size="405504"/>
</heap>
<heap nr="1">
<sizes>
  <size from="17" to="32" total="480" count="15"/>
  <size from="65" to="80" total="1200" count="15"/>
  <size from="113" to="128" total="1920" count="15"/>
  <unsorted from="177" to="945" total="143712" count="256"/>
</sizes>
<total type="fast" count="45" size="3600"/>
<total type="rest" count="257" size="146304"/>
<system type="current" size="303104"/>
<system type="max" size="303104"/>
<aspace type="total" size="303104"/>
<aspace type="mprotect" size="303104"/>
<aspace type="subheaps" size="1"/>
</heap>
<heap nr="2">
<sizes>
  <size from="17" to="32" total="480" count="15"/>
  <size from="65" to="80" total="1200" count="15"/>
  <size from="113" to="128" total="1920" count="15"/>
  <unsorted from="177" to="945" total="143712" count="256"/>
</sizes>
<total type="fast" count="45" size="3600"/>
<total type="rest" count="257" size="146304"/>
<system type="current" size="303104"/>
<system type="max" size="303104"/>
<aspace type="total" size="303104"/>
<aspace type="mprotect" size="303104"/>
<aspace type="subheaps" size="1"/>
</heap>
<total type="fast" count="90" size="7200"/>
<total type="rest" count="675" size="473408"/>
<total type="mmap" count="1" size="1052672"/>
<system type="current" size="1011712"/>
<system type="max" size="1011712"/>
<aspace type="total" size="1011712"/>
<aspace type="mprotect" size="1011712"/>
</malloc>"#;

    fn arena(system: u64, free: u64, free_chunks: u64, fastbin: u64, top: u64) -> ArenaReading {
        ArenaReading {
            system,
            free,
            free_chunks,
            fastbin,
            top,
        }
    }

    #[test]
    fn parses_real_multi_arena_output() {
        let info = parse_malloc_info(SAMPLE.as_bytes()).expect("a malloc element");
        assert_eq!(
            info.arenas,
            vec![
                // `rest` less one flag bit per binned chunk (160 and 256 of them).
                arena(405_504, 180_640, 161, 0, 102_560),
                arena(303_104, 149_648, 302, 3_600, 2_592),
                arena(303_104, 149_648, 302, 3_600, 2_592),
            ]
        );
        assert_eq!((info.mmap_chunks, info.mmap_bytes), (1, 1_052_672));
        // The sums are what mallinfo2 said of the same heap.
        let sum = |f: fn(&ArenaReading) -> u64| info.arenas.iter().map(f).sum::<u64>();
        assert_eq!(sum(|a| a.system), 1_011_712);
        assert_eq!(sum(|a| a.free_chunks), 675 + 90);
        assert_eq!(sum(|a| a.fastbin), 7_200);
        assert_eq!(sum(|a| a.free), 479_936);
        assert_eq!(info.arenas[0].top, 102_560);
        assert_eq!(info.arenas[1].holes(), 149_648 - 2_592);
    }

    #[test]
    fn tolerates_other_layouts_and_damage() {
        // Attributes in another order, single quotes, unknown elements.
        let xml = "<malloc version='9'><heap nr='0'><sizes><size count='2' total='64' \
                   from='33' to='33'/><weird a='1'/></sizes><total size='10' type='fast' \
                   count='1'/><total count='3' type='rest' size='1066'/><system size='4096' \
                   type='current'/><system type='max' size='9999'/></heap>\
                   <total type='mmap' size='8192' count='2'/></malloc>";
        let info = parse_malloc_info(xml.as_bytes()).unwrap();
        assert_eq!(info.arenas, vec![arena(4096, 1074, 4, 10, 1012)]);
        assert_eq!((info.mmap_chunks, info.mmap_bytes), (2, 8192));
        // Cut off inside the second heap: the first stays, the unfinished one is left out.
        let cut = &SAMPLE[..SAMPLE.find("<heap nr=\"1\">").unwrap() + 40];
        let info = parse_malloc_info(cut.as_bytes()).unwrap();
        assert_eq!(info.arenas.len(), 1);
        assert_eq!(info.mmap_bytes, 0);
        assert_eq!(parse_malloc_info(b"not xml at all"), None);
        assert_eq!(parse_malloc_info(b""), None);
        assert_eq!(
            parse_malloc_info(b"<malloc><heap nr=\"0\"><total type="),
            Some(MallocInfo::default())
        );
    }

    #[test]
    fn resident_and_unique_memory() {
        assert_eq!(parse_statm(b"5000 1200 300 10 0 900 0\n"), 1200);
        assert_eq!(parse_statm(b""), 0);
        let rollup = b"55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  4000 kB\n\
                       Private_Clean:    100 kB\nPrivate_Dirty:   2000 kB\nSwap: 0 kB\n";
        assert_eq!(parse_uss(rollup), 2100 * 1024);
        assert_eq!(parse_uss(b"garbage"), 0);
    }

    #[test]
    fn readings_of_this_process_come_at_the_interval() {
        let config = Config {
            interval: Duration::from_millis(50),
            ..Config::from_lookup(|_| None)
        };
        let mut sampler = Sampler::new(&config);
        clock::init();
        let mut tb = Timebase::new(clock::uses_tsc(), clock::now(), clock::monotonic_ns());
        let mut out = Vec::new();
        sampler.poll(&mut out, &mut tb);
        sampler.poll(&mut out, &mut tb);
        assert_eq!(out.len(), 1, "the first poll reads, the next waits");
        std::thread::sleep(Duration::from_millis(60));
        sampler.poll(&mut out, &mut tb);
        sampler.last(&mut out, &mut tb);
        assert_eq!(out.len(), 3);
        let readings: Vec<&HeapReading> = out
            .iter()
            .map(|r| match r {
                Record::Heap(h) => h,
                other => panic!("not a heap reading: {other:?}"),
            })
            .collect();
        assert!(readings.windows(2).all(|w| w[0].ts <= w[1].ts));
        let r = readings[2];
        assert!(r.rss > 0 && r.uss > 0 && r.uss <= r.rss, "{r:?}");
        // The test harness uses glibc's allocator: its arenas are read.
        assert!(!r.arenas.is_empty(), "{r:?}");
        // SAFETY: mallinfo2 has no preconditions.
        let mi = unsafe { libc::mallinfo2() };
        assert!(r.arenas[0].system > 0);
        assert!(mi.arena > 0);
        for a in &r.arenas {
            assert!(
                a.top <= a.free && a.fastbin <= a.free && a.free <= a.system,
                "{a:?}"
            );
        }

        // Host tracking off: resident memory only.
        let mut gpu_only = Sampler::new(&Config {
            host: false,
            ..config
        });
        gpu_only.last(&mut out, &mut tb);
        let Some(Record::Heap(r)) = out.last() else {
            panic!("no reading")
        };
        assert!(r.arenas.is_empty() && r.rss > 0);
    }
}
