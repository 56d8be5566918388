//! Which frames belong to the allocator rather than to the program, and removing them from
//! the innermost end of a stack: the table of allocator functions and the shim's module.

use crate::analysis::model::Frame;

/// File name of the shim library; its frames are never the program's.
pub const SHIM_MODULE: &str = crate::run::shim::SHIM_FILE;

/// How a table entry matches a demangled function name.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// The name, or the name followed by a parameter list (`operator new(unsigned long)`).
    Function(&'static str),
    /// Any name starting with this text (a namespace or a generic type's methods).
    Prefix(&'static str),
}

impl Pattern {
    fn matches(self, name: &str) -> bool {
        match self {
            Pattern::Function(f) => name
                .strip_prefix(f)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('(')),
            Pattern::Prefix(p) => name.starts_with(p),
        }
    }
}

use Pattern::{Function as F, Prefix as P};

/// Functions that only pass an allocation request on. Leading frames matching these are
/// removed so that a site's first frame is the code that asked for memory.
const ALLOCATOR_FUNCTIONS: &[Pattern] = &[
    // C allocation API, in case a libc frame precedes the program's (static builds, or
    // wrappers that tail into libc).
    F("malloc"),
    F("calloc"),
    F("realloc"),
    F("reallocarray"),
    F("posix_memalign"),
    F("aligned_alloc"),
    F("memalign"),
    F("valloc"),
    F("pvalloc"),
    // glibc's internal names and helpers of the same calls.
    F("__libc_malloc"),
    F("__libc_calloc"),
    F("__libc_realloc"),
    F("__libc_reallocarray"),
    F("__libc_memalign"),
    F("__libc_valloc"),
    F("__libc_pvalloc"),
    F("__posix_memalign"),
    F("_int_malloc"),
    F("_int_realloc"),
    F("_int_memalign"),
    F("_mid_memalign"),
    F("tcache_init"),
    F("sysmalloc"),
    // C++ global allocation functions: plain, array, aligned and nothrow forms all
    // demangle to these names followed by their parameter lists.
    F("operator new"),
    F("operator new[]"),
    // C++ standard allocators (libstdc++ and libc++), whose `allocate` calls operator new.
    P("std::__new_allocator<"),
    P("__gnu_cxx::new_allocator<"),
    P("std::allocator<"),
    P("std::allocator_traits<"),
    P("std::__1::allocator<"),
    P("std::__1::allocator_traits<"),
    // Rust's global allocator entry points and the default (System) allocator.
    F("__rust_alloc"),
    F("__rust_alloc_zeroed"),
    F("__rust_realloc"),
    F("__rg_alloc"),
    F("__rg_alloc_zeroed"),
    F("__rg_realloc"),
    F("__rdl_alloc"),
    F("__rdl_alloc_zeroed"),
    F("__rdl_realloc"),
    P("<std::alloc::System as core::alloc::global::GlobalAlloc>::"),
    P("std::sys::alloc::"),
    P("std::sys::pal::unix::alloc::"),
    // Rust's `alloc` crate: the allocation functions, the `Global` allocator and the raw
    // buffers behind Vec/String/VecDeque.
    P("alloc::alloc::"),
    P("<alloc::alloc::Global as "),
    P("<alloc::alloc::Global>::"),
    P("alloc::raw_vec::"),
    P("<alloc::raw_vec::"),
    // CPython's allocator layers (raw, mem, object domains) and pymalloc internals.
    F("PyMem_RawMalloc"),
    F("PyMem_RawCalloc"),
    F("PyMem_RawRealloc"),
    F("PyMem_Malloc"),
    F("PyMem_Calloc"),
    F("PyMem_Realloc"),
    F("PyObject_Malloc"),
    F("PyObject_Calloc"),
    F("PyObject_Realloc"),
    F("_PyMem_RawMalloc"),
    F("_PyMem_RawCalloc"),
    F("_PyMem_RawRealloc"),
    F("_PyMem_DebugRawAlloc"),
    F("_PyMem_DebugRawMalloc"),
    F("_PyMem_DebugRawCalloc"),
    F("_PyMem_DebugRawRealloc"),
    F("_PyMem_DebugMalloc"),
    F("_PyMem_DebugCalloc"),
    F("_PyMem_DebugRealloc"),
    F("_PyObject_Malloc"),
    F("_PyObject_Calloc"),
    F("_PyObject_Realloc"),
    F("_PyObject_ArenaMalloc"),
    F("_PyObject_ArenaMmap"),
    F("pymalloc_alloc"),
    F("pymalloc_realloc"),
    F("allocate_from_new_pool"),
    F("new_arena"),
    // GLib's allocation functions.
    F("g_malloc"),
    F("g_malloc0"),
    F("g_malloc_n"),
    F("g_malloc0_n"),
    F("g_realloc"),
    F("g_realloc_n"),
    F("g_try_malloc"),
    F("g_try_malloc0"),
    F("g_try_malloc_n"),
    F("g_try_malloc0_n"),
    F("g_try_realloc"),
    F("g_try_realloc_n"),
    // GNU/libiberty checked allocators.
    F("xmalloc"),
    F("xcalloc"),
    F("xrealloc"),
    F("xzalloc"),
];

