//! Enumerating the loaded modules with `dl_iterate_phdr`, and reading what the unwinder and
//! the collector need from each module's program headers, in place in its mapped memory:
//! the `PT_LOAD` segments, the `.eh_frame_hdr` / `.eh_frame` pair (`PT_GNU_EH_FRAME`), the
//! GNU build id (`PT_NOTE`) and `DT_SONAME` / `DT_NEEDED` (`PT_DYNAMIC`).
//!
//! Every read of module memory is checked to lie inside a readable `PT_LOAD` segment of the
//! same module, and all of it happens inside the `dl_iterate_phdr` callback: the loader
//! holds its list lock there, and glibc unmaps a closed object only under that same lock,
//! so nothing read here can be unmapped while it is read.

use leakscope_protocol::{FileOffset, ModuleId, ModuleMap, RuntimeAddr, Segment};
use libc::{c_int, c_void, size_t, Elf64_Phdr};
use std::ffi::CStr;
use std::ops::Range;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_NOTE: u32 = 4;
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
const PF_X: u32 = 1;
const PF_R: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_STRTAB: i64 = 5;
const DT_STRSZ: i64 = 10;
const DT_SONAME: i64 = 14;
/// `DW_EH_PE_omit`: the `.eh_frame_hdr` field is absent.
const DW_EH_PE_OMIT: u8 = 0xff;

/// An executable segment, at runtime addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CodeRange {
    pub start: u64,
    pub end: u64,
    /// Whether the segment is also readable (the signal-trampoline check reads code bytes).
    pub readable: bool,
}

/// Where a module's DWARF call frame information lies, at runtime addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct EhFrame {
    pub hdr: Range<u64>,
    /// `.eh_frame` from its start (decoded from the header) to the end of the `PT_LOAD`
    /// segment holding it: the section's own length is not recorded anywhere at runtime,
    /// and lookups only ever go through the header's table, so the excess is never parsed.
    pub frame: Range<u64>,
}

/// One loaded module as read from the loader's list.
#[derive(Debug)]
pub(super) struct ModuleInfo {
    /// Stream-independent id, unique in this process for this load of this module (a load
    /// held out for a `dlclose` comes back, if it stays loaded, under a new id).
    pub id: ModuleId,
    /// The load bias (`dlpi_addr`): runtime address = base + address stated in the file.
    pub base: u64,
    /// `dlpi_name` as the loader reports it (empty for the main program).
    pub loader_name: Vec<u8>,
    /// What the collector is told (path resolved for the main program).
    pub map: ModuleMap,
    /// The kernel's vDSO: unwound through, never announced (it has no file).
    pub is_vdso: bool,
    /// Loaded before the session started: glibc never unloads those.
    pub startup: bool,
    /// From the lowest segment start to the highest segment end.
    pub range: Range<u64>,
    pub code: Vec<CodeRange>,
    pub eh_frame: Option<EhFrame>,
    pub soname: Option<Vec<u8>>,
    pub needed: Vec<Vec<u8>>,
}

impl ModuleInfo {
    /// Whether this is the same mapping of the same object as `other` (same id or not).
    pub fn same_mapping(&self, other: &ModuleInfo) -> bool {
        self.base == other.base
            && self.range == other.range
            && self.loader_name == other.loader_name
            && self.map.build_id == other.map.build_id
    }

    /// Whether a `DT_NEEDED` entry naming `name` refers to this module.
    pub fn answers_to(&self, name: &[u8]) -> bool {
        if self.soname.as_deref() == Some(name) {
            return true;
        }
        let base = match self.loader_name.iter().rposition(|&b| b == b'/') {
            Some(slash) => &self.loader_name[slash + 1..],
            None => &self.loader_name[..],
        };
        base == name
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.range.contains(&addr)
    }
}

