//! Finding CPython in the process: at session start, after each `dlopen` the hooks see,
//! and when the sender notices new modules, never per call. `_PyRuntime` and the type
//! objects are looked up by name through the C library's `dlsym` (the global scope,
//! which holds a statically linked interpreter's executable and a shared libpython
//! alike, then the handle `dlopen` returned, which also reaches an `RTLD_LOCAL` one);
//! the version comes from `Py_Version` (3.11+) or `Py_GetVersion()` (3.10); the layout
//! is the table's column for it, validated against the interpreter. The result is
//! published once and never changes: a layout (Python frames on) or a refusal (off, with
//! one line on stderr when an interpreter was found but is not supported).

use super::layout::{self, Layout, Symbols};
use super::mem;
use crate::session;
use leakscope_protocol::PyVersion;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

/// Nothing found yet (look again after the next module change).
const SEARCHING: u8 = 0;
/// A supported interpreter was found: [`LAYOUT`] is set.
const FOUND: u8 = 1;
/// An interpreter was found and refused, or Python frames are switched off.
const REFUSED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(SEARCHING);
static LAYOUT: AtomicPtr<Layout> = AtomicPtr::new(std::ptr::null_mut());
/// Held by the one thread that searches right now (hooks and sender may both try).
static BUSY: AtomicBool = AtomicBool::new(false);

/// The interpreter's layout, once discovery found a supported one.
#[inline(always)]
pub fn layout() -> Option<&'static Layout> {
    // SAFETY: the pointer is null or a leaked box published once and never freed.
    unsafe { LAYOUT.load(Ordering::Acquire).as_ref() }
}

/// At session start (guard held, before the session is active).
pub fn at_start() {
    search(std::ptr::null_mut());
}

/// After a `dlopen` that returned `handle` (guard held).
pub fn after_dlopen(handle: *mut c_void) {
    search(handle);
}

/// In a fork child (one thread): a search the parent's sender thread was in the middle of
/// at the fork will never finish here, so its claim is dropped and the child may search.
pub fn after_fork_child() {
    BUSY.store(false, Ordering::Release);
}

/// When the sender saw the loader's list change (modules loaded by paths the hooks do
/// not wrap, such as a `dlopen` by bare name).
pub fn after_modules_changed() {
    search(std::ptr::null_mut());
}

fn search(handle: *mut c_void) {
    if STATE.load(Ordering::Acquire) != SEARCHING {
        return;
    }
    let Some(s) = session::current() else { return };
    if !s.config.python {
        STATE.store(REFUSED, Ordering::Release);
        return;
    }
    if BUSY.swap(true, Ordering::Acquire) {
        return;
    }
    if STATE.load(Ordering::Acquire) == SEARCHING {
        match find(handle) {
            Found::Nothing => {}
            Found::Supported(l) => {
                let p = Box::into_raw(Box::new(l));
                LAYOUT.store(p, Ordering::Release);
                STATE.store(FOUND, Ordering::Release);
            }
            Found::Refused(v, why) => {
                STATE.store(REFUSED, Ordering::Release);
                say(s.config.quiet, v, why);
            }
        }
    }
    BUSY.store(false, Ordering::Release);
}