/// Whether `name` (demangled) is an allocator function from the table.
pub fn is_allocator_function(name: &str) -> bool {
    ALLOCATOR_FUNCTIONS.iter().any(|p| p.matches(name))
}

/// Source trees of standard libraries whose code sits between a program's call and the
/// allocator (a `Vec` growing, a `std::vector` reallocating): leading frames there are
/// part of the allocation path, and the program's own call is the site.
const STD_LIBRARY_SOURCES: &[&str] = &[
    // Rust's standard library, as its debug info names it (`/rustc/<commit>/library/...`).
    "/rustc/",
    // libstdc++ and libc++ headers.
    "/usr/include/c++/",
    "/include/c++/v1/",
];

/// Whether `frame` belongs to the allocator: inside the shim, an allocator function, or
/// standard-library code on the way to one. A Python frame never does, whatever its name.
pub fn is_allocator_frame(frame: &Frame) -> bool {
    if frame.python {
        return false;
    }
    is_shim_frame(frame)
        || frame.function.as_deref().is_some_and(is_allocator_function)
        || frame
            .file
            .as_deref()
            .is_some_and(|file| STD_LIBRARY_SOURCES.iter().any(|dir| file.contains(dir)))
}

/// Removes the allocator's frames from the innermost end of `frames` (innermost first),
/// and the shim's frames wherever they stand: the shim's `dlopen` wrapper sits between a
/// program and the loader's own allocations. Other frames after the first program frame
/// are kept, whatever their names.
pub fn strip_allocator_frames(mut frames: Vec<Frame>) -> Vec<Frame> {
    let leading = frames.iter().take_while(|f| is_allocator_frame(f)).count();
    frames.drain(..leading);
    frames.retain(|f| !is_shim_frame(f));
    frames
}

/// Whether `frame` lies in the shim library.
fn is_shim_frame(frame: &Frame) -> bool {
    frame.module.as_deref() == Some(SHIM_MODULE)
}