/// The loader's load and unload counters (`dlpi_adds`, `dlpi_subs`): they change whenever
/// an object is added to or removed from the list, whoever loaded it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LoadCounters {
    pub adds: u64,
    pub subs: u64,
}

/// The result of one walk over the loader's list.
pub(super) struct Enumeration {
    /// Modules in the loader's order; `id` is still [`ModuleId`]`(0)`: the caller assigns ids.
    pub modules: Vec<ModuleInfo>,
    pub counters: LoadCounters,
}

/// Reads every loaded module. Allocates; takes the loader's list lock (so never call it
/// with a lock that a thread inside `dlopen` could be waiting for).
pub(super) fn enumerate() -> Enumeration {
    let mut state = Enumeration {
        modules: Vec::with_capacity(64),
        counters: LoadCounters::default(),
    };
    let exe = main_program_path();
    let vdso = vdso_address();
    let mut ctx = (&mut state, exe, vdso);
    // SAFETY: `collect` matches the callback type dl_iterate_phdr expects, and `ctx` outlives
    // the call (dl_iterate_phdr calls back synchronously, on this thread).
    unsafe {
        libc::dl_iterate_phdr(Some(collect), (&mut ctx as *mut CollectCtx<'_>).cast());
    }
    state
}

/// Reads only the loader's counters (stops after the first object). Takes the loader's list
/// lock briefly; does not allocate.
pub(super) fn counters() -> LoadCounters {
    let mut counters = LoadCounters::default();
    // SAFETY: as in `enumerate`; `read_counters` only writes the `LoadCounters` it is given.
    unsafe {
        libc::dl_iterate_phdr(
            Some(read_counters),
            (&mut counters as *mut LoadCounters).cast(),
        );
    }
    counters
}

type CollectCtx<'a> = (&'a mut Enumeration, String, u64);

/// `dl_iterate_phdr` callback for [`counters`].
///
/// # Safety
/// `info` must point at a `dl_phdr_info` of `size` bytes and `data` at a `LoadCounters`
/// that nothing else uses during the call (as `counters` arranges).
unsafe extern "C" fn read_counters(
    info: *mut libc::dl_phdr_info,
    size: size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the loader passes a valid `dl_phdr_info` of `size` bytes; `data` is the
    // `LoadCounters` that `counters` passed.
    unsafe {
        let out = &mut *data.cast::<LoadCounters>();
        *out = counters_of(&*info, size);
    }
    1
}

fn counters_of(info: &libc::dl_phdr_info, size: size_t) -> LoadCounters {
    let needed = std::mem::offset_of!(libc::dl_phdr_info, dlpi_subs) + 8;
    if size < needed {
        return LoadCounters::default();
    }
    LoadCounters {
        adds: info.dlpi_adds,
        subs: info.dlpi_subs,
    }
}

/// `dl_iterate_phdr` callback for [`enumerate`].
///
/// # Safety
/// `info` must point at a `dl_phdr_info` of `size` bytes whose program headers and name are
/// valid during the call, and `data` at a `CollectCtx` that nothing else uses during the
/// call (as `enumerate` arranges).
unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    size: size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the loader passes a valid `dl_phdr_info` of `size` bytes; `data` is the
    // `CollectCtx` that `enumerate` passed and nothing else refers to it during the call.
    let (info, ctx) = unsafe { (&*info, &mut *data.cast::<CollectCtx<'_>>()) };
    let (state, exe, vdso) = (&mut *ctx.0, &ctx.1, ctx.2);
    state.counters = counters_of(info, size);
    let first = state.modules.is_empty();
    if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
        return 0;
    }
    // SAFETY: the loader guarantees `dlpi_phdr` points at `dlpi_phnum` program headers that
    // stay valid during the callback.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let loader_name = if info.dlpi_name.is_null() {
        Vec::new()
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string valid during the callback.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_bytes()
            .to_vec()
    };
    let image = Image {
        base: info.dlpi_addr,
        phdrs,
    };
    if let Some(module) = image.read(loader_name, first, exe, vdso) {
        state.modules.push(module);
    }
    0
}