/// What a search found.
#[derive(Debug)]
enum Found {
    Nothing,
    Supported(Layout),
    Refused(PyVersion, &'static str),
}

/// Looks up `name` in `handle` (null: the global scope).
fn sym(handle: *mut c_void, name: &CStr) -> usize {
    let h = if handle.is_null() {
        libc::RTLD_DEFAULT
    } else {
        handle
    };
    // SAFETY: `h` is RTLD_DEFAULT or a handle `dlopen` just returned (still open: the
    // program has not had it back yet); `name` is NUL-terminated.
    unsafe { crate::real::dlsym(h, name.as_ptr()) as usize }
}

fn find(handle: *mut c_void) -> Found {
    let mut f = find_in(std::ptr::null_mut());
    if matches!(f, Found::Nothing) && !handle.is_null() {
        f = find_in(handle);
    }
    f
}

fn find_in(handle: *mut c_void) -> Found {
    let runtime = sym(handle, c"_PyRuntime");
    if runtime == 0 {
        return Found::Nothing;
    }
    let s = Symbols {
        runtime,
        code_type: sym(handle, c"PyCode_Type"),
        unicode_type: sym(handle, c"PyUnicode_Type"),
        bytes_type: sym(handle, c"PyBytes_Type"),
        type_type: sym(handle, c"PyType_Type"),
        eval: code_range(sym(handle, c"_PyEval_EvalFrameDefault")),
    };
    let Some((version, hex)) = version(handle) else {
        return Found::Refused(PyVersion { major: 0, minor: 0 }, "unknown version");
    };
    if [s.code_type, s.unicode_type, s.bytes_type, s.type_type].contains(&0) {
        return Found::Refused(version, "type objects not exported");
    }
    let Some(l) = layout::for_version(version, &s) else {
        return Found::Refused(version, "only 3.10 to 3.13 are supported");
    };
    // SAFETY: the symbols are the interpreter's own static objects, found in a loaded
    // module that stays loaded (the program runs on it).
    match unsafe { layout::validate(&l, s.type_type, hex) } {
        Ok(()) => Found::Supported(l),
        Err(m) => Found::Refused(version, m.describe()),
    }
}

/// glibc's `dladdr1` request for the symbol's `ElfW(Sym)` (`<dlfcn.h>`).
const RTLD_DL_SYMENT: libc::c_int = 1;

/// The extent of the function at `start`, from its symbol's size (`dladdr1`); empty when
/// `start` is 0 or the symbol's size is unknown.
fn code_range(start: usize) -> (u64, u64) {
    if start == 0 {
        return (0, 0);
    }
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let mut sym: *mut c_void = std::ptr::null_mut();
    // SAFETY: `start` is the address of a function of a loaded module (dlsym found it);
    // dladdr1 fills `info` and points `sym` at the module's `Elf64_Sym` for it, which
    // lives in the module's mapped dynamic symbol table.
    let size = unsafe {
        let ok = libc::dladdr1(
            start as *const c_void,
            info.as_mut_ptr(),
            &mut sym,
            RTLD_DL_SYMENT,
        );
        if ok == 0 || sym.is_null() {
            return (0, 0);
        }
        let sym = &*(sym as *const libc::Elf64_Sym);
        if sym.st_value == 0 || info.assume_init_ref().dli_saddr as usize != start {
            return (0, 0);
        }
        sym.st_size
    };
    (start as u64, start as u64 + size)
}

/// The interpreter's version and `PY_VERSION_HEX` (the latter with zero micro/release
/// parts for 3.10, which reports a string only).
fn version(handle: *mut c_void) -> Option<(PyVersion, u64)> {
    let v = sym(handle, c"Py_Version");
    let hex = if v != 0 {
        // SAFETY: `Py_Version` is a `const unsigned long` (8 bytes on LP64) of the module.
        unsafe { mem::u64_at(v) }
    } else {
        let f = sym(handle, c"Py_GetVersion");
        if f == 0 {
            return None;
        }
        // SAFETY: `Py_GetVersion` is `const char *Py_GetVersion(void)`, callable before
        // the interpreter is initialized (it formats constants into a static buffer).
        let text = unsafe {
            let f: unsafe extern "C" fn() -> *const c_char = std::mem::transmute(f);
            let p = f();
            if p.is_null() {
                return None;
            }
            CStr::from_ptr(p).to_bytes()
        };
        let (major, minor) = parse_version(text)?;
        (u64::from(major) << 24) | (u64::from(minor) << 16)
    };
    let version = PyVersion {
        major: (hex >> 24) as u8,
        minor: (hex >> 16) as u8,
    };
    Some((version, hex))
}

/// `"3.10.13 (main, ...)"` → `(3, 10)`.
fn parse_version(text: &[u8]) -> Option<(u8, u8)> {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let mut parts = text[..end].split(|&b| b == b'.');
    let num = |p: Option<&[u8]>| -> Option<u8> {
        let digits: Vec<u8> = p?.iter().copied().take_while(u8::is_ascii_digit).collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    };
    Some((num(parts.next())?, num(parts.next())?))
}

/// The one line about an interpreter whose frames are not read.
fn say(quiet: bool, v: PyVersion, why: &str) {
    if quiet {
        return;
    }
    let line = format!(
        "leakscope: Python {}.{}: {why}; stacks show native frames only\n",
        v.major, v.minor
    );
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: `rest` is valid for its length; fd 2 may be closed, then this fails.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn version_strings_parse() {
        assert_eq!(
            parse_version(b"3.10.13 (main, May  9 2026) [GCC]"),
            Some((3, 10))
        );
        assert_eq!(parse_version(b"3.9.18"), Some((3, 9)));
        assert_eq!(parse_version(b"3.13.0rc1 (x)"), Some((3, 13)));
        assert_eq!(parse_version(b"garbage"), None);
    }

    /// The shared libpythons of the pyenv interpreters on this machine (none in CI).
    pub fn installed_libpythons() -> Vec<(u8, std::path::PathBuf)> {
        let root = std::env::var_os("PYENV_ROOT")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pyenv")));
        let Some(root) = root else { return Vec::new() };
        let mut out = Vec::new();
        for minor in 10..=13u8 {
            let Ok(dir) = std::fs::read_dir(root.join("versions")) else {
                break;
            };
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(&format!("3.{minor}.")) {
                    continue;
                }
                let lib = e.path().join(format!("lib/libpython3.{minor}.so.1.0"));
                if lib.is_file() {
                    out.push((minor, lib));
                    break;
                }
            }
        }
        out
    }

    /// Discovery's lookup and checks against each installed shared libpython, loaded
    /// `RTLD_LOCAL` (so only the handle reaches it) and never initialized.
    #[test]
    fn installed_interpreters_validate() {
        for (minor, lib) in installed_libpythons() {
            let c = std::ffi::CString::new(lib.to_str().unwrap()).unwrap();
            // SAFETY: dlopen of a library path; its constructors are CPython's (none that
            // start the interpreter).
            let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            assert!(!h.is_null(), "dlopen {lib:?}");
            match find_in(h) {
                Found::Supported(l) => {
                    assert_eq!(l.version, PyVersion { major: 3, minor }, "{lib:?}");
                }
                other => panic!("{lib:?}: {other:?}"),
            }
        }
    }
}