/// The file name of a module path (`/usr/lib/libc.so.6` -> `libc.so.6`); the path itself
/// when it has no separator.
pub fn module_file_name(path: &str) -> &str {
    path.rsplit('/')
        .find(|part| !part.is_empty())
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, module: &str) -> Frame {
        Frame {
            function: function.map(Into::into),
            file: None,
            line: None,
            module: Some(module.into()),
            address: "0x10".into(),
            inlined: false,
            python: false,
        }
    }

    fn names(frames: &[Frame]) -> Vec<Option<&str>> {
        frames.iter().map(|f| f.function.as_deref()).collect()
    }

    #[test]
    fn table_matches_allocator_names_precisely() {
        for name in [
            "operator new(unsigned long)",
            "operator new[](unsigned long)",
            "operator new(unsigned long, std::align_val_t)",
            "operator new(unsigned long, std::nothrow_t const&)",
            "operator new[](unsigned long, std::align_val_t, std::nothrow_t const&)",
            "operator new",
            "__libc_malloc",
            "malloc",
            "__rust_alloc",
            "__rdl_alloc",
            "alloc::alloc::exchange_malloc",
            "alloc::alloc::Global::alloc_impl",
            "<alloc::alloc::Global as core::alloc::Allocator>::allocate",
            "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
            "alloc::raw_vec::finish_grow",
            "PyMem_RawMalloc",
            "PyMem_Malloc",
            "PyObject_Malloc",
            "_PyObject_Malloc",
            "_PyMem_RawMalloc",
            "g_malloc",
            "g_malloc0",
            "xmalloc",
            "std::__new_allocator<int>::allocate(unsigned long, void const*)",
        ] {
            assert!(is_allocator_function(name), "{name} should be an allocator");
        }
        for name in [
            "main",
            "malloc_wrapper_in_app",
            "my_malloc",
            "operator newish(int)",
            "operator delete(void*)",
            "xmalloc_stats",
            "alloc::vec::Vec<T>::push",
            "_PyObject_New",
            "PyList_New",
            "g_strdup",
            "std::vector<int, std::allocator<int> >::push_back(int const&)",
        ] {
            assert!(
                !is_allocator_function(name),
                "{name} should not be an allocator"
            );
        }
    }

    #[test]
    fn strips_only_leading_allocator_frames() {
        let frames = vec![
            frame(Some("hook_malloc"), SHIM_MODULE),
            frame(Some("operator new(unsigned long)"), "libstdc++.so.6"),
            frame(Some("make_buffer()"), "app"),
            frame(Some("malloc"), "app"),
            frame(Some("main"), "app"),
        ];
        let stripped = strip_allocator_frames(frames);
        assert_eq!(
            names(&stripped),
            vec![Some("make_buffer()"), Some("malloc"), Some("main")]
        );
    }

    #[test]
    fn leading_standard_library_code_is_part_of_the_allocation_path() {
        let mut frames = vec![
            frame(Some("<alloc::alloc::Global>::alloc_impl_runtime"), "app"),
            frame(Some("alloc::vec::from_elem"), "app"),
            frame(Some("app::remember_session"), "app"),
            frame(Some("std::rt::lang_start_internal"), "app"),
        ];
        frames[1].file = Some("/rustc/0123abcd/library/alloc/src/vec/mod.rs".into());
        frames[3].file = Some("/rustc/0123abcd/library/std/src/rt.rs".into());
        let stripped = strip_allocator_frames(frames);
        assert_eq!(
            names(&stripped),
            vec![
                Some("app::remember_session"),
                Some("std::rt::lang_start_internal")
            ]
        );
    }

    #[test]
    fn shim_frames_are_removed_anywhere() {
        let frames = vec![
            frame(Some("_dl_new_object"), "ld-linux-x86-64.so.2"),
            frame(Some("dlopen"), "libc.so.6"),
            frame(
                Some("leakscope_shim::hooks::dl::dlopen_tracked"),
                SHIM_MODULE,
            ),
            frame(Some("load_plugin"), "app"),
        ];
        let stripped = strip_allocator_frames(frames);
        assert_eq!(
            names(&stripped),
            vec![Some("_dl_new_object"), Some("dlopen"), Some("load_plugin")]
        );
    }

    #[test]
    fn unknown_function_stops_stripping_unless_in_shim() {
        let frames = vec![
            frame(None, SHIM_MODULE),
            frame(None, "libfoo.so"),
            frame(Some("malloc"), "app"),
        ];
        let stripped = strip_allocator_frames(frames);
        assert_eq!(names(&stripped), vec![None, Some("malloc")]);
        assert_eq!(stripped[0].module.as_deref(), Some("libfoo.so"));
    }

    #[test]
    fn rust_stack_keeps_program_frames() {
        let frames = vec![
            frame(Some("__rust_alloc"), "app"),
            frame(
                Some("<alloc::alloc::Global as core::alloc::Allocator>::allocate"),
                "app",
            ),
            frame(Some("alloc::raw_vec::finish_grow"), "app"),
            frame(Some("app::cache::Cache::insert"), "app"),
            frame(Some("alloc::alloc::exchange_malloc"), "app"),
        ];
        let stripped = strip_allocator_frames(frames);
        assert_eq!(
            names(&stripped),
            vec![
                Some("app::cache::Cache::insert"),
                Some("alloc::alloc::exchange_malloc")
            ]
        );
    }

    #[test]
    fn python_frames_are_never_allocator_frames() {
        let mut py = frame(Some("malloc"), "app");
        py.module = None;
        py.python = true;
        let frames = vec![
            frame(Some("malloc"), "libc.so.6"),
            py,
            frame(Some("f"), "app"),
        ];
        let stripped = strip_allocator_frames(frames);
        assert_eq!(names(&stripped), vec![Some("malloc"), Some("f")]);
        assert!(stripped[0].python, "the Python function named malloc stays");
    }

    #[test]
    fn all_allocator_frames_leave_an_empty_stack() {
        let frames = vec![frame(Some("malloc"), "libc.so.6")];
        assert!(strip_allocator_frames(frames).is_empty());
        assert!(strip_allocator_frames(Vec::new()).is_empty());
    }

    #[test]
    fn module_file_names() {
        assert_eq!(module_file_name("/usr/lib/libc.so.6"), "libc.so.6");
        assert_eq!(module_file_name("app"), "app");
        assert_eq!(module_file_name("/opt/app/"), "app");
        assert_eq!(module_file_name(""), "");
    }
}