/// The program headers of one module and its load bias; every read goes through
/// [`Image::bytes`], which checks the range against the readable `PT_LOAD` segments.
struct Image<'a> {
    base: u64,
    phdrs: &'a [Elf64_Phdr],
}

impl Image<'_> {
    fn loads(&self) -> impl Iterator<Item = &Elf64_Phdr> + '_ {
        self.phdrs
            .iter()
            .filter(|p| p.p_type == PT_LOAD && p.p_memsz > 0)
    }

    /// The readable `PT_LOAD` segment holding `[svma, svma + len)`, as stated addresses.
    fn readable_segment(&self, svma: u64, len: u64) -> Option<Range<u64>> {
        let end = svma.checked_add(len)?;
        self.loads()
            .filter(|p| p.p_flags & PF_R != 0)
            .map(|p| p.p_vaddr..p.p_vaddr.saturating_add(p.p_memsz))
            .find(|seg| seg.start <= svma && end <= seg.end)
    }

    /// The module's memory at stated address `svma`, if it lies in one readable segment.
    fn bytes(&self, svma: u64, len: u64) -> Option<&[u8]> {
        self.readable_segment(svma, len)?;
        let addr = self.base.checked_add(svma)?;
        let len = usize::try_from(len).ok()?;
        if len == 0 {
            return Some(&[]);
        }
        // SAFETY: `[svma, svma + len)` lies inside a readable PT_LOAD segment of this module,
        // which the loader mapped at `base + p_vaddr` with at least read permission, and it
        // stays mapped during the dl_iterate_phdr callback (glibc unmaps under the list lock
        // that dl_iterate_phdr holds). Module memory is not written concurrently here except
        // for relocated data, which is only ever read as plain bytes.
        Some(unsafe { std::slice::from_raw_parts(addr as *const u8, len) })
    }

    fn read_u64(&self, svma: u64) -> Option<u64> {
        let b = self.bytes(svma, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    fn read(self, loader_name: Vec<u8>, first: bool, exe: &str, vdso: u64) -> Option<ModuleInfo> {
        let mut segments = Vec::new();
        let mut code = Vec::new();
        let (mut low, mut high) = (u64::MAX, 0);
        for p in self.loads() {
            let start = self.base.checked_add(p.p_vaddr)?;
            let end = start.checked_add(p.p_memsz)?;
            low = low.min(start);
            high = high.max(end);
            let executable = p.p_flags & PF_X != 0;
            segments.push(Segment {
                start: RuntimeAddr(start),
                end: RuntimeAddr(end),
                file_offset: FileOffset(p.p_offset),
                executable,
            });
            if executable {
                code.push(CodeRange {
                    start,
                    end,
                    readable: p.p_flags & PF_R != 0,
                });
            }
        }
        if segments.is_empty() {
            return None;
        }
        let range = low..high;
        let is_vdso = vdso != 0 && range.contains(&vdso);
        let path = if loader_name.is_empty() && first {
            exe.to_owned()
        } else {
            String::from_utf8_lossy(&loader_name).into_owned()
        };
        let DynamicNames { soname, needed } = self.dynamic().unwrap_or_default();
        Some(ModuleInfo {
            id: ModuleId(0),
            base: self.base,
            loader_name,
            map: ModuleMap {
                id: ModuleId(0),
                path,
                build_id: self.build_id().unwrap_or_default(),
                segments,
            },
            is_vdso,
            startup: false,
            range,
            code,
            eh_frame: self.eh_frame(),
            soname,
            needed,
        })
    }

    fn eh_frame(&self) -> Option<EhFrame> {
        let ph = self.phdrs.iter().find(|p| p.p_type == PT_GNU_EH_FRAME)?;
        let hdr_svma = ph.p_vaddr;
        let hdr = self.bytes(hdr_svma, ph.p_memsz.max(4))?;
        // version, eh_frame_ptr encoding, fde_count encoding, table encoding, eh_frame_ptr.
        if hdr[0] != 1 || hdr[1] == DW_EH_PE_OMIT {
            return None;
        }
        let field_svma = hdr_svma + 4;
        let frame_svma = decode_pointer(hdr[1], &hdr[4..], field_svma, hdr_svma)?;
        let seg = self.readable_segment(frame_svma, 1)?;
        let hdr_avma = self.base.checked_add(hdr_svma)?;
        let frame_avma = self.base.checked_add(frame_svma)?;
        Some(EhFrame {
            hdr: hdr_avma..hdr_avma.checked_add(ph.p_memsz)?,
            frame: frame_avma..self.base.checked_add(seg.end)?,
        })
    }

    fn build_id(&self) -> Option<Vec<u8>> {
        for ph in self.phdrs.iter().filter(|p| p.p_type == PT_NOTE) {
            let Some(notes) = self.bytes(ph.p_vaddr, ph.p_memsz) else {
                continue;
            };
            let align = if ph.p_align == 8 { 8 } else { 4 };
            if let Some(id) = find_build_id(notes, align) {
                return Some(id.to_vec());
            }
        }
        None
    }

    /// `DT_SONAME` and the `DT_NEEDED` names, from the dynamic section in memory.
    fn dynamic(&self) -> Option<DynamicNames> {
        let ph = self.phdrs.iter().find(|p| p.p_type == PT_DYNAMIC)?;
        let count = ph.p_memsz / 16;
        let (mut strtab, mut strsz, mut soname, mut needed) = (None, None, None, Vec::new());
        for i in 0..count {
            let at = ph.p_vaddr.checked_add(i * 16)?;
            let tag = self.read_u64(at)? as i64;
            let val = self.read_u64(at + 8)?;
            match tag {
                DT_NULL => break,
                DT_NEEDED => needed.push(val),
                DT_SONAME => soname = Some(val),
                DT_STRTAB => strtab = Some(val),
                DT_STRSZ => strsz = Some(val),
                _ => {}
            }
        }
        let (strtab, strsz) = (strtab?, strsz?);
        // glibc relocates the dynamic section's pointers in place for ordinary objects, but
        // not for the vDSO (nor on every libc): accept either form.
        let strtab_svma = if self.range_contains_avma(strtab) {
            strtab - self.base
        } else {
            strtab
        };
        let table = self.bytes(strtab_svma, strsz)?;
        let string = |off: u64| -> Option<Vec<u8>> {
            let tail = table.get(usize::try_from(off).ok()?..)?;
            let len = tail.iter().position(|&b| b == 0)?;
            Some(tail[..len].to_vec())
        };
        Some(DynamicNames {
            soname: soname.and_then(string),
            needed: needed.into_iter().filter_map(string).collect(),
        })
    }

    fn range_contains_avma(&self, avma: u64) -> bool {
        avma.checked_sub(self.base)
            .is_some_and(|svma| self.readable_segment(svma, 1).is_some())
            && self.base != 0
    }
}

/// The names a module's dynamic section gives: its own, and those of its dependencies.
#[derive(Default)]
struct DynamicNames {
    soname: Option<Vec<u8>>,
    needed: Vec<Vec<u8>>,
}

/// Decodes one `DW_EH_PE`-encoded pointer at the start of `data`, which lies at stated
/// address `field_svma`; `datarel` is the data-relative base (the header's own address).
/// The result is a stated address (a runtime address less the load bias).
fn decode_pointer(enc: u8, data: &[u8], field_svma: u64, datarel: u64) -> Option<u64> {
    let value: i64 = match enc & 0x0f {
        0x00 | 0x04 => i64::from_le_bytes(data.get(..8)?.try_into().ok()?), // absptr, udata8
        0x0c => i64::from_le_bytes(data.get(..8)?.try_into().ok()?),        // sdata8
        0x03 => i64::from(u32::from_le_bytes(data.get(..4)?.try_into().ok()?)), // udata4
        0x0b => i64::from(i32::from_le_bytes(data.get(..4)?.try_into().ok()?)), // sdata4
        0x02 => i64::from(u16::from_le_bytes(data.get(..2)?.try_into().ok()?)), // udata2
        0x0a => i64::from(i16::from_le_bytes(data.get(..2)?.try_into().ok()?)), // sdata2
        _ => return None,
    };
    let base = match enc & 0x70 {
        0x00 => 0,
        0x10 => field_svma, // pcrel
        0x30 => datarel,    // datarel
        _ => return None,
    };
    Some(base.wrapping_add(value as u64))
}

/// Finds the `NT_GNU_BUILD_ID` note's descriptor in a note segment.
fn find_build_id(mut notes: &[u8], align: usize) -> Option<&[u8]> {
    let pad = |n: usize| n.checked_add(align - 1).map(|v| v & !(align - 1));
    while notes.len() >= 12 {
        let word =
            |i: usize| u32::from_le_bytes([notes[i], notes[i + 1], notes[i + 2], notes[i + 3]]);
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        let name_end = 12usize.checked_add(namesz)?;
        let desc_start = 12usize.checked_add(pad(namesz)?)?;
        let desc_end = desc_start.checked_add(descsz)?;
        if desc_end > notes.len() || name_end > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && &notes[12..name_end] == b"GNU\0" {
            return Some(&notes[desc_start..desc_end]);
        }
        let next = desc_start.checked_add(pad(descsz)?)?;
        notes = notes.get(next..)?;
    }
    None
}

/// `/proc/self/exe`, resolved; empty if it cannot be read.
fn main_program_path() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where the kernel mapped the vDSO's ELF header (0 if none).
fn vdso_address() -> u64 {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) }
}

/// The dynamic loader's own load address (0 if unknown).
pub(super) fn loader_base() -> u64 {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_BASE) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_usual_pointer_encodings() {
        // pcrel | sdata4, as GNU ld writes eh_frame_ptr: field at 0x2008, value -0x100.
        let data = (-0x100i32).to_le_bytes();
        assert_eq!(decode_pointer(0x1b, &data, 0x2008, 0x2004), Some(0x1f08));
        // datarel | sdata4 is relative to the header's start.
        let data = 0x40i32.to_le_bytes();
        assert_eq!(decode_pointer(0x3b, &data, 0x2008, 0x2004), Some(0x2044));
        // absptr | udata8.
        let data = 0x40_1000u64.to_le_bytes();
        assert_eq!(decode_pointer(0x00, &data, 0, 0), Some(0x40_1000));
        // Unsupported application (funcrel) and truncated data are refused.
        assert_eq!(decode_pointer(0x4b, &data, 0, 0), None);
        assert_eq!(decode_pointer(0x1b, &data[..2], 0, 0), None);
    }

    #[test]
    fn finds_the_build_id_after_another_note() {
        let mut notes = Vec::new();
        // A property note first: name "GNU\0", desc of 8 bytes, type 5.
        for w in [4u32, 8, 5] {
            notes.extend_from_slice(&w.to_le_bytes());
        }
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&[1; 8]);
        // Then the build id, 20 bytes.
        for w in [4u32, 20, NT_GNU_BUILD_ID] {
            notes.extend_from_slice(&w.to_le_bytes());
        }
        notes.extend_from_slice(b"GNU\0");
        let id: Vec<u8> = (0..20).collect();
        notes.extend_from_slice(&id);
        assert_eq!(find_build_id(&notes, 4), Some(&id[..]));
        // A truncated note ends the search instead of reading past the end.
        assert_eq!(find_build_id(&notes[..notes.len() - 1], 4), None);
    }
}
